"""The synchronous client, :class:`Vicinity`: blocking I/O with httpx around the operations of
:mod:`vicinity_client._shared`."""

from __future__ import annotations

import time
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Union,
)

import httpx

from . import _shared as ops
from ._shared import Call, Op, T
from .errors import APIError, VicinityError
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
    UpsertResult,
)

__all__ = ["Vicinity"]


class Vicinity:
    """A client of a vicinity server.

    Args:
        url: the server, such as ``http://127.0.0.1:8080`` (a path prefix is kept, for a server
            behind a proxy). ``None`` reads env ``VICINITY_URL``, else uses that default.
        api_key: sent as ``Authorization: Bearer <key>``. ``None`` reads env
            ``VICINITY_API_KEY``; without either no key is sent.
        timeout: seconds for each attempt of a request (connect, send, wait, read); ``None``
            for none.
        max_retries: retries of a request refused with 429, with 503 (but
            ``collection_failed``), or whose connection failed.
        backoff: first wait between attempts when the server gives no ``Retry-After``,
            doubled at each retry.
        max_backoff: the longest wait between attempts, ``Retry-After`` included.
        headers: extra headers sent with every request.
        transport: an httpx transport to send through (a mock in tests, a custom proxy...).

    The client is thread-safe and keeps connections alive; close it with :meth:`close`, or use
    it as a context manager.
    """

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.BaseTransport] = None,
    ) -> None:
        base, default_headers, http_timeout, policy = ops.client_options(
            url, api_key, timeout, max_retries, backoff, max_backoff, headers
        )
        self.url = base
        self._retry = policy
        self._sleep: Callable[[float], None] = time.sleep
        self._http = httpx.Client(
            base_url=base,
            headers=default_headers,
            timeout=http_timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"Vicinity(url={self.url!r})"

    def close(self) -> None:
        """Closes the connections."""
        self._http.close()

    def __enter__(self) -> "Vicinity":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # --- the driver -----------------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: Optional[VicinityError] = None
                try:
                    value = self._send(call)
                except VicinityError as e:
                    error = e
                # Thrown outside the handler so that a later failure does not carry this one
                # as its context.
                call = op.throw(error) if error is not None else op.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _send(self, call: Call) -> Any:
        content, headers = ops.request_parts(call)
        retries = 0
        while True:
            cause: Optional[BaseException] = None
            try:
                response = self._http.request(
                    call.method, call.path, content=content, params=call.params, headers=headers
                )
                return ops.parse_response(call, response)
            except httpx.RequestError as exc:
                error: VicinityError = ops.connection_error(exc, call)
                cause = exc
            except APIError as exc:
                error = exc
            delay = self._retry.delay(retries, error) if call.retry else None
            if delay is None:
                raise error from cause
            self._sleep(delay)
            retries += 1

    # --- server ---------------------------------------------------------------------------

    def info(self) -> Info:
        """What the server runs: version, model, dimension, max_input_tokens."""
        return self._run(ops.info())

    def healthz(self) -> bool:
        """Whether the server is up (``GET /healthz`` answers 200). One attempt; a server that
        cannot be reached gives ``False``, not an exception."""
        return self._run(ops.healthz())

    def readyz(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"status": "ready", "failed_collections"?: [...]}``. A server still
        starting answers 503 ``not_ready``, retried like any 503."""
        return self._run(ops.readyz())

    def metrics(self) -> str:
        """The server's metrics, in the Prometheus text format."""
        return self._run(ops.metrics())

    def cluster(self) -> Dict[str, Any]:
        """The nodes sharing this server's store and the versions each has applied."""
        return self._run(ops.cluster())

    def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document, with its limits."""
        return self._run(ops.openapi())

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Optional[bytes] = None,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Any:
        """Calls any route (``path`` from the root, such as ``/info``) with the client's
        headers, retries and errors; returns the parsed JSON, or the text of a non-JSON body.
        ``json`` is encoded with ``Content-Type: application/json``; ``content`` is sent as it
        is (with that content type unless ``headers`` gives another)."""
        return self._run(ops.raw_request(method, path, json, content, params, headers))

    # --- collections ----------------------------------------------------------------------

    def list_collections(self) -> List[str]:
        """The collections' names."""
        return self._run(ops.list_collections())

    def describe_collections(self) -> List[Collection]:
        """Every collection, described as :meth:`get_collection` does."""
        return self._run(ops.describe_collections())

    def create_collection(
        self,
        name: str,
        *,
        dimension: Optional[int] = None,
        distance: Optional[str] = None,
        index: Union[None, str, Mapping[str, Any]] = None,
        chunking: Optional[Mapping[str, Any]] = None,
        lexical: Union[None, str, Mapping[str, Any]] = None,
    ) -> Collection:
        """Creates a collection, or returns the existing one of that name when its settings are
        the same (:class:`ConflictError` when they differ).

        Args:
            name: 1 to 64 characters from ``[A-Za-z0-9_-]``.
            dimension: omit it (or give the model's) for a text collection the server embeds;
                any other makes a collection of vectors only.
            distance: ``cosine`` (default), ``dot`` or ``l2``.
            index: ``{"type": "auto"|"hnsw"|"ivf"|"flat", ...parameters}``, or just the type.
            chunking: ``{"max_tokens": .., "overlap": ..}`` of a text collection.
            lexical: ``{"language": "en"}`` of a text collection, or just the language.
        """
        return self._run(ops.create_collection(name, dimension, distance, index, chunking, lexical))

    def get_collection(self, name: str) -> Collection:
        """Describes a collection (:class:`NotFoundError` if there is none)."""
        return self._run(ops.get_collection(name))

    def collection_exists(self, name: str) -> bool:
        """Whether a collection of that name exists."""
        return self._run(ops.collection_exists(name))

    def delete_collection(self, name: str) -> None:
        """Deletes a collection with its documents (:class:`NotFoundError` if there is none)."""
        self._run(ops.delete_collection(name))

    # --- documents ------------------------------------------------------------------------

    def upsert(
        self,
        collection: str,
        documents: Iterable[Union[DocumentInput, Mapping[str, Any], str]],
        *,
        batch_size: int = 256,
    ) -> UpsertResult:
        """Inserts or replaces documents, ``batch_size`` per request.

        ``documents`` are :class:`DocumentInput`, mappings with its keys, or plain strings
        (a text without id or metadata); the iterable is read lazily, so a generator of
        millions streams. A document without id gets a uuid4 before its batch is first sent,
        so that a retried batch replaces what an earlier attempt wrote. A batch the server
        refuses as too large for ``max_passages``, ``max_documents`` or ``max_body_bytes`` is
        split in two and sent again. An empty iterable sends nothing (version 0).
        """
        return self._run(ops.upsert(collection, documents, batch_size))

    def get_document(self, collection: str, id: DocId) -> Document:
        """One document (:class:`NotFoundError` with code ``document_not_found`` if missing)."""
        return self._run(ops.get_document(collection, id))

    def get_documents(
        self,
        collection: str,
        *,
        ids: Optional[Iterable[DocId]] = None,
        filter: Optional[Mapping[str, Any]] = None,
        limit: int = 100,
        after: Optional[DocId] = None,
    ) -> DocumentPage:
        """Reads documents.

        With ``ids``: every one of them that exists, in the order given (duplicates once),
        in one page whose ``next_after`` is ``None``; the client fetches pages of ``limit``
        and sends 10,000 ids at most per request. With a ``filter``, or neither (every
        document): one page of ``limit`` (at most 1000) in id order, continued by passing its
        ``next_after`` as ``after``, as :meth:`iter_documents` does.
        """
        return self._run(ops.get_documents(collection, ids, filter, limit, after))

    def iter_documents(
        self,
        collection: str,
        *,
        filter: Optional[Mapping[str, Any]] = None,
        page_size: int = 1000,
    ) -> Iterator[Document]:
        """Every document (matching ``filter``), in id order, fetched a page at a time."""
        after: Optional[str] = None
        while True:
            page = self.get_documents(collection, filter=filter, limit=page_size, after=after)
            yield from page.documents
            if page.next_after is None:
                return
            after = page.next_after

    def delete_documents(
        self,
        collection: str,
        *,
        ids: Optional[Iterable[DocId]] = None,
        filter: Optional[Mapping[str, Any]] = None,
        all: bool = False,
    ) -> DeleteResult:
        """Deletes documents by ``ids`` (10,000 per request; missing ones are ignored), by a
        metadata ``filter``, or ``all=True``: exactly one of the three (else ValueError).
        Empty ``ids`` send nothing (version 0)."""
        return self._run(ops.delete_documents(collection, ids, filter, all))

    # --- queries --------------------------------------------------------------------------

    def query(
        self,
        collection: str,
        query: Optional[str] = None,
        *,
        vector: Optional[Sequence[float]] = None,
        k: int = 10,
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
    ) -> QueryResult:
        """The ``k`` passages nearest to a text ``query`` or a ``vector`` (exactly one).

        Args:
            filter: a metadata filter, Mongo/Chroma style (``{"lang": "en"}``,
                ``{"year": {"$gte": 2020}}``, ``{"$or": [...]}``).
            mode: ``dense``, ``lexical`` or ``hybrid`` (the default for text).
            fusion, alpha, rrf_k, candidates: how a hybrid query fuses its legs.
            mmr: ``{"lambda": .5, "fetch_k": 20}`` for maximal marginal relevance, or
                ``True`` for the defaults.
            group_by, group_size: ``"document"`` for the best passages of ``k`` distinct
                documents.
            rerank: ``{"top_n": 50}`` to rerank with the server's cross-encoder, or ``True``.
            include: fields of each hit, default ``["text", "metadata"]``; add ``"vector"``.
            params: ``{"ef": .., "nprobe": .., "exact": ..}``.
            min_version: answer only once the server holds this collection version (a write's
                ``version``).
        """
        body = ops.query_body(
            query=query, vector=vector, k=k, filter=filter, mode=mode, fusion=fusion,
            alpha=alpha, rrf_k=rrf_k, candidates=candidates, mmr=mmr, group_by=group_by,
            group_size=group_size, rerank=rerank, include=include, params=params,
            min_version=min_version,
        )
        return self._run(ops.query(collection, body))

    def query_batch(
        self,
        collection: str,
        queries: Sequence[Mapping[str, Any]],
        *,
        min_version: Optional[int] = None,
    ) -> List[QueryResult]:
        """Runs several queries in one request (their texts are embedded together); one
        answer per query, in order. Each query is a mapping of the server's query fields
        (``{"query": "...", "k": 5, "filter": {...}}``); ``min_version`` may be given per
        query or for all. One invalid query fails the batch."""
        return self._run(ops.query_batch(collection, queries, min_version))

    # --- embeddings and reranking ---------------------------------------------------------

    def embed(
        self,
        texts: Union[str, Sequence[str]],
        *,
        normalize: bool = True,
        truncate: Optional[bool] = False,
    ) -> List[List[float]]:
        """Embeds texts with the server's model (``POST /embed``): one vector per text, also
        for a single string. ``truncate`` cuts texts longer than the model reads instead of
        refusing them (400 ``input_too_long``); ``None`` leaves it to the server's
        ``--auto-truncate``."""
        return self._run(ops.embed(texts, normalize, truncate))

    def embeddings(
        self, input: Union[str, Sequence[str]], *, model: Optional[str] = None
    ) -> List[List[float]]:
        """Embeds texts through the OpenAI-shaped ``POST /v1/embeddings``: one vector per
        input, in order. ``model`` is sent along; the server ignores it."""
        return self._run(ops.embeddings(input, model))

    def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        return_text: bool = False,
        raw_scores: bool = False,
    ) -> List[Reranked]:
        """Scores ``texts`` against ``query`` with the server's cross-encoder (``--reranker``;
        400 ``reranker_unavailable`` without one): every text by index, most relevant first.
        ``raw_scores`` returns the logits."""
        return self._run(ops.rerank(query, texts, return_text, raw_scores))
