//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! DTOs' schemas, and served at `GET /openapi.json`.

use std::sync::LazyLock;

use axum::http::{Method, header};
use axum::response::IntoResponse;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::auth;
use super::error::{ErrorResponse, responses};

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
    components(schemas(ErrorResponse)),
    modifiers(&ApiKeySchemes),
    security(("bearer" = []), ("api_key" = []))
)]
struct ApiDoc;

/// The two ways to send an API key.
struct ApiKeySchemes;

impl Modify for ApiKeySchemes {
    fn modify(&self, doc: &mut OpenApiDoc) {
        let when = "Needed on every route but /healthz and /readyz when the server has API \
            keys (VICINITY_API_KEY, VICINITY_READ_ONLY_API_KEY); a read-only key is refused \
            with 403 on routes that change data.";
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(format!("`Authorization: Bearer <key>`. {when}")))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "api-key".to_owned(),
                format!("`api-key: <key>`. {when}"),
            ))),
        );
    }
}

/// The fixed parts of the document; the routes add their paths and schemas.
pub fn base() -> OpenApiDoc {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

/// The complete document.
pub fn document() -> OpenApiDoc {
    let mut doc = super::routes().into_openapi();
    let auth_errors = responses::Auth::responses();
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::PUT, &mut item.put),
            (Method::POST, &mut item.post),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            // The open routes declare an empty security requirement.
            if operation.security.is_some() {
                continue;
            }
            let responses = &mut operation.responses.responses;
            for (status, response) in &auth_errors {
                if status == "401" || auth::is_write(&method, Some(path)) {
                    responses.insert(status.clone(), response.clone());
                }
            }
        }
    }
    doc
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
