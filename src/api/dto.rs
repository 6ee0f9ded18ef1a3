//! The API's request and response bodies (serde + OpenAPI schemas) and their conversions to and
//! from the service's domain types.
//!
//! Request types deny unknown fields, so that a typo (`"filtr"`, `"metdata"`) is a 400 naming
//! the field rather than an option silently ignored. Document ids may be sent as JSON strings
//! or non-negative integers; an integer is stored, and returned, as its decimal string
//! (`7` and `"7"` are the same document).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::distance::Metric;
use crate::index::IndexKind;
use crate::service::{
    Chunking, CollectionInfo, CollectionSpec, Document, DocumentInput, DocumentPage, Include,
    IndexConfig, IndexType, Plan, Query, QueryHit, QueryInput, QueryResult, Selector, ServiceInfo,
    UpsertedDocument,
};

use super::error::ApiError;

// ---------------------------------------------------------------------------------------------
// Shared pieces

/// A document id: a JSON string, or a non-negative integer taken as its decimal string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DocId(pub String);

impl<'de> Deserialize<'de> for DocId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = DocId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a document id: a string or a non-negative integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DocId, E> {
                Ok(DocId(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<DocId, E> {
                Ok(DocId(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DocId, E> {
                Ok(DocId(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DocId, E> {
                u64::try_from(v)
                    .map(|v| DocId(v.to_string()))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

impl PartialSchema for DocId {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::String))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .description(Some(
                "A document id: a string, or a non-negative integer, which is stored and \
                 returned as its decimal string (7 and \"7\" name the same document).",
            ))
            .examples([Value::from("doc-7"), Value::from(7)])
            .into()
    }
}

impl ToSchema for DocId {}

/// The similarity measure of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Cosine similarity (vectors are normalised); `distance` = 1 − `score`.
    #[default]
    Cosine,
    /// Inner product; `distance` = −`score`.
    Dot,
    /// Euclidean; `score` is the negated squared distance, `distance` the squared distance.
    L2,
}

impl From<Distance> for Metric {
    fn from(d: Distance) -> Metric {
        match d {
            Distance::Cosine => Metric::Cosine,
            Distance::Dot => Metric::Dot,
            Distance::L2 => Metric::L2,
        }
    }
}

impl From<Metric> for Distance {
    fn from(m: Metric) -> Distance {
        match m {
            Metric::Cosine => Distance::Cosine,
            Metric::Dot => Distance::Dot,
            Metric::L2 => Distance::L2,
        }
    }
}

/// Which index a collection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexTypeName {
    /// Exact scans while the collection is small, an HNSW graph once it grows past the
    /// server's exact-search threshold.
    #[default]
    Auto,
    /// Always an HNSW graph.
    Hnsw,
    /// Always IVF-Flat (k-means cells).
    Ivf,
    /// Always an exact scan.
    Flat,
}

impl From<IndexTypeName> for IndexType {
    fn from(t: IndexTypeName) -> IndexType {
        match t {
            IndexTypeName::Auto => IndexType::Auto,
            IndexTypeName::Hnsw => IndexType::Hnsw,
            IndexTypeName::Ivf => IndexType::Ivf,
            IndexTypeName::Flat => IndexType::Flat,
        }
    }
}

impl From<IndexType> for IndexTypeName {
    fn from(t: IndexType) -> IndexTypeName {
        match t {
            IndexType::Auto => IndexTypeName::Auto,
            IndexType::Hnsw => IndexTypeName::Hnsw,
            IndexType::Ivf => IndexTypeName::Ivf,
            IndexType::Flat => IndexTypeName::Flat,
        }
    }
}

/// Index settings. HNSW parameters (`m`, `ef_construction`, `ef`) apply to `auto` and `hnsw`,
/// IVF ones (`nlist`, `nprobe`) to `ivf`; unset ones take defaults, which responses show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// Which index.
    #[serde(rename = "type", default)]
    pub kind: IndexTypeName,
    /// HNSW: links per node (2..=128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// HNSW: candidate list size while building (1..=4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// HNSW: default candidate list size while searching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
    /// IVF: number of cells (default about 4·√N when trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// IVF: default number of cells scanned per query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
}

impl From<IndexSettings> for IndexConfig {
    fn from(s: IndexSettings) -> IndexConfig {
        IndexConfig {
            kind: s.kind.into(),
            m: s.m,
            ef_construction: s.ef_construction,
            ef: s.ef,
            nlist: s.nlist,
            nprobe: s.nprobe,
        }
    }
}

impl From<IndexConfig> for IndexSettings {
    fn from(c: IndexConfig) -> IndexSettings {
        IndexSettings {
            kind: c.kind.into(),
            m: c.m,
            ef_construction: c.ef_construction,
            ef: c.ef,
            nlist: c.nlist,
            nprobe: c.nprobe,
        }
    }
}

/// How texts are split into passages, in the model's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSettings {
    /// Largest passage, special tokens included (at most what the model reads).
    #[schema(example = 256)]
    pub max_tokens: usize,
    /// Tokens neighbouring passages share.
    #[schema(example = 32)]
    pub overlap: usize,
}

impl From<ChunkingSettings> for Chunking {
    fn from(c: ChunkingSettings) -> Chunking {
        Chunking {
            max_tokens: c.max_tokens,
            overlap: c.overlap,
        }
    }
}

impl From<Chunking> for ChunkingSettings {
    fn from(c: Chunking) -> ChunkingSettings {
        ChunkingSettings {
            max_tokens: c.max_tokens,
            overlap: c.overlap,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Service information

/// What the server runs.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct InfoResponse {
    /// vicinity's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The embedding model.
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: String,
    /// Width of its embeddings.
    #[schema(example = 384)]
    pub dimension: usize,
    /// The most tokens it reads from one input; longer texts are split into passages.
    #[schema(example = 256)]
    pub max_input_tokens: usize,
}

impl From<ServiceInfo> for InfoResponse {
    fn from(i: ServiceInfo) -> Self {
        InfoResponse {
            version: i.version.to_owned(),
            model: i.model,
            dimension: i.dimension,
            max_input_tokens: i.max_input_tokens,
        }
    }
}

/// A health check's answer.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StatusResponse {
    /// `ok` (the process is up) or `ready` (the model and the collections are loaded).
    #[schema(example = "ready")]
    pub status: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Collections

/// Settings of a new collection. Every field is optional: `{}` (or no body at all) makes a
/// text collection with cosine distance, the `auto` index and the model's chunking.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCollectionRequest {
    /// The similarity measure (default `cosine`).
    #[serde(default)]
    pub distance: Distance,
    /// Index settings (default `{"type": "auto"}`).
    #[serde(default)]
    pub index: IndexSettings,
    /// The vector dimension. Omit it (or give the model's dimension) for a text collection,
    /// whose documents the server embeds; any other dimension makes a collection that takes
    /// vectors only.
    #[serde(default)]
    pub dimension: Option<usize>,
    /// Passage splitting of a text collection (default: the model's input length, 32 tokens
    /// of overlap).
    #[serde(default)]
    pub chunking: Option<ChunkingSettings>,
}

impl From<CreateCollectionRequest> for CollectionSpec {
    fn from(r: CreateCollectionRequest) -> CollectionSpec {
        CollectionSpec {
            distance: r.distance.into(),
            index: r.index.into(),
            dimension: r.dimension,
            chunking: r.chunking.map(Into::into),
        }
    }
}

/// Where a collection's vectors come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The server embeds the documents' text with `model`.
    Text,
    /// Clients send vectors.
    Vector,
}

/// The approximate index a collection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IndexKindName {
    /// Exact scan.
    Flat,
    /// IVF-Flat.
    Ivf,
    /// HNSW graph.
    Hnsw,
}

impl From<IndexKind> for IndexKindName {
    fn from(k: IndexKind) -> Self {
        match k {
            IndexKind::Flat => IndexKindName::Flat,
            IndexKind::Ivf => IndexKindName::Ivf,
            IndexKind::Hnsw => IndexKindName::Hnsw,
        }
    }
}

/// The state of a collection's indexes.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct IndexStateResponse {
    /// The approximate index in use, if any.
    pub ann: Option<IndexKindName>,
    /// `ready`, `building` (queries scan exactly meanwhile), `scheduled` (the first build waits
    /// for the encoder to be idle; queries scan exactly meanwhile) or `none` (exact scans only).
    #[schema(example = "ready")]
    pub status: String,
    /// Passages stored but not yet in the approximate index (queries scan them exactly).
    pub pending: usize,
    /// Vectors in the approximate index.
    pub indexed: usize,
}

/// Whether a collection serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CollectionStatus {
    /// It serves.
    Ready,
    /// It could not be restored at start-up (`error` says why). It shows its stored settings
    /// where they can be read and zero documents, passages and memory; every other operation
    /// on it answers 503 `collection_failed` until it is deleted.
    Failed,
}

/// A collection.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CollectionResponse {
    /// Its name.
    #[schema(example = "docs")]
    pub name: String,
    /// `ready`, or `failed` when it could not be restored at start-up.
    pub status: CollectionStatus,
    /// Why a `failed` collection could not be restored; absent when it is ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The similarity measure.
    pub distance: Distance,
    /// The vector dimension.
    #[schema(example = 384)]
    pub dimension: Option<usize>,
    /// Where its vectors come from.
    pub source: Source,
    /// The embedding model of a text collection.
    pub model: Option<String>,
    /// Index settings, defaults filled in.
    pub index: IndexSettings,
    /// Passage splitting of a text collection.
    pub chunking: Option<ChunkingSettings>,
    /// Number of documents.
    pub documents: u64,
    /// Number of passages (indexed vectors).
    pub passages: u64,
    /// What serves queries now.
    pub index_state: IndexStateResponse,
    /// Memory held by its vectors and indexes, in bytes.
    pub memory_bytes: u64,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

impl From<CollectionInfo> for CollectionResponse {
    fn from(c: CollectionInfo) -> Self {
        CollectionResponse {
            name: c.name,
            status: if c.status == "failed" {
                CollectionStatus::Failed
            } else {
                CollectionStatus::Ready
            },
            error: c.error,
            distance: c.distance.into(),
            dimension: c.dimension,
            source: if c.source == "vector" {
                Source::Vector
            } else {
                Source::Text
            },
            model: c.model,
            index: c.index.into(),
            chunking: c.chunking.map(Into::into),
            documents: c.documents,
            passages: c.passages,
            index_state: IndexStateResponse {
                ann: c.index_state.ann.map(Into::into),
                status: c.index_state.status.to_owned(),
                pending: c.index_state.pending,
                indexed: c.index_state.indexed,
            },
            memory_bytes: c.memory_bytes,
            created_at: c.created_at,
        }
    }
}

/// Every collection, by name.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CollectionList {
    /// The collections.
    pub collections: Vec<CollectionResponse>,
}

/// A deleted collection.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeleteCollectionResponse {
    /// Its name.
    #[schema(example = "docs")]
    pub deleted: String,
}

// ---------------------------------------------------------------------------------------------
// Documents

/// A metadata object, or a filter: free-form JSON objects in the schema.
fn object_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
        ))
        .description(Some(description))
}

fn metadata_schema() -> ObjectBuilder {
    object_schema(
        "A JSON object of metadata; queries filter on its fields (dotted paths reach nested \
         objects).",
    )
}

fn filter_schema() -> ObjectBuilder {
    object_schema(
        "A metadata filter, Mongo/Chroma style: {\"field\": value} (equality), \
         {\"field\": {\"$eq\"|\"$ne\"|\"$gt\"|\"$gte\"|\"$lt\"|\"$lte\": value}}, \
         {\"field\": {\"$in\"|\"$nin\": [values]}}, {\"$and\": [filters]}, \
         {\"$or\": [filters]}. Dotted paths reach nested fields; numbers compare numerically, \
         strings lexicographically, and values of different types never satisfy an ordering \
         operator.",
    )
}

/// One document to upsert: text (split into passages and embedded), or a vector (one
/// passage; the text, if any, is stored with it), with optional metadata.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentInputBody {
    /// Its id; a UUID is generated when absent. An existing document of that id is replaced.
    #[serde(default)]
    pub id: Option<DocId>,
    /// Its text.
    #[serde(default)]
    #[schema(example = "Lighthouses guide ships past dangerous coasts.")]
    pub text: Option<String>,
    /// Its vector, of the collection's dimension.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Its metadata.
    #[serde(default)]
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Value>,
}

impl From<DocumentInputBody> for DocumentInput {
    fn from(d: DocumentInputBody) -> DocumentInput {
        DocumentInput {
            id: d.id.map(|i| i.0),
            text: d.text,
            vector: d.vector,
            metadata: d.metadata.unwrap_or(Value::Null),
        }
    }
}

/// Documents to upsert.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertRequest {
    /// The documents; ids must be distinct within a request.
    pub documents: Vec<DocumentInputBody>,
}

/// What an upsert did to one document.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UpsertedResponse {
    /// The document id (generated ones included).
    #[schema(example = "doc-7")]
    pub id: String,
    /// How many passages it was split into.
    #[schema(example = 3)]
    pub passages: usize,
    /// Whether it replaced an existing document.
    pub replaced: bool,
}

impl From<UpsertedDocument> for UpsertedResponse {
    fn from(d: UpsertedDocument) -> Self {
        UpsertedResponse {
            id: d.id,
            passages: d.passages,
            replaced: d.replaced,
        }
    }
}

/// The result of an upsert, one entry per document in request order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct UpsertResponse {
    /// The documents.
    pub documents: Vec<UpsertedResponse>,
}

/// A stored document.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DocumentResponse {
    /// Its id.
    #[schema(example = "doc-7")]
    pub id: String,
    /// Its text, if it has one.
    pub text: Option<String>,
    /// Its metadata (`null` when none).
    #[schema(schema_with = metadata_schema)]
    pub metadata: Value,
    /// Number of passages.
    pub passages: u64,
    /// When it was first written (RFC 3339).
    pub created_at: String,
    /// When it was last replaced (RFC 3339).
    pub updated_at: String,
}

impl From<Document> for DocumentResponse {
    fn from(d: Document) -> Self {
        DocumentResponse {
            id: d.id,
            text: d.text,
            metadata: d.metadata,
            passages: d.passages,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// Default page size of `documents/get`.
const DEFAULT_PAGE: u32 = 100;

fn default_page() -> u32 {
    DEFAULT_PAGE
}

/// Which documents to read: `ids` (in that order, missing ones left out), or a `filter` (in id
/// order), or neither (every document, in id order); a page at a time.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GetDocumentsRequest {
    /// These documents.
    #[serde(default)]
    pub ids: Option<Vec<DocId>>,
    /// Documents whose metadata matches.
    #[serde(default)]
    #[schema(schema_with = filter_schema)]
    pub filter: Option<Value>,
    /// Page size, 1 to 1000.
    #[serde(default = "default_page")]
    #[schema(default = 100, minimum = 1, maximum = 1000)]
    pub limit: u32,
    /// The `next_after` of the previous page.
    #[serde(default)]
    pub after: Option<DocId>,
}

impl GetDocumentsRequest {
    /// The selection, or 400 when both `ids` and `filter` are given.
    pub fn selector(&mut self) -> Result<Option<Selector>, ApiError> {
        match (self.ids.take(), self.filter.take()) {
            (Some(_), Some(_)) => Err(ApiError::bad_request(
                "invalid_request",
                "give either \"ids\" or \"filter\", not both",
            )),
            (Some(ids), None) => Ok(Some(Selector::Ids(ids.into_iter().map(|i| i.0).collect()))),
            (None, Some(filter)) => Ok(Some(Selector::Filter(filter))),
            (None, None) => Ok(None),
        }
    }
}

/// A page of documents.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DocumentPageResponse {
    /// The documents.
    pub documents: Vec<DocumentResponse>,
    /// How many documents the selection holds in all.
    pub total: u64,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_after: Option<String>,
}

impl From<DocumentPage> for DocumentPageResponse {
    fn from(p: DocumentPage) -> Self {
        DocumentPageResponse {
            documents: p.documents.into_iter().map(Into::into).collect(),
            total: p.total,
            next_after: p.next_after,
        }
    }
}

/// Which documents to delete: exactly one of `ids` and `filter`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteDocumentsRequest {
    /// These documents (ids that do not exist are ignored).
    #[serde(default)]
    pub ids: Option<Vec<DocId>>,
    /// Documents whose metadata matches.
    #[serde(default)]
    #[schema(schema_with = filter_schema)]
    pub filter: Option<Value>,
}

impl TryFrom<DeleteDocumentsRequest> for Selector {
    type Error = ApiError;

    fn try_from(r: DeleteDocumentsRequest) -> Result<Selector, ApiError> {
        match (r.ids, r.filter) {
            (Some(ids), None) => Ok(Selector::Ids(ids.into_iter().map(|i| i.0).collect())),
            (None, Some(filter)) => Ok(Selector::Filter(filter)),
            _ => Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of \"ids\" and \"filter\"",
            )),
        }
    }
}

/// The documents deleted.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeleteDocumentsResponse {
    /// Their ids.
    pub deleted: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Queries

/// A field a query can return with each hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IncludeField {
    /// The passage's text.
    Text,
    /// The document's metadata.
    Metadata,
    /// The passage's stored vector.
    Vector,
}

/// Search settings of one query.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// HNSW: candidate list size (higher: better recall, slower).
    #[serde(default)]
    pub ef: Option<usize>,
    /// IVF: cells scanned.
    #[serde(default)]
    pub nprobe: Option<usize>,
    /// Scan exactly, whatever the index.
    #[serde(default)]
    pub exact: bool,
}

fn default_k() -> usize {
    10
}

/// A k-nearest-neighbour query: exactly one of `query` (text, embedded with the collection's
/// model) and `vector`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    /// Text to search for.
    #[serde(default)]
    #[schema(example = "How do lighthouses warn ships?")]
    pub query: Option<String>,
    /// A vector to search for, of the collection's dimension.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// How many passages to return (1 to the server's limit). A filtered query returns k
    /// results whenever k passages match.
    #[serde(default = "default_k")]
    #[schema(default = 10, minimum = 1)]
    pub k: usize,
    /// Only passages of documents whose metadata matches.
    #[serde(default)]
    #[schema(schema_with = filter_schema)]
    pub filter: Option<Value>,
    /// Search settings.
    #[serde(default)]
    pub params: Option<QueryParams>,
    /// Fields returned with each hit (default `["text", "metadata"]`).
    #[serde(default)]
    pub include: Option<Vec<IncludeField>>,
}

impl TryFrom<QueryRequest> for Query {
    type Error = ApiError;

    fn try_from(r: QueryRequest) -> Result<Query, ApiError> {
        let input = match (r.query, r.vector) {
            (Some(text), None) => QueryInput::Text(text),
            (None, Some(vector)) => QueryInput::Vector(vector),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "give exactly one of \"query\" (text) and \"vector\"",
                ));
            }
        };
        let include = match r.include {
            None => Include::default(),
            Some(fields) => Include {
                text: fields.contains(&IncludeField::Text),
                metadata: fields.contains(&IncludeField::Metadata),
                vector: fields.contains(&IncludeField::Vector),
            },
        };
        let params = r.params.unwrap_or_default();
        Ok(Query {
            input,
            k: r.k,
            filter: r.filter,
            ef: params.ef,
            nprobe: params.nprobe,
            exact: params.exact,
            include,
        })
    }
}

/// Several queries, answered in order.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchQueryRequest {
    /// The queries.
    pub queries: Vec<QueryRequest>,
}

/// Which search path answered a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlanName {
    /// The HNSW graph.
    Hnsw,
    /// The IVF cells.
    Ivf,
    /// An exact scan.
    Flat,
}

impl From<Plan> for PlanName {
    fn from(p: Plan) -> Self {
        match p {
            Plan::Hnsw => PlanName::Hnsw,
            Plan::Ivf => PlanName::Ivf,
            Plan::Flat => PlanName::Flat,
        }
    }
}

/// Where a passage sits in its document: character (Unicode scalar) offsets, so that
/// `text[start:end]` in Python is the passage.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub struct PassageSpanResponse {
    /// Position among the document's passages, from 0.
    pub index: usize,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
}

/// One hit.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueryHitResponse {
    /// The passage id, `<document id>#<passage index>`.
    #[schema(example = "doc-7#2")]
    pub id: String,
    /// The document.
    #[schema(example = "doc-7")]
    pub document_id: String,
    /// Where the passage sits in the document.
    pub passage: PassageSpanResponse,
    /// Similarity: higher is closer.
    #[schema(example = 0.83)]
    pub score: f32,
    /// The metric's distance: lower is closer.
    #[schema(example = 0.17)]
    pub distance: f32,
    /// The passage text (with `include: ["text"]`, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The document's metadata (with `include: ["metadata"]`, the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = metadata_schema)]
    pub metadata: Option<Value>,
    /// The stored vector (with `include: ["vector"]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
}

impl From<QueryHit> for QueryHitResponse {
    fn from(h: QueryHit) -> Self {
        QueryHitResponse {
            id: h.id,
            document_id: h.document_id,
            passage: PassageSpanResponse {
                index: h.passage.index,
                start: h.passage.start,
                end: h.passage.end,
            },
            score: h.score,
            distance: h.distance,
            text: h.text,
            metadata: h.metadata,
            vector: h.vector,
        }
    }
}

/// The answer to one query.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct QueryResponse {
    /// Hits, best first.
    pub results: Vec<QueryHitResponse>,
    /// Which search path answered.
    pub plan: PlanName,
    /// Time spent in the service, in milliseconds.
    pub time_ms: f64,
}

impl From<QueryResult> for QueryResponse {
    fn from(r: QueryResult) -> Self {
        QueryResponse {
            results: r.results.into_iter().map(Into::into).collect(),
            plan: r.plan.into(),
            time_ms: r.time_ms,
        }
    }
}

/// The answers to a batch, in query order.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct BatchQueryResponse {
    /// One answer per query.
    pub results: Vec<QueryResponse>,
}

// ---------------------------------------------------------------------------------------------
// Embeddings

fn text_input_schema() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
}

fn openai_input_schema() -> OneOfBuilder {
    let tokens = || ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Integer));
    text_input_schema()
        .item(tokens())
        .item(ArrayBuilder::new().items(tokens()))
        .description(Some(
            "A string or an array of strings. Arrays of token ids (what LangChain's \
             OpenAIEmbeddings sends by default) are refused with 400 token_input_unsupported: \
             send text (in LangChain, OpenAIEmbeddings(check_embedding_ctx_length=False)).",
        ))
}

fn tei_input_schema() -> OneOfBuilder {
    text_input_schema().description(Some("A string or an array of strings."))
}

/// The format of the returned embeddings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// Arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes, as OpenAI sends them.
    Base64,
}

/// An embeddings request in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingsRequest {
    /// The text(s) to embed.
    #[schema(schema_with = openai_input_schema)]
    pub input: Value,
    /// Accepted and ignored: the server embeds with the model it has loaded, whose id the
    /// response's `model` reports (so clients written for another model work unchanged).
    #[serde(default)]
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must be the model's dimension if given (the model cannot shorten its embeddings).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored.
    #[serde(default)]
    pub user: Option<String>,
}

/// An embedding as floats or as base64.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// With `encoding_format: float`.
    Float(Vec<f32>),
    /// With `encoding_format: base64`: the little-endian `f32` bytes.
    Base64(String),
}

/// One embedding.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    #[schema(example = "embedding")]
    pub object: &'static str,
    /// Position of its input.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingValue,
}

/// Token counts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiUsage {
    /// Tokens read from the inputs.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// Embeddings in OpenAI's shape.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// One embedding per input, in order.
    pub data: Vec<OpenAiEmbedding>,
    /// The model that made them.
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: String,
    /// Token counts.
    pub usage: OpenAiUsage,
}

/// Which end of a long input `truncate` cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum TruncationDirection {
    /// Keep the beginning (the only direction supported).
    #[default]
    #[serde(alias = "right")]
    Right,
    /// Keep the end: not supported, refused with 400.
    #[serde(alias = "left")]
    Left,
}

fn default_true() -> bool {
    true
}

/// An embedding request in the shape of Hugging Face's text-embeddings-inference.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiEmbedRequest {
    /// The text(s) to embed.
    #[schema(schema_with = tei_input_schema)]
    pub inputs: Value,
    /// Return unit-length vectors (default). With `false` the model's own output is returned,
    /// which for models that end in a Normalize module (all-MiniLM-L6-v2) is unit length
    /// anyway.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Cut inputs longer than the model reads; without it (default: the server's
    /// `--auto-truncate`) they are refused with 400 `input_too_long`.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end `truncate` cuts: `Right` only.
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
}

/// Embeddings in TEI's shape: one array per input, even for a single string.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(example = json!([[0.01, -0.02, 0.03]]))]
pub struct TeiEmbedResponse(pub Vec<Vec<f32>>);

/// The texts of an embedding request's input: a string or an array of strings. Arrays of
/// token ids are refused with a message that says how to send text instead.
pub fn texts_from_input(field: &str, input: Value) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_request", message);
    match input {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => {
            let tokens = items.iter().any(|v| {
                v.is_number() || v.as_array().is_some_and(|a| a.iter().all(Value::is_number))
            });
            if tokens {
                return Err(ApiError::bad_request(
                    "token_input_unsupported",
                    format!(
                        "\"{field}\" holds token ids, but this server tokenizes for its own model \
                         and takes text only: send the strings themselves (with LangChain's \
                         OpenAIEmbeddings, pass check_embedding_ctx_length=False)"
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(invalid(format!(
                        "{field}[{i}]: expected a string, got {}",
                        json_type(&other)
                    ))),
                })
                .collect()
        }
        other => Err(invalid(format!(
            "{field}: expected a string or an array of strings, got {}",
            json_type(&other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn doc_ids_are_strings_or_non_negative_integers() {
        let id = |v: Value| serde_json::from_value::<DocId>(v).map(|d| d.0);
        assert_eq!(id(json!("a")).unwrap(), "a");
        assert_eq!(id(json!(7)).unwrap(), "7");
        assert_eq!(id(json!(u64::MAX)).unwrap(), u64::MAX.to_string());
        assert!(id(json!(-1)).is_err());
        assert!(id(json!(1.5)).is_err());
        assert!(id(json!(null)).is_err());
        assert!(id(json!({"a": 1})).is_err());
    }

    #[test]
    fn embedding_inputs() {
        let texts = |v: Value| texts_from_input("input", v);
        assert_eq!(texts(json!("a")).unwrap(), vec!["a"]);
        assert_eq!(texts(json!(["a", "b"])).unwrap(), vec!["a", "b"]);
        assert!(texts(json!([])).unwrap().is_empty());
        let code = |v: Value| texts(v).unwrap_err().status_and_code().1;
        assert_eq!(code(json!([1, 2, 3])), "token_input_unsupported");
        assert_eq!(code(json!([[1, 2], [3]])), "token_input_unsupported");
        assert_eq!(code(json!(["a", null])), "invalid_request");
        assert_eq!(code(json!(5)), "invalid_request");
    }

    #[test]
    fn query_needs_exactly_one_input() {
        let q = |v: Value| Query::try_from(serde_json::from_value::<QueryRequest>(v).unwrap());
        assert!(q(json!({"query": "x"})).is_ok());
        assert!(q(json!({"vector": [1.0]})).is_ok());
        assert!(q(json!({})).is_err());
        assert!(q(json!({"query": "x", "vector": [1.0]})).is_err());
        let include = q(json!({"query": "x", "include": ["vector"]}))
            .unwrap()
            .include;
        assert_eq!(
            include,
            Include {
                text: false,
                metadata: false,
                vector: true
            }
        );
    }
}
