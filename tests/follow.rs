//! Two services sharing one PostgreSQL database, in one process: each follows the other's
//! writes through the change feed into its flat, HNSW, IVF and lexical indexes, collections
//! created and deleted on one appear and disappear on the other, writes racing on both nodes
//! converge, and queries wait for the version they ask for. PostgreSQL only: each test returns
//! early where none can be had (and fails under VICINITY_TEST_POSTGRES=require).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vicinity::embed::Embedder;
use vicinity::service::{
    CollectionSpec, DocumentInput, IndexType, Plan, Query, QueryInput, SearchMode, Selector,
    Service, ServiceError, ServiceSettings,
};
use vicinity::store::{Store, StoreOptions};
use vicinity::testing::clustered_vectors;

use common::tiny_worker;

const DIM: usize = 16;

/// A node: a service with its own data directory and node id on the shared database.
async fn node(url: &str, id: &str, dir: &Path, embedder: Arc<dyn Embedder>) -> Arc<Service> {
    let mut settings = ServiceSettings::new(dir);
    settings.default_overlap = 4;
    settings.planner.exact_threshold = 200;
    settings.planner.defer_max_unindexed = 0;
    settings.cluster.node_id = id.into();
    settings.cluster.address = format!("{id}.test:8080");
    settings.cluster.follow_interval = Duration::from_millis(100);
    settings.cluster.heartbeat_interval = Duration::from_millis(200);
    settings.cluster.consistency_timeout = Duration::from_secs(5);
    let store = Store::open(
        url,
        &StoreOptions {
            node_id: id.into(),
            ..StoreOptions::default()
        },
    )
    .await
    .unwrap();
    store.claim().await.unwrap();
    Service::open(settings, store, embedder).await.unwrap()
}

/// Two nodes on a fresh database, or `None` without PostgreSQL.
async fn pair(dir: &Path) -> Option<(Arc<Service>, Arc<Service>)> {
    pair_on(dir).await.map(|(a, b, _)| (a, b))
}

/// Two nodes on a fresh database and its URL, or `None` without PostgreSQL.
async fn pair_on(dir: &Path) -> Option<(Arc<Service>, Arc<Service>, String)> {
    let url = vicinity::testing::postgres::database().await?;
    let embedder: Arc<dyn Embedder> = tiny_worker();
    let a = node(&url, "a", &dir.join("a"), embedder.clone()).await;
    let b = node(&url, "b", &dir.join("b"), embedder).await;
    Some((a, b, url))
}

fn spec(kind: IndexType) -> CollectionSpec {
    common::vector_spec(kind, DIM)
}

fn docs(range: std::ops::Range<usize>, seed: u64) -> Vec<DocumentInput> {
    let data = clustered_vectors(range.len(), DIM, 8, 0.5, seed);
    range
        .zip(data.chunks_exact(DIM))
        .map(|(i, v)| DocumentInput {
            id: Some(format!("d{i}")),
            text: None,
            vector: Some(v.to_vec()),
            metadata: json!({"i": i, "seed": seed}),
        })
        .collect()
}

fn query(v: &[f32], k: usize, exact: bool) -> Query {
    Query {
        exact,
        ..common::vector_query(v, k)
    }
}

/// Document id and score of each hit.
fn answer(r: &vicinity::service::QueryResult) -> Vec<(String, f32)> {
    r.results
        .iter()
        .map(|h| (h.document_id.clone(), h.score))
        .collect()
}

/// Waits, bounded, until `check` holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The same exact query on both nodes, at `version`, gives the same answer.
async fn same_answers(a: &Service, b: &Service, name: &str, version: u64, probes: &[f32]) {
    for (i, p) in probes.chunks_exact(DIM).enumerate() {
        let on_a = a
            .query_at(name, query(p, 10, true), Some(version))
            .await
            .unwrap();
        let on_b = b
            .query_at(name, query(p, 10, true), Some(version))
            .await
            .unwrap();
        assert!(on_a.version >= version && on_b.version >= version);
        assert_eq!(answer(&on_a), answer(&on_b), "{name}: probe {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_on_one_node_reach_the_others_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = pair(dir.path()).await else {
        return;
    };
    let probes = clustered_vectors(20, DIM, 8, 0.5, 99);
    for (name, kind, plan) in [
        ("flat", IndexType::Flat, Plan::Flat),
        ("hnsw", IndexType::Hnsw, Plan::Hnsw),
        ("ivf", IndexType::Ivf, Plan::Ivf),
    ] {
        a.create_collection(name, spec(kind)).await.unwrap();
        // Created on A, it appears on B.
        eventually("the collection reaches B", async || {
            b.get_collection(name).await.is_ok()
        })
        .await;
        let mut version = 0;
        for chunk in 0..4 {
            let range = chunk * 150..(chunk + 1) * 150;
            let done = a
                .upsert_documents_versioned(name, docs(range, chunk as u64))
                .await
                .unwrap();
            assert_eq!(done.version, version + 1, "one version per write");
            version = done.version;
        }
        // A read on B that asks for A's last version sees all of it.
        let first = b
            .query_at(name, query(&probes[..DIM], 600, true), Some(version))
            .await
            .unwrap();
        assert_eq!(first.results.len(), 600, "{name}");
        // Replace some documents on B and delete some: A follows.
        let replaced = b
            .upsert_documents_versioned(name, docs(0..50, 7))
            .await
            .unwrap();
        let deleted = b
            .delete_documents_versioned(
                name,
                Selector::Ids((50..100).map(|i| format!("d{i}")).collect()),
            )
            .await
            .unwrap();
        assert_eq!(deleted.value.len(), 50);
        assert_eq!(
            (replaced.version, deleted.version),
            (version + 1, version + 2)
        );
        same_answers(&a, &b, name, deleted.version, &probes).await;
        let info = a.get_collection(name).await.unwrap();
        assert_eq!(info.documents, 550, "{name} on A");
        // The follower built its approximate index from the followed passages.
        if plan != Plan::Flat {
            eventually("B builds its index", async || {
                let info = b.get_collection(name).await.unwrap();
                info.index_state.status == "ready" && info.index_state.pending == 0
            })
            .await;
            let approx = b
                .query(name, query(&probes[..DIM], 10, false))
                .await
                .unwrap();
            assert_eq!(approx.plan, plan, "{name}");
            let exact = b
                .query(name, query(&probes[..DIM], 10, true))
                .await
                .unwrap();
            let found = answer(&approx)
                .iter()
                .filter(|h| answer(&exact).iter().any(|e| e.0 == h.0))
                .count();
            // IVF scans a few cells of 600 clustered points: it misses more than HNSW.
            let floor = if plan == Plan::Ivf { 5 } else { 8 };
            assert!(found >= floor, "{name}: recall {found}/10 on the follower");
        }
    }

    // Deleted on B, the collection leaves A.
    b.delete_collection("flat").await.unwrap();
    eventually("the deletion reaches A", async || {
        matches!(
            a.get_collection("flat").await,
            Err(ServiceError::CollectionNotFound(_))
        )
    })
    .await;

    // Both nodes are registered with what they applied.
    let cluster = a.cluster().await.unwrap();
    let ids: Vec<&str> = cluster.nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    eventually("heartbeats carry the applied versions", async || {
        let cluster = b.cluster().await.unwrap();
        cluster.nodes.iter().all(|n| {
            n.alive && n.collections.len() == 2 && n.collections.iter().all(|c| c.lag == 0)
        })
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_on_two_nodes_converge() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = pair(dir.path()).await else {
        return;
    };
    a.create_collection("c", spec(IndexType::Flat))
        .await
        .unwrap();
    eventually("the collection reaches B", async || {
        b.get_collection("c").await.is_ok()
    })
    .await;
    // Both nodes write the same ids, interleaved: each often finds the other's write between
    // its own two, and catches up through the feed.
    let write = |svc: Arc<Service>, seed: u64| async move {
        let mut last = 0;
        for round in 0..20 {
            let start = (round * 7) % 60;
            let done = svc
                .upsert_documents_versioned("c", docs(start..start + 20, seed + round as u64))
                .await
                .unwrap();
            assert!(done.version > last, "versions grow");
            last = done.version;
        }
        last
    };
    let (va, vb) = tokio::join!(
        tokio::spawn(write(a.clone(), 100)),
        tokio::spawn(write(b.clone(), 200))
    );
    let version = va.unwrap().max(vb.unwrap());
    assert_eq!(version, 40, "every write took one version");
    let probes = clustered_vectors(10, DIM, 8, 0.5, 5);
    same_answers(&a, &b, "c", version, &probes).await;
    // Metadata too: every document has the same state on both.
    let state = async |svc: &Service| {
        let all = svc
            .query_at("c", query(&probes[..DIM], 100, true), Some(version))
            .await
            .unwrap();
        all.results
            .iter()
            .map(|h| (h.document_id.clone(), h.metadata.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(state(&a).await, state(&b).await);
    let written = (0..20)
        .flat_map(|round| {
            let start = (round * 7) % 60;
            start..start + 20
        })
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert_eq!(a.get_collection("c").await.unwrap().documents, written);
    assert_eq!(b.get_collection("c").await.unwrap().documents, written);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_written_on_one_node_is_found_lexically_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b)) = pair(dir.path()).await else {
        return;
    };
    let text_spec = CollectionSpec {
        dimension: None,
        ..spec(IndexType::Auto)
    };
    a.create_collection("t", text_spec).await.unwrap();
    let done = a
        .upsert_documents_versioned(
            "t",
            vec![
                DocumentInput {
                    id: Some("light".into()),
                    text: Some("The lighthouse keeper lit the lamp at dusk.".into()),
                    ..Default::default()
                },
                DocumentInput {
                    id: Some("bread".into()),
                    text: Some("The baker kneaded dough before sunrise.".into()),
                    ..Default::default()
                },
            ],
        )
        .await
        .unwrap();
    let lexical = Query {
        input: QueryInput::Text("lighthouse".into()),
        mode: Some(SearchMode::Lexical),
        ..query(&[], 2, false)
    };
    let hit = b
        .query_at("t", lexical.clone(), Some(done.version))
        .await
        .unwrap();
    assert_eq!(hit.results.len(), 1);
    assert_eq!(hit.results[0].document_id, "light");
    // The follower renders the hit as the writer does: where the passage lies comes from each
    // node's memory, the text from the store.
    let own = a.query("t", lexical).await.unwrap();
    let (mine, theirs) = (&own.results[0], &hit.results[0]);
    assert_eq!(
        (&mine.id, mine.passage, &mine.text),
        (&theirs.id, theirs.passage, &theirs.text)
    );
    assert_eq!(
        theirs.text.as_deref(),
        Some("The lighthouse keeper lit the lamp at dusk.")
    );
    assert_eq!((theirs.passage.start, theirs.passage.end), (0, 43));
    // A version nobody wrote is refused at once.
    let far = || Query {
        input: QueryInput::Text("lamp".into()),
        mode: Some(SearchMode::Lexical),
        ..query(&[], 2, false)
    };
    let err = b
        .query_at("t", far(), Some(done.version + 5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::InvalidInput {
                code: "version_not_written",
                ..
            }
        ),
        "{err:?}"
    );
    // One written elsewhere that this node has not applied is waited for, then refused.
    b.pause_following(true);
    let later = a
        .upsert_documents_versioned(
            "t",
            vec![DocumentInput {
                id: Some("lamp".into()),
                text: Some("A lamp in the window.".into()),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    let err = b
        .query_at("t", far(), Some(later.version))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::VersionNotReached { wanted, applied, .. }
                if wanted == later.version && applied == done.version
        ),
        "{err:?}"
    );
    b.pause_following(false);
    let found = b.query_at("t", far(), Some(later.version)).await.unwrap();
    assert_eq!(found.results[0].document_id, "lamp");
    a.shutdown().await;
    b.shutdown().await;
}

/// A node whose next change was pruned from the feed while it was not following (stalled past
/// the node timeout, say) loads the collection again, lexical index included, and serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_pruned_feed_loads_the_collection_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some((a, b, url)) = pair_on(dir.path()).await else {
        return;
    };
    let text_spec = CollectionSpec {
        dimension: None,
        ..spec(IndexType::Auto)
    };
    a.create_collection("t", text_spec).await.unwrap();
    let text = |id: &str, words: &str| DocumentInput {
        id: Some(id.into()),
        text: Some(words.into()),
        ..Default::default()
    };
    let first = a
        .upsert_documents_versioned("t", vec![text("one", "the first lighthouse")])
        .await
        .unwrap();
    let lexical = |words: &str| Query {
        input: QueryInput::Text(words.into()),
        mode: Some(SearchMode::Lexical),
        ..query(&[], 5, false)
    };
    let seen = b
        .query_at("t", lexical("lighthouse"), Some(first.version))
        .await
        .unwrap();
    assert_eq!(seen.results.len(), 1);

    b.pause_following(true);
    let mut last = first.version;
    for i in 0..3 {
        last = a
            .upsert_documents_versioned("t", vec![text(&format!("more{i}"), "another harbour")])
            .await
            .unwrap()
            .version;
    }
    a.delete_documents("t", Selector::Ids(vec!["one".into()]))
        .await
        .unwrap();
    last += 1;
    // What retention does to a node that stays silent: its next changes leave the feed.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("DELETE FROM changes")
        .execute(&mut conn)
        .await
        .unwrap();
    b.pause_following(false);

    let caught = b
        .query_at("t", lexical("harbour"), Some(last))
        .await
        .unwrap();
    assert_eq!(caught.results.len(), 3);
    let gone = b.query("t", lexical("lighthouse")).await.unwrap();
    assert!(gone.results.is_empty(), "the deleted document is gone on B");
    a.shutdown().await;
    b.shutdown().await;
}
