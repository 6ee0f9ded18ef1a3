"""What the sync and the async client share: configuration, request building, response
parsing, the retry policy, and every operation.

An operation is a generator that yields :class:`Call` objects and receives each call's parsed
response (or has the call's :class:`VicinityError` thrown into it), and returns the
operation's result. The clients only drive these generators, one with blocking I/O and one
with ``await``, so batching, paging and splitting live here once, free of I/O.
"""

from __future__ import annotations

import json
import math
import os
import random
import uuid
from dataclasses import dataclass
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    TypeVar,
    Union,
)
from urllib.parse import quote

import httpx

from ._version import __version__
from .errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    NotFoundError,
    PayloadTooLargeError,
    VicinityError,
    error_from_response,
)
from .types import (
    Collection,
    DeleteResult,
    DocId,
    Document,
    DocumentInput,
    DocumentPage,
    Info,
    QueryResult,
    Reranked,
    Upserted,
    UpsertResult,
)

T = TypeVar("T")

#: An operation: yields calls, receives their parsed responses, returns a result.
Op = Generator["Call", Any, T]

DEFAULT_URL = "http://127.0.0.1:8080"

#: Most ids the server takes in one read or delete (its default `--max-documents`); longer
#: lists are sent in several requests.
MAX_IDS_PER_REQUEST = 10_000

#: Limits that a smaller request satisfies: on a 413 over one of them, a batch of several
#: documents or ids is split in two and each half sent on its own. Other 413s (one text, one
#: metadata object too large) do not shrink with the batch, so they are raised at once.
_SPLITTABLE_LIMITS = frozenset({"max_documents", "max_passages", "max_body_bytes"})

_NO_BODY: Any = object()


@dataclass(frozen=True)
class Call:
    """One HTTP exchange of an operation. ``body`` is JSON-encoded (``content`` is sent as it
    is instead); ``read`` says how a 2xx body is returned: ``json``, ``text``, ``status``
    (the status code alone) or ``any`` (JSON when it parses, else text). ``retry`` false
    makes it a single attempt."""

    method: str
    path: str
    body: Any = _NO_BODY
    content: Optional[bytes] = None
    params: Optional[Mapping[str, str]] = None
    headers: Optional[Mapping[str, str]] = None
    read: str = "json"
    retry: bool = True


# --- configuration ------------------------------------------------------------------------


def client_options(
    url: Optional[str],
    api_key: Optional[str],
    timeout: Optional[float],
    max_retries: int,
    backoff: float,
    max_backoff: float,
    headers: Optional[Mapping[str, str]],
) -> Tuple[str, Dict[str, str], Optional[httpx.Timeout], "RetryPolicy"]:
    """Resolves a client's settings (the environment fills ``url`` and ``api_key`` when they
    are ``None``) into the base URL, default headers, timeout and retry policy."""
    base = url if url is not None else os.environ.get("VICINITY_URL") or DEFAULT_URL
    if not isinstance(base, str) or not base.strip():
        raise ValueError("url must be a non-empty string such as http://127.0.0.1:8080")
    base = base.strip().rstrip("/")
    key = api_key if api_key is not None else os.environ.get("VICINITY_API_KEY")
    default_headers = {
        "user-agent": f"vicinity-client-python/{__version__}",
        "accept": "application/json",
    }
    if key is not None and key.strip():
        default_headers["authorization"] = f"Bearer {key.strip()}"
    if headers:
        default_headers.update({k.lower(): v for k, v in headers.items()})
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise ValueError("timeout must be a positive number of seconds, or None for none")
    policy = RetryPolicy(max_retries, backoff, max_backoff)
    return base, default_headers, (None if timeout is None else httpx.Timeout(timeout)), policy


# --- retries ------------------------------------------------------------------------------


class RetryPolicy:
    """When and how long to wait before trying a call again.

    Retried: 429, 503 but ``collection_failed`` (a collection that could not be restored
    stays so until it is deleted), and failures to connect or of the connection, at most
    ``max_retries`` times. The wait is the server's ``Retry-After`` capped at ``max_backoff``;
    without one it is exponential from ``backoff``, capped at ``max_backoff``, with "equal
    jitter" (between half and all of it) so that clients refused together do not come back
    together.
    """

    def __init__(
        self,
        max_retries: int,
        backoff: float,
        max_backoff: float,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError("max_retries must be an integer >= 0")
        if not isinstance(backoff, (int, float)) or backoff < 0 or math.isnan(backoff):
            raise ValueError("backoff must be a number of seconds >= 0")
        if not isinstance(max_backoff, (int, float)) or max_backoff < 0 or math.isnan(max_backoff):
            raise ValueError("max_backoff must be a number of seconds >= 0")
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.rand = rand

    def delay(self, retries_done: int, error: VicinityError) -> Optional[float]:
        """Seconds to sleep before the next attempt after ``error``, or ``None`` to raise it;
        ``retries_done`` counts the retries already made."""
        if retries_done >= self.max_retries or not is_retryable(error):
            return None
        if isinstance(error, APIError) and error.retry_after is not None:
            return min(error.retry_after, self.max_backoff)
        step = min(self.max_backoff, self.backoff * 2.0 ** min(retries_done, 60))
        return step / 2 + self.rand() * step / 2


def is_retryable(error: VicinityError) -> bool:
    """Whether ``error`` is worth another attempt of the same request."""
    if isinstance(error, APIError):
        return error.status == 429 or (error.status == 503 and error.code != "collection_failed")
    if isinstance(error, APIConnectionError):
        return bool(getattr(error, "_retryable", False))
    return False


def connection_error(exc: httpx.HTTPError, call: Call) -> APIConnectionError:
    """The client's exception for an httpx failure without a response. Failures to connect,
    and connections the server closed before answering, are marked retryable; a timeout
    waiting for the answer is not, since the server may still be working on the request."""
    where = f"{call.method} {call.path}"
    if isinstance(exc, httpx.TimeoutException):
        error: APIConnectionError = APITimeoutError(f"{where} timed out: {exc!r}")
        retryable = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
    else:
        error = APIConnectionError(f"{where} failed: {exc!r}")
        retryable = isinstance(exc, (httpx.NetworkError, httpx.RemoteProtocolError))
    error._retryable = retryable  # type: ignore[attr-defined]
    return error


# --- requests and responses ---------------------------------------------------------------


def encode_json(body: Any) -> bytes:
    """Compact JSON in UTF-8. NaN and infinities are refused (ValueError): JSON has no such
    numbers, and the server would answer 400 for a body a standard parser rejects."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(
        "utf-8"
    )


def request_parts(call: Call) -> Tuple[Optional[bytes], Dict[str, str]]:
    """The body bytes and per-request headers of ``call``. Every body goes with
    ``Content-Type: application/json`` (the server answers 415 without it), and every call
    with its own ``x-request-id``, the same on each retry, so that the server's log ties the
    attempts together."""
    headers = {"x-request-id": uuid.uuid4().hex}
    content = call.content
    if call.body is not _NO_BODY:
        content = encode_json(call.body)
    if content is not None:
        headers["content-type"] = "application/json"
    if call.headers:
        headers.update({k.lower(): v for k, v in call.headers.items()})
    return content, headers


def parse_response(call: Call, response: httpx.Response) -> Any:
    """The value of a response: its JSON, text or status as ``call.read`` says; raises the
    :class:`APIError` of a status outside 2xx."""
    if not response.is_success:
        raise error_from_response(response.status_code, response.headers, response.content)
    if call.read == "status":
        return response.status_code
    if call.read == "text":
        return response.text
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError:
        if call.read == "any":
            return response.text
        raise APIError(
            response.status_code,
            "invalid_response",
            f"{call.method} {call.path} answered {response.status_code} with a body that is "
            "not JSON",
            request_id=response.headers.get("x-request-id"),
            body=response.text,
            headers=response.headers,
        ) from None


# --- argument checks ----------------------------------------------------------------------


def segment(value: Any, what: str) -> str:
    """``value`` as one percent-encoded path segment. '/' and every reserved character are
    encoded, and the dot segments '.' and '..' too, which URL normalisation would otherwise
    resolve into another route."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    text = str(value)
    if not text:
        raise ValueError(f"{what} must not be empty")
    encoded = quote(text, safe="")
    if encoded in (".", ".."):
        encoded = encoded.replace(".", "%2E")
    return encoded


def collection_path(name: str, *rest: str) -> str:
    """The path of a collection, or of a route under it."""
    return "/".join(["/collections", segment(name, "collection name"), *rest])


def doc_id(value: Any) -> DocId:
    """A document id as the server takes it (a string, or an integer >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"a document id must be a str or an int, not {type(value).__name__}")
    checked: DocId = value
    return checked


def id_list(ids: Any) -> List[DocId]:
    """Checked ids, duplicates dropped (the first occurrence keeps its place). A lone string is
    refused: iterating it would send each of its characters as an id."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError("ids must be a list of document ids, not a single " + type(ids).__name__)
    seen = set()
    out: List[DocId] = []
    for i in ids:
        i = doc_id(i)
        key = str(i)
        if key not in seen:
            seen.add(key)
            out.append(i)
    return out


def float_list(values: Any, what: str) -> List[float]:
    """A vector as a list of floats, from any sequence of numbers (numpy arrays included)."""
    if isinstance(values, (str, bytes, Mapping)):
        raise TypeError(f"{what} must be a sequence of numbers")
    tolist = getattr(values, "tolist", None)
    if callable(tolist):
        values = tolist()
    out = [float(v) for v in values]
    for i, v in enumerate(out):
        # Caught here rather than by the JSON encoder, to say where.
        if not math.isfinite(v):
            raise ValueError(f"{what}[{i}] is {v}: vectors must hold finite numbers")
    return out


def text_list(texts: Any, what: str) -> Tuple[List[str], bool]:
    """``texts`` as a list, and whether a single string was given."""
    if isinstance(texts, str):
        return [texts], True
    if isinstance(texts, bytes) or not isinstance(texts, Iterable):
        raise TypeError(f"{what} must be a string or a list of strings")
    out = list(texts)
    for t in out:
        if not isinstance(t, str):
            raise TypeError(f"{what} must be strings, not {type(t).__name__}")
    return out, False


def document_body(doc: Any) -> Dict[str, Any]:
    """The JSON of one document to upsert, with its id generated when it has none. Unknown
    keys of a mapping are sent as they are, for the server to refuse or accept."""
    if isinstance(doc, DocumentInput):
        body: Dict[str, Any] = {
            "id": doc.id,
            "text": doc.text,
            "vector": doc.vector,
            "metadata": doc.metadata,
        }
    elif isinstance(doc, Mapping):
        body = dict(doc)
    elif isinstance(doc, str):
        body = {"text": doc}
    else:
        raise TypeError(
            "a document must be a DocumentInput, a mapping or a string, "
            f"not {type(doc).__name__}"
        )
    if body.get("id") is None:
        body["id"] = str(uuid.uuid4())
    else:
        body["id"] = doc_id(body["id"])
    if body.get("vector") is not None:
        body["vector"] = float_list(body["vector"], "vector")
    return {k: v for k, v in body.items() if v is not None}


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def positive_int(value: Any, what: str) -> int:
    """``value`` checked to be an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1, not {value!r}")
    return int(value)


def _splittable(error: PayloadTooLargeError, n: int) -> bool:
    return n > 1 and error.limit in _SPLITTABLE_LIMITS


# --- operations: server -------------------------------------------------------------------


def info() -> Op[Info]:
    """GET /info."""
    return Info.from_json((yield Call("GET", "/info")))


def healthz() -> Op[bool]:
    """GET /healthz, once: whether the server answers 200. A server that cannot be reached, or
    answers otherwise, is not healthy; that is the answer, not an error."""
    try:
        status = yield Call("GET", "/healthz", read="status", retry=False)
    except VicinityError:
        return False
    return bool(200 <= status < 300)


def readyz() -> Op[Dict[str, Any]]:
    """GET /readyz."""
    data: Dict[str, Any] = yield Call("GET", "/readyz")
    return data


def metrics() -> Op[str]:
    """GET /metrics, Prometheus text."""
    text: str = yield Call("GET", "/metrics", read="text")
    return text


def cluster() -> Op[Dict[str, Any]]:
    """GET /cluster."""
    data: Dict[str, Any] = yield Call("GET", "/cluster")
    return data


def openapi() -> Op[Dict[str, Any]]:
    """GET /openapi.json."""
    data: Dict[str, Any] = yield Call("GET", "/openapi.json")
    return data


def raw_request(
    method: str,
    path: str,
    json_body: Any,
    content: Optional[bytes],
    params: Optional[Mapping[str, str]],
    headers: Optional[Mapping[str, str]],
) -> Op[Any]:
    """Any route: the body is ``json_body`` (JSON-encoded) or ``content`` (bytes as they
    are); the answer is parsed JSON, or text when it is not JSON."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError("path must start with '/'")
    if json_body is not None and content is not None:
        raise ValueError("give json or content, not both")
    body = _NO_BODY if json_body is None else json_body
    return (
        yield Call(
            method.upper(), path, body=body, content=content, params=params, headers=headers,
            read="any",
        )
    )


# --- operations: collections --------------------------------------------------------------


def list_collections() -> Op[List[str]]:
    """GET /collections, the names."""
    data = yield Call("GET", "/collections")
    return [c["name"] for c in data["collections"]]


def describe_collections() -> Op[List[Collection]]:
    """GET /collections, every collection described."""
    data = yield Call("GET", "/collections")
    return [Collection.from_json(c) for c in data["collections"]]


def create_collection(
    name: str,
    dimension: Optional[int],
    distance: Optional[str],
    index: Union[None, str, Mapping[str, Any]],
    chunking: Optional[Mapping[str, Any]],
    lexical: Union[None, str, Mapping[str, Any]],
) -> Op[Collection]:
    """PUT /collections/{name}; ``index`` may be a type name and ``lexical`` a language."""
    body: Dict[str, Any] = {}
    if dimension is not None:
        body["dimension"] = dimension
    if distance is not None:
        body["distance"] = distance
    if index is not None:
        body["index"] = {"type": index} if isinstance(index, str) else dict(index)
    if chunking is not None:
        body["chunking"] = dict(chunking)
    if lexical is not None:
        body["lexical"] = {"language": lexical} if isinstance(lexical, str) else dict(lexical)
    return Collection.from_json((yield Call("PUT", collection_path(name), body=body)))


def get_collection(name: str) -> Op[Collection]:
    """GET /collections/{name}."""
    return Collection.from_json((yield Call("GET", collection_path(name))))


def collection_exists(name: str) -> Op[bool]:
    """Whether GET /collections/{name} finds it (a failed collection exists too)."""
    try:
        yield Call("GET", collection_path(name))
    except NotFoundError as e:
        if e.code == "collection_not_found":
            return False
        raise
    return True


def delete_collection(name: str) -> Op[None]:
    """DELETE /collections/{name}."""
    yield Call("DELETE", collection_path(name))
    return None


# --- operations: documents ----------------------------------------------------------------


def upsert(collection: str, documents: Iterable[Any], batch_size: int) -> Op[UpsertResult]:
    """Upserts ``documents`` in batches of ``batch_size``, read lazily from the iterable, each
    given its id before its first attempt."""
    positive_int(batch_size, "batch_size")
    if isinstance(documents, (str, bytes, Mapping, DocumentInput)) or not isinstance(
        documents, Iterable
    ):
        raise TypeError("documents must be an iterable of documents (a list, say)")
    path = collection_path(collection, "documents")
    entries: List[Dict[str, Any]] = []
    version = 0
    batch: List[Dict[str, Any]] = []
    for doc in documents:
        batch.append(document_body(doc))
        if len(batch) >= batch_size:
            version = max(version, (yield from _upsert_batch(path, batch, entries)))
            batch = []
    if batch:
        version = max(version, (yield from _upsert_batch(path, batch, entries)))
    return UpsertResult(
        documents=[Upserted.from_json(e) for e in entries],
        version=version,
        raw={"documents": entries, "version": version},
    )


def _upsert_batch(path: str, batch: List[Dict[str, Any]], entries: List[Dict[str, Any]]) -> Op[int]:
    try:
        data = yield Call("POST", path, body={"documents": batch})
    except PayloadTooLargeError as e:
        if not _splittable(e, len(batch)):
            raise
        half = len(batch) // 2
        first = yield from _upsert_batch(path, batch[:half], entries)
        second = yield from _upsert_batch(path, batch[half:], entries)
        return max(first, second)
    entries.extend(data["documents"])
    return int(data["version"])


def get_document(collection: str, id: DocId) -> Op[Document]:
    """GET /collections/{name}/documents/{id}."""
    path = collection_path(collection, "documents", segment(doc_id(id), "document id"))
    return Document.from_json((yield Call("GET", path)))


def get_documents(
    collection: str,
    ids: Optional[Iterable[DocId]],
    filter: Optional[Mapping[str, Any]],
    limit: int,
    after: Optional[DocId],
) -> Op[DocumentPage]:
    """POST /collections/{name}/documents/get. With ``ids``, every existing one is returned
    (pages of ``limit`` fetched until the last, ids sent 10,000 at most per request); with a
    ``filter`` or neither, one page."""
    positive_int(limit, "limit")
    path = collection_path(collection, "documents", "get")
    if ids is not None:
        if filter is not None:
            raise ValueError("give ids or filter, not both")
        if after is not None:
            raise ValueError(
                "after pages a listing or a filter; with ids every document is returned"
            )
        wanted = id_list(ids)
        found: List[Dict[str, Any]] = []
        for part in chunks(wanted, MAX_IDS_PER_REQUEST):
            yield from _get_ids(path, list(part), limit, found)
        return DocumentPage(
            documents=[Document.from_json(d) for d in found],
            next_after=None,
            total=len(found),
            raw={"documents": found, "next_after": None, "total": len(found)},
        )
    body: Dict[str, Any] = {"limit": limit}
    if filter is not None:
        body["filter"] = dict(filter)
    if after is not None:
        body["after"] = doc_id(after)
    return DocumentPage.from_json((yield Call("POST", path, body=body)))


def _get_ids(path: str, ids: List[DocId], limit: int, found: List[Dict[str, Any]]) -> Op[None]:
    after: Optional[str] = None
    while True:
        body: Dict[str, Any] = {"ids": ids, "limit": limit}
        if after is not None:
            body["after"] = after
        try:
            data = yield Call("POST", path, body=body)
        except PayloadTooLargeError as e:
            if after is not None or not _splittable(e, len(ids)):
                raise
            half = len(ids) // 2
            yield from _get_ids(path, ids[:half], limit, found)
            yield from _get_ids(path, ids[half:], limit, found)
            return None
        found.extend(data["documents"])
        after = data.get("next_after")
        if after is None:
            return None


def delete_documents(
    collection: str,
    ids: Optional[Iterable[DocId]],
    filter: Optional[Mapping[str, Any]],
    all: bool,
) -> Op[DeleteResult]:
    """POST /collections/{name}/documents/delete, by ids (10,000 at most per request), by
    filter, or all."""
    if not isinstance(all, bool):
        raise TypeError("all must be True or False")
    if sum((ids is not None, filter is not None, all)) != 1:
        raise ValueError("give exactly one of ids, filter and all=True")
    path = collection_path(collection, "documents", "delete")
    if ids is None:
        body: Dict[str, Any] = {"all": True} if all else {"filter": dict(filter or {})}
        data = yield Call("POST", path, body=body)
        return DeleteResult(deleted=list(data["deleted"]), version=data["version"], raw=data)
    deleted: List[str] = []
    version = 0
    for part in chunks(id_list(ids), MAX_IDS_PER_REQUEST):
        version = max(version, (yield from _delete_ids(path, list(part), deleted)))
    return DeleteResult(
        deleted=deleted, version=version, raw={"deleted": deleted, "version": version}
    )


def _delete_ids(path: str, ids: List[DocId], deleted: List[str]) -> Op[int]:
    try:
        data = yield Call("POST", path, body={"ids": ids})
    except PayloadTooLargeError as e:
        if not _splittable(e, len(ids)):
            raise
        half = len(ids) // 2
        first = yield from _delete_ids(path, ids[:half], deleted)
        second = yield from _delete_ids(path, ids[half:], deleted)
        return max(first, second)
    deleted.extend(data["deleted"])
    return int(data["version"])


# --- operations: queries ------------------------------------------------------------------


def query_body(
    query: Optional[str] = None,
    vector: Optional[Sequence[float]] = None,
    k: Optional[int] = 10,
    filter: Optional[Mapping[str, Any]] = None,
    mode: Optional[str] = None,
    fusion: Optional[str] = None,
    alpha: Optional[float] = None,
    rrf_k: Optional[float] = None,
    candidates: Optional[int] = None,
    mmr: Union[None, bool, Mapping[str, Any]] = None,
    group_by: Optional[str] = None,
    group_size: Optional[int] = None,
    rerank: Union[None, bool, Mapping[str, Any]] = None,
    include: Optional[Sequence[str]] = None,
    params: Optional[Mapping[str, Any]] = None,
    min_version: Optional[int] = None,
) -> Dict[str, Any]:
    """The JSON of one query; ``None`` leaves a field to the server's default, ``mmr=True`` and
    ``rerank=True`` ask for them with default settings, and ``min_version`` becomes
    ``consistency``."""
    body: Dict[str, Any] = {}
    if query is not None:
        body["query"] = query
    if vector is not None:
        body["vector"] = float_list(vector, "vector")
    if k is not None:
        body["k"] = k
    for key, value in (
        ("filter", filter),
        ("mode", mode),
        ("fusion", fusion),
        ("alpha", alpha),
        ("rrf_k", rrf_k),
        ("candidates", candidates),
        ("group_by", group_by),
        ("group_size", group_size),
        ("params", params),
    ):
        if value is not None:
            body[key] = value
    for key, value in (("mmr", mmr), ("rerank", rerank)):
        if value is True:
            body[key] = {}
        elif value is not None and value is not False:
            body[key] = dict(value)
    if include is not None:
        if isinstance(include, str):
            raise TypeError('include must be a list such as ["text", "metadata"]')
        body["include"] = list(include)
    if min_version is not None:
        body["consistency"] = {"min_version": min_version}
    return body


def query(collection: str, body: Dict[str, Any]) -> Op[QueryResult]:
    """POST /collections/{name}/query."""
    data = yield Call("POST", collection_path(collection, "query"), body=body)
    return QueryResult.from_json(data)


def query_batch(
    collection: str, queries: Sequence[Mapping[str, Any]], min_version: Optional[int]
) -> Op[List[QueryResult]]:
    """POST /collections/{name}/query/batch. Each query is a mapping in the server's shape,
    where ``min_version`` may stand for ``consistency`` as in :func:`query_body`."""
    if isinstance(queries, Mapping) or not isinstance(queries, Iterable):
        raise TypeError("queries must be a list of query mappings")
    prepared = []
    for q in queries:
        if not isinstance(q, Mapping):
            raise TypeError(f"each query must be a mapping, not {type(q).__name__}")
        q = dict(q)
        if "min_version" in q:
            mv = q.pop("min_version")
            if mv is not None:
                q["consistency"] = {"min_version": mv}
        if q.get("vector") is not None:
            q["vector"] = float_list(q["vector"], "vector")
        prepared.append(q)
    if not prepared:
        return []
    body: Dict[str, Any] = {"queries": prepared}
    if min_version is not None:
        body["consistency"] = {"min_version": min_version}
    data = yield Call("POST", collection_path(collection, "query", "batch"), body=body)
    return [QueryResult.from_json(r) for r in data["results"]]


# --- operations: embeddings and reranking -------------------------------------------------


def embed(texts: Any, normalize: bool, truncate: Optional[bool]) -> Op[List[List[float]]]:
    """POST /embed: one vector per text, also for a single string."""
    inputs, single = text_list(texts, "texts")
    if not inputs:
        return []
    body: Dict[str, Any] = {"inputs": inputs[0] if single else inputs, "normalize": normalize}
    if truncate is not None:
        body["truncate"] = truncate
    vectors: List[List[float]] = yield Call("POST", "/embed", body=body)
    return vectors


def embeddings(input: Any, model: Optional[str]) -> Op[List[List[float]]]:
    """POST /v1/embeddings: one vector per input, in input order."""
    inputs, single = text_list(input, "input")
    if not inputs:
        return []
    body: Dict[str, Any] = {"input": inputs[0] if single else inputs, "encoding_format": "float"}
    if model is not None:
        body["model"] = model
    data = yield Call("POST", "/v1/embeddings", body=body)
    return [d["embedding"] for d in sorted(data["data"], key=lambda d: d["index"])]


def rerank(query: str, texts: Any, return_text: bool, raw_scores: bool) -> Op[List[Reranked]]:
    """POST /rerank: the texts by index, most relevant first."""
    items, _ = text_list(texts, "texts")
    if not items:
        return []
    body = {"query": query, "texts": items, "return_text": return_text, "raw_scores": raw_scores}
    data = yield Call("POST", "/rerank", body=body)
    return [Reranked.from_json(r) for r in data]


