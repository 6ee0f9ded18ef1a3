"""langchain-tests' standard vector store suite, in the store's two configurations."""

from __future__ import annotations

from typing import Iterator

import pytest
from langchain_tests.integration_tests import VectorStoreIntegrationTests
from vicinity_client.testing import LocalServer

from langchain_vicinity import VicinityVectorStore


class TestServerSideEmbeddings(VectorStoreIntegrationTests):
    """The server embeds texts and queries with its model (the tiny one: the suite's checks
    rank a text's exact copy first, which any deterministic encoder does)."""

    @pytest.fixture
    def vectorstore(  # type: ignore[override]
        self, tiny_server: LocalServer, collection_name: str
    ) -> Iterator[VicinityVectorStore]:
        store = VicinityVectorStore(collection_name, url=tiny_server.url)
        try:
            yield store
        finally:
            store.delete_collection()
            store.close()


class TestClientSideEmbeddings(VectorStoreIntegrationTests):
    """The store embeds with the suite's fake embeddings and sends vectors (dimension 6)."""

    @pytest.fixture
    def vectorstore(  # type: ignore[override]
        self, tiny_server: LocalServer, collection_name: str
    ) -> Iterator[VicinityVectorStore]:
        store = VicinityVectorStore(
            collection_name, embedding=self.get_embeddings(), url=tiny_server.url
        )
        try:
            yield store
        finally:
            store.delete_collection()
            store.close()
