"""Every endpoint through the sync client, against the live main server, and the errors it
answers for real."""

from __future__ import annotations

import math

import pytest

from vicinity_client import (
    APIError,
    BadRequestError,
    Collection,
    ConflictError,
    DocumentInput,
    NotFoundError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    Vicinity,
)

from conftest import unique_name

DOCS = [
    DocumentInput(id="lighthouse", text="Lighthouses guide ships past dangerous coasts.",
                  metadata={"topic": "sea", "year": 1900}),
    DocumentInput(id="bees", text="Bees make honey from the nectar of flowers.",
                  metadata={"topic": "nature", "year": 2001}),
    DocumentInput(id="rust", text="Rust programs are fast and memory safe.",
                  metadata={"topic": "code", "year": 2015}),
]


def test_server_endpoints(client: Vicinity) -> None:
    info = client.info()
    assert info.model == "tiny-bert"
    assert info.dimension == 32
    assert info.max_input_tokens > 0
    assert info.raw["version"] == info.version
    assert client.healthz() is True
    assert client.readyz()["status"] == "ready"
    cluster = client.cluster()
    assert cluster["store"] == "sqlite"
    assert [n["id"] for n in cluster["nodes"]] == [cluster["node"]]
    assert "vicinity_http_request_duration_seconds" in client.metrics()
    doc = client.openapi()
    assert "/collections/{name}/query" in doc["paths"]


def test_collection_lifecycle(client: Vicinity) -> None:
    name = unique_name()
    assert client.collection_exists(name) is False
    created = client.create_collection(name, distance="dot", index="flat", lexical="none")
    assert isinstance(created, Collection)
    assert (created.name, created.source, created.distance) == (name, "text", "dot")
    assert created.index["type"] == "flat"
    assert created.lexical is not None and created.lexical["language"] == "none"
    assert created.dimension == 32 and created.status == "ready"
    # The same settings again: the existing collection, no conflict.
    assert client.create_collection(name, distance="dot", index={"type": "flat"},
                                    lexical={"language": "none"}).name == name
    assert client.collection_exists(name) is True
    assert name in client.list_collections()
    described = {c.name: c for c in client.describe_collections()}
    assert described[name].distance == "dot"
    got = client.get_collection(name)
    assert (got.documents, got.passages) == (0, 0)
    assert set(got.index_state) >= {"status", "pending", "indexed"}
    client.delete_collection(name)
    assert client.collection_exists(name) is False
    assert name not in client.list_collections()


def test_vector_collection(client: Vicinity) -> None:
    name = unique_name()
    created = client.create_collection(name, dimension=3, distance="l2")
    try:
        assert created.source == "vector" and created.dimension == 3
        client.upsert(name, [
            {"id": 1, "vector": [1.0, 0.0, 0.0], "metadata": {"n": 1}},
            {"id": 2, "vector": (0.0, 1.0, 0.0), "text": "stored beside the vector"},
        ])
        result = client.query(name, vector=[0.9, 0.1, 0.0], k=2, include=["vector", "text"])
        assert [h.document_id for h in result.results] == ["1", "2"]
        first = result.results[0]
        assert first.distance is not None and first.distance < result.results[1].distance
        assert first.vector == [1.0, 0.0, 0.0]
        assert client.get_document(name, 2).text == "stored beside the vector"
        with pytest.raises(BadRequestError) as e:
            client.query(name, vector=[1.0, 0.0])
        assert e.value.code == "dimension_mismatch"
    finally:
        client.delete_collection(name)


def test_documents_roundtrip(client: Vicinity, collection: str) -> None:
    result = client.upsert(collection, DOCS)
    assert result.ids == ["lighthouse", "bees", "rust"]
    assert all(d.passages >= 1 and d.replaced is False for d in result.documents)
    assert result.version >= 1
    assert result.raw["version"] == result.version

    doc = client.get_document(collection, "bees")
    assert doc.text == DOCS[1].text
    assert doc.metadata == {"topic": "nature", "year": 2001}
    assert doc.passages >= 1 and doc.created_at and doc.updated_at
    assert doc.raw["id"] == "bees"

    again = client.upsert(collection, [DocumentInput(id="bees", text="Bees dance.")])
    assert again.documents[0].replaced is True
    assert again.version > result.version
    assert client.get_document(collection, "bees").text == "Bees dance."

    page = client.get_documents(collection, ids=["rust", "missing", "lighthouse", "rust"])
    assert [d.id for d in page.documents] == ["rust", "lighthouse"]
    assert page.next_after is None and page.total == 2

    first = client.get_documents(collection, limit=2)
    assert [d.id for d in first.documents] == ["bees", "lighthouse"]
    assert first.total == 3 and first.next_after == "lighthouse"
    second = client.get_documents(collection, limit=2, after=first.next_after)
    assert [d.id for d in second.documents] == ["rust"] and second.next_after is None

    # "bees" lost its metadata when it was replaced.
    filtered = client.get_documents(collection, filter={"year": {"$gte": 1950}})
    assert [d.id for d in filtered.documents] == ["rust"] and filtered.total == 1
    assert [d.id for d in client.iter_documents(collection, page_size=1)] == [
        "bees", "lighthouse", "rust"]
    assert [d.id for d in client.iter_documents(collection, filter={"topic": "sea"})] == [
        "lighthouse"]

    deleted = client.delete_documents(collection, ids=["rust", "nope"])
    assert deleted.deleted == ["rust"]
    assert deleted.version > again.version
    by_filter = client.delete_documents(collection, filter={"topic": "sea"})
    assert by_filter.deleted == ["lighthouse"]
    everything = client.delete_documents(collection, all=True)
    assert everything.deleted == ["bees"]
    assert client.get_collection(collection).documents == 0


def test_document_ids_are_path_safe(client: Vicinity, collection: str) -> None:
    ids = ["a/b", "..", ".", "sp ace?#%", "ünï", 42]
    client.upsert(collection, [{"id": i, "text": f"document {i}"} for i in ids])
    for i in ids:
        assert client.get_document(collection, i).id == str(i)


def test_query_options(client: Vicinity, collection: str) -> None:
    upserted = client.upsert(collection, DOCS)
    hybrid = client.query(collection, "ships and coasts", k=2, min_version=upserted.version)
    assert hybrid.plan == "hybrid" and len(hybrid.results) == 2
    assert [leg["leg"] for leg in hybrid.legs] == ["dense", "lexical"]
    assert hybrid.version >= upserted.version and hybrid.time_ms >= 0
    top = hybrid.results[0]
    assert top.document_id == "lighthouse" and top.id.startswith("lighthouse#")
    assert top.text is not None and top.metadata == {"topic": "sea", "year": 1900}
    assert top.passage.end > top.passage.start
    assert DOCS[0].text[top.passage.start:top.passage.end] == top.text

    dense = client.query(collection, "honey", mode="dense", k=3, include=["metadata"])
    assert dense.plan == "flat" and all(h.distance is not None for h in dense.results)
    assert all(h.text is None for h in dense.results)
    filtered = client.query(collection, "anything", filter={"topic": {"$in": ["code"]}})
    assert [h.document_id for h in filtered.results] == ["rust"]
    lexical = client.query(collection, "honey", mode="lexical")
    assert lexical.plan == "lexical" and lexical.results[0].document_id == "bees"
    rrf = client.query(collection, "honey", fusion="rrf", rrf_k=10, alpha=0.7, candidates=5)
    assert rrf.plan == "hybrid"
    exact = client.query(collection, "honey", params={"exact": True}, mode="dense")
    assert exact.plan == "flat"
    mmr = client.query(collection, "bees", k=2, mmr={"lambda": 0.5, "fetch_k": 3}, mode="dense")
    assert len(mmr.results) == 2
    assert len(client.query(collection, "bees", k=2, mmr=True, mode="dense").results) == 2
    grouped = client.query(collection, "bees", k=2, group_by="document", group_size=1)
    assert len({h.document_id for h in grouped.results}) == 2
    reranked = client.query(collection, "bees", k=2, rerank={"top_n": 3})
    assert all(h.rerank_score is not None for h in reranked.results)


def test_query_batch(client: Vicinity, collection: str) -> None:
    upserted = client.upsert(collection, DOCS)
    answers = client.query_batch(collection, [
        {"query": "honey", "k": 1, "mode": "dense"},
        {"vector": client.embed("ships")[0], "k": 2, "min_version": upserted.version},
    ])
    assert len(answers) == 2
    assert len(answers[0].results) == 1 and len(answers[1].results) == 2
    assert answers[1].version >= upserted.version
    assert client.query_batch(collection, [], min_version=upserted.version) == []
    with pytest.raises(BadRequestError) as e:
        client.query_batch(collection, [{"query": "x"}, {"query": "y", "k": 0}])
    assert e.value.code == "invalid_parameter"


def test_embeddings_and_rerank(client: Vicinity) -> None:
    one = client.embed("hello world")
    assert len(one) == 1 and len(one[0]) == 32
    assert math.isclose(sum(x * x for x in one[0]), 1.0, rel_tol=1e-4)
    two = client.embed(["hello world", "bees"], normalize=False)
    assert len(two) == 2 and two[0] != two[1]
    openai = client.embeddings(["hello world", "bees"], model="whatever")
    assert len(openai) == 2
    assert all(math.isclose(a, b, abs_tol=1e-5) for a, b in zip(openai[0], one[0]))
    assert len(client.embeddings("bees")) == 1
    assert client.embed([]) == [] and client.embeddings([]) == []

    long_text = " ".join(["word"] * 200)
    with pytest.raises(BadRequestError) as e:
        client.embed(long_text)
    assert e.value.code == "input_too_long"
    assert len(client.embed(long_text, truncate=True)[0]) == 32

    ranked = client.rerank("honey bees", ["cars", "bees make honey", "rust"], return_text=True)
    assert sorted(r.index for r in ranked) == [0, 1, 2]
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    assert {r.text for r in ranked} == {"cars", "bees make honey", "rust"}
    raw = client.rerank("honey bees", ["cars", "bees make honey"], raw_scores=True)
    assert raw[0].text is None and len(raw) == 2


def test_not_found_errors(client: Vicinity, collection: str) -> None:
    with pytest.raises(NotFoundError) as e:
        client.get_collection(unique_name("missing"))
    assert (e.value.status, e.value.code) == (404, "collection_not_found")
    assert e.value.request_id and e.value.message
    assert e.value.body["error"]["code"] == "collection_not_found"
    with pytest.raises(NotFoundError) as e:
        client.delete_collection(unique_name("missing"))
    assert e.value.code == "collection_not_found"
    with pytest.raises(NotFoundError) as e:
        client.query(unique_name("missing"), "x")
    assert e.value.code == "collection_not_found"
    with pytest.raises(NotFoundError) as e:
        client.get_document(collection, "nope")
    assert e.value.code == "document_not_found"
    assert "nope" in str(e.value)


def test_bad_request_errors(client: Vicinity, collection: str) -> None:
    client.upsert(collection, DOCS)
    with pytest.raises(BadRequestError) as e:
        client.query(collection, "x", filter={"year": {"$near": 3}})
    assert e.value.code == "bad_filter"
    with pytest.raises(BadRequestError) as e:
        client.query(collection, "x", k=0)
    assert e.value.code == "invalid_parameter"
    with pytest.raises(BadRequestError) as e:
        client.query(collection, "x", k=100_000)
    assert (e.value.code, e.value.limit) == ("limit_exceeded", "max_k")
    with pytest.raises(BadRequestError) as e:
        client.query(collection)
    assert e.value.status == 400
    with pytest.raises(BadRequestError) as e:
        client.delete_documents(collection, filter={})
    assert e.value.code == "empty_filter"
    with pytest.raises(BadRequestError) as e:
        client.upsert(collection, [{"id": "x", "text": "a", "colour": "red"}])
    assert e.value.code == "invalid_request" and "colour" in e.value.message
    with pytest.raises(BadRequestError) as e:
        client.upsert(collection, [{"id": "d", "text": "a"}, {"id": "d", "text": "b"}])
    assert e.value.code == "duplicate_id"
    # Nothing of the refused batches was written.
    assert client.get_collection(collection).documents == len(DOCS)


def test_conflict_and_invalid_name(client: Vicinity, collection: str) -> None:
    with pytest.raises(ConflictError) as e:
        client.create_collection(collection, distance="l2")
    assert (e.value.status, e.value.code) == (409, "collection_conflict")
    for bad in ["bad name", "x" * 65, "semi;colon"]:
        with pytest.raises(UnprocessableEntityError) as e:
            client.create_collection(bad)
        assert (e.value.status, e.value.code) == (422, "invalid_name")


def test_unsupported_media_type_and_other_statuses(client: Vicinity) -> None:
    with pytest.raises(UnsupportedMediaTypeError) as e:
        client.request("POST", "/embed", content=b'{"inputs": "x"}',
                       headers={"content-type": "text/plain"})
    assert (e.value.status, e.value.code) == (415, "unsupported_media_type")
    # A status without a class of its own is a plain APIError.
    with pytest.raises(APIError) as e:
        client.request("PATCH", "/info")
    assert type(e.value) is APIError
    assert (e.value.status, e.value.code) == (405, "method_not_allowed")
    with pytest.raises(NotFoundError) as e:
        client.request("GET", "/no/such/route")
    assert e.value.code == "not_found"
    assert client.request("POST", "/embed", json={"inputs": "x"})[0][0] != 0


def test_client_side_checks(client: Vicinity, collection: str) -> None:
    with pytest.raises(ValueError):
        client.delete_documents(collection)
    with pytest.raises(ValueError):
        client.delete_documents(collection, ids=["a"], all=True)
    with pytest.raises(TypeError):
        client.delete_documents(collection, ids="abc")
    with pytest.raises(TypeError):
        client.get_documents(collection, ids="abc")
    with pytest.raises(ValueError):
        client.get_documents(collection, ids=["a"], filter={"a": 1})
    with pytest.raises(ValueError):
        client.upsert(collection, [{"vector": [float("nan")]}])
    with pytest.raises(ValueError):
        client.upsert(collection, DOCS, batch_size=0)
    with pytest.raises(TypeError):
        client.upsert(collection, DocumentInput(text="not a list"))
    with pytest.raises(ValueError):
        client.get_document(collection, "")
    with pytest.raises(TypeError):
        client.get_document(collection, None)  # type: ignore[arg-type]
    # Empty selections are answered without a request.
    assert client.upsert(collection, []).documents == []
    assert client.delete_documents(collection, ids=[]).deleted == []
    assert client.get_documents(collection, ids=[]).documents == []
