//! Queries under bulk ingest and batch load, through the HTTP API on the tiny fixture model:
//! an upsert larger than the embedding queue is admitted while queries keep being answered, a
//! batch query runs through its share of the search slots only, and the search of a request
//! that went away before its search started is skipped.

mod common;

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use futures_util::FutureExt;
use serde_json::{Value, json};
use vicinity::api::ApiSettings;
use vicinity::embed::WorkerOptions;

use common::{App, send, service_settings, tiny_dir};

const PUT: Method = Method::PUT;
const POST: Method = Method::POST;

#[track_caller]
fn assert_ok(got: &(StatusCode, Value)) {
    assert_eq!(got.0, StatusCode::OK, "{}", got.1);
}

const WORDS: &[&str] = &[
    "river", "mountain", "city", "music", "book", "water", "fire", "light", "night", "day",
];

/// An upsert of far more passages than the embedding queue holds is admitted and completes,
/// and text queries sent while its passages wait are all answered (none refused with 429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_larger_than_the_queue_is_admitted_and_queries_during_it_succeed() {
    const CAPACITY: usize = 8;
    const DOCS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let worker = common::worker(
        &tiny_dir(),
        WorkerOptions {
            max_batch_size: 4,
            queue_capacity: CAPACITY,
            bulk_chunk: 32,
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
    let docs: Vec<Value> = (0..DOCS)
        .map(|i| json!({"id": format!("d{i}"), "text": format!("document {i} of the {}", WORDS[i % WORDS.len()])}))
        .collect();
    let upsert = tokio::spawn({
        let router = app.router.clone();
        async move {
            send(
                &router,
                POST,
                "/collections/docs/documents",
                Some(json!({ "documents": docs })),
            )
            .await
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.stats().bulk_backlog == 0 && !upsert.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the upsert never reached the embedder"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let mut during = 0;
    while !upsert.is_finished() && during < 30 {
        let backlog = worker.stats().bulk_backlog;
        let r = app
            .send(
                POST,
                "/collections/docs/query",
                Some(json!({"query": WORDS[during % WORDS.len()], "k": 3})),
            )
            .await;
        assert_ok(&r);
        // The embeddings endpoint, with a full queue's worth of inputs, is interactive too.
        let r = app
            .send(
                POST,
                "/v1/embeddings",
                Some(json!({"input": vec!["the river at night"; CAPACITY]})),
            )
            .await;
        assert_ok(&r);
        if backlog > 0 {
            during += 1;
        }
    }
    assert!(
        during > 0,
        "no query was sent while the upsert's passages waited"
    );

    let r = upsert.await.unwrap();
    assert_ok(&r);
    assert_eq!(r.1["documents"].as_array().unwrap().len(), DOCS);
    let stats = worker.stats();
    assert_eq!(stats.rejected_requests, 0, "{stats:?}");
    assert_eq!(stats.bulk_texts, DOCS as u64, "one passage a document");
    let r = app
        .send(
            POST,
            "/collections/docs/query",
            Some(json!({"query": "document 17 of the book", "k": 1})),
        )
        .await;
    assert_ok(&r);
    assert_eq!(r.1["results"].as_array().unwrap().len(), 1, "{}", r.1);
    app.close().await;
}

/// A collection of seeded vectors for the search tests.
async fn vector_collection(app: &App, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let r = app
        .send(
            PUT,
            "/collections/vecs",
            Some(json!({"dimension": dim, "index": {"type": "flat"}})),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let data = vicinity::testing::random_vectors(n, dim, 7);
    let vectors: Vec<Vec<f32>> = data.chunks_exact(dim).map(<[f32]>::to_vec).collect();
    let docs: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("v{i}"), "vector": v}))
        .collect();
    let r = app
        .send(
            POST,
            "/collections/vecs/documents",
            Some(json!({ "documents": docs })),
        )
        .await;
    assert_ok(&r);
    vectors
}

/// A batch of many queries holds at most a quarter of the search slots at once, and answers
/// every query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_query_holds_at_most_its_share_of_the_search_slots() {
    const QUERIES: usize = 256;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = service_settings(dir.path());
    settings.search_concurrency = 8;
    let app = App::open(
        dir.path(),
        common::tiny_worker(),
        settings,
        ApiSettings::default(),
    )
    .await;
    let vectors = vector_collection(&app, 4_000, 64).await;
    let queries: Vec<Value> = (0..QUERIES)
        .map(|i| json!({"vector": vectors[i * 7], "k": 5, "include": []}))
        .collect();
    let r = app
        .send(
            POST,
            "/collections/vecs/query/batch",
            Some(json!({ "queries": queries })),
        )
        .await;
    assert_ok(&r);
    let results = r.1["results"].as_array().unwrap();
    assert_eq!(results.len(), QUERIES);
    for (i, result) in results.iter().enumerate() {
        // Each query vector is a stored one: its own document comes first.
        assert_eq!(
            result["results"][0]["document_id"],
            format!("v{}", i * 7),
            "{result}"
        );
    }
    let stats = app.service.search_stats();
    assert_eq!(stats.slots, 8);
    assert_eq!(stats.searches, QUERIES as u64);
    assert!(
        stats.peak_in_use <= 2,
        "the batch held more than 8 / 4 slots: {stats:?}"
    );
    assert_eq!(stats.in_use, 0);
    app.close().await;
}

/// Searches of requests that went away (a single query and a batch, dropped as the timeout
/// middleware or a disconnect drops them) after their searches were handed to the blocking
/// pool, but before those started, are skipped. The pool has one thread, held until the
/// requests are gone, so the order is certain.
#[test]
fn the_search_of_a_request_that_went_away_does_not_run() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(1)
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = service_settings(dir.path());
        settings.search_concurrency = 8;
        let app = App::open(
            dir.path(),
            common::tiny_worker(),
            settings,
            ApiSettings::default(),
        )
        .await;
        let vectors = vector_collection(&app, 100, 8).await;
        let query = json!({"vector": vectors[3], "k": 3});

        let (release, held) = std::sync::mpsc::channel::<()>();
        let blocker = tokio::task::spawn_blocking(move || {
            let _ = held.recv();
        });
        let mut single = Box::pin(send(
            &app.router,
            POST,
            "/collections/vecs/query",
            Some(query.clone()),
        ));
        let mut batch = Box::pin(send(
            &app.router,
            POST,
            "/collections/vecs/query/batch",
            Some(json!({"queries": [query, query, query]})),
        ));
        // One slot for the single query, the batch's share (8 / 4) for the batch: the third
        // query of the batch waits for the batch's share and has no search queued.
        let deadline = Instant::now() + Duration::from_secs(60);
        while app.service.search_stats().in_use < 3 {
            assert!((&mut single).now_or_never().is_none());
            assert!((&mut batch).now_or_never().is_none());
            assert!(
                Instant::now() < deadline,
                "the searches never queued: {:?}",
                app.service.search_stats()
            );
            tokio::task::yield_now().await;
        }
        assert_eq!(app.service.search_stats().in_use, 3);
        drop(single);
        drop(batch);
        release.send(()).unwrap();
        blocker.await.unwrap();
        while app.service.search_stats().in_use > 0 {
            assert!(Instant::now() < deadline, "the queued searches never ended");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let stats = app.service.search_stats();
        assert_eq!((stats.searches, stats.cancelled), (0, 3), "{stats:?}");

        // The service answers the next query as before.
        let r = app
            .send(
                POST,
                "/collections/vecs/query",
                Some(json!({"vector": vectors[3], "k": 1})),
            )
            .await;
        assert_ok(&r);
        assert_eq!(r.1["results"][0]["document_id"], "v3");
        assert_eq!(app.service.search_stats().searches, 1);
        app.close().await;
    });
}
