//! API keys and `/metrics`, through `router()` over the tiny fixture model: which keys open
//! which routes, in both header styles, and the metrics as a Prometheus text-format parser
//! reads them after some traffic.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{Value, json};
use vicinity::api::ApiSettings;
use vicinity::api::auth::{ApiKey, ApiKeys};

use common::{App, call, call_text, service_settings};

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;

const READ_WRITE: &str = "rw-0123456789abcdef";
const SECOND_READ_WRITE: &str = "rw-second-key";
const READ_ONLY: &str = "ro-0123456789abcdef";

/// How a request presents its key.
#[derive(Clone, Copy, Debug)]
enum Credential<'a> {
    None,
    Bearer(&'a str),
    ApiKeyHeader(&'a str),
}

fn request(
    method: Method,
    uri: &str,
    body: Option<Value>,
    credential: Credential,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    req = match credential {
        Credential::None => req,
        Credential::Bearer(key) => req.header(header::AUTHORIZATION, format!("Bearer {key}")),
        Credential::ApiKeyHeader(key) => req.header("api-key", key),
    };
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    req.body(body).unwrap()
}

async fn send(
    app: &App,
    method: Method,
    uri: &str,
    body: Option<Value>,
    credential: Credential<'_>,
) -> (StatusCode, HeaderMap, Value) {
    call(&app.router, request(method, uri, body, credential)).await
}

/// Asserts a 401 or 403 in the API's error shape, and that it quotes no key.
#[track_caller]
fn assert_refused(got: &(StatusCode, HeaderMap, Value), status: StatusCode, code: &str) {
    let (s, headers, body) = got;
    common::assert_error(&(*s, body.clone()), status, code);
    let keys: Vec<&str> = body["error"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(keys.len(), 2, "{body}");
    let text = body.to_string();
    for key in [READ_WRITE, SECOND_READ_WRITE, READ_ONLY, "wrong-key"] {
        assert!(!text.contains(key), "the error quotes a key: {text}");
    }
    if status == StatusCode::UNAUTHORIZED {
        let challenge = headers
            .get(header::WWW_AUTHENTICATE)
            .expect("a 401 carries WWW-Authenticate");
        assert!(
            challenge.to_str().unwrap().starts_with("Bearer"),
            "{challenge:?}"
        );
    }
}

fn keys() -> ApiKeys {
    ApiKeys::new(
        vec![
            ApiKey::new(READ_WRITE).unwrap(),
            ApiKey::new(SECOND_READ_WRITE).unwrap(),
        ],
        vec![ApiKey::new(READ_ONLY).unwrap()],
    )
}

async fn app_with_keys(dir: &std::path::Path) -> App {
    let api = ApiSettings {
        api_keys: keys(),
        ..ApiSettings::default()
    };
    App::open(dir, common::tiny_worker(), service_settings(dir), api).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_open_routes_by_access() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_keys(dir.path()).await;
    use Credential::{ApiKeyHeader, Bearer};

    // Probes need no key.
    for path in ["/healthz", "/readyz"] {
        let r = send(&app, GET, path, None, Credential::None).await;
        assert_eq!(r.0, StatusCode::OK, "{path}: {}", r.2);
    }

    // A write route: create a collection.
    let write = |name: &str| format!("/collections/{name}");
    for credential in [
        Credential::None,
        Bearer(""),
        Bearer("wrong-key"),
        ApiKeyHeader("wrong-key"),
        // A prefix of a real key is not the key.
        Bearer(&READ_WRITE[..READ_WRITE.len() - 1]),
    ] {
        let r = send(&app, PUT, &write("docs"), None, credential).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for credential in [Bearer(READ_ONLY), ApiKeyHeader(READ_ONLY)] {
        let r = send(&app, PUT, &write("docs"), None, credential).await;
        assert_refused(&r, StatusCode::FORBIDDEN, "forbidden");
    }
    let r = send(&app, PUT, &write("docs"), None, Bearer(READ_WRITE)).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.2);
    let r = send(
        &app,
        PUT,
        &write("other"),
        None,
        ApiKeyHeader(SECOND_READ_WRITE),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.2);
    // The scheme's case does not matter.
    let req = Request::builder()
        .method(PUT)
        .uri(write("third"))
        .header(header::AUTHORIZATION, format!("bearer {READ_WRITE}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(&app.router, req).await.0, StatusCode::CREATED);

    // Writes to documents, and their deletion.
    let docs = json!({"documents": [{"id": "a", "text": "the cat sat on the mat"}]});
    let r = send(
        &app,
        POST,
        "/collections/docs/documents",
        Some(docs.clone()),
        ApiKeyHeader(READ_ONLY),
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = send(
        &app,
        POST,
        "/collections/docs/documents",
        Some(docs),
        ApiKeyHeader(READ_WRITE),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    let delete = json!({"ids": ["a"]});
    let r = send(
        &app,
        POST,
        "/collections/docs/documents/delete",
        Some(delete),
        Bearer(READ_ONLY),
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = send(
        &app,
        Method::DELETE,
        &write("other"),
        None,
        Bearer(READ_ONLY),
    )
    .await;
    assert_refused(&r, StatusCode::FORBIDDEN, "forbidden");

    // Read routes, GET and POST.
    let query = json!({"query": "a cat", "k": 1});
    for credential in [
        Credential::None,
        Bearer("wrong-key"),
        ApiKeyHeader("wrong-key"),
    ] {
        let r = send(&app, GET, "/collections", None, credential).await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "unauthorized");
        let r = send(
            &app,
            POST,
            "/collections/docs/query",
            Some(query.clone()),
            credential,
        )
        .await;
        assert_refused(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    for credential in [
        Bearer(READ_ONLY),
        ApiKeyHeader(READ_ONLY),
        Bearer(READ_WRITE),
        ApiKeyHeader(SECOND_READ_WRITE),
    ] {
        let r = send(&app, GET, "/collections", None, credential).await;
        assert_eq!(r.0, StatusCode::OK, "{credential:?}: {}", r.2);
        let r = send(
            &app,
            POST,
            "/collections/docs/query",
            Some(query.clone()),
            credential,
        )
        .await;
        assert_eq!(r.0, StatusCode::OK, "{credential:?}: {}", r.2);
        assert_eq!(r.2["results"][0]["document_id"], "a");
        let r = send(
            &app,
            POST,
            "/v1/embeddings",
            Some(json!({"input": "a cat"})),
            credential,
        )
        .await;
        assert_eq!(r.0, StatusCode::OK, "{credential:?}: {}", r.2);
        // Reranking changes nothing either: past the key check, this server has no reranker.
        let r = send(
            &app,
            POST,
            "/rerank",
            Some(json!({"query": "a cat", "texts": ["a dog"]})),
            credential,
        )
        .await;
        assert_refused(&r, StatusCode::BAD_REQUEST, "reranker_unavailable");
    }

    // Everything else is closed too: server information, the API description, the metrics,
    // and paths no route has (which say nothing about the routes to a stranger).
    for path in ["/info", "/openapi.json", "/metrics", "/no/such/route"] {
        let r = call_text(&app.router, request(GET, path, None, Credential::None)).await;
        assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{path}: {}", r.2);
    }
    for path in ["/info", "/openapi.json", "/metrics"] {
        let r = call_text(&app.router, request(GET, path, None, Bearer(READ_ONLY))).await;
        assert_eq!(r.0, StatusCode::OK, "{path}: {}", r.2);
    }
    let r = call_text(
        &app.router,
        request(GET, "/no/such/route", None, Bearer(READ_ONLY)),
    )
    .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.2);

    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_every_route_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let r = send(&app, PUT, "/collections/docs", None, Credential::None).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.2);
    // A key sent anyway is ignored.
    let r = send(
        &app,
        GET,
        "/collections",
        None,
        Credential::Bearer("anything"),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    let r = call_text(
        &app.router,
        request(GET, "/metrics", None, Credential::None),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_declares_the_key_schemes() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let (status, _, doc) = send(&app, GET, "/openapi.json", None, Credential::None).await;
    assert_eq!(status, StatusCode::OK);
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["type"], "http", "{schemes}");
    assert_eq!(schemes["bearer"]["scheme"], "bearer", "{schemes}");
    assert_eq!(schemes["api_key"]["type"], "apiKey", "{schemes}");
    assert_eq!(schemes["api_key"]["in"], "header", "{schemes}");
    assert_eq!(schemes["api_key"]["name"], "api-key", "{schemes}");
    assert_eq!(doc["security"], json!([{"bearer": []}, {"api_key": []}]));
    // The probes are open; writes may be forbidden, reads only unauthorized.
    let paths = &doc["paths"];
    assert_eq!(paths["/healthz"]["get"]["security"], json!([{}]));
    assert!(paths["/healthz"]["get"]["responses"]["401"].is_null());
    let put = &paths["/collections/{name}"]["put"]["responses"];
    assert!(put["401"].is_object() && put["403"].is_object(), "{put}");
    let query = &paths["/collections/{name}/query"]["post"]["responses"];
    assert!(
        query["401"].is_object() && query["403"].is_null(),
        "{query}"
    );
    assert!(paths["/metrics"]["get"].is_object());
    app.close().await;
}

/// Scrapes `/metrics` with `credential` and parses it.
async fn scrape(app: &App, credential: Credential<'_>) -> Scrape {
    let (status, headers, text) =
        call_text(&app.router, request(GET, "/metrics", None, credential)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let content_type = headers[header::CONTENT_TYPE].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("the metrics parse")
}

/// The samples of a metric whose labels include `labels`.
fn samples<'a>(scrape: &'a Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect()
}

/// The value of the one sample of a counter or gauge with these labels.
#[track_caller]
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, metric, labels);
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    match &found[0].value {
        Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
        other => panic!("{metric} is not a single value: {other:?}"),
    }
}

/// The number of observations of the one histogram with these labels (its `+Inf` bucket).
#[track_caller]
fn histogram_count(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found = samples(scrape, metric, labels);
    assert_eq!(found.len(), 1, "{metric} {labels:?}: {found:?}");
    let Metric::Histogram(buckets) = &found[0].value else {
        panic!("{metric} is not a histogram: {:?}", found[0].value);
    };
    let last = buckets.last().expect("a histogram has buckets");
    assert!(last.less_than.is_infinite(), "{buckets:?}");
    // Cumulative: never decreasing.
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "{buckets:?}"
    );
    last.count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_requests_collections_and_the_embedder() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_keys(dir.path()).await;
    let rw = Credential::Bearer(READ_WRITE);
    let ro = Credential::ApiKeyHeader(READ_ONLY);
    let query_route = [
        ("method", "POST"),
        ("route", "/collections/:name/query"),
        ("status", "200"),
    ];

    let before = scrape(&app, ro).await;
    assert!(samples(&before, "vicinity_http_requests_total", &query_route).is_empty());
    // The queue and batch series exist before any embedding.
    assert_eq!(value(&before, "vicinity_embed_queue_texts", &[]), 0.0);
    assert_eq!(
        histogram_count(&before, "vicinity_embed_batch_size", &[]),
        0.0
    );

    let r = send(&app, PUT, "/collections/docs", None, rw).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.2);
    let long = "the quick brown fox jumps over the lazy dog and runs far away ".repeat(4);
    let docs = json!({"documents": [
        {"id": "a", "text": "the cat sat on the mat"},
        {"id": "b", "text": "a river runs through the valley"},
        {"id": "c", "text": long},
    ]});
    let r = send(&app, POST, "/collections/docs/documents", Some(docs), rw).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    for _ in 0..3 {
        let q = json!({"query": "a cat on a mat", "k": 2});
        let r = send(&app, POST, "/collections/docs/query", Some(q), ro).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.2);
    }
    let missing = json!({"query": "x", "k": 1});
    let r = send(&app, POST, "/collections/nope/query", Some(missing), ro).await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.2);
    let r = send(
        &app,
        POST,
        "/collections/docs/query",
        None,
        Credential::None,
    )
    .await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED, "{}", r.2);
    let (_, _, info) = send(&app, GET, "/collections/docs", None, ro).await;

    let after = scrape(&app, ro).await;
    // Requests, by route template and status; refusals count too.
    assert_eq!(
        value(&after, "vicinity_http_requests_total", &query_route),
        3.0
    );
    let query_404 = [("route", "/collections/:name/query"), ("status", "404")];
    assert_eq!(
        value(&after, "vicinity_http_requests_total", &query_404),
        1.0
    );
    let query_401 = [("route", "/collections/:name/query"), ("status", "401")];
    assert_eq!(
        value(&after, "vicinity_http_requests_total", &query_401),
        1.0
    );
    assert_eq!(
        histogram_count(
            &after,
            "vicinity_http_request_duration_seconds",
            &query_route
        ),
        3.0
    );
    let upserts = [
        ("method", "POST"),
        ("route", "/collections/:name/documents"),
        ("status", "200"),
    ];
    assert_eq!(value(&after, "vicinity_http_requests_total", &upserts), 1.0);
    // The first scrape is counted by the second.
    let metrics_route = [("route", "/metrics"), ("status", "200")];
    assert_eq!(
        value(&after, "vicinity_http_requests_total", &metrics_route),
        1.0
    );
    // Raw paths never become labels.
    assert!(
        after
            .samples
            .iter()
            .all(|s| s.labels.get("route").is_none_or(|r| !r.contains("docs"))),
        "a raw path became a label"
    );

    // Collections, as the service describes them.
    let docs = [("collection", "docs")];
    let passages = info["passages"].as_f64().unwrap();
    assert!(passages >= 3.0, "{info}");
    assert_eq!(
        value(&after, "vicinity_collection_passages", &docs),
        passages
    );
    assert_eq!(value(&after, "vicinity_collection_documents", &docs), 3.0);
    assert_eq!(
        value(&after, "vicinity_collection_index_memory_bytes", &docs),
        info["memory_bytes"].as_f64().unwrap()
    );
    assert!(value(&after, "vicinity_collection_index_memory_bytes", &docs) > 0.0);

    // The embedder: the passages and the queries went through batches.
    assert_eq!(value(&after, "vicinity_embed_queue_texts", &[]), 0.0);
    assert!(samples(&after, "vicinity_embed_queue_requests", &[]).len() == 1);
    let batches = histogram_count(&after, "vicinity_embed_batch_size", &[]);
    assert!(batches > 0.0, "no batch counted");
    assert_eq!(
        histogram_count(&after, "vicinity_embed_batch_tokens", &[]),
        batches
    );
    let texts = value(&after, "vicinity_embed_texts_total", &[]);
    assert!(texts >= passages + 3.0, "{texts} texts embedded");
    let tokens = value(&after, "vicinity_embed_tokens_total", &[]);
    assert!(tokens >= texts * 3.0, "{tokens} tokens for {texts} texts");

    // The passage cache: the first query read its 2 passages from the database, the two
    // repeats found them in memory.
    assert_eq!(
        value(&after, "vicinity_passage_cache_misses_total", &[]),
        2.0
    );
    assert_eq!(value(&after, "vicinity_passage_cache_hits_total", &[]), 4.0);
    assert!(value(&after, "vicinity_passage_cache_bytes", &[]) > 0.0);

    // The search slots: the three queries' searches ran, none is running or was skipped.
    assert_eq!(value(&after, "vicinity_searches_total", &[]), 3.0);
    assert_eq!(value(&after, "vicinity_searches_cancelled_total", &[]), 0.0);
    assert_eq!(value(&after, "vicinity_search_slots_in_use", &[]), 0.0);
    assert!(value(&after, "vicinity_search_slots", &[]) >= 1.0);

    // The process.
    if cfg!(target_os = "linux") {
        let rss = value(&after, "process_resident_memory_bytes", &[]);
        assert!(rss > 1e6, "resident memory {rss}");
    }
    // Every series is documented (a histogram's `_sum` and `_count` under its own name).
    for sample in &after.samples {
        let name = sample.metric.as_str();
        let family = name
            .strip_suffix("_sum")
            .or_else(|| name.strip_suffix("_count"))
            .filter(|base| after.docs.contains_key(*base))
            .unwrap_or(name);
        assert!(after.docs.contains_key(family), "{name} has no HELP");
    }
    app.close().await;
}
