"""Fixtures: live servers started with LocalServer (the binary from env VICINITY_BIN, else the
repository's build), clients of them, fresh collections, and transports that record what
went over the wire to the real server."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, List, Optional

import httpx
import pytest

from vicinity_client.testing import LocalServer

# These tests check the client against the tiny model (its dimension, its 32-token input).
# LocalServer serves VICINITY_TEST_MODEL when it is set, as the repository's test script sets
# it for the integration suites' tests of ranking; here it must not apply.
os.environ.pop("VICINITY_TEST_MODEL", None)

REPO = next(p for p in Path(__file__).resolve().parents if (p / "Cargo.toml").is_file())
CROSS_ENCODER = REPO / "tests" / "fixtures" / "tiny-cross-encoder"


def unique_name(prefix: str = "t") -> str:
    """A collection name no other test uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Polls ``predicate`` until it holds; fails the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)


class Exchange:
    """One request that reached the server and the status it answered."""

    def __init__(self, request: httpx.Request, status: int) -> None:
        self.method = request.method
        self.path = request.url.path
        self.headers = request.headers
        self.content = request.content
        self.status = status

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"


class Recorder(httpx.BaseTransport):
    """A real HTTP transport that records each exchange; ``after`` may raise an httpx error
    once the server has answered, to play a response lost on the way back."""

    def __init__(self, after: Optional[Callable[[Exchange], None]] = None) -> None:
        self.inner = httpx.HTTPTransport(retries=0)
        self.exchanges: List[Exchange] = []
        self.after = after
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        exchange = Exchange(request, response.status_code)
        with self.lock:
            self.exchanges.append(exchange)
        if self.after is not None:
            self.after(exchange)
        return response

    def close(self) -> None:
        self.inner.close()

    def to(self, path_suffix: str) -> List[Exchange]:
        """The exchanges whose path ends with ``path_suffix``."""
        return [e for e in self.exchanges if e.path.endswith(path_suffix)]


class AsyncRecorder(httpx.AsyncBaseTransport):
    """:class:`Recorder` for the async client."""

    def __init__(self, after: Optional[Callable[[Exchange], None]] = None) -> None:
        self.inner = httpx.AsyncHTTPTransport(retries=0)
        self.exchanges: List[Exchange] = []
        self.after = after

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        await response.aread()
        exchange = Exchange(request, response.status_code)
        self.exchanges.append(exchange)
        if self.after is not None:
            self.after(exchange)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def to(self, path_suffix: str) -> List[Exchange]:
        """The exchanges whose path ends with ``path_suffix``."""
        return [e for e in self.exchanges if e.path.endswith(path_suffix)]


@pytest.fixture(autouse=True)
def _no_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The clients read these when no url or key is given; the caller's settings must not leak
    # into tests that rely on their absence.
    monkeypatch.delenv("VICINITY_URL", raising=False)
    monkeypatch.delenv("VICINITY_API_KEY", raising=False)


@pytest.fixture(scope="session")
def server():
    """The main server: the tiny model, and the tiny cross-encoder for reranking."""
    with LocalServer(args=["--reranker", str(CROSS_ENCODER)]) as s:
        yield s


@pytest.fixture(scope="session")
def limits_server():
    """A server with small limits, to be refused with 409 and 413 for real."""
    args = [
        "--max-text-bytes", "64",
        "--max-body-bytes", "65536",
        "--max-passages", "8",
        "--max-documents", "4",
        "--max-collections", "3",
    ]
    with LocalServer(args=args) as s:
        yield s


@pytest.fixture(scope="session")
def auth_server():
    """A server that requires API keys, and runs no reranker."""
    with LocalServer(api_key="rw-secret", read_only_api_key="ro-secret") as s:
        yield s


@pytest.fixture(scope="session")
def overload_server():
    """A server whose embedding queue holds one text, fed one text per batch on one thread, so
    that one large /embed request keeps it full for a while."""
    args = [
        "--queue-capacity", "1",
        "--max-batch-size", "1",
        "--threads", "1",
        "--max-client-batch-size", "16384",
    ]
    with LocalServer(args=args) as s:
        yield s


@pytest.fixture
def client(server):
    with server.client() as c:
        yield c


@pytest.fixture
async def aclient(server):
    async with server.async_client() as c:
        yield c


@pytest.fixture
def collection(client):
    """A fresh text collection on the main server, deleted afterwards."""
    name = unique_name()
    client.create_collection(name)
    yield name
    if client.collection_exists(name):
        client.delete_collection(name)
