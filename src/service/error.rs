//! The service's error type: every way a use case can fail, split into the caller's mistakes
//! (each with a stable machine-readable code) and the service's own failures.

use std::time::Duration;

use crate::embed::EmbedError;
use crate::index::IndexError;
use crate::store::StoreError;

use super::chunk::ChunkError;
use super::filter::FilterError;

/// Why a request to the service failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed or asks for something impossible. `code` is a stable,
    /// machine-readable name such as `dimension_mismatch` or `empty_input`.
    #[error("{message}")]
    InvalidInput {
        /// Stable error code.
        code: &'static str,
        /// What is wrong, for a person.
        message: String,
    },
    /// The request is over one of the admission limits ([`Limits`](super::Limits)); the
    /// message names the setting.
    #[error("{message}")]
    LimitExceeded {
        /// Which limit.
        limit: super::limits::Limit,
        /// What is over it, by how much, and how to change it.
        message: String,
    },
    /// A collection name outside `[A-Za-z0-9_-]{1,64}`.
    #[error(
        "invalid collection name '{name}': use 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"
    )]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// No collection of that name.
    #[error("collection '{0}' does not exist")]
    CollectionNotFound(String),
    /// The collection could not be restored at start-up (a corrupt row, unreadable settings,
    /// chunking the model cannot take). It serves nothing until it is deleted, or the cause is
    /// fixed and the server restarted.
    #[error(
        "collection '{name}' could not be restored at start-up and serves nothing until it is \
         deleted or the cause is fixed and the server restarted: {reason}"
    )]
    CollectionFailed {
        /// The collection.
        name: String,
        /// Why it could not be restored.
        reason: String,
    },
    /// No document of that id in the collection.
    #[error("document '{id}' does not exist in collection '{collection}'")]
    DocumentNotFound {
        /// The collection.
        collection: String,
        /// The document id.
        id: String,
    },
    /// A collection exists under that name with other settings.
    #[error("collection '{name}' already exists with other settings: {existing}")]
    CollectionConflict {
        /// The collection.
        name: String,
        /// Its settings, as JSON, so the caller can see the difference.
        existing: String,
    },
    /// Too much work is queued; the caller should retry after `retry_after`.
    #[error("{what} is at capacity; retry shortly")]
    Overloaded {
        /// What is full (the embedding queue, the search slots).
        what: &'static str,
        /// A hint for the Retry-After header.
        retry_after: Duration,
    },
    /// The service is starting or stopping and cannot take the request.
    #[error("{0}")]
    Unavailable(String),
    /// The database cannot be reached (a PostgreSQL server down or restarting, every
    /// connection busy for too long). The write was not acknowledged; retrying it is safe, as
    /// upserts replace by id and deletes of what is gone do nothing.
    #[error("the database is unavailable: {0}")]
    StoreUnavailable(String),
    /// A query asked for a collection version this node has not applied within the wait it
    /// allows (`consistency.min_version`).
    #[error(
        "collection '{collection}' is at version {applied} on this node, not yet {wanted}; \
         retry, or ask another node"
    )]
    VersionNotReached {
        /// The collection.
        collection: String,
        /// The version asked for.
        wanted: u64,
        /// The version applied.
        applied: u64,
    },
    /// Our failure: I/O, a database error, a bug. Details are logged, not sent.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias for the service layer.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// A caller mistake with its code.
    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        ServiceError::InvalidInput {
            code,
            message: message.into(),
        }
    }

    /// The same error with `context` before its message, for an error about one part of a
    /// request (a query of a batch, a document of an upsert).
    pub fn in_context(self, context: &str) -> Self {
        match self {
            ServiceError::InvalidInput { code, message } => ServiceError::InvalidInput {
                code,
                message: format!("{context}: {message}"),
            },
            ServiceError::LimitExceeded { limit, message } => ServiceError::LimitExceeded {
                limit,
                message: format!("{context}: {message}"),
            },
            other => other,
        }
    }

    /// Our own failure, with context for the log.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        ServiceError::Internal(format!("{context}: {err}"))
    }
}

impl From<FilterError> for ServiceError {
    fn from(e: FilterError) -> Self {
        match e.limit {
            Some((limit, _, _)) => ServiceError::LimitExceeded {
                limit,
                message: e.to_string(),
            },
            None => ServiceError::invalid("bad_filter", e.to_string()),
        }
    }
}

impl From<ChunkError> for ServiceError {
    fn from(e: ChunkError) -> Self {
        match e {
            ChunkError::Settings(m) => ServiceError::invalid("invalid_chunking", m),
            ChunkError::Tokenizer(m) => ServiceError::invalid("invalid_text", m),
        }
    }
}

impl From<IndexError> for ServiceError {
    fn from(e: IndexError) -> Self {
        let code = match &e {
            IndexError::DimensionMismatch { .. } | IndexError::BatchShape { .. } => {
                "dimension_mismatch"
            }
            IndexError::NonFinite { .. } | IndexError::ZeroVector { .. } => "invalid_vector",
            IndexError::DuplicateId { .. } => "duplicate_id",
            IndexError::ZeroK | IndexError::InvalidParameter(_) => "invalid_parameter",
            IndexError::Io { .. } | IndexError::Corrupt { .. } => {
                return ServiceError::internal("index", e);
            }
        };
        ServiceError::invalid(code, e.to_string())
    }
}

impl From<EmbedError> for ServiceError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Overloaded { .. } => ServiceError::Overloaded {
                what: "the embedding queue",
                retry_after: Duration::from_secs(1),
            },
            EmbedError::BulkOverloaded { .. } => ServiceError::Overloaded {
                what: "the ingest backlog (passages waiting to be embedded, limited by \
                       --max-bulk-queue / VICINITY_MAX_BULK_QUEUE)",
                retry_after: Duration::from_secs(5),
            },
            EmbedError::InvalidInput(m) => ServiceError::invalid("invalid_text", m),
            EmbedError::Tokenizer(m) => ServiceError::invalid("invalid_text", m),
            EmbedError::WorkerStopped => {
                ServiceError::Unavailable("the embedding model is shutting down".into())
            }
            other => ServiceError::internal("embedding", other),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::DimensionMismatch { expected, got } => ServiceError::invalid(
                "dimension_mismatch",
                format!("vector has dimension {got}, the collection expects {expected}"),
            ),
            StoreError::Invalid(m) => ServiceError::invalid("invalid_request", m),
            StoreError::Database(e) if unreachable(&e) => {
                ServiceError::StoreUnavailable(e.to_string())
            }
            other => ServiceError::internal("storage", other),
        }
    }
}

/// Whether `e` says the database could not be reached, rather than that it refused a
/// statement: the connection failed or broke, or no connection came free in time.
fn unreachable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut
    ) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|code| {
        // PostgreSQL's classes 08 (connection exception) and 57P (operator intervention:
        // the server is shutting down or restarting).
        code.starts_with("08") || code.starts_with("57P")
    }))
}
