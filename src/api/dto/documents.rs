//! Bodies of the document endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::service::{Document, DocumentInput, DocumentPage, Selector, UpsertedDocument};

use super::{DocId, filter_schema, metadata_schema};
use crate::api::error::ApiError;

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
    /// The collection version this write produced: a query with
    /// `"consistency": {"min_version": version}`, on any node, sees it.
    pub version: u64,
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

/// Which documents to read: `ids` (in that order, each once, missing ones left out), or a
/// `filter` (in id order), or neither (every document, in id order); a page at a time.
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

/// Which documents to delete: exactly one of `ids`, `filter` and `all`. An empty filter
/// (`{}`) would match every document, so it is refused (400 `empty_filter`): deleting every
/// document takes `"all": true`.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteDocumentsRequest {
    /// These documents (ids that do not exist are ignored).
    #[serde(default)]
    pub ids: Option<Vec<DocId>>,
    /// Documents whose metadata matches (at least one condition).
    #[serde(default)]
    #[schema(schema_with = filter_schema)]
    pub filter: Option<Value>,
    /// Every document of the collection.
    #[serde(default)]
    pub all: bool,
}

impl TryFrom<DeleteDocumentsRequest> for Selector {
    type Error = ApiError;

    fn try_from(r: DeleteDocumentsRequest) -> Result<Selector, ApiError> {
        match (r.ids, r.filter, r.all) {
            (Some(ids), None, false) => Ok(Selector::Ids(ids.into_iter().map(|i| i.0).collect())),
            (None, Some(filter), false) => Ok(Selector::Filter(filter)),
            (None, None, true) => Ok(Selector::All),
            _ => Err(ApiError::bad_request(
                "invalid_request",
                "give exactly one of \"ids\", \"filter\" and \"all\": true",
            )),
        }
    }
}

/// The documents deleted.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeleteDocumentsResponse {
    /// Their ids.
    pub deleted: Vec<String>,
    /// The collection version after this write (unchanged when nothing was deleted).
    pub version: u64,
}
