"""Live vicinity servers for the tests, and helpers to look at what the store sends.

Every server is started on 127.0.0.1 by `vicinity_client.testing.LocalServer` (binary from
env `VICINITY_BIN`), once per session: one with the repo's tiny random model (dimension 32) and
tiny cross-encoder, for everything that does not depend on what texts mean, and, when env
`VICINITY_TEST_MODEL` names a real model directory, one with that model for the tests that do.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import pytest
from vicinity_client import AsyncVicinity, Vicinity
from vicinity_client.testing import AsyncRecordingTransport, LocalServer, RecordingTransport

REPO = Path(__file__).resolve().parents[3]
TINY_MODEL = REPO / "tests" / "fixtures" / "tiny-bert"
TINY_RERANKER = REPO / "tests" / "fixtures" / "tiny-cross-encoder"


# The request spies of these tests record what the store asked of the server, then send it on.
SpyTransport = RecordingTransport
AsyncSpyTransport = AsyncRecordingTransport


def _start(model: Path, args: Tuple[str, ...] = ()) -> LocalServer:
    return LocalServer(model=str(model), args=args)


@pytest.fixture(scope="session")
def tiny_server() -> Iterator[LocalServer]:
    """A server with the tiny random model (dimension 32) and the tiny cross-encoder."""
    with _start(TINY_MODEL, ("--reranker", str(TINY_RERANKER))) as server:
        yield server


@pytest.fixture(scope="session")
def real_server() -> Iterator[LocalServer]:
    """A server with the real model of env `VICINITY_TEST_MODEL` (skips when unset)."""
    model = os.environ.get("VICINITY_TEST_MODEL")
    if not model:
        pytest.skip(
            "needs a real sentence-transformers model: set VICINITY_TEST_MODEL to its "
            "directory (e.g. data/models/sentence-transformers/all-MiniLM-L6-v2); the tiny "
            "test model is random, so what these tests check would not hold with it"
        )
    with _start(Path(model)) as server:
        yield server


@pytest.fixture
def collection_name() -> str:
    """A collection name no other test uses."""
    return f"lc-{uuid.uuid4().hex[:16]}"


@pytest.fixture
def spy() -> Iterator[SpyTransport]:
    """A recording sync transport."""
    transport = SpyTransport()
    yield transport
    transport.close()


@pytest.fixture
def aspy() -> AsyncSpyTransport:
    """A recording async transport."""
    return AsyncSpyTransport()


@pytest.fixture
def spied(spy: SpyTransport, aspy: AsyncSpyTransport) -> Callable[[str], Dict[str, Any]]:
    """Makes store/embeddings keyword arguments: sync and async clients over the spies."""

    def make(url: str) -> Dict[str, Any]:
        return {
            "client": Vicinity(url=url, transport=spy),
            "async_client": AsyncVicinity(url=url, transport=aspy),
        }

    return make
