//! The service layer end to end, below HTTP: planner paths, read-your-writes while the graph
//! catches up, and restarts from snapshots that are current, stale or torn. Real store, real
//! indexes, real encoder (the tiny fixture model) behind the real embedding worker.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vicinity::embed::{Embedder, EmbeddingWorker, EncoderOptions, SentenceEncoder, WorkerOptions};
use vicinity::on_both_backends;
use vicinity::service::{
    CollectionSpec, DocumentInput, Embeddings, IndexType, Plan, Query, QueryInput, Selector,
    Service, ServiceError, ServiceResult, ServiceSettings,
};
use vicinity::store::{Store, StoreOptions};
use vicinity::testing::clustered_vectors;
use vicinity::testing::postgres::TestBackend;

const DIM: usize = 24;

on_both_backends!(
    planner_picks_each_path(flavor = "multi_thread", worker_threads = 2),
    writes_are_visible_before_the_graph_catches_up(flavor = "multi_thread", worker_threads = 2),
    restarts_from_current_stale_and_torn_snapshots(flavor = "multi_thread", worker_threads = 2),
    a_snapshot_gives_its_vectors_and_the_store_the_rest(
        flavor = "multi_thread",
        worker_threads = 2
    ),
    text_documents_are_split_embedded_and_found(flavor = "multi_thread", worker_threads = 2),
);

fn tiny_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn settings(dir: &Path) -> ServiceSettings {
    let mut s = ServiceSettings::new(dir);
    s.planner.exact_threshold = 200;
    s.snapshot_interval = Duration::from_secs(3600);
    s
}

async fn open(dir: &Path) -> Arc<Service> {
    open_on(dir, &TestBackend::Sqlite).await
}

/// The service over `dir` (index snapshots, lexical indexes) and a store on `backend`.
async fn open_on(dir: &Path, backend: &TestBackend) -> Arc<Service> {
    let encoder = SentenceEncoder::load(&tiny_model(), &EncoderOptions::default()).unwrap();
    let worker = EmbeddingWorker::new(encoder, WorkerOptions::default()).unwrap();
    open_with_on(dir, backend, settings(dir), Arc::new(worker)).await
}

async fn open_with(
    dir: &Path,
    settings: ServiceSettings,
    embedder: Arc<dyn Embedder>,
) -> Arc<Service> {
    open_with_on(dir, &TestBackend::Sqlite, settings, embedder).await
}

async fn open_with_on(
    dir: &Path,
    backend: &TestBackend,
    settings: ServiceSettings,
    embedder: Arc<dyn Embedder>,
) -> Arc<Service> {
    let store = Store::open(&backend.url(dir), &StoreOptions::default())
        .await
        .unwrap();
    Service::open(settings, store, embedder).await.unwrap()
}

fn spec(kind: IndexType) -> CollectionSpec {
    common::vector_spec(kind, DIM)
}

fn vector_docs(n: usize, seed: u64) -> (Vec<DocumentInput>, Vec<f32>) {
    let data = clustered_vectors(n, DIM, 12, 0.5, seed);
    let docs = data
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| DocumentInput {
            id: Some(format!("d{i}")),
            text: None,
            vector: Some(v.to_vec()),
            metadata: json!({"i": i, "even": i % 2 == 0, "tenth": i % 10 == 0}),
        })
        .collect();
    (docs, data)
}

fn vq(v: &[f32], k: usize) -> Query {
    common::vector_query(v, k)
}

/// Waits until the background indexer has built the approximate index and drained pending.
async fn wait_indexed(svc: &Service, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let info = svc.get_collection(name).await.unwrap();
        if info.index_state.status == "ready" && info.index_state.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "index never caught up: {:?}",
            info.index_state
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(r: &vicinity::service::QueryResult) -> Vec<String> {
    r.results.iter().map(|h| h.document_id.clone()).collect()
}

async fn planner_picks_each_path(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let svc = open_on(dir.path(), &backend).await;
    svc.create_collection("small", spec(IndexType::Auto))
        .await
        .unwrap();
    let (docs, data) = vector_docs(50, 1);
    svc.upsert_documents("small", docs).await.unwrap();
    let r = svc.query("small", vq(&data[..DIM], 5)).await.unwrap();
    assert_eq!(r.plan, Plan::Flat, "small collections are scanned exactly");
    assert_eq!(r.results[0].document_id, "d0");

    svc.create_collection("big", spec(IndexType::Auto))
        .await
        .unwrap();
    let (docs, data) = vector_docs(1500, 2);
    svc.upsert_documents("big", docs).await.unwrap();
    wait_indexed(&svc, "big").await;
    let q = &data[7 * DIM..8 * DIM];
    let r = svc.query("big", vq(q, 10)).await.unwrap();
    assert_eq!(r.plan, Plan::Hnsw);
    assert_eq!(r.results[0].document_id, "d7");
    let exact = svc
        .query(
            "big",
            Query {
                exact: true,
                ..vq(q, 10)
            },
        )
        .await
        .unwrap();
    assert_eq!(exact.plan, Plan::Flat);
    assert_eq!(ids(&exact)[0], "d7");

    // A broad filter stays on the graph; a selective one is answered exactly.
    let broad = svc
        .query(
            "big",
            Query {
                filter: Some(json!({"even": true})),
                ..vq(q, 10)
            },
        )
        .await
        .unwrap();
    assert_eq!(broad.plan, Plan::Hnsw);
    assert_eq!(broad.results.len(), 10);
    assert!(
        broad
            .results
            .iter()
            .all(|h| h.metadata.as_ref().unwrap()["even"] == true)
    );
    let narrow = svc
        .query(
            "big",
            Query {
                filter: Some(json!({"i": {"$lt": 12}})),
                ..vq(q, 10)
            },
        )
        .await
        .unwrap();
    assert_eq!(narrow.plan, Plan::Flat);
    assert_eq!(narrow.results.len(), 10);
    assert!(
        narrow
            .results
            .iter()
            .all(|h| h.metadata.as_ref().unwrap()["i"].as_u64().unwrap() < 12)
    );

    // k results whenever k passages match, and no more than match.
    let few = svc
        .query(
            "big",
            Query {
                filter: Some(json!({"i": {"$in": [3, 700, 1499]}})),
                ..vq(q, 10)
            },
        )
        .await
        .unwrap();
    let mut got = ids(&few);
    got.sort();
    assert_eq!(got, vec!["d1499", "d3", "d700"]);

    svc.create_collection("cells", spec(IndexType::Ivf))
        .await
        .unwrap();
    let (docs, data) = vector_docs(1200, 3);
    svc.upsert_documents("cells", docs).await.unwrap();
    wait_indexed(&svc, "cells").await;
    let r = svc.query("cells", vq(&data[..DIM], 5)).await.unwrap();
    assert_eq!(r.plan, Plan::Ivf);
    assert_eq!(r.results[0].document_id, "d0");

    svc.create_collection("exact", spec(IndexType::Flat))
        .await
        .unwrap();
    let (docs, data) = vector_docs(400, 4);
    svc.upsert_documents("exact", docs).await.unwrap();
    let r = svc.query("exact", vq(&data[..DIM], 5)).await.unwrap();
    assert_eq!(r.plan, Plan::Flat);
    assert_eq!(
        svc.get_collection("exact")
            .await
            .unwrap()
            .index_state
            .status,
        "none"
    );
    svc.shutdown().await;
}

async fn writes_are_visible_before_the_graph_catches_up(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let svc = open_on(dir.path(), &backend).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, _) = vector_docs(600, 5);
    svc.upsert_documents("c", docs).await.unwrap();
    wait_indexed(&svc, "c").await;
    for round in 0..20 {
        let mut v = vec![0.0f32; DIM];
        v[round % DIM] = 1.0;
        v[(round + 5) % DIM] = -0.5;
        let id = format!("new{round}");
        svc.upsert_documents(
            "c",
            vec![DocumentInput {
                id: Some(id.clone()),
                vector: Some(v.clone()),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
        let r = svc.query("c", vq(&v, 1)).await.unwrap();
        assert_eq!(r.results[0].document_id, id, "round {round}");
        assert!((r.results[0].score - 1.0).abs() < 1e-5);
        // Replacing a document retires its old vector at once.
        let mut w = vec![0.0f32; DIM];
        w[(round + 11) % DIM] = 1.0;
        svc.upsert_documents(
            "c",
            vec![DocumentInput {
                id: Some(id.clone()),
                vector: Some(w),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
        let r = svc.query("c", vq(&v, 3)).await.unwrap();
        assert!(
            (r.results[0].score - 1.0).abs() > 1e-3,
            "old vector still served"
        );
    }
    svc.shutdown().await;
}

/// Exact cosine top-`k` of `query` over `rows` (document `d{i}` for row `i`), best first.
fn brute_force(rows: &[f32], query: &[f32], k: usize) -> Vec<String> {
    let unit = |v: &[f32]| {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect::<Vec<f32>>()
    };
    let q = unit(query);
    let mut scored: Vec<(f32, usize)> = rows
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, r)| (unit(r).iter().zip(&q).map(|(a, b)| a * b).sum(), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored
        .iter()
        .take(k)
        .map(|(_, i)| format!("d{i}"))
        .collect()
}

/// Negates every stored vector of the store at `url` behind the service's back: the same
/// passage ids with other vectors, as a snapshot would meet them in another database.
async fn negate_stored_vectors(url: &str) {
    // The same statements on either backend's pool type.
    macro_rules! negate_all {
        ($pool:expr) => {{
            let pool = $pool;
            let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT id, vector FROM passages")
                .fetch_all(&pool)
                .await
                .unwrap();
            for (id, mut blob) in rows {
                // The sign bit of each little-endian f32.
                blob.chunks_exact_mut(4).for_each(|f| f[3] ^= 0x80);
                sqlx::query("UPDATE passages SET vector = $1 WHERE id = $2")
                    .bind(blob)
                    .bind(id)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }};
    }
    if url.starts_with("sqlite:") {
        negate_all!(sqlx::SqlitePool::connect(url).await.unwrap());
    } else {
        negate_all!(sqlx::PgPool::connect(url).await.unwrap());
    }
}

/// Asserts that exact top-10 queries of collection "c" for `probes` give the brute-force
/// answers over `rows`, with document "d4" (deleted) left out.
async fn assert_exact_answers(svc: &Service, rows: &[f32], probes: &[Vec<f32>], what: &str) {
    for p in probes {
        let q = Query {
            exact: true,
            ..vq(p, 10)
        };
        let r = svc.query("c", q).await.unwrap();
        let want: Vec<String> = brute_force(rows, p, 11)
            .into_iter()
            .filter(|d| d != "d4")
            .take(10)
            .collect();
        assert_eq!(ids(&r), want, "{what}");
    }
}

/// A restart takes the vectors of the passages its HNSW snapshot holds from the snapshot, and
/// only the others from the store; exact answers and returned vectors are those of the store.
/// A snapshot whose vectors are not the store's is refused.
async fn a_snapshot_gives_its_vectors_and_the_store_the_rest(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let (docs, mut data) = vector_docs(600, 8);
    let exact = |v: &[f32], k: usize| Query {
        exact: true,
        ..vq(v, k)
    };
    let probes: Vec<Vec<f32>> = clustered_vectors(20, DIM, 12, 0.5, 9)
        .chunks_exact(DIM)
        .map(<[f32]>::to_vec)
        .collect();
    {
        let svc = open_on(dir.path(), &backend).await;
        svc.create_collection("c", spec(IndexType::Hnsw))
            .await
            .unwrap();
        svc.upsert_documents("c", docs).await.unwrap();
        wait_indexed(&svc, "c").await;
        svc.shutdown().await;
    }
    // After the snapshot: one document replaced (a new passage the snapshot lacks), one
    // deleted; then a crash, so the snapshot stays as it was.
    let replaced: Vec<f32> = probes[0].iter().map(|x| x * 2.0).collect();
    {
        let svc = open_on(dir.path(), &backend).await;
        svc.upsert_documents(
            "c",
            vec![DocumentInput {
                id: Some("d3".into()),
                vector: Some(replaced.clone()),
                metadata: json!({"i": 3}),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
        svc.delete_documents("c", Selector::Ids(vec!["d4".into()]))
            .await
            .unwrap();
    }
    data[3 * DIM..4 * DIM].copy_from_slice(&replaced);

    {
        let svc = open_on(dir.path(), &backend).await;
        let info = svc.get_collection("c").await.unwrap();
        assert_eq!(info.passages, 599);
        assert_exact_answers(&svc, &data, &probes, "answers from the store's vectors").await;
        // Stored vectors are returned as given, whichever side they were loaded from.
        let mut q = exact(&probes[0], 1);
        q.include.vector = true;
        let r = svc.query("c", q).await.unwrap();
        assert_eq!(r.results[0].document_id, "d3");
        assert_eq!(r.results[0].vector.as_deref(), Some(&replaced[..]));
        svc.shutdown().await;
    }

    // The same passage ids with other vectors: the snapshot's are refused, the store's used.
    negate_stored_vectors(&backend.url(dir.path())).await;
    let negated: Vec<f32> = data.iter().map(|x| -x).collect();
    let svc = open_on(dir.path(), &backend).await;
    let r = svc
        .query("c", exact(&negated[10 * DIM..11 * DIM], 1))
        .await
        .unwrap();
    assert_eq!(ids(&r), vec!["d10".to_string()]);
    let info = svc.get_collection("c").await.unwrap();
    assert_eq!(info.passages, 599);
    assert_exact_answers(
        &svc,
        &negated,
        &probes,
        "answers from the snapshot's vectors",
    )
    .await;
    svc.shutdown().await;
}

async fn restarts_from_current_stale_and_torn_snapshots(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let (docs, data) = vector_docs(800, 6);
    let probes: Vec<Vec<f32>> = (0..20)
        .map(|i| data[i * 37 * DIM..(i * 37 + 1) * DIM].to_vec())
        .collect();
    let before = {
        let svc = open_on(dir.path(), &backend).await;
        svc.create_collection("c", spec(IndexType::Hnsw))
            .await
            .unwrap();
        svc.upsert_documents("c", docs).await.unwrap();
        wait_indexed(&svc, "c").await;
        let mut out = Vec::new();
        for p in &probes {
            out.push(ids(&svc.query("c", vq(p, 10)).await.unwrap()));
        }
        svc.shutdown().await;
        out
    };
    let snapshot_dir = dir.path().join("indexes");
    assert!(snapshot_dir.exists(), "shutdown writes a snapshot");

    // Current snapshot: the graph is back at once, answers are identical.
    {
        let svc = open_on(dir.path(), &backend).await;
        let info = svc.get_collection("c").await.unwrap();
        assert_eq!(info.index_state.status, "ready");
        assert_eq!(info.index_state.indexed, 800);
        assert_eq!(info.index_state.pending, 0);
        for (p, want) in probes.iter().zip(&before) {
            assert_eq!(&ids(&svc.query("c", vq(p, 10)).await.unwrap()), want);
        }
        // Changes after the snapshot, then a crash (no shutdown, no new snapshot).
        svc.delete_documents("c", Selector::Ids(vec!["d0".into(), "d37".into()]))
            .await
            .unwrap();
        svc.upsert_documents(
            "c",
            vec![DocumentInput {
                id: Some("late".into()),
                vector: Some(probes[3].clone()),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    }

    // Stale snapshot: reconciled with the store.
    {
        let svc = open_on(dir.path(), &backend).await;
        wait_indexed(&svc, "c").await;
        let info = svc.get_collection("c").await.unwrap();
        assert_eq!(info.passages, 799);
        assert_eq!(info.index_state.indexed, 799);
        let r = svc.query("c", vq(&probes[0], 10)).await.unwrap();
        assert!(
            !ids(&r).contains(&"d0".to_string()),
            "deleted document came back"
        );
        let r = svc.query("c", vq(&probes[3], 2)).await.unwrap();
        assert!(ids(&r).contains(&"late".to_string()));
    }

    // Torn snapshot: detected by its checksum, rebuilt from the stored vectors.
    let coll_dir = std::fs::read_dir(&snapshot_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bin = std::fs::read_dir(&coll_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&bin).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bin, &bytes).unwrap();
    {
        let svc = open_on(dir.path(), &backend).await;
        wait_indexed(&svc, "c").await;
        let info = svc.get_collection("c").await.unwrap();
        assert_eq!(info.index_state.indexed, 799);
        let r = svc.query("c", vq(&probes[5], 10)).await.unwrap();
        assert_eq!(r.plan, Plan::Hnsw);
        assert_eq!(ids(&r)[0], before[5][0]);
        svc.delete_collection("c").await.unwrap();
        assert!(!coll_dir.exists(), "snapshot removed with its collection");
        assert!(matches!(
            svc.query("c", vq(&probes[5], 1)).await,
            Err(ServiceError::CollectionNotFound(_))
        ));
    }
}

async fn text_documents_are_split_embedded_and_found(backend: TestBackend) {
    let dir = tempfile::tempdir().unwrap();
    let svc = open_on(dir.path(), &backend).await;
    let text_spec = CollectionSpec {
        dimension: None,
        ..spec(IndexType::Auto)
    };
    let (info, created) = svc.create_collection("t", text_spec.clone()).await.unwrap();
    assert!(created);
    assert_eq!(info.source, "text");
    let (_, created) = svc.create_collection("t", text_spec).await.unwrap();
    assert!(!created, "identical settings are not a conflict");
    let long: String = (0..200)
        .map(|i| format!("Sentence number {i} talks about topic {}. ", i % 7))
        .collect();
    let done = svc
        .upsert_documents(
            "t",
            vec![
                DocumentInput {
                    id: Some("long".into()),
                    text: Some(long.clone()),
                    ..Default::default()
                },
                DocumentInput {
                    id: Some("short".into()),
                    text: Some("hello world".into()),
                    metadata: json!({"lang": "en"}),
                    ..Default::default()
                },
            ],
        )
        .await
        .unwrap();
    assert!(done[0].passages > 1, "a long text is split");
    assert_eq!(done[1].passages, 1);
    let r = svc
        .query(
            "t",
            Query {
                input: QueryInput::Text("hello world".into()),
                ..vq(&[], 3)
            },
        )
        .await
        .unwrap();
    assert_eq!(r.results[0].document_id, "short");
    assert!(
        (r.results[0].score - 1.0).abs() < 1e-4,
        "same text, same embedding"
    );
    let chars: Vec<char> = long.chars().collect();
    // Every passage of the long document.
    let whole = || Query {
        input: QueryInput::Text("topic".into()),
        filter: Some(json!({"lang": {"$ne": "en"}})),
        ..vq(&[], 1000)
    };
    let all = svc.query("t", whole()).await.unwrap();
    assert_eq!(all.results.len(), done[0].passages);
    let check_spans = |r: &vicinity::service::QueryResult| {
        let mut indexes: Vec<usize> = r.results.iter().map(|h| h.passage.index).collect();
        indexes.sort_unstable();
        assert_eq!(indexes, (0..done[0].passages).collect::<Vec<_>>());
        for h in &r.results {
            let span: String = chars[h.passage.start..h.passage.end].iter().collect();
            assert_eq!(Some(span), h.text, "offsets point at the passage text");
            assert_eq!(h.id, format!("{}#{}", h.document_id, h.passage.index));
        }
    };
    check_spans(&all);
    svc.shutdown().await;

    // After a restart the spans come from the documents read back from the store.
    let svc = open_on(dir.path(), &backend).await;
    let again = svc.query("t", whole()).await.unwrap();
    check_spans(&again);
    let spans = |r: &vicinity::service::QueryResult| {
        let mut v: Vec<_> = r
            .results
            .iter()
            .map(|h| (h.id.clone(), h.passage))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    assert_eq!(spans(&again), spans(&all));
    svc.shutdown().await;
}

/// Starts an embedding request and returns once it is held at `gate`: the encoder stays busy
/// until the gate releases it.
async fn hold_encoder(
    svc: &Arc<Service>,
    gate: &common::Gate,
) -> tokio::task::JoinHandle<ServiceResult<Embeddings>> {
    let held = tokio::spawn({
        let svc = svc.clone();
        async move { svc.embed(vec!["a question".into()], "input", true).await }
    });
    gate.entered.notified().await;
    held
}

/// Index state of a collection: (status, pending, plan of a vector query).
async fn state_and_plan(svc: &Service, name: &str, probe: &[f32]) -> (&'static str, usize, Plan) {
    let info = svc.get_collection(name).await.unwrap();
    let r = svc.query(name, vq(probe, 5)).await.unwrap();
    assert_eq!(r.results.len(), 5);
    (info.index_state.status, info.index_state.pending, r.plan)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexing_gives_way_to_the_encoder_within_a_bound() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::Gate::new(common::tiny_worker());
    let mut s = settings(dir.path());
    s.planner.defer_max_unindexed = 500;
    s.planner.defer_quiet = Duration::from_millis(50);
    let svc = open_with(dir.path(), s, gate.clone()).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, data) = vector_docs(900, 21);
    let probe = data[..DIM].to_vec();
    let mut docs = docs.into_iter();

    // An embedding request held in flight: the encoder is busy.
    let held = hold_encoder(&svc, &gate).await;

    // Past the exact threshold but within the bound: the first build waits, queries scan.
    svc.upsert_documents("c", docs.by_ref().take(300).collect())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        state_and_plan(&svc, "c", &probe).await,
        ("scheduled", 300, Plan::Flat)
    );

    // Past the bound: the index is built although the encoder is still busy.
    svc.upsert_documents("c", docs.by_ref().take(300).collect())
        .await
        .unwrap();
    wait_indexed(&svc, "c").await;
    assert_eq!(state_and_plan(&svc, "c", &probe).await.2, Plan::Hnsw);

    // New passages within the bound wait for the encoder, and are found meanwhile.
    let late: Vec<DocumentInput> = docs.by_ref().take(100).collect();
    let late_vector = late[0].vector.clone().unwrap();
    svc.upsert_documents("c", late).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, pending, _) = state_and_plan(&svc, "c", &probe).await;
    assert_eq!((status, pending), ("ready", 100));
    let r = svc.query("c", vq(&late_vector, 1)).await.unwrap();
    assert_eq!(r.results[0].document_id, "d600");

    // Once the encoder is idle, the index catches up.
    assert!(!held.is_finished());
    gate.release(1);
    assert_eq!(held.await.unwrap().unwrap().vectors.len(), 1);
    wait_indexed(&svc, "c").await;
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_queries_end_the_wait_once_they_have_paid_for_the_indexing() {
    let dir = tempfile::tempdir().unwrap();
    let gate = common::Gate::new(common::tiny_worker());
    let mut s = settings(dir.path());
    s.planner.defer_quiet = Duration::from_millis(50);
    // Indexing a passage is worth 3 distance computations: three full scans pay for it.
    s.planner.defer_insert_cost = 3;
    let svc = open_with(dir.path(), s, gate.clone()).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, data) = vector_docs(300, 22);
    let probe = data[..DIM].to_vec();

    let held = hold_encoder(&svc, &gate).await;
    svc.upsert_documents("c", docs).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    // Each of these scans all 300 passages; the third one has paid for indexing them.
    for _ in 0..2 {
        assert_eq!(
            state_and_plan(&svc, "c", &probe).await,
            ("scheduled", 300, Plan::Flat)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, _, plan) = state_and_plan(&svc, "c", &probe).await;
    assert_eq!(plan, Plan::Flat);
    wait_indexed(&svc, "c").await;
    assert_eq!(state_and_plan(&svc, "c", &probe).await.2, Plan::Hnsw);
    assert!(!held.is_finished(), "the encoder was busy throughout");
    gate.release(1);
    held.await.unwrap().unwrap();
    svc.shutdown().await;
}

/// Background maintenance held at one of its pause points (see
/// [`Service::set_maintenance_hook`]): the first time it reaches `point` it waits there until
/// released or until this is dropped; later times pass through.
struct Pause {
    entered: tokio::sync::mpsc::UnboundedReceiver<()>,
    go: std::sync::mpsc::Sender<()>,
}

impl Pause {
    fn at(svc: &Service, collection: &str, point: &'static str) -> Pause {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = std::sync::Mutex::new(go_rx);
        let paused = std::sync::atomic::AtomicBool::new(false);
        let hook = move |at: &str| {
            if at == point && !paused.swap(true, std::sync::atomic::Ordering::SeqCst) {
                let _ = entered_tx.send(());
                let _ = go_rx.lock().unwrap().recv();
            }
        };
        svc.set_maintenance_hook(collection, Some(Arc::new(hook)))
            .unwrap();
        Pause { entered, go }
    }

    /// Waits until maintenance is held at the point.
    async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(120), self.entered.recv())
            .await
            .expect("maintenance never reached the pause point")
            .expect("the hook is alive");
    }

    fn release(&self) {
        let _ = self.go.send(());
    }
}

/// Runs `what` with a bound: work that waits on a paused maintenance step never ends, and the
/// test should fail rather than hang.
async fn unblocked<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} waited on background maintenance"))
}

fn one_hot(i: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; DIM];
    v[i % DIM] = 1.0;
    v[(i * 7 + 3) % DIM] = 0.5;
    v
}

fn vector_doc(id: &str, vector: Vec<f32>) -> DocumentInput {
    DocumentInput {
        id: Some(id.into()),
        vector: Some(vector),
        ..Default::default()
    }
}

/// Queries while a rebuild is held before its swap: approximate plan, right answers, and
/// writes made meanwhile are honoured, before and after the swap.
async fn check_queries_during_rebuild(
    svc: &Arc<Service>,
    name: &str,
    plan: Plan,
    data: &[f32],
    live: &[usize],
) {
    let info = svc.get_collection(name).await.unwrap();
    assert_eq!(info.index_state.status, "building");
    for &i in live.iter().step_by(37) {
        let q = &data[i * DIM..(i + 1) * DIM];
        let r = svc.query(name, vq(q, 5)).await.unwrap();
        assert_eq!(r.plan, plan, "the live index answers during the rebuild");
        assert_eq!(ids(&r)[0], format!("d{i}"));
        assert!(ids(&r).iter().all(|id| {
            let n: usize = id.trim_start_matches('d').parse().unwrap();
            live.contains(&n)
        }));
    }
    // A passage written during the rebuild is found at once, on the approximate plan.
    let fresh = one_hot(5);
    svc.upsert_documents(name, vec![vector_doc("fresh", fresh.clone())])
        .await
        .unwrap();
    let r = svc.query(name, vq(&fresh, 1)).await.unwrap();
    assert_eq!((r.plan, ids(&r)[0].as_str()), (plan, "fresh"));
    // A passage deleted during the rebuild, and one replaced, are gone at once.
    let (gone, moved) = (live[10], live[11]);
    svc.delete_documents(name, Selector::Ids(vec![format!("d{gone}")]))
        .await
        .unwrap();
    svc.upsert_documents(name, vec![vector_doc(&format!("d{moved}"), one_hot(9))])
        .await
        .unwrap();
    for i in [gone, moved] {
        let r = svc
            .query(name, vq(&data[i * DIM..(i + 1) * DIM], 10))
            .await
            .unwrap();
        assert_eq!(r.plan, plan);
        assert!(
            (r.results[0].score - 1.0).abs() > 1e-4,
            "d{i}'s old vector served"
        );
    }
}

/// After the swap: the new index holds what was written during the build, and nothing removed.
async fn check_after_rebuild(
    svc: &Arc<Service>,
    name: &str,
    plan: Plan,
    data: &[f32],
    live: &[usize],
) {
    wait_indexed(svc, name).await;
    let info = svc.get_collection(name).await.unwrap();
    assert_eq!(info.index_state.indexed as u64, info.passages);
    let r = svc.query(name, vq(&one_hot(5), 1)).await.unwrap();
    assert_eq!((r.plan, ids(&r)[0].as_str()), (plan, "fresh"));
    let (gone, moved) = (live[10], live[11]);
    for i in [gone, moved] {
        let r = svc
            .query(name, vq(&data[i * DIM..(i + 1) * DIM], 10))
            .await
            .unwrap();
        assert!(
            (r.results[0].score - 1.0).abs() > 1e-4,
            "d{i}'s old vector served"
        );
    }
    let r = svc.query(name, vq(&one_hot(9), 1)).await.unwrap();
    assert_eq!(ids(&r)[0], format!("d{moved}"));
}

/// While a build is held before it is done: the live HNSW graph takes the writes made
/// meanwhile, so that queries scan none of them exactly for as long as the build takes.
async fn check_live_graph_kept_current(svc: &Service, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = svc.get_collection(name).await.unwrap().index_state;
        assert_eq!(state.status, "building");
        if state.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the live graph did not take the writes made during the build: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lets the build held at `"built"` go on and holds the indexer again right after the swap:
/// before any insertion step could run, the new index already holds every write made during
/// the build (it caught up before it was swapped in), and nothing removed.
async fn check_caught_up_at_the_swap(svc: &Service, name: &str, built: Pause) {
    let mut swapped = Pause::at(svc, name, "swapped");
    built.release();
    swapped.reached().await;
    let info = svc.get_collection(name).await.unwrap();
    assert_eq!(info.index_state.status, "ready");
    assert_eq!(info.index_state.pending, 0, "{:?}", info.index_state);
    assert_eq!(info.index_state.indexed as u64, info.passages);
    swapped.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuilds_run_beside_the_live_index() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;

    // HNSW compaction: a third of the graph deleted.
    svc.create_collection("h", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, data) = vector_docs(600, 31);
    svc.upsert_documents("h", docs).await.unwrap();
    wait_indexed(&svc, "h").await;
    let mut pause = Pause::at(&svc, "h", "built");
    svc.delete_documents(
        "h",
        Selector::Ids((0..200).map(|i| format!("d{i}")).collect()),
    )
    .await
    .unwrap();
    pause.reached().await;
    let live: Vec<usize> = (200..600).collect();
    check_queries_during_rebuild(&svc, "h", Plan::Hnsw, &data, &live).await;
    check_live_graph_kept_current(&svc, "h").await;
    check_caught_up_at_the_swap(&svc, "h", pause).await;
    check_after_rebuild(&svc, "h", Plan::Hnsw, &data, &live).await;

    // IVF regrowth: four times the size it was trained at.
    svc.create_collection("v", spec(IndexType::Ivf))
        .await
        .unwrap();
    let (docs, data) = vector_docs(1100, 32);
    let mut docs = docs.into_iter();
    svc.upsert_documents("v", docs.by_ref().take(250).collect())
        .await
        .unwrap();
    wait_indexed(&svc, "v").await;
    let mut pause = Pause::at(&svc, "v", "built");
    svc.upsert_documents("v", docs.collect()).await.unwrap();
    pause.reached().await;
    let live: Vec<usize> = (0..1100).collect();
    check_queries_during_rebuild(&svc, "v", Plan::Ivf, &data, &live).await;
    check_caught_up_at_the_swap(&svc, "v", pause).await;
    check_after_rebuild(&svc, "v", Plan::Ivf, &data, &live).await;
    svc.shutdown().await;
}

/// Index builds and snapshots run on the maintenance threads, whose priority is lowered so
/// that queries get the CPU first; the swap of a new index, which takes the lock, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_and_snapshots_run_on_lowered_maintenance_threads() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let hook = {
        let seen = Arc::clone(&seen);
        move |at: &str| {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let nice = vicinity::priority::current_nice().unwrap();
            seen.lock().unwrap().push((at.to_owned(), name, nice));
        }
    };
    svc.set_maintenance_hook("c", Some(Arc::new(hook))).unwrap();
    let (docs, _) = vector_docs(600, 35);
    svc.upsert_documents("c", docs).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let seen = loop {
        let seen = seen.lock().unwrap().clone();
        let points: Vec<&str> = seen.iter().map(|(at, _, _)| at.as_str()).collect();
        if points.contains(&"built") && points.contains(&"snapshot") {
            break seen;
        }
        assert!(Instant::now() < deadline, "no build and snapshot: {seen:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let base = vicinity::priority::current_nice().unwrap();
    for (at, name, nice) in &seen {
        if at == "swapped" {
            // The swap takes the collection's write lock: never on a lowered thread.
            assert!(!name.starts_with("maintenance-"), "{at} ran on {name:?}");
            assert_eq!(*nice, base, "{at} on {name}");
            continue;
        }
        assert!(name.starts_with("maintenance-"), "{at} ran on {name:?}");
        if cfg!(target_os = "linux") {
            assert_eq!(*nice, base.max(10), "{at} on {name}");
        }
    }
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_being_written_holds_up_no_query_and_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let (docs, data) = vector_docs(600, 33);
    {
        let svc = open(dir.path()).await;
        svc.create_collection("c", spec(IndexType::Hnsw))
            .await
            .unwrap();
        // The first build is followed by a snapshot, held here mid-way.
        let mut pause = Pause::at(&svc, "c", "snapshot");
        svc.upsert_documents("c", docs).await.unwrap();
        pause.reached().await;

        let q = &data[7 * DIM..8 * DIM];
        let r = unblocked("a query", svc.query("c", vq(q, 5)))
            .await
            .unwrap();
        assert_eq!((r.plan, ids(&r)[0].as_str()), (Plan::Hnsw, "d7"));
        let fresh = one_hot(2);
        unblocked(
            "an upsert",
            svc.upsert_documents("c", vec![vector_doc("fresh", fresh.clone())]),
        )
        .await
        .unwrap();
        unblocked(
            "a delete",
            svc.delete_documents("c", Selector::Ids(vec!["d7".into()])),
        )
        .await
        .unwrap();
        let r = unblocked("a query", svc.query("c", vq(&fresh, 1)))
            .await
            .unwrap();
        assert_eq!((r.plan, ids(&r)[0].as_str()), (Plan::Hnsw, "fresh"));
        let r = unblocked("a query", svc.query("c", vq(q, 5)))
            .await
            .unwrap();
        assert!(!ids(&r).contains(&"d7".to_string()), "deleted d7 served");
        let info = unblocked("a description", svc.get_collection("c"))
            .await
            .unwrap();
        assert_eq!((info.documents, info.passages), (600, 600));

        pause.release();
        wait_indexed(&svc, "c").await;
        svc.shutdown().await;
    }
    // The snapshot written while writes went on, reconciled with them at the next start.
    let svc = open(dir.path()).await;
    wait_indexed(&svc, "c").await;
    let info = svc.get_collection("c").await.unwrap();
    assert_eq!((info.passages, info.index_state.indexed), (600, 600));
    let r = svc
        .query("c", vq(&data[7 * DIM..8 * DIM], 5))
        .await
        .unwrap();
    assert_eq!(r.plan, Plan::Hnsw);
    assert!(!ids(&r).contains(&"d7".to_string()));
    let r = svc.query("c", vq(&one_hot(2), 1)).await.unwrap();
    assert_eq!(ids(&r)[0], "fresh");
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_passages_are_never_returned_while_their_removal_waits() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, data) = vector_docs(900, 34);
    // The indexer is held at its first snapshot, after the build: every removal from here on
    // waits in its queue while queries run.
    let mut pause = Pause::at(&svc, "c", "snapshot");
    svc.upsert_documents("c", docs).await.unwrap();
    pause.reached().await;
    let deleted: Vec<usize> = (0..900).step_by(3).collect();
    svc.delete_documents(
        "c",
        Selector::Ids(deleted.iter().map(|i| format!("d{i}")).collect()),
    )
    .await
    .unwrap();
    // Replaced: the same ids, other vectors (and no metadata).
    let replaced: Vec<usize> = (1..900).step_by(30).collect();
    svc.upsert_documents(
        "c",
        replaced
            .iter()
            .map(|&i| vector_doc(&format!("d{i}"), one_hot(i)))
            .collect(),
    )
    .await
    .unwrap();
    let gone = |id: &str| {
        let n: usize = id.trim_start_matches('d').parse().unwrap();
        n.is_multiple_of(3)
    };
    for i in (0..900).step_by(7) {
        let q = &data[i * DIM..(i + 1) * DIM];
        for filter in [None, Some(json!({"even": true}))] {
            let filtered = filter.is_some();
            let r = svc
                .query(
                    "c",
                    Query {
                        filter,
                        ..vq(q, 10)
                    },
                )
                .await
                .unwrap();
            assert_eq!(r.plan, Plan::Hnsw);
            assert_eq!(r.results.len(), 10);
            for h in &r.results {
                assert!(!gone(&h.document_id), "deleted {} served", h.document_id);
            }
            if replaced.contains(&i) || gone(&format!("d{i}")) {
                assert!(
                    (r.results[0].score - 1.0).abs() > 1e-4,
                    "d{i}'s old vector served"
                );
            } else if !filtered || i.is_multiple_of(2) {
                assert_eq!(r.results[0].document_id, format!("d{i}"));
            }
        }
    }
    pause.release();
    wait_indexed(&svc, "c").await;
    let info = svc.get_collection("c").await.unwrap();
    assert_eq!(info.index_state.indexed, 600);
    svc.shutdown().await;
}

/// An insertion step adds passages to the HNSW graph with no lock held: queries, writes and
/// deletes go on meanwhile, a passage in both the graph and `pending` is served once, and one
/// deleted while it was being inserted never comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insertion_step_holds_up_no_query_and_no_write() {
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    svc.create_collection("c", spec(IndexType::Hnsw))
        .await
        .unwrap();
    let (docs, data) = vector_docs(600, 37);
    svc.upsert_documents("c", docs).await.unwrap();
    wait_indexed(&svc, "c").await;

    let fresh = clustered_vectors(40, DIM, 4, 0.5, 38);
    let fresh_docs: Vec<DocumentInput> = fresh
        .chunks_exact(DIM)
        .enumerate()
        .map(|(i, v)| vector_doc(&format!("n{i}"), v.to_vec()))
        .collect();
    let mut pause = Pause::at(&svc, "c", "inserted");
    svc.upsert_documents("c", fresh_docs).await.unwrap();
    pause.reached().await;

    // n5 is in the graph and still pending: one hit, not two.
    let n5 = &fresh[5 * DIM..6 * DIM];
    let r = unblocked("a query", svc.query("c", vq(n5, 5)))
        .await
        .unwrap();
    let got = ids(&r);
    assert_eq!((r.plan, got[0].as_str()), (Plan::Hnsw, "n5"));
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "a passage served twice: {got:?}");
    assert_eq!(got.len(), 5, "a duplicate took the place of a hit: {got:?}");
    let q = &data[7 * DIM..8 * DIM];
    let r = unblocked("a query", svc.query("c", vq(q, 5)))
        .await
        .unwrap();
    assert_eq!(ids(&r)[0], "d7");
    // n3 is deleted while the graph already holds it.
    unblocked(
        "a delete",
        svc.delete_documents("c", Selector::Ids(vec!["n3".into()])),
    )
    .await
    .unwrap();
    let n3 = &fresh[3 * DIM..4 * DIM];
    let r = unblocked("a query", svc.query("c", vq(n3, 10)))
        .await
        .unwrap();
    assert!(!ids(&r).contains(&"n3".to_string()), "deleted n3 served");
    unblocked(
        "an upsert",
        svc.upsert_documents("c", vec![vector_doc("late", one_hot(4))]),
    )
    .await
    .unwrap();

    pause.release();
    wait_indexed(&svc, "c").await;
    let info = svc.get_collection("c").await.unwrap();
    assert_eq!(info.passages, 640);
    assert_eq!(info.index_state.indexed, 640, "{:?}", info.index_state);
    let r = svc.query("c", vq(n3, 10)).await.unwrap();
    assert!(!ids(&r).contains(&"n3".to_string()), "deleted n3 came back");
    let r = svc.query("c", vq(n5, 1)).await.unwrap();
    assert_eq!((r.plan, ids(&r)[0].as_str()), (Plan::Hnsw, "n5"));
    let r = svc.query("c", vq(&one_hot(4), 1)).await.unwrap();
    assert_eq!(ids(&r)[0], "late");
    svc.shutdown().await;
}

/// `vicinity bench retrieval`'s scoring, through the service: a query that is a document's own
/// text finds it first, one whose answer is not in the corpus scores 0, and the kinds are
/// scored apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieval_evaluation_scores_rankings_per_mode_and_kind() {
    use vicinity::eval::{self, EvalQuery, Mode};
    let dir = tempfile::tempdir().unwrap();
    let svc = open(dir.path()).await;
    svc.create_collection(
        "e",
        CollectionSpec {
            dimension: None,
            ..spec(IndexType::Auto)
        },
    )
    .await
    .unwrap();
    let texts = [
        ("a", "the cat sat on the mat"),
        ("b", "a river runs through the valley"),
        ("c", "bread rises in a warm oven"),
    ];
    let docs = texts
        .iter()
        .map(|(id, text)| DocumentInput {
            id: Some((*id).into()),
            text: Some((*text).into()),
            vector: None,
            metadata: serde_json::Value::Null,
        })
        .collect();
    svc.upsert_documents("e", docs).await.unwrap();
    let query = |text: &str, relevant: &str, kind: &str| EvalQuery {
        query: text.into(),
        relevant: vec![relevant.into()],
        kind: Some(kind.into()),
    };
    let queries = [
        query(texts[1].1, "b", "own text"),
        query(texts[2].1, "c", "own text"),
        query("anything at all", "not-in-the-corpus", "missing"),
    ];
    for mode in [Mode::Dense, Mode::Grouped] {
        let reports = eval::evaluate(&svc, "e", &queries, mode, 3).await.unwrap();
        let kinds: Vec<Option<&str>> = reports.iter().map(|r| r.kind.as_deref()).collect();
        assert_eq!(kinds, [None, Some("missing"), Some("own text")]);
        let (all, missing, own) = (&reports[0], &reports[1], &reports[2]);
        assert_eq!(all.queries, 3);
        assert!((all.scores.mrr - 2.0 / 3.0).abs() < 1e-9, "{all:?}");
        assert_eq!(
            (own.scores.mrr, own.scores.hit_at_1, own.scores.recall),
            (1.0, 1.0, 1.0)
        );
        assert_eq!(own.scores.ndcg, 1.0);
        assert_eq!((missing.scores.mrr, missing.scores.recall), (0.0, 0.0));
        assert!(all.p50_ms > 0.0 && all.p99_ms >= all.p50_ms);
    }
    svc.shutdown().await;
}

/// `vicinity bench retrieval` end to end: a corpus and queries in JSONL, one JSON report per
/// mode.
#[test]
fn bench_retrieval_command_reports_each_mode() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.jsonl");
    let queries = dir.path().join("queries.jsonl");
    std::fs::write(
        &corpus,
        "{\"id\":\"a\",\"text\":\"the cat sat on the mat\"}\n\
         {\"id\":\"b\",\"text\":\"a river runs through the valley\"}\n\n\
         {\"id\":\"c\",\"text\":\"bread rises in a warm oven\"}\n",
    )
    .unwrap();
    std::fs::write(
        &queries,
        "{\"query\":\"a river runs through the valley\",\"relevant\":[\"b\"]}\n\
         {\"query\":\"bread rises in a warm oven\",\"relevant\":[\"c\",\"x\"]}\n",
    )
    .unwrap();
    // `vicinity bench retrieval` on the files, with the tiny model and `args`.
    let bench = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vicinity"))
            .args(["bench", "retrieval"])
            .args(args)
            .arg("--model")
            .arg(tiny_model())
            .arg("--corpus")
            .arg(&corpus)
            .arg("--queries")
            .arg(&queries)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let output = bench(&[
        "--json",
        "--modes",
        "dense,lexical,hybrid-rrf,hybrid-dbsf,mmr",
        "--k",
        "3",
    ]);
    assert!(output.status.success(), "{output:?}");
    let reports: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let modes: Vec<&str> = reports
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["dense", "lexical", "hybrid-rrf", "hybrid-dbsf", "mmr"]
    );
    for r in &reports {
        assert_eq!(r["queries"], 2);
        assert_eq!(r["scores"]["mrr"], 1.0, "{r}");
        // The second query's other relevant document is not in the corpus.
        assert_eq!(r["scores"]["recall"], 0.75, "{r}");
    }
    let bad = bench(&["--modes", "sparse"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown mode"));
}
