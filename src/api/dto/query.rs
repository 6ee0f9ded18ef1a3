//! Bodies of the query endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::service::{Grouping, Include, Mmr, Plan, Query, QueryHit, QueryInput, QueryResult};

use super::{filter_schema, metadata_schema};
use crate::api::error::ApiError;

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

fn default_lambda() -> f32 {
    0.5
}

/// Candidates an MMR query chooses from when it does not say: LangChain's default, or `k`
/// when that is larger.
const DEFAULT_FETCH_K: usize = 20;

/// Maximal marginal relevance (MMR), with LangChain's meaning
/// (`max_marginal_relevance_search`): `fetch_k` nearest passages are found, and `k` of them
/// chosen one at a time, each maximising `lambda · sim(query, p) − (1 − lambda) · max sim(p,
/// chosen)` (cosine similarity of the stored vectors). Hits come in the order chosen, with
/// their usual `score`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MmrRequest {
    /// Relevance against diversity: 1 keeps the nearest-first order, 0 picks for diversity
    /// alone.
    #[serde(default = "default_lambda")]
    #[schema(default = 0.5, minimum = 0.0, maximum = 1.0)]
    pub lambda: f32,
    /// Candidates to choose from, at least `k` (default 20, or `k` when larger).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub fetch_k: Option<usize>,
}

/// What a query's hits are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The document a passage belongs to.
    Document,
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
    /// Choose the `k` hits by maximal marginal relevance, for answers that repeat themselves
    /// less. Not with `group_by`.
    #[serde(default)]
    pub mmr: Option<MmrRequest>,
    /// `"document"`: return the best passages of `k` distinct documents (`group_size` each),
    /// documents ranked by their best passage, so that one long document cannot fill the
    /// answer. Fewer when fewer documents match.
    #[serde(default)]
    pub group_by: Option<GroupBy>,
    /// Passages per document with `group_by` (default 1); `k × group_size` is bounded like
    /// `k`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub group_size: Option<usize>,
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
        let mmr = r.mmr.map(|m| Mmr {
            lambda: m.lambda,
            fetch_k: m.fetch_k.unwrap_or(DEFAULT_FETCH_K.max(r.k)),
        });
        let group = match (r.group_by, r.group_size) {
            (Some(GroupBy::Document), size) => Some(Grouping {
                group_size: size.unwrap_or(1),
            }),
            (None, Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "group_size needs \"group_by\": \"document\"",
                ));
            }
            (None, None) => None,
        };
        Ok(Query {
            input,
            k: r.k,
            filter: r.filter,
            ef: params.ef,
            nprobe: params.nprobe,
            exact: params.exact,
            include,
            mmr,
            group,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
