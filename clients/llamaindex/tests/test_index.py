"""LlamaIndex end to end on the tiny model: `VectorStoreIndex` over the store, with the
server's embeddings, its retrievers in every mode, a query engine without an LLM, and
document inserts and deletes, sync and async.

The tiny model is random, so these tests check what reaches LlamaIndex (nodes, scores,
documents, filters), not which text is nearest: lexical queries, whose answers do not depend
on the model, check ranking. `test_semantic.py` checks rankings with a real model.
"""

from typing import AsyncIterator, List, Set

import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import NodeWithScore
from llama_index.core.vector_stores.types import (
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
)
from vicinity_client import AsyncVicinity, BadRequestError, Vicinity

from llama_index.vector_stores.vicinity import VicinityEmbedding, VicinityVectorStore

from conftest import AsyncSpyTransport, SpyTransport


def documents() -> List[Document]:
    return [
        Document(
            id_="doc-sea",
            text="The lighthouse keeper watched the ships. Storms came in winter.",
            metadata={"topic": "sea"},
        ),
        Document(
            id_="doc-cat",
            text="Cats sleep on sofas. They wake for dinner.",
            metadata={"topic": "home"},
        ),
        Document(
            id_="doc-bread",
            text="Bakers knead bread. Ovens glow before dawn.",
            metadata={"topic": "food"},
        ),
    ]


@pytest.fixture
async def embed(tiny_server) -> AsyncIterator[VicinityEmbedding]:
    """The server's embeddings. LlamaIndex embeds a node's metadata with its text, which is
    more than the 32 tokens the tiny model reads: the server truncates."""
    embed_model = VicinityEmbedding(
        client=Vicinity(url=tiny_server.url, transport=SpyTransport()),
        aclient=AsyncVicinity(url=tiny_server.url, transport=AsyncSpyTransport()),
        truncate=True,
    )
    yield embed_model
    embed_model.client.close()
    await embed_model.aclient.aclose()


def build(store: VicinityVectorStore, embed: VicinityEmbedding) -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        documents(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
        transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0)],
    )


def refs(nodes: List[NodeWithScore]) -> List[str]:
    return [n.node.ref_doc_id for n in nodes]


def stored_refs(store: VicinityVectorStore) -> Set[str]:
    return {n.ref_doc_id for n in store.get_nodes()}


def test_from_documents_stores_every_node(store: VicinityVectorStore, embed) -> None:
    build(store, embed)
    nodes = store.get_nodes()
    assert {n.ref_doc_id for n in nodes} == {"doc-sea", "doc-cat", "doc-bread"}
    sea = next(n for n in nodes if n.ref_doc_id == "doc-sea")
    assert sea.get_content() == documents()[0].text
    assert sea.metadata == {"topic": "sea"}


def test_retriever(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    found = index.as_retriever(similarity_top_k=2).retrieve("ships in winter")
    assert len(found) == 2
    assert all(isinstance(n.score, float) for n in found)
    assert found[0].score >= found[1].score
    assert set(refs(found)) <= {"doc-sea", "doc-cat", "doc-bread"}
    assert all(n.node.get_content() for n in found)


def test_retriever_with_filters(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    filters = MetadataFilters(filters=[MetadataFilter(key="topic", value="home")])
    found = index.as_retriever(similarity_top_k=3, filters=filters).retrieve("anything")
    assert refs(found) == ["doc-cat"]
    in_filter = MetadataFilters(
        filters=[MetadataFilter(key="topic", value=["sea", "food"], operator=FilterOperator.IN)]
    )
    found = index.as_retriever(similarity_top_k=3, filters=in_filter).retrieve("anything")
    assert set(refs(found)) == {"doc-sea", "doc-bread"}


def test_retriever_passes_the_servers_filter_error(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    bad = MetadataFilters(
        filters=[MetadataFilter(key="topic", value="sea", operator=FilterOperator.NIN)]
    )
    with pytest.raises(BadRequestError) as err:
        index.as_retriever(filters=bad).retrieve("anything")
    assert err.value.code == "bad_filter"


def test_retriever_text_search_and_hybrid(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    lexical = index.as_retriever(vector_store_query_mode="text_search", similarity_top_k=3)
    assert refs(lexical.retrieve("bread ovens")) == ["doc-bread"]
    hybrid = index.as_retriever(
        vector_store_query_mode="hybrid", alpha=0.0, similarity_top_k=1
    )
    assert refs(hybrid.retrieve("lighthouse keeper")) == ["doc-sea"]


def test_retriever_mmr(store: VicinityVectorStore, embed, spy) -> None:
    index = build(store, embed)
    retriever = index.as_retriever(
        vector_store_query_mode="mmr",
        similarity_top_k=2,
        vector_store_kwargs={"mmr_threshold": 0.2, "mmr_prefetch_k": 3},
    )
    found = retriever.retrieve("ships")
    assert len(found) == 2
    assert spy.bodies("/query")[-1]["mmr"] == {"lambda": 0.2, "fetch_k": 3}


def test_query_engine_without_llm(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    engine = index.as_query_engine(response_mode="no_text", similarity_top_k=2)
    response = engine.query("Who watched the ships?")
    # "no_text" synthesizes nothing: no LLM is called.
    assert not response.response
    assert len(response.source_nodes) == 2
    assert all(n.node.get_content() for n in response.source_nodes)


def test_insert_and_delete_documents(store: VicinityVectorStore, embed) -> None:
    index = build(store, embed)
    index.delete_ref_doc("doc-sea")
    assert stored_refs(store) == {"doc-cat", "doc-bread"}
    index.insert(Document(id_="doc-rain", text="Rain fell on the town.", metadata={"topic": "weather"}))
    assert stored_refs(store) == {"doc-cat", "doc-bread", "doc-rain"}
    found = index.as_retriever(vector_store_query_mode="text_search").retrieve("rain")
    assert refs(found) == ["doc-rain"]


def test_reopen_an_existing_collection(tiny_server, store: VicinityVectorStore, embed) -> None:
    build(store, embed)
    reopened = VicinityVectorStore(collection_name=store.collection_name, url=tiny_server.url)
    try:
        index = VectorStoreIndex.from_vector_store(reopened, embed_model=embed)
        found = index.as_retriever(similarity_top_k=3).retrieve("bread")
        assert set(refs(found)) == {"doc-sea", "doc-cat", "doc-bread"}
    finally:
        reopened.close()


async def test_async_end_to_end(
    store: VicinityVectorStore, embed, spy: SpyTransport, aspy: AsyncSpyTransport
) -> None:
    index = VectorStoreIndex(
        nodes=[],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed,
    )
    for document in documents():
        await index.ainsert(document)
    retriever = index.as_retriever(similarity_top_k=3)
    found = await retriever.aretrieve("ships")
    assert set(refs(found)) == {"doc-sea", "doc-cat", "doc-bread"}
    lexical = index.as_retriever(vector_store_query_mode="text_search")
    assert refs(await lexical.aretrieve("cats sofas")) == ["doc-cat"]
    engine = index.as_query_engine(response_mode="no_text", similarity_top_k=1)
    response = await engine.aquery("bread")
    assert len(response.source_nodes) == 1
    await index.adelete_ref_doc("doc-cat")
    assert {n.ref_doc_id for n in await store.aget_nodes()} == {"doc-sea", "doc-bread"}
    # Every request went through the async client: nothing was run in a thread on the
    # sync one.
    assert spy.seen == []
    paths = {p for _, p, _ in aspy.seen}
    assert any(p.endswith("/documents") for p in paths)
    assert any(p.endswith("/query") for p in paths)
    assert any(p.endswith("/documents/delete") for p in paths)
