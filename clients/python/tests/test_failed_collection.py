"""A real 503 ``collection_failed``: a collection whose stored settings cannot be read fails to
restore; the client must raise at once rather than retry, since only deleting it helps."""

from __future__ import annotations

import json
import sqlite3

import pytest

from vicinity_client import ServiceUnavailableError
from vicinity_client.testing import LocalServer

from conftest import AsyncRecorder, Recorder


def test_failed_collection_is_not_retried(tmp_path) -> None:
    data = tmp_path / "data"
    with LocalServer(data_dir=str(data)) as server:
        with server.client() as client:
            client.create_collection("broken")
            client.create_collection("fine")
            client.upsert("fine", ["still served"])
        server.stop()
        # Break the stored index settings of one collection, as a bad migration might.
        db = sqlite3.connect(data / "vicinity.db")
        with db:
            changed = db.execute(
                "UPDATE collections SET index_config = ? WHERE name = 'broken'",
                (json.dumps({"type": "no-such-index"}),),
            ).rowcount
        db.close()
        assert changed == 1
        server.start()

        recorder = Recorder()
        with server.client(transport=recorder, max_retries=3, backoff=0) as client:
            ready = client.readyz()
            assert [f["name"] for f in ready["failed_collections"]] == ["broken"]
            described = client.get_collection("broken")
            assert described.status == "failed" and described.error
            with pytest.raises(ServiceUnavailableError) as e:
                client.query("broken", "anything")
            assert (e.value.status, e.value.code) == (503, "collection_failed")
            assert len(recorder.to("/broken/query")) == 1
            assert client.query("fine", "served", k=1).results[0].text == "still served"
            client.delete_collection("broken")
            assert client.list_collections() == ["fine"]


async def test_failed_collection_async(tmp_path) -> None:
    data = tmp_path / "data"
    with LocalServer(data_dir=str(data)) as server:
        with server.client() as client:
            client.create_collection("broken", dimension=4)
        server.stop()
        db = sqlite3.connect(data / "vicinity.db")
        with db:
            db.execute("UPDATE collections SET index_config = '{\"type\": 1}'")
        db.close()
        server.start()
        recorder = AsyncRecorder()
        async with server.async_client(transport=recorder, max_retries=3, backoff=0) as client:
            with pytest.raises(ServiceUnavailableError) as e:
                await client.upsert("broken", [{"vector": [1, 2, 3, 4]}])
            assert e.value.code == "collection_failed"
            assert len(recorder.to("/broken/documents")) == 1
