//! The HTTP API end to end, through `router()` and `tower::ServiceExt::oneshot`: the real
//! store over a temporary directory, the real indexes, and the tiny fixture model behind the
//! real embedding worker (the real default model for the one test that needs its semantics).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use vicinity::api::{self, ApiSettings, AppState};
use vicinity::embed::{EmbeddingWorker, WorkerOptions};
use vicinity::service::ServiceSettings;
use vicinity::testing::clustered_vectors;

use common::{App, Counting, Gate, call, real_model_dir, send, service_settings, tiny_dir};

const GET: Method = Method::GET;
const PUT: Method = Method::PUT;
const POST: Method = Method::POST;
const DELETE: Method = Method::DELETE;

/// The tiny model's output width.
const TINY_DIM: usize = 32;

/// The most tokens the tiny model reads, [CLS] and [SEP] included.
const TINY_MAX_TOKENS: usize = 32;

/// Asserts an error's status and code, and that its body is exactly
/// `{"error": {"code", "message"}}`, with `limit` naming the setting on the limit errors.
#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    common::assert_error(got, status, code);
    let body = got.1.as_object().expect("an object");
    assert_eq!(body.len(), 1, "{}", got.1);
    let error = got.1["error"].as_object().expect("an error object");
    let keys: BTreeSet<&str> = error.keys().map(String::as_str).collect();
    let mut want = BTreeSet::from(["code", "message"]);
    if matches!(code, "limit_exceeded" | "payload_too_large") {
        want.insert("limit");
        assert!(got.1["error"]["limit"].is_string(), "{}", got.1);
    }
    assert_eq!(keys, want, "{}", got.1);
    assert!(
        !got.1["error"]["message"].as_str().unwrap().is_empty(),
        "{}",
        got.1
    );
}

#[track_caller]
fn assert_ok(got: &(StatusCode, Value)) {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

/// The document ids of a query's hits, best first.
fn doc_ids(response: &Value) -> Vec<String> {
    hits(response)
        .iter()
        .map(|h| h["document_id"].as_str().unwrap().to_owned())
        .collect()
}

fn hits(response: &Value) -> &Vec<Value> {
    response["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {response}"))
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Polls the collection until its approximate index is built and has caught up.
async fn wait_indexed(app: &App, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (status, info) = app.send(GET, &format!("/collections/{name}"), None).await;
        assert_eq!(status, StatusCode::OK, "{info}");
        let state = &info["index_state"];
        if state["status"] == "ready" && state["pending"] == 0 {
            return info;
        }
        assert!(Instant::now() < deadline, "index never caught up: {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Documents `d000`, `d001`, … holding the given vectors, with `metadata(i)`.
fn vector_docs(data: &[f32], dim: usize, metadata: impl Fn(usize) -> Value) -> Value {
    let docs: Vec<Value> = data
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| json!({"id": format!("d{i:03}"), "vector": v, "metadata": metadata(i)}))
        .collect();
    json!({ "documents": docs })
}

/// A service whose planner scans exactly only up to `exact_threshold` passages.
async fn app_with_threshold(dir: &std::path::Path, exact_threshold: usize) -> App {
    let mut settings = service_settings(dir);
    settings.planner.exact_threshold = exact_threshold;
    App::open(dir, common::tiny_worker(), settings, ApiSettings::default()).await
}

/// Every passage of a collection (of fewer than 1000), ordered by document then position.
async fn all_passages(app: &App, collection: &str, dim: usize) -> Vec<Value> {
    // The collection is small, so the scan is exact and k above the passage count returns
    // every passage, whatever the query; the vector only needs a direction.
    let k = 1000;
    let r = app
        .send(
            POST,
            &format!("/collections/{collection}/query"),
            Some(json!({"vector": vec![1.0; dim], "k": k, "include": ["text"]})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["plan"], "flat");
    let mut passages = hits(&r.1).clone();
    assert!(passages.len() < k, "k = {k} did not cover every passage");
    passages.sort_by_key(|h| {
        (
            h["document_id"].as_str().unwrap().to_owned(),
            h["passage"]["index"].as_u64().unwrap(),
        )
    });
    passages
}

/// Checks that a document's passages slice its text at their character offsets, in order, and
/// together leave out nothing but white space.
#[track_caller]
fn assert_spans_cover(text: &str, passages: &[Value]) {
    let chars: Vec<char> = text.chars().collect();
    let slice = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let mut covered = 0;
    for (i, p) in passages.iter().enumerate() {
        assert_eq!(p["passage"]["index"], i, "passage indices run from 0");
        let start = p["passage"]["start"].as_u64().unwrap() as usize;
        let end = p["passage"]["end"].as_u64().unwrap() as usize;
        assert!(start < end && end <= chars.len(), "span {start}..{end}");
        assert_eq!(
            p["text"].as_str().unwrap(),
            slice(start, end),
            "passage {i} is not text[{start}..{end}]"
        );
        if start > covered {
            let gap = slice(covered, start);
            assert!(gap.trim().is_empty(), "passage {i} skips {gap:?}");
        }
        assert!(end > covered, "passage {i} does not move forward");
        covered = end;
    }
    assert!(
        slice(covered, chars.len()).trim().is_empty(),
        "the tail is lost"
    );
}

// ---------------------------------------------------------------------------------------------
// Lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collection_and_document_lifecycle() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let (_, info) = app.send(GET, "/info", None).await;
    let model = info["model"].as_str().unwrap().to_owned();
    assert!(info["reranker"].is_null(), "no reranker runs: {info}");
    // The test model loads with the default precision, which every CPU runs.
    assert_eq!(info["precision"], "f32", "{info}");
    assert!(
        matches!(info["kernel"].as_str(), Some("avx512f" | "gemm")),
        "{info}"
    );

    // Create, create again identically (no body reads as `{}`), conflict.
    let created = app.send(PUT, "/collections/docs", Some(json!({}))).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    let c = &created.1;
    assert_eq!(c["name"], "docs");
    assert_eq!(c["source"], "text");
    assert_eq!(c["model"], model);
    assert_eq!(c["dimension"], TINY_DIM);
    assert_eq!(c["distance"], "cosine");
    assert_eq!(c["index"]["type"], "auto");
    assert_eq!(c["documents"], 0);
    assert_eq!(c["passages"], 0);
    assert_eq!(c["index_state"]["status"], "none");
    assert_eq!(c["index_state"]["ann"], Value::Null);
    assert!(c["memory_bytes"].is_u64());
    assert_eq!(
        c["chunking"]["max_tokens"],
        TINY_MAX_TOKENS - 2,
        "[CLS] and [SEP] are budgeted"
    );
    let again = app.send(PUT, "/collections/docs", None).await;
    assert_ok(&again);
    assert_eq!(again.1, created.1, "the same collection, unchanged");
    let conflict = app
        .send(PUT, "/collections/docs", Some(json!({"distance": "dot"})))
        .await;
    assert_error(&conflict, StatusCode::CONFLICT, "collection_conflict");
    let conflict = app
        .send(
            PUT,
            "/collections/docs",
            Some(json!({"index": {"type": "flat"}})),
        )
        .await;
    assert_error(&conflict, StatusCode::CONFLICT, "collection_conflict");
    assert_eq!(
        c["index"]["quantization"], "int8",
        "the default of new collections"
    );

    // A collection of full-precision vectors, asked for again without a quantization (as by a
    // client written before int8 became the default), is the same collection; asked for with
    // int8, it conflicts.
    let full = json!({"index": {"quantization": "none"}});
    let created = app.send(PUT, "/collections/full", Some(full)).await;
    assert_eq!(created.0, StatusCode::CREATED, "{}", created.1);
    assert_eq!(created.1["index"]["quantization"], "none");
    let again = app.send(PUT, "/collections/full", None).await;
    assert_ok(&again);
    assert_eq!(again.1, created.1, "the same collection, unchanged");
    let int8 = json!({"index": {"quantization": "int8"}});
    let conflict = app.send(PUT, "/collections/full", Some(int8)).await;
    assert_error(&conflict, StatusCode::CONFLICT, "collection_conflict");
    let conflict = app
        .send(PUT, "/collections/full", Some(json!({"distance": "dot"})))
        .await;
    assert_error(&conflict, StatusCode::CONFLICT, "collection_conflict");
    assert_ok(&app.send(DELETE, "/collections/full", None).await);

    let (status, list) = app.send(GET, "/collections", None).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docs"]);

    // Upsert with and without ids (an integer id is its decimal string), then with PUT.
    let up = app
        .send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [
                {"id": "a", "text": "the cat and the dog", "metadata": {"topic": "pets", "n": 1}},
                {"id": 7, "text": "the river and the mountain", "metadata": {"topic": "nature", "n": 2}},
                {"text": "music of the night", "metadata": {"topic": "art", "n": 3}},
            ]})),
        )
        .await;
    assert_ok(&up);
    assert_eq!(up.1["version"], 1, "the collection's first write");
    let done = up.1["documents"].as_array().unwrap();
    assert_eq!(done.len(), 3);
    assert_eq!(done[0]["id"], "a");

    // Queries say the version they answered at, and may ask for one.
    let at = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "cat", "k": 1, "consistency": {"min_version": 1}})),
        )
        .await;
    assert_ok(&at);
    assert_eq!(at.1["version"], 1);
    let bad = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "cat", "k": 1, "consistency": {"min_version": -1}})),
        )
        .await;
    assert_error(&bad, StatusCode::BAD_REQUEST, "invalid_request");
    let (status, cluster) = app.send(GET, "/cluster", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cluster["store"], "sqlite");
    assert_eq!(cluster["nodes"][0]["collections"][0]["name"], "docs");
    assert_eq!(cluster["nodes"][0]["collections"][0]["applied"], 1);
    assert_eq!(cluster["nodes"][0]["collections"][0]["lag"], 0);
    assert_eq!(cluster["collections"][0]["version"], 1);
    assert_eq!(done[1]["id"], "7");
    let generated = done[2]["id"].as_str().unwrap().to_owned();
    assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
    for d in done {
        assert_eq!(d["replaced"], false);
        assert_eq!(d["passages"], 1, "short texts are one passage: {d}");
    }
    let up = app
        .send(
            PUT,
            "/collections/docs/documents",
            Some(json!({"documents": [
                {"id": "d", "text": "the old book in the house", "metadata": {"topic": "art", "n": 4}},
            ]})),
        )
        .await;
    assert_ok(&up);
    assert_eq!(up.1["documents"][0]["id"], "d");

    let (_, c) = app.send(GET, "/collections/docs", None).await;
    assert_eq!(
        (c["documents"].as_u64(), c["passages"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(c["memory_bytes"].as_u64().unwrap() >= (4 * TINY_DIM * 4) as u64);
    assert_eq!(
        c["index_state"]["status"], "none",
        "small: exact scans only"
    );

    // Read one document, then several by ids and by filter, a page at a time.
    let (status, doc) = app.send(GET, "/collections/docs/documents/a", None).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["id"], "a");
    assert_eq!(doc["text"], "the cat and the dog");
    assert_eq!(doc["metadata"], json!({"topic": "pets", "n": 1}));
    assert_eq!(doc["passages"], 1);
    let (status, doc) = app.send(GET, "/collections/docs/documents/7", None).await;
    assert_eq!((status, &doc["id"]), (StatusCode::OK, &json!("7")));

    let r = app
        .send(
            POST,
            "/collections/docs/documents/get",
            Some(json!({"ids": ["d", "missing", "a"]})),
        )
        .await;
    assert_ok(&r);
    let got: Vec<&str> = r.1["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["d", "a"], "request order, missing ids left out");
    assert_eq!(r.1["total"], 2);

    let mut art = Vec::new();
    let mut after = Value::Null;
    for page in 0.. {
        assert!(page < 3, "pagination does not end");
        let r = app
            .send(
                POST,
                "/collections/docs/documents/get",
                Some(json!({"filter": {"n": {"$gte": 3}}, "limit": 1, "after": after})),
            )
            .await;
        assert_ok(&r);
        assert_eq!(r.1["total"], 2);
        let docs = r.1["documents"].as_array().unwrap();
        assert_eq!(docs.len(), 1);
        art.push(docs[0]["id"].as_str().unwrap().to_owned());
        after = r.1["next_after"].clone();
        if after.is_null() {
            break;
        }
        assert_eq!(after, docs[0]["id"]);
    }
    let mut want = vec![generated.clone(), "d".to_owned()];
    want.sort();
    assert_eq!(art, want, "id order over pages");
    let r = app
        .send(POST, "/collections/docs/documents/get", None)
        .await;
    assert_ok(&r);
    assert_eq!(r.1["total"], 4, "no selector: every document");

    // Query by text: the document with the same text is the top hit.
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "the cat and the dog", "k": 10, "mode": "dense"})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["plan"], "flat");
    assert_eq!(hits(&r.1).len(), 4, "k is larger than the collection");
    let top = &hits(&r.1)[0];
    assert_eq!(top["id"], "a#0");
    assert_eq!(top["document_id"], "a");
    assert_eq!(top["text"], "the cat and the dog");
    assert_eq!(top["metadata"], json!({"topic": "pets", "n": 1}));
    assert!(top.get("vector").is_none(), "vectors only on request");
    assert!(top["score"].as_f64().unwrap() > 0.999, "{top}");
    let scores: Vec<f64> = hits(&r.1)
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    for h in hits(&r.1) {
        let (s, d) = (
            h["score"].as_f64().unwrap(),
            h["distance"].as_f64().unwrap(),
        );
        assert!(
            (d - (1.0 - s)).abs() < 1e-5,
            "cosine distance is 1 - score: {h}"
        );
    }

    // Query by the stored vector, with every field, and with none.
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "the river and the mountain", "k": 1, "include": ["vector"]})),
        )
        .await;
    assert_ok(&r);
    let hit = &hits(&r.1)[0];
    assert_eq!(hit["document_id"], "7");
    assert!(
        hit.get("text").is_none() && hit.get("metadata").is_none(),
        "{hit}"
    );
    let vector = floats(&hit["vector"]);
    assert_eq!(vector.len(), TINY_DIM);
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"vector": vector, "k": 2, "include": ["text", "metadata", "vector"]})),
        )
        .await;
    assert_ok(&r);
    let hit = &hits(&r.1)[0];
    assert_eq!(hit["document_id"], "7");
    assert!((hit["score"].as_f64().unwrap() - 1.0).abs() < 1e-5, "{hit}");
    assert_eq!(hit["text"], "the river and the mountain");
    assert_eq!(hit["metadata"], json!({"topic": "nature", "n": 2}));
    assert_eq!(floats(&hit["vector"]), vector);
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"vector": vector, "k": 1, "include": []})),
        )
        .await;
    assert_ok(&r);
    let keys: BTreeSet<&str> = hits(&r.1)[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "document_id", "passage", "score", "distance"])
    );

    // Upsert replaces: more passages, and the old text is gone from queries.
    let long = "the quick brown fox jumps over the lazy dog ".repeat(10);
    let long = long.trim_end();
    let up = app
        .send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [{"id": "a", "text": long, "metadata": {"topic": "pets", "n": 5}}]})),
        )
        .await;
    assert_ok(&up);
    let new_passages = up.1["documents"][0]["passages"].as_u64().unwrap();
    assert_eq!(up.1["documents"][0]["replaced"], true);
    assert!(new_passages > 1, "90 word tokens are several passages");
    let (_, c) = app.send(GET, "/collections/docs", None).await;
    assert_eq!(c["documents"], 4);
    assert_eq!(c["passages"], 3 + new_passages);
    let (_, doc) = app.send(GET, "/collections/docs/documents/a", None).await;
    assert_eq!(doc["text"], long);
    assert_eq!(doc["passages"], new_passages);
    assert_eq!(doc["metadata"]["n"], 5);
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "the cat and the dog", "k": 100})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(hits(&r.1).len() as u64, 3 + new_passages);
    for h in hits(&r.1) {
        assert_ne!(
            h["text"], "the cat and the dog",
            "the old passage is still served"
        );
        if h["document_id"] == "a" {
            assert_eq!(h["metadata"]["n"], 5, "stale metadata: {h}");
        }
    }

    // Delete by ids (unknown ones ignored), then by filter.
    let r = app
        .send(
            POST,
            "/collections/docs/documents/delete",
            Some(json!({"ids": [7, "missing"]})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["deleted"], json!(["7"]));
    let r = app
        .send(
            POST,
            "/collections/docs/documents/delete",
            Some(json!({"filter": {"topic": "art"}})),
        )
        .await;
    assert_ok(&r);
    let deleted: BTreeSet<&str> = r.1["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(deleted, BTreeSet::from(["d", generated.as_str()]));
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "the river and the mountain", "k": 100})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(hits(&r.1).len() as u64, new_passages);
    assert!(doc_ids(&r.1).iter().all(|id| id == "a"), "{}", r.1);
    let gone = app.send(GET, "/collections/docs/documents/7", None).await;
    assert_error(&gone, StatusCode::NOT_FOUND, "document_not_found");
    let (_, c) = app.send(GET, "/collections/docs", None).await;
    assert_eq!(
        (c["documents"].as_u64(), c["passages"].as_u64()),
        (Some(1), Some(new_passages))
    );

    // Delete the collection.
    let r = app.send(DELETE, "/collections/docs", None).await;
    assert_ok(&r);
    assert_eq!(r.1, json!({"deleted": "docs"}));
    for (method, uri) in [
        (GET, "/collections/docs"),
        (DELETE, "/collections/docs"),
        (GET, "/collections/docs/documents/a"),
    ] {
        let r = app.send(method, uri, None).await;
        assert_error(&r, StatusCode::NOT_FOUND, "collection_not_found");
    }
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "cat"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "collection_not_found");
    let (_, list) = app.send(GET, "/collections", None).await;
    assert_eq!(list["collections"], json!([]));
    // A collection of the same name starts empty.
    let r = app.send(PUT, "/collections/docs", None).await;
    assert_eq!(r.0, StatusCode::CREATED);
    assert_eq!(
        (r.1["documents"].as_u64(), r.1["passages"].as_u64()),
        (Some(0), Some(0))
    );
    app.close().await;
}

/// The ids of a `documents/get` page and its cursor.
async fn page(app: &App, body: Value) -> (Vec<String>, Value) {
    let r = app
        .send(POST, "/collections/pages/documents/get", Some(body))
        .await;
    assert_ok(&r);
    let ids = r.1["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    (ids, r.1["next_after"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_continues_after_a_deleted_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let r = app
        .send(PUT, "/collections/pages", Some(json!({"dimension": 2})))
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    let docs: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("p{i}"), "vector": [1, i], "metadata": {"even": i % 2 == 0}}))
        .collect();
    let r = app
        .send(
            POST,
            "/collections/pages/documents",
            Some(json!({ "documents": docs })),
        )
        .await;
    assert_ok(&r);
    let delete = |id: &str| {
        app.send(
            POST,
            "/collections/pages/documents/delete",
            Some(json!({ "ids": [id] })),
        )
    };
    let strings = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // Every document, by a filter and without one: the cursor is a position in id order,
    // which outlives the document it names.
    for filter in [json!({"even": {"$in": [true, false]}}), Value::Null] {
        let (ids, after) = page(&app, json!({"filter": filter, "limit": 3})).await;
        assert_eq!(ids, strings(&["p0", "p1", "p2"]));
        assert_eq!(after, "p2");
        assert_ok(&delete("p2").await);
        let (ids, after) = page(&app, json!({"filter": filter, "limit": 3, "after": after})).await;
        assert_eq!(ids, strings(&["p3", "p4", "p5"]), "filter {filter}");
        assert_eq!(after, "p5");
        let r = app
            .send(
                POST,
                "/collections/pages/documents",
                Some(json!({"documents": [{"id": "p2", "vector": [1, 2], "metadata": {"even": true}}]})),
            )
            .await;
        assert_ok(&r);
    }

    // By ids: the cursor is a position in the request's order.
    let ids: Vec<String> = (0..10).rev().map(|i| format!("p{i}")).collect();
    let (got, after) = page(&app, json!({"ids": ids, "limit": 3})).await;
    assert_eq!(got, strings(&["p9", "p8", "p7"]));
    assert_eq!(after, "p7");
    assert_ok(&delete("p7").await);
    let (got, after) = page(&app, json!({"ids": ids, "limit": 3, "after": after})).await;
    assert_eq!(got, strings(&["p6", "p5", "p4"]));
    let (got, after) = page(&app, json!({"ids": ids, "limit": 3, "after": after})).await;
    assert_eq!(got, strings(&["p3", "p2", "p1"]));
    let (got, after) = page(&app, json!({"ids": ids, "limit": 3, "after": after})).await;
    assert_eq!((got, after), (strings(&["p0"]), Value::Null));
    // A cursor that is not among the ids asked for cannot be placed: refused, not restarted.
    let r = app
        .send(
            Method::POST,
            "/collections/pages/documents/get",
            Some(json!({"ids": ["p1", "p2"], "limit": 1, "after": "p9"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_parameter");
    // An id asked for twice is answered once, and paging past it ends.
    let twice = json!(["p1", "p1", "p2", "p1"]);
    let (got, after) = page(&app, json!({"ids": twice, "limit": 1})).await;
    assert_eq!((got, &after), (strings(&["p1"]), &json!("p1")));
    let (got, after) = page(&app, json!({"ids": twice, "limit": 1, "after": after})).await;
    assert_eq!((got, after), (strings(&["p2"]), Value::Null));
    let r = app
        .send(
            Method::POST,
            "/collections/pages/documents/get",
            Some(json!({"ids": twice})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["total"], 2, "{}", r.1);
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Filters

const FILTER_DOCS: usize = 200;
const FILTER_DIM: usize = 8;
const COLORS: [&str; 4] = ["red", "green", "blue", "amber"];

/// Metadata of filter document `i`: a number, a float, a string, a boolean, and a field only
/// some documents have.
fn filter_metadata(i: usize) -> Value {
    let mut m = json!({
        "n": i,
        "price": i as f64 / 2.0,
        "color": COLORS[i % 4],
        "even": i.is_multiple_of(2),
    });
    match i % 10 {
        0 => m["tag"] = json!("x"),
        5 => m["tag"] = json!("y"),
        _ => {}
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_filter_operator_selects_what_it_says() {
    let dir = tempfile::tempdir().unwrap();
    // Above the threshold, with an HNSW graph, so that broad filters search the graph.
    let app = app_with_threshold(dir.path(), 20).await;
    let r = app
        .send(
            PUT,
            "/collections/meta",
            Some(json!({"dimension": FILTER_DIM, "index": {"type": "hnsw"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let data = clustered_vectors(FILTER_DOCS, FILTER_DIM, 6, 0.5, 11);
    let r = app
        .send(
            POST,
            "/collections/meta/documents",
            Some(vector_docs(&data, FILTER_DIM, filter_metadata)),
        )
        .await;
    assert_ok(&r);
    wait_indexed(&app, "meta").await;

    type Pred = fn(usize) -> bool;
    let cases: Vec<(Value, Pred)> = vec![
        // Implicit equality.
        (json!({"color": "red"}), |i| i % 4 == 0),
        (json!({"even": true}), |i| i % 2 == 0),
        (json!({"n": 42}), |i| i == 42),
        (json!({"color": {"$eq": "green"}}), |i| i % 4 == 1),
        (json!({"price": {"$eq": 10}}), |i| i == 20),
        (json!({"color": {"$ne": "red"}}), |i| i % 4 != 0),
        (json!({"even": {"$ne": true}}), |i| i % 2 == 1),
        // A missing field is null: it is not "x".
        (json!({"tag": {"$ne": "x"}}), |i| i % 10 != 0),
        (json!({"n": {"$gt": 150}}), |i| i > 150),
        (json!({"n": {"$gte": 150}}), |i| i >= 150),
        (json!({"n": {"$lt": 10}}), |i| i < 10),
        (json!({"n": {"$lte": 10}}), |i| i <= 10),
        (json!({"price": {"$gt": 20.25, "$lte": 30}}), |i| {
            (41..=60).contains(&i)
        }),
        (json!({"color": {"$gte": "green"}}), |i| {
            i % 4 == 0 || i % 4 == 1
        }),
        (json!({"color": {"$lt": "blue"}}), |i| i % 4 == 3),
        // Ordering never matches across types, nor a missing field.
        (json!({"n": {"$gt": "5"}}), |_| false),
        (json!({"tag": {"$lt": "z"}}), |i| i % 5 == 0),
        (json!({"color": {"$in": ["red", "blue"]}}), |i| {
            i % 4 == 0 || i % 4 == 2
        }),
        // Numbers compare as numbers (4.0 is 4), never as strings.
        (json!({"n": {"$in": [3, 4.0, "5"]}}), |i| i == 3 || i == 4),
        (json!({"n": {"$in": []}}), |_| false),
        (json!({"color": {"$nin": ["red", "blue"]}}), |i| {
            i % 4 == 1 || i % 4 == 3
        }),
        (json!({"tag": {"$nin": ["x", "y"]}}), |i| i % 5 != 0),
        (json!({"$and": [{"even": true}, {"n": {"$lt": 50}}]}), |i| {
            i % 2 == 0 && i < 50
        }),
        // Several fields in one object: an implicit $and.
        (json!({"even": false, "color": "green"}), |i| i % 4 == 1),
        (
            json!({"$or": [{"n": {"$lt": 5}}, {"color": "amber", "n": {"$gte": 190}}]}),
            |i| i < 5 || (i % 4 == 3 && i >= 190),
        ),
        (
            json!({"$and": [{"$or": [{"tag": "x"}, {"tag": "y"}]}, {"n": {"$gte": 100}}]}),
            |i| i % 5 == 0 && i >= 100,
        ),
        (json!({}), |_| true),
    ];
    let query = &data[..FILTER_DIM];
    for (filter, pred) in &cases {
        let want: BTreeSet<String> = (0..FILTER_DOCS)
            .filter(|&i| pred(i))
            .map(|i| format!("d{i:03}"))
            .collect();

        // k covers every document: the results are exactly the matches.
        let r = app
            .send(
                POST,
                "/collections/meta/query",
                Some(json!({"vector": query, "k": FILTER_DOCS, "filter": filter})),
            )
            .await;
        assert_ok(&r);
        let got: BTreeSet<String> = doc_ids(&r.1).into_iter().collect();
        assert_eq!(got.len(), hits(&r.1).len(), "{filter}: a document twice");
        assert_eq!(got, want, "query filter {filter}");

        // Fewer than the matches: exactly k of them, best first.
        let k = 10;
        let r = app
            .send(
                POST,
                "/collections/meta/query",
                Some(json!({"vector": query, "k": k, "filter": filter, "include": ["metadata"]})),
            )
            .await;
        assert_ok(&r);
        assert_eq!(hits(&r.1).len(), want.len().min(k), "{filter}: {}", r.1);
        for h in hits(&r.1) {
            let i = h["metadata"]["n"].as_u64().unwrap() as usize;
            assert!(pred(i), "{filter} let through {h}");
        }
        let scores: Vec<f64> = hits(&r.1)
            .iter()
            .map(|h| h["score"].as_f64().unwrap())
            .collect();
        assert!(
            scores.windows(2).all(|w| w[0] >= w[1]),
            "{filter}: {scores:?}"
        );

        // The same selection when reading documents.
        let r = app
            .send(
                POST,
                "/collections/meta/documents/get",
                Some(json!({"filter": filter, "limit": 1000})),
            )
            .await;
        assert_ok(&r);
        let got: Vec<String> = r.1["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            got,
            want.iter().cloned().collect::<Vec<_>>(),
            "get filter {filter}"
        );
        assert_eq!(r.1["total"], want.len());
    }

    // The planner: a broad filter searches the graph, a selective one scans its matches.
    let plan = |filter: Value| {
        let app = &app;
        async move {
            let r = app
                .send(
                    POST,
                    "/collections/meta/query",
                    Some(json!({"vector": query, "k": 5, "filter": filter})),
                )
                .await;
            assert_ok(&r);
            assert_eq!(hits(&r.1).len(), 5);
            r.1["plan"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(plan(json!({"even": true})).await, "hnsw");
    assert_eq!(plan(json!({"n": {"$lt": 5}})).await, "flat");

    // Malformed filters, wherever a filter is taken.
    let bad = [
        json!({"n": {"$regex": "1"}}),
        json!({"$not": {"n": 1}}),
        json!({"n": {"$gt": true}}),
        json!({"n": {"$lte": null}}),
        json!({"n": {"$in": 3}}),
        json!({"n": {"$nin": [[1]]}}),
        json!({"n": {"$eq": {"a": 1}}}),
        json!({"n": [1, 2]}),
        json!({"$and": []}),
        json!({"$or": {"n": 1}}),
        json!({"": 1}),
        json!("red"),
        json!(3),
    ];
    for filter in &bad {
        for (uri, body) in [
            (
                "/collections/meta/query",
                json!({"vector": query, "filter": filter}),
            ),
            ("/collections/meta/documents/get", json!({"filter": filter})),
            (
                "/collections/meta/documents/delete",
                json!({"filter": filter}),
            ),
        ] {
            let r = app.send(POST, uri, Some(body)).await;
            assert_error(&r, StatusCode::BAD_REQUEST, "bad_filter");
        }
    }
    let (_, c) = app.send(GET, "/collections/meta", None).await;
    assert_eq!(
        c["documents"], FILTER_DOCS,
        "a refused delete deleted nothing"
    );
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Planner

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planner_reports_the_path_and_ann_agrees_with_exact_search() {
    const DIM: usize = 16;
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_threshold(dir.path(), 50).await;
    let data = clustered_vectors(N, DIM, 10, 0.5, 7);
    let docs = vector_docs(&data, DIM, |i| json!({"i": i}));
    for (name, index, n) in [
        ("small", json!({"type": "auto"}), 20),
        ("graph", json!({"type": "hnsw", "quantization": "none"}), N),
        ("int8", json!({"type": "hnsw"}), N),
        ("auto", json!({"type": "auto"}), N),
        ("cells", json!({"type": "ivf"}), N),
        ("scan", json!({"type": "flat"}), N),
    ] {
        let r = app
            .send(
                PUT,
                &format!("/collections/{name}"),
                Some(json!({"dimension": DIM, "index": index})),
            )
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        assert_eq!(r.1["source"], "vector");
        let quantization = match (&index["type"], &index["quantization"]) {
            (t, Value::Null) if t == "hnsw" || t == "auto" => json!("int8"),
            (_, q) => q.clone(),
        };
        assert_eq!(r.1["index"]["quantization"], quantization, "{name}");
        let some = json!({"documents": docs["documents"].as_array().unwrap()[..n]});
        let r = app
            .send(POST, &format!("/collections/{name}/documents"), Some(some))
            .await;
        assert_ok(&r);
    }

    let query = |name: &str, i: usize, exact: bool| {
        let app = &app;
        let uri = format!("/collections/{name}/query");
        let v = data[i * DIM..(i + 1) * DIM].to_vec();
        async move {
            let r = app
                .send(
                    POST,
                    &uri,
                    Some(json!({"vector": v, "k": 5, "params": {"exact": exact}})),
                )
                .await;
            assert_ok(&r);
            assert_eq!(hits(&r.1).len(), 5);
            (r.1["plan"].as_str().unwrap().to_owned(), doc_ids(&r.1))
        }
    };

    let (_, small) = app.send(GET, "/collections/small", None).await;
    assert_eq!(small["index_state"]["status"], "none");
    assert_eq!(query("small", 3, false).await.0, "flat", "small collection");
    let (_, scan) = app.send(GET, "/collections/scan", None).await;
    assert_eq!(scan["index_state"]["status"], "none");
    assert_eq!(scan["index_state"]["ann"], Value::Null);
    assert_eq!(query("scan", 3, false).await.0, "flat", "flat index");

    for (name, ann) in [
        ("graph", "hnsw"),
        ("int8", "hnsw"),
        ("auto", "hnsw"),
        ("cells", "ivf"),
    ] {
        let info = wait_indexed(&app, name).await;
        assert_eq!(info["index_state"]["ann"], ann, "{info}");
        assert_eq!(info["index_state"]["indexed"], N);
        assert_eq!(info["passages"], N);
        for i in [0, 57, 123, 250, 299] {
            let (plan, approx) = query(name, i, false).await;
            assert_eq!(plan, ann, "{name}");
            let (plan, exact) = query(name, i, true).await;
            assert_eq!(plan, "flat", "params.exact on {name}");
            let own = format!("d{i:03}");
            assert_eq!(exact[0], own, "exact search finds the vector itself");
            assert_eq!(approx[0], exact[0], "{name}: top hit of {own}");
        }
    }
    // Oversampling reaches the quantized index: rescoring every candidate gives the exact
    // answer on this small set.
    let v = data[..DIM].to_vec();
    let r = app
        .send(
            POST,
            "/collections/int8/query",
            Some(json!({"vector": v, "k": 5, "params": {"oversampling": 60, "ef": 300}})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["plan"], "hnsw");
    assert_eq!(doc_ids(&r.1), query("int8", 0, true).await.1);

    // A write after the build is pending, and found at once beside the index.
    let fresh: Vec<f32> = (0..DIM).map(|j| if j == 0 { 1.0 } else { 0.0 }).collect();
    let r = app
        .send(
            POST,
            "/collections/graph/documents",
            Some(json!({"documents": [{"id": "fresh", "vector": fresh}]})),
        )
        .await;
    assert_ok(&r);
    let r = app
        .send(
            POST,
            "/collections/graph/query",
            Some(json!({"vector": fresh, "k": 3})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["plan"], "hnsw");
    assert_eq!(doc_ids(&r.1)[0], "fresh");
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Restart

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_restores_without_re_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = service_settings(dir.path());
    settings.planner.exact_threshold = 50;
    let open = |embedder: std::sync::Arc<dyn vicinity::embed::Embedder>| {
        App::open(
            dir.path(),
            embedder,
            settings.clone(),
            ApiSettings::default(),
        )
    };
    let app = open(common::tiny_worker()).await;

    // A text collection, and a vector collection large enough for a graph (and its snapshot).
    let words = [
        "cat", "dog", "house", "tree", "river", "mountain", "city", "music", "book", "water",
        "fire", "light", "night", "day", "time", "year",
    ];
    let docs: Vec<Value> = (0..words.len())
        .map(|i| {
            let text = format!(
                "the {} and the {} in the {}",
                words[i],
                words[(i + 3) % words.len()],
                words[(i + 7) % words.len()]
            );
            json!({"id": format!("t{i}"), "text": text, "metadata": {"i": i}})
        })
        .collect();
    assert_eq!(
        app.send(PUT, "/collections/notes", None).await.0,
        StatusCode::CREATED
    );
    let r = app
        .send(
            POST,
            "/collections/notes/documents",
            Some(json!({ "documents": docs })),
        )
        .await;
    assert_ok(&r);
    const DIM: usize = 12;
    let data = clustered_vectors(120, DIM, 5, 0.5, 3);
    let r = app
        .send(
            PUT,
            "/collections/graph",
            Some(json!({"dimension": DIM, "index": {"type": "hnsw"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    let r = app
        .send(
            POST,
            "/collections/graph/documents",
            Some(vector_docs(&data, DIM, |i| json!({"i": i}))),
        )
        .await;
    assert_ok(&r);
    wait_indexed(&app, "graph").await;

    // Query vectors for the text collection, from the model itself.
    let questions = [
        "the fire at night",
        "a book in the city",
        "water over the mountain",
    ];
    let r = app
        .send(POST, "/v1/embeddings", Some(json!({"input": questions})))
        .await;
    assert_ok(&r);
    let vectors: Vec<Vec<f32>> = r.1["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| floats(&d["embedding"]))
        .collect();
    let mut requests: Vec<(&str, Value)> = vectors
        .iter()
        .map(|v| ("notes", json!({"vector": v, "k": 5})))
        .collect();
    for i in [0, 42, 99] {
        let v = &data[i * DIM..(i + 1) * DIM];
        requests.push(("graph", json!({"vector": v, "k": 10})));
    }
    let text_query = json!({"query": questions[0], "k": 5});
    let run = |app: &App| {
        let requests = requests.clone();
        let text_query = text_query.clone();
        let router = app.router.clone();
        async move {
            let mut answers = Vec::new();
            for (name, body) in requests {
                let r = send(
                    &router,
                    POST,
                    &format!("/collections/{name}/query"),
                    Some(body),
                )
                .await;
                assert_ok(&r);
                answers.push(r.1);
            }
            let r = send(&router, POST, "/collections/notes/query", Some(text_query)).await;
            assert_ok(&r);
            (answers, r.1)
        }
    };
    let (before, text_before) = run(&app).await;
    assert_eq!(before[3]["plan"], "hnsw");
    let (_, notes_before) = app.send(GET, "/collections/notes", None).await;
    app.close().await;

    let counting = Counting::new(common::tiny_worker());
    let app = open(counting.clone()).await;
    assert_eq!(counting.calls(), 0, "opening embeds nothing");
    let (_, notes) = app.send(GET, "/collections/notes", None).await;
    assert_eq!(notes["documents"], notes_before["documents"]);
    assert_eq!(notes["passages"], notes_before["passages"]);
    let (_, graph) = app.send(GET, "/collections/graph", None).await;
    assert_eq!(graph["index_state"]["ann"], "hnsw", "{graph}");
    assert_eq!(
        graph["index_state"]["indexed"], 120,
        "restored from the snapshot"
    );

    let (after, text_after) = run(&app).await;
    assert_eq!(counting.calls(), 1, "only the text query was embedded");
    for (b, a) in before
        .iter()
        .chain([&text_before])
        .zip(after.iter().chain([&text_after]))
    {
        assert_eq!(a["plan"], b["plan"]);
        assert_eq!(doc_ids(a), doc_ids(b), "results changed across the restart");
        for (x, y) in hits(a).iter().zip(hits(b)) {
            let (x, y) = (x["score"].as_f64().unwrap(), y["score"].as_f64().unwrap());
            assert!((x - y).abs() < 1e-6, "score {y} became {x}");
        }
    }
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Long documents

/// The long-document fixture: a title, then eleven unrelated sections of one paragraph each.
fn long_document() -> String {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/long-document.txt");
    std::fs::read_to_string(path).expect("the long-document fixture")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// Maximal marginal relevance as LangChain's `maximal_marginal_relevance` computes it, in
/// f64: the indexes of the `k` candidates chosen, in order.
fn mmr_reference(query: &[f32], cands: &[Vec<f32>], k: usize, lambda: f64) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::new();
    while chosen.len() < k.min(cands.len()) {
        let mut best = (usize::MAX, f64::NEG_INFINITY);
        for (i, c) in cands
            .iter()
            .enumerate()
            .filter(|(i, _)| !chosen.contains(i))
        {
            let score = match chosen
                .iter()
                .map(|&j| cosine(c, &cands[j]))
                .reduce(f64::max)
            {
                None => cosine(query, c),
                Some(redundant) => lambda * cosine(query, c) - (1.0 - lambda) * redundant,
            };
            if score > best.1 {
                best = (i, score);
            }
        }
        chosen.push(best.0);
    }
    chosen
}

fn passage_ids(response: &Value) -> Vec<String> {
    hits(response)
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mmr_and_grouping_shape_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    assert_eq!(
        app.send(PUT, "/collections/long", None).await.0,
        StatusCode::CREATED
    );
    // Sections of a long document, each split into many passages by the tiny model.
    let sections: Vec<String> = long_document().split("\n\n").map(str::to_owned).collect();
    let docs: Vec<Value> = sections
        .chunks(2)
        .take(5)
        .enumerate()
        .map(|(i, s)| {
            json!({"id": format!("s{i}"), "text": s.join("\n\n"), "metadata": {"part": i % 2}})
        })
        .collect();
    assert_ok(
        &app.send(
            POST,
            "/collections/long/documents",
            Some(json!({ "documents": docs })),
        )
        .await,
    );
    let r = app
        .send(
            POST,
            "/v1/embeddings",
            Some(json!({"input": ["a starter of flour and water"]})),
        )
        .await;
    assert_ok(&r);
    let q = floats(&r.1["data"][0]["embedding"]);
    let query = |extra: Value| {
        let mut body = json!({"vector": q, "params": {"exact": true}, "include": ["vector"]});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let app = &app;
        async move {
            let r = app.send(POST, "/collections/long/query", Some(body)).await;
            assert_ok(&r);
            r.1
        }
    };
    let everything = query(json!({"k": 1000})).await;
    let ranked = hits(&everything);
    assert!(ranked.len() > 30, "{} passages", ranked.len());

    // Grouping: the best passages of k distinct documents, from the full ranking.
    for (k, size) in [(3usize, 1usize), (3, 2), (4, 3), (9, 2)] {
        let mut expected: Vec<(String, Vec<String>)> = Vec::new();
        for h in ranked {
            let (doc, id) = (
                h["document_id"].as_str().unwrap(),
                h["id"].as_str().unwrap(),
            );
            match expected.iter().position(|(d, _)| d == doc) {
                Some(g) if expected[g].1.len() < size => expected[g].1.push(id.into()),
                Some(_) => {}
                None if expected.len() < k => expected.push((doc.into(), vec![id.into()])),
                None => {}
            }
        }
        let r = query(json!({"k": k, "group_by": "document", "group_size": size})).await;
        let expected: Vec<String> = expected.into_iter().flat_map(|(_, ps)| ps).collect();
        assert_eq!(passage_ids(&r), expected, "k {k}, group_size {size}");
        let mut docs = doc_ids(&r);
        docs.dedup();
        assert_eq!(
            docs.len(),
            k.min(5),
            "k {k}: distinct documents, each in one run"
        );
    }

    // MMR: LangChain's choice among the fetch_k nearest.
    for (k, fetch_k, lambda) in [
        (4usize, 10usize, 0.5f64),
        (6, 20, 0.25),
        (5, 5, 0.9),
        (3, 12, 0.0),
    ] {
        let candidates = &ranked[..fetch_k];
        let vectors: Vec<Vec<f32>> = candidates.iter().map(|h| floats(&h["vector"])).collect();
        let expected: Vec<String> = mmr_reference(&q, &vectors, k, lambda)
            .into_iter()
            .map(|i| candidates[i]["id"].as_str().unwrap().to_owned())
            .collect();
        let r = query(json!({"k": k, "mmr": {"lambda": lambda, "fetch_k": fetch_k}})).await;
        assert_eq!(
            passage_ids(&r),
            expected,
            "k {k}, fetch_k {fetch_k}, lambda {lambda}"
        );
    }
    // lambda 1 is the plain ranking; the default fetch_k is 20.
    let r = query(json!({"k": 7, "mmr": {"lambda": 1.0}})).await;
    assert_eq!(passage_ids(&r), passage_ids(&query(json!({"k": 7})).await));
    let r = query(json!({"k": 4, "mmr": {}})).await;
    let vectors: Vec<Vec<f32>> = ranked[..20].iter().map(|h| floats(&h["vector"])).collect();
    let expected: Vec<String> = mmr_reference(&q, &vectors, 4, 0.5)
        .into_iter()
        .map(|i| ranked[i]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(passage_ids(&r), expected);

    // With a filter, both choose among the matching passages only.
    let even = json!({"part": 0});
    let matching = query(json!({"k": 1000, "filter": even})).await;
    let matching = hits(&matching);
    let mut best_of_each: Vec<&Value> = Vec::new();
    for h in matching {
        if best_of_each
            .iter()
            .all(|b| b["document_id"] != h["document_id"])
        {
            best_of_each.push(h);
        }
    }
    let docs: Vec<&str> = best_of_each
        .iter()
        .map(|h| h["document_id"].as_str().unwrap())
        .collect();
    let mut sorted = docs.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, ["s0", "s2", "s4"]);
    let grouped = json!({"k": 3, "filter": even, "group_by": "document"});
    let r = query(grouped.clone()).await;
    let expected: Vec<&str> = best_of_each
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(passage_ids(&r), expected);
    let vectors: Vec<Vec<f32>> = matching[..10]
        .iter()
        .map(|h| floats(&h["vector"]))
        .collect();
    let expected: Vec<String> = mmr_reference(&q, &vectors, 4, 0.5)
        .into_iter()
        .map(|i| matching[i]["id"].as_str().unwrap().to_owned())
        .collect();
    let diverse = json!({"k": 4, "filter": even, "mmr": {"fetch_k": 10}});
    assert_eq!(passage_ids(&query(diverse.clone()).await), expected);

    // In a batch, each query is answered as it is alone.
    let batch: Vec<Value> = [grouped, diverse]
        .into_iter()
        .map(|mut body| {
            let extra = json!({"vector": q, "params": {"exact": true}, "include": ["vector"]});
            body.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            body
        })
        .collect();
    let r = app
        .send(
            POST,
            "/collections/long/query/batch",
            Some(json!({ "queries": batch })),
        )
        .await;
    assert_ok(&r);
    let answers = r.1["results"].as_array().unwrap();
    assert_eq!(
        passage_ids(&answers[0]),
        passage_ids(&query(json!({"k": 3, "filter": even, "group_by": "document"})).await)
    );
    assert_eq!(passage_ids(&answers[1]), expected);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_text_is_split_into_passages_at_char_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    assert_eq!(
        app.send(PUT, "/collections/long", None).await.0,
        StatusCode::CREATED
    );
    // The title and the first section; with the tiny model's 32 tokens (mostly single
    // letters), many passages. A non-ASCII character checks that offsets count characters.
    let text: String = long_document()
        .split("\n\n")
        .take(2)
        .collect::<Vec<_>>()
        .join("\n\n")
        .replacen("Sourdough", "Sóurdough", 1);
    let r = app
        .send(
            POST,
            "/collections/long/documents",
            Some(json!({"documents": [{"id": "long", "text": text}]})),
        )
        .await;
    assert_ok(&r);
    let n = r.1["documents"][0]["passages"].as_u64().unwrap() as usize;
    assert!(n >= 10, "{n} passages");
    let passages = all_passages(&app, "long", TINY_DIM).await;
    assert_eq!(passages.len(), n);
    assert_spans_cover(&text, &passages);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_model_finds_a_section_in_the_middle_of_a_long_document() {
    let model = real_model_dir();
    if !model.join("config.json").is_file() {
        eprintln!(
            "SKIPPED: the real model is not at {}; run `cargo run -- model fetch` (or set \
             VICINITY_MODEL to its directory) to run this test",
            model.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let embedder = common::worker(&model, WorkerOptions::default());
    let app = App::open(
        dir.path(),
        embedder,
        ServiceSettings::new(dir.path()),
        ApiSettings::default(),
    )
    .await;
    assert_eq!(
        app.send(PUT, "/collections/guide", None).await.0,
        StatusCode::CREATED
    );
    let text = long_document();
    let r = app
        .send(
            POST,
            "/collections/guide/documents",
            Some(json!({"documents": [{"id": "guide", "text": text}]})),
        )
        .await;
    assert_ok(&r);
    let n = r.1["documents"][0]["passages"].as_u64().unwrap() as usize;
    assert!(n >= 5, "{n} passages");

    let passages = all_passages(&app, "guide", app.service.info().dimension).await;
    assert_eq!(passages.len(), n);
    assert_spans_cover(&text, &passages);

    // The arctic tern's section is the sixth of eleven.
    let r = app
        .send(
            POST,
            "/collections/guide/query",
            Some(json!({"query": "Which seabird flies between the poles every year?", "k": 3})),
        )
        .await;
    assert_ok(&r);
    let top = hits(&r.1)[0]["text"].as_str().unwrap();
    assert!(
        top.contains("arctic tern") && top.contains("migration"),
        "top hit: {top}"
    );
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Embeddings

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_in_openai_and_tei_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let (_, info) = app.send(GET, "/info", None).await;
    assert_eq!(info["dimension"], TINY_DIM);
    assert_eq!(info["max_input_tokens"], TINY_MAX_TOKENS);
    let model = info["model"].as_str().unwrap();

    let openai = |body: Value| app.send(POST, "/v1/embeddings", Some(body));
    let one = openai(json!({"input": "the quick brown fox"})).await;
    assert_ok(&one);
    assert_eq!(one.1["object"], "list");
    assert_eq!(one.1["model"], model);
    let data = one.1["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["object"], "embedding");
    assert_eq!(data[0]["index"], 0);
    let fox = floats(&data[0]["embedding"]);
    assert_eq!(fox.len(), TINY_DIM);
    let norm: f32 = fox.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "the model normalises: {norm}");
    let fox_tokens = one.1["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(fox_tokens >= 4, "four word tokens at least");
    assert_eq!(one.1["usage"]["total_tokens"], fox_tokens);

    // An array, with `model` (ignored) and the model's own `dimensions`.
    let cat = openai(json!({"input": "cat"})).await;
    let cat_tokens = cat.1["usage"]["prompt_tokens"].as_u64().unwrap();
    let many = openai(json!({
        "input": ["the quick brown fox", "cat"],
        "model": "text-embedding-3-small",
        "dimensions": TINY_DIM,
    }))
    .await;
    assert_ok(&many);
    assert_eq!(many.1["model"], model, "the loaded model answers");
    let data = many.1["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(
        (data[0]["index"].as_u64(), data[1]["index"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(many.1["usage"]["prompt_tokens"], fox_tokens + cat_tokens);
    let close = |a: &[f32], b: &[f32], tol: f32| {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
    };
    assert!(close(&floats(&data[0]["embedding"]), &fox, 1e-5));
    assert!(close(
        &floats(&data[1]["embedding"]),
        &floats(&cat.1["data"][0]["embedding"]),
        1e-5
    ));
    assert!(
        !close(&floats(&data[1]["embedding"]), &fox, 1e-2),
        "different texts"
    );

    // Base64: little-endian f32 bytes of the same vector.
    let b64 = openai(json!({"input": "the quick brown fox", "encoding_format": "base64"})).await;
    assert_ok(&b64);
    let encoded = b64.1["data"][0]["embedding"]
        .as_str()
        .expect("a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    assert_eq!(bytes.len(), TINY_DIM * 4);
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert!(close(&decoded, &fox, 1e-6), "{decoded:?} vs {fox:?}");

    // Refusals.
    for (body, code) in [
        (
            json!({"input": [101, 2003, 102]}),
            "token_input_unsupported",
        ),
        (
            json!({"input": [[101, 2003], [102]]}),
            "token_input_unsupported",
        ),
        (json!({"input": ""}), "empty_input"),
        (json!({"input": []}), "empty_input"),
        (json!({"input": ["cat", ""]}), "empty_input"),
        (json!({"input": ["cat", null]}), "invalid_request"),
        (json!({"input": 5}), "invalid_request"),
        (
            json!({"input": "cat", "dimensions": 16}),
            "invalid_parameter",
        ),
        (
            json!({"input": "cat", "encoding_format": "hex"}),
            "invalid_request",
        ),
        (json!({"input": "cat", "inputs": "cat"}), "invalid_request"),
        (json!({}), "invalid_request"),
        (json!({"input": "the cat ".repeat(20)}), "input_too_long"),
    ] {
        let r = openai(body.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
    }

    // TEI's /embed: an array of vectors, also for one string.
    let tei = |body: Value| app.send(POST, "/embed", Some(body));
    let r = tei(json!({"inputs": "the quick brown fox"})).await;
    assert_ok(&r);
    let vectors = r.1.as_array().expect("an array of vectors");
    assert_eq!(vectors.len(), 1);
    assert!(close(&floats(&vectors[0]), &fox, 1e-5));
    let r = tei(json!({"inputs": ["the quick brown fox", "cat"], "normalize": false})).await;
    assert_ok(&r);
    assert_eq!(r.1.as_array().unwrap().len(), 2);
    assert!(close(&floats(&r.1[0]), &fox, 1e-5));
    let long = "the cat ".repeat(20);
    let r = tei(json!({"inputs": long})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "input_too_long");
    let r = tei(json!({"inputs": long, "truncate": true})).await;
    assert_ok(&r);
    assert_eq!(floats(&r.1[0]).len(), TINY_DIM);
    for (body, code) in [
        (
            json!({"inputs": long, "truncate": true, "truncation_direction": "Left"}),
            "invalid_parameter",
        ),
        (json!({"inputs": []}), "empty_input"),
        (json!({"inputs": [1, 2]}), "token_input_unsupported"),
        (json!({"input": "cat"}), "invalid_request"),
    ] {
        let r = tei(body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
    }
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// A request with a raw body and content type.
fn raw(
    method: Method,
    uri: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ct) = content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    req.body(body.into()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    let r = app
        .send(PUT, "/collections/vecs", Some(json!({"dimension": 4})))
        .await;
    assert_eq!(r.0, StatusCode::CREATED);
    let r = app
        .send(
            POST,
            "/collections/vecs/documents",
            Some(json!({"documents": [{"id": "v", "vector": [1, 0, 0, 0]}]})),
        )
        .await;
    assert_ok(&r);

    // Bodies the JSON parser refuses, and bodies that are not declared as JSON.
    let json_type = "application/json";
    let form_type = "application/x-www-form-urlencoded";
    #[rustfmt::skip]
    let raw_cases = [
        (json_type, "/collections/docs/documents", r#"{"documents": ["#, StatusCode::BAD_REQUEST, "malformed_json"),
        (json_type, "/collections/vecs/query", r#"{"vector": [NaN, 0, 0, 0]}"#, StatusCode::BAD_REQUEST, "malformed_json"),
        (json_type, "/collections/docs/query", r#"{"query": "cat"} x"#, StatusCode::BAD_REQUEST, "malformed_json"),
        ("text/plain", "/collections/docs/query", r#"{"query": "cat"}"#, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
        (form_type, "/collections/docs/query", "query=cat", StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    ];
    for (content_type, uri, body, status, code) in raw_cases {
        let req = raw(POST, uri, Some(content_type), body);
        let (status_got, headers, body) = call(&app.router, req).await;
        assert_error(&(status_got, body), status, code);
        assert!(
            headers.contains_key("x-request-id"),
            "errors carry a request id"
        );
    }
    // Without a content type a body is refused (a browser sends untyped bodies cross-site
    // without asking first); an empty one still reads as `{}`.
    let (status, _, body) = call(
        &app.router,
        raw(
            POST,
            "/collections/docs/query",
            None,
            r#"{"query": "cat", "k": 1}"#,
        ),
    )
    .await;
    assert_error(
        &(status, body),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let too_big = 1e39;
    use StatusCode as S;
    #[rustfmt::skip]
    let cases: Vec<(Method, &str, Option<Value>, StatusCode, &str)> = vec![
        // Vectors of the wrong size, with values no f32 holds, or with no direction.
        (POST, "/collections/vecs/query", Some(json!({"vector": [1, 0, 0]})), S::BAD_REQUEST, "dimension_mismatch"),
        (POST, "/collections/vecs/query", Some(json!({"vector": []})), S::BAD_REQUEST, "dimension_mismatch"),
        (POST, "/collections/docs/query", Some(json!({"vector": [1, 0, 0, 0]})), S::BAD_REQUEST, "dimension_mismatch"),
        (POST, "/collections/vecs/documents", Some(json!({"documents": [{"vector": [1, 0, 0, 0, 0]}]})), S::BAD_REQUEST, "dimension_mismatch"),
        (POST, "/collections/vecs/query", Some(json!({"vector": [too_big, 0, 0, 0]})), S::BAD_REQUEST, "invalid_vector"),
        (POST, "/collections/vecs/query", Some(json!({"vector": [-too_big, 0, 0, 0]})), S::BAD_REQUEST, "invalid_vector"),
        (POST, "/collections/vecs/documents", Some(json!({"documents": [{"vector": [0, too_big, 0, 0]}]})), S::BAD_REQUEST, "invalid_vector"),
        (POST, "/collections/vecs/documents", Some(json!({"documents": [{"vector": [0, 0, 0, 0]}]})), S::BAD_REQUEST, "invalid_vector"),
        (POST, "/collections/vecs/query", Some(json!({"vector": [0, 0, 0, 0]})), S::BAD_REQUEST, "invalid_vector"),
        (POST, "/collections/vecs/query", Some(json!({"vector": [1, "a", 0, 0]})), S::BAD_REQUEST, "invalid_request"),
        // Empty input.
        (POST, "/collections/docs/documents", Some(json!({"documents": []})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"text": ""}]})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"text": " \n\t "}]})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"id": "x"}]})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/query", Some(json!({"query": ""})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/query", Some(json!({"query": "   "})), S::BAD_REQUEST, "empty_input"),
        (POST, "/collections/docs/query/batch", Some(json!({"queries": []})), S::BAD_REQUEST, "empty_input"),
        // Parameters out of range, and fields that do not fit.
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "k": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "k": 1001})), S::BAD_REQUEST, "limit_exceeded"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "k": -1})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "params": {"ef": 0}})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mmr": {"lambda": 1.5}})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "k": 5, "mmr": {"fetch_k": 4}})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mmr": {"fetch_k": 1001}})), S::BAD_REQUEST, "limit_exceeded"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mmr": {"lamda": 0.5}})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mmr": {}, "group_by": "document"})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "group_size": 2})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "group_by": "section"})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "group_by": "document", "group_size": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "k": 500, "group_by": "document", "group_size": 3})), S::BAD_REQUEST, "limit_exceeded"),
        (POST, "/collections/docs/query/batch", Some(json!({"queries": [{"query": "cat"}, {"query": "dog", "k": 0}]})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "semantic"})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "hybrid", "fusion": "max"})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "hybrid", "alpha": 1.5})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "hybrid", "rrf_k": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "fusion": "dbsf", "rrf_k": 10})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "hybrid", "candidates": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "hybrid", "candidates": 1001})), S::BAD_REQUEST, "limit_exceeded"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "dense", "alpha": 0.3})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "mode": "lexical", "fusion": "rrf"})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"vector": [1, 0, 0, 0], "mode": "lexical"})), S::BAD_REQUEST, "text_required"),
        (POST, "/collections/vecs/query", Some(json!({"vector": [1, 0, 0, 0], "mode": "hybrid"})), S::BAD_REQUEST, "text_required"),
        (POST, "/collections/vecs/query", Some(json!({"query": "cat", "mode": "lexical"})), S::BAD_REQUEST, "lexical_unavailable"),
        (PUT, "/collections/lex", Some(json!({"lexical": {"language": "klingon"}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/lex", Some(json!({"lexical": {"lang": "en"}})), S::BAD_REQUEST, "invalid_request"),
        (PUT, "/collections/lex", Some(json!({"dimension": 4, "lexical": {"language": "en"}})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "vector": [1, 0, 0, 0]})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"k": 3})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"qeury": "cat"})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "include": ["score"]})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/vecs/query", Some(json!({"query": "cat"})), S::BAD_REQUEST, "vector_required"),
        (POST, "/collections/vecs/documents", Some(json!({"documents": [{"text": "cat"}]})), S::BAD_REQUEST, "vector_required"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"id": "x", "text": "cat"}, {"id": "x", "text": "dog"}]})), S::BAD_REQUEST, "duplicate_id"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"id": "", "text": "cat"}]})), S::BAD_REQUEST, "invalid_id"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"id": -1, "text": "cat"}]})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"text": "cat", "metadata": [1]}]})), S::BAD_REQUEST, "invalid_metadata"),
        (POST, "/collections/docs/documents", Some(json!({"documents": [{"text": "cat", "metdata": {}}]})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/documents", Some(json!({})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/documents/get", Some(json!({"limit": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/documents/get", Some(json!({"ids": ["a"], "filter": {}})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/documents/delete", Some(json!({})), S::BAD_REQUEST, "invalid_request"),
        (PUT, "/collections/other", Some(json!({"distance": "hamming"})), S::BAD_REQUEST, "invalid_request"),
        (PUT, "/collections/other", Some(json!({"dimension": 0})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"index": {"type": "ivf", "m": 8}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"index": {"type": "hnsw", "m": 1}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"index": {"type": "ivf", "quantization": "int8"}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"index": {"type": "flat", "quantization": "none"}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"index": {"quantization": "int4"}})), S::BAD_REQUEST, "invalid_request"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "params": {"oversampling": 0.5}})), S::BAD_REQUEST, "invalid_parameter"),
        (POST, "/collections/docs/query", Some(json!({"query": "cat", "params": {"oversampling": 101}})), S::BAD_REQUEST, "invalid_parameter"),
        (PUT, "/collections/other", Some(json!({"chunking": {"max_tokens": 8, "overlap": 8}})), S::BAD_REQUEST, "invalid_chunking"),
        (PUT, "/collections/other", Some(json!({"dimension": 4, "chunking": {"max_tokens": 8, "overlap": 2}})), S::BAD_REQUEST, "invalid_parameter"),
        // Things that do not exist.
        (GET, "/collections/nope", None, S::NOT_FOUND, "collection_not_found"),
        (POST, "/collections/nope/query", Some(json!({"query": "cat"})), S::NOT_FOUND, "collection_not_found"),
        (POST, "/collections/nope/documents", Some(json!({"documents": [{"text": "cat"}]})), S::NOT_FOUND, "collection_not_found"),
        (GET, "/collections/docs/documents/nope", None, S::NOT_FOUND, "document_not_found"),
        (GET, "/nope", None, S::NOT_FOUND, "not_found"),
        (GET, "/collections/docs/nope", None, S::NOT_FOUND, "not_found"),
        (POST, "/v2/embeddings", Some(json!({"input": "cat"})), S::NOT_FOUND, "not_found"),
        // Methods a route does not take.
        (DELETE, "/collections", None, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (GET, "/collections/docs/query", None, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (POST, "/collections/docs", Some(json!({})), S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        (GET, "/v1/embeddings", None, S::METHOD_NOT_ALLOWED, "method_not_allowed"),
        // Names no collection can have, and paths that are not UTF-8.
        (PUT, "/collections/bad%20name", None, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (PUT, "/collections/a%2Fb", None, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (PUT, "/collections/caf%C3%A9", None, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (GET, "/collections/a.b", None, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (POST, "/collections/bad%20name/query", Some(json!({"query": "cat"})), S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (DELETE, "/collections/a%2Fb", None, S::UNPROCESSABLE_ENTITY, "invalid_name"),
        (GET, "/collections/%FF", None, S::BAD_REQUEST, "invalid_path"),
    ];
    for (method, uri, body, status, code) in cases {
        let r = app.send(method.clone(), uri, body.clone()).await;
        assert_eq!(
            (r.0, r.1["error"]["code"].as_str()),
            (status, Some(code)),
            "{method} {uri} {body:?}: {}",
            r.1
        );
        assert_error(&r, status, code);
    }
    let long_name = "a".repeat(65);
    let r = app
        .send(PUT, &format!("/collections/{long_name}"), None)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_name");
    let longest = "a".repeat(64);
    let r = app
        .send(PUT, &format!("/collections/{longest}"), None)
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "64 characters are allowed");

    // Nothing refused was written.
    let (_, list) = app.send(GET, "/collections", None).await;
    let names: BTreeSet<&str> = list["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, BTreeSet::from(["docs", "vecs", longest.as_str()]));
    let (_, docs) = app.send(GET, "/collections/docs", None).await;
    assert_eq!(docs["documents"], 0);
    let (_, vecs) = app.send(GET, "/collections/vecs", None).await;
    assert_eq!(vecs["documents"], 1);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_and_l2_scores_stay_finite() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    // 1e18 per component is allowed; 3e38 is a finite f32 whose products are not.
    let long = [1e18, -1e18, 1e18, 1e18];
    let huge = [3e38, 3e38, -3e38, 3e38];
    for distance in ["dot", "l2"] {
        let uri = format!("/collections/{distance}");
        let r = app
            .send(
                PUT,
                &uri,
                Some(json!({"dimension": 4, "distance": distance})),
            )
            .await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        let docs = format!("{uri}/documents");
        let query = format!("{uri}/query");
        let r = app
            .send(
                POST,
                &docs,
                Some(json!({"documents": [{"id": "huge", "vector": huge}]})),
            )
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_vector");
        let r = app
            .send(
                POST,
                &docs,
                Some(json!({"documents": [
                    {"id": "long", "vector": long},
                    {"id": "unit", "vector": [0, 1, 0, 0]},
                ]})),
            )
            .await;
        assert_ok(&r);
        let r = app.send(POST, &query, Some(json!({"vector": huge}))).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_vector");
        let r = app
            .send(POST, &query, Some(json!({"vector": long, "k": 2})))
            .await;
        assert_ok(&r);
        assert_eq!(doc_ids(&r.1)[0], "long", "{distance}");
        for h in hits(&r.1) {
            assert!(
                h["score"].is_f64() && h["distance"].is_f64(),
                "{distance}: {h}"
            );
        }
    }
    app.close().await;
}

/// A document given as a vector keeps the text it came with, and a query returns that text as
/// its passage's text, in a vector collection as in a text one (LangChain and LlamaIndex stores
/// that embed on the client rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vector_documents_return_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let unit = |i: usize| {
        let mut v = vec![0.0f32; TINY_DIM];
        v[i] = 1.0;
        v
    };
    // A vector collection (dimension 4) and a text collection (the model's dimension).
    for (name, dim) in [("vecs", 4), ("texts", TINY_DIM)] {
        let uri = format!("/collections/{name}");
        let r = app.send(PUT, &uri, Some(json!({"dimension": dim}))).await;
        assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
        let v = |i| unit(i)[..dim].to_vec();
        let r = app
            .send(
                POST,
                &format!("{uri}/documents"),
                Some(json!({"documents": [
                    {"id": "a", "vector": v(0), "text": "alpha café", "metadata": {"n": 1}},
                    {"id": "b", "vector": v(1)},
                ]})),
            )
            .await;
        assert_ok(&r);
        let query = format!("{uri}/query");
        let r = app
            .send(POST, &query, Some(json!({"vector": v(0), "k": 2})))
            .await;
        assert_ok(&r);
        let got = hits(&r.1);
        assert_eq!(got[0]["document_id"], "a", "{name}: {}", r.1);
        assert_eq!(got[0]["text"], "alpha café", "{name}");
        assert_eq!(got[0]["metadata"], json!({"n": 1}), "{name}");
        assert_eq!(
            got[0]["passage"],
            json!({"index": 0, "start": 0, "end": 10}),
            "{name}"
        );
        assert!(
            got[1]["text"].is_null(),
            "{name}: a document without text: {}",
            got[1]
        );
        // Without "text" in `include` none is returned.
        let r = app
            .send(
                POST,
                &query,
                Some(json!({"vector": v(0), "k": 1, "include": ["metadata"]})),
            )
            .await;
        assert_ok(&r);
        assert!(
            hits(&r.1)[0].get("text").is_none_or(Value::is_null),
            "{name}: {}",
            r.1
        );
    }
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiSettings {
        max_body_bytes: 2048,
        ..ApiSettings::default()
    };
    let app = App::open(
        dir.path(),
        common::tiny_worker(),
        service_settings(dir.path()),
        api,
    )
    .await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    let text = "the cat ".repeat(300);
    let r = app
        .send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [{"text": text}]})),
        )
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    let r = app
        .send(
            POST,
            "/collections/docs/documents",
            Some(json!({"documents": [{"text": "the cat"}]})),
        )
        .await;
    assert_ok(&r);
    let (_, c) = app.send(GET, "/collections/docs", None).await;
    assert_eq!(c["documents"], 1);
    app.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_gets_503() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Gate::new(common::tiny_worker());
    let app = App::open(
        dir.path(),
        gate.clone(),
        service_settings(dir.path()),
        ApiSettings::default(),
    )
    .await;
    assert_eq!(
        app.send(PUT, "/collections/docs", None).await.0,
        StatusCode::CREATED
    );
    // A second router over the same service, with a short timeout, for the held request only.
    let impatient = api::router(AppState::ready(
        ApiSettings {
            request_timeout: Duration::from_millis(100),
            ..ApiSettings::default()
        },
        app.service.clone(),
    ));
    let r = send(
        &impatient,
        POST,
        "/collections/docs/query",
        Some(json!({"query": "cat"})),
    )
    .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "timeout");
    tokio::time::timeout(Duration::from_secs(10), gate.entered.notified())
        .await
        .expect("the request was held at the embedder");

    // Released, the embedder serves again (through the patient router: no deadline to race).
    gate.release(1);
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "cat"})),
        )
        .await;
    assert_ok(&r);
    app.close().await;
}

/// Texts at the tiny model's input limit, enough to keep its thread busy in one batch.
fn busy_request(texts: usize) -> Vec<String> {
    vec!["the long document about search and the index of every word ".repeat(4); texts]
}

/// Waits until the worker's model thread runs a batch of `texts` texts.
async fn wait_until_running(worker: &EmbeddingWorker, texts: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = worker.stats();
        if stats.running_texts == texts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the busy batch never started: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_embedding_queue_answers_429_with_retry_after() {
    const CAPACITY: usize = 8;
    // The model thread is held busy by one large batch while the queue behind it is filled;
    // should a stalled machine let that batch end first, the attempt is repeated larger.
    for attempt in 0..3 {
        let busy = 1000 << attempt;
        let dir = tempfile::tempdir().unwrap();
        let worker = common::worker(
            &tiny_dir(),
            WorkerOptions {
                max_batch_size: busy,
                max_batch_tokens: usize::MAX,
                queue_capacity: CAPACITY,
                tokenizer_threads: 1,
                ..WorkerOptions::default()
            },
        );
        let app = App::open(
            dir.path(),
            worker.clone(),
            service_settings(dir.path()),
            ApiSettings::default(),
        )
        .await;
        assert_eq!(
            app.send(PUT, "/collections/docs", None).await.0,
            StatusCode::CREATED
        );

        let first = worker.submit(busy_request(busy)).unwrap();
        wait_until_running(&worker, busy).await;
        let filling = worker.submit(vec!["river".to_owned(); CAPACITY]).unwrap();
        let query = call(
            &app.router,
            raw(
                POST,
                "/collections/docs/query",
                Some("application/json"),
                json!({"query": "water"}).to_string(),
            ),
        )
        .await;
        let embed = call(
            &app.router,
            raw(
                POST,
                "/v1/embeddings",
                Some("application/json"),
                json!({"input": ["fire"]}).to_string(),
            ),
        )
        .await;
        if worker.stats().batches > 0 {
            eprintln!("attempt {attempt}: the busy batch ended early; retrying");
            drop((first, filling));
            app.close().await;
            continue;
        }
        for (status, headers, body) in [query, embed] {
            assert_error(&(status, body), StatusCode::TOO_MANY_REQUESTS, "overloaded");
            assert_eq!(headers[header::RETRY_AFTER], "1");
        }

        // Once the queue drains, the same request succeeds.
        assert_eq!(first.await.unwrap().len(), busy);
        assert_eq!(filling.await.unwrap().len(), CAPACITY);
        let r = app
            .send(
                POST,
                "/collections/docs/query",
                Some(json!({"query": "water"})),
            )
            .await;
        assert_ok(&r);
        app.close().await;
        return;
    }
    panic!("the model thread never stayed busy long enough to fill the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_start_up_and_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let state = AppState::starting(ApiSettings::default());
    let router = api::router(state.clone());

    let r = send(&router, GET, "/healthz", None).await;
    assert_eq!((r.0, &r.1), (StatusCode::OK, &json!({"status": "ok"})));
    let (status, headers, body) = call(&router, raw(GET, "/readyz", None, Body::empty())).await;
    assert_error(
        &(status, body),
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
    );
    assert_eq!(headers[header::RETRY_AFTER], "1");
    for (method, uri, body) in [
        (GET, "/collections", None),
        (GET, "/info", None),
        (
            POST,
            "/collections/docs/query",
            Some(json!({"query": "cat"})),
        ),
        // Refused before the body is read, however wrong the body.
        (PUT, "/collections/docs", Some(json!({"no such field": 1}))),
        (POST, "/v1/embeddings", Some(json!({"input": "cat"}))),
    ] {
        let r = send(&router, method, uri, body).await;
        assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    }
    // The JSON fallbacks need no service.
    let r = send(&router, GET, "/nope", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    state.set_ready(app.service.clone());
    let r = send(&router, GET, "/readyz", None).await;
    assert_eq!((r.0, &r.1), (StatusCode::OK, &json!({"status": "ready"})));
    let r = send(&router, GET, "/collections", None).await;
    assert_eq!((r.0, &r.1), (StatusCode::OK, &json!({"collections": []})));
    let r = send(&router, GET, "/info", None).await;
    assert_ok(&r);
    assert_eq!(r.1["dimension"], TINY_DIM);

    // Draining: not ready for new traffic, but requests are still served.
    state.set_draining();
    let r = send(&router, GET, "/readyz", None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let r = send(&router, GET, "/collections", None).await;
    assert_ok(&r);
    let r = send(&router, GET, "/healthz", None).await;
    assert_ok(&r);
    drop(router);
    app.close().await;
}

// ---------------------------------------------------------------------------------------------
// OpenAPI

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::tiny(dir.path()).await;
    let (status, headers, doc) =
        call(&app.router, raw(GET, "/openapi.json", None, Body::empty())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "vicinity");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));

    let want: BTreeSet<(&str, &str)> = BTreeSet::from([
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/info"),
        ("get", "/cluster"),
        ("get", "/openapi.json"),
        ("get", "/metrics"),
        ("get", "/collections"),
        ("put", "/collections/{name}"),
        ("get", "/collections/{name}"),
        ("delete", "/collections/{name}"),
        ("post", "/collections/{name}/documents"),
        ("put", "/collections/{name}/documents"),
        ("get", "/collections/{name}/documents/{id}"),
        ("post", "/collections/{name}/documents/get"),
        ("post", "/collections/{name}/documents/delete"),
        ("post", "/collections/{name}/query"),
        ("post", "/collections/{name}/query/batch"),
        ("post", "/v1/embeddings"),
        ("post", "/embed"),
        ("post", "/rerank"),
    ]);
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut got = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in methods {
            if item.get(method).is_some() {
                got.insert((method, path.as_str()));
            }
        }
    }
    let got: BTreeSet<(&str, &str)> = got.into_iter().collect();
    assert_eq!(got, want);

    // Every documented operation is routed: none falls through to the 404 or 405 fallbacks.
    for (method, path) in &want {
        let uri = path.replace("{name}", "nope").replace("{id}", "x");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        if uri == "/metrics" {
            // The one route that answers text rather than JSON.
            let req = Request::get(&uri).body(Body::empty()).unwrap();
            assert_eq!(common::call_text(&app.router, req).await.0, StatusCode::OK);
            continue;
        }
        let (status, body) = app.send(method.clone(), &uri, Some(json!({}))).await;
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {uri}: {body}"
        );
        assert_ne!(body["error"]["code"], "not_found", "{method} {uri}: {body}");
    }
    for schema in [
        "ErrorResponse",
        "QueryRequest",
        "QueryResponse",
        "CollectionResponse",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "schema {schema} missing"
        );
    }
    app.close().await;
}
