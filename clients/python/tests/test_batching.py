"""Batching against the live server: upserts in batches of ``batch_size`` with ids generated
once, a batch whose response is lost retried without duplicates, and more than 10,000 ids
split over requests."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import AsyncRecorder, Exchange, Recorder, unique_name


def sent_ids(exchange: Exchange) -> list:
    return [d["id"] for d in json.loads(exchange.content)["documents"]]


def lose_response_of(n: int):
    """A recorder hook that drops the answer to the ``n``-th upsert once, after the server
    committed it, as a connection reset on the way back would."""
    seen = {"upserts": 0}

    def after(exchange: Exchange) -> None:
        if exchange.path.endswith("/documents") and exchange.method == "POST":
            seen["upserts"] += 1
            if seen["upserts"] == n:
                raise httpx.ReadError("connection reset by peer (test)")

    return after


@pytest.fixture
def recorded(server):
    recorder = Recorder()
    with server.client(transport=recorder, backoff=0) as client:
        name = unique_name()
        client.create_collection(name)
        yield client, name, recorder
        client.delete_collection(name)


def test_upsert_is_sent_in_batches_with_ids_generated_once(recorded) -> None:
    client, name, recorder = recorded
    produced = []

    def documents():
        for i in range(25):
            produced.append(i)
            yield {"text": f"generated document {i}", "metadata": {"i": i}}

    result = client.upsert(name, documents(), batch_size=10)
    assert produced == list(range(25))
    upserts = recorder.to("/documents")
    assert [len(sent_ids(x)) for x in upserts] == [10, 10, 5]
    ids = [i for x in upserts for i in sent_ids(x)]
    assert result.ids == ids and len(set(ids)) == 25
    stored = {d.id: d.metadata["i"] for d in client.iter_documents(name)}
    assert stored == {doc_id: i for i, doc_id in enumerate(ids)}


def test_lost_response_is_retried_without_duplicates(server) -> None:
    recorder = Recorder(after=lose_response_of(2))
    name = unique_name()
    with server.client(transport=recorder, backoff=0) as client:
        client.create_collection(name)
        try:
            result = client.upsert(name, [f"text {i}" for i in range(25)], batch_size=10)
            upserts = recorder.to("/documents")
            assert len(upserts) == 4
            # The lost batch went again, with the same generated ids.
            assert upserts[1].content == upserts[2].content
            assert len(result.documents) == 25 and len(set(result.ids)) == 25
            # The retry replaced what the first attempt had written.
            assert [d.replaced for d in result.documents[10:20]] == [True] * 10
            assert client.get_collection(name).documents == 25
        finally:
            client.delete_collection(name)


def test_more_than_10000_ids_are_split(recorded) -> None:
    client, name, recorder = recorded
    client.upsert(name, [{"id": f"real-{i}", "text": f"text {i}"} for i in range(3)])
    ids = [f"missing-{i}" for i in range(10_500)]
    ids[10_400] = "real-0"
    ids[5_000] = "real-2"
    ids[0] = "real-1"
    page = client.get_documents(name, ids=ids, limit=1000)
    assert [d.id for d in page.documents] == ["real-1", "real-2", "real-0"]
    assert page.total == 3 and page.next_after is None
    assert [len(json.loads(x.content)["ids"]) for x in recorder.to("/documents/get")] == [
        10_000, 500]
    deleted = client.delete_documents(name, ids=ids)
    assert sorted(deleted.deleted) == ["real-0", "real-1", "real-2"]
    assert [len(json.loads(x.content)["ids"]) for x in recorder.to("/documents/delete")] == [
        10_000, 500]
    assert client.get_collection(name).documents == 0


def test_ids_pages_are_all_fetched(recorded) -> None:
    client, name, recorder = recorded
    client.upsert(name, [{"id": f"d{i:03}", "text": f"text {i}"} for i in range(120)])
    wanted = [f"d{i:03}" for i in reversed(range(120))]
    page = client.get_documents(name, ids=wanted, limit=50)
    assert [d.id for d in page.documents] == wanted
    assert len(recorder.to("/documents/get")) == 3


async def test_async_batching_and_lost_response(server) -> None:
    recorder = AsyncRecorder(after=lose_response_of(1))
    name = unique_name()
    async with server.async_client(transport=recorder, backoff=0) as client:
        await client.create_collection(name)
        try:
            result = await client.upsert(
                name, ({"text": f"async {i}"} for i in range(7)), batch_size=3)
            upserts = recorder.to("/documents")
            assert [len(sent_ids(x)) for x in upserts] == [3, 3, 3, 1]
            assert upserts[0].content == upserts[1].content
            assert len(set(result.ids)) == 7
            assert (await client.get_collection(name)).documents == 7
        finally:
            await client.delete_collection(name)


def test_version_is_the_largest_of_the_batches(recorded) -> None:
    client, name, _ = recorded
    result = client.upsert(name, [f"t{i}" for i in range(5)], batch_size=2)
    assert result.version == client.query(name, "t1", k=1).version
