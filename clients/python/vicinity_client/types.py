"""The client's data classes: what goes in (:class:`DocumentInput`) and what comes back.

Each result keeps the JSON object it was read from in ``raw``, so that fields a newer server
adds are reachable before the client knows them. ``raw`` is left out of ``repr`` and of
equality.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

__all__ = [
    "DocumentInput",
    "Document",
    "DocumentPage",
    "Upserted",
    "UpsertResult",
    "DeleteResult",
    "PassageSpan",
    "Hit",
    "QueryResult",
    "Collection",
    "Info",
    "Reranked",
]

#: A document id as the server takes it: a string, or a non-negative integer (stored as its
#: decimal string).
DocId = Union[str, int]


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass
class DocumentInput:
    """One document to upsert: ``text`` (split into passages and embedded by the server), or a
    ``vector`` (one passage; ``text``, if given too, is stored with it), with optional
    ``metadata``. Without ``id`` the client generates a uuid4, once, so that a retried batch
    replaces what an earlier attempt may have written instead of duplicating it."""

    id: Optional[DocId] = None
    text: Optional[str] = None
    vector: Optional[Sequence[float]] = None
    metadata: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class Document:
    """A stored document. ``created_at``/``updated_at`` are RFC 3339 strings, as the server
    sends them."""

    id: str
    text: Optional[str]
    metadata: Optional[Dict[str, Any]]
    passages: int
    created_at: str
    updated_at: str
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Document":
        """Reads a ``DocumentResponse``."""
        return cls(
            id=d["id"],
            text=d.get("text"),
            metadata=d.get("metadata"),
            passages=d["passages"],
            created_at=d["created_at"],
            updated_at=d["updated_at"],
            raw=d,
        )


@dataclass(frozen=True)
class DocumentPage:
    """A page of documents. ``next_after`` is the cursor of the next page (``None`` on the
    last); ``total`` counts the whole selection."""

    documents: List[Document]
    next_after: Optional[str]
    total: int
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "DocumentPage":
        """Reads a ``DocumentPageResponse``."""
        return cls(
            documents=[Document.from_json(x) for x in d["documents"]],
            next_after=d.get("next_after"),
            total=d["total"],
            raw=d,
        )


@dataclass(frozen=True)
class Upserted:
    """What an upsert did to one document: its id (generated ones included), how many
    passages it was split into, and whether it replaced an existing document."""

    id: str
    passages: int
    replaced: bool
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Upserted":
        """Reads an ``UpsertedResponse``."""
        return cls(id=d["id"], passages=d["passages"], replaced=d["replaced"], raw=d)


@dataclass(frozen=True)
class UpsertResult:
    """The result of an upsert, one entry per document in input order. ``version`` is the
    largest collection version the batches produced: a query with ``min_version=version``
    sees every document. ``raw`` has the server's shape, merged over the batches."""

    documents: List[Upserted]
    version: int
    raw: Dict[str, Any] = _raw()

    @property
    def ids(self) -> List[str]:
        """The documents' ids, in input order."""
        return [d.id for d in self.documents]


@dataclass(frozen=True)
class DeleteResult:
    """The ids deleted (ids that did not exist are not listed) and the collection version
    after the write (the largest, over several requests)."""

    deleted: List[str]
    version: int
    raw: Dict[str, Any] = _raw()


@dataclass(frozen=True)
class PassageSpan:
    """Where a passage sits in its document: its position among the document's passages and
    character offsets, so that ``text[start:end]`` is the passage."""

    index: int
    start: int
    end: int

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "PassageSpan":
        """Reads a ``PassageSpanResponse``."""
        return cls(index=d["index"], start=d["start"], end=d["end"])


@dataclass(frozen=True)
class Hit:
    """One query hit. ``id`` is the passage id (``<document id>#<passage index>``);
    ``score`` is higher-is-better (similarity, BM25 or fused score by mode); ``distance`` is
    set in dense mode; ``rerank_score`` on reranked queries; ``text``/``metadata``/``vector``
    as ``include`` asked."""

    id: str
    document_id: str
    score: float
    distance: Optional[float]
    rerank_score: Optional[float]
    text: Optional[str]
    metadata: Optional[Dict[str, Any]]
    vector: Optional[List[float]]
    passage: PassageSpan
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Hit":
        """Reads a ``QueryHitResponse``."""
        return cls(
            id=d["id"],
            document_id=d["document_id"],
            score=d["score"],
            distance=d.get("distance"),
            rerank_score=d.get("rerank_score"),
            text=d.get("text"),
            metadata=d.get("metadata"),
            vector=d.get("vector"),
            passage=PassageSpan.from_json(d["passage"]),
            raw=d,
        )


@dataclass(frozen=True)
class QueryResult:
    """The answer to one query: hits best first, the search path that answered (``plan``),
    the time spent in the service, the collection version answered at, and a hybrid query's
    legs."""

    results: List[Hit]
    plan: str
    time_ms: float
    version: int
    legs: List[Dict[str, Any]]
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "QueryResult":
        """Reads a ``QueryResponse``."""
        return cls(
            results=[Hit.from_json(h) for h in d["results"]],
            plan=d["plan"],
            time_ms=d["time_ms"],
            version=d["version"],
            legs=list(d.get("legs") or []),
            raw=d,
        )


@dataclass(frozen=True)
class Collection:
    """A collection: its settings (``index``, ``chunking``, ``lexical`` with defaults filled
    in), its counts, and ``index_state`` (what serves queries now). ``status`` is ``ready``,
    or ``failed`` (then ``error`` says why)."""

    name: str
    source: str
    dimension: Optional[int]
    distance: str
    documents: int
    passages: int
    status: str
    index_state: Dict[str, Any]
    index: Dict[str, Any] = field(default_factory=dict)
    chunking: Optional[Dict[str, Any]] = None
    lexical: Optional[Dict[str, Any]] = None
    model: Optional[str] = None
    memory_bytes: int = 0
    created_at: Optional[str] = None
    error: Optional[str] = None
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Collection":
        """Reads a ``CollectionResponse``."""
        return cls(
            name=d["name"],
            source=d["source"],
            dimension=d.get("dimension"),
            distance=d["distance"],
            documents=d["documents"],
            passages=d["passages"],
            status=d["status"],
            index_state=d["index_state"],
            index=d.get("index") or {},
            chunking=d.get("chunking"),
            lexical=d.get("lexical"),
            model=d.get("model"),
            memory_bytes=d.get("memory_bytes", 0),
            created_at=d.get("created_at"),
            error=d.get("error"),
            raw=d,
        )


@dataclass(frozen=True)
class Info:
    """What the server runs: its version, embedding model, the model's dimension, the most
    tokens it reads from one input, and the number format and matrix kernel the model computes
    with (``f32``/``bf16``/``int8``; ``None`` from a server that does not say)."""

    version: str
    model: str
    dimension: int
    max_input_tokens: int
    precision: Optional[str] = None
    kernel: Optional[str] = None
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Info":
        """Reads an ``InfoResponse``."""
        return cls(
            version=d["version"],
            model=d["model"],
            dimension=d["dimension"],
            max_input_tokens=d["max_input_tokens"],
            precision=d.get("precision"),
            kernel=d.get("kernel"),
            raw=d,
        )


@dataclass(frozen=True)
class Reranked:
    """One text's score from ``/rerank``: its position in the request, its relevance (higher
    is more relevant), and the text itself with ``return_text``."""

    index: int
    score: float
    text: Optional[str] = None
    raw: Dict[str, Any] = _raw()

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Reranked":
        """Reads a ``RerankedText``."""
        return cls(index=d["index"], score=d["score"], text=d.get("text"), raw=d)
