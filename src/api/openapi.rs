//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! DTOs' schemas, and served at `GET /openapi.json`.

use axum::extract::State;
use axum::http::{Method, header};
use axum::response::IntoResponse;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::RefOr;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{ArrayItems, Schema, SchemaType, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoResponses, Modify, Number, OpenApi};

use crate::service::Limits;

use super::auth;
use super::error::{ErrorResponse, responses};
use super::state::AppState;

/// The document's fixed parts: title, description, tags, shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "vicinity",
        description = "Vector similarity search for retrieval-augmented generation: collections \
            of documents split into passages, embedded and indexed; k-nearest-neighbour queries \
            by text or vector with metadata filters; embeddings in OpenAI's and TEI's shapes.\n\n\
            Every response is JSON. Errors are `{\"error\": {\"code\", \"message\"}}` with a \
            stable `code`. Request bodies are JSON and must say so (`Content-Type: \
            application/json`; a body without it is refused with 415) and \
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
        let when = "Needed on every route but /healthz, /readyz and the playground page (/ui) \
            when the server has API \
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

/// The document of a server with these limits: every bound the server enforces on a request
/// is stated in the schema (`maximum`, `maxLength`, `maxItems`, the name pattern), so that
/// clients generated from it, and fuzzers, know what will be refused.
pub fn document_with(limits: &Limits) -> OpenApiDoc {
    let mut doc = document();
    state_limits(&mut doc, limits);
    doc
}

/// The document of a server with these limits and this model, as JSON. On top of
/// [`document_with`], it states the rules between fields that the generated schemas cannot
/// express: which fields exclude each other or one of which is required, texts that must not be
/// empty, the one embedding width the model produces.
pub fn document_json(limits: &Limits, dimension: Option<usize>) -> String {
    let mut doc = serde_json::to_value(document_with(limits))
        .expect("the OpenAPI document serialises. This is a bug.");
    state_field_rules(&mut doc, dimension);
    doc.to_string()
}

fn state_field_rules(doc: &mut serde_json::Value, dimension: Option<usize>) {
    use serde_json::json;
    let schemas = &mut doc["components"]["schemas"];
    let one_of_required = |names: &[&str]| {
        json!(
            names
                .iter()
                .map(|n| json!({"required": [n]}))
                .collect::<Vec<_>>()
        )
    };
    let non_empty_text = json!({"minLength": 1, "pattern": "\\S"});
    fn merge_into(
        schemas: &mut serde_json::Value,
        schema: &str,
        path: &[&str],
        rules: serde_json::Value,
    ) {
        let mut at = &mut schemas[schema];
        for p in path {
            at = &mut at[*p];
        }
        debug_assert!(
            at.is_object(),
            "no {schema}{path:?} in the document. This is a bug."
        );
        if let (Some(at), Some(rules)) = (at.as_object_mut(), rules.as_object()) {
            for (k, v) in rules {
                at.insert(k.clone(), v.clone());
            }
        }
    }
    let mut merge = |schema: &str, path: &[&str], rules: serde_json::Value| {
        merge_into(schemas, schema, path, rules)
    };
    merge(
        "QueryRequest",
        &[],
        json!({"oneOf": one_of_required(&["query", "vector"])}),
    );
    merge(
        "QueryRequest",
        &["properties", "query"],
        non_empty_text.clone(),
    );
    merge(
        "QueryRequest",
        &["properties", "vector"],
        json!({"minItems": 1}),
    );
    merge(
        "QueryRequest",
        &[],
        json!({
            "not": {"required": ["mmr", "group_by"]},
            "dependentRequired": {"group_size": ["group_by"]},
        }),
    );
    merge(
        "DeleteDocumentsRequest",
        &[],
        json!({"oneOf": one_of_required(&["ids", "filter", "all"])}),
    );
    merge(
        "DeleteDocumentsRequest",
        &["properties", "all"],
        json!({"const": true}),
    );
    merge(
        "DeleteDocumentsRequest",
        &["properties", "filter"],
        json!({"minProperties": 1}),
    );
    merge(
        "GetDocumentsRequest",
        &[],
        json!({"not": {"required": ["ids", "filter"]}}),
    );
    merge(
        "DocumentInputBody",
        &[],
        json!({"anyOf": one_of_required(&["text", "vector"])}),
    );
    merge(
        "DocumentInputBody",
        &["properties", "text"],
        non_empty_text.clone(),
    );
    merge(
        "DocumentInputBody",
        &["properties", "vector"],
        json!({"minItems": 1}),
    );
    merge(
        "TeiEmbedRequest",
        &["properties", "truncation_direction"],
        json!({"enum": ["Right", "right"]}),
    );
    // Index parameters apply to their index type only.
    let any_of_required = |names: &[&str]| json!({"anyOf": one_of_required(names)});
    merge(
        "IndexSettings",
        &[],
        json!({"oneOf": [
            {
                "properties": {"type": {"enum": ["auto", "hnsw"]}},
                "not": any_of_required(&["nlist", "nprobe"]),
            },
            {
                "required": ["type"],
                "properties": {"type": {"const": "ivf"}},
                "not": any_of_required(&["m", "ef_construction", "ef", "quantization"]),
            },
            {
                "required": ["type"],
                "properties": {"type": {"const": "flat"}},
                "not": any_of_required(&[
                    "m", "ef_construction", "ef", "nlist", "nprobe", "quantization",
                ]),
            },
        ]}),
    );
    // Embedding inputs are texts, never empty; token ids are refused (the description says
    // so), so they are not among the alternatives.
    let input = &mut schemas["OpenAiEmbeddingsRequest"]["properties"]["input"];
    if let Some(alternatives) = input.get_mut("oneOf").and_then(|a| a.as_array_mut()) {
        alternatives.retain(|alt| {
            alt["type"] == "string" || alt["type"] == "array" && alt["items"]["type"] == "string"
        });
    }
    for (schema, field) in [
        ("OpenAiEmbeddingsRequest", "input"),
        ("TeiEmbedRequest", "inputs"),
    ] {
        let field = &mut schemas[schema]["properties"][field];
        for alt in field["oneOf"].as_array_mut().into_iter().flatten() {
            let text = if alt["type"] == "array" {
                &mut alt["items"]
            } else {
                alt
            };
            text["minLength"] = json!(1);
        }
    }
    if let Some(d) = dimension {
        merge_into(
            schemas,
            "OpenAiEmbeddingsRequest",
            &["properties", "dimensions"],
            json!({"minimum": d, "maximum": d}),
        );
        // Chunking applies to text collections: those without a dimension, or with the
        // model's.
        merge_into(
            schemas,
            "CreateCollectionRequest",
            &[],
            json!({
                "if": {"required": ["dimension"], "properties": {"dimension": {"not": {"const": d}}}},
                "then": {"not": {"required": ["chunking"]}},
            }),
        );
    }
}

/// Bounds on one schema.
#[derive(Clone, Copy, Default)]
struct Bounds {
    minimum: Option<usize>,
    maximum: Option<usize>,
    max_length: Option<usize>,
    min_items: Option<usize>,
    max_items: Option<usize>,
}

/// Applies `b` to a schema: numbers and strings to an object schema, item counts to an array
/// schema (and string lengths to its items), and both to each alternative of a `oneOf`.
fn bound(schema: &mut Schema, b: Bounds) {
    match schema {
        Schema::Object(o) => {
            if b.minimum.is_some() {
                o.minimum = b.minimum.map(Number::UInt);
            }
            if b.maximum.is_some() {
                o.maximum = b.maximum.map(Number::UInt);
            }
            let string = match &o.schema_type {
                SchemaType::Type(t) => *t == Type::String,
                SchemaType::Array(ts) => ts.contains(&Type::String),
                SchemaType::AnyValue => false,
            };
            if string && b.max_length.is_some() {
                o.max_length = b.max_length;
            }
        }
        Schema::Array(a) => {
            if b.max_items.is_some() {
                a.max_items = b.max_items;
            }
            if b.min_items.is_some() {
                a.min_items = b.min_items;
            }
            if let (Some(_), ArrayItems::RefOrSchema(item)) = (b.max_length, &mut a.items)
                && let RefOr::T(item) = item.as_mut()
            {
                bound(
                    item,
                    Bounds {
                        max_length: b.max_length,
                        ..Bounds::default()
                    },
                );
            }
        }
        Schema::OneOf(one) => {
            for item in &mut one.items {
                if let RefOr::T(item) = item {
                    bound(item, b);
                }
            }
        }
        _ => {}
    }
}

fn state_limits(doc: &mut OpenApiDoc, limits: &Limits) {
    let at_most = |max: usize| Bounds {
        minimum: Some(1),
        maximum: Some(max),
        ..Bounds::default()
    };
    let items = |max: usize| Bounds {
        min_items: Some(1),
        max_items: Some(max),
        ..Bounds::default()
    };
    let text = Bounds {
        max_length: Some(limits.max_text_bytes),
        ..Bounds::default()
    };
    let rules: [(&str, &str, Bounds); 20] = [
        ("QueryRequest", "k", at_most(limits.max_k)),
        ("QueryRequest", "group_size", at_most(limits.max_k)),
        ("MmrRequest", "fetch_k", at_most(limits.max_k)),
        ("QueryRequest", "query", text),
        ("QueryParams", "ef", at_most(limits.max_ef)),
        ("QueryParams", "nprobe", at_most(limits.max_nprobe)),
        (
            "QueryParams",
            "oversampling",
            at_most(crate::service::MAX_OVERSAMPLING as usize),
        ),
        ("IndexSettings", "ef", at_most(limits.max_ef)),
        ("IndexSettings", "nprobe", at_most(limits.max_nprobe)),
        ("IndexSettings", "nlist", at_most(limits.max_nlist)),
        (
            "IndexSettings",
            "m",
            Bounds {
                minimum: Some(2),
                ..at_most(128)
            },
        ),
        ("IndexSettings", "ef_construction", at_most(4096)),
        ("CreateCollectionRequest", "dimension", at_most(65_536)),
        ("BatchQueryRequest", "queries", items(limits.max_batch)),
        ("UpsertRequest", "documents", items(limits.max_documents)),
        ("DeleteDocumentsRequest", "ids", items(limits.max_documents)),
        ("GetDocumentsRequest", "ids", items(limits.max_documents)),
        (
            "OpenAiEmbeddingsRequest",
            "input",
            Bounds {
                max_items: Some(limits.max_batch),
                min_items: Some(1),
                ..text
            },
        ),
        (
            "TeiEmbedRequest",
            "inputs",
            Bounds {
                max_items: Some(limits.max_batch),
                min_items: Some(1),
                ..text
            },
        ),
        (
            "GetDocumentsRequest",
            "limit",
            at_most(crate::service::MAX_PAGE as usize),
        ),
    ];
    let Some(components) = doc.components.as_mut() else {
        return;
    };
    for (schema, property, b) in rules {
        let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(schema) else {
            debug_assert!(false, "no schema {schema}. This is a bug.");
            continue;
        };
        match object.properties.get_mut(property) {
            Some(RefOr::T(p)) => bound(p, b),
            _ => debug_assert!(false, "no property {schema}.{property}. This is a bug."),
        }
    }
    // Collection names: what `valid_name` accepts, so that generated names are real ones.
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ];
        for operation in operations.into_iter().flatten() {
            for param in operation.parameters.iter_mut().flatten() {
                let RefOr::T(param) = param else { continue };
                if param.parameter_in != ParameterIn::Path {
                    continue;
                }
                if let Some(RefOr::T(Schema::Object(o))) = param.schema.as_mut() {
                    match param.name.as_str() {
                        "name" => o.pattern = Some(NAME_PATTERN.to_owned()),
                        "id" => {
                            o.min_length = Some(1);
                            o.max_length = Some(crate::service::MAX_ID_BYTES);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

/// The collection names [`valid_name`](crate::service::valid_name) accepts.
const NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// This server's document, with its limits.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "health",
    responses((status = 200, description = "The OpenAPI 3 document of this API, with the limits \
        of this server.", content_type = "application/json"))
)]
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    let limits = state
        .service()
        .map(|s| s.limits().clone())
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi_json(&limits),
    )
}
