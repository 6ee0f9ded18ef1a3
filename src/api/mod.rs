//! The HTTP edge: the axum router, its middleware, and the server loop with graceful shutdown.
//!
//! This layer knows the service and its own DTOs; it never touches index internals, SQL or the
//! model. [`router`] builds the whole application from an [`AppState`] (tests drive it with
//! `tower::ServiceExt::oneshot`); [`serve`] runs it on a listener until a shutdown signal.
//!
//! Every API response is JSON, errors included (see [`error`]): unknown routes (404), wrong
//! methods (405), bodies over the limit (413), the request timeout (503) and panics (500) go
//! through [`ApiError`](error::ApiError) like the service's own errors. Each request gets an
//! `x-request-id` (the client's, or a new UUID), echoed in the response, and a tracing span
//! with its method, path, route, status and latency.
//!
//! When API keys are configured, [`auth`] refuses requests without a valid one (all but the
//! health checks and the playground's static files); [`metrics`] counts and times every
//! request, refused ones included, and serves `/metrics`. [`ui`] serves the search playground
//! at `/ui`, a page that is not part of the API (nor of its OpenAPI document) but passes
//! through the same middleware.
//!
//! To extend the router, add routes to [`routes`] and layers in
//! [`router`]; handlers stay thin and call the service.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod auth;
pub mod dto;
pub mod error;
pub mod extract;
pub mod handlers;
pub mod metrics;
pub mod openapi;
pub mod state;
pub mod ui;

pub use error::{ApiError, ApiResult};
pub use state::{ApiSettings, AppState, Ready};

use error::ErrorDetail;
use handlers::{collections, documents, embeddings, health, query};

/// The routes, with their OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::info))
        .routes(routes!(health::cluster))
        .routes(routes!(openapi::openapi_json))
        .routes(routes!(metrics::metrics))
        .routes(routes!(collections::list_collections))
        .routes(routes!(
            collections::create_collection,
            collections::get_collection,
            collections::delete_collection
        ))
        .routes(routes!(documents::upsert_documents))
        .routes(routes!(documents::get_document))
        .routes(routes!(documents::get_documents))
        .routes(routes!(documents::delete_documents))
        .routes(routes!(query::query))
        .routes(routes!(query::query_batch))
        .routes(routes!(embeddings::openai_embeddings))
        .routes(routes!(embeddings::tei_embed))
        .routes(routes!(embeddings::rerank))
}

/// The application: routes, JSON fallbacks for unknown routes and methods, and middleware
/// (request ids, tracing, metrics, panics, API keys, the request timeout, the body limit).
pub fn router(state: AppState) -> Router {
    let settings = state.settings().clone();
    let (router, _) = routes().split_for_parts();
    router
        // Before the layers, so that the page gets the same request ids, tracing and metrics.
        .merge(ui::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // The limit the body extractors enforce; ApiJson turns its rejection into our 413.
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        .layer(middleware::from_fn_with_state(
            settings.request_timeout,
            request_timeout,
        ))
        // Outside the timeout: a refused request costs no timer.
        .layer(middleware::from_fn_with_state(
            settings.api_keys.clone(),
            auth::require_key,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        // Outside the panic handler, so that a panic is counted as the 500 it becomes.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(log_response)
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves; then marks `state` as draining
/// (`/readyz` answers 503), stops accepting connections, and waits for the requests in flight,
/// at most `drain_timeout`. Returns when the server has stopped.
///
/// The service itself is not shut down here: the caller does that once this returns, when no
/// request can reach it any more.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;

    let app = router(state.clone());
    let listener = listener.tap_io(|tcp| {
        // Small JSON responses must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        state.set_draining();
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = draining_tx.send(());
    };
    let server = axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .into_future();
    tokio::pin!(server);
    let deadline = async move {
        if draining_rx.await.is_ok() {
            tokio::time::sleep(drain_timeout).await;
        } else {
            // The server ended without a shutdown: no deadline.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = &mut server => result,
        () = deadline => {
            tracing::warn!(
                timeout = %humantime::format_duration(drain_timeout),
                "requests still in flight at the shutdown deadline; stopping without them"
            );
            Ok(())
        }
    }
}

async fn route_not_found(uri: Uri) -> ApiError {
    ApiError::RouteNotFound {
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn request_timeout(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit).into_response(),
    }
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    ApiError::Internal(format!("handler panicked: {detail}")).into_response()
}

fn request_span(req: &Request) -> Span {
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
        route = tracing::field::Empty,
        request_id,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    );
    // The route template (`/collections/{name}/query`) groups requests by endpoint; unknown
    // routes have none.
    if let Some(route) = req.extensions().get::<MatchedPath>() {
        span.record("route", route.as_str());
    }
    span
}

/// Records the status and latency on the request's span and logs the request: server errors
/// with their internal detail at ERROR, client errors at INFO, successes at DEBUG.
fn log_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status();
    span.record("status", status.as_u16());
    // Microsecond resolution, as a decimal number of milliseconds.
    span.record("latency_ms", latency.as_micros() as f64 / 1e3);
    if status.is_server_error() {
        let detail = response
            .extensions()
            .get::<ErrorDetail>()
            .map(|d| d.0.as_ref())
            .unwrap_or_default();
        tracing::error!(detail, "request failed");
    } else if status.is_client_error() {
        tracing::info!("request refused");
    } else {
        tracing::debug!("request served");
    }
}
