//! The bulk importer against an in-process server on a real socket: bad lines reported by line
//! number, resumption without re-sending, documents without ids imported once however often
//! their file is, folder imports, stopping on an error, refused documents isolated from their
//! batch.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use vicinity::api::ApiSettings;
use vicinity::import::{
    self, ImportError, ImportOptions, ImportSummary, NoProgress, OnError, Problem,
};

use common::{App, Counting, Listening, service_settings, tiny_worker};

/// The service behind a real listener, with an embedder that counts its calls.
struct Server {
    app: App,
    embedder: Arc<Counting>,
    listening: Listening,
    addr: SocketAddr,
}

impl Server {
    async fn start(data: &Path) -> Server {
        let embedder = Counting::new(tiny_worker());
        let app = App::open(
            data,
            embedder.clone(),
            service_settings(data),
            ApiSettings::default(),
        )
        .await;
        let listening = Listening::start(&app, Duration::from_secs(10)).await;
        Server {
            addr: listening.addr,
            app,
            embedder,
            listening,
        }
    }

    fn options(&self, collection: &str, path: &Path) -> ImportOptions {
        let mut options =
            ImportOptions::new(format!("http://{}", self.addr), collection, path.to_owned());
        options.batch = 3;
        options.concurrency = 2;
        options
    }

    /// Runs an import on a blocking thread, as the CLI does on its own.
    async fn import(&self, options: ImportOptions) -> Result<ImportSummary, ImportError> {
        tokio::task::spawn_blocking(move || import::import(&options, &NoProgress))
            .await
            .unwrap()
    }

    async fn create(&self, name: &str) {
        let (status, body) = self
            .app
            .send(
                Method::PUT,
                &format!("/collections/{name}"),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    /// The documents of `ids` the collection holds, by id.
    async fn documents(&self, name: &str, ids: &[&str]) -> Vec<Value> {
        let (status, body) = self
            .app
            .send(
                Method::POST,
                &format!("/collections/{name}/documents/get"),
                Some(json!({"ids": ids})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["documents"].as_array().unwrap().clone()
    }

    async fn count(&self, name: &str) -> u64 {
        let (_, body) = self
            .app
            .send(Method::GET, &format!("/collections/{name}"), None)
            .await;
        body["documents"].as_u64().unwrap()
    }

    async fn close(mut self) {
        self.listening.begin_shutdown();
        self.listening.task.await.unwrap().unwrap();
        self.app.close().await;
    }
}

fn bad_lines(summary: &ImportSummary) -> Vec<u64> {
    summary
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::BadLine { line, .. } => Some(*line),
            _ => None,
        })
        .collect()
}

/// Ten lines, of which line 4 is not JSON and line 7 has neither text nor vector.
fn jsonl_with_bad_lines() -> String {
    let mut lines = Vec::new();
    for i in 1..=10 {
        lines.push(match i {
            4 => "{\"id\": \"d4\", \"text\": ".to_owned(),
            7 => json!({"id": "d7", "metadata": {"n": 7}}).to_string(),
            _ => json!({"id": format!("d{i}"), "text": format!("document number {i}"), "metadata": {"n": i}})
                .to_string(),
        });
    }
    lines.join("\n") + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_are_reported_and_a_rerun_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.create("c").await;
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, jsonl_with_bad_lines()).unwrap();

    let summary = server.import(server.options("c", &input)).await.unwrap();
    assert_eq!(bad_lines(&summary), [4, 7], "{:?}", summary.problems);
    let c = summary.counts;
    assert_eq!(
        (c.read, c.imported, c.skipped, c.failed, c.bad),
        (8, 8, 0, 0, 2)
    );
    assert!(c.passages >= 8);
    assert!(summary.stopped.is_none());
    assert!(!summary.is_success(), "bad lines make the import fail");
    assert_eq!(server.count("c").await, 8);
    let docs = server.documents("c", &["d1", "d10"]).await;
    assert_eq!(docs[0]["text"], "document number 1");
    assert_eq!(docs[1]["metadata"], json!({"n": 10}));

    // Everything is present now: the rerun embeds nothing.
    let calls = server.embedder.calls();
    let summary = server.import(server.options("c", &input)).await.unwrap();
    let c = summary.counts;
    assert_eq!(
        (c.read, c.imported, c.skipped, c.failed, c.bad),
        (8, 0, 8, 0, 2)
    );
    assert_eq!(server.embedder.calls(), calls, "nothing is re-sent");
    assert_eq!(server.count("c").await, 8);
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_is_imported_with_path_ids() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    let root = dir.path().join("notes");
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), "Lighthouses guide ships.").unwrap();
    std::fs::write(root.join("sub/b.md"), "# Tides\n\nThe moon pulls the sea.").unwrap();
    std::fs::write(root.join("sub/deeper/c.TXT"), "Harbours shelter boats.").unwrap();
    std::fs::write(root.join("code.rs"), "fn main() {}").unwrap();
    std::fs::write(root.join("empty.md"), "  \n").unwrap();

    // Without --create, a missing collection is an error before anything is read.
    let missing = server.import(server.options("notes", &root)).await;
    assert!(
        matches!(missing, Err(ImportError::Server { status: 404, .. })),
        "{missing:?}"
    );

    let mut options = server.options("notes", &root);
    options.create = true;
    let summary = server.import(options.clone()).await.unwrap();
    let c = summary.counts;
    assert_eq!(
        (c.read, c.imported, c.failed, c.bad),
        (3, 3, 0, 1),
        "{:?}",
        summary.problems
    );
    assert_eq!(
        summary.problems,
        [Problem::BadFile {
            path: "empty.md".into(),
            reason: "empty".into()
        }]
    );
    let docs = server
        .documents(
            "notes",
            &["a.txt", "sub/b.md", "sub/deeper/c.TXT", "code.rs"],
        )
        .await;
    let ids: Vec<&str> = docs.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a.txt", "sub/b.md", "sub/deeper/c.TXT"]);
    assert_eq!(docs[1]["metadata"], json!({"path": "sub/b.md"}));
    assert_eq!(docs[1]["text"], "# Tides\n\nThe moon pulls the sea.");

    let summary = server.import(options).await.unwrap();
    assert_eq!((summary.counts.skipped, summary.counts.imported), (3, 0));
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_error_stop_stops_at_the_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.create("c").await;
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, jsonl_with_bad_lines()).unwrap();

    let mut options = server.options("c", &input);
    options.on_error = OnError::Stop;
    let summary = server.import(options).await.unwrap();
    assert_eq!(bad_lines(&summary), [4]);
    assert!(
        summary.stopped.as_deref().unwrap().contains("line 4"),
        "{summary}"
    );
    let c = summary.counts;
    assert_eq!((c.read, c.imported, c.bad), (3, 3, 1));
    // Everything before the bad line is in, nothing after it.
    assert_eq!(server.count("c").await, 3);
    assert!(server.documents("c", &["d5", "d10"]).await.is_empty());
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_document_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.create("c").await;
    let input = dir.path().join("docs.jsonl");
    let lines = [
        json!({"id": "a", "text": "first"}),
        json!({"id": "wrong", "vector": [1.0, 2.0]}),
        json!({"id": "b", "text": "second"}),
    ];
    let text: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&input, text.join("\n")).unwrap();

    let summary = server.import(server.options("c", &input)).await.unwrap();
    let c = summary.counts;
    assert_eq!(
        (c.read, c.imported, c.failed),
        (3, 2, 1),
        "{:?}",
        summary.problems
    );
    match &summary.problems[..] {
        [Problem::Failed { ids, status, .. }] => {
            assert_eq!(ids, &["wrong"]);
            assert_eq!(*status, Some(400));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.count("c").await, 2);
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_without_ids_are_imported_once_however_often_the_file_is() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path()).await;
    server.create("c").await;
    let lines: Vec<String> = (1..=8)
        .map(|i| {
            json!({"text": format!("note number {i}"), "metadata": {"n": i, "odd": i % 2 == 1}})
                .to_string()
        })
        .collect();
    // The first half alone: an import that stopped part-way.
    let partial = dir.path().join("partial.jsonl");
    std::fs::write(&partial, lines[..4].join("\n")).unwrap();
    // The whole file, with the first line repeated (its keys in another order) at the end.
    let mut all = lines.clone();
    all.push(r#"{"metadata": {"odd": true, "n": 1}, "text": "note number 1"}"#.to_owned());
    let input = dir.path().join("docs.jsonl");
    std::fs::write(&input, all.join("\n")).unwrap();

    let summary = server.import(server.options("c", &partial)).await.unwrap();
    assert!(summary.is_success(), "{summary}");
    assert_eq!(summary.counts.imported, 4);
    assert_eq!(server.count("c").await, 4);

    // Resuming with the whole file sends only what is missing.
    let summary = server.import(server.options("c", &input)).await.unwrap();
    assert!(summary.is_success(), "{summary}");
    let c = summary.counts;
    assert_eq!((c.read, c.skipped, c.imported), (9, 5, 4), "{summary}");
    assert_eq!(server.count("c").await, 8);

    // Importing it all again changes and embeds nothing.
    let calls = server.embedder.calls();
    let summary = server.import(server.options("c", &input)).await.unwrap();
    let c = summary.counts;
    assert_eq!((c.read, c.skipped, c.imported), (9, 9, 0), "{summary}");
    assert_eq!(server.embedder.calls(), calls, "nothing is re-sent");
    assert_eq!(server.count("c").await, 8);

    // Each document is there once, under its derived id, with its content.
    let (status, page) = server
        .app
        .send(
            Method::POST,
            "/collections/c/documents/get",
            Some(json!({"limit": 100})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let docs = page["documents"].as_array().unwrap();
    let mut texts: Vec<&str> = docs.iter().map(|d| d["text"].as_str().unwrap()).collect();
    texts.sort_unstable();
    let mut expected: Vec<String> = (1..=8).map(|i| format!("note number {i}")).collect();
    expected.sort_unstable();
    assert_eq!(texts, expected);
    for d in docs {
        let id = d["id"].as_str().unwrap();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
    }
    server.close().await;
}
