//! [`ApiError`], the HTTP layer's one error type, and the only place where status codes are
//! chosen.
//!
//! Every failure a client can see leaves through [`ApiError::into_response`] as
//! `{"error": {"code": "...", "message": "..."}}`: the service's errors, malformed bodies and
//! paths (through the [`ApiJson`](super::extract::ApiJson) and
//! [`ApiPath`](super::extract::ApiPath) extractors), unknown routes and methods, the body limit,
//! the request timeout, the start-up window and panics. `code` is stable and machine-readable;
//! `message` is for people. A 5xx never carries internal detail: the detail rides in the
//! response's extensions ([`ErrorDetail`]) for the request's trace span to log, and the client
//! gets the request id (`x-request-id`) to quote.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::service::{LimitKind, ServiceError};

/// Why a request failed, as the API reports it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The service refused or failed the request.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The request is malformed before it reaches the service: bad JSON, a field of the wrong
    /// type or unknown, fields that exclude each other. `code` is stable.
    #[error("{message}")]
    BadRequest {
        /// Stable error code.
        code: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// The request body is larger than the server accepts.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not declared as JSON.
    #[error(
        "unsupported content type '{content_type}': send JSON with 'Content-Type: application/json'"
    )]
    UnsupportedMediaType {
        /// The content type sent.
        content_type: String,
    },
    /// No route has this path.
    #[error("no route for {path}")]
    RouteNotFound {
        /// The request path.
        path: String,
    },
    /// The path exists, but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// The request carries no API key, or one the server does not know, while keys are
    /// configured.
    #[error("{reason}")]
    Unauthorized {
        /// What is wrong with the credentials, without quoting them.
        reason: &'static str,
    },
    /// The request's API key is read-only and the route changes data.
    #[error("this API key is read-only and {method} {route} changes data: use a read-write key")]
    Forbidden {
        /// The request method.
        method: String,
        /// The route template, or the path where no route matched.
        route: String,
    },
    /// The server is still loading the model or restoring collections.
    #[error("the server is starting: the model or the collections are still loading")]
    NotReady,
    /// The request took longer than the server's request timeout.
    #[error(
        "the request did not complete within the server's timeout of {}; a write may still \
         complete (upserts with explicit ids are safe to retry)",
        humantime::format_duration(*.0)
    )]
    Timeout(Duration),
    /// Our failure outside the service (a handler panicked). Details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// The body of every error response.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// What went wrong.
    pub error: ErrorBody,
}

/// An error's code and message.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `collection_not_found`, `dimension_mismatch`.
    #[schema(example = "collection_not_found")]
    pub code: String,
    /// What went wrong, for a person.
    #[schema(example = "collection 'docs' does not exist")]
    pub message: String,
    /// With `limit_exceeded`: the setting whose limit the request is over, such as
    /// `max_text_bytes` (the server's `--max-text-bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = json!(null), nullable = false)]
    pub limit: Option<&'static str>,
}

/// The internal detail of a 5xx response, kept in the response's extensions for the request
/// log; never sent to the client.
#[derive(Clone, Debug)]
pub struct ErrorDetail(pub Arc<str>);

/// Message sent instead of the detail of a 500.
const INTERNAL_MESSAGE: &str = "internal server error; the server log has the details under \
    this response's x-request-id";

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The status and the stable code of this error: the one mapping from errors to HTTP.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Service(e) => match e {
                ServiceError::InvalidInput { code, .. } => (StatusCode::BAD_REQUEST, code),
                ServiceError::LimitExceeded { limit, .. } => (
                    match limit.kind() {
                        LimitKind::Size => StatusCode::PAYLOAD_TOO_LARGE,
                        LimitKind::Range => StatusCode::BAD_REQUEST,
                        LimitKind::Capacity => StatusCode::CONFLICT,
                    },
                    "limit_exceeded",
                ),
                ServiceError::InvalidName { .. } => {
                    (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name")
                }
                ServiceError::CollectionNotFound(_) => {
                    (StatusCode::NOT_FOUND, "collection_not_found")
                }
                ServiceError::CollectionFailed { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "collection_failed")
                }
                ServiceError::DocumentNotFound { .. } => {
                    (StatusCode::NOT_FOUND, "document_not_found")
                }
                ServiceError::CollectionConflict { .. } => {
                    (StatusCode::CONFLICT, "collection_conflict")
                }
                ServiceError::Overloaded { .. } => (StatusCode::TOO_MANY_REQUESTS, "overloaded"),
                ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                ServiceError::StoreUnavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
                }
                ServiceError::VersionNotReached { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "version_not_reached")
                }
                ServiceError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ApiError::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ApiError::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotReady => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// How long the client should wait before retrying, where that is known.
    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Service(ServiceError::Overloaded { retry_after, .. }) => Some(*retry_after),
            ApiError::Service(
                ServiceError::StoreUnavailable(_) | ServiceError::VersionNotReached { .. },
            ) => Some(Duration::from_secs(1)),
            ApiError::NotReady => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let retry_after = self.retry_after();
        let limit = match &self {
            ApiError::Service(ServiceError::LimitExceeded { limit, .. }) => Some(limit.name()),
            ApiError::PayloadTooLarge { .. } => Some("max_body_bytes"),
            _ => None,
        };
        let detail = self.to_string();
        let message = if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            INTERNAL_MESSAGE.to_owned()
        } else {
            detail.clone()
        };
        let body = ErrorResponse {
            error: ErrorBody {
                code: code.to_owned(),
                message,
                limit,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = retry_after {
            // Whole seconds, rounded up: "Retry-After: 0" would invite a busy loop.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 requires a challenge on every 401.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(ErrorDetail(Arc::from(detail)));
        }
        response
    }
}

/// OpenAPI documentation of the error responses most routes share. Each is an
/// [`ErrorResponse`]; the codes are listed with their status.
pub mod responses {
    use utoipa::IntoResponses;

    use super::ErrorResponse;

    /// Errors any route that takes a JSON body can answer.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum Common {
        /// `malformed_json`, `invalid_request` (a field of the wrong type, missing or unknown:
        /// the message names it), `invalid_path`, or a service code such as `empty_input`,
        /// `dimension_mismatch`, `invalid_vector`, `bad_filter`, `invalid_parameter`, or
        /// `limit_exceeded` (a parameter over a server limit: `limit` names it).
        #[response(status = 400)]
        BadRequest(ErrorResponse),
        /// `payload_too_large` (the body exceeds `max_body_bytes`) or `limit_exceeded` (the
        /// request carries more than a limit allows: `limit` names it).
        #[response(status = 413)]
        PayloadTooLarge(ErrorResponse),
        /// `unsupported_media_type`: a body without a JSON Content-Type.
        #[response(status = 415)]
        UnsupportedMediaType(ErrorResponse),
        /// `overloaded`: the embedding queue or the search slots are full; see `Retry-After`.
        #[response(status = 429)]
        Overloaded(ErrorResponse),
        /// `internal`: the server's own failure; the log has the details under the request id.
        #[response(status = 500)]
        Internal(ErrorResponse),
        /// `not_ready` (still starting; see `Retry-After`), `unavailable` (shutting down),
        /// `timeout` (the request took longer than the server's request timeout),
        /// `store_unavailable` (the database cannot be reached; retry the write after
        /// `Retry-After`) or `collection_failed` (the collection could not be restored at start-up; the message
        /// says why, and deleting it is the one operation it accepts).
        #[response(status = 503)]
        Unavailable(ErrorResponse),
    }

    /// Errors of every route but the health checks when the server has API keys.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum Auth {
        /// `unauthorized`: no API key, or an unknown one; see `WWW-Authenticate`.
        #[response(status = 401)]
        Unauthorized(ErrorResponse),
        /// `forbidden`: a read-only key on a route that changes data.
        #[response(status = 403)]
        Forbidden(ErrorResponse),
    }

    /// Errors of routes under `/collections/{name}`.
    #[derive(IntoResponses)]
    #[allow(dead_code)]
    pub enum Collection {
        /// `collection_not_found`.
        #[response(status = 404)]
        NotFound(ErrorResponse),
        /// `invalid_name`: collection names are 1 to 64 characters from `[A-Za-z0-9_-]`.
        #[response(status = 422)]
        InvalidName(ErrorResponse),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_is_429_with_retry_after_rounded_up() {
        let e = ApiError::from(ServiceError::Overloaded {
            what: "search",
            retry_after: Duration::from_millis(1500),
        });
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }

    #[test]
    fn internal_detail_is_kept_out_of_the_body() {
        let r = ApiError::from(ServiceError::Internal("disk on fire".into())).into_response();
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let detail = r.extensions().get::<ErrorDetail>().unwrap();
        assert!(detail.0.contains("disk on fire"));
    }

    #[test]
    fn service_input_errors_keep_their_code() {
        let e = ApiError::from(ServiceError::invalid("bad_filter", "nope"));
        assert_eq!(e.status_and_code(), (StatusCode::BAD_REQUEST, "bad_filter"));
        let e = ApiError::from(ServiceError::InvalidName { name: "a b".into() });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_name")
        );
    }
}
