//! Bodies of the query endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::service::fusion::{DEFAULT_FUSION, DEFAULT_RRF_K};
use crate::service::{
    Fusion, Grouping, Hybrid, Include, Leg, Mmr, Plan, Query, QueryHit, QueryInput, QueryResult,
    Rerank, SearchMode,
};

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
    /// Quantized HNSW (`"quantization": "int8"`): candidates rescored on the full-precision
    /// vectors, as a multiple of `k` (1 to 100, default 2); higher recalls more, slower.
    /// Ignored by other indexes.
    #[serde(default)]
    pub oversampling: Option<f32>,
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

/// Reranking of a query's first hits by the server's cross-encoder (`--reranker`).
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankRequest {
    /// How many of the search's first hits the cross-encoder scores (default 50, or `k` when
    /// larger); the `k` best by its score are returned, each with `rerank_score`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub top_n: Option<usize>,
}

/// Hits the cross-encoder scores when a query does not say.
const DEFAULT_TOP_N: usize = 50;

/// What a query's hits are grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    /// The document a passage belongs to.
    Document,
}

/// Which search a query runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ModeName {
    /// Nearest neighbours of the query's embedding (or of `vector`).
    Dense,
    /// BM25 over the passages' text, through the collection's lexical index.
    Lexical,
    /// Both, fused by `fusion`.
    Hybrid,
}

impl From<ModeName> for SearchMode {
    fn from(m: ModeName) -> Self {
        match m {
            ModeName::Dense => SearchMode::Dense,
            ModeName::Lexical => SearchMode::Lexical,
            ModeName::Hybrid => SearchMode::Hybrid,
        }
    }
}

impl From<SearchMode> for ModeName {
    fn from(m: SearchMode) -> Self {
        match m {
            SearchMode::Dense => ModeName::Dense,
            SearchMode::Lexical => ModeName::Lexical,
            SearchMode::Hybrid => ModeName::Hybrid,
        }
    }
}

/// How a hybrid query fuses its legs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionName {
    /// Reciprocal rank fusion: `alpha / (rrf_k + dense rank) + (1 − alpha) / (rrf_k +
    /// lexical rank)`.
    Rrf,
    /// Distribution-based score fusion: each leg's scores normalised by their mean ± 3
    /// standard deviations, weighted by `alpha` and `1 − alpha`, summed.
    Dbsf,
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
    /// `dense`, `lexical` or `hybrid`. Default: `hybrid` for a text query of a text
    /// collection, `dense` for a vector.
    #[serde(default)]
    pub mode: Option<ModeName>,
    /// Hybrid: how the legs are fused (default `dbsf`; `rrf` when only `rrf_k` is given).
    #[serde(default)]
    pub fusion: Option<FusionName>,
    /// Hybrid with `rrf`: the rank constant (default 60).
    #[serde(default)]
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub rrf_k: Option<f32>,
    /// Hybrid: the weight of the dense leg; the lexical leg weighs `1 − alpha` (default 0.5).
    #[serde(default)]
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub alpha: Option<f32>,
    /// Hybrid: candidates each leg returns for fusion (default 50, or twice what the answer
    /// needs when that is more).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub candidates: Option<usize>,
    /// Rerank the first `top_n` hits with the server's cross-encoder. A text query; not with
    /// `mmr` or `group_by`.
    #[serde(default)]
    pub rerank: Option<RerankRequest>,
    /// Answer only once this node holds a collection version (from a write's response),
    /// waiting up to the server's consistency timeout, else 503 `version_not_reached`.
    #[serde(default)]
    pub consistency: Option<ConsistencyRequest>,
}

/// What a query needs the node to have applied before it answers.
#[derive(Clone, Copy, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyRequest {
    /// The collection version (a write's `version`) the answer must include.
    pub min_version: u64,
}

impl QueryRequest {
    /// The version the query asks for, if any.
    pub fn min_version(&self) -> Option<u64> {
        self.consistency.map(|c| c.min_version)
    }
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
        let fusion_given =
            r.fusion.is_some() || r.rrf_k.is_some() || r.alpha.is_some() || r.candidates.is_some();
        if fusion_given && matches!(r.mode, Some(ModeName::Dense | ModeName::Lexical)) {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "fusion, rrf_k, alpha and candidates apply to \"mode\": \"hybrid\"",
            ));
        }
        let fusion = match (r.fusion, r.rrf_k) {
            (Some(FusionName::Dbsf), Some(_)) => {
                return Err(ApiError::bad_request(
                    "invalid_parameter",
                    "rrf_k applies to \"fusion\": \"rrf\"",
                ));
            }
            (Some(FusionName::Dbsf), None) => Fusion::Dbsf,
            // A rank constant alone asks for rank fusion.
            (None, None) => DEFAULT_FUSION,
            (_, k) => Fusion::Rrf {
                k: k.unwrap_or(DEFAULT_RRF_K),
            },
        };
        let hybrid = Hybrid {
            fusion,
            alpha: r.alpha.unwrap_or(Hybrid::default().alpha),
            candidates: r.candidates,
        };
        let rerank = r.rerank.map(|rr| Rerank {
            top_n: rr.top_n.unwrap_or(DEFAULT_TOP_N.max(r.k)),
        });
        Ok(Query {
            rerank,
            mode: r.mode.map(Into::into),
            hybrid,
            input,
            k: r.k,
            filter: r.filter,
            ef: params.ef,
            nprobe: params.nprobe,
            oversampling: params.oversampling,
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
    /// Answer only once this node holds a collection version; applies to every query (as
    /// does the largest `min_version` a query of the batch gives).
    #[serde(default)]
    pub consistency: Option<ConsistencyRequest>,
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
    /// The lexical (BM25) index.
    Lexical,
    /// A hybrid query: its `legs` say which paths ran.
    Hybrid,
}

impl From<Plan> for PlanName {
    fn from(p: Plan) -> Self {
        match p {
            Plan::Hnsw => PlanName::Hnsw,
            Plan::Ivf => PlanName::Ivf,
            Plan::Flat => PlanName::Flat,
            Plan::Lexical => PlanName::Lexical,
            Plan::Hybrid => PlanName::Hybrid,
        }
    }
}

/// One leg of a hybrid query.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct LegResponse {
    /// `dense` or `lexical`.
    pub leg: ModeName,
    /// The path that answered it.
    pub plan: PlanName,
    /// Candidates it returned for fusion.
    pub candidates: usize,
    /// Time it took, in milliseconds.
    pub time_ms: f64,
}

impl From<Leg> for LegResponse {
    fn from(l: Leg) -> Self {
        LegResponse {
            leg: l.leg.into(),
            plan: l.plan.into(),
            candidates: l.candidates,
            time_ms: l.time_ms,
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
    /// Higher is better: the metric's similarity in dense mode, the BM25 score in lexical
    /// mode, the fused score in hybrid mode.
    #[schema(example = 0.83)]
    pub score: f32,
    /// The metric's distance, lower is closer (dense mode only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.17)]
    pub distance: Option<f32>,
    /// The cross-encoder's score of a reranked query (its hits come in this order).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = 0.92)]
    pub rerank_score: Option<f32>,
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
            rerank_score: h.rerank_score,
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
    /// A hybrid query's legs, dense then lexical, each with its path and time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub legs: Vec<LegResponse>,
    /// Time spent in the service, in milliseconds.
    pub time_ms: f64,
    /// The collection version this node answered at: every write up to it is included.
    pub version: u64,
}

impl From<QueryResult> for QueryResponse {
    fn from(r: QueryResult) -> Self {
        QueryResponse {
            results: r.results.into_iter().map(Into::into).collect(),
            plan: r.plan.into(),
            legs: r.legs.into_iter().map(Into::into).collect(),
            time_ms: r.time_ms,
            version: r.version,
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
