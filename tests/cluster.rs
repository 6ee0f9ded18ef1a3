//! Several `vicinity serve` processes sharing one PostgreSQL database, over real sockets: a
//! write on one node is read on another with `consistency.min_version`; a node killed with
//! SIGKILL in the middle of an import loses no write it acknowledged, and catches up when it
//! comes back; a node that joins with an empty data directory converges; while PostgreSQL is
//! down, writes are refused with 503 `store_unavailable` while queries are still answered from
//! memory, and the nodes recover by themselves once it is back; `GET /cluster` shows every node's progress.
//!
//! Every test needs PostgreSQL (see `vicinity::testing::postgres`) and returns at once without
//! it. The outage test stops a server of its own, never the one the other tests share. Answers
//! are compared across nodes on a flat index with exact scans, so that they are deterministic.

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};
use tokio::sync::{oneshot, watch};
use vicinity::testing::postgres::{self, PrivateServer};
use vicinity::testing::random_vectors;

use common::process::{Http, Reply, ServeProcess};

/// Dimension of the test vectors: not the tiny model's 32, so that the collection takes vectors.
const DIM: usize = 8;
/// The collection every test writes.
const COLLECTION: &str = "c";
/// Documents per upsert.
const BATCH: usize = 50;
/// Queries whose answers are compared across nodes.
const QUERIES: usize = 100;
/// How long a wait for the cluster to reach a state may last before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// HTTP

/// Asserts an error answer: its status, its code, a message, as `src/api/error.rs` shapes it.
#[track_caller]
fn assert_error(reply: &Reply, status: StatusCode, code: &str) {
    assert_eq!(reply.status, status, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], code, "{}", reply.body);
    assert!(reply.body["error"]["message"].is_string(), "{}", reply.body);
}

/// Polls `probe` until it returns `Ok`, at most [`PATIENCE`]; then panics with `what` and the
/// last reason it gave.
async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(why) if Instant::now() > deadline => {
                panic!("{what}: not within {PATIENCE:?}; last: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes

/// How a node is started, kept so that it can be started again on the same data and id.
#[derive(Clone, Debug)]
struct NodeSpec {
    id: String,
    data: PathBuf,
    database_url: String,
    extra: Vec<String>,
}

impl NodeSpec {
    fn new(id: &str, data: PathBuf, database_url: &str) -> NodeSpec {
        NodeSpec {
            id: id.to_owned(),
            data,
            database_url: database_url.to_owned(),
            extra: Vec::new(),
        }
    }

    /// Adds flags to the command line.
    fn args(mut self, args: &[&str]) -> NodeSpec {
        self.extra.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }
}

/// A node: its `vicinity serve` process, and how it was started.
struct Node {
    spec: NodeSpec,
    process: ServeProcess,
    addr: SocketAddr,
}

impl Node {
    /// Starts the node (see [`ServeProcess::start`]) on its data directory, database and id.
    /// Blocks; from async code use [`Node::launch`].
    fn start(spec: NodeSpec) -> Node {
        let mut args: Vec<OsString> = vec![
            "--database-url".into(),
            spec.database_url.clone().into(),
            "--node-id".into(),
            spec.id.clone().into(),
            // Besides LISTEN/NOTIFY, so that a notification lost in a reconnect costs little.
            "--follow-interval".into(),
            "200ms".into(),
        ];
        args.extend(spec.extra.iter().map(OsString::from));
        let process = ServeProcess::start(&format!("node {}", spec.id), &spec.data, &args);
        Node {
            addr: process.addr,
            spec,
            process,
        }
    }

    /// [`Node::start`] on a blocking thread.
    async fn launch(spec: NodeSpec) -> Node {
        tokio::task::spawn_blocking(move || Node::start(spec))
            .await
            .expect("a node failed to start")
    }

    /// Starts several nodes at once.
    async fn launch_all(specs: Vec<NodeSpec>) -> Vec<Node> {
        let starts: Vec<_> = specs
            .into_iter()
            .map(|s| tokio::task::spawn_blocking(move || Node::start(s)))
            .collect();
        let mut nodes = Vec::new();
        for start in starts {
            nodes.push(start.await.expect("a node failed to start"));
        }
        nodes
    }

    /// Kills the process with SIGKILL, as a crash would, and returns how to start it again.
    fn kill(self) -> NodeSpec {
        self.process.kill();
        self.spec
    }

    /// The last lines the node logged, for assertion messages.
    fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// A fresh data directory under `dir` for the node `id`.
fn data_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join(id)
}

// ---------------------------------------------------------------------------------------------
// Collections, documents, queries

/// Creates the test collection on `node`: vectors of [`DIM`], cosine, an exact (flat) index.
async fn create_collection(http: &Http, node: &Node) {
    let reply = http
        .send(
            node.addr,
            Method::PUT,
            &format!("/collections/{COLLECTION}"),
            Some(&json!({"dimension": DIM, "distance": "cosine", "index": {"type": "flat"}})),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::CREATED,
        "{}\n{}",
        reply.body,
        node.log_tail()
    );
}

/// Waits until every node knows the collection, which reaches the others through the change
/// feed.
async fn wait_for_collection(http: &Http, nodes: &[&Node]) {
    for node in nodes {
        eventually(
            &format!("node {} knows the collection", node.spec.id),
            async || {
                let reply = http
                    .send(
                        node.addr,
                        Method::GET,
                        &format!("/collections/{COLLECTION}"),
                        None,
                    )
                    .await;
                match reply.status {
                    StatusCode::OK => Ok(()),
                    _ => Err(format!("{} {}", reply.status, reply.body)),
                }
            },
        )
        .await;
    }
}

/// The document `i` of an import over `vectors` (row-major, [`DIM`] wide): id `d{i}`, and
/// metadata naming its batch, so that a filtered query can list a batch.
fn document(vectors: &[f32], i: usize) -> Value {
    json!({
        "id": format!("d{i}"),
        "vector": &vectors[i * DIM..(i + 1) * DIM],
        "metadata": {"i": i, "batch": i / BATCH},
    })
}

/// The upsert body of batch `b`.
fn batch_body(vectors: &[f32], b: usize) -> Value {
    let documents: Vec<Value> = (b * BATCH..(b + 1) * BATCH)
        .map(|i| document(vectors, i))
        .collect();
    json!({ "documents": documents })
}

fn documents_path() -> String {
    format!("/collections/{COLLECTION}/documents")
}

fn query_path() -> String {
    format!("/collections/{COLLECTION}/query")
}

/// The version a write's answer carries.
#[track_caller]
fn version_of(reply: &Reply) -> u64 {
    reply.body["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("a write's answer without a version: {}", reply.body))
}

/// Upserts through `node`, which must accept; returns the version the write produced.
async fn upsert(http: &Http, node: &Node, body: &Value) -> u64 {
    let reply = http
        .send(node.addr, Method::POST, &documents_path(), Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}\n{}",
        reply.body,
        node.log_tail()
    );
    version_of(&reply)
}

/// Deletes documents by id through `node`; returns the version the write produced.
async fn delete(http: &Http, node: &Node, ids: &[String]) -> u64 {
    let reply = http
        .send(
            node.addr,
            Method::POST,
            &format!("/collections/{COLLECTION}/documents/delete"),
            Some(&json!({ "ids": ids })),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}\n{}",
        reply.body,
        node.log_tail()
    );
    version_of(&reply)
}

/// An exact k-nearest query for `vector`, answered once the node has applied `min_version`.
fn query_body(vector: &[f32], k: usize, min_version: Option<u64>) -> Value {
    let mut q = json!({"vector": vector, "k": k, "params": {"exact": true}, "include": []});
    if let Some(v) = min_version {
        q["consistency"] = json!({ "min_version": v });
    }
    q
}

/// Queries `node`, which must answer 200 at `min_version` or later.
async fn query(http: &Http, node: &Node, body: &Value) -> Reply {
    let reply = http
        .send(node.addr, Method::POST, &query_path(), Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "query {body}: {}\n{}",
        reply.body,
        node.log_tail()
    );
    let answered = reply.body["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("a query's answer without a version: {}", reply.body));
    if let Some(min) = body["consistency"]["min_version"].as_u64() {
        assert!(
            answered >= min,
            "node {} answered at version {answered}, below min_version {min}",
            node.spec.id
        );
    }
    reply
}

/// The document ids of a query's hits, best first.
fn hit_ids(reply: &Reply) -> Vec<String> {
    reply.body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {}", reply.body))
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

/// One query's hits: document id and score, best first.
type Answer = Vec<(String, f32)>;

/// The answers of `node` to the queries in `vectors` (row-major, [`DIM`] wide), k = 10, each
/// at `min_version` or later.
async fn answers(http: &Http, node: &Node, vectors: &[f32], min_version: u64) -> Vec<Answer> {
    let mut all = Vec::new();
    for v in vectors.chunks_exact(DIM) {
        let reply = query(http, node, &query_body(v, 10, Some(min_version))).await;
        let hits = reply.body["results"].as_array().unwrap();
        all.push(
            hits.iter()
                .map(|h| {
                    let id = h["document_id"].as_str().unwrap().to_owned();
                    (id, h["score"].as_f64().unwrap() as f32)
                })
                .collect(),
        );
    }
    all
}

/// Asserts that two nodes answered the same queries alike: the same documents in the same
/// order, scores equal within 1e-5.
#[track_caller]
fn assert_same_answers(want: &[Answer], got: &[Answer], who: &str) {
    assert_eq!(want.len(), got.len());
    for (q, (w, g)) in want.iter().zip(got).enumerate() {
        let ids = |a: &Answer| a.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(w), ids(g), "{who}: query {q} found other documents");
        for ((id, ws), (_, gs)) in w.iter().zip(g) {
            assert!(
                (ws - gs).abs() <= 1e-5,
                "{who}: query {q}, document {id}: score {gs}, expected {ws}"
            );
        }
    }
}

/// Asserts that `node`, at `min_version` or later, holds every document of `batches`: a
/// filtered exact query per batch finds exactly its ids. This checks the node's own index, not
/// the shared database.
async fn assert_batches_present(
    http: &Http,
    node: &Node,
    vectors: &[f32],
    batches: impl IntoIterator<Item = usize>,
    min_version: u64,
) {
    for b in batches {
        let mut body = query_body(&vectors[..DIM], BATCH, Some(min_version));
        body["filter"] = json!({ "batch": b });
        let reply = query(http, node, &body).await;
        let found: BTreeSet<String> = hit_ids(&reply).into_iter().collect();
        let want: BTreeSet<String> = (b * BATCH..(b + 1) * BATCH)
            .map(|i| format!("d{i}"))
            .collect();
        assert_eq!(
            found, want,
            "node {} lacks documents of batch {b}, acknowledged at or before version \
             {min_version}",
            node.spec.id
        );
    }
}

/// The number of documents `node` reports for the collection.
async fn documents(http: &Http, node: &Node) -> u64 {
    let reply = http
        .send(
            node.addr,
            Method::GET,
            &format!("/collections/{COLLECTION}"),
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    reply.body["documents"]
        .as_u64()
        .unwrap_or_else(|| panic!("no document count: {}", reply.body))
}

/// `GET /cluster` on `node`.
async fn cluster(http: &Http, node: &Node) -> Value {
    let reply = http.send(node.addr, Method::GET, "/cluster", None).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}\n{}",
        reply.body,
        node.log_tail()
    );
    reply.body
}

/// The entry named `name` in a JSON array of objects with `key`.
fn entry<'a>(list: &'a Value, key: &str, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|e| e[key] == name)
}

/// From a `/cluster` body: the version of the collection, and what the node `id` has applied of
/// it.
fn versions(view: &Value, id: &str) -> Result<(u64, u64), String> {
    let version = entry(&view["collections"], "name", COLLECTION)
        .and_then(|c| c["version"].as_u64())
        .ok_or_else(|| format!("no version of '{COLLECTION}': {view}"))?;
    let applied = entry(&view["nodes"], "id", id)
        .and_then(|n| entry(&n["collections"], "name", COLLECTION))
        .and_then(|c| c["applied"].as_u64())
        .ok_or_else(|| format!("node {id} shows nothing applied of '{COLLECTION}': {view}"))?;
    Ok((version, applied))
}

/// Waits until `node`'s own `/cluster` shows it has applied the collection's version, and that
/// version is at least `at_least`.
async fn wait_caught_up(http: &Http, node: &Node, at_least: u64) {
    let what = format!("node {} catches up to version {at_least}", node.spec.id);
    eventually(&what, async || {
        let view = cluster(http, node).await;
        let (version, applied) = versions(&view, &node.spec.id)?;
        if version >= at_least && applied == version {
            Ok(())
        } else {
            Err(format!("version {version}, applied {applied}: {view}"))
        }
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Imports

/// What an import came to.
#[derive(Debug, Default)]
struct ImportLog {
    /// Batches answered 2xx, with the version each write produced, in the order answered.
    acked: Vec<(usize, u64)>,
    /// Refusals with 503 `store_unavailable`, and whether each had a `Retry-After`.
    unavailable: Vec<bool>,
    /// Every other answer that was not 2xx, and every request that got no answer where one was
    /// due.
    unexpected: Vec<String>,
}

impl ImportLog {
    fn acked_batches(&self) -> BTreeSet<usize> {
        self.acked.iter().map(|(b, _)| *b).collect()
    }

    fn highest_version(&self) -> u64 {
        self.acked.iter().map(|(_, v)| *v).max().unwrap_or(0)
    }
}

/// Sends `batches` through `addr`, `workers` requests at a time, `pace` apart per worker,
/// until all are answered or the node stops answering (a worker stops at its first request
/// without an answer). `progress` counts acknowledgements.
fn spawn_import_until_down(
    http: &Http,
    addr: SocketAddr,
    vectors: Arc<Vec<f32>>,
    batches: Vec<usize>,
    workers: usize,
    pace: Duration,
) -> (tokio::task::JoinHandle<ImportLog>, watch::Receiver<usize>) {
    let (progress, watcher) = watch::channel(0);
    let progress = Arc::new(progress);
    let log = Arc::new(Mutex::new(ImportLog::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let batches = Arc::new(batches);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (http, vectors, batches) = (http.clone(), vectors.clone(), batches.clone());
            let (progress, log, next) = (progress.clone(), log.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let Some(&b) = batches.get(next.fetch_add(1, Ordering::SeqCst)) else {
                        return;
                    };
                    let body = batch_body(&vectors, b);
                    let reply = http
                        .try_send(addr, Method::POST, &documents_path(), Some(&body))
                        .await;
                    match reply {
                        Ok(r) if r.status.is_success() => {
                            log.lock().unwrap().acked.push((b, version_of(&r)));
                            progress.send_modify(|n| *n += 1);
                        }
                        Ok(r) => log
                            .lock()
                            .unwrap()
                            .unexpected
                            .push(format!("batch {b}: {} {}", r.status, r.body)),
                        // The node is gone: this batch and the rest stay unacknowledged.
                        Err(_) => return,
                    }
                    tokio::time::sleep(pace).await;
                }
            })
        })
        .collect();
    let done = tokio::spawn(async move {
        for t in tasks {
            t.await.expect("an import worker panicked");
        }
        std::mem::take(&mut *log.lock().unwrap())
    });
    (done, watcher)
}

/// Where a sequential import stops for the test, and how it is let go on.
struct Pause {
    /// After this many acknowledged batches.
    after: usize,
    reached: oneshot::Sender<Acknowledged>,
    resume: oneshot::Receiver<()>,
}

/// The acknowledged batches at a pause, with their versions.
type Acknowledged = Vec<(usize, u64)>;

/// Sends `batches` one at a time, batch `b` through `addrs[b % addrs.len()]`, `pace` apart,
/// each again until it is acknowledged: after `Retry-After` when refused with 503
/// `store_unavailable`, after half a second on anything else (recorded as unexpected). Panics
/// if the whole import takes longer than two minutes.
fn spawn_import_with_retries(
    http: &Http,
    addrs: Vec<SocketAddr>,
    vectors: Arc<Vec<f32>>,
    batches: Vec<usize>,
    pace: Duration,
    mut pause: Option<Pause>,
) -> (tokio::task::JoinHandle<ImportLog>, watch::Receiver<usize>) {
    let (progress, watcher) = watch::channel(0);
    let http = http.clone();
    let task = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut log = ImportLog::default();
        for b in batches {
            let addr = addrs[b % addrs.len()];
            let body = batch_body(&vectors, b);
            loop {
                assert!(
                    Instant::now() < deadline,
                    "the import did not finish within two minutes: {log:?}"
                );
                let wait = match http
                    .try_send(addr, Method::POST, &documents_path(), Some(&body))
                    .await
                {
                    Ok(r) if r.status.is_success() => {
                        log.acked.push((b, version_of(&r)));
                        progress.send_modify(|n| *n += 1);
                        break;
                    }
                    Ok(r)
                        if r.status == StatusCode::SERVICE_UNAVAILABLE
                            && r.body["error"]["code"] == "store_unavailable" =>
                    {
                        let retry_after = r
                            .headers
                            .get(header::RETRY_AFTER)
                            .and_then(|h| h.to_str().ok())
                            .and_then(|s| s.parse::<u64>().ok());
                        log.unavailable.push(retry_after.is_some());
                        Duration::from_secs(retry_after.unwrap_or(1).min(2))
                    }
                    Ok(r) => {
                        log.unexpected
                            .push(format!("batch {b} on {addr}: {} {}", r.status, r.body));
                        Duration::from_millis(500)
                    }
                    Err(e) => {
                        log.unexpected.push(format!("batch {b}: {e}"));
                        Duration::from_millis(500)
                    }
                };
                tokio::time::sleep(wait).await;
            }
            if pause.as_ref().is_some_and(|p| p.after == log.acked.len()) {
                let p = pause.take().unwrap();
                let _ = p.reached.send(log.acked.clone());
                let _ = p.resume.await;
            }
            tokio::time::sleep(pace).await;
        }
        log
    });
    (task, watcher)
}

/// Waits, at most [`PATIENCE`], until `progress` counts `n`.
async fn wait_progress(progress: &mut watch::Receiver<usize>, n: usize) {
    tokio::time::timeout(PATIENCE, progress.wait_for(|acked| *acked >= n))
        .await
        .unwrap_or_else(|_| panic!("fewer than {n} batches acknowledged within {PATIENCE:?}"))
        .expect("the import ended early");
}

/// Waits, at most two minutes, for an import to end.
async fn finish(import: tokio::task::JoinHandle<ImportLog>) -> ImportLog {
    tokio::time::timeout(Duration::from_secs(120), import)
        .await
        .expect("the import ends within two minutes")
        .expect("the import panicked")
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_is_read_on_another_with_min_version() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let mut nodes = Node::launch_all(vec![
        NodeSpec::new("a", data_dir(dir.path(), "a"), &db),
        // Short, so that the refusal of a version never reached comes quickly.
        NodeSpec::new("b", data_dir(dir.path(), "b"), &db).args(&["--consistency-timeout", "1s"]),
    ])
    .await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    let v = random_vectors(4, DIM, 1);
    let doc = |i: usize, id: &str| {
        let vector = &v[i * DIM..(i + 1) * DIM];
        json!({"documents": [{"id": id, "vector": vector}]})
    };

    // Straight after the write, with no wait for the feed: min_version is the wait, and it
    // covers the collection's creation too.
    create_collection(&http, &a).await;
    let v1 = upsert(&http, &a, &doc(0, "x")).await;
    let reply = query(&http, &b, &query_body(&v[..DIM], 1, Some(v1))).await;
    assert_eq!(hit_ids(&reply), ["x"], "{}", reply.body);

    // Versions count the collection's writes one by one, whichever node takes them.
    let v2 = upsert(&http, &b, &doc(1, "y")).await;
    assert_eq!(v2, v1 + 1, "the next write's version");
    let reply = query(&http, &a, &query_body(&v[DIM..2 * DIM], 1, Some(v2))).await;
    assert_eq!(hit_ids(&reply), ["y"], "{}", reply.body);

    // A node reads its own writes without asking for a version.
    let v3 = upsert(&http, &a, &doc(2, "z")).await;
    assert_eq!(v3, v2 + 1);
    let reply = query(&http, &a, &query_body(&v[2 * DIM..3 * DIM], 1, None)).await;
    assert_eq!(hit_ids(&reply), ["z"], "{}", reply.body);
    assert!(
        reply.body["version"].as_u64().unwrap() >= v3,
        "{}",
        reply.body
    );

    // A delete is a write like the others, and reaches the other node the same way.
    let v4 = delete(&http, &b, &["x".to_owned()]).await;
    assert_eq!(v4, v3 + 1);
    let reply = query(&http, &a, &query_body(&v[..DIM], 10, Some(v4))).await;
    let ids = hit_ids(&reply);
    assert!(!ids.contains(&"x".to_owned()), "{}", reply.body);
    assert_eq!(ids.len(), 2, "{}", reply.body);

    // A version no write has produced is refused: waiting cannot bring it.
    let reply = http
        .send(
            b.addr,
            Method::POST,
            &query_path(),
            Some(&query_body(&v[..DIM], 1, Some(v4 + 1000))),
        )
        .await;
    assert_error(&reply, StatusCode::BAD_REQUEST, "version_not_written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_import_loses_no_acknowledged_write_and_catches_up() {
    let Some(db) = postgres::database().await else {
        return;
    };
    const BATCHES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let mut nodes = Node::launch_all(
        ["a", "b", "c"]
            .iter()
            .map(|id| NodeSpec::new(id, data_dir(dir.path(), id), &db))
            .collect(),
    )
    .await;
    let c = nodes.pop().unwrap();
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    create_collection(&http, &a).await;
    wait_for_collection(&http, &[&b, &c]).await;

    // Three requests in flight at a time, so that some are cut off by the kill; the pace keeps
    // the import from ending before the kill lands.
    let vectors = Arc::new(random_vectors(BATCHES * BATCH, DIM, 2));
    let (import, mut progress) = spawn_import_until_down(
        &http,
        a.addr,
        vectors.clone(),
        (0..BATCHES).collect(),
        3,
        Duration::from_millis(20),
    );
    wait_progress(&mut progress, BATCHES / 3).await;
    let a_spec = a.kill();
    let log = finish(import).await;
    assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
    let acked = log.acked_batches();
    assert!(
        acked.len() < BATCHES,
        "the import ended before the kill; the test proves nothing"
    );
    let versions: BTreeSet<u64> = log.acked.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        versions.len(),
        log.acked.len(),
        "two writes, one version: {log:?}"
    );

    // Everything acknowledged before the kill is on the survivors.
    let highest = log.highest_version();
    for node in [&b, &c] {
        assert_batches_present(&http, node, &vectors, acked.iter().copied(), highest).await;
        let count = documents(&http, node).await;
        assert!(
            count >= (acked.len() * BATCH) as u64,
            "node {} counts {count} documents, fewer than the {} acknowledged",
            node.spec.id,
            acked.len() * BATCH
        );
    }

    // The rest goes through B: the batches that got no answer may or may not have been
    // committed before the kill; upserts by id make sending them again safe either way.
    let mut last = highest;
    for batch in (0..BATCHES).filter(|b| !acked.contains(b)) {
        last = upsert(&http, &b, &batch_body(&vectors, batch)).await;
    }

    // A comes back on its own data and id, and catches up.
    let a = Node::launch(a_spec).await;
    wait_caught_up(&http, &a, last).await;

    let total = (BATCHES * BATCH) as u64;
    let queries = random_vectors(QUERIES, DIM, 3);
    let want = answers(&http, &b, &queries, last).await;
    for node in [&a, &b, &c] {
        assert_eq!(documents(&http, node).await, total, "node {}", node.spec.id);
        let got = answers(&http, node, &queries, last).await;
        assert_same_answers(&want, &got, &format!("node {} against b", node.spec.id));
    }
    assert_batches_present(&http, &a, &vectors, 0..BATCHES, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_empty_converges() {
    let Some(db) = postgres::database().await else {
        return;
    };
    const BATCHES: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let mut nodes = Node::launch_all(vec![
        NodeSpec::new("a", data_dir(dir.path(), "a"), &db),
        NodeSpec::new("b", data_dir(dir.path(), "b"), &db),
    ])
    .await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    create_collection(&http, &a).await;
    wait_for_collection(&http, &[&b]).await;

    // Writes through both nodes, paced so that D starts while they are still coming.
    let vectors = Arc::new(random_vectors(BATCHES * BATCH, DIM, 4));
    let (import, mut progress) = spawn_import_with_retries(
        &http,
        vec![a.addr, b.addr],
        vectors.clone(),
        (0..BATCHES).collect(),
        Duration::from_millis(50),
        None,
    );
    wait_progress(&mut progress, 4).await;
    let d = Node::launch(NodeSpec::new("d", data_dir(dir.path(), "d"), &db)).await;
    let log = finish(import).await;
    assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
    assert!(log.unavailable.is_empty(), "{:?}", log.unavailable);

    // Replacements and deletes after D joined reach it too.
    let replaced = random_vectors(BATCH, DIM, 5);
    let mut body = batch_body(&replaced, 0);
    for (i, doc) in body["documents"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        doc["id"] = json!(format!("d{}", 3 * BATCH + i));
        doc["metadata"] = json!({"i": 3 * BATCH + i, "batch": 3, "replaced": true});
    }
    upsert(&http, &a, &body).await;
    let gone: Vec<String> = (0..2 * BATCH).map(|i| format!("d{i}")).collect();
    let last = delete(&http, &b, &gone).await;

    let total = (BATCHES * BATCH - gone.len()) as u64;
    let queries = random_vectors(QUERIES, DIM, 6);
    let want = answers(&http, &a, &queries, last).await;
    for node in [&a, &b, &d] {
        assert_eq!(documents(&http, node).await, total, "node {}", node.spec.id);
        let got = answers(&http, node, &queries, last).await;
        assert_same_answers(&want, &got, &format!("node {} against a", node.spec.id));
    }
    assert_batches_present(&http, &d, &vectors, 2..BATCHES, last).await;
    wait_caught_up(&http, &d, last).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_wait_out_a_postgres_outage_and_nothing_acknowledged_is_lost() {
    // A server of the test's own: the one the other tests share must stay up.
    let Some(server) = tokio::task::spawn_blocking(PrivateServer::start)
        .await
        .unwrap()
    else {
        return;
    };
    let server = Arc::new(server);
    const BATCHES: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let mut nodes = Node::launch_all(vec![
        NodeSpec::new("a", data_dir(dir.path(), "a"), server.url()),
        NodeSpec::new("b", data_dir(dir.path(), "b"), server.url()),
    ])
    .await;
    let b = nodes.pop().unwrap();
    let a = nodes.pop().unwrap();
    create_collection(&http, &a).await;
    wait_for_collection(&http, &[&b]).await;

    // The import stops after a few batches for the server to be taken down, then goes on
    // into the outage.
    let vectors = Arc::new(random_vectors(BATCHES * BATCH, DIM, 7));
    let (reached_tx, reached) = oneshot::channel();
    let (resume, resume_rx) = oneshot::channel();
    let (import, _) = spawn_import_with_retries(
        &http,
        vec![a.addr, b.addr],
        vectors.clone(),
        (0..BATCHES).collect(),
        Duration::ZERO,
        Some(Pause {
            after: 5,
            reached: reached_tx,
            resume: resume_rx,
        }),
    );
    let before = tokio::time::timeout(PATIENCE, reached)
        .await
        .expect("the import reaches its pause")
        .expect("the import is alive");
    let highest = before.iter().map(|(_, v)| *v).max().unwrap();
    // Both nodes hold everything so far. Each answers the outage's queries once now, to
    // compare with their answers while the database is down.
    let outage_queries = [
        query_body(&vectors[..DIM], 10, Some(highest)),
        query_body(&vectors[DIM..2 * DIM], 5, None),
    ];
    let mut before = Vec::new();
    for node in [&a, &b] {
        for q in &outage_queries {
            before.push(hit_ids(&query(&http, node, q).await));
        }
    }

    let stopped_at = Instant::now();
    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.stop()
    })
    .await
    .unwrap();
    resume.send(()).unwrap();

    // About ten seconds down. Writes are refused with a hint to retry; each refusal takes
    // the store's wait for a connection, so they are probed beside the queries, which go on
    // getting the same answers all along.
    const OUTAGE: Duration = Duration::from_secs(10);
    let probing = tokio::spawn({
        let (http, addrs) = (http.clone(), [a.addr, b.addr]);
        let probe = json!({"documents": [{"id": "probe", "vector": &vectors[..DIM]}]});
        async move {
            let mut probes = 0;
            while stopped_at.elapsed() < OUTAGE {
                let reply = http
                    .send(
                        addrs[probes % 2],
                        Method::POST,
                        &documents_path(),
                        Some(&probe),
                    )
                    .await;
                assert_error(&reply, StatusCode::SERVICE_UNAVAILABLE, "store_unavailable");
                assert!(
                    reply.headers.contains_key(header::RETRY_AFTER),
                    "a 503 store_unavailable without Retry-After: {:?}",
                    reply.headers
                );
                probes += 1;
            }
            probes
        }
    });
    let mut rounds = 0;
    while stopped_at.elapsed() < OUTAGE {
        let mut during = Vec::new();
        for node in [&a, &b] {
            for q in &outage_queries {
                during.push(hit_ids(&query(&http, node, q).await));
            }
        }
        assert_eq!(
            during, before,
            "answers changed while the database was down"
        );
        // Queries never asked before are answered from memory too: hits that need neither
        // text nor vectors are rendered without the database.
        let fresh = (3 + rounds * 7) % (5 * BATCH);
        for node in [&a, &b] {
            let q = query_body(&vectors[fresh * DIM..(fresh + 1) * DIM], 3, None);
            let hits = hit_ids(&query(&http, node, &q).await);
            assert_eq!(
                hits[0],
                format!("d{fresh}"),
                "a fresh query during the outage"
            );
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let probes = probing
        .await
        .expect("a write was not refused as it should be");
    assert!(probes > 0 && rounds > 0);
    tokio::task::spawn_blocking({
        let server = server.clone();
        move || server.start_again()
    })
    .await
    .unwrap();

    // Once the server is back, the nodes reconnect by themselves and the retries get through.
    let log = finish(import).await;
    assert!(log.unexpected.is_empty(), "{:?}", log.unexpected);
    assert!(
        !log.unavailable.is_empty(),
        "the import never met the outage: {log:?}"
    );
    assert!(
        log.unavailable.iter().all(|had| *had),
        "a 503 store_unavailable without Retry-After"
    );
    assert_eq!(log.acked.len(), BATCHES);
    // One write at a time: each version is above the last.
    assert!(
        log.acked.windows(2).all(|w| w[0].1 < w[1].1),
        "versions out of commit order: {:?}",
        log.acked
    );

    // The counts also show that no refused write was kept: not even the probe.
    let last = log.highest_version();
    let total = (BATCHES * BATCH) as u64;
    for node in [&a, &b] {
        assert_batches_present(&http, node, &vectors, 0..BATCHES, last).await;
        assert_eq!(documents(&http, node).await, total, "node {}", node.spec.id);
    }
    let queries = random_vectors(QUERIES, DIM, 8);
    let want = answers(&http, &a, &queries, last).await;
    let got = answers(&http, &b, &queries, last).await;
    assert_same_answers(&want, &got, "node b against a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_lists_every_live_node_with_its_progress() {
    let Some(db) = postgres::database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let http = Http::new();
    let ids = ["a", "b", "c"];
    let nodes = Node::launch_all(
        ids.iter()
            .map(|id| NodeSpec::new(id, data_dir(dir.path(), id), &db))
            .collect(),
    )
    .await;
    create_collection(&http, &nodes[0]).await;
    wait_for_collection(&http, &[&nodes[1], &nodes[2]]).await;
    let vectors = random_vectors(3 * BATCH, DIM, 9);
    let mut last = 0;
    for (b, node) in nodes.iter().enumerate() {
        last = upsert(&http, node, &batch_body(&vectors, b)).await;
    }

    // Heartbeats and the feed take a moment: wait for the view where everyone is caught up.
    for node in &nodes {
        let what = format!(
            "node {}'s /cluster shows every node caught up",
            node.spec.id
        );
        let view = eventually(&what, async || {
            let view = cluster(&http, node).await;
            let (version, _) = versions(&view, &node.spec.id)?;
            if version != last {
                return Err(format!("version {version}, not {last}: {view}"));
            }
            for other in &nodes {
                let e = entry(&view["nodes"], "id", &other.spec.id)
                    .ok_or_else(|| format!("node {} is missing: {view}", other.spec.id))?;
                let c = entry(&e["collections"], "name", COLLECTION)
                    .ok_or_else(|| format!("no '{COLLECTION}' for {}: {view}", other.spec.id))?;
                if c["applied"] != last || c["lag"] != 0 {
                    return Err(format!("node {} not caught up: {view}", other.spec.id));
                }
            }
            Ok(view)
        })
        .await;
        assert_eq!(view["node"], node.spec.id, "{view}");
        let listed = view["nodes"].as_array().unwrap();
        assert_eq!(listed.len(), nodes.len(), "only the live nodes: {view}");
        for other in &nodes {
            let e = entry(&view["nodes"], "id", &other.spec.id).unwrap();
            assert_eq!(e["alive"], true, "{view}");
            assert_eq!(e["address"], other.addr.to_string(), "{view}");
            assert!(e["heartbeat_age_ms"].is_u64(), "{view}");
        }
    }
}
