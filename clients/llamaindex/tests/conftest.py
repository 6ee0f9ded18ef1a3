"""Live vicinity servers for the tests, stores on fresh collections, and a request spy.

Servers listen on 127.0.0.1 only and are started by `vicinity_client.testing.LocalServer`
(binary from env `VICINITY_BIN`), at most once per session each: one with the repo's tiny
random model (dimension 32) for everything that does not depend on what texts mean, and, only
when a test asks for it and env `VICINITY_TEST_MODEL` names a real model directory, one with
that model. Tests make no other connections: LlamaIndex's LLM is switched off, every embedding
comes from the server, and, when pytest-socket is installed, sockets may reach 127.0.0.1 only.
"""

import os
import uuid
from pathlib import Path
from typing import AsyncIterator, Iterator, List

import pytest
from llama_index.core import Settings
from vicinity_client import AsyncVicinity, Vicinity
from vicinity_client.testing import AsyncRecordingTransport, LocalServer, RecordingTransport

from llama_index.vector_stores.vicinity import VicinityVectorStore

REPO = Path(__file__).resolve().parents[3]
TINY_MODEL = REPO / "tests" / "fixtures" / "tiny-bert"
TINY_DIMENSION = 32


def pytest_configure(config: pytest.Config) -> None:
    # Registered here too so that the marker is known when pytest-socket is not installed.
    config.addinivalue_line(
        "markers", "allow_hosts(hosts): restrict socket connections to these hosts"
    )


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.allow_hosts(["127.0.0.1"]))


@pytest.fixture(autouse=True, scope="session")
def _no_llm() -> None:
    # `None` makes LlamaIndex use its MockLLM, so that no query engine reaches for OpenAI.
    Settings.llm = None


# The request spies of these tests record what the store asked of the server, then send it on.
SpyTransport = RecordingTransport
AsyncSpyTransport = AsyncRecordingTransport


@pytest.fixture(scope="session")
def tiny_server() -> Iterator[LocalServer]:
    """A server with the tiny random model (dimension 32)."""
    with LocalServer(model=str(TINY_MODEL)) as server:
        yield server


@pytest.fixture(scope="session")
def real_server() -> Iterator[LocalServer]:
    """A server with the real model of env `VICINITY_TEST_MODEL`; skips without one."""
    model = os.environ.get("VICINITY_TEST_MODEL")
    if not model:
        pytest.skip(
            "needs a real sentence-transformers model: set VICINITY_TEST_MODEL to its "
            "directory (e.g. data/models/sentence-transformers/all-MiniLM-L6-v2)"
        )
    if not Path(model).is_dir():
        pytest.skip(f"VICINITY_TEST_MODEL={model} is not a directory")
    with LocalServer(model=model) as server:
        yield server


@pytest.fixture
def collection_name() -> str:
    """A fresh collection name per test."""
    return f"li_{uuid.uuid4().hex[:12]}"


def _drop(server: LocalServer, name: str) -> None:
    with server.client() as client:
        if client.collection_exists(name):
            client.delete_collection(name)


@pytest.fixture
def spy() -> SpyTransport:
    """A recording transport for the store's sync client."""
    return SpyTransport()


@pytest.fixture
def aspy() -> AsyncSpyTransport:
    """A recording transport for the store's async client."""
    return AsyncSpyTransport()


@pytest.fixture
async def store(
    tiny_server: LocalServer,
    collection_name: str,
    spy: SpyTransport,
    aspy: AsyncSpyTransport,
) -> AsyncIterator[VicinityVectorStore]:
    """A store on a fresh collection of the tiny server; its clients record their requests.

    The fixture is async so that the async client is closed on the loop that used it.
    """
    vector_store = VicinityVectorStore(
        collection_name=collection_name,
        url=tiny_server.url,
        client=Vicinity(url=tiny_server.url, transport=spy, max_retries=0),
        aclient=AsyncVicinity(url=tiny_server.url, transport=aspy, max_retries=0),
    )
    yield vector_store
    vector_store.client.close()
    await vector_store.aclient.aclose()
    _drop(tiny_server, collection_name)
