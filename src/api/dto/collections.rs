//! Bodies of the collection endpoints.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::service::{CollectionInfo, CollectionSpec, IndexKind, LexicalConfig};

use super::{ChunkingSettings, Distance, IndexSettings};

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
    /// The lexical (BM25) index of a text collection (default `{"language": "en"}`).
    #[serde(default)]
    pub lexical: Option<LexicalSettings>,
}

/// Settings of a text collection's lexical index.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LexicalSettings {
    /// The analyzer's language: an ISO 639-1 code with stemming and stop words (`ar`, `da`,
    /// `de`, `el`, `en`, `es`, `fi`, `fr`, `hu`, `it`, `nl`, `no`, `pt`, `ro`, `ru`, `sv`,
    /// `ta`, `tr`), or `none` for neither (code, mixed languages). Identifiers such as
    /// `HashMap::entry` or `snake_case_names` are indexed whole and by their parts in every
    /// language.
    #[schema(example = "en")]
    pub language: String,
}

/// A text collection's lexical index.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LexicalResponse {
    /// The analyzer's language.
    #[schema(example = "en")]
    pub language: String,
    /// `ready`, or `failed`: a write failed, and lexical and hybrid queries are refused
    /// until a restart rebuilds the index from the stored passages.
    #[schema(example = "ready")]
    pub status: String,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes it takes on disk.
    pub disk_bytes: u64,
}

impl From<CreateCollectionRequest> for CollectionSpec {
    fn from(r: CreateCollectionRequest) -> CollectionSpec {
        CollectionSpec {
            distance: r.distance.into(),
            index: r.index.into(),
            dimension: r.dimension,
            chunking: r.chunking.map(Into::into),
            lexical: r.lexical.map(|l| LexicalConfig {
                language: l.language,
            }),
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
    /// `ready`, `building` (during a first build queries scan exactly; during a rebuild the
    /// live index keeps answering), `scheduled` (the first build waits for the encoder to be
    /// idle; queries scan exactly meanwhile) or `none` (exact scans only).
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
    /// The lexical index of a text collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lexical: Option<LexicalResponse>,
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
            lexical: c.lexical.map(|l| LexicalResponse {
                language: l.language,
                status: l.status.to_owned(),
                error: l.error,
                disk_bytes: l.disk_bytes,
            }),
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
