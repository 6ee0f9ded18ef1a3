//! `/healthz`, `/readyz`, `/info` and `/openapi.json`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use crate::api::dto::{InfoResponse, StatusResponse};
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

/// Readiness: the model is loaded and the collections restored, and the server is not
/// shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = StatusResponse),
        (status = 503, description = "`not_ready` while starting, `unavailable` while shutting down.", body = ErrorResponse),
    )
)]
pub async fn readyz(
    State(state): State<AppState>,
) -> ApiResult<(StatusCode, Json<StatusResponse>)> {
    if state.is_draining() {
        return Err(ServiceError::Unavailable("the server is shutting down".into()).into());
    }
    if state.service().is_none() {
        return Err(ApiError::NotReady);
    }
    Ok((StatusCode::OK, Json(StatusResponse { status: "ready" })))
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
