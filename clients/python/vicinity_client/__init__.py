"""Python client of vicinity, the vector similarity search service.

>>> from vicinity_client import Vicinity
>>> with Vicinity("http://127.0.0.1:8080") as client:          # doctest: +SKIP
...     client.create_collection("docs")
...     client.upsert("docs", [{"id": "a", "text": "Lighthouses guide ships."}])
...     client.query("docs", "How do ships find their way?", k=3).results

:class:`Vicinity` blocks; :class:`AsyncVicinity` has the same methods for asyncio. Errors are
the classes of :mod:`vicinity_client.errors`; results the data classes of
:mod:`vicinity_client.types`. :class:`vicinity_client.testing.LocalServer` runs a server for
tests.
"""

from ._async_client import AsyncVicinity
from ._client import Vicinity
from ._pair import ClientPair
from ._version import __version__
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UnprocessableEntityError,
    UnsupportedMediaTypeError,
    VicinityError,
)
from .types import (
    Collection,
    DeleteResult,
    Document,
    DocumentInput,
    DocumentPage,
    Hit,
    Info,
    PassageSpan,
    QueryResult,
    Reranked,
    Upserted,
    UpsertResult,
)

__all__ = [
    "__version__",
    "Vicinity",
    "AsyncVicinity",
    "ClientPair",
    "DocumentInput",
    "Document",
    "DocumentPage",
    "UpsertResult",
    "Upserted",
    "DeleteResult",
    "Hit",
    "PassageSpan",
    "QueryResult",
    "Collection",
    "Info",
    "Reranked",
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
