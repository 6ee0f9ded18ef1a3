"""The retry loop, exactly, with httpx.MockTransport serving scripted responses: which
answers are retried, how long the client sleeps, how many attempts it makes, and what it
raises. Sleeps are recorded, not slept."""

from __future__ import annotations

import email.utils
import pickle
import time
from typing import Callable, List, Tuple, Union

import httpx
import pytest

from vicinity_client import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AsyncVicinity,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    ServiceUnavailableError,
    Vicinity,
)

INFO = {"version": "0.1.0", "model": "m", "dimension": 3, "max_input_tokens": 8}

Item = Union[httpx.Response, Exception, Callable[[httpx.Request], httpx.Response]]


def error(status: int, code: str, retry_after: str = "",
          message: str = "scripted") -> httpx.Response:
    headers = {"x-request-id": f"req-{code}"}
    if retry_after:
        headers["retry-after"] = retry_after
    return httpx.Response(status, json={"error": {"code": code, "message": message}},
                          headers=headers)


def ok(body=INFO) -> httpx.Response:
    return httpx.Response(200, json=body)


class Script:
    """A handler that answers the n-th request with the n-th item (the last one repeats)."""

    def __init__(self, *items: Item) -> None:
        self.items = items
        self.requests: List[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.items[min(len(self.requests), len(self.items)) - 1]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        return item


def make(*items: Item, **kwargs) -> Tuple[Vicinity, Script, List[float]]:
    script = Script(*items)
    client = Vicinity("http://vicinity.test", transport=httpx.MockTransport(script), **kwargs)
    slept: List[float] = []
    client._sleep = slept.append
    client._retry.rand = lambda: 0.5
    return client, script, slept


def test_retry_after_is_slept_and_capped() -> None:
    client, script, slept = make(
        error(429, "overloaded", "3"),
        error(429, "overloaded", "100"),
        error(503, "not_ready", "2"),
        ok(),
        max_backoff=10,
    )
    assert client.info().model == "m"
    assert slept == [3.0, 10.0, 2.0]
    assert len(script.requests) == 4


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    client, _, slept = make(error(503, "store_unavailable", when), ok())
    client.info()
    assert len(slept) == 1 and 15 < slept[0] <= 20


def test_exponential_backoff_with_jitter_without_retry_after() -> None:
    client, _, slept = make(error(503, "unavailable"), error(503, "unavailable"),
                            error(503, "timeout"), error(503, "version_not_reached"),
                            error(429, "overloaded"), ok(),
                            max_retries=5, backoff=0.5, max_backoff=3.0)
    draws = iter([0.0, 1.0, 0.5, 1.0, 0.0])
    client._retry.rand = lambda: next(draws)
    client.info()
    # Steps 0.5, 1, 2, 3 (4 capped), 3 (8 capped); each slept between half and all of it.
    assert slept == [0.25, 1.0, 1.5, 3.0, 1.5]


def test_attempts_are_max_retries_plus_one_and_the_last_error_is_raised() -> None:
    counter = {"n": 0}

    def numbered(request: httpx.Request) -> httpx.Response:
        counter["n"] += 1
        return error(503, "unavailable", "1", message=f"attempt {counter['n']}")

    client, script, slept = make(numbered, max_retries=3)
    with pytest.raises(ServiceUnavailableError) as e:
        client.info()
    assert len(script.requests) == 4 and len(slept) == 3
    assert e.value.message == "attempt 4"


@pytest.mark.parametrize(
    "status, code, cls",
    [
        (400, "bad_filter", BadRequestError),
        (404, "collection_not_found", NotFoundError),
        (409, "collection_conflict", ConflictError),
        (413, "limit_exceeded", PayloadTooLargeError),
        (500, "internal", InternalServerError),
        (502, "bad_gateway", InternalServerError),
        (503, "collection_failed", ServiceUnavailableError),
        (418, "teapot", APIError),
    ],
)
def test_these_are_not_retried(status: int, code: str, cls: type) -> None:
    client, script, slept = make(error(status, code, "1"), ok())
    with pytest.raises(cls) as e:
        client.info()
    assert type(e.value) is cls
    assert (e.value.status, e.value.code) == (status, code)
    assert len(script.requests) == 1 and slept == []


def test_max_retries_zero_is_one_attempt() -> None:
    client, script, _ = make(error(429, "overloaded", "1"), ok(), max_retries=0)
    with pytest.raises(RateLimitError) as e:
        client.info()
    assert e.value.retry_after == 1.0 and len(script.requests) == 1


def test_connection_failures_are_retried() -> None:
    client, script, slept = make(
        httpx.ConnectError("refused"),
        httpx.RemoteProtocolError("server closed the connection"),
        httpx.ReadError("reset"),
        ok(),
        backoff=1.0,
    )
    assert client.info().dimension == 3
    assert slept == [0.75, 1.5, 3.0]
    assert len(script.requests) == 4


def test_connection_failure_after_the_last_retry_is_raised() -> None:
    client, script, _ = make(httpx.ConnectError("refused"), max_retries=2)
    with pytest.raises(APIConnectionError) as e:
        client.info()
    assert not isinstance(e.value, APIError)
    assert isinstance(e.value.__cause__, httpx.ConnectError)
    assert len(script.requests) == 3


def test_a_read_timeout_is_not_retried() -> None:
    # The server may still be working on the request; the caller decides.
    client, script, _ = make(httpx.ReadTimeout("slow"), ok())
    with pytest.raises(APITimeoutError) as e:
        client.info()
    assert isinstance(e.value, APIConnectionError)
    assert len(script.requests) == 1


def test_a_connect_timeout_is_retried() -> None:
    client, script, _ = make(httpx.ConnectTimeout("no answer"), ok())
    assert client.info().model == "m"
    assert len(script.requests) == 2


def test_error_attributes_and_bodies_that_are_not_ours() -> None:
    client, _, _ = make(httpx.Response(
        413,
        json={"error": {"code": "limit_exceeded", "message": "too long", "limit": "max_k"}},
        headers={"x-request-id": "abc", "retry-after": "7"},
    ))
    with pytest.raises(PayloadTooLargeError) as e:
        client.info()
    err = e.value
    assert (err.status, err.code, err.message, err.limit) == (413, "limit_exceeded", "too long",
                                                             "max_k")
    assert (err.request_id, err.retry_after) == ("abc", 7.0)
    assert err.body == {"error": {"code": "limit_exceeded", "message": "too long",
                                  "limit": "max_k"}}
    assert str(err) == "413 limit_exceeded: too long (limit: max_k) [request id abc]"
    copy = pickle.loads(pickle.dumps(err))
    assert (type(copy), copy.code, copy.limit, copy.retry_after) == (
        PayloadTooLargeError, "limit_exceeded", "max_k", 7.0)

    client, _, _ = make(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with pytest.raises(InternalServerError) as e:
        client.info()
    assert e.value.code == "http_502" and "Bad Gateway" in e.value.message

    client, _, _ = make(httpx.Response(200, text="not json"))
    with pytest.raises(APIError) as e:
        client.info()
    assert e.value.code == "invalid_response"


def test_requests_carry_their_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VICINITY_API_KEY", "from-env")
    client, script, _ = make(error(429, "overloaded", "1"),
                             ok({"deleted": [], "version": 4}))
    client.delete_documents("c", ids=["a"])
    first, second = script.requests
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "Bearer from-env"
    assert first.headers["user-agent"].startswith("vicinity-client-python/")
    assert first.headers["x-request-id"] == second.headers["x-request-id"]
    assert first.content == second.content == b'{"ids":["a"]}'

    client, script, _ = make(ok(), api_key="explicit", headers={"X-Extra": "1"})
    client.info()
    assert script.requests[0].headers["authorization"] == "Bearer explicit"
    assert script.requests[0].headers["x-extra"] == "1"
    assert "content-type" not in script.requests[0].headers


def test_base_url_from_the_environment_keeps_its_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VICINITY_URL", "http://proxy.test/vicinity/")
    script = Script(ok())
    with Vicinity(transport=httpx.MockTransport(script)) as client:
        client.info()
    assert str(script.requests[0].url) == "http://proxy.test/vicinity/info"


def test_healthz_is_one_attempt_and_never_raises() -> None:
    client, script, _ = make(error(503, "unavailable", "1"), ok({"status": "ok"}))
    assert client.healthz() is False and len(script.requests) == 1
    client, script, _ = make(httpx.ConnectError("refused"))
    assert client.healthz() is False and len(script.requests) == 1


def test_invalid_settings() -> None:
    for kwargs in ({"max_retries": -1}, {"backoff": -1}, {"max_backoff": float("nan")},
                   {"timeout": 0}, {"url": ""}):
        with pytest.raises(ValueError):
            Vicinity(**kwargs)


async def test_async_retries() -> None:
    script = Script(error(429, "overloaded", "2"), httpx.ConnectError("refused"), ok())
    client = AsyncVicinity("http://vicinity.test", transport=httpx.MockTransport(script),
                           backoff=1.0)
    slept: List[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client._sleep = sleep
    client._retry.rand = lambda: 1.0
    async with client:
        assert (await client.info()).model == "m"
    assert slept == [2.0, 2.0]
    assert len(script.requests) == 3

    script = Script(error(503, "collection_failed"), ok())
    async with AsyncVicinity("http://vicinity.test",
                             transport=httpx.MockTransport(script)) as client:
        with pytest.raises(ServiceUnavailableError):
            await client.query("c", "x")
    assert len(script.requests) == 1
