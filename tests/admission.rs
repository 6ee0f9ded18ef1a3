//! The admission layer, through the router: every limit refuses a request over it with a 4xx
//! that names the setting, before any text reaches the encoder; bodies must be declared JSON;
//! an empty filter cannot delete a collection; the metrics' method label cannot be inflated.

mod common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use vicinity::api::ApiSettings;
use vicinity::service::{Limits, ServiceSettings};

use common::{App, Counting, assert_error, call, call_text, service_settings, tiny_worker};

const POST: Method = Method::POST;
const PUT: Method = Method::PUT;
const GET: Method = Method::GET;

/// Limits small enough to reach with small requests.
fn small_limits() -> Limits {
    Limits {
        max_text_bytes: 64,
        max_documents: 3,
        max_passages: 6,
        max_metadata_bytes: 100,
        max_k: 20,
        max_ef: 50,
        max_nprobe: 8,
        max_nlist: 16,
        max_batch: 3,
        max_batch_k: 25,
        max_filter_depth: 2,
        max_filter_values: 4,
        max_collections: 3,
    }
}

/// An app over the tiny model whose embedder counts its calls.
async fn counting_app(
    dir: &std::path::Path,
    limits: Limits,
    max_body_bytes: usize,
) -> (App, std::sync::Arc<Counting>) {
    let counting = Counting::new(tiny_worker());
    let settings = ServiceSettings {
        limits,
        ..service_settings(dir)
    };
    let api = ApiSettings {
        max_body_bytes,
        ..ApiSettings::default()
    };
    let app = App::open(dir, counting.clone(), settings, api).await;
    (app, counting)
}

#[track_caller]
fn assert_limit(got: &(StatusCode, Value), status: StatusCode, limit: &str) {
    assert_error(got, status, "limit_exceeded");
    assert_eq!(got.1["error"]["limit"], limit, "{}", got.1);
    let message = got.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(limit),
        "the message names the setting: {message}"
    );
}

fn nested_and(depth: usize) -> Value {
    let mut f = json!({"a": 1});
    for _ in 0..depth {
        f = json!({"$and": [f, {"b": 2}]});
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_limit_is_refused_with_its_name_before_any_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let (app, counting) = counting_app(dir.path(), small_limits(), 64 * 1024).await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    let r = app
        .send(PUT, "/collections/vecs", Some(json!({"dimension": 4})))
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let r = app
        .send(
            POST,
            "/collections/vecs/documents",
            Some(json!({"documents": [{"id": "v", "vector": [1, 0, 0, 0]}]})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let calls_before = counting.calls();

    let long_text = "lighthouse keepers watch the sea at night ".repeat(40);
    let many = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("d{i}"), "text": "a short text"}))
            .collect()
    };
    let query = "/collections/docs/query";
    let batch = "/collections/docs/query/batch";
    let documents = "/collections/docs/documents";
    let s413 = StatusCode::PAYLOAD_TOO_LARGE;
    let s400 = StatusCode::BAD_REQUEST;
    #[rustfmt::skip]
    let cases: Vec<(Method, &str, Value, StatusCode, &str)> = vec![
        (POST, query, json!({"query": "x".repeat(65)}), s413, "max_text_bytes"),
        (POST, "/v1/embeddings", json!({"input": ["ok", "y".repeat(65)]}), s413, "max_text_bytes"),
        (POST, "/embed", json!({"inputs": "y".repeat(65)}), s413, "max_text_bytes"),
        (POST, documents, json!({"documents": many(4)}), s413, "max_documents"),
        (POST, documents, json!({"documents": [{"id": "long", "text": long_text}]}), s413, "max_passages"),
        (POST, documents, json!({"documents": [{"id": "m", "text": "t", "metadata": {"k": "v".repeat(100)}}]}), s413, "max_metadata_bytes"),
        (POST, query, json!({"query": "cat", "k": 21}), s400, "max_k"),
        (POST, query, json!({"query": "cat", "params": {"ef": 51}}), s400, "max_ef"),
        (POST, query, json!({"query": "cat", "params": {"nprobe": 9}}), s400, "max_nprobe"),
        (PUT, "/collections/big", json!({"index": {"type": "hnsw", "ef": 51}}), s400, "max_ef"),
        (PUT, "/collections/big", json!({"index": {"type": "ivf", "nlist": 17}}), s400, "max_nlist"),
        (PUT, "/collections/big", json!({"index": {"type": "ivf", "nprobe": 9}}), s400, "max_nprobe"),
        (POST, batch, json!({"queries": [{"query": "a"}, {"query": "b"}, {"query": "c"}, {"query": "d"}]}), s413, "max_client_batch_size"),
        (POST, "/v1/embeddings", json!({"input": ["a", "b", "c", "d"]}), s413, "max_client_batch_size"),
        (POST, batch, json!({"queries": [{"query": "a", "k": 20}, {"query": "b", "k": 6}]}), s413, "max_batch_k"),
        (POST, query, json!({"query": "cat", "filter": nested_and(3)}), s400, "max_filter_depth"),
        (POST, query, json!({"query": "cat", "filter": {"tag": {"$in": [1, 2, 3, 4, 5]}}}), s400, "max_filter_values"),
        (POST, "/collections/docs/documents/delete", json!({"filter": {"tag": {"$nin": [1, 2, 3, 4, 5]}}}), s400, "max_filter_values"),
        (POST, "/collections/docs/documents/delete", json!({"ids": ["a", "b", "c", "d"]}), s413, "max_documents"),
        (POST, "/collections/docs/documents/get", json!({"ids": ["a", "b", "c", "d"]}), s413, "max_documents"),
        // A text query whose only fault is in a later part of the request: refused all the same,
        // before its text is embedded.
        (POST, batch, json!({"queries": [{"query": "fine"}, {"vector": [1, 0]}]}), s400, ""),
    ];
    for (method, uri, body, status, limit) in cases {
        let r = app.send(method.clone(), uri, Some(body.clone())).await;
        if limit.is_empty() {
            assert_eq!(r.0, status, "{method} {uri} {body}: {}", r.1);
        } else {
            assert_limit(&r, status, limit);
        }
    }
    // Limits whose names are the same at the edges still let what is at the limit through.
    let r = app
        .send(POST, query, Some(json!({"query": "x".repeat(64), "k": 20})))
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(
        counting.calls(),
        calls_before + 1,
        "only the request within every limit reached the encoder"
    );

    // The request body's own limit, enforced before the body is parsed.
    let huge = json!({"query": "x".repeat(70 * 1024)});
    let r = app.send(POST, query, Some(huge)).await;
    assert_error(&r, s413, "payload_too_large");
    assert_eq!(r.1["error"]["limit"], "max_body_bytes");

    // Collections: three exist at most; an identical re-create is still answered.
    let r = app.send(PUT, "/collections/third", None).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let r = app.send(PUT, "/collections/fourth", None).await;
    assert_limit(&r, StatusCode::CONFLICT, "max_collections");
    let r = app.send(PUT, "/collections/third", None).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_query_costs_no_encoder_call() {
    let dir = tempfile::tempdir().unwrap();
    let (app, counting) = counting_app(
        dir.path(),
        Limits::default(),
        ApiSettings::default().max_body_bytes,
    )
    .await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    let query = "/collections/docs/query";
    let bad = [
        json!({"query": "cat", "k": 0}),
        json!({"query": "cat", "k": 100_000}),
        json!({"query": "cat", "params": {"ef": 0}}),
        json!({"query": "cat", "filter": {"$bogus": 1}}),
        json!({"query": "cat", "filter": {"a": {"$in": "x"}}}),
    ];
    for body in bad {
        let r = app.send(POST, query, Some(body.clone())).await;
        assert!(r.0.is_client_error(), "{body}: {}", r.1);
    }
    // The 5 MB query text of the report: refused by size, never tokenized or embedded.
    let r = app
        .send(POST, query, Some(json!({"query": "word ".repeat(1 << 20)})))
        .await;
    assert_limit(&r, StatusCode::PAYLOAD_TOO_LARGE, "max_text_bytes");
    assert_eq!(counting.calls(), 0, "no invalid query reached the encoder");
    app.close().await;
}

/// A request with a raw body and an optional content type.
fn raw(method: Method, uri: &str, content_type: Option<&str>, body: &str) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    req.body(Body::from(body.to_owned())).unwrap()
}

async fn document_count(app: &App, collection: &str) -> u64 {
    let r = app
        .send(GET, &format!("/collections/{collection}"), None)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    r.1["documents"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_cannot_write_or_delete() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    // No body and no content type still creates with the defaults (`curl -X PUT URL`).
    let req = raw(PUT, "/collections/docs", None, "");
    assert_eq!(call(&app.router, req).await.0, StatusCode::CREATED);
    let r = app
        .send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [
                {"id": "a", "text": "alpha", "metadata": {"tag": 1}},
                {"id": "b", "text": "beta", "metadata": {"tag": 2}}
            ]})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);

    // What a cross-site `fetch(..., {mode: "no-cors"})` or a form can send without a CORS
    // preflight: an untyped body, text/plain, a form type. Each is refused and changes nothing.
    let delete = "/collections/docs/documents/delete";
    let upsert = "/collections/docs/documents";
    let attacks = [
        (delete, None, r#"{"filter": {"tag": 1}}"#),
        (delete, Some("text/plain"), r#"{"ids": ["a", "b"]}"#),
        (delete, Some("text/plain;charset=UTF-8"), r#"{"all": true}"#),
        (
            delete,
            Some("multipart/form-data; boundary=x"),
            r#"{"all": true}"#,
        ),
        (
            upsert,
            None,
            r#"{"documents": [{"id": "c", "text": "gamma"}]}"#,
        ),
        (
            upsert,
            Some("application/x-www-form-urlencoded"),
            "documents=1",
        ),
    ];
    for (uri, ct, body) in attacks {
        let (status, _, got) = call(&app.router, raw(POST, uri, ct, body)).await;
        assert_error(
            &(status, got),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
    assert_eq!(document_count(&app, "docs").await, 2, "nothing changed");

    // An empty filter would match every document: refused, unless "all" is asked for.
    for filter in [json!({}), json!({"filter": {}})] {
        let r = app.send(POST, delete, Some(filter)).await;
        assert!(r.0 == StatusCode::BAD_REQUEST, "{}", r.1);
    }
    let r = app.send(POST, delete, Some(json!({"filter": {}}))).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "empty_filter");
    assert!(r.1["error"]["message"].as_str().unwrap().contains("all"));
    let r = app
        .send(POST, delete, Some(json!({"filter": {}, "all": true})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(document_count(&app, "docs").await, 2, "nothing changed");

    let r = app.send(POST, delete, Some(json!({"all": true}))).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let mut deleted: Vec<String> = serde_json::from_value(r.1["deleted"].clone()).unwrap();
    deleted.sort();
    assert_eq!(deleted, ["a", "b"]);
    assert_eq!(document_count(&app, "docs").await, 0);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_label_comes_from_a_fixed_set() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    for i in 0..5 {
        let method = Method::from_bytes(format!("MADEUP{i}").as_bytes()).unwrap();
        let req = Request::builder()
            .method(method)
            .uri("/collections")
            .body(Body::empty())
            .unwrap();
        let (status, _, _) = call(&app.router, req).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let (status, _, text) = call_text(&app.router, req).await;
    assert_eq!(status, StatusCode::OK);
    let methods: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("vicinity_http_requests_total{"))
        .filter_map(|l| l.split("method=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .collect();
    assert!(methods.contains("other"), "{methods:?}");
    assert!(
        !methods.iter().any(|m| m.starts_with("MADEUP")),
        "made-up methods create no series: {methods:?}"
    );
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_states_the_servers_limits() {
    let dir = tempfile::tempdir().unwrap();
    let limits = small_limits();
    let (app, _) = counting_app(dir.path(), limits.clone(), 64 * 1024).await;
    let (status, doc) = app.send(GET, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    let schemas = &doc["components"]["schemas"];
    let prop = |schema: &str, p: &str| schemas[schema]["properties"][p].clone();
    assert_eq!(prop("QueryRequest", "k")["maximum"], limits.max_k);
    assert_eq!(prop("QueryRequest", "k")["minimum"], 1);
    assert_eq!(
        prop("QueryRequest", "query")["maxLength"],
        limits.max_text_bytes
    );
    assert_eq!(prop("QueryParams", "ef")["maximum"], limits.max_ef);
    assert_eq!(prop("QueryParams", "nprobe")["maximum"], limits.max_nprobe);
    assert_eq!(prop("IndexSettings", "nlist")["maximum"], limits.max_nlist);
    assert_eq!(
        prop("BatchQueryRequest", "queries")["maxItems"],
        limits.max_batch
    );
    assert_eq!(
        prop("UpsertRequest", "documents")["maxItems"],
        limits.max_documents
    );
    assert_eq!(
        prop("DeleteDocumentsRequest", "ids")["maxItems"],
        limits.max_documents
    );
    let input = prop("OpenAiEmbeddingsRequest", "input").to_string();
    assert!(
        input.contains(&format!("\"maxItems\":{}", limits.max_batch)),
        "{input}"
    );
    assert!(
        input.contains(&format!("\"maxLength\":{}", limits.max_text_bytes)),
        "{input}"
    );
    let name = doc["paths"]["/collections/{name}"]["put"]["parameters"][0].clone();
    assert_eq!(name["name"], "name");
    assert_eq!(name["schema"]["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    app.close().await;
}
