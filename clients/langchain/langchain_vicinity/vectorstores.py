"""`VicinityVectorStore`: a LangChain vector store over one vicinity collection.

By default the server embeds: documents are stored as text, which the server splits into
passages and embeds with its own model, and queries are sent as text (so lexical and hybrid
search work too). Given an `Embeddings`, the store embeds on the client instead and stores
each document as one vector with its text.
"""

from __future__ import annotations

import uuid
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from vicinity_client import (
    AsyncVicinity,
    Collection,
    DocumentInput,
    Hit,
    NotFoundError,
    QueryResult,
    Vicinity,
)

from vicinity_client import ClientPair
from langchain_vicinity.embeddings import VicinityEmbeddings

VST = TypeVar("VST", bound="VicinityVectorStore")

# Documents per upsert request. The server embeds a text batch before it answers, so text
# batches stay small enough to finish well inside a request timeout on a CPU; vectors are cheap.
DEFAULT_TEXT_BATCH_SIZE = 64
DEFAULT_VECTOR_BATCH_SIZE = 256

# The most documents the server returns per page.
_MAX_PAGE = 1000

# Query options passed through to the server as they are (see its `QueryRequest`).
_PASSTHROUGH_QUERY_OPTIONS = (
    "mode",
    "fusion",
    "alpha",
    "rrf_k",
    "candidates",
    "group_by",
    "group_size",
    "params",
    "min_version",
)
_QUERY_OPTIONS = frozenset(_PASSTHROUGH_QUERY_OPTIONS + ("filter", "rerank"))


def _clamp01(x: float) -> float:
    return min(1.0, max(0.0, x))


def _similarity_relevance(score: float) -> float:
    # Cosine similarity (and the inner product of unit vectors) lies in [-1, 1].
    return _clamp01((1.0 + score) / 2.0)


def _l2_relevance(score: float) -> float:
    # The server's L2 score is minus the squared distance, which for unit vectors lies in
    # [0, 4] and equals 2 - 2·cos: this is the cosine mapping above, expressed in it.
    return _clamp01(1.0 + score / 4.0)


def _rerank_option(rerank: Any) -> Optional[Dict[str, Any]]:
    """The server's `rerank` object from `True`, a `top_n` int or the object itself."""
    if rerank is None or rerank is False:
        return None
    if rerank is True:
        return {}
    if isinstance(rerank, int):
        return {"top_n": rerank}
    if isinstance(rerank, dict):
        return rerank
    raise TypeError(f"rerank must be a bool, an int (top_n) or a dict, got {rerank!r}")


def _hit_to_document(hit: Hit) -> Document:
    return Document(
        id=hit.document_id,
        page_content=hit.text or "",
        # Exactly what was stored: no keys of ours, `{}` for none.
        metadata=dict(hit.metadata) if hit.metadata else {},
    )


def _hit_score(hit: Hit) -> float:
    # A reranked answer is ordered by the cross-encoder, so its score is the one that ranks.
    return hit.rerank_score if hit.rerank_score is not None else hit.score


class VicinityVectorStore(VectorStore):
    """A LangChain `VectorStore` over one collection of a vicinity server.

    Args:
        collection_name: The collection (1 to 64 characters from `[A-Za-z0-9_-]`). It is
            created on the first write when missing, with the settings below; an existing
            collection is used with its own settings.
        embedding: `None` (the default) lets the server embed: documents are sent as text,
            split into passages and embedded by the server's model, and queries are sent
            as text. An `Embeddings` embeds on the client instead: each document is stored
            as one vector of that model (with its text and metadata), the collection takes
            that dimension, and queries are sent as vectors.
        url: The server, e.g. `http://127.0.0.1:8080`; `None` reads env `VICINITY_URL`.
        api_key: Sent as a bearer token; `None` reads env `VICINITY_API_KEY`.
        client: A `vicinity_client.Vicinity` to use (not closed by the store).
        async_client: A `vicinity_client.AsyncVicinity` for the async methods (not closed
            by the store).
        distance: `"cosine"` (the server's default), `"dot"` or `"l2"`, for a new collection.
        index: Index settings for a new collection, e.g. `{"type": "hnsw", "m": 16}`.
        chunking: Passage splitting of a new text collection, e.g.
            `{"max_tokens": 128, "overlap": 16}`.
        lexical: The lexical index of a new text collection, e.g. `{"language": "en"}`.
        mode: The default query mode (`"dense"`, `"lexical"` or `"hybrid"`); `None` leaves it
            to the server, which runs hybrid search for a text query of a text collection and
            dense search for a vector.
        batch_size: Documents per upsert request (default 64 for text, 256 for vectors).
        client_kwargs: Further arguments of the clients built here (`timeout`,
            `max_retries`, ...).

    Search methods take the server's query options as keyword arguments: `filter` (a
    Mongo-style metadata filter such as `{"lang": "en", "year": {"$gte": 2020}}`), `mode`,
    `rerank` (`True`, a `top_n`, or `{"top_n": 50}`; needs a server with `--reranker`),
    `group_by="document"` with `group_size`, `fusion`, `alpha`, `rrf_k`, `candidates`,
    `params` and `min_version`. Returned documents are passages: `page_content` is the
    passage text, `metadata` the document's stored metadata and `id` the document id.

    Errors are the client's typed exceptions (`vicinity_client.BadRequestError`, ...).

    Example:
        ```python
        from langchain_vicinity import VicinityVectorStore

        store = VicinityVectorStore("notes", url="http://127.0.0.1:8080")
        store.add_texts(["Lighthouses guide ships."], metadatas=[{"topic": "sea"}])
        docs = store.similarity_search("How do ships find the coast?", k=2,
                                       filter={"topic": "sea"})
        ```
    """

    def __init__(
        self,
        collection_name: str = "langchain",
        embedding: Optional[Embeddings] = None,
        *,
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        async_client: Optional[AsyncVicinity] = None,
        distance: Optional[str] = None,
        index: Optional[Dict[str, Any]] = None,
        chunking: Optional[Dict[str, Any]] = None,
        lexical: Optional[Dict[str, Any]] = None,
        mode: Optional[str] = None,
        batch_size: Optional[int] = None,
        client_kwargs: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.collection_name = collection_name
        self.embedding = embedding
        self.distance = distance
        self.index = index
        self.chunking = chunking
        self.lexical = lexical
        self.mode = mode
        self.batch_size = batch_size or (
            DEFAULT_VECTOR_BATCH_SIZE if embedding is not None else DEFAULT_TEXT_BATCH_SIZE
        )
        self._clients = ClientPair(
            url=url,
            api_key=api_key,
            client=client,
            async_client=async_client,
            client_kwargs=client_kwargs,
        )
        # The collection as last seen; None until it is known to exist.
        self._collection: Optional[Collection] = None
        self._server_embeddings: Optional[VicinityEmbeddings] = None

    # ----- clients and the collection -------------------------------------------------------

    @property
    def client(self) -> Vicinity:
        """The sync `vicinity_client.Vicinity` the store uses."""
        return self._clients.sync

    @property
    def async_client(self) -> AsyncVicinity:
        """The async client the store uses (call from inside a running event loop)."""
        return self._clients.async_

    @property
    def embeddings(self) -> Embeddings:
        """The `embedding` given, else a `VicinityEmbeddings` on the same server."""
        if self.embedding is not None:
            return self.embedding
        if self._server_embeddings is None:
            self._server_embeddings = VicinityEmbeddings._from_clients(self._clients)
        return self._server_embeddings

    def _create_settings(self, dimension: Optional[int]) -> Dict[str, Any]:
        return {
            "dimension": dimension,
            "distance": self.distance,
            "index": self.index,
            "chunking": self.chunking,
            "lexical": self.lexical,
        }

    @staticmethod
    def _missing(error: NotFoundError) -> bool:
        # Only the collection's absence; any other 404 is an error to raise.
        return error.code == "collection_not_found"

    def _describe(self) -> Optional[Collection]:
        """The collection from the server, or `None` when it does not exist."""
        try:
            self._collection = self.client.get_collection(self.collection_name)
        except NotFoundError as e:
            if not self._missing(e):
                raise
            self._collection = None
        return self._collection

    async def _adescribe(self) -> Optional[Collection]:
        try:
            self._collection = await self.async_client.get_collection(self.collection_name)
        except NotFoundError as e:
            if not self._missing(e):
                raise
            self._collection = None
        return self._collection

    def _exists(self) -> bool:
        """Whether the collection exists (remembered once seen)."""
        return self._collection is not None or self._describe() is not None

    async def _aexists(self) -> bool:
        return self._collection is not None or await self._adescribe() is not None

    def _ensure_collection(self, dimension: Optional[int]) -> None:
        # An existing collection is used as it is: re-sending settings that leave some
        # defaults unset could differ from the stored ones and be refused with 409.
        if not self._exists():
            self._collection = self.client.create_collection(
                self.collection_name, **self._create_settings(dimension)
            )

    async def _aensure_collection(self, dimension: Optional[int]) -> None:
        if not await self._aexists():
            self._collection = await self.async_client.create_collection(
                self.collection_name, **self._create_settings(dimension)
            )

    def get_collection(self) -> Optional[Collection]:
        """The collection's description from the server, or `None` while it does not exist."""
        return self._describe()

    async def aget_collection(self) -> Optional[Collection]:
        """Async `get_collection`."""
        return await self._adescribe()

    def delete_collection(self) -> None:
        """Delete the collection with all its documents (nothing when it does not exist)."""
        self._collection = None
        try:
            self.client.delete_collection(self.collection_name)
        except NotFoundError as e:
            if not self._missing(e):
                raise

    async def adelete_collection(self) -> None:
        """Async `delete_collection`."""
        self._collection = None
        try:
            await self.async_client.delete_collection(self.collection_name)
        except NotFoundError as e:
            if not self._missing(e):
                raise

    def close(self) -> None:
        """Close the sync client if the store built it."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close the async client if the store built it."""
        await self._clients.aclose()

    # ----- writes -----------------------------------------------------------------------------

    def _prepare(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]],
        ids: Optional[Sequence[Optional[str]]],
    ) -> Tuple[List[str], List[Optional[Dict[str, Any]]], List[str]]:
        texts = list(texts)
        if metadatas is not None and len(metadatas) != len(texts):
            raise ValueError(
                f"got {len(metadatas)} metadatas for {len(texts)} texts: give one per text"
            )
        if ids is not None and len(ids) != len(texts):
            raise ValueError(f"got {len(ids)} ids for {len(texts)} texts: give one per text")
        metas: List[Optional[Dict[str, Any]]] = (
            list(metadatas) if metadatas is not None else [None] * len(texts)
        )
        # Missing ids are made on the client (uuid4), not by the server, so that a batch the
        # client retries replaces what a lost first attempt wrote instead of duplicating it.
        doc_ids = [
            str(i) if i is not None else str(uuid.uuid4())
            for i in (ids if ids is not None else [None] * len(texts))
        ]
        return texts, metas, doc_ids

    @staticmethod
    def _inputs(
        texts: List[str],
        metas: List[Optional[Dict[str, Any]]],
        ids: List[str],
        vectors: Optional[List[List[float]]],
    ) -> List[DocumentInput]:
        if vectors is None:
            return [
                DocumentInput(id=i, text=t, metadata=m) for t, m, i in zip(texts, metas, ids)
            ]
        if len(vectors) != len(texts):
            raise ValueError(
                f"the embeddings returned {len(vectors)} vectors for {len(texts)} texts"
            )
        # A vector document needs no text; the server refuses an empty one, and an empty
        # page_content comes back as "" either way.
        return [
            DocumentInput(id=i, text=t if t != "" else None, vector=list(v), metadata=m)
            for t, m, i, v in zip(texts, metas, ids, vectors)
        ]

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[Sequence[Optional[str]]] = None,
        batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Add or replace texts; returns their ids in order.

        Args:
            texts: The texts.
            metadatas: One JSON-object metadata per text (or `None`).
            ids: One id per text; a document of an existing id is replaced whole. Ids
                missing (or `None`) are generated (uuid4).
            batch_size: Documents per request (default: the store's).
        """
        if kwargs:
            raise TypeError(f"add_texts got unexpected arguments: {sorted(kwargs)}")
        texts, metas, doc_ids = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = self.embedding.embed_documents(texts) if self.embedding is not None else None
        self._ensure_collection(len(vectors[0]) if vectors else None)
        result = self.client.upsert(
            self.collection_name,
            self._inputs(texts, metas, doc_ids, vectors),
            batch_size=batch_size or self.batch_size,
        )
        return [d.id for d in result.documents]

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[Sequence[Optional[str]]] = None,
        batch_size: Optional[int] = None,
        **kwargs: Any,
    ) -> List[str]:
        """Async `add_texts`, on the async client (and the embedding's async methods)."""
        if kwargs:
            raise TypeError(f"aadd_texts got unexpected arguments: {sorted(kwargs)}")
        texts, metas, doc_ids = self._prepare(texts, metadatas, ids)
        if not texts:
            return []
        vectors = (
            await self.embedding.aembed_documents(texts) if self.embedding is not None else None
        )
        await self._aensure_collection(len(vectors[0]) if vectors else None)
        result = await self.async_client.upsert(
            self.collection_name,
            self._inputs(texts, metas, doc_ids, vectors),
            batch_size=batch_size or self.batch_size,
        )
        return [d.id for d in result.documents]

    def add_documents(self, documents: List[Document], **kwargs: Any) -> List[str]:
        """Add or replace documents; ids come from `ids=`, else `Document.id`, else uuid4."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return self.add_texts(
            [d.page_content for d in documents],
            [d.metadata for d in documents],
            ids=ids,
            **kwargs,
        )

    async def aadd_documents(self, documents: List[Document], **kwargs: Any) -> List[str]:
        """Async `add_documents`."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return await self.aadd_texts(
            [d.page_content for d in documents],
            [d.metadata for d in documents],
            ids=ids,
            **kwargs,
        )

    # ----- deletes and reads by id ----------------------------------------------------------

    def delete(
        self,
        ids: Optional[List[str]] = None,
        *,
        filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> Optional[bool]:
        """Delete documents (with all their passages) by ids, or by a metadata filter.

        As LangChain's `VectorStore.delete` defines it, `delete()` with neither ids nor a
        filter deletes every document of the collection (the collection itself stays; see
        `delete_collection`). An empty list deletes nothing; ids that do not exist are
        ignored. Returns `True`.
        """
        if kwargs:
            raise TypeError(f"delete got unexpected arguments: {sorted(kwargs)}")
        if ids is not None and filter is not None:
            raise ValueError("give ids or filter, not both")
        if ids is not None:
            if not ids or not self._exists():
                return True
            # The client sends them 10,000 per request, the server's limit.
            self.client.delete_documents(self.collection_name, ids=[str(i) for i in ids])
            return True
        if not self._exists():
            return True
        if filter is not None:
            self.client.delete_documents(self.collection_name, filter=filter)
        else:
            self.client.delete_documents(self.collection_name, all=True)
        return True

    async def adelete(
        self,
        ids: Optional[List[str]] = None,
        *,
        filter: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> Optional[bool]:
        """Async `delete` (the same semantics: no ids and no filter deletes every document)."""
        if kwargs:
            raise TypeError(f"adelete got unexpected arguments: {sorted(kwargs)}")
        if ids is not None and filter is not None:
            raise ValueError("give ids or filter, not both")
        if ids is not None:
            if not ids or not await self._aexists():
                return True
            # The client sends them 10,000 per request, the server's limit.
            await self.async_client.delete_documents(self.collection_name, ids=[str(i) for i in ids])
            return True
        if not await self._aexists():
            return True
        if filter is not None:
            await self.async_client.delete_documents(self.collection_name, filter=filter)
        else:
            await self.async_client.delete_documents(self.collection_name, all=True)
        return True

    @staticmethod
    def _stored_to_document(doc: Any) -> Document:
        return Document(
            id=doc.id,
            page_content=doc.text or "",
            metadata=dict(doc.metadata) if doc.metadata else {},
        )

    def get_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """The stored documents of these ids (whole texts, not passages), in the order
        given; ids that do not exist are left out."""
        id_list = [str(i) for i in ids]
        if not id_list or not self._exists():
            return []
        # With ids the client reads every page itself.
        page = self.client.get_documents(self.collection_name, ids=id_list, limit=_MAX_PAGE)
        return [self._stored_to_document(d) for d in page.documents]

    async def aget_by_ids(self, ids: Sequence[str], /) -> List[Document]:
        """Async `get_by_ids`."""
        id_list = [str(i) for i in ids]
        if not id_list or not await self._aexists():
            return []
        page = await self.async_client.get_documents(
            self.collection_name, ids=id_list, limit=_MAX_PAGE
        )
        return [self._stored_to_document(d) for d in page.documents]

    # ----- queries -------------------------------------------------------------------------

    def _query_options(
        self, k: int, kwargs: Dict[str, Any], mmr: Optional[Dict[str, Any]] = None
    ) -> Dict[str, Any]:
        unknown = set(kwargs) - _QUERY_OPTIONS
        if unknown:
            raise TypeError(
                f"unexpected search arguments {sorted(unknown)}; "
                f"the server's query options are {sorted(_QUERY_OPTIONS)}"
            )
        options: Dict[str, Any] = {"k": k, "filter": kwargs.get("filter")}
        for name in _PASSTHROUGH_QUERY_OPTIONS:
            if kwargs.get(name) is not None:
                options[name] = kwargs[name]
        if options.get("mode") is None and self.mode is not None:
            options["mode"] = self.mode
        rerank = _rerank_option(kwargs.get("rerank"))
        if rerank is not None:
            options["rerank"] = rerank
        if mmr is not None:
            options["mmr"] = mmr
        return options

    def _run_query(
        self, text: Optional[str], vector: Optional[List[float]], options: Dict[str, Any]
    ) -> List[Tuple[Document, Hit]]:
        if not self._exists():
            return []
        if vector is None and self.embedding is not None:
            vector = self.embedding.embed_query(text or "")
            text = None
        result: QueryResult = self.client.query(
            self.collection_name, text, vector=vector, **options
        )
        return [(_hit_to_document(h), h) for h in result.results]

    async def _arun_query(
        self, text: Optional[str], vector: Optional[List[float]], options: Dict[str, Any]
    ) -> List[Tuple[Document, Hit]]:
        if not await self._aexists():
            return []
        if vector is None and self.embedding is not None:
            vector = await self.embedding.aembed_query(text or "")
            text = None
        client = self.async_client
        result: QueryResult = await client.query(
            self.collection_name, text, vector=vector, **options
        )
        return [(_hit_to_document(h), h) for h in result.results]

    def similarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """The `k` passages nearest to `query`, each with the server's score (higher is
        better: the similarity in dense mode, BM25 in lexical mode, the fused score in hybrid
        mode, the cross-encoder's score when reranked)."""
        pairs = self._run_query(query, None, self._query_options(k, kwargs))
        return [(doc, _hit_score(h)) for doc, h in pairs]

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """Async `similarity_search_with_score`."""
        pairs = await self._arun_query(query, None, self._query_options(k, kwargs))
        return [(doc, _hit_score(h)) for doc, h in pairs]

    def similarity_search(self, query: str, k: int = 4, **kwargs: Any) -> List[Document]:
        """The `k` passages nearest to `query` (see the class docs for the options)."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, **kwargs)]

    async def asimilarity_search(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Document]:
        """Async `similarity_search`."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, **kwargs)]

    def similarity_search_with_score_by_vector(
        self, embedding: List[float], k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """The `k` passages nearest to a vector of the collection's dimension, with scores."""
        pairs = self._run_query(None, list(embedding), self._query_options(k, kwargs))
        return [(doc, _hit_score(h)) for doc, h in pairs]

    async def asimilarity_search_with_score_by_vector(
        self, embedding: List[float], k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        """Async `similarity_search_with_score_by_vector`."""
        pairs = await self._arun_query(None, list(embedding), self._query_options(k, kwargs))
        return [(doc, _hit_score(h)) for doc, h in pairs]

    def similarity_search_by_vector(
        self, embedding: List[float], k: int = 4, **kwargs: Any
    ) -> List[Document]:
        """The `k` passages nearest to a vector of the collection's dimension."""
        pairs = self.similarity_search_with_score_by_vector(embedding, k, **kwargs)
        return [doc for doc, _ in pairs]

    async def asimilarity_search_by_vector(
        self, embedding: List[float], k: int = 4, **kwargs: Any
    ) -> List[Document]:
        """Async `similarity_search_by_vector`."""
        pairs = await self.asimilarity_search_with_score_by_vector(embedding, k, **kwargs)
        return [doc for doc, _ in pairs]

    # ----- relevance scores ----------------------------------------------------------------

    def _relevance_fn_for(self, distance: Optional[str]) -> Callable[[float], float]:
        distance = distance or "cosine"
        if distance in ("cosine", "dot"):
            return _similarity_relevance
        if distance == "l2":
            return _l2_relevance
        raise ValueError(f"no relevance function for distance {distance!r}")

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Maps a dense score of this collection's distance to [0, 1] (1 is most similar).

        Cosine: `(1 + cos) / 2`. Dot and L2 assume unit-length vectors (as the server's
        sentence encoders make), where they give the same value: `(1 + dot) / 2` and
        `1 − d² / 4`; both are clamped to [0, 1] for other vectors.
        """
        if self._collection is None:
            self._exists()
        distance = self._collection.distance if self._collection else self.distance
        return self._relevance_fn_for(distance)

    def _relevance_options(self, k: int, kwargs: Dict[str, Any]) -> Dict[str, Any]:
        # Relevance is defined on the dense similarity; BM25 and fused scores have no fixed
        # scale, so a text query is pinned to dense search unless the caller asked otherwise.
        mode = kwargs.get("mode") or self.mode or "dense"
        if mode != "dense":
            raise ValueError(
                f"relevance scores are defined for mode='dense' only, not {mode!r}: "
                "use similarity_search_with_score for the server's lexical or hybrid scores"
            )
        return self._query_options(k, {**kwargs, "mode": "dense"})

    @staticmethod
    def _relevance(hit: Hit, fn: Callable[[float], float]) -> float:
        # A cross-encoder's score is already a probability (sentence-transformers' activation);
        # clamped for models whose head has none.
        return _clamp01(hit.rerank_score) if hit.rerank_score is not None else fn(hit.score)

    def _similarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        pairs = self._run_query(query, None, self._relevance_options(k, kwargs))
        fn = self._select_relevance_score_fn()
        return [(doc, self._relevance(h, fn)) for doc, h in pairs]

    async def _asimilarity_search_with_relevance_scores(
        self, query: str, k: int = 4, **kwargs: Any
    ) -> List[Tuple[Document, float]]:
        pairs = await self._arun_query(query, None, self._relevance_options(k, kwargs))
        # An empty answer may come from a collection that does not exist yet; then the
        # mapping is not needed (and must not be fetched with the sync client).
        if not pairs:
            return []
        distance = self._collection.distance if self._collection else self.distance
        fn = self._relevance_fn_for(distance)
        return [(doc, self._relevance(h, fn)) for doc, h in pairs]

    # ----- maximal marginal relevance, chosen by the server ----------------------------------

    @staticmethod
    def _mmr(k: int, fetch_k: int, lambda_mult: float) -> Dict[str, Any]:
        # The server needs fetch_k >= k; LangChain callers often raise k alone (as a
        # retriever's search_kwargs={"k": 30} with the default fetch_k of 20).
        return {"lambda": lambda_mult, "fetch_k": max(fetch_k, k)}

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> List[Document]:
        """`k` passages chosen by maximal marginal relevance among the `fetch_k` nearest,
        by the server (the query's `mmr` option). `lambda_mult` 1 keeps the nearest-first
        order, 0 picks for diversity alone; a `fetch_k` below `k` is raised to `k`."""
        options = self._query_options(k, kwargs, self._mmr(k, fetch_k, lambda_mult))
        return [doc for doc, _ in self._run_query(query, None, options)]

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> List[Document]:
        """Async `max_marginal_relevance_search`."""
        options = self._query_options(k, kwargs, self._mmr(k, fetch_k, lambda_mult))
        return [doc for doc, _ in await self._arun_query(query, None, options)]

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> List[Document]:
        """`max_marginal_relevance_search` from a vector of the collection's dimension."""
        options = self._query_options(k, kwargs, self._mmr(k, fetch_k, lambda_mult))
        return [doc for doc, _ in self._run_query(None, list(embedding), options)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: List[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        **kwargs: Any,
    ) -> List[Document]:
        """Async `max_marginal_relevance_search_by_vector`."""
        options = self._query_options(k, kwargs, self._mmr(k, fetch_k, lambda_mult))
        pairs = await self._arun_query(None, list(embedding), options)
        return [doc for doc, _ in pairs]

    # ----- constructors -----------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls: Type[VST],
        texts: List[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> VST:
        """A store on `collection_name` (created when missing) holding these texts.

        `embedding=None` lets the server embed; the other keyword arguments are the
        constructor's (`url`, `client`, `distance`, ...) and `batch_size`.
        """
        store = cls(collection_name, embedding, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(
        cls: Type[VST],
        texts: List[str],
        embedding: Optional[Embeddings] = None,
        metadatas: Optional[List[Dict[str, Any]]] = None,
        *,
        ids: Optional[List[str]] = None,
        collection_name: str = "langchain",
        **kwargs: Any,
    ) -> VST:
        """Async `from_texts`."""
        store = cls(collection_name, embedding, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    def from_documents(
        cls: Type[VST],
        documents: List[Document],
        embedding: Optional[Embeddings] = None,
        **kwargs: Any,
    ) -> VST:
        """A store holding these documents (ids from `ids=` or `Document.id`)."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return cls.from_texts(
            [d.page_content for d in documents],
            embedding,
            [d.metadata for d in documents],
            ids=ids,
            **kwargs,
        )

    @classmethod
    async def afrom_documents(
        cls: Type[VST],
        documents: List[Document],
        embedding: Optional[Embeddings] = None,
        **kwargs: Any,
    ) -> VST:
        """Async `from_documents`."""
        ids = kwargs.pop("ids", None)
        if ids is None:
            ids = [d.id for d in documents]
        return await cls.afrom_texts(
            [d.page_content for d in documents],
            embedding,
            [d.metadata for d in documents],
            ids=ids,
            **kwargs,
        )


__all__ = ["VicinityVectorStore"]
