//! `/healthz`, `/readyz`, `/info` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::dto::{ClusterResponse, InfoResponse, StatusResponse};
use crate::api::error::{ApiError, ApiResult, ErrorResponse};
use crate::api::state::{AppState, Ready};
use crate::service::ServiceError;

/// Liveness: the process is up and serving HTTP (also while it starts).
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    security(()),
    responses((status = 200, description = "Up.", body = StatusResponse))
)]
pub async fn healthz() -> Json<StatusResponse> {
    Json(StatusResponse { status: "ok" })
}

/// A collection that could not be restored at start-up.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FailedCollectionResponse {
    /// Its name.
    #[schema(example = "docs")]
    pub name: String,
    /// Why it could not be restored.
    pub error: String,
}

/// The server is ready.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Collections that could not be restored at start-up, by name; absent when there are
    /// none. They answer 503 `collection_failed` until deleted; the others serve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed_collections: Vec<FailedCollectionResponse>,
}

/// Readiness: the model is loaded and the collections restored, and the server is not
/// shutting down. A collection that could not be restored does not make the server unready
/// (every other collection serves); the body lists it under `failed_collections`.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready; `failed_collections` lists collections that could not be restored.", body = ReadyResponse),
        (status = 503, description = "`not_ready` while starting, `unavailable` while shutting down.", body = ErrorResponse),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<(StatusCode, Json<ReadyResponse>)> {
    if state.is_draining() {
        return Err(ServiceError::Unavailable("the server is shutting down".into()).into());
    }
    let Some(service) = state.service() else {
        return Err(ApiError::NotReady);
    };
    let failed_collections = service
        .failed_collections()
        .into_iter()
        .map(|f| FailedCollectionResponse {
            name: f.name,
            error: f.error,
        })
        .collect();
    Ok((
        StatusCode::OK,
        Json(ReadyResponse {
            status: "ready",
            failed_collections,
        }),
    ))
}

/// What the server runs: version, model, dimension, input limit.
#[utoipa::path(
    get,
    path = "/info",
    tag = "health",
    responses(
        (status = 200, description = "Server information.", body = InfoResponse),
        (status = 503, description = "`not_ready`.", body = ErrorResponse),
    )
)]
pub async fn info(Ready(service): Ready) -> Json<InfoResponse> {
    Json(service.info().into())
}

/// The nodes sharing this server's store: each node's applied version of every collection and
/// its lag, and each collection's version in the store. A server on SQLite is a cluster of one.
#[utoipa::path(
    get,
    path = "/cluster",
    tag = "health",
    responses(
        (status = 200, description = "The nodes and their versions.", body = ClusterResponse),
        (status = 503, description = "`not_ready`, or `store_unavailable`.", body = ErrorResponse),
    )
)]
pub async fn cluster(Ready(service): Ready) -> ApiResult<Json<ClusterResponse>> {
    Ok(Json(service.cluster().await?.into()))
}
