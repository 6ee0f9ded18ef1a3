//! The service's domain types: what callers hand in and get back, independent of HTTP.

pub use super::diversify::{Grouping, Mmr};
pub use super::fusion::{Fusion, Hybrid};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::index::hnsw::{MAX_OVERSAMPLING, Quantization};

/// The similarity measure and the index kinds are part of the service's vocabulary: the API
/// names them through the service, never through the layers below it.
pub use crate::distance::Metric;
pub use crate::index::IndexKind;

/// Which index a collection uses. `Auto` scans exactly while the collection is small and builds
/// an HNSW graph once it grows past the exact-search threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexType {
    /// Flat while small, HNSW once large.
    #[default]
    Auto,
    /// Always HNSW.
    Hnsw,
    /// Always IVF-Flat.
    Ivf,
    /// Always an exact scan.
    Flat,
}

impl IndexType {
    /// The approximate index this type builds (for `auto`, once the collection is large).
    pub fn ann_kind(self) -> Option<IndexKind> {
        match self {
            IndexType::Auto | IndexType::Hnsw => Some(IndexKind::Hnsw),
            IndexType::Ivf => Some(IndexKind::Ivf),
            IndexType::Flat => None,
        }
    }
}

/// Index settings of a collection, as given at creation, with defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// Which index.
    #[serde(rename = "type", default)]
    pub kind: IndexType,
    /// HNSW: links per node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// HNSW: candidate list size while building.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// HNSW: default candidate list size while searching. Unset, it grows with the collection
    /// ([`default_ef`](crate::index::hnsw::default_ef): 64 up to 1,000 passages, more per
    /// doubling, at most 256) so that recall holds as it grows; a query's `ef` wins over both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
    /// IVF: number of cells (default about 4·√N at training time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// IVF: default number of cells scanned per query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// HNSW: int8 codes for the traversal, candidates rescored at full precision, or `none`:
    /// full precision throughout. New collections store it ([`DEFAULT_QUANTIZATION`] where the
    /// request does not say); unset in a stored record means `none`.
    ///
    /// [`DEFAULT_QUANTIZATION`]: super::DEFAULT_QUANTIZATION
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<Quantization>,
}

/// How a collection splits long texts into passages, in model tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Chunking {
    /// Largest passage, in tokens (clamped to what the model accepts).
    pub max_tokens: usize,
    /// Tokens shared by neighbouring passages.
    pub overlap: usize,
}

/// Lexical index settings of a text collection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LexicalConfig {
    /// The analyzer's language, an ISO 639-1 code (`en`: English stemming and stop words), or
    /// `none` for no stemming and no stop words (code, identifiers, mixed languages).
    pub language: String,
}

impl Default for LexicalConfig {
    fn default() -> Self {
        LexicalConfig {
            language: "en".into(),
        }
    }
}

/// Settings for a new collection.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionSpec {
    /// The similarity measure.
    pub distance: Metric,
    /// Index settings.
    pub index: IndexConfig,
    /// Vector dimension, for collections that take vectors rather than text. `None` means the
    /// embedding model's dimension.
    pub dimension: Option<usize>,
    /// Passage splitting; `None` takes the defaults.
    pub chunking: Option<Chunking>,
    /// Lexical index settings of a text collection; `None` takes the defaults.
    pub lexical: Option<LexicalConfig>,
}

/// A collection as the service describes it.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionInfo {
    /// Its name.
    pub name: String,
    /// `ready`, or `failed`: it could not be restored at start-up (`error` says why). A failed
    /// collection shows its stored settings where they can be read, and zero documents,
    /// passages and memory; every operation but describe and delete answers
    /// [`ServiceError::CollectionFailed`](super::ServiceError::CollectionFailed).
    pub status: &'static str,
    /// Why a failed collection could not be restored.
    pub error: Option<String>,
    /// The similarity measure.
    pub distance: Metric,
    /// Vector dimension.
    pub dimension: Option<usize>,
    /// `text` (the service embeds documents with `model`) or `vector` (callers send vectors).
    pub source: &'static str,
    /// The embedding model, for text collections.
    pub model: Option<String>,
    /// Index settings.
    pub index: IndexConfig,
    /// Passage splitting.
    pub chunking: Option<Chunking>,
    /// The lexical index of a text collection.
    pub lexical: Option<LexicalState>,
    /// Number of documents.
    pub documents: u64,
    /// Number of passages (indexed vectors).
    pub passages: u64,
    /// What serves queries now and how it is doing.
    pub index_state: IndexState,
    /// Memory held by the collection's vectors and indexes, in bytes.
    pub memory_bytes: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// A text collection's lexical index as the service describes it.
#[derive(Clone, Debug, Serialize)]
pub struct LexicalState {
    /// The analyzer's language.
    pub language: String,
    /// `ready`, or `failed` (a write failed; lexical and hybrid queries are refused until a
    /// restart rebuilds it).
    pub status: &'static str,
    /// Why it failed.
    pub error: Option<String>,
    /// Bytes it takes on disk.
    pub disk_bytes: u64,
}

/// A collection that could not be restored at start-up, for readiness reports.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CollectionFailure {
    /// The collection.
    pub name: String,
    /// Why it could not be restored.
    pub error: String,
}

/// The state of a collection's indexes.
#[derive(Clone, Debug, Serialize)]
pub struct IndexState {
    /// The approximate index in use, if any (`hnsw` or `ivf`).
    pub ann: Option<IndexKind>,
    /// `ready`, `building` (during a first build queries scan exactly; during a rebuild the
    /// live index keeps answering), `scheduled` (the collection has outgrown exact scans and
    /// its first build waits for the encoder to be idle; queries scan exactly meanwhile) or
    /// `none` (exact scan only).
    pub status: &'static str,
    /// Passages stored but not yet in the approximate index (queries scan them exactly).
    pub pending: usize,
    /// Vectors in the approximate index.
    pub indexed: usize,
}

/// One document to upsert.
#[derive(Clone, Debug, Default)]
pub struct DocumentInput {
    /// Its id; generated when absent.
    pub id: Option<String>,
    /// Its text, split into passages and embedded (unless a vector is given).
    pub text: Option<String>,
    /// Its vector: the document is then one passage with this embedding.
    pub vector: Option<Vec<f32>>,
    /// A JSON object of metadata, or `Value::Null`.
    pub metadata: Value,
}

/// What an upsert did to one document.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct UpsertedDocument {
    /// The document id (generated ones included).
    pub id: String,
    /// How many passages it was split into.
    pub passages: usize,
    /// Whether it replaced an existing document.
    pub replaced: bool,
}

/// The outcome of a write, with the collection version it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    /// What the write did.
    pub value: T,
    /// The collection's version after the write: every write to a collection advances it by
    /// one, in commit order.
    pub version: u64,
}

impl<T> Versioned<T> {
    /// `value` at `version`.
    pub fn new(value: T, version: u64) -> Self {
        Versioned { value, version }
    }
}

/// A stored document.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// The id.
    pub id: String,
    /// The text, if it has one.
    pub text: Option<String>,
    /// Its metadata (`null` when none).
    pub metadata: Value,
    /// Number of passages.
    pub passages: u64,
    /// When it was first written (RFC 3339).
    pub created_at: String,
    /// When it was last replaced (RFC 3339).
    pub updated_at: String,
}

/// Which documents an operation applies to.
#[derive(Clone, Debug)]
pub enum Selector {
    /// These ids.
    Ids(Vec<String>),
    /// Those whose metadata matches this filter. An empty filter (`{}`) matches every
    /// document; a delete refuses it, so that a stray `{"filter": {}}` cannot empty a
    /// collection: deleting everything takes [`Selector::All`].
    Filter(Value),
    /// Every document, asked for explicitly.
    All,
}

/// A page of documents.
#[derive(Clone, Debug, Serialize)]
pub struct DocumentPage {
    /// The documents, in id order (or request order for `ids`).
    pub documents: Vec<Document>,
    /// How many documents the selection holds in all.
    pub total: u64,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next_after: Option<String>,
}

/// What a query looks for.
#[derive(Clone, Debug)]
pub enum QueryInput {
    /// Text, embedded with the collection's model.
    Text(String),
    /// A vector of the collection's dimension.
    Vector(Vec<f32>),
}

/// Fields to return with each hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Include {
    /// The passage text.
    pub text: bool,
    /// The document's metadata.
    pub metadata: bool,
    /// The passage's stored vector.
    pub vector: bool,
}

impl Default for Include {
    fn default() -> Self {
        Include {
            text: true,
            metadata: true,
            vector: false,
        }
    }
}

/// A k-nearest-neighbour query.
#[derive(Clone, Debug)]
pub struct Query {
    /// Text or vector.
    pub input: QueryInput,
    /// How many passages to return.
    pub k: usize,
    /// A metadata filter (JSON form, see [`super::filter`]).
    pub filter: Option<Value>,
    /// HNSW candidate list size.
    pub ef: Option<usize>,
    /// IVF cells to scan.
    pub nprobe: Option<usize>,
    /// Quantized HNSW: candidates rescored at full precision, as a multiple of `k`.
    pub oversampling: Option<f32>,
    /// Force an exact scan.
    pub exact: bool,
    /// Fields to return.
    pub include: Include,
    /// Choose the `k` hits by maximal marginal relevance among more candidates.
    pub mmr: Option<Mmr>,
    /// Return the best passages of `k` distinct documents.
    pub group: Option<Grouping>,
    /// Which search runs; `None` for the default ([`SearchMode::default_for`]).
    pub mode: Option<SearchMode>,
    /// How a hybrid query fuses its legs.
    pub hybrid: Hybrid,
    /// Rerank the first hits with the cross-encoder.
    pub rerank: Option<super::rerank::Rerank>,
}

/// Which search a query runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest neighbours of the query's embedding.
    Dense,
    /// BM25 over the passages' text.
    Lexical,
    /// Both, fused.
    Hybrid,
}

impl SearchMode {
    /// The mode of a query that names none: hybrid for a text query of a collection with a
    /// lexical index (it ranks the right passage first more often than either leg alone on
    /// the evaluation set, see BENCHMARKS.md), dense otherwise.
    pub fn default_for(text_query: bool, has_lexical: bool) -> SearchMode {
        if text_query && has_lexical {
            SearchMode::Hybrid
        } else {
            SearchMode::Dense
        }
    }
}

/// One leg of a hybrid query, for the response's account of it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Leg {
    /// `dense` or `lexical`.
    pub leg: SearchMode,
    /// The path that answered it.
    pub plan: Plan,
    /// Candidates it returned for fusion.
    pub candidates: usize,
    /// Time it took, in milliseconds.
    pub time_ms: f64,
}

/// Which search path answered a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plan {
    /// The HNSW graph.
    Hnsw,
    /// The IVF cells.
    Ivf,
    /// An exact scan.
    Flat,
    /// The lexical (BM25) index.
    Lexical,
    /// Both a vector path and the lexical index, fused (the legs say which path).
    Hybrid,
}

impl From<IndexKind> for Plan {
    fn from(k: IndexKind) -> Self {
        match k {
            IndexKind::Hnsw => Plan::Hnsw,
            IndexKind::Ivf => Plan::Ivf,
            IndexKind::Flat => Plan::Flat,
        }
    }
}

/// Where a passage sits in its document.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct PassageSpan {
    /// Position among the document's passages, from 0.
    pub index: usize,
    /// First character (Unicode scalar offset into the document text).
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// One query result.
#[derive(Clone, Debug, Serialize)]
pub struct QueryHit {
    /// The passage id, `"<document id>#<passage index>"`.
    pub id: String,
    /// The document it belongs to.
    pub document_id: String,
    /// Where it sits in the document.
    pub passage: PassageSpan,
    /// Similarity (higher is closer): the metric's for a dense query, BM25 for a lexical
    /// one, the fused score for a hybrid one.
    pub score: f32,
    /// The metric's distance (lower is closer), for a dense query.
    pub distance: Option<f32>,
    /// The cross-encoder's score, for a reranked query (its hits are in this order).
    pub rerank_score: Option<f32>,
    /// The passage text, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The document's metadata, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// The stored vector, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

/// The answer to one query.
#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    /// Hits, best first.
    pub results: Vec<QueryHit>,
    /// Which path answered.
    pub plan: Plan,
    /// The legs of a hybrid query, dense then lexical; empty for the others.
    pub legs: Vec<Leg>,
    /// Time spent in the service, in milliseconds.
    pub time_ms: f64,
    /// The collection version the query answered at: every write up to it was applied.
    pub version: u64,
}

/// What the service runs, for `GET /info`.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceInfo {
    /// vicinity's version.
    pub version: &'static str,
    /// The embedding model's id.
    pub model: String,
    /// Its output dimension.
    pub dimension: usize,
    /// The most tokens it reads from one input.
    pub max_input_tokens: usize,
    /// The cross-encoder's id, when the server runs one.
    pub reranker: Option<String>,
    /// The number format the embedding model computes in, when it runs a model (a fake
    /// embedder does not).
    pub precision: Option<&'static str>,
    /// The matrix kernel it runs on, likewise.
    pub kernel: Option<&'static str>,
}
