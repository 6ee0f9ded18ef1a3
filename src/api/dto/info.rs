//! Bodies of the server information endpoints.

use serde::Serialize;
use utoipa::ToSchema;

use crate::service::ServiceInfo;

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
    /// The cross-encoder that reranks (`--reranker`), or null when the server runs none.
    #[schema(example = "cross-encoder/ms-marco-MiniLM-L6-v2")]
    pub reranker: Option<String>,
    /// The number format the embedding model's dense layers compute in (`--precision`, or
    /// `f32` where this CPU lacks the instructions the requested one needs).
    #[schema(example = "f32")]
    pub precision: Option<String>,
    /// The matrix kernel they run on: `avx512f` or `gemm` (f32), `amx-int8` or `avx512-vnni`
    /// (int8), `avx512-bf16` (bf16).
    #[schema(example = "avx512f")]
    pub kernel: Option<String>,
}

impl From<ServiceInfo> for InfoResponse {
    fn from(i: ServiceInfo) -> Self {
        InfoResponse {
            version: i.version.to_owned(),
            model: i.model,
            dimension: i.dimension,
            max_input_tokens: i.max_input_tokens,
            reranker: i.reranker,
            precision: i.precision.map(str::to_owned),
            kernel: i.kernel.map(str::to_owned),
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

/// The nodes sharing this server's store, and what each has applied.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterResponse {
    /// The id of the node that answered.
    #[schema(example = "node-a")]
    pub node: String,
    /// The store the nodes share: `postgres`, or `sqlite` for a single node.
    #[schema(example = "postgres")]
    pub store: String,
    /// Every registered node, by id; nodes that stopped cleanly leave the list, nodes that
    /// died stay, `alive: false`, until the feed's retention passes.
    pub nodes: Vec<ClusterNodeResponse>,
    /// Every collection with its version in the store, by name.
    pub collections: Vec<ClusterCollectionResponse>,
}

/// A node of the cluster.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterNodeResponse {
    /// Its id.
    pub id: String,
    /// Where its API listens, as it announced.
    pub address: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Whether its last heartbeat is within the node timeout.
    pub alive: bool,
    /// How long ago its last heartbeat was, in milliseconds.
    pub heartbeat_age_ms: u64,
    /// What it has applied of each collection, as of that heartbeat.
    pub collections: Vec<ClusterNodeCollectionResponse>,
}

/// One collection as a node has applied it.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterNodeCollectionResponse {
    /// The collection.
    pub name: String,
    /// The version the node has applied.
    pub applied: u64,
    /// How many versions it is behind the store.
    pub lag: u64,
}

/// A collection's version in the store.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClusterCollectionResponse {
    /// The collection.
    pub name: String,
    /// Its version: the number of writes committed to it.
    pub version: u64,
}

impl From<crate::service::ClusterInfo> for ClusterResponse {
    fn from(c: crate::service::ClusterInfo) -> Self {
        ClusterResponse {
            node: c.node,
            store: c.store.to_owned(),
            nodes: c
                .nodes
                .into_iter()
                .map(|n| ClusterNodeResponse {
                    id: n.id,
                    address: n.address,
                    started_at: n.started_at,
                    alive: n.alive,
                    heartbeat_age_ms: n.heartbeat_age_ms,
                    collections: n
                        .collections
                        .into_iter()
                        .map(|c| ClusterNodeCollectionResponse {
                            name: c.name,
                            applied: c.applied,
                            lag: c.lag,
                        })
                        .collect(),
                })
                .collect(),
            collections: c
                .collections
                .into_iter()
                .map(|c| ClusterCollectionResponse {
                    name: c.name,
                    version: c.version,
                })
                .collect(),
        }
    }
}
