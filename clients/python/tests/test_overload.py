"""Real 429s: the overload server's embedding queue holds one text, so while one large /embed
request is being worked through, any other embedding request is refused with 429
``overloaded`` and ``Retry-After: 1``."""

from __future__ import annotations

import contextlib
import re
import threading
from typing import Dict, Iterator, List

import pytest

from vicinity_client import RateLimitError, Vicinity

from conftest import AsyncRecorder, Recorder, wait_until

#: Texts of the request that keeps the queue busy: with one text per batch on one thread, a
#: couple of seconds of work for the tiny model.
BUSY_TEXTS = [f"the quick brown fox jumps over the lazy dog {i}" for i in range(6000)]


def queued_texts(client: Vicinity) -> int:
    """The server's count of texts waiting for the model."""
    match = re.search(r"^vicinity_embed_queue_texts (\d+)", client.metrics(), re.M)
    assert match, "the server no longer reports vicinity_embed_queue_texts"
    return int(match.group(1))


@contextlib.contextmanager
def busy_queue(server) -> Iterator[None]:
    """Sends the large /embed request from a thread and returns once its texts wait in the
    queue; on exit, waits for it to complete, and checks that it did."""
    outcome: Dict[str, object] = {}

    def run() -> None:
        try:
            with server.client(timeout=300, max_retries=0) as c:
                outcome["vectors"] = len(c.embed(BUSY_TEXTS))
        except Exception as e:  # reported by the assertion below
            outcome["error"] = e

    worker = threading.Thread(target=run, name="busy-embed")
    worker.start()
    try:
        with server.client() as probe:
            wait_until(lambda: queued_texts(probe) > 0 or not worker.is_alive(),
                       what="the busy request to reach the queue")
        if not worker.is_alive():
            pytest.fail(f"the busy request ended before it was seen in the queue: {outcome}")
        yield
    finally:
        worker.join(timeout=300)
    assert outcome.get("vectors") == len(BUSY_TEXTS), outcome


def test_without_retries_the_429_is_raised(overload_server) -> None:
    with busy_queue(overload_server):
        with overload_server.client(max_retries=0) as client:
            with pytest.raises(RateLimitError) as e:
                client.embed("refused while the queue is full")
    err = e.value
    assert (err.status, err.code) == (429, "overloaded")
    assert err.retry_after == 1.0
    assert err.request_id and "queue" in err.message


def test_429s_are_retried_after_retry_after_until_accepted(overload_server) -> None:
    recorder = Recorder()
    slept: List[float] = []
    with overload_server.client(transport=recorder, max_retries=100) as client:
        real_sleep = client._sleep

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            real_sleep(seconds)

        client._sleep = sleep
        with busy_queue(overload_server):
            vectors = client.embed("accepted once the queue drains")
    assert len(vectors) == 1 and len(vectors[0]) == 32
    statuses = [x.status for x in recorder.to("/embed")]
    assert statuses[0] == 429 and statuses[-1] == 200
    assert set(statuses[:-1]) == {429}
    # Each wait is the server's Retry-After (1 s, under max_backoff).
    assert slept == [1.0] * (len(statuses) - 1)
    # The same request id on every attempt, so the server's log ties them together.
    assert len({x.headers["x-request-id"] for x in recorder.to("/embed")}) == 1


async def test_async_429_raised_then_retried(overload_server) -> None:
    recorder = AsyncRecorder()
    async with overload_server.async_client(transport=recorder, max_retries=100,
                                            max_backoff=0.2) as client:
        with busy_queue(overload_server):
            async with overload_server.async_client(max_retries=0) as impatient:
                with pytest.raises(RateLimitError) as e:
                    await impatient.embeddings("refused")
            assert e.value.retry_after == 1.0
            vectors = await client.embeddings(["accepted", "eventually"])
    assert len(vectors) == 2
    statuses = [x.status for x in recorder.to("/v1/embeddings")]
    assert statuses[0] == 429 and statuses[-1] == 200
