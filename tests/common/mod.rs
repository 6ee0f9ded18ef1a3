//! Helpers shared by the HTTP tests: the tiny fixture model behind the real embedding worker,
//! a service over a temporary data directory, requests through the router, and embedder
//! wrappers that count or hold calls to the real worker.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::Value;
use tokenizers::Tokenizer;
use tower::ServiceExt;
use vicinity::api::{self, ApiSettings, AppState};
use vicinity::distance::Metric;
use vicinity::embed::{
    CrossEncoder, CrossEncoderOptions, EmbedResult, Embedder, EmbeddingWorker, EncoderOptions,
    RerankOptions, RerankWorker, Reranker, SentenceEncoder, WorkerOptions,
};
use vicinity::service::{
    CollectionSpec, Hybrid, Include, IndexConfig, IndexType, Query, QueryInput, SearchMode,
    Service, ServiceSettings,
};
use vicinity::store::{Store, StoreOptions};

pub(crate) mod process;
pub(crate) mod reference;

/// The tiny BERT fixture: 32-dimensional, 32 tokens of input.
pub(crate) fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

/// The real embedding worker around a model directory.
pub(crate) fn worker(dir: &Path, options: WorkerOptions) -> Arc<EmbeddingWorker> {
    let encoder = SentenceEncoder::load(dir, &EncoderOptions::default()).expect("model loads");
    Arc::new(EmbeddingWorker::new(encoder, options).expect("worker starts"))
}

/// The tiny model's worker with default options.
pub(crate) fn tiny_worker() -> Arc<EmbeddingWorker> {
    worker(&tiny_dir(), WorkerOptions::default())
}

/// The tiny cross-encoder fixture: random BERT weights with sentence-transformers references.
pub(crate) fn tiny_cross_encoder_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-cross-encoder")
}

/// The tiny cross-encoder behind the real rerank worker.
pub(crate) fn tiny_reranker() -> Arc<dyn Reranker> {
    let ce = CrossEncoder::load(&tiny_cross_encoder_dir(), &CrossEncoderOptions::default())
        .expect("cross-encoder loads");
    Arc::new(RerankWorker::new(ce, RerankOptions::default()).expect("worker starts"))
}

/// Service settings for a data directory; the overlap fits the tiny model's 32 tokens.
pub(crate) fn service_settings(data: &Path) -> ServiceSettings {
    ServiceSettings {
        default_overlap: 4,
        ..ServiceSettings::new(data)
    }
}

/// A service and its router over a data directory.
pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) service: Arc<Service>,
    pub(crate) store: Store,
}

/// An app served by [`api::serve`] on a loopback port, as `vicinity serve` serves it.
pub(crate) struct Listening {
    pub(crate) addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The server; it ends once shutdown has begun and the requests in flight are answered.
    pub(crate) task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Listening {
    /// Serves `app`'s service (default API settings); `grace` bounds the wait for requests in
    /// flight at shutdown.
    pub(crate) async fn start(app: &App, grace: Duration) -> Listening {
        let state = AppState::ready(ApiSettings::default(), app.service.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(
            listener,
            state,
            async move {
                let _ = stopped.await;
            },
            grace,
        ));
        Listening {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Begins the graceful shutdown: no new connections, requests in flight finish.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).expect("the server is running");
        }
    }
}

impl App {
    /// Opens the store and the service in `data` and builds the router.
    pub(crate) async fn open(
        data: &Path,
        embedder: Arc<dyn Embedder>,
        settings: ServiceSettings,
        api: ApiSettings,
    ) -> App {
        let url = format!("sqlite://{}", data.join("vicinity.db").display());
        let store = Store::open(&url, &StoreOptions::default())
            .await
            .expect("store opens");
        let service = Service::open(settings, store.clone(), embedder)
            .await
            .expect("service opens");
        let router = api::router(AppState::ready(api, service.clone()));
        App {
            router,
            service,
            store,
        }
    }

    /// The tiny model's service with default settings, and the tiny cross-encoder as its
    /// reranker.
    pub(crate) async fn tiny_with_reranker(data: &Path) -> App {
        let url = format!("sqlite://{}", data.join("vicinity.db").display());
        let store = Store::open(&url, &StoreOptions::default())
            .await
            .expect("store opens");
        let service = Service::open_with_reranker(
            service_settings(data),
            store.clone(),
            tiny_worker(),
            Some(tiny_reranker()),
        )
        .await
        .expect("service opens");
        let router = api::router(AppState::ready(ApiSettings::default(), service.clone()));
        App {
            router,
            service,
            store,
        }
    }

    /// The tiny model's service with default settings.
    pub(crate) async fn tiny(data: &Path) -> App {
        App::open(
            data,
            tiny_worker(),
            service_settings(data),
            ApiSettings::default(),
        )
        .await
    }

    /// Shuts the service down as the server does, and closes the store.
    pub(crate) async fn close(self) {
        self.service.shutdown().await;
        drop(self.router);
        self.store.close().await;
    }

    /// Sends a JSON request (or none) and returns the status and the JSON body.
    pub(crate) async fn send(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        send(&self.router, method, uri, body).await
    }
}

/// Sends a JSON request through `router`.
pub(crate) async fn send(
    router: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let (status, _, body) = call(router, req.body(body).unwrap()).await;
    (status, body)
}

/// Sends any request through `router`; the body is parsed as JSON (`Null` when empty).
pub(crate) async fn call(router: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "response to a request is not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, headers, body)
}

/// Sends any request through `router`; the body is returned as text, for the responses that
/// are not JSON (`/metrics`).
pub(crate) async fn call_text(
    router: &Router,
    req: Request<Body>,
) -> (StatusCode, HeaderMap, String) {
    let response = router.clone().oneshot(req).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(bytes.to_vec()).expect("the body is UTF-8");
    (status, headers, body)
}

/// Asserts an error response's status and code.
#[track_caller]
pub(crate) fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["error"]["code"], code, "{}", got.1);
    assert!(got.1["error"]["message"].is_string(), "{}", got.1);
}

/// An [`Embedder`] that counts the calls to the real one it wraps.
pub(crate) struct Counting {
    inner: Arc<dyn Embedder>,
    calls: AtomicUsize,
}

impl Counting {
    pub(crate) fn new(inner: Arc<dyn Embedder>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            calls: AtomicUsize::new(0),
        })
    }

    /// Calls to `embed` so far.
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Embedder for Counting {
    async fn embed(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.embed(texts).await
    }
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.inner.tokenizer()
    }
    fn count_tokens(&self, text: &str) -> EmbedResult<usize> {
        self.inner.count_tokens(text)
    }
}

/// An [`Embedder`] that holds each call to the real one it wraps until the test releases it,
/// so that a request can be caught in flight.
pub(crate) struct Gate {
    inner: Arc<dyn Embedder>,
    /// Notified when a call arrives at the gate.
    pub(crate) entered: tokio::sync::Notify,
    release: tokio::sync::Semaphore,
}

impl Gate {
    pub(crate) fn new(inner: Arc<dyn Embedder>) -> Arc<Gate> {
        Arc::new(Gate {
            inner,
            entered: tokio::sync::Notify::new(),
            release: tokio::sync::Semaphore::new(0),
        })
    }

    /// Lets `n` held (or future) calls through.
    pub(crate) fn release(&self, n: usize) {
        self.release.add_permits(n);
    }
}

#[async_trait::async_trait]
impl Embedder for Gate {
    async fn embed(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        self.entered.notify_one();
        self.release
            .acquire()
            .await
            .expect("the gate is never closed")
            .forget();
        self.inner.embed(texts).await
    }
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn max_input_tokens(&self) -> usize {
        self.inner.max_input_tokens()
    }
    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.inner.tokenizer()
    }
    fn count_tokens(&self, text: &str) -> EmbedResult<usize> {
        self.inner.count_tokens(text)
    }
}

/// Where the real all-MiniLM-L6-v2 would be: `VICINITY_MODEL` or the default hub id, looked
/// up in `VICINITY_DATA_DIR` or the repository's `data/` (what `vicinity model fetch` fills).
pub(crate) fn real_model_dir() -> PathBuf {
    use vicinity::embed::fetch;
    let spec = std::env::var("VICINITY_MODEL").unwrap_or_else(|_| fetch::DEFAULT_MODEL.to_owned());
    let data_dir = std::env::var_os("VICINITY_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    fetch::lookup(&spec, &data_dir)
        .map(|model| model.dir)
        .or_else(|| fetch::cache_dir(&data_dir, &spec))
        .unwrap_or_else(|| PathBuf::from(spec))
}

/// A cosine collection of `dim`-wide vectors with the index `kind`.
pub(crate) fn vector_spec(kind: IndexType, dim: usize) -> CollectionSpec {
    CollectionSpec {
        distance: Metric::Cosine,
        index: IndexConfig {
            kind,
            ..Default::default()
        },
        dimension: Some(dim),
        chunking: None,
        lexical: None,
    }
}

/// A dense query for the `k` nearest neighbours of `v`, with the default parameters.
pub(crate) fn vector_query(v: &[f32], k: usize) -> Query {
    Query {
        input: QueryInput::Vector(v.to_vec()),
        k,
        filter: None,
        ef: None,
        nprobe: None,
        oversampling: None,
        exact: false,
        include: Include::default(),
        mmr: None,
        group: None,
        mode: Some(SearchMode::Dense),
        hybrid: Hybrid::default(),
        rerank: None,
    }
}
