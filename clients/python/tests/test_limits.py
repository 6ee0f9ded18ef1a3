"""A server with small limits: real 413s and 409s, and batches the client splits when the
server refuses them as too large."""

from __future__ import annotations

import pytest

from vicinity_client import ConflictError, PayloadTooLargeError

from conftest import AsyncRecorder, Recorder, unique_name


@pytest.fixture
def limited(limits_server):
    """A client of the limits server with a recorder, and a fresh collection there."""
    recorder = Recorder()
    with limits_server.client(transport=recorder) as client:
        name = unique_name()
        client.create_collection(name)
        yield client, name, recorder
        client.delete_collection(name)


def test_text_over_max_text_bytes(limited) -> None:
    client, name, _ = limited
    with pytest.raises(PayloadTooLargeError) as e:
        client.query(name, "x" * 65)
    err = e.value
    assert (err.status, err.code, err.limit) == (413, "limit_exceeded", "max_text_bytes")
    assert err.request_id
    with pytest.raises(PayloadTooLargeError) as e:
        client.embed("y" * 100)
    assert e.value.limit == "max_text_bytes"


def test_body_over_max_body_bytes_is_not_split(limited) -> None:
    client, name, recorder = limited
    with pytest.raises(PayloadTooLargeError) as e:
        client.upsert(name, [{"id": "big", "text": "word " * 20_000}])
    assert (e.value.code, e.value.limit) == ("payload_too_large", "max_body_bytes")
    # One document cannot be split further: one request, then the error.
    assert [x.status for x in recorder.to("/documents")] == [413]


def test_document_with_too_many_passages_is_refused(limited) -> None:
    client, name, recorder = limited
    with pytest.raises(PayloadTooLargeError) as e:
        client.upsert(name, [{"id": "long", "text": "A sentence of several words. " * 40}])
    assert (e.value.code, e.value.limit) == ("limit_exceeded", "max_passages")
    assert len(recorder.to("/documents")) == 1


def test_upsert_batch_over_limits_is_split_until_it_fits(limited) -> None:
    client, name, recorder = limited
    docs = [{"id": f"d{i:02}", "text": f"short text {i}"} for i in range(10)]
    result = client.upsert(name, docs, batch_size=10)
    assert result.ids == [d["id"] for d in docs]
    statuses = [x.status for x in recorder.to("/documents")]
    # 10 documents > max_documents 4: refused, halved to 5 (refused, halved) and so on.
    assert statuses[0] == 413 and statuses.count(200) >= 3
    assert client.get_collection(name).documents == 10


def test_ids_over_max_documents_are_split(limited) -> None:
    client, name, recorder = limited
    client.upsert(name, [{"id": f"d{i}", "text": f"text {i}"} for i in range(6)], batch_size=3)
    wanted = ["d5", "x", "d0", "d3", "y", "d1"]
    page = client.get_documents(name, ids=wanted)
    assert [d.id for d in page.documents] == ["d5", "d0", "d3", "d1"]
    gets = [x.status for x in recorder.to("/documents/get")]
    assert gets[0] == 413 and gets[1:] == [200, 200]
    deleted = client.delete_documents(name, ids=wanted)
    assert sorted(deleted.deleted) == ["d0", "d1", "d3", "d5"]
    assert [x.status for x in recorder.to("/documents/delete")] == [413, 200, 200]
    assert client.get_collection(name).documents == 2


def test_too_many_collections_is_a_conflict(limits_server) -> None:
    made = []
    with limits_server.client() as client:
        try:
            with pytest.raises(ConflictError) as e:
                for _ in range(4):
                    name = unique_name("cap")
                    client.create_collection(name)
                    made.append(name)
            assert (e.value.code, e.value.limit) == ("limit_exceeded", "max_collections")
            assert len(made) == 3
        finally:
            for name in made:
                client.delete_collection(name)


async def test_async_limits(limits_server) -> None:
    recorder = AsyncRecorder()
    async with limits_server.async_client(transport=recorder) as client:
        name = unique_name()
        await client.create_collection(name)
        try:
            with pytest.raises(PayloadTooLargeError) as e:
                await client.query(name, "z" * 80)
            assert e.value.limit == "max_text_bytes"
            docs = [f"text number {i}" for i in range(9)]
            result = await client.upsert(name, docs)
            assert len(set(result.ids)) == 9
            assert recorder.to("/documents")[0].status == 413
            assert (await client.get_collection(name)).documents == 9
        finally:
            await client.delete_collection(name)
