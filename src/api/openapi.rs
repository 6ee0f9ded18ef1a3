//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! DTOs' schemas, and served at `GET /openapi.json`.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::OpenApi as OpenApiDoc;

use super::error::ErrorResponse;

/// The document's fixed parts: title, description, tags, shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vicinity",
        description = "Vector similarity search for retrieval-augmented generation: collections \
            of documents split into passages, embedded and indexed; k-nearest-neighbour queries \
            by text or vector with metadata filters; embeddings in OpenAI's and TEI's shapes.\n\n\
            Every response is JSON. Errors are `{\"error\": {\"code\", \"message\"}}` with a \
            stable `code`. Request bodies are JSON (a missing Content-Type is read as JSON) and \
            unknown fields are refused with 400. Document ids are strings or non-negative \
            integers (stored as their decimal string). Each response carries an `x-request-id` \
            header (the client's own, or a generated one)."
    ),
    tags(
        (name = "health", description = "Liveness, readiness and server information."),
        (name = "collections", description = "Collections of documents."),
        (name = "documents", description = "Documents, split into passages."),
        (name = "query", description = "k-nearest-neighbour queries."),
        (name = "embeddings", description = "Raw embeddings, OpenAI- and TEI-shaped."),
    ),
    components(schemas(ErrorResponse))
)]
struct ApiDoc;

/// The fixed parts of the document; the routes add their paths and schemas.
pub fn base() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The complete document.
pub fn document() -> OpenApiDoc {
    super::routes().into_openapi()
}

/// Rendered once, on first request.
static DOCUMENT_JSON: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_json()
        .expect("the OpenAPI document serialises. This is a bug.")
});

/// This document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of this API.", content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT_JSON.as_str(),
    )
}
