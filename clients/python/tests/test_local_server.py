"""LocalServer: what it passes to the server, what it keeps out, and how it stops."""

from __future__ import annotations

import os

import httpx
import pytest

from vicinity_client import AsyncVicinity, Vicinity
from vicinity_client.testing import LocalServer, find_binary, find_model

from conftest import REPO


def test_defaults_find_the_repository() -> None:
    assert find_binary() == os.environ.get("VICINITY_BIN", str(REPO / "target/debug/vicinity"))
    model = find_model()
    if os.environ.get("VICINITY_TEST_MODEL"):
        assert model == os.environ["VICINITY_TEST_MODEL"]
    else:
        assert model == str(REPO / "tests" / "fixtures" / "tiny-bert")


def test_a_server_of_its_own_stopped_and_removed_on_exit(monkeypatch) -> None:
    # The caller's settings must not reach the server: were this key passed on, the request
    # without a key below would be refused.
    monkeypatch.setenv("VICINITY_API_KEY", "leaked")
    monkeypatch.setenv("VICINITY_MAX_K", "1")
    with LocalServer(args=["--chunk-overlap", "6"]) as server:
        assert server.args.count("--chunk-overlap") == 1
        assert server.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=server.url, trust_env=False) as raw:
            assert raw.get("/info").status_code == 200
        with server.client() as client:
            assert isinstance(client, Vicinity)
            created = client.create_collection("c")
            assert created.chunking == {"max_tokens": 30, "overlap": 6}
            client.upsert("c", ["one", "two"])
            assert len(client.query("c", "one", k=2).results) == 2
        process, data_dir = server.process, server.data_dir
        assert process is not None and data_dir is not None and os.path.isdir(data_dir)
    assert process.poll() is not None
    assert not os.path.exists(data_dir)
    with Vicinity(f"http://127.0.0.1:{server.port}", max_retries=0) as client:
        assert client.healthz() is False


def test_tiny_bert_gets_its_overlap_and_the_api_key_is_used() -> None:
    with LocalServer(api_key="k1") as server:
        assert server.args[-2:] == ["--chunk-overlap", "4"]
        with httpx.Client(base_url=server.url, trust_env=False) as raw:
            assert raw.get("/info").status_code == 401
        with server.client() as client:
            assert client.info().dimension == 32


async def test_async_client_of_a_local_server() -> None:
    with LocalServer() as server:
        async with server.async_client() as client:
            assert isinstance(client, AsyncVicinity)
            assert (await client.readyz())["status"] == "ready"


def test_restart_keeps_the_data(tmp_path) -> None:
    with LocalServer(data_dir=str(tmp_path)) as server:
        with server.client() as client:
            client.create_collection("kept")
            client.upsert("kept", [{"id": "a", "text": "persisted"}])
        assert server.stop() == 0
        server.start()
        with server.client() as client:
            assert client.get_document("kept", "a").text == "persisted"
    # A directory the caller gave is the caller's to remove.
    assert (tmp_path / "vicinity.db").exists()


def test_a_server_that_cannot_start_is_reported() -> None:
    server = LocalServer(model="/nonexistent/model")
    with pytest.raises(RuntimeError) as e:
        with server:
            pass
    assert "exited before it was ready" in str(e.value)
    assert server.process is None and server.data_dir is None
