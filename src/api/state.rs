//! The state every handler shares: the service once it is ready, the HTTP limits and keys, the
//! request metrics, and whether the server is draining for shutdown.
//!
//! The server starts answering before the model is loaded and the collections are restored
//! (`/healthz` at once, `/readyz` with 503 until then), so the service is not known when the
//! router is built: it is set once, later, with [`AppState::set_ready`]. Handlers get it through
//! the [`Ready`] extractor, which answers 503 `not_ready` meanwhile.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::service::Service;

use super::auth::ApiKeys;
use super::error::ApiError;
use super::metrics::Metrics;

/// Limits and policies of the HTTP layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    /// Longest a request may take, body upload included; slower ones get 503 `timeout`.
    pub request_timeout: Duration,
    /// Whether the embedding endpoints truncate inputs longer than the model's input limit
    /// (otherwise they refuse them with 400 `input_too_long`). `/embed`'s `truncate` field
    /// overrides it per request.
    pub auto_truncate: bool,
    /// The API keys; none (the default) leaves every route open. Printed redacted.
    pub api_keys: ApiKeys,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            max_body_bytes: 32 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            auto_truncate: false,
            api_keys: ApiKeys::default(),
        }
    }
}

/// What the handlers share: cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    settings: ApiSettings,
    service: OnceLock<Arc<Service>>,
    draining: AtomicBool,
    metrics: Metrics,
    /// The OpenAPI document with the service's limits, rendered on first request once ready.
    openapi: OnceLock<Bytes>,
}

impl AppState {
    /// State of a server that is still starting: every route but the health checks answers
    /// 503 `not_ready` until [`set_ready`](Self::set_ready).
    pub fn starting(settings: ApiSettings) -> Self {
        AppState {
            inner: Arc::new(Shared {
                settings,
                service: OnceLock::new(),
                draining: AtomicBool::new(false),
                metrics: Metrics::new(),
                openapi: OnceLock::new(),
            }),
        }
    }

    /// State of a server whose service is ready.
    pub fn ready(settings: ApiSettings, service: Arc<Service>) -> Self {
        let state = AppState::starting(settings);
        state.set_ready(service);
        state
    }

    /// Makes the service available to the handlers. Only the first call has an effect: a
    /// server serves one service for its whole life.
    pub fn set_ready(&self, service: Arc<Service>) {
        if self.inner.service.set(service).is_err() {
            tracing::warn!("the service was set twice; keeping the first");
        }
    }

    /// The service, once ready.
    pub fn service(&self) -> Option<&Arc<Service>> {
        self.inner.service.get()
    }

    /// The HTTP limits.
    pub fn settings(&self) -> &ApiSettings {
        &self.inner.settings
    }

    /// The OpenAPI document for `limits`, as JSON. Once the service is ready its limits are
    /// fixed, so the document is rendered once; before that it is rendered per request.
    pub(crate) fn openapi_json(&self, limits: &crate::service::Limits) -> Bytes {
        let render = || {
            Bytes::from(
                super::openapi::document_with(limits)
                    .to_json()
                    .expect("the OpenAPI document serialises. This is a bug."),
            )
        };
        if self.service().is_some() {
            self.inner.openapi.get_or_init(render).clone()
        } else {
            render()
        }
    }

    /// The series the HTTP layer records.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Marks the server as shutting down: `/readyz` answers 503 from now on, so that load
    /// balancers stop sending traffic, while requests in flight still complete.
    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::Release);
    }

    /// Whether the server is shutting down.
    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::Acquire)
    }
}

/// Extracts the service, or refuses the request with 503 `not_ready` while the server starts.
///
/// Handlers take it as their first argument, so that a request that arrives too early is told
/// so before its body is read.
#[derive(Clone, Debug)]
pub struct Ready(pub Arc<Service>);

impl FromRequestParts<AppState> for Ready {
    type Rejection = ApiError;

    async fn from_request_parts(
        _parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        state
            .service()
            .cloned()
            .map(Ready)
            .ok_or(ApiError::NotReady)
    }
}
