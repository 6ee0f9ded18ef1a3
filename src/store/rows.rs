//! The domain types the store reads and writes: plain structs, independent of SQL.
//!
//! `New*` types are what callers hand in; `*Record` types are what comes back. Offsets are in
//! characters (Unicode scalar values), never bytes, so that `text[start:end]` works the same
//! in Rust (over `chars()`), Python and JavaScript clients.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::distance::Metric;

/// The id of a passage: the `u64` the vector indexes store it under. Ids come from SQLite's
/// `AUTOINCREMENT` and are never reused, even after the passage is deleted.
pub type PassageId = u64;

/// The database id of a collection. Ids are never reused, so a collection that is deleted and
/// created again under the same name gets a new id; on-disk artefacts named after an id (index
/// snapshots) can never be mistaken for another collection's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CollectionId(pub i64);

impl std::fmt::Display for CollectionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Where a collection's vectors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CollectionSource {
    /// Documents carry text, which the service splits into passages and embeds itself.
    Text,
    /// Documents carry their own vector (one passage per document).
    Vector,
}

impl CollectionSource {
    /// The name stored in the database and used in the API (`text`, `vector`).
    pub fn as_str(self) -> &'static str {
        match self {
            CollectionSource::Text => "text",
            CollectionSource::Vector => "vector",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s {
            "text" => Some(CollectionSource::Text),
            "vector" => Some(CollectionSource::Vector),
            _ => None,
        }
    }
}

/// The settings of a collection to create.
///
/// `index` and `chunking` are JSON objects owned by the service; the store keeps them as they
/// are and compares them structurally, so the service should fill in its defaults before it
/// calls [`Store::create_collection`](super::Store::create_collection) (otherwise `{}` and
/// `{"m": 16}` would be different settings even where 16 is the default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewCollection {
    /// Unique name.
    pub name: String,
    /// Similarity measure.
    pub distance: Metric,
    /// Index configuration, a JSON object such as `{"type": "hnsw", "m": 16}`.
    pub index: Value,
    /// Vector length, when known at creation; otherwise the first stored vector fixes it.
    pub dimension: Option<usize>,
    /// Whether the service embeds text or the client sends vectors.
    pub source: CollectionSource,
    /// The embedding model of a text collection.
    pub model_id: Option<String>,
    /// How text is split into passages, a JSON object such as `{"max_tokens": 256, "overlap": 32}`.
    pub chunking: Option<Value>,
    /// Lexical index settings of a text collection, a JSON object such as
    /// `{"language": "en"}`; `None` for a collection without one.
    pub lexical: Option<Value>,
}

/// A stored collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    /// Database id, never reused.
    pub id: CollectionId,
    /// Unique name.
    pub name: String,
    /// Similarity measure.
    pub distance: Metric,
    /// Index configuration (a JSON object).
    pub index: Value,
    /// Length of every vector in the collection; `None` until the first vector is stored.
    pub dimension: Option<usize>,
    /// Whether the service embeds text or the client sends vectors.
    pub source: CollectionSource,
    /// The embedding model of a text collection.
    pub model_id: Option<String>,
    /// Text splitting settings (a JSON object), if any.
    pub chunking: Option<Value>,
    /// Lexical index settings (a JSON object), if any.
    pub lexical: Option<Value>,
    /// Creation time, RFC 3339 UTC with milliseconds (`2024-05-01T12:00:00.000Z`).
    pub created_at: String,
}

impl CollectionRecord {
    /// Whether creating `new` over this record would change nothing. A `new.dimension` of
    /// `None` matches any stored dimension: a text collection's dimension is fixed later, by its
    /// first vector, and creating it again with the same request must still match.
    pub fn matches(&self, new: &NewCollection) -> bool {
        self.name == new.name
            && self.distance == new.distance
            && self.index == new.index
            && (new.dimension.is_none() || self.dimension == new.dimension)
            && self.source == new.source
            && self.model_id == new.model_id
            && self.chunking == new.chunking
            && self.lexical == new.lexical
    }
}

/// What [`Store::create_collection`](super::Store::create_collection) did.
#[derive(Clone, Debug, PartialEq)]
pub enum CreateOutcome {
    /// The collection did not exist and was created.
    Created(CollectionRecord),
    /// A collection with the same name and the same settings exists; nothing changed.
    AlreadyExists(CollectionRecord),
    /// A collection with the same name but other settings exists; nothing changed. Holds the
    /// existing record.
    Conflict(CollectionRecord),
}

impl CreateOutcome {
    /// The record that is stored now, whatever happened.
    pub fn record(&self) -> &CollectionRecord {
        match self {
            CreateOutcome::Created(r)
            | CreateOutcome::AlreadyExists(r)
            | CreateOutcome::Conflict(r) => r,
        }
    }
}

/// A collection with its sizes, as listed by
/// [`Store::list_collections`](super::Store::list_collections).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionSummary {
    /// The collection.
    pub collection: CollectionRecord,
    /// Number of documents.
    pub documents: u64,
    /// Number of passages (= vectors).
    pub passages: u64,
}

/// A document to store, already split into passages.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDocument {
    /// Id, unique within the collection; non-empty.
    pub id: String,
    /// Full text, if the document has any (vector documents may not).
    pub text: Option<String>,
    /// A JSON object, or `Value::Null` for none.
    pub metadata: Value,
    /// The passages in order; a passage's index is its position here.
    pub passages: Vec<NewPassage>,
}

/// One passage of a [`NewDocument`].
#[derive(Clone, Debug, PartialEq)]
pub struct NewPassage {
    /// First character of the passage in the document text.
    pub start: usize,
    /// One past the last character (`start <= end <= number of characters of the text`).
    pub end: usize,
    /// The passage text, if stored.
    pub text: Option<String>,
    /// The embedding; finite components, the collection's dimension.
    pub vector: Vec<f32>,
}

/// The outcome of upserting one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpsertedDocument {
    /// The document id.
    pub id: String,
    /// Whether a document with this id existed and was replaced.
    pub replaced: bool,
    /// Ids of the new passages, in passage order.
    pub passage_ids: Vec<PassageId>,
    /// Ids of the replaced document's passages, now deleted, ascending.
    pub removed_passage_ids: Vec<PassageId>,
}

/// A document removed by [`Store::delete_documents`](super::Store::delete_documents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedDocument {
    /// The document id.
    pub id: String,
    /// Ids of its passages, now deleted, ascending.
    pub passage_ids: Vec<PassageId>,
}

/// A stored document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// Id, unique within the collection.
    pub id: String,
    /// Full text, if any.
    pub text: Option<String>,
    /// A JSON object, or `Value::Null` for none.
    pub metadata: Value,
    /// Number of passages.
    pub passage_count: u64,
    /// First insertion, RFC 3339 UTC with milliseconds.
    pub created_at: String,
    /// Last replacement (equal to `created_at` if never replaced).
    pub updated_at: String,
}

/// Which page of a collection's documents to list. Documents are ordered by id (byte-wise), so
/// pages stay stable while documents are added or removed elsewhere.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    /// Start after this document id (the `next_after` of the previous page); `None` starts at
    /// the beginning.
    pub after: Option<String>,
    /// Documents to skip after that point (for offset-style pagination).
    pub offset: u64,
    /// Maximum number of documents to return.
    pub limit: u32,
}

/// One page of documents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentPage {
    /// The documents, ordered by id.
    pub documents: Vec<DocumentRecord>,
    /// Number of documents in the collection.
    pub total: u64,
    /// The cursor for the next page (the last id here), or `None` when this page is the last.
    pub next_after: Option<String>,
}

/// A stored passage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PassageRecord {
    /// Passage id (the id in the vector index).
    pub id: PassageId,
    /// Id of its document.
    pub doc_id: String,
    /// Position among the document's passages.
    pub index: usize,
    /// First character in the document text.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Passage text, if stored.
    pub text: Option<String>,
    /// The vector, when it was asked for.
    pub vector: Option<Vec<f32>>,
}

/// A batch of passage vectors in ascending id order, as read by
/// [`VectorScan`](super::VectorScan): `vectors` holds `ids.len()` rows of `dimension` values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VectorChunk {
    /// Passage ids, ascending.
    pub ids: Vec<PassageId>,
    /// Length of each vector.
    pub dimension: usize,
    /// The vectors, row-major, `ids.len() * dimension` values.
    pub vectors: Vec<f32>,
}

impl VectorChunk {
    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the chunk holds no vectors.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The pairs of id and vector, in order.
    pub fn iter(&self) -> impl Iterator<Item = (PassageId, &[f32])> + '_ {
        // `max(1)` keeps `chunks_exact` from panicking on a zero dimension; an empty chunk has
        // no vectors to yield anyway.
        self.ids
            .iter()
            .copied()
            .zip(self.vectors.chunks_exact(self.dimension.max(1)))
    }
}

/// Where a passage lies in its document's text: characters `start..end`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// A document's metadata and passages, as read by [`DocumentScan`](super::DocumentScan) to
/// evaluate metadata filters and render search hits in memory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentPassages {
    /// Document id.
    pub id: String,
    /// A JSON object, or `Value::Null` for none.
    pub metadata: Value,
    /// Its passage ids, in passage order.
    pub passage_ids: Vec<PassageId>,
    /// Their spans, in the same order.
    pub spans: Vec<Span>,
}
