//! The search playground's routes through `router()`: the page and its assets are open on a
//! server with API keys, with their content types and security headers, while the API stays
//! closed; unknown paths under `/ui` are the API's JSON 404; the metrics label the page's
//! requests with its fixed routes.

mod common;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::json;
use vicinity::api::ApiSettings;
use vicinity::api::auth::{ApiKey, ApiKeys};
use vicinity::api::ui;

use common::{App, call, call_text, service_settings};

const KEY: &str = "rw-playground-key";

async fn app_with_key(dir: &std::path::Path) -> App {
    let api = ApiSettings {
        api_keys: ApiKeys::new(vec![ApiKey::new(KEY).unwrap()], vec![]),
        ..ApiSettings::default()
    };
    App::open(dir, common::tiny_worker(), service_settings(dir), api).await
}

fn get(uri: &str, key: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    req.body(Body::empty()).unwrap()
}

fn header(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> &str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

/// Asserts the headers every playground response carries.
#[track_caller]
fn assert_hardened(path: &str, headers: &HeaderMap) {
    let csp = header(headers, header::CONTENT_SECURITY_POLICY);
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{path}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
    assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
    assert_eq!(
        header(headers, header::X_CONTENT_TYPE_OPTIONS),
        "nosniff",
        "{path}"
    );
    assert!(
        !header(headers, "x-request-id").is_empty(),
        "{path}: the request-id middleware did not run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_are_open_on_a_keyed_server() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_key(dir.path()).await;

    let (status, headers, page) = call_text(&app.router, get("/ui", None)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        header(&headers, header::CONTENT_TYPE),
        "text/html; charset=utf-8"
    );
    assert_hardened("/ui", &headers);
    assert!(page.starts_with("<!doctype html>"), "{page}");

    let want = [
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/style.css", "text/css; charset=utf-8"),
        ("/ui/icon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in want {
        // The page refers to each asset relatively (`ui/app.js`), so that a path prefix works.
        assert!(
            page.contains(&format!("\"{}\"", path.trim_start_matches('/'))),
            "the page does not load {path}"
        );
        let (status, headers, body) = call_text(&app.router, get(path, None)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            content_type,
            "{path}"
        );
        assert_hardened(path, &headers);
        assert!(!body.is_empty(), "{path} is empty");
    }
    let served: Vec<&str> = std::iter::once("/ui")
        .chain(want.iter().map(|(path, _)| *path))
        .collect();
    assert_eq!(served, ui::ROUTES, "every open route is tested");

    // HEAD, as some clients check a page before loading it.
    let req = Request::head("/ui").body(Body::empty()).unwrap();
    let (status, headers, _) = call_text(&app.router, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_hardened("HEAD /ui", &headers);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_stays_closed_without_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_key(dir.path()).await;

    for path in ["/collections", "/info", "/collections/docs", "/metrics"] {
        let (status, headers, body) = call_text(&app.router, get(path, None)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        assert_eq!(header(&headers, header::WWW_AUTHENTICATE), "Bearer");
    }
    let req = Request::post("/collections/docs/query")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(json!({"query": "x"}).to_string()))
        .unwrap();
    let (status, _, body) = call(&app.router, req).await;
    common::assert_error(&(status, body), StatusCode::UNAUTHORIZED, "unauthorized");

    // The page's exemption covers its exact routes, not what lies under them: an unknown path
    // is refused like any other, and a key shows it to be the JSON 404.
    let (status, _, body) = call(&app.router, get("/ui/data.json", None)).await;
    common::assert_error(&(status, body), StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _, body) = call(&app.router, get("/ui/data.json", Some(KEY))).await;
    common::assert_error(&(status, body), StatusCode::NOT_FOUND, "not_found");

    // With the key, the page's calls work.
    let (status, _, body) = call(&app.router, get("/collections", Some(KEY))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_under_ui_are_the_json_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    for path in ["/ui/xyz", "/ui/", "/ui/app.js/x", "/ui/../ui/secret"] {
        let (status, headers, body) = call(&app.router, get(path, None)).await;
        assert_eq!(
            header(&headers, header::CONTENT_TYPE),
            "application/json",
            "{path}"
        );
        common::assert_error(&(status, body), StatusCode::NOT_FOUND, "not_found");
    }
    // The page only answers GET (and HEAD).
    let req = Request::builder()
        .method(Method::POST)
        .uri("/ui")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, body) = call(&app.router, req).await;
    common::assert_error(
        &(status, body),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_the_page_with_its_fixed_routes() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    for path in [
        "/ui",
        "/ui/app.js",
        "/ui/app.js",
        "/ui/nope-1",
        "/ui/nope-2",
    ] {
        call_text(&app.router, get(path, None)).await;
    }
    let (status, _, text) = call_text(&app.router, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("vicinity_http_requests_total{"))
        .collect();
    let count = |route: &str| -> u64 {
        requests
            .iter()
            .filter(|l| l.contains(&format!("route=\"{route}\"")) && l.contains("status=\"200\""))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(count("/ui"), 1, "{requests:#?}");
    assert_eq!(count("/ui/app.js"), 2, "{requests:#?}");
    // Unknown paths share the one `unmatched` label: no client can add series.
    assert!(
        requests.iter().all(|l| !l.contains("nope")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("route=\"unmatched\"") && l.contains("status=\"404\"")),
        "{requests:#?}"
    );
    app.close().await;
}
