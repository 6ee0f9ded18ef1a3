"""`VicinityVectorStore`: a LlamaIndex vector store kept in a vicinity collection.

One node is one vicinity document: the node id is the document id, the node's text and
embedding are the document's text and vector, and the node itself (relationships, metadata,
class) is kept in the document's metadata by LlamaIndex's `node_to_metadata_dict`, so that
`metadata_dict_to_node` restores it from any hit. Filters, MMR and the lexical and hybrid
searches all run on the server.
"""

import math
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import (
    metadata_dict_to_node,
    node_to_metadata_dict,
)
from vicinity_client import AsyncVicinity, ClientPair, DocumentInput, Vicinity

from .filters import Filter, all_of, field_in, to_vicinity_filter

__all__ = ["VicinityVectorStore", "NODE_ID_KEY"]

# vicinity filters metadata only, not document ids, so each node's id is also written to its
# metadata under this key: `node_ids` restrictions and `delete_nodes`/`get_nodes` with both ids
# and filters become filters on it.
NODE_ID_KEY = "_node_id"
# `node_to_metadata_dict` writes the source document's id under this key (among others).
REF_DOC_ID_KEY = "ref_doc_id"

# Ids per read or delete request, well under the server's `--max-documents` (10,000).
_IDS_PER_REQUEST = 1000
# The largest page `POST /collections/{name}/documents/get` serves.
_PAGE_SIZE = 1000

_DENSE_MODES = (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR)
_LEXICAL_MODES = (VectorStoreQueryMode.TEXT_SEARCH, VectorStoreQueryMode.SPARSE)
_QUERY_KWARGS = frozenset(
    {
        "mmr_threshold",
        "mmr_prefetch_k",
        "mmr_prefetch_factor",
        "candidates",
        "fusion",
        "rrf_k",
        "params",
    }
)


class VicinityVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store backed by a vicinity collection.

    The collection is created on the first `add` when it does not exist, with the dimension
    of the first node's embedding: when the server's model has that dimension the server makes
    a text collection (which takes vectors too, and has a lexical index for `text_search`
    and `hybrid` queries), otherwise a collection that takes vectors only. Nodes without an
    embedding are sent as text, and the server embeds them itself (a text collection only).

    Query modes:

    * `default`: k nearest nodes to `query_embedding` (or, with no embedding, to `query_str`
      embedded by the server).
    * `mmr`: the server's maximal marginal relevance; `mmr_threshold` (on the query or in
      the retriever's `vector_store_kwargs`) is its `lambda`, 1 for relevance only, 0 for
      diversity only (default 0.5); `mmr_prefetch_k` or `mmr_prefetch_factor` set how many
      candidates it chooses from.
    * `hybrid`: the server's hybrid search on `query_str` (BM25 fused with the dense search
      of the server's own embedding of `query_str`); `alpha` is the dense leg's weight.
      `hybrid_top_k` overrides `similarity_top_k`, `sparse_top_k` sets each leg's
      candidates.
    * `text_search` and `sparse`: BM25 on `query_str`.

    Nodes with no query at all (only filters) are read in id order, without similarities.
    Errors of the server and of the connection are the client's typed exceptions
    (`vicinity_client.BadRequestError` and so on); filters vicinity cannot express raise
    `UnsupportedFilterError` (a `ValueError`).

    Args:
        collection_name: The vicinity collection.
        url: The server, e.g. ``http://127.0.0.1:8080`` (default: env ``VICINITY_URL``).
        api_key: Its API key (default: env ``VICINITY_API_KEY``); never stored on the model.
        client: A `vicinity_client.Vicinity` to use instead of making one.
        aclient: A `vicinity_client.AsyncVicinity` for the async methods (made on first use
            from `url` and `api_key` when not given).
        batch_size: Documents per upsert request.
        distance, index, chunking, lexical: Settings of the collection when this store
            creates it (see `PUT /collections/{name}`).
        client_kwargs: Further arguments of the clients this store makes (timeout,
            max_retries, headers, ...).

    Examples:
        ```python
        from llama_index.vector_stores.vicinity import VicinityVectorStore

        store = VicinityVectorStore(collection_name="docs", url="http://127.0.0.1:8080")
        ```
    """

    stores_text: bool = True

    collection_name: str
    url: Optional[str] = None
    batch_size: int = 256
    distance: Optional[str] = None
    index: Optional[Dict[str, Any]] = None
    chunking: Optional[Dict[str, Any]] = None
    lexical: Optional[Dict[str, Any]] = None

    _clients: ClientPair = PrivateAttr()
    _collection_ready: bool = PrivateAttr(default=False)

    def __init__(
        self,
        collection_name: str = "llama_index",
        url: Optional[str] = None,
        api_key: Optional[str] = None,
        client: Optional[Vicinity] = None,
        aclient: Optional[AsyncVicinity] = None,
        batch_size: int = 256,
        distance: Optional[str] = None,
        index: Optional[Dict[str, Any]] = None,
        chunking: Optional[Dict[str, Any]] = None,
        lexical: Optional[Dict[str, Any]] = None,
        client_kwargs: Optional[Dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        """Connect to (or reuse the clients of) a vicinity server; nothing is sent yet."""
        super().__init__(
            collection_name=collection_name,
            url=url,
            batch_size=batch_size,
            distance=distance,
            index=index,
            chunking=chunking,
            lexical=lexical,
            **kwargs,
        )
        self._clients = ClientPair(
            url=url,
            api_key=api_key,
            client=client,
            async_client=aclient,
            client_kwargs=client_kwargs,
            async_client_arg="aclient",
        )

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this class under."""
        return "VicinityVectorStore"

    @property
    def client(self) -> Vicinity:
        """The synchronous `vicinity_client.Vicinity`."""
        return self._clients.sync

    @property
    def aclient(self) -> AsyncVicinity:
        """The `vicinity_client.AsyncVicinity` of the async methods, made on first use."""
        return self._clients.async_

    def close(self) -> None:
        """Close the synchronous client, when this store made it."""
        self._clients.close()

    async def aclose(self) -> None:
        """Close both clients, when this store made them."""
        await self._clients.aclose()
        self._clients.close()

    # ---------------------------------------------------------------------------- writes

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> List[str]:
        """Upsert nodes (an existing node of the same id is replaced); returns their ids."""
        if not nodes:
            return []
        documents = [_node_to_document(node) for node in nodes]
        if not self._collection_ready:
            if not self.client.collection_exists(self.collection_name):
                self.client.create_collection(
                    self.collection_name, **self._collection_settings(nodes)
                )
            self._collection_ready = True
        result = self.client.upsert(
            self.collection_name, documents, batch_size=self.batch_size
        )
        return [upserted.id for upserted in result.documents]

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> List[str]:
        """Upsert nodes with the async client; returns their ids."""
        if not nodes:
            return []
        documents = [_node_to_document(node) for node in nodes]
        if not self._collection_ready:
            if not await self.aclient.collection_exists(self.collection_name):
                await self.aclient.create_collection(
                    self.collection_name, **self._collection_settings(nodes)
                )
            self._collection_ready = True
        result = await self.aclient.upsert(
            self.collection_name, documents, batch_size=self.batch_size
        )
        return [upserted.id for upserted in result.documents]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id`."""
        self.client.delete_documents(
            self.collection_name, filter={REF_DOC_ID_KEY: ref_doc_id}
        )

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document `ref_doc_id` (async)."""
        await self.aclient.delete_documents(
            self.collection_name, filter={REF_DOC_ID_KEY: ref_doc_id}
        )

    def delete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes of `node_ids` that match `filters`.

        At least one of the two is needed: deleting everything is `clear()`.
        """
        for request in _delete_requests(node_ids, filters):
            self.client.delete_documents(self.collection_name, **request)

    async def adelete_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes of `node_ids` that match `filters` (async)."""
        for request in _delete_requests(node_ids, filters):
            await self.aclient.delete_documents(self.collection_name, **request)

    def clear(self) -> None:
        """Delete every node; the collection and its settings remain."""
        self.client.delete_documents(self.collection_name, all=True)

    async def aclear(self) -> None:
        """Delete every node (async); the collection and its settings remain."""
        await self.aclient.delete_documents(self.collection_name, all=True)

    # ----------------------------------------------------------------------------- reads

    def get_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        """The nodes of `node_ids` (in that order, missing ones left out) that match
        `filters`; every node matching `filters` when `node_ids` is None."""
        documents: List[Any] = []
        for request in _read_requests(node_ids, filters):
            documents.extend(self._read_all(request))
        return _documents_to_nodes(documents, node_ids)

    async def aget_nodes(
        self,
        node_ids: Optional[List[str]] = None,
        filters: Optional[MetadataFilters] = None,
    ) -> List[BaseNode]:
        """`get_nodes` with the async client."""
        documents: List[Any] = []
        for request in _read_requests(node_ids, filters):
            documents.extend(await self._aread_all(request))
        return _documents_to_nodes(documents, node_ids)

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Answer a LlamaIndex query; see the class docs for the modes."""
        search, read = _plan_query(query, kwargs)
        if search is not None:
            answer = self.client.query(self.collection_name, **search)
            return _hits_to_result(answer.results)
        page = self.client.get_documents(self.collection_name, **read)
        return _page_to_result(page.documents)

    async def aquery(
        self, query: VectorStoreQuery, **kwargs: Any
    ) -> VectorStoreQueryResult:
        """Answer a LlamaIndex query with the async client."""
        search, read = _plan_query(query, kwargs)
        if search is not None:
            answer = await self.aclient.query(self.collection_name, **search)
            return _hits_to_result(answer.results)
        page = await self.aclient.get_documents(self.collection_name, **read)
        return _page_to_result(page.documents)

    # --------------------------------------------------------------------------- helpers

    def _collection_settings(self, nodes: Sequence[BaseNode]) -> Dict[str, Any]:
        # The server makes a text collection when the dimension is its model's (or absent),
        # and a vector-only collection otherwise.
        dimension = next(
            (len(node.embedding) for node in nodes if node.embedding is not None), None
        )
        settings = {
            "dimension": dimension,
            "distance": self.distance,
            "index": self.index,
            "chunking": self.chunking,
            "lexical": self.lexical,
        }
        return {k: v for k, v in settings.items() if v is not None}

    def _read_all(self, request: Dict[str, Any]) -> List[Any]:
        documents: List[Any] = []
        after = None
        while True:
            page = self.client.get_documents(self.collection_name, after=after, **request)
            documents.extend(page.documents)
            if "ids" in request or page.next_after is None:
                return documents
            after = page.next_after

    async def _aread_all(self, request: Dict[str, Any]) -> List[Any]:
        documents: List[Any] = []
        after = None
        while True:
            page = await self.aclient.get_documents(
                self.collection_name, after=after, **request
            )
            documents.extend(page.documents)
            if "ids" in request or page.next_after is None:
                return documents
            after = page.next_after


def _node_to_document(node: BaseNode) -> DocumentInput:
    text = node.get_content(metadata_mode=MetadataMode.NONE)
    # The text travels as the document's text, so it is left out of the node's JSON in the
    # metadata (which the server caps at `--max-metadata-bytes`). Metadata need not be flat:
    # vicinity stores any JSON object, and dotted filter keys reach nested fields.
    metadata = node_to_metadata_dict(node, remove_text=True, flat_metadata=False)
    metadata[NODE_ID_KEY] = node.node_id
    has_text = bool(text and text.strip())
    if node.embedding is None and not has_text:
        raise ValueError(
            f"node {node.node_id!r} has neither an embedding nor text: there is nothing "
            "to index"
        )
    return DocumentInput(
        id=node.node_id,
        text=text if has_text else None,
        vector=node.embedding,
        metadata=metadata,
    )


def _restore_node(node_id: str, text: Optional[str], metadata: Optional[Dict[str, Any]]) -> BaseNode:
    metadata = dict(metadata or {})
    if "_node_content" in metadata:
        return metadata_dict_to_node(metadata, text=text)
    # A document some other client wrote: a plain text node with its metadata.
    return TextNode(id_=node_id, text=text or "", metadata=metadata)


def _hits_to_result(hits: Iterable[Any]) -> VectorStoreQueryResult:
    nodes: List[BaseNode] = []
    similarities: List[float] = []
    ids: List[str] = []
    seen = set()
    for hit in hits:
        # A node sent without an embedding may span several passages; MMR (which cannot
        # group by document) may then return more than one of them, and the best one stands
        # for the node.
        if hit.document_id in seen:
            continue
        seen.add(hit.document_id)
        nodes.append(_restore_node(hit.document_id, hit.text, hit.metadata))
        similarities.append(hit.score)
        ids.append(hit.document_id)
    return VectorStoreQueryResult(nodes=nodes, similarities=similarities, ids=ids)


def _page_to_result(documents: Iterable[Any]) -> VectorStoreQueryResult:
    nodes = [_restore_node(d.id, d.text, d.metadata) for d in documents]
    # Read without a query, these nodes have no similarity to report.
    return VectorStoreQueryResult(nodes=nodes, similarities=None, ids=[n.node_id for n in nodes])


def _documents_to_nodes(
    documents: Sequence[Any], node_ids: Optional[Sequence[str]]
) -> List[BaseNode]:
    nodes = [_restore_node(d.id, d.text, d.metadata) for d in documents]
    if node_ids is None:
        return nodes
    # Filtered reads come back in id order; give them in the order asked for.
    rank = {node_id: i for i, node_id in enumerate(node_ids)}
    return sorted(nodes, key=lambda n: rank.get(n.node_id, len(rank)))


def _chunks(values: Sequence[str], size: int) -> Iterable[List[str]]:
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


def _read_requests(
    node_ids: Optional[List[str]], filters: Optional[MetadataFilters]
) -> List[Dict[str, Any]]:
    """The `get_documents` arguments that together read what `get_nodes` asks for."""
    where = to_vicinity_filter(filters)
    if node_ids is None:
        return [{"filter": where, "limit": _PAGE_SIZE}]
    if where is None:
        return [
            {"ids": chunk, "limit": len(chunk)} for chunk in _chunks(node_ids, _IDS_PER_REQUEST)
        ]
    # The server reads by ids or by a filter, not both: the ids become part of the filter.
    return [
        {"filter": all_of([where, field_in(NODE_ID_KEY, chunk)]), "limit": _PAGE_SIZE}
        for chunk in _chunks(node_ids, _IDS_PER_REQUEST)
    ]


def _delete_requests(
    node_ids: Optional[List[str]], filters: Optional[MetadataFilters]
) -> List[Dict[str, Any]]:
    """The `delete_documents` arguments that together delete what `delete_nodes` asks for."""
    where = to_vicinity_filter(filters)
    if node_ids is None:
        if where is None:
            raise ValueError(
                "delete_nodes needs node_ids or filters; to delete every node, call clear()"
            )
        return [{"filter": where}]
    if where is None:
        return [{"ids": chunk} for chunk in _chunks(node_ids, _IDS_PER_REQUEST)]
    return [
        {"filter": all_of([where, field_in(NODE_ID_KEY, chunk)])}
        for chunk in _chunks(node_ids, _IDS_PER_REQUEST)
    ]


def _restriction(query: VectorStoreQuery) -> Optional[Filter]:
    # An empty `node_ids`/`doc_ids` list restricts nothing: `VectorStoreIndex.as_retriever`
    # passes the ids of the nodes it keeps in its own docstore, none for a store that keeps
    # text, and that must not hide every node.
    return all_of(
        [
            to_vicinity_filter(query.filters),
            field_in(REF_DOC_ID_KEY, query.doc_ids) if query.doc_ids else None,
            field_in(NODE_ID_KEY, query.node_ids) if query.node_ids else None,
        ]
    )


def _plan_query(
    query: VectorStoreQuery, kwargs: Dict[str, Any]
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """Turn a LlamaIndex query into `query()` arguments, or `get_documents()` arguments
    for a query with nothing to search for; exactly one of the pair is not None."""
    unknown = set(kwargs) - _QUERY_KWARGS
    if unknown:
        raise TypeError(
            f"VicinityVectorStore.query got unknown keyword arguments {sorted(unknown)} "
            f"(known: {sorted(_QUERY_KWARGS)})"
        )
    mode = VectorStoreQueryMode(query.mode)
    where = _restriction(query)
    k = query.similarity_top_k
    search: Dict[str, Any] = {"filter": where}
    for key in ("params", "fusion", "rrf_k", "candidates"):
        if kwargs.get(key) is not None:
            search[key] = kwargs[key]

    if mode in _DENSE_MODES:
        if query.query_embedding is not None:
            search["vector"] = list(query.query_embedding)
        elif query.query_str:
            # The server embeds the text with its own model (text collections only).
            search["query"] = query.query_str
        elif mode == VectorStoreQueryMode.MMR:
            raise ValueError("an MMR query needs query_embedding or query_str")
        else:
            return None, {"filter": where, "limit": max(1, min(k, _PAGE_SIZE))}
        search["mode"] = "dense"
        if mode == VectorStoreQueryMode.MMR:
            search["mmr"] = _mmr(query, kwargs)
    elif mode == VectorStoreQueryMode.HYBRID or mode in _LEXICAL_MODES:
        if not query.query_str:
            raise ValueError(f"a {mode.value} query needs query_str")
        search["query"] = query.query_str
        if mode == VectorStoreQueryMode.HYBRID:
            search["mode"] = "hybrid"
            k = query.hybrid_top_k or k
            if query.alpha is not None:
                search["alpha"] = query.alpha
            if query.sparse_top_k is not None and "candidates" not in search:
                search["candidates"] = query.sparse_top_k
        else:
            search["mode"] = "lexical"
            if mode == VectorStoreQueryMode.SPARSE:
                k = query.sparse_top_k or k
    else:
        raise ValueError(
            f"query mode {mode.value!r} is not supported by VicinityVectorStore "
            "(supported: default, mmr, hybrid, text_search, sparse)"
        )

    search["k"] = k
    if "mmr" not in search:
        # The k best distinct nodes: a node sent as text may span several passages.
        search["group_by"] = "document"
    return search, None


def _mmr(query: VectorStoreQuery, kwargs: Dict[str, Any]) -> Dict[str, Any]:
    threshold = query.mmr_threshold
    if threshold is None:
        threshold = kwargs.get("mmr_threshold")
    mmr: Dict[str, Any] = {"lambda": 0.5 if threshold is None else threshold}
    fetch_k = kwargs.get("mmr_prefetch_k")
    factor = kwargs.get("mmr_prefetch_factor")
    if fetch_k is not None and factor is not None:
        raise ValueError("give mmr_prefetch_k or mmr_prefetch_factor, not both")
    if factor is not None:
        fetch_k = math.ceil(query.similarity_top_k * factor)
    if fetch_k is not None:
        mmr["fetch_k"] = fetch_k
    return mmr
