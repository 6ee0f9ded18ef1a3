"""`VicinityEmbeddings` against a live server with the tiny model."""

from __future__ import annotations

import math

import pytest
from vicinity_client import BadRequestError
from vicinity_client.testing import LocalServer

from langchain_vicinity import VicinityEmbeddings

TEXTS = ["one fish", "two fish", "red fish", "blue fish", "a lighthouse"]


def test_embed_query_and_documents(tiny_server: LocalServer) -> None:
    emb = VicinityEmbeddings(url=tiny_server.url)
    try:
        dim = tiny_server.client().info().dimension
        q = emb.embed_query("one fish")
        assert len(q) == dim
        assert math.isclose(math.sqrt(sum(x * x for x in q)), 1.0, rel_tol=1e-4)
        docs = emb.embed_documents(TEXTS)
        assert len(docs) == len(TEXTS) and all(len(v) == dim for v in docs)
        assert docs[0] == pytest.approx(q, abs=1e-6)
        assert emb.embed_documents([]) == []
    finally:
        emb.close()


def test_large_inputs_are_batched(tiny_server: LocalServer, spied, spy) -> None:
    emb = VicinityEmbeddings(batch_size=2, **spied(tiny_server.url))
    vectors = emb.embed_documents(TEXTS)
    bodies = spy.bodies("/v1/embeddings")
    assert [b["input"] for b in bodies] == [TEXTS[0:2], TEXTS[2:4], TEXTS[4:5]]
    # The same vectors as one request gives, in order.
    whole = VicinityEmbeddings(url=tiny_server.url).embed_documents(TEXTS)
    for a, b in zip(vectors, whole):
        assert a == pytest.approx(b, abs=1e-6)


async def test_async_embeddings(tiny_server: LocalServer, spied, spy, aspy) -> None:
    emb = VicinityEmbeddings(batch_size=3, **spied(tiny_server.url))
    vectors = await emb.aembed_documents(TEXTS)
    q = await emb.aembed_query("one fish")
    assert len(vectors) == 5 and vectors[0] == pytest.approx(q, abs=1e-6)
    assert [len(b["input"]) for b in aspy.bodies("/v1/embeddings")] == [3, 2, 1]
    assert spy.seen == []  # not a thread around the sync client


def test_model_is_sent_and_batch_size_checked(tiny_server: LocalServer, spied, spy) -> None:
    VicinityEmbeddings(model="whatever", **spied(tiny_server.url)).embed_query("x")
    assert spy.bodies("/v1/embeddings")[0]["model"] == "whatever"
    with pytest.raises(ValueError):
        VicinityEmbeddings(url=tiny_server.url, batch_size=0)
    with pytest.raises(ValueError):
        VicinityEmbeddings(url=tiny_server.url, batch_size=5000)


def test_errors_propagate(tiny_server: LocalServer) -> None:
    emb = VicinityEmbeddings(url=tiny_server.url)
    with pytest.raises(BadRequestError) as err:
        emb.embed_documents(["fine", ""])
    assert err.value.status == 400 and err.value.code == "empty_input"
