//! The service over a real TCP socket, with a real HTTP client: the `vicinity serve` binary
//! itself (start, serve, SIGTERM, restart on the same data directory), and the in-process server
//! finishing a write that is in flight when shutdown begins.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vicinity::api::ApiSettings;

use common::process::{Http, ServeProcess};
use common::{App, Gate, Listening, service_settings, tiny_worker};

/// Sends a request with an optional JSON body over the socket; returns the status and JSON.
async fn request(
    http: &Http,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let reply = http.send(addr, method, path, body.as_ref()).await;
    (reply.status, reply.body)
}

/// Starts the binary over `data` with its defaults but the tiny model.
fn start(data: &std::path::Path) -> ServeProcess {
    ServeProcess::start("server", data, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_stops_on_sigterm_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = Http::new();

    let server = start(&data);
    let addr = server.addr;
    assert_eq!(
        request(&http, addr, Method::GET, "/healthz", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        request(&http, addr, Method::GET, "/readyz", None).await.0,
        StatusCode::OK
    );
    let (status, info) = request(&http, addr, Method::GET, "/info", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["dimension"], 32, "{info}");

    let (status, body) = request(
        &http,
        addr,
        Method::PUT,
        "/collections/notes",
        Some(json!({"distance": "cosine"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let docs: Vec<Value> = (0..40)
        .map(|i| {
            json!({
                "id": format!("n{i}"),
                "text": format!("note number {i} about topic {} and colour {}", i % 7, i % 3),
                "metadata": {"i": i, "even": i % 2 == 0},
            })
        })
        .collect();
    let (status, body) = request(
        &http,
        addr,
        Method::POST,
        "/collections/notes/documents",
        Some(json!({ "documents": docs })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["documents"].as_array().unwrap().len(), 40);

    // Concurrent readers over separate connections.
    let queries: Vec<_> = (0..16)
        .map(|i| {
            let http = http.clone();
            async move {
                request(
                    &http,
                    addr,
                    Method::POST,
                    "/collections/notes/query",
                    Some(json!({"query": format!("topic {}", i % 7), "k": 5,
                                "filter": {"even": true}})),
                )
                .await
            }
        })
        .collect();
    let before = futures_util::future::join_all(queries).await;
    for (status, body) in &before {
        assert_eq!(*status, StatusCode::OK, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 5, "{body}");
        assert!(results.iter().all(|r| {
            let n: u32 = r["document_id"].as_str().unwrap()[1..].parse().unwrap();
            n.is_multiple_of(2)
        }));
    }

    let (clean, log) = server.terminate();
    assert!(clean, "the server must exit 0 on SIGTERM; log: {log:#?}");
    assert!(
        log.iter().any(|l| l.contains("\"stopped\"")),
        "the server logs that it stopped: {log:#?}"
    );

    // The same data directory: the collection and its documents come back, and queries answer
    // exactly as before.
    let server = start(&data);
    let addr = server.addr;
    let (status, info) = request(&http, addr, Method::GET, "/collections/notes", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(info["documents"], 40, "{info}");
    for (i, (_, expected)) in before.iter().enumerate() {
        let (status, body) = request(
            &http,
            addr,
            Method::POST,
            "/collections/notes/query",
            Some(json!({"query": format!("topic {}", i % 7), "k": 5,
                        "filter": {"even": true}})),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let ids = |v: &Value| -> Vec<Value> {
            v["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].clone())
                .collect()
        };
        assert_eq!(ids(&body), ids(expected));
    }
    let (clean, _) = server.terminate();
    assert!(clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_write_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let gate = Gate::new(tiny_worker());
    let app = App::open(
        data,
        gate.clone(),
        service_settings(data),
        ApiSettings::default(),
    )
    .await;
    let mut server = Listening::start(&app, Duration::from_secs(30)).await;
    let addr = server.addr;

    let http = Http::new();
    let (status, _) = request(
        &http,
        addr,
        Method::PUT,
        "/collections/c",
        Some(json!({"distance": "cosine"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    let write = tokio::spawn({
        let http = http.clone();
        async move {
            request(
                &http,
                addr,
                Method::POST,
                "/collections/c/documents",
                Some(json!({"documents": [{"id": "late", "text": "written during shutdown"}]})),
            )
            .await
        }
    });
    // The write is inside the service, held before its embedding, when shutdown begins.
    tokio::time::timeout(Duration::from_secs(20), gate.entered.notified())
        .await
        .expect("the write reaches the embedder");
    server.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!server.task.is_finished(), "the server waits for the write");
    gate.release(1000);
    let (status, body) = write.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .expect("the server stops once the write is done")
        .unwrap()
        .unwrap();
    app.close().await;

    // The acknowledged write is durable.
    let app = App::open(
        data,
        tiny_worker(),
        service_settings(data),
        ApiSettings::default(),
    )
    .await;
    let (status, body) = app
        .send(Method::GET, "/collections/c/documents/late", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["text"], "written during shutdown", "{body}");
    app.close().await;
}
