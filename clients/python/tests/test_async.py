"""Every endpoint through the async client, against the live main server, and its errors."""

from __future__ import annotations

import asyncio

import pytest

from vicinity_client import (
    APIError,
    AsyncVicinity,
    BadRequestError,
    ConflictError,
    DocumentInput,
    NotFoundError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
)

from conftest import unique_name


async def test_server_endpoints(aclient: AsyncVicinity) -> None:
    info = await aclient.info()
    assert (info.model, info.dimension) == ("tiny-bert", 32)
    # The test server runs the default precision, which every CPU can.
    assert info.precision == "f32" and info.kernel in ("avx512f", "gemm")
    assert await aclient.healthz() is True
    assert (await aclient.readyz())["status"] == "ready"
    assert (await aclient.cluster())["store"] == "sqlite"
    assert "vicinity_embed_queue_texts" in await aclient.metrics()
    assert "/embed" in (await aclient.openapi())["paths"]


async def test_collections_documents_and_queries(aclient: AsyncVicinity) -> None:
    name = unique_name()
    assert await aclient.collection_exists(name) is False
    created = await aclient.create_collection(name, chunking={"max_tokens": 16, "overlap": 2})
    assert created.chunking == {"max_tokens": 16, "overlap": 2}
    try:
        assert name in await aclient.list_collections()
        assert any(c.name == name for c in await aclient.describe_collections())
        upserted = await aclient.upsert(name, [
            DocumentInput(id="sea", text="Lighthouses guide ships past dangerous coasts.",
                          metadata={"topic": "sea"}),
            {"id": "bees", "text": "Bees make honey.", "metadata": {"topic": "nature"}},
            "An anonymous document.",
        ], batch_size=2)
        assert len(upserted.documents) == 3 and upserted.ids[:2] == ["sea", "bees"]
        assert (await aclient.get_collection(name)).documents == 3
        assert (await aclient.get_document(name, "bees")).metadata == {"topic": "nature"}
        page = await aclient.get_documents(name, ids=["bees", "gone", "sea"])
        assert [d.id for d in page.documents] == ["bees", "sea"]
        listed = await aclient.get_documents(name, filter={"topic": "sea"}, limit=5)
        assert [d.id for d in listed.documents] == ["sea"] and listed.total == 1
        ids = [d.id async for d in aclient.iter_documents(name, page_size=1)]
        assert ids == sorted(upserted.ids)

        result = await aclient.query(name, "honey", k=1, mode="dense",
                                     min_version=upserted.version, include=["text", "vector"])
        hit = result.results[0]
        assert hit.document_id == "bees" and hit.vector is not None and len(hit.vector) == 32
        reranked = await aclient.query(name, "ships", k=2, rerank=True)
        assert all(h.rerank_score is not None for h in reranked.results)
        batch = await aclient.query_batch(name, [{"query": "ships", "k": 1},
                                                 {"query": "bees", "k": 2}])
        assert [len(r.results) for r in batch] == [1, 2]

        deleted = await aclient.delete_documents(name, ids=["bees"])
        assert deleted.deleted == ["bees"] and deleted.version > upserted.version
        assert (await aclient.delete_documents(name, filter={"topic": "sea"})).deleted == ["sea"]
        assert len((await aclient.delete_documents(name, all=True)).deleted) == 1
    finally:
        await aclient.delete_collection(name)
    assert await aclient.collection_exists(name) is False


async def test_embeddings_and_rerank(aclient: AsyncVicinity) -> None:
    vectors, openai = await asyncio.gather(
        aclient.embed(["a lighthouse", "bees"]), aclient.embeddings(["a lighthouse", "bees"])
    )
    assert len(vectors) == len(openai) == 2 and len(vectors[0]) == 32
    ranked = await aclient.rerank("honey", ["bees make honey", "cars"], return_text=True)
    assert {r.text for r in ranked} == {"bees make honey", "cars"}
    assert await aclient.embed([]) == []


async def test_errors(aclient: AsyncVicinity) -> None:
    name = unique_name()
    with pytest.raises(NotFoundError) as e:
        await aclient.get_collection(name)
    assert e.value.code == "collection_not_found"
    await aclient.create_collection(name)
    try:
        with pytest.raises(NotFoundError) as e:
            await aclient.get_document(name, "nope")
        assert e.value.code == "document_not_found"
        with pytest.raises(BadRequestError) as e:
            await aclient.query(name, "x", filter={"$or": 3})
        assert e.value.code == "bad_filter"
        with pytest.raises(BadRequestError) as e:
            await aclient.query(name, "x", k=-1)
        assert e.value.status == 400
        with pytest.raises(ConflictError) as e:
            await aclient.create_collection(name, dimension=7)
        assert e.value.code == "collection_conflict"
        with pytest.raises(ValueError):
            await aclient.delete_documents(name, ids=["a"], filter={"a": 1})
    finally:
        await aclient.delete_collection(name)
    with pytest.raises(UnprocessableEntityError) as e:
        await aclient.create_collection("no spaces allowed")
    assert e.value.code == "invalid_name"
    with pytest.raises(UnsupportedMediaTypeError):
        await aclient.request("POST", "/v1/embeddings", content=b'{"input": "x"}',
                              headers={"content-type": "application/x-www-form-urlencoded"})
    with pytest.raises(APIError) as e:
        await aclient.request("DELETE", "/info")
    assert e.value.status == 405
