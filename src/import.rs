//! Bulk import into a collection of a running server, over its HTTP API.
//!
//! [`import`] reads documents from a JSONL file (one `{"id", "text", "vector", "metadata"}`
//! object per line) or from a folder of `.txt`/`.md` files (id = the path relative to the
//! folder), groups them into batches and sends the batches from a few worker threads with a
//! blocking HTTP client. It is resumable: before a batch is sent, the server is asked which of
//! its ids it already holds, and those are skipped. A document without an id gets one derived
//! from its content ([`content_id`]), so that a retry or a resumed import finds it present
//! instead of adding a copy (and two identical id-less lines are one document). Bad input lines
//! and refused batches are
//! reported through [`Progress`] and in the [`ImportSummary`]; the import skips them or stops,
//! as [`OnError`] says.
//!
//! This module is a client of the API and shares none of the server's code paths, so that it
//! exercises exactly what any other client would see.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// The most ids one `documents/get` request may ask for (the API's page limit), and so the
/// largest batch.
pub const MAX_BATCH: usize = 1000;

/// What to do with a bad input line or a batch the server refuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnError {
    /// Report it, count it, and go on.
    #[default]
    Skip,
    /// Report it and stop: nothing after it is sent.
    Stop,
}

/// What to import, and where.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// The server's base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// The target collection.
    pub collection: String,
    /// Create the collection (default settings) when it does not exist.
    pub create: bool,
    /// Documents per request, 1 to [`MAX_BATCH`].
    pub batch: usize,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Sent as `Authorization: Bearer <key>` when set.
    pub api_key: Option<String>,
    /// Bad lines and refused batches: skip or stop.
    pub on_error: OnError,
    /// A JSONL file, or a folder of `.txt`/`.md` files.
    pub path: PathBuf,
    /// Attempts per request when the server is overloaded (429/503), fails (5xx) or cannot be
    /// reached, before the batch counts as failed.
    pub max_attempts: u32,
    /// Per-request timeout. Embedding a batch of long texts on a CPU can take a while.
    pub timeout: Duration,
}

impl ImportOptions {
    /// Options with the defaults of `vicinity import`.
    pub fn new(url: impl Into<String>, collection: impl Into<String>, path: PathBuf) -> Self {
        ImportOptions {
            url: url.into(),
            collection: collection.into(),
            create: false,
            batch: 64,
            concurrency: 4,
            api_key: None,
            on_error: OnError::Skip,
            path,
            max_attempts: 8,
            timeout: Duration::from_secs(300),
        }
    }
}

/// Something that went wrong with part of the input; the rest of the import goes on (or stops,
/// per [`OnError`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Problem {
    /// A JSONL line that is not a usable document.
    BadLine {
        /// 1-based line number.
        line: u64,
        /// Why.
        reason: String,
    },
    /// A file of a folder import that cannot be imported (not UTF-8, empty, unreadable).
    BadFile {
        /// Its path relative to the folder.
        path: String,
        /// Why.
        reason: String,
    },
    /// Documents the server refused or that could not be sent.
    Failed {
        /// Their ids (derived from the content for documents given without one).
        ids: Vec<String>,
        /// The HTTP status, when the server answered.
        status: Option<u16>,
        /// The server's message, or the transport error.
        message: String,
    },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::BadLine { line, reason } => write!(f, "line {line}: {reason}"),
            Problem::BadFile { path, reason } => write!(f, "{path}: {reason}"),
            Problem::Failed {
                ids,
                status,
                message,
            } => {
                const SHOWN: usize = 5;
                let mut list = ids
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if ids.len() > SHOWN {
                    list.push_str(&format!(", … ({} more)", ids.len() - SHOWN));
                }
                match status {
                    Some(s) => write!(
                        f,
                        "{} documents failed (HTTP {s}: {message}): {list}",
                        ids.len()
                    ),
                    None => write!(f, "{} documents failed ({message}): {list}", ids.len()),
                }
            }
        }
    }
}

/// Running totals, as [`Progress::update`] sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Documents read from the input so far.
    pub read: u64,
    /// Documents skipped because the server already holds their id.
    pub skipped: u64,
    /// Documents written.
    pub imported: u64,
    /// Passages the written documents were split into.
    pub passages: u64,
    /// Documents the server refused or that could not be sent.
    pub failed: u64,
    /// Bad lines or files.
    pub bad: u64,
}

impl Counts {
    /// Documents dealt with: skipped, imported or failed, plus bad input records.
    pub fn done(&self) -> u64 {
        self.skipped + self.imported + self.failed + self.bad
    }
}

/// Receives the import's progress. Called from the reading thread and the workers.
pub trait Progress: Send + Sync {
    /// The import starts with `total` input records (lines or files) to go through.
    fn start(&self, _total: u64) {}
    /// The totals changed.
    fn update(&self, _counts: &Counts) {}
    /// Part of the input failed.
    fn problem(&self, _problem: &Problem) {}
    /// The import is over.
    fn finish(&self, _counts: &Counts) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// What an import did.
#[derive(Clone, Debug)]
pub struct ImportSummary {
    /// The totals.
    pub counts: Counts,
    /// Every problem, in the order met.
    pub problems: Vec<Problem>,
    /// Why the import stopped early, if it did.
    pub stopped: Option<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl ImportSummary {
    /// Whether everything in the input was imported or already present.
    pub fn is_success(&self) -> bool {
        self.stopped.is_none() && self.counts.failed == 0 && self.counts.bad == 0
    }

    /// Documents imported per second.
    pub fn rate(&self) -> f64 {
        self.counts.imported as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.counts;
        writeln!(f, "read:               {}", c.read)?;
        writeln!(f, "skipped (present):  {}", c.skipped)?;
        writeln!(f, "imported:           {}", c.imported)?;
        writeln!(f, "passages:           {}", c.passages)?;
        writeln!(f, "failed:             {}", c.failed)?;
        writeln!(f, "bad input:          {}", c.bad)?;
        writeln!(f, "elapsed:            {:.1} s", self.elapsed.as_secs_f64())?;
        write!(f, "rate:               {:.1} documents/s", self.rate())?;
        if let Some(why) = &self.stopped {
            write!(f, "\nstopped:            {why}")?;
        }
        Ok(())
    }
}

/// Why an import could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The options make no sense.
    #[error("{0}")]
    Invalid(String),
    /// The input cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The server answered a setup request (the collection check) with an error.
    #[error("{what}: HTTP {status}: {message}")]
    Server {
        /// The request.
        what: String,
        /// Its status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server cannot be reached.
    #[error("{what}: {message}")]
    Transport {
        /// The request.
        what: String,
        /// The transport error.
        message: String,
    },
}

/// Runs an import. `Err` only when it cannot start (bad options, unreadable input, server
/// unreachable, collection missing without `create`); failures of parts of the input are in
/// the summary.
pub fn import(
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportSummary, ImportError> {
    if options.batch == 0 || options.batch > MAX_BATCH {
        return Err(ImportError::Invalid(format!(
            "the batch size must be 1 to {MAX_BATCH}, not {}",
            options.batch
        )));
    }
    if options.concurrency == 0 {
        return Err(ImportError::Invalid(
            "the concurrency must be at least 1".into(),
        ));
    }
    let started = Instant::now();
    let source = Source::open(&options.path)?;
    let client = Client::new(options);
    ensure_collection(&client, options, &source)?;

    let state = State {
        counts: Mutex::new(Counts::default()),
        problems: Mutex::new(Vec::new()),
        stopped: Mutex::new(None),
        stop_after: AtomicU64::new(u64::MAX),
        progress,
        on_error: options.on_error,
    };
    progress.start(source.total());

    // Bounded: the reader stays at most `concurrency` batches ahead of the workers.
    let (tx, rx) = mpsc::sync_channel::<Batch>(options.concurrency);
    let rx = Mutex::new(rx);
    let read_result = std::thread::scope(|scope| {
        for i in 0..options.concurrency {
            let (rx, state, client) = (&rx, &state, &client);
            std::thread::Builder::new()
                .name(format!("import-{i}"))
                .spawn_scoped(scope, move || {
                    loop {
                        // The lock is held only while waiting for the next batch.
                        let next = rx.lock().expect("import channel lock").recv();
                        let Ok(batch) = next else { break };
                        send_batch(client, state, batch);
                    }
                })
                .expect("cannot spawn an import thread");
        }
        let result = read_input(source, options.batch, &state, &tx);
        drop(tx);
        result
    });
    read_result?;

    let counts = *state.counts.lock().expect("counts lock");
    progress.finish(&counts);
    Ok(ImportSummary {
        counts,
        problems: state.problems.into_inner().expect("problems lock"),
        stopped: state.stopped.into_inner().expect("stopped lock"),
        elapsed: started.elapsed(),
    })
}

/// A document ready to send: its id (given, or derived from its content) and its JSON body,
/// which carries the id.
struct Doc {
    id: String,
    body: Value,
}

/// Documents sent together, numbered from 1 in input order.
struct Batch {
    seq: u64,
    docs: Vec<Doc>,
}

/// Shared by the reader and the workers.
struct State<'a> {
    counts: Mutex<Counts>,
    problems: Mutex<Vec<Problem>>,
    stopped: Mutex<Option<String>>,
    /// The last batch to send: batches after it are dropped once the import stops. Batches
    /// before a failure are still sent, so that a stopped import has imported exactly the input
    /// up to the failure.
    stop_after: AtomicU64,
    progress: &'a dyn Progress,
    on_error: OnError,
}

impl State<'_> {
    fn count(&self, f: impl FnOnce(&mut Counts)) {
        let snapshot = {
            let mut counts = self.counts.lock().expect("counts lock");
            f(&mut counts);
            *counts
        };
        self.progress.update(&snapshot);
    }

    /// Records a problem met at batch `seq`; under [`OnError::Stop`] it also stops the import
    /// after that batch.
    fn problem(&self, problem: Problem, seq: u64) {
        self.progress.problem(&problem);
        if self.on_error == OnError::Stop {
            self.stop(seq, format!("at {problem}"));
        }
        self.problems.lock().expect("problems lock").push(problem);
    }

    /// Stops the import after batch `seq`; the first reason given is kept.
    fn stop(&self, seq: u64, why: String) {
        self.stop_after.fetch_min(seq, Ordering::SeqCst);
        self.stopped
            .lock()
            .expect("stopped lock")
            .get_or_insert(why);
    }

    /// Whether the import has stopped.
    fn stopping(&self) -> bool {
        self.stop_after.load(Ordering::SeqCst) != u64::MAX
    }

    /// Whether batch `seq` comes after the stop.
    fn dropped(&self, seq: u64) -> bool {
        seq > self.stop_after.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------------------------------------
// Input

/// The input: a JSONL file, or the `.txt`/`.md` files of a folder (sorted, so that runs and
/// resumptions see the same order).
enum Source {
    Jsonl { path: PathBuf, lines: u64 },
    Folder { root: PathBuf, files: Vec<PathBuf> },
}

impl Source {
    fn open(path: &Path) -> Result<Source, ImportError> {
        let err = |source| ImportError::Input {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(err)?;
        if meta.is_dir() {
            let mut files = Vec::new();
            collect_files(path, &mut files).map_err(err)?;
            files.sort();
            Ok(Source::Folder {
                root: path.to_owned(),
                files,
            })
        } else {
            // A first pass for the total, so that the progress bar can show an ETA.
            let mut lines = 0;
            for line in BufReader::new(File::open(path).map_err(err)?).lines() {
                if !line.map_err(err)?.trim().is_empty() {
                    lines += 1;
                }
            }
            Ok(Source::Jsonl {
                path: path.to_owned(),
                lines,
            })
        }
    }

    fn total(&self) -> u64 {
        match self {
            Source::Jsonl { lines, .. } => *lines,
            Source::Folder { files, .. } => files.len() as u64,
        }
    }

    /// The length of the first document's vector, when the first usable document has one: a
    /// collection created for it takes vectors of that dimension.
    fn first_vector_len(&self) -> Option<usize> {
        let Source::Jsonl { path, .. } = self else {
            return None;
        };
        let reader = BufReader::new(File::open(path).ok()?);
        for (i, line) in reader.lines().enumerate() {
            let line = line.ok()?;
            if line.trim().is_empty() {
                continue;
            }
            if let Ok(doc) = parse_line(&line, i as u64 + 1) {
                return doc
                    .body
                    .get("vector")
                    .and_then(Value::as_array)
                    .map(Vec::len);
            }
        }
        None
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file()
            && path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.eq_ignore_ascii_case("txt") || e.eq_ignore_ascii_case("md"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Reads the input into batches and hands them to the workers until the input ends or the
/// import stops. A batch never holds the same id twice (the API refuses that): a repeated id
/// closes the batch first.
fn read_input(
    source: Source,
    batch_size: usize,
    state: &State<'_>,
    tx: &mpsc::SyncSender<Batch>,
) -> Result<(), ImportError> {
    let mut batch: Vec<Doc> = Vec::with_capacity(batch_size);
    let mut ids: HashSet<String> = HashSet::new();
    // Batches handed to the workers so far.
    let mut sent = 0;
    let mut flush = |batch: &mut Vec<Doc>, ids: &mut HashSet<String>| {
        ids.clear();
        if !batch.is_empty() {
            sent += 1;
            let docs = std::mem::take(batch);
            // The workers only end when this sender is dropped, so sending cannot fail.
            let _ = tx.send(Batch { seq: sent, docs });
        }
        sent
    };
    let mut push = |doc: Result<Doc, Problem>, batch: &mut Vec<Doc>, ids: &mut HashSet<String>| {
        match doc {
            Ok(doc) => {
                if !ids.insert(doc.id.clone()) {
                    flush(batch, ids);
                    ids.insert(doc.id.clone());
                }
                state.count(|c| c.read += 1);
                batch.push(doc);
                if batch.len() == batch_size {
                    flush(batch, ids);
                }
            }
            Err(problem) => {
                state.count(|c| c.bad += 1);
                // What was read before a bad line still goes in, even when the import stops.
                let seq = flush(batch, ids);
                state.problem(problem, seq);
            }
        }
    };

    match source {
        Source::Jsonl { path, .. } => {
            let file = File::open(&path).map_err(|source| ImportError::Input {
                path: path.clone(),
                source,
            })?;
            for (i, line) in BufReader::new(file).lines().enumerate() {
                if state.stopping() {
                    break;
                }
                let number = i as u64 + 1;
                let doc = match line {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => parse_line(&line, number),
                    Err(e) => Err(Problem::BadLine {
                        line: number,
                        reason: format!("cannot read the line: {e}"),
                    }),
                };
                push(doc, &mut batch, &mut ids);
            }
        }
        Source::Folder { root, files } => {
            for file in files {
                if state.stopping() {
                    break;
                }
                push(read_file(&root, &file), &mut batch, &mut ids);
            }
        }
    }
    if !state.stopping() {
        flush(&mut batch, &mut ids);
    }
    Ok(())
}

/// One JSONL line as a document: an object with `text` or `vector` (or both), an optional `id`
/// (string or non-negative integer; without one, [`content_id`] of the rest) and optional
/// `metadata` (an object). Other fields are ignored.
fn parse_line(line: &str, number: u64) -> Result<Doc, Problem> {
    let bad = |reason: String| Problem::BadLine {
        line: number,
        reason,
    };
    let value: Value = serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err(bad("not a JSON object".into()));
    };
    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        Some(Value::Number(n)) if n.is_u64() => Some(n.to_string()),
        Some(other) => {
            return Err(bad(format!(
                "\"id\" must be a non-empty string or a non-negative integer, not {other}"
            )));
        }
    };
    let mut body = Map::new();
    match obj.remove("text") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            body.insert("text".into(), Value::String(s));
        }
        Some(_) => return Err(bad("\"text\" must be a string".into())),
    }
    match obj.remove("vector") {
        None | Some(Value::Null) => {}
        Some(Value::Array(v)) if v.iter().all(Value::is_number) => {
            body.insert("vector".into(), Value::Array(v));
        }
        Some(_) => return Err(bad("\"vector\" must be an array of numbers".into())),
    }
    if !body.contains_key("text") && !body.contains_key("vector") {
        return Err(bad("no \"text\" and no \"vector\"".into()));
    }
    match obj.remove("metadata") {
        None | Some(Value::Null) => {}
        Some(m @ Value::Object(_)) => {
            body.insert("metadata".into(), m);
        }
        Some(_) => return Err(bad("\"metadata\" must be an object".into())),
    }
    let id = id.unwrap_or_else(|| content_id(&body));
    body.insert("id".into(), Value::String(id.clone()));
    Ok(Doc {
        id,
        body: Value::Object(body),
    })
}

/// The id of a document given without one: the first 128 bits, in hex, of the SHA-256 of its
/// `text`, `vector` and `metadata` in a canonical JSON form (object keys sorted at every
/// level, no spaces, numbers as written in the input). The same content always gets the same
/// id, whatever order its keys came in, so importing a file again (a retry, a resumed import)
/// skips what is already there; documents that differ in any of the three get different ids.
/// 128 bits make a collision between different documents practically impossible even over
/// billions of documents.
pub fn content_id(body: &Map<String, Value>) -> String {
    use sha2::{Digest, Sha256};

    let mut canonical = Vec::new();
    write_canonical_object(&mut canonical, body);
    let digest = Sha256::digest(&canonical);
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `map` as a JSON object with its keys in sorted order at every level.
fn write_canonical_object(out: &mut Vec<u8>, map: &Map<String, Value>) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push(b'{');
    for (i, (key, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, key).expect("writing JSON to memory cannot fail");
        out.push(b':');
        write_canonical(out, v);
    }
    out.push(b'}');
}

/// Writes `value` as JSON with object keys in sorted order at every level.
fn write_canonical(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(map) => write_canonical_object(out, map),
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(out, v);
            }
            out.push(b']');
        }
        scalar => {
            serde_json::to_writer(&mut *out, scalar).expect("writing JSON to memory cannot fail")
        }
    }
}

/// One file of a folder import: id and `metadata.path` are its path relative to the folder,
/// with `/` separators whatever the platform.
fn read_file(root: &Path, file: &Path) -> Result<Doc, Problem> {
    let rel = file
        .strip_prefix(root)
        .unwrap_or(file)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    let bad = |reason: String| Problem::BadFile {
        path: rel.clone(),
        reason,
    };
    let bytes = std::fs::read(file).map_err(|e| bad(format!("cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
    if text.trim().is_empty() {
        return Err(bad("empty".into()));
    }
    Ok(Doc {
        body: json!({"id": rel, "text": text, "metadata": {"path": rel}}),
        id: rel,
    })
}

// ---------------------------------------------------------------------------------------------
// HTTP

/// A blocking client for the few routes the import uses, with retries.
struct Client {
    agent: ureq::Agent,
    base: String,
    collection_path: String,
    auth: Option<String>,
    max_attempts: u32,
}

/// How a request ended when it did not succeed.
enum Failure {
    /// The server refused it (an error status that retrying does not fix).
    Status { status: u16, message: String },
    /// The request ran into the server's request timeout (503 `timeout`).
    TooSlow { message: String },
    /// Retries ran out: the server stayed overloaded or unreachable.
    GaveUp {
        status: Option<u16>,
        message: String,
    },
}

impl Failure {
    fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            Failure::GaveUp { status, .. } => *status,
            Failure::TooSlow { .. } => Some(503),
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Status { message, .. }
            | Failure::GaveUp { message, .. }
            | Failure::TooSlow { message } => message,
        }
    }

    /// Whether every later request would fail the same way: wrong key, missing collection.
    fn is_fatal(&self) -> bool {
        matches!(self.status(), Some(401 | 403 | 404))
    }
}

impl Client {
    fn new(options: &ImportOptions) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout(options.timeout)
            .build();
        let base = options.url.trim_end_matches('/').to_owned();
        Client {
            agent,
            collection_path: format!("/collections/{}", options.collection),
            base,
            auth: options.api_key.as_ref().map(|k| format!("Bearer {k}")),
            max_attempts: options.max_attempts.max(1),
        }
    }

    /// Sends a request, retrying overload (429, 503), other server errors and transport
    /// errors with exponential backoff; a `Retry-After` from the server sets the wait instead.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        self.call_with(method, path, body, false)
    }

    /// [`Client::call`]; with `split_timeouts`, a request that ran into the server's request
    /// timeout is not retried but returned as [`Failure::TooSlow`], for the caller to send in
    /// smaller parts: the same request would only time out again.
    fn call_with(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        split_timeouts: bool,
    ) -> Result<Value, Failure> {
        let url = format!("{}{path}", self.base);
        let body = body.map(Value::to_string);
        let mut backoff = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            let mut req = self.agent.request(method, &url);
            if let Some(auth) = &self.auth {
                req = req.set("Authorization", auth);
            }
            let result = match &body {
                Some(b) => req.set("Content-Type", "application/json").send_string(b),
                None => req.call(),
            };
            let (status, message, wait) = match result {
                Ok(response) => {
                    let text = response.into_string().map_err(|e| Failure::GaveUp {
                        status: None,
                        message: format!("cannot read the response: {e}"),
                    })?;
                    if text.is_empty() {
                        return Ok(Value::Null);
                    }
                    return serde_json::from_str(&text).map_err(|e| Failure::GaveUp {
                        status: None,
                        message: format!("the response is not JSON: {e}"),
                    });
                }
                Err(ureq::Error::Status(status, response)) => {
                    let wait = response
                        .header("retry-after")
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let (code, message) = error_message(response);
                    if status < 500 && status != 429 {
                        return Err(Failure::Status { status, message });
                    }
                    if split_timeouts && status == 503 && code.as_deref() == Some("timeout") {
                        return Err(Failure::TooSlow { message });
                    }
                    (Some(status), message, wait)
                }
                Err(ureq::Error::Transport(t)) => (None, t.to_string(), None),
            };
            if attempt >= self.max_attempts {
                return Err(Failure::GaveUp { status, message });
            }
            attempt += 1;
            std::thread::sleep(wait.unwrap_or(backoff));
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Ids among `ids` that the collection already holds.
    fn present(&self, ids: &[String]) -> Result<HashSet<String>, Failure> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let body = json!({"ids": ids, "limit": ids.len()});
        let page = self.call(
            "POST",
            &format!("{}/documents/get", self.collection_path),
            Some(&body),
        )?;
        Ok(page["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["id"].as_str().map(str::to_owned))
            .collect())
    }

    /// Upserts documents; returns the total of their passages.
    fn upsert(&self, docs: &[&Doc]) -> Result<u64, Failure> {
        let body = json!({"documents": docs.iter().map(|d| &d.body).collect::<Vec<_>>()});
        // A single document that times out is retried: it cannot be split further.
        let done = self.call_with(
            "POST",
            &format!("{}/documents", self.collection_path),
            Some(&body),
            docs.len() > 1,
        )?;
        Ok(done["documents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["passages"].as_u64())
            .sum())
    }
}

/// The code and message of an API error body (`{"error": {"message"}}`), or the raw body.
fn error_message(response: ureq::Response) -> (Option<String>, String) {
    let text = response.into_string().unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => (
            v["error"]["code"].as_str().map(str::to_owned),
            v["error"]["message"].as_str().map_or(text, str::to_owned),
        ),
        Err(_) => (None, text),
    }
}

/// Checks that the collection exists, creating it with default settings when asked (with the
/// input's vector dimension when its documents carry vectors).
fn ensure_collection(
    client: &Client,
    options: &ImportOptions,
    source: &Source,
) -> Result<(), ImportError> {
    let what = format!("collection '{}'", options.collection);
    let to_error = |what: String, f: Failure| match f {
        Failure::Status { status, message }
        | Failure::GaveUp {
            status: Some(status),
            message,
        } => ImportError::Server {
            what,
            status,
            message,
        },
        Failure::GaveUp {
            status: None,
            message,
        } => ImportError::Transport { what, message },
        Failure::TooSlow { message } => ImportError::Server {
            what,
            status: 503,
            message,
        },
    };
    match client.call("GET", &client.collection_path, None) {
        Ok(_) => Ok(()),
        Err(Failure::Status { status: 404, .. }) if options.create => {
            let body = match source.first_vector_len() {
                Some(dim) => json!({"dimension": dim}),
                None => json!({}),
            };
            client
                .call("PUT", &client.collection_path, Some(&body))
                .map(drop)
                .map_err(|f| to_error(format!("creating {what}"), f))
        }
        Err(Failure::Status {
            status: 404,
            message,
        }) => Err(ImportError::Server {
            what,
            status: 404,
            message: format!("{message} (pass --create to create it)"),
        }),
        Err(f) => Err(to_error(what, f)),
    }
}

// ---------------------------------------------------------------------------------------------
// Workers

/// Sends one batch: asks which ids are present, then upserts the others.
fn send_batch(client: &Client, state: &State<'_>, batch: Batch) {
    let Batch { seq, docs: batch } = batch;
    if state.dropped(seq) {
        return;
    }
    let ids: Vec<String> = batch.iter().map(|d| d.id.clone()).collect();
    let present = match client.present(&ids) {
        Ok(p) => p,
        Err(f) => {
            fail(state, seq, &batch.iter().collect::<Vec<_>>(), f);
            return;
        }
    };
    let todo: Vec<&Doc> = batch.iter().filter(|d| !present.contains(&d.id)).collect();
    let skipped = (batch.len() - todo.len()) as u64;
    if skipped > 0 {
        state.count(|c| c.skipped += skipped);
    }
    if !todo.is_empty() {
        upsert_split(client, state, seq, &todo);
    }
}

/// Upserts documents; when the server refuses the request as a whole (a bad document, a body
/// too large) or it takes longer than the server's request timeout, halves it until the documents at fault are isolated, so that one bad document
/// does not fail its whole batch. Returns false when a failure stops the import, so that
/// nothing after it in the batch is sent either.
fn upsert_split(client: &Client, state: &State<'_>, seq: u64, docs: &[&Doc]) -> bool {
    if state.dropped(seq) {
        return false;
    }
    match client.upsert(docs) {
        Ok(passages) => {
            state.count(|c| {
                c.imported += docs.len() as u64;
                c.passages += passages;
            });
            true
        }
        Err(
            Failure::Status {
                status: 400 | 413 | 422,
                ..
            }
            | Failure::TooSlow { .. },
        ) if docs.len() > 1 => {
            let (a, b) = docs.split_at(docs.len() / 2);
            upsert_split(client, state, seq, a) && upsert_split(client, state, seq, b)
        }
        Err(f) => {
            fail(state, seq, docs, f);
            state.on_error == OnError::Skip
        }
    }
}

/// Counts documents as failed and reports them; a failure every later request would share
/// stops the import whatever [`OnError`] says.
fn fail(state: &State<'_>, seq: u64, docs: &[&Doc], f: Failure) {
    state.count(|c| c.failed += docs.len() as u64);
    let fatal = f.is_fatal();
    let problem = Problem::Failed {
        ids: docs.iter().map(|d| d.id.clone()).collect(),
        status: f.status(),
        message: f.message().to_owned(),
    };
    if fatal {
        state.stop(0, format!("the server refuses every request: {problem}"));
    }
    state.problem(problem, seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_documents_or_problems() {
        let doc = parse_line(r#"{"id": 7, "text": "a", "metadata": {"k": 1}, "x": 2}"#, 1).unwrap();
        assert_eq!(doc.id, "7");
        assert_eq!(
            doc.body,
            json!({"id": "7", "text": "a", "metadata": {"k": 1}})
        );
        let doc = parse_line(r#"{"vector": [1, 2.5]}"#, 1).unwrap();
        assert_eq!(doc.id.len(), 32);
        assert_eq!(doc.body["id"], doc.id.as_str());

        for (line, reason) in [
            ("{not json", "invalid JSON"),
            ("[1, 2]", "not a JSON object"),
            (r#"{"id": "a"}"#, "no \"text\""),
            (r#"{"id": -1, "text": "a"}"#, "\"id\""),
            (r#"{"text": 3}"#, "\"text\""),
            (r#"{"vector": ["a"]}"#, "\"vector\""),
            (r#"{"text": "a", "metadata": 1}"#, "\"metadata\""),
        ] {
            match parse_line(line, 12) {
                Err(Problem::BadLine {
                    line: 12,
                    reason: r,
                }) => {
                    assert!(r.contains(reason), "{line}: {r}")
                }
                other => panic!("{line}: {:?}", other.map(|d| d.body)),
            }
        }
    }

    #[test]
    fn ids_derived_from_content_ignore_key_order_and_nothing_else() {
        let id = |line: &str| parse_line(line, 1).unwrap().id;
        let a = id(r#"{"text": "a", "metadata": {"k": 1, "j": [1, {"y": 2, "x": 3}]}}"#);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        // Same content, keys in another order, and fields the importer ignores.
        assert_eq!(
            a,
            id(r#"{"metadata": {"j": [1, {"x": 3, "y": 2}], "k": 1}, "text": "a", "x": 9}"#)
        );
        for other in [
            r#"{"text": "b", "metadata": {"k": 1, "j": [1, {"y": 2, "x": 3}]}}"#,
            r#"{"text": "a", "metadata": {"k": 2, "j": [1, {"y": 2, "x": 3}]}}"#,
            r#"{"text": "a", "metadata": {"k": 1, "j": [{"y": 2, "x": 3}, 1]}}"#,
            r#"{"text": "a"}"#,
            r#"{"text": "a", "vector": [1], "metadata": {"k": 1, "j": [1, {"y": 2, "x": 3}]}}"#,
        ] {
            assert_ne!(a, id(other), "{other}");
        }
        // An explicit id is kept as it is.
        assert_eq!(id(r#"{"id": "x", "text": "a"}"#), "x");
        assert_ne!(id(r#"{"vector": [1, 2]}"#), id(r#"{"vector": [2, 1]}"#));
    }

    #[test]
    fn failed_ids_are_listed_briefly() {
        let p = Problem::Failed {
            ids: (0..8).map(|i| i.to_string()).collect(),
            status: Some(400),
            message: "bad".into(),
        };
        assert_eq!(
            p.to_string(),
            "8 documents failed (HTTP 400: bad): 0, 1, 2, 3, 4, … (3 more)"
        );
    }
}
