"""The store's own behaviour against a live server with the tiny model: filters, server-side
MMR, relevance scores, modes, grouping, reranking, deletes, the retriever, async paths and
errors. Nothing here depends on what texts mean."""

from __future__ import annotations

import asyncio
import math
import socket
from typing import Dict, List, Sequence

import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from vicinity_client import (
    APIConnectionError,
    AsyncVicinity,
    BadRequestError,
    NotFoundError,
    Vicinity,
)
from vicinity_client.testing import LocalServer

from langchain_vicinity import VicinityEmbeddings, VicinityVectorStore


class TableEmbeddings(Embeddings):
    """Embeddings read from a table, so that tests choose the geometry."""

    def __init__(self, table: Dict[str, Sequence[float]]) -> None:
        self.table = table

    def embed_documents(self, texts: List[str]) -> List[List[float]]:
        return [list(self.table[t]) for t in texts]

    def embed_query(self, text: str) -> List[float]:
        return list(self.table[text])


def unit(*xs: float) -> List[float]:
    n = math.sqrt(sum(x * x for x in xs))
    return [x / n for x in xs]


# A redundant corpus around the query direction: three near-copies, then two documents off
# to either side, each less similar to the query than any copy but unlike the copies.
GEOMETRY = {
    "query": unit(1, 0, 0),
    "copy 1": unit(1, 0.30, 0),
    "copy 2": unit(1, 0.31, 0),
    "copy 3": unit(1, 0.32, 0),
    "left": unit(1, 0, 0.9),
    "right": unit(1, 0, -0.9),
}


@pytest.fixture
def store(tiny_server: LocalServer, collection_name: str):
    """A server-side-embedding store on a fresh collection, deleted afterwards."""
    s = VicinityVectorStore(collection_name, url=tiny_server.url)
    yield s
    s.delete_collection()
    s.close()


@pytest.fixture
def geo_store(tiny_server: LocalServer, collection_name: str, spied):
    """A client-side-embedding store over GEOMETRY, its requests recorded."""
    s = VicinityVectorStore(
        collection_name, embedding=TableEmbeddings(GEOMETRY), **spied(tiny_server.url)
    )
    s.add_texts([t for t in GEOMETRY if t != "query"], ids=[t for t in GEOMETRY if t != "query"])
    yield s
    s.delete_collection()


PEOPLE = [
    ("alice writes rust", {"name": "alice", "age": 31, "team": {"lang": "rust"}}),
    ("bob writes python", {"name": "bob", "age": 45, "team": {"lang": "python"}}),
    ("carol writes go", {"name": "carol", "age": 27, "team": {"lang": "go"}}),
    ("dave writes rust too", {"name": "dave", "age": 52, "team": {"lang": "rust"}}),
]


def add_people(store: VicinityVectorStore) -> List[str]:
    return store.add_texts([t for t, _ in PEOPLE], [m for _, m in PEOPLE])


# ----- writes and metadata ------------------------------------------------------------------


def test_metadata_comes_back_exactly(store: VicinityVectorStore) -> None:
    nested = {"a": {"b": [1, 2.5, "x", None, True]}, "empty": {}}
    ids = store.add_texts(["one", "two", "three"], [nested, {}, {"k": "v"}])
    docs = store.get_by_ids(ids)
    assert [d.metadata for d in docs] == [nested, {}, {"k": "v"}]
    hits = store.similarity_search("two", k=3, mode="dense")
    assert {d.id: d.metadata for d in hits} == dict(zip(ids, [nested, {}, {"k": "v"}]))
    # Without metadatas at all, documents read back with `{}`, never with keys of ours.
    [bare] = store.add_texts(["four"])
    assert store.get_by_ids([bare]) == [Document(id=bare, page_content="four", metadata={})]


def test_ids_generated_given_and_from_documents(store: VicinityVectorStore) -> None:
    generated = store.add_texts(["a", "b"])
    assert len(set(generated)) == 2 and all(len(i) == 36 for i in generated)  # uuid4
    docs = [Document(page_content="c", id="doc-c"), Document(page_content="d")]
    ids = store.add_documents(docs)
    assert ids[0] == "doc-c" and len(ids[1]) == 36
    # ids= wins over Document.id.
    assert store.add_documents([Document(page_content="e", id="ignored")], ids=["e"]) == ["e"]
    assert [d.id for d in store.get_by_ids(["doc-c", "e", "ignored"])] == ["doc-c", "e"]


def test_add_nothing_sends_nothing(tiny_server: LocalServer, collection_name: str, spied, spy):
    s = VicinityVectorStore(collection_name, **spied(tiny_server.url))
    assert s.add_texts([]) == []
    assert spy.seen == []


def test_mismatched_metadatas_are_refused(store: VicinityVectorStore) -> None:
    with pytest.raises(ValueError, match="metadatas"):
        store.add_texts(["a", "b"], [{}])
    with pytest.raises(ValueError, match="ids"):
        store.add_texts(["a", "b"], ids=["1"])


def test_long_document_is_passages_in_search_and_whole_in_get(store: VicinityVectorStore):
    # The tiny model reads 30 tokens at a time: this text becomes several passages.
    long_text = " ".join(f"sentence number {i} about lighthouses and ships." for i in range(20))
    [doc_id] = store.add_texts([long_text], [{"kind": "long"}], ids=["long"])
    store.add_texts(["a short note"], ids=["short"])
    hits = store.similarity_search("lighthouses", k=5, mode="lexical")
    assert len(hits) == 5 and {d.id for d in hits} == {"long"}
    for d in hits:
        assert d.page_content in long_text and d.page_content != long_text
        assert d.metadata == {"kind": "long"}
    # One passage per document with group_by.
    grouped = store.similarity_search("lighthouses", k=2, mode="dense", group_by="document")
    assert sorted(d.id for d in grouped) == ["long", "short"]
    assert store.get_by_ids([doc_id])[0].page_content == long_text


def test_collection_is_created_with_the_settings_given(
    tiny_server: LocalServer, collection_name: str
) -> None:
    s = VicinityVectorStore(
        collection_name,
        url=tiny_server.url,
        distance="dot",
        index={"type": "flat"},
        chunking={"max_tokens": 16, "overlap": 2},
        lexical={"language": "none"},
    )
    try:
        assert s.get_collection() is None
        assert s.similarity_search("anything") == []  # reading creates nothing
        assert s.get_collection() is None
        s.add_texts(["hello"])
        c = s.get_collection()
        assert c is not None and c.source == "text" and c.distance == "dot"
        assert c.chunking == {"max_tokens": 16, "overlap": 2}
        assert c.index["type"] == "flat" and c.lexical["language"] == "none"
        # Another store on the same collection adopts it, whatever its own settings.
        other = VicinityVectorStore(collection_name, url=tiny_server.url, distance="l2")
        other.add_texts(["world"])
        assert other.get_collection().distance == "dot"
    finally:
        s.delete_collection()


def test_client_side_embedding_makes_a_vector_collection(geo_store: VicinityVectorStore):
    c = geo_store.get_collection()
    assert c is not None and c.source == "vector" and c.dimension == 3
    docs = geo_store.get_by_ids(["left"])
    assert docs == [Document(id="left", page_content="left", metadata={})]
    assert geo_store.embeddings is geo_store.embedding


def test_embeddings_property_is_the_server_model(store: VicinityVectorStore, tiny_server):
    emb = store.embeddings
    assert isinstance(emb, VicinityEmbeddings)
    assert len(emb.embed_query("hello")) == tiny_server.client().info().dimension


# ----- filters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flt, names",
    [
        ({"name": "bob"}, ["bob"]),
        ({"age": {"$gte": 45}}, ["bob", "dave"]),
        ({"team.lang": "rust"}, ["alice", "dave"]),
        ({"name": {"$in": ["carol", "alice"]}}, ["alice", "carol"]),
        ({"name": {"$nin": ["carol", "alice"]}}, ["bob", "dave"]),
        ({"$or": [{"age": {"$lt": 30}}, {"name": "bob"}]}, ["bob", "carol"]),
        ({"$and": [{"team.lang": "rust"}, {"age": {"$gt": 40}}]}, ["dave"]),
    ],
)
def test_filter_is_passed_through(store: VicinityVectorStore, flt, names) -> None:
    add_people(store)
    docs = store.similarity_search("writes", k=4, filter=flt)
    assert sorted(d.metadata["name"] for d in docs) == names
    docs = store.max_marginal_relevance_search("writes", k=4, fetch_k=4, filter=flt)
    assert sorted(d.metadata["name"] for d in docs) == names


def test_bad_filter_raises_the_clients_error(store: VicinityVectorStore) -> None:
    add_people(store)
    with pytest.raises(BadRequestError) as err:
        store.similarity_search("writes", filter={"age": {"$near": 3}})
    assert err.value.status == 400 and err.value.code == "bad_filter"


async def test_bad_filter_raises_on_the_async_path_too(store: VicinityVectorStore) -> None:
    await store.aadd_texts(["x"], [{"a": 1}])
    with pytest.raises(BadRequestError) as err:
        await store.asimilarity_search("x", filter={"a": {"$bogus": 1}})
    assert err.value.code == "bad_filter"


# ----- MMR, by the server --------------------------------------------------------------------


def test_mmr_is_chosen_by_the_server(geo_store: VicinityVectorStore, spy) -> None:
    plain = [d.id for d in geo_store.similarity_search("query", k=3)]
    assert plain == ["copy 1", "copy 2", "copy 3"]
    spy.seen.clear()
    mmr = [d.id for d in geo_store.max_marginal_relevance_search("query", k=3, fetch_k=5)]
    assert mmr[0] == "copy 1" and set(mmr[1:]) == {"left", "right"}
    # One query, carrying the mmr option; no vectors fetched to choose on the client.
    [body] = spy.bodies("/query")
    assert body["mmr"] == {"lambda": 0.5, "fetch_k": 5} and body["k"] == 3
    assert "vector" not in (body.get("include") or [])
    # lambda 1 keeps the nearest-first order.
    assert [
        d.id for d in geo_store.max_marginal_relevance_search("query", k=3, lambda_mult=1.0)
    ] == plain


def test_mmr_by_vector_and_fetch_k_below_k(geo_store: VicinityVectorStore, spy) -> None:
    spy.seen.clear()
    docs = geo_store.max_marginal_relevance_search_by_vector(GEOMETRY["query"], k=3, fetch_k=2)
    assert len(docs) == 3
    assert spy.bodies("/query")[0]["mmr"]["fetch_k"] == 3


async def test_async_mmr(geo_store: VicinityVectorStore, aspy) -> None:
    docs = await geo_store.amax_marginal_relevance_search("query", k=3, fetch_k=5)
    assert docs[0].id == "copy 1" and {d.id for d in docs[1:]} == {"left", "right"}
    docs = await geo_store.amax_marginal_relevance_search_by_vector(
        GEOMETRY["query"], k=3, fetch_k=5
    )
    assert {d.id for d in docs[1:]} == {"left", "right"}
    assert [b["mmr"]["fetch_k"] for b in aspy.bodies("/query")] == [5, 5]


# ----- scores and relevance ------------------------------------------------------------------


@pytest.mark.parametrize("distance", ["cosine", "dot", "l2"])
def test_relevance_scores_map_each_distance_to_0_1(
    tiny_server: LocalServer, collection_name: str, distance: str
) -> None:
    s = VicinityVectorStore(
        collection_name,
        embedding=TableEmbeddings(GEOMETRY),
        url=tiny_server.url,
        distance=distance,
    )
    try:
        s.add_texts(list(GEOMETRY), ids=list(GEOMETRY))
        pairs = s.similarity_search_with_relevance_scores("query", k=6)
        assert [d.id for d, _ in pairs][0] == "query"
        q = GEOMETRY["query"]
        for doc, rel in pairs:
            cos = sum(a * b for a, b in zip(q, GEOMETRY[doc.id]))
            # Unit vectors: every distance gives (1 + cos) / 2.
            assert rel == pytest.approx((1 + cos) / 2, abs=1e-5)
            assert 0.0 <= rel <= 1.0
        kept = s.similarity_search_with_relevance_scores("query", k=6, score_threshold=0.95)
        assert {d.id for d, _ in kept} == {"query", "copy 1", "copy 2", "copy 3"}
    finally:
        s.delete_collection()


def test_scores_are_the_servers(store: VicinityVectorStore) -> None:
    store.add_texts(["foo", "bar"], ids=["1", "2"])
    pairs = store.similarity_search_with_score("foo", k=2, mode="dense")
    assert pairs[0][0].id == "1" and pairs[0][1] == pytest.approx(1.0, abs=1e-5)
    assert pairs[0][1] >= pairs[1][1]


def test_relevance_scores_with_server_embeddings(store: VicinityVectorStore) -> None:
    store.add_texts(["foo", "bar", "baz qux"], ids=["1", "2", "3"])
    pairs = store.similarity_search_with_relevance_scores("foo", k=3)
    assert pairs[0][0].id == "1" and pairs[0][1] == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= r <= 1.0 for _, r in pairs)
    with pytest.raises(ValueError, match="dense"):
        store.similarity_search_with_relevance_scores("foo", mode="hybrid")


async def test_async_relevance_scores(store: VicinityVectorStore) -> None:
    assert await store.asimilarity_search_with_relevance_scores("foo") == []
    await store.aadd_texts(["foo", "bar"], ids=["1", "2"])
    pairs = await store.asimilarity_search_with_relevance_scores("foo", k=2)
    assert pairs[0][0].id == "1" and all(0.0 <= r <= 1.0 for _, r in pairs)


# ----- modes, rerank, other options -------------------------------------------------------------


def test_modes(tiny_server: LocalServer, collection_name: str, spied, spy) -> None:
    s = VicinityVectorStore(collection_name, **spied(tiny_server.url))
    try:
        add_people(s)
        lexical = s.similarity_search("python", k=4, mode="lexical")
        assert [d.metadata["name"] for d in lexical] == ["bob"]  # BM25 needs the word
        assert len(s.similarity_search("python", k=4, mode="dense")) == 4
        hybrid = s.similarity_search("python", k=4, mode="hybrid")
        assert hybrid[0].metadata["name"] == "bob" and len(hybrid) == 4
        assert [b.get("mode") for b in spy.bodies("/query")] == ["lexical", "dense", "hybrid"]
        # The store's default mode, and the server's default (no mode sent) otherwise.
        spy.seen.clear()
        s.similarity_search("python")
        lex = VicinityVectorStore(collection_name, mode="lexical", client=s.client)
        assert [d.metadata["name"] for d in lex.similarity_search("python")] == ["bob"]
        assert [b.get("mode") for b in spy.bodies("/query")] == [None, "lexical"]
    finally:
        s.delete_collection()


def test_hybrid_options_are_passed_through(store: VicinityVectorStore, tiny_server) -> None:
    add_people(store)
    docs = store.similarity_search(
        "python", k=2, mode="hybrid", fusion="rrf", rrf_k=10, alpha=0.2, candidates=4
    )
    assert docs[0].metadata["name"] == "bob"
    docs = store.similarity_search("python", k=2, mode="dense", params={"exact": True})
    assert len(docs) == 2


def test_rerank(store: VicinityVectorStore) -> None:
    add_people(store)
    pairs = store.similarity_search_with_score("who writes rust", k=3, rerank=True)
    plain = store.similarity_search_with_score("who writes rust", k=3)
    assert len(pairs) == 3
    # Reranked answers carry the cross-encoder's scores, in the order it ranks.
    scores = [s for _, s in pairs]
    assert scores == sorted(scores, reverse=True)
    assert scores != [s for _, s in plain]
    assert len(store.similarity_search("who writes rust", k=2, rerank={"top_n": 4})) == 2
    assert len(store.similarity_search("who writes rust", k=2, rerank=3)) == 2
    with pytest.raises(TypeError):
        store.similarity_search("x", rerank="yes")


def test_unknown_search_arguments_are_refused(store: VicinityVectorStore) -> None:
    with pytest.raises(TypeError, match="filtr"):
        store.similarity_search("x", filtr={"a": 1})
    with pytest.raises(TypeError):
        store.add_texts(["x"], colour="red")
    with pytest.raises(TypeError):
        store.delete(["x"], everything=True)


# ----- deletes -----------------------------------------------------------------------------------


def test_delete_by_ids_filter_and_all(store: VicinityVectorStore) -> None:
    ids = add_people(store)
    assert store.delete([]) is True
    assert len(store.get_by_ids(ids)) == 4
    assert store.delete([ids[0], "no-such-id"]) is True
    assert [d.id for d in store.get_by_ids(ids)] == ids[1:]
    assert store.delete(filter={"team.lang": "rust"}) is True
    assert [d.metadata["name"] for d in store.get_by_ids(ids)] == ["bob", "carol"]
    with pytest.raises(ValueError):
        store.delete(ids, filter={"a": 1})
    # LangChain's meaning of delete() with no ids: every document (the collection stays).
    assert store.delete() is True
    assert store.get_by_ids(ids) == [] and store.similarity_search("writes") == []
    assert store.get_collection() is not None
    with pytest.raises(BadRequestError) as err:
        store.delete(filter={})
    assert err.value.code == "empty_filter"


async def test_async_delete_by_ids_filter_and_all(store: VicinityVectorStore) -> None:
    assert await store.adelete(["nothing", "here"]) is True  # no collection yet
    ids = await store.aadd_texts([t for t, _ in PEOPLE], [m for _, m in PEOPLE])
    await store.adelete([ids[0]])
    await store.adelete(filter={"name": "bob"})
    assert [d.metadata["name"] for d in await store.aget_by_ids(ids)] == ["carol", "dave"]
    await store.adelete()
    assert await store.aget_by_ids(ids) == []


# ----- the retriever ---------------------------------------------------------------------------


def test_retriever_similarity_mmr_and_threshold(geo_store: VicinityVectorStore, spy) -> None:
    spy.seen.clear()
    similar = geo_store.as_retriever(search_kwargs={"k": 3}).invoke("query")
    assert [d.id for d in similar] == ["copy 1", "copy 2", "copy 3"]
    mmr = geo_store.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5, "lambda_mult": 0.5}
    ).invoke("query")
    assert {d.id for d in mmr[1:]} == {"left", "right"}
    assert spy.bodies("/query")[-1]["mmr"] == {"lambda": 0.5, "fetch_k": 5}
    threshold = geo_store.as_retriever(
        search_type="similarity_score_threshold",
        search_kwargs={"k": 5, "score_threshold": 0.95},
    ).invoke("query")
    assert {d.id for d in threshold} == {"copy 1", "copy 2", "copy 3"}
    filtered = geo_store.as_retriever(
        search_kwargs={"k": 5, "filter": {"side": "left"}}
    ).invoke("query")
    assert filtered == []  # no document has that metadata


async def test_retriever_async(geo_store: VicinityVectorStore, aspy) -> None:
    docs = await geo_store.as_retriever(
        search_type="mmr", search_kwargs={"k": 3, "fetch_k": 5}
    ).ainvoke("query")
    assert {d.id for d in docs[1:]} == {"left", "right"}
    assert aspy.bodies("/query")[-1]["mmr"]["fetch_k"] == 5


def test_retriever_with_server_embeddings_and_filter(store: VicinityVectorStore) -> None:
    add_people(store)
    retriever = store.as_retriever(search_kwargs={"k": 2, "filter": {"team.lang": "rust"}})
    assert sorted(d.metadata["name"] for d in retriever.invoke("writes")) == ["alice", "dave"]


# ----- constructors and async paths --------------------------------------------------------------


def test_from_texts_and_from_documents(tiny_server: LocalServer, collection_name: str) -> None:
    s = VicinityVectorStore.from_texts(
        ["foo", "bar"],
        metadatas=[{"n": 1}, {"n": 2}],
        ids=["f", "b"],
        collection_name=collection_name,
        url=tiny_server.url,
    )
    try:
        assert [d.id for d in s.get_by_ids(["f", "b"])] == ["f", "b"]
        docs = [Document(page_content="baz", metadata={"n": 3}, id="z")]
        t = VicinityVectorStore.from_documents(
            docs, collection_name=collection_name, url=tiny_server.url
        )
        assert t.get_by_ids(["z"]) == docs
    finally:
        s.delete_collection()


async def test_async_constructors_and_search(
    tiny_server: LocalServer, collection_name: str
) -> None:
    s = await VicinityVectorStore.afrom_texts(
        ["foo", "bar"], ids=["f", "b"], collection_name=collection_name, url=tiny_server.url
    )
    try:
        assert [d.id for d in await s.asimilarity_search("bar", k=2)] == ["b", "f"]
        pairs = await s.asimilarity_search_with_score("foo", k=1, mode="dense")
        assert pairs[0][0].id == "f" and pairs[0][1] == pytest.approx(1.0, abs=1e-5)
        vec = (await s.embeddings.aembed_documents(["foo"]))[0]
        assert [d.id for d in await s.asimilarity_search_by_vector(vec, k=1)] == ["f"]
        t = await VicinityVectorStore.afrom_documents(
            [Document(page_content="baz", id="z")],
            collection_name=collection_name,
            url=tiny_server.url,
        )
        assert [d.page_content for d in await t.aget_by_ids(["z", "f"])] == ["baz", "foo"]
        await t.aclose()
    finally:
        await s.adelete_collection()
        await s.aclose()


async def test_async_paths_use_the_async_client(
    tiny_server: LocalServer, collection_name: str, spied, spy, aspy
) -> None:
    s = VicinityVectorStore(collection_name, **spied(tiny_server.url))
    await s.aadd_texts(["foo", "bar"], ids=["1", "2"])
    await s.asimilarity_search("foo")
    await s.amax_marginal_relevance_search("foo", k=2)
    await s.aget_by_ids(["1"])
    await s.adelete(["1"])
    await s.adelete_collection()
    assert spy.seen == []  # nothing went through the sync client (or a thread)
    paths = [p for _, p, _ in aspy.seen]
    assert any(p.endswith("/documents") for p in paths)
    assert any(p.endswith("/query") for p in paths)
    assert any(p.endswith("/documents/delete") for p in paths)


def test_a_store_outlives_event_loops(tiny_server: LocalServer, collection_name: str) -> None:
    # asyncio.run makes a new loop each time; the store's own async client follows it.
    s = VicinityVectorStore(collection_name, url=tiny_server.url)
    try:
        asyncio.run(s.aadd_texts(["foo"], ids=["1"]))
        assert [d.id for d in asyncio.run(s.asimilarity_search("foo"))] == ["1"]
    finally:
        s.delete_collection()


def test_client_side_rejects_what_needs_text(geo_store: VicinityVectorStore) -> None:
    # Rerank reads the query text, which a vector query does not send.
    with pytest.raises(BadRequestError) as err:
        geo_store.similarity_search("query", rerank=True)
    assert err.value.code == "text_required"


# ----- errors ----------------------------------------------------------------------------------


def test_wrong_dimension_raises(store: VicinityVectorStore) -> None:
    store.add_texts(["foo"])
    with pytest.raises(BadRequestError) as err:
        store.similarity_search_by_vector([0.1, 0.2, 0.3])
    assert err.value.code == "dimension_mismatch"


def test_server_errors_on_add_propagate(store: VicinityVectorStore) -> None:
    with pytest.raises(BadRequestError) as err:
        store.add_texts(["   "])
    assert err.value.status == 400 and err.value.code


def test_connection_error_propagates(collection_name: str) -> None:
    # A port that was free a moment ago: nothing listens there.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    s = VicinityVectorStore(
        collection_name, url=f"http://127.0.0.1:{port}", client_kwargs={"max_retries": 0}
    )
    with pytest.raises(APIConnectionError):
        s.similarity_search("foo")


def test_collection_deleted_behind_the_stores_back(
    store: VicinityVectorStore, tiny_server: LocalServer
) -> None:
    store.add_texts(["foo"])
    tiny_server.client().delete_collection(store.collection_name)
    with pytest.raises(NotFoundError) as err:
        store.similarity_search("foo")
    assert err.value.code == "collection_not_found"


def test_one_client_without_url_cannot_build_the_other(
    tiny_server: LocalServer, collection_name: str
) -> None:
    s = VicinityVectorStore(collection_name, client=Vicinity(url=tiny_server.url))
    with pytest.raises(ValueError, match="async_client"):
        asyncio.run(s.asimilarity_search("foo"))
    a = VicinityVectorStore(collection_name, async_client=AsyncVicinity(url=tiny_server.url))
    with pytest.raises(ValueError, match="client"):
        a.similarity_search("foo")
