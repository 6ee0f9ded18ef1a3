//! The service over a real TCP socket, with a real HTTP client: the `vicinity serve` binary
//! itself (start, serve, SIGTERM, restart on the same data directory), and the in-process server
//! finishing a write that is in flight when shutdown begins.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use vicinity::api::ApiSettings;

use common::{App, Gate, Listening, service_settings, tiny_dir, tiny_worker};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request with an optional JSON body over the socket; returns the status and JSON.
async fn request(
    client: &HttpClient,
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    let response = client
        .request(req.body(body).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON body")
    };
    (status, json)
}

/// A running `vicinity serve` process and the address it listens on.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: std::sync::mpsc::Receiver<String>,
}

impl Server {
    /// Starts the binary on an ephemeral port with the tiny model, and waits until it logs
    /// that it is ready (JSON logs carry the bound address).
    fn start(data: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vicinity"))
            .args(["serve", "--addr", "127.0.0.1:0", "--log-format", "json"])
            // The tiny model reads 32 tokens; the default overlap is for real models.
            .args(["--chunk-overlap", "4"])
            .arg("--model")
            .arg(tiny_dir())
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "info")
            .env_remove("VICINITY_MODEL")
            .env_remove("VICINITY_DATABASE_URL")
            .env_remove("VICINITY_ADDR")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let ready = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                break Err("the server never said it was ready".to_owned());
            };
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                break Err(format!("a log line is not JSON: {line}"));
            };
            if entry["fields"]["message"] == "ready" {
                break entry["fields"]["addr"]
                    .as_str()
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                    .ok_or_else(|| format!("the ready line names no address: {line}"));
            }
        };
        match ready {
            Ok(addr) => Server {
                child,
                addr,
                log: rx,
            },
            Err(why) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{why}");
            }
        }
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited with 0, and
    /// the log lines it wrote meanwhile.
    fn terminate(mut self) -> (bool, Vec<String>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                break exit;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (exit.success(), self.log.try_iter().collect())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_stops_on_sigterm_and_restarts_with_its_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let http = client();

    let server = Server::start(&data);
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
    let server = Server::start(&data);
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

    let http = client();
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
