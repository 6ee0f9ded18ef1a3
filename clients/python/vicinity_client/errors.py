"""The exceptions of the client.

Every failure the client raises is a :class:`VicinityError`. A response outside 2xx becomes an
:class:`APIError` subclass chosen by its status, carrying the server's error body
(``{"error": {"code", "message", "limit"?}}``); a request that got no response becomes an
:class:`APIConnectionError` (or :class:`APITimeoutError`).
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any, Dict, Mapping, Optional, Type

__all__ = [
    "VicinityError",
    "APIError",
    "APIConnectionError",
    "APITimeoutError",
    "BadRequestError",
    "AuthenticationError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "PayloadTooLargeError",
    "UnsupportedMediaTypeError",
    "UnprocessableEntityError",
    "RateLimitError",
    "ServiceUnavailableError",
    "InternalServerError",
]


class VicinityError(Exception):
    """Base class of every error this package raises."""


class APIError(VicinityError):
    """The server answered with a status outside 2xx.

    Attributes:
        status: the HTTP status.
        code: the server's stable error code, such as ``collection_not_found``; for a body that
            is not vicinity's error shape (a proxy's page, say), ``http_<status>``.
        message: the server's message, for people.
        limit: with ``limit_exceeded`` and ``payload_too_large``, the server setting the
            request is over (``max_text_bytes``, ``max_body_bytes``...), else ``None``.
        request_id: the response's ``x-request-id``, to find the request in the server's log.
        retry_after: the ``Retry-After`` header in seconds, when the server sent one.
        body: the response body, parsed as JSON when it is JSON, else as text.
        headers: the response headers.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        limit: Optional[str] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.limit = limit
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body
        self.headers = dict(headers or {})
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.status} {self.code}: {self.message}"
        if self.limit:
            text += f" (limit: {self.limit})"
        if self.request_id:
            text += f" [request id {self.request_id}]"
        return text

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Exceptions pickle through their args by default, which would lose the keywords;
        # errors cross process boundaries in multiprocessing pools.
        return (
            _rebuild,
            (
                type(self),
                self.status,
                self.code,
                self.message,
                {
                    "limit": self.limit,
                    "request_id": self.request_id,
                    "retry_after": self.retry_after,
                    "body": self.body,
                    "headers": self.headers,
                },
            ),
        )


def _rebuild(cls, status, code, message, kwargs):  # type: ignore[no-untyped-def]
    return cls(status, code, message, **kwargs)


class BadRequestError(APIError):
    """400: the request is invalid (``invalid_request``, ``bad_filter``,
    ``invalid_parameter``, ``dimension_mismatch``, ``limit_exceeded`` for a parameter out of
    range...)."""


class AuthenticationError(APIError):
    """401 ``unauthorized``: no API key, or one the server does not know."""


class PermissionDeniedError(APIError):
    """403 ``forbidden``: a read-only API key on a route that changes data."""


class NotFoundError(APIError):
    """404: ``collection_not_found``, ``document_not_found``, or ``not_found`` (no route)."""


class ConflictError(APIError):
    """409: ``collection_conflict`` (a collection of that name exists with other settings), or
    ``limit_exceeded`` for a capacity such as ``max_collections``."""


class PayloadTooLargeError(APIError):
    """413: ``payload_too_large`` (the body is over ``max_body_bytes``) or ``limit_exceeded``
    (``limit`` names the setting, such as ``max_text_bytes`` or ``max_passages``)."""


class UnsupportedMediaTypeError(APIError):
    """415 ``unsupported_media_type``: a body not declared as JSON."""


class UnprocessableEntityError(APIError):
    """422 ``invalid_name``: collection names are 1 to 64 characters from
    ``[A-Za-z0-9_-]``."""


class RateLimitError(APIError):
    """429 ``overloaded``: the embedding queue, the ingest backlog or the search slots are full;
    ``retry_after`` says when to come back. Retried by the client before it is raised."""


class ServiceUnavailableError(APIError):
    """503: ``not_ready``, ``unavailable``, ``timeout``, ``store_unavailable``,
    ``version_not_reached`` (all retried by the client before they are raised) or
    ``collection_failed`` (not retried: the collection could not be restored)."""


class InternalServerError(APIError):
    """A 5xx other than 503: the server's own failure; quote ``request_id`` to its operator."""


class APIConnectionError(VicinityError):
    """No response: the server could not be reached, or the connection broke. Connection
    failures are retried by the client before this is raised; the httpx exception is the
    ``__cause__``."""


class APITimeoutError(APIConnectionError):
    """The request timed out (the client's ``timeout``) before a response came."""


_BY_STATUS: Dict[int, Type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_class(status: int) -> Type[APIError]:
    """The :class:`APIError` subclass for an HTTP status."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if status >= 500:
        return InternalServerError
    return APIError


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date (RFC 9110);
    ``None`` when absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def error_from_response(status: int, headers: Mapping[str, str], content: bytes) -> APIError:
    """The exception for a non-2xx response (``headers`` looked up case-insensitively by the
    caller's mapping, as httpx's are)."""
    body: Any
    try:
        body = json.loads(content) if content else None
    except ValueError:
        body = content.decode("utf-8", errors="replace")
    code = f"http_{status}"
    message = ""
    limit = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        code = error["code"]
        message = str(error.get("message", ""))
        limit = error.get("limit") if isinstance(error.get("limit"), str) else None
    elif isinstance(body, str):
        message = body.strip()[:500]
    elif body is not None:
        message = json.dumps(body)[:500]
    cls = error_class(status)
    return cls(
        status,
        code,
        message or f"HTTP {status}",
        limit=limit,
        request_id=headers.get("x-request-id"),
        retry_after=parse_retry_after(headers.get("retry-after")),
        body=body,
        headers=headers,
    )
