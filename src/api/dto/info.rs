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
