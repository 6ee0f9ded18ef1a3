//! The route handlers: thin adapters from HTTP to the service. Each parses its request through
//! the API's extractors, converts DTOs to domain types, calls one service method and converts
//! the answer back; CPU work happens inside the service, off the async workers.

pub mod collections;
pub mod documents;
pub mod embeddings;
pub mod health;
pub mod query;

use super::error::ApiError;
use crate::service::valid_name;

/// A collection name from a path, or 422 `invalid_name` — for every route, so that a name
/// that can never exist says so rather than 404.
pub(crate) fn collection_name(name: String) -> Result<String, ApiError> {
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(crate::service::ServiceError::InvalidName { name }.into())
    }
}
