"""The asynchronous client, :class:`AsyncVicinity`: the operations of
:mod:`vicinity_client._shared` driven with ``await`` on httpx's async client. Its methods
mirror :class:`~vicinity_client.Vicinity`'s one for one."""

from __future__ import annotations

import asyncio
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Iterable,
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

__all__ = ["AsyncVicinity"]


class AsyncVicinity:
    """An asyncio client of a vicinity server; the same arguments and methods as
    :class:`~vicinity_client.Vicinity`, awaited (``transport`` is an httpx async transport).
    Close it with ``await aclose()`` or use ``async with``."""

    def __init__(
        self,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: Optional[float] = 60.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        headers: Optional[Mapping[str, str]] = None,
        transport: Optional[httpx.AsyncBaseTransport] = None,
    ) -> None:
        base, default_headers, http_timeout, policy = ops.client_options(
            url, api_key, timeout, max_retries, backoff, max_backoff, headers
        )
        self.url = base
        self._retry = policy
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._http = httpx.AsyncClient(
            base_url=base,
            headers=default_headers,
            timeout=http_timeout,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"AsyncVicinity(url={self.url!r})"

    async def aclose(self) -> None:
        """Closes the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncVicinity":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

    # --- the driver -----------------------------------------------------------------------

    async def _run(self, op: Op[T]) -> T:
        try:
            call = next(op)
            while True:
                error: Optional[VicinityError] = None
                try:
                    value = await self._send(call)
                except VicinityError as e:
                    error = e
                # Thrown outside the handler so that a later failure does not carry this one
                # as its context.
                call = op.throw(error) if error is not None else op.send(value)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def _send(self, call: Call) -> Any:
        content, headers = ops.request_parts(call)
        retries = 0
        while True:
            cause: Optional[BaseException] = None
            try:
                response = await self._http.request(
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
            await self._sleep(delay)
            retries += 1

    # --- server ---------------------------------------------------------------------------

    async def info(self) -> Info:
        """What the server runs: version, model, dimension, max_input_tokens."""
        return await self._run(ops.info())

    async def healthz(self) -> bool:
        """Whether the server is up; ``False`` when it cannot be reached."""
        return await self._run(ops.healthz())

    async def readyz(self) -> Dict[str, Any]:
        """``GET /readyz``: ``{"status": "ready", "failed_collections"?: [...]}``."""
        return await self._run(ops.readyz())

    async def metrics(self) -> str:
        """The server's metrics, in the Prometheus text format."""
        return await self._run(ops.metrics())

    async def cluster(self) -> Dict[str, Any]:
        """The nodes sharing this server's store and the versions each has applied."""
        return await self._run(ops.cluster())

    async def openapi(self) -> Dict[str, Any]:
        """The server's OpenAPI document, with its limits."""
        return await self._run(ops.openapi())

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: Optional[bytes] = None,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Any:
        """Calls any route; see :meth:`Vicinity.request`."""
        return await self._run(ops.raw_request(method, path, json, content, params, headers))

    # --- collections ----------------------------------------------------------------------

    async def list_collections(self) -> List[str]:
        """The collections' names."""
        return await self._run(ops.list_collections())

    async def describe_collections(self) -> List[Collection]:
        """Every collection, described."""
        return await self._run(ops.describe_collections())

    async def create_collection(
        self,
        name: str,
        *,
        dimension: Optional[int] = None,
        distance: Optional[str] = None,
        index: Union[None, str, Mapping[str, Any]] = None,
        chunking: Optional[Mapping[str, Any]] = None,
        lexical: Union[None, str, Mapping[str, Any]] = None,
    ) -> Collection:
        """Creates a collection, or returns the identical existing one; see
        :meth:`Vicinity.create_collection`."""
        return await self._run(
            ops.create_collection(name, dimension, distance, index, chunking, lexical)
        )

    async def get_collection(self, name: str) -> Collection:
        """Describes a collection (:class:`NotFoundError` if there is none)."""
        return await self._run(ops.get_collection(name))

    async def collection_exists(self, name: str) -> bool:
        """Whether a collection of that name exists."""
        return await self._run(ops.collection_exists(name))

    async def delete_collection(self, name: str) -> None:
        """Deletes a collection with its documents (:class:`NotFoundError` if there is none)."""
        await self._run(ops.delete_collection(name))

    # --- documents ------------------------------------------------------------------------

    async def upsert(
        self,
        collection: str,
        documents: Iterable[Union[DocumentInput, Mapping[str, Any], str]],
        *,
        batch_size: int = 256,
    ) -> UpsertResult:
        """Inserts or replaces documents, ``batch_size`` per request, ids generated once on
        the client; see :meth:`Vicinity.upsert`."""
        return await self._run(ops.upsert(collection, documents, batch_size))

    async def get_document(self, collection: str, id: DocId) -> Document:
        """One document (:class:`NotFoundError` with code ``document_not_found`` if missing)."""
        return await self._run(ops.get_document(collection, id))

    async def get_documents(
        self,
        collection: str,
        *,
        ids: Optional[Iterable[DocId]] = None,
        filter: Optional[Mapping[str, Any]] = None,
        limit: int = 100,
        after: Optional[DocId] = None,
    ) -> DocumentPage:
        """Reads documents: all of ``ids``, or one page of a filter or of the listing; see
        :meth:`Vicinity.get_documents`."""
        return await self._run(ops.get_documents(collection, ids, filter, limit, after))

    async def iter_documents(
        self,
        collection: str,
        *,
        filter: Optional[Mapping[str, Any]] = None,
        page_size: int = 1000,
    ) -> AsyncIterator[Document]:
        """Every document (matching ``filter``), in id order, fetched a page at a time; use
        with ``async for``."""
        after: Optional[str] = None
        while True:
            page = await self.get_documents(
                collection, filter=filter, limit=page_size, after=after
            )
            for document in page.documents:
                yield document
            if page.next_after is None:
                return
            after = page.next_after

    async def delete_documents(
        self,
        collection: str,
        *,
        ids: Optional[Iterable[DocId]] = None,
        filter: Optional[Mapping[str, Any]] = None,
        all: bool = False,
    ) -> DeleteResult:
        """Deletes documents by ``ids``, by ``filter``, or ``all=True`` (exactly one); see
        :meth:`Vicinity.delete_documents`."""
        return await self._run(ops.delete_documents(collection, ids, filter, all))

    # --- queries --------------------------------------------------------------------------

    async def query(
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
        """The ``k`` passages nearest to a text ``query`` or a ``vector``; see
        :meth:`Vicinity.query`."""
        body = ops.query_body(
            query=query, vector=vector, k=k, filter=filter, mode=mode, fusion=fusion,
            alpha=alpha, rrf_k=rrf_k, candidates=candidates, mmr=mmr, group_by=group_by,
            group_size=group_size, rerank=rerank, include=include, params=params,
            min_version=min_version,
        )
        return await self._run(ops.query(collection, body))

    async def query_batch(
        self,
        collection: str,
        queries: Sequence[Mapping[str, Any]],
        *,
        min_version: Optional[int] = None,
    ) -> List[QueryResult]:
        """Runs several queries in one request; one answer per query, in order."""
        return await self._run(ops.query_batch(collection, queries, min_version))

    # --- embeddings and reranking ---------------------------------------------------------

    async def embed(
        self,
        texts: Union[str, Sequence[str]],
        *,
        normalize: bool = True,
        truncate: Optional[bool] = False,
    ) -> List[List[float]]:
        """Embeds texts (``POST /embed``): one vector per text, also for a single string."""
        return await self._run(ops.embed(texts, normalize, truncate))

    async def embeddings(
        self, input: Union[str, Sequence[str]], *, model: Optional[str] = None
    ) -> List[List[float]]:
        """Embeds texts through ``POST /v1/embeddings``: one vector per input, in order."""
        return await self._run(ops.embeddings(input, model))

    async def rerank(
        self,
        query: str,
        texts: Sequence[str],
        *,
        return_text: bool = False,
        raw_scores: bool = False,
    ) -> List[Reranked]:
        """Scores ``texts`` against ``query`` with the server's cross-encoder, most relevant
        first."""
        return await self._run(ops.rerank(query, texts, return_text, raw_scores))
