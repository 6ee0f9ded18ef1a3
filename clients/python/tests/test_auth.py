"""A server with API keys: 401 without a valid key, 403 for a read-only key on writes; and a
server without a reranker."""

from __future__ import annotations

import pytest

from vicinity_client import (
    AsyncVicinity,
    AuthenticationError,
    BadRequestError,
    PermissionDeniedError,
    Vicinity,
)

from conftest import unique_name


def test_missing_and_wrong_keys_are_401(auth_server) -> None:
    with Vicinity(auth_server.url) as anonymous:
        with pytest.raises(AuthenticationError) as e:
            anonymous.list_collections()
        assert (e.value.status, e.value.code) == (401, "unauthorized")
        assert e.value.headers.get("www-authenticate") == "Bearer"
        # The probes stay open.
        assert anonymous.healthz() is True
        assert anonymous.readyz()["status"] == "ready"
    with auth_server.client(api_key="not-the-key") as wrong:
        with pytest.raises(AuthenticationError) as e:
            wrong.info()
        assert e.value.code == "unauthorized" and "not-the-key" not in str(e.value)


def test_read_only_key_reads_but_cannot_write(auth_server) -> None:
    name = unique_name()
    with auth_server.client() as rw, auth_server.client(api_key="ro-secret") as ro:
        rw.create_collection(name)
        try:
            rw.upsert(name, [{"id": "a", "text": "written with the read-write key"}])
            assert ro.get_document(name, "a").id == "a"
            assert ro.query(name, "written", k=1).results[0].document_id == "a"
            assert len(ro.embed("reading is fine")) == 1
            assert ro.get_documents(name, ids=["a"]).total == 1
            with pytest.raises(PermissionDeniedError) as e:
                ro.upsert(name, [{"id": "b", "text": "refused"}])
            assert (e.value.status, e.value.code) == (403, "forbidden")
            with pytest.raises(PermissionDeniedError):
                ro.delete_documents(name, all=True)
            with pytest.raises(PermissionDeniedError):
                ro.delete_collection(name)
        finally:
            rw.delete_collection(name)


def test_key_from_the_environment(auth_server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VICINITY_API_KEY", "rw-secret")
    monkeypatch.setenv("VICINITY_URL", auth_server.url)
    with Vicinity() as client:
        assert client.info().dimension == 32


def test_no_reranker_is_a_bad_request(auth_server) -> None:
    with auth_server.client() as client:
        with pytest.raises(BadRequestError) as e:
            client.rerank("q", ["a", "b"])
        assert e.value.code == "reranker_unavailable"


async def test_async_auth(auth_server) -> None:
    async with AsyncVicinity(auth_server.url) as anonymous:
        with pytest.raises(AuthenticationError):
            await anonymous.info()
    async with auth_server.async_client(api_key="ro-secret") as ro:
        assert isinstance(await ro.list_collections(), list)
        with pytest.raises(PermissionDeniedError) as e:
            await ro.create_collection(unique_name())
        assert e.value.code == "forbidden"
