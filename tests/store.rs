//! The store against real SQLite files in temporary directories: migrations, collections,
//! document upserts and deletes, pagination, scans, concurrency, durability across reopen, and
//! detection of corrupt rows.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection, sqlite::SqliteConnectOptions};
use tempfile::TempDir;
use vicinity::distance::Metric;
use vicinity::on_both_backends;
use vicinity::store::{
    Catchup, CollectionId, CollectionSource, CreateOutcome, DocumentState, NewCollection,
    NewDocument, NewPassage, PageRequest, PassageId, Store, StoreError, StoreOptions,
};
use vicinity::testing::postgres::TestBackend;
use vicinity::testing::random_vectors;

const DIM: usize = 8;

async fn open(dir: &TempDir) -> Store {
    Store::open(
        &format!("sqlite://{}", dir.path().join("db/v.db").display()),
        &StoreOptions::default(),
    )
    .await
    .expect("open store")
}

/// Where a test's database lives: an SQLite file in a temporary directory, or a fresh database
/// on the test PostgreSQL server. Tests that take a `Place` run on both (see
/// [`on_both_backends`]).
enum Place {
    Sqlite(TempDir),
    Postgres(String),
}

/// Runs `$body` with `$conn` bound to a connection of its own to the place's database (checked
/// against each backend's connection type), closes it and returns the body's value.
macro_rules! with_raw {
    ($place:expr, |$conn:ident| $body:expr) => {
        match $place {
            Place::Sqlite(dir) => {
                let mut $conn = raw(&dir.path().join("db/v.db")).await;
                let out = $body;
                $conn.close().await.unwrap();
                out
            }
            Place::Postgres(url) => {
                let mut $conn = sqlx::PgConnection::connect(url).await.unwrap();
                let out = $body;
                $conn.close().await.unwrap();
                out
            }
        }
    };
}

impl From<TestBackend> for Place {
    fn from(backend: TestBackend) -> Self {
        match backend {
            TestBackend::Sqlite => Place::Sqlite(TempDir::new().unwrap()),
            TestBackend::Postgres(url) => Place::Postgres(url),
        }
    }
}

impl Place {
    /// `None` where no PostgreSQL server can be had (the harness says why).
    async fn postgres() -> Option<Place> {
        vicinity::testing::postgres::database()
            .await
            .map(Place::Postgres)
    }

    fn url(&self) -> String {
        match self {
            Place::Sqlite(dir) => format!("sqlite://{}", dir.path().join("db/v.db").display()),
            Place::Postgres(url) => url.clone(),
        }
    }

    async fn open(&self) -> Store {
        self.open_with(&StoreOptions::default()).await
    }

    async fn open_with(&self, options: &StoreOptions) -> Store {
        Store::open(&self.url(), options).await.expect("open store")
    }

    /// Runs `sql` on a connection of its own, under the store, as another program would.
    async fn execute(&self, sql: &'static str) {
        with_raw!(self, |conn| {
            sqlx::query(sql).execute(&mut conn).await.unwrap();
        });
    }

    /// The number `sql` (a `SELECT count(*) ...`) reads, on a connection of its own.
    async fn count(&self, sql: &'static str) -> i64 {
        with_raw!(self, |conn| sqlx::query_scalar(sql)
            .fetch_one(&mut conn)
            .await
            .unwrap())
    }

    /// Overwrites the stored vector of passage `id` with `blob`, as damage would.
    async fn tear_vector(&self, id: i64, blob: &[u8]) {
        const SQL: &str = "UPDATE passages SET vector = $2 WHERE id = $1";
        with_raw!(self, |conn| {
            sqlx::query(SQL)
                .bind(id)
                .bind(blob)
                .execute(&mut conn)
                .await
                .unwrap();
        });
    }
}

on_both_backends!(
    create_is_idempotent_and_reports_conflicts,
    first_vectors_fix_the_dimension_and_others_are_refused,
    upsert_replaces_documents_and_returns_removed_passages,
    invalid_writes_are_refused_whole,
    passage_ids_are_never_reused,
    deleting_a_collection_removes_everything_in_it,
    schema_cascades_deletes_on_its_own,
    pagination_is_stable_and_complete,
    reads_by_id_keep_the_requested_order,
    scans_read_every_vector_and_document,
    a_scan_sees_one_snapshot_while_writes_go_on,
    data_survives_close_and_reopen,
    a_wrong_length_vector_blob_is_reported_as_corrupt,
    unicode_text_and_metadata_round_trip,
    concurrent_writers_and_readers_never_fail(flavor = "multi_thread", worker_threads = 4),
    racing_upserts_of_one_new_document_leave_one_copy(flavor = "multi_thread", worker_threads = 4),
    cached_passage_reads_follow_replacements_and_deletions,
    versions_count_the_writes_to_a_collection,
);

/// A raw connection to the same file, for looking under the store and for damaging it.
async fn raw(path: &Path) -> sqlx::SqliteConnection {
    SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .expect("raw connection")
}

fn vector_collection(name: &str) -> NewCollection {
    NewCollection {
        name: name.into(),
        distance: Metric::Cosine,
        index: json!({"type": "hnsw", "m": 16, "ef_construction": 200}),
        dimension: Some(DIM),
        source: CollectionSource::Vector,
        model_id: None,
        chunking: None,
        lexical: None,
    }
}

async fn create(store: &Store, name: &str) -> CollectionId {
    match store
        .create_collection(&vector_collection(name))
        .await
        .unwrap()
    {
        CreateOutcome::Created(c) => c.id,
        other => panic!("expected a new collection, got {other:?}"),
    }
}

/// A document of `passages` passages whose vectors are seeded by `seed`.
fn doc(id: &str, passages: usize, seed: u64) -> NewDocument {
    let vectors = random_vectors(passages, DIM, seed);
    let text: String = (0..passages).map(|i| format!("part {i}. ")).collect();
    let mut start = 0;
    NewDocument {
        id: id.into(),
        metadata: json!({"seed": seed, "tag": format!("t{}", seed % 3)}),
        passages: vectors
            .chunks_exact(DIM)
            .enumerate()
            .map(|(i, v)| {
                let part = format!("part {i}. ");
                let len = part.chars().count();
                let p = NewPassage {
                    start,
                    end: start + len,
                    text: Some(part),
                    vector: v.to_vec(),
                };
                start += len;
                p
            })
            .collect(),
        text: Some(text),
    }
}

async fn count(conn: &mut sqlx::SqliteConnection, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(conn).await.unwrap()
}

#[tokio::test]
async fn migrations_apply_once_and_reopening_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir).await;
    let id = create(&store, "a").await;
    store.upsert_documents(id, &[doc("d", 2, 1)]).await.unwrap();
    let path = store.path().expect("an SQLite file").to_path_buf();
    assert!(
        path.starts_with(dir.path().join("db")),
        "parent directory created"
    );
    store.close().await;

    let mut conn = raw(&path).await;
    let applied = count(
        &mut conn,
        "SELECT count(*) FROM _sqlx_migrations WHERE success",
    )
    .await;
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let page_size = count(&mut conn, "PRAGMA page_size").await;
    conn.close().await.unwrap();
    assert!(applied >= 1);
    assert_eq!(journal, "wal");
    assert_eq!(page_size, 8192);

    let store = open(&dir).await;
    let mut conn = raw(&path).await;
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM _sqlx_migrations WHERE success"
        )
        .await,
        applied
    );
    conn.close().await.unwrap();
    let summary = store.list_collections().await.unwrap();
    assert_eq!(summary.len(), 1);
    assert_eq!((summary[0].documents, summary[0].passages), (1, 2));
    store.close().await;
}

#[tokio::test]
async fn open_refuses_other_databases_and_accepts_plain_paths() {
    let dir = TempDir::new().unwrap();
    for url in ["sqlite::memory:", "mysql://h/db", "sqlite://v.db?mode=ro"] {
        let err = Store::open(url, &StoreOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{url}: {err}");
    }
    let plain = dir.path().join("a/b/plain.db");
    let store = Store::open(plain.to_str().unwrap(), &StoreOptions::default())
        .await
        .unwrap();
    assert!(plain.exists());
    store.close().await;
    let url = format!("sqlite:{}", plain.display());
    let store = Store::open(&url, &StoreOptions::default()).await.unwrap();
    assert!(store.list_collections().await.unwrap().is_empty());
    store.close().await;
}

async fn create_is_idempotent_and_reports_conflicts(place: Place) {
    let store = place.open().await;
    let new = vector_collection("c");
    let CreateOutcome::Created(created) = store.create_collection(&new).await.unwrap() else {
        panic!("first create must create");
    };
    assert_eq!(created.name, "c");
    assert_eq!(created.distance, Metric::Cosine);
    assert_eq!(created.dimension, Some(DIM));
    assert_eq!(created.index, new.index);
    assert!(created.created_at.ends_with('Z'), "{}", created.created_at);

    // Key order in the index configuration does not matter; values do.
    let mut same = new.clone();
    same.index = json!({"ef_construction": 200, "m": 16, "type": "hnsw"});
    assert_eq!(
        store.create_collection(&same).await.unwrap(),
        CreateOutcome::AlreadyExists(created.clone())
    );
    let mut no_dim = new.clone();
    no_dim.dimension = None;
    assert!(matches!(
        store.create_collection(&no_dim).await.unwrap(),
        CreateOutcome::AlreadyExists(_)
    ));
    for change in [
        |c: &mut NewCollection| c.distance = Metric::L2,
        |c: &mut NewCollection| c.index = json!({"type": "flat"}),
        |c: &mut NewCollection| c.dimension = Some(DIM + 1),
        |c: &mut NewCollection| c.source = CollectionSource::Text,
        |c: &mut NewCollection| c.chunking = Some(json!({"max_tokens": 128})),
        |c: &mut NewCollection| c.model_id = Some("m".into()),
    ] {
        let mut other = new.clone();
        change(&mut other);
        assert_eq!(
            store.create_collection(&other).await.unwrap(),
            CreateOutcome::Conflict(created.clone())
        );
    }
    assert_eq!(
        store.get_collection("c").await.unwrap(),
        Some(created.clone())
    );
    assert_eq!(
        store.get_collection_by_id(created.id).await.unwrap(),
        Some(created)
    );
    assert_eq!(store.get_collection("nope").await.unwrap(), None);

    let mut bad = vector_collection("bad");
    bad.index = json!("hnsw");
    assert!(matches!(
        store.create_collection(&bad).await,
        Err(StoreError::Invalid(_))
    ));
    store.close().await;
}

async fn first_vectors_fix_the_dimension_and_others_are_refused(place: Place) {
    let store = place.open().await;
    let mut text = vector_collection("text");
    text.dimension = None;
    text.source = CollectionSource::Text;
    text.model_id = Some("all-MiniLM-L6-v2".into());
    text.chunking = Some(json!({"max_tokens": 256, "overlap": 32}));
    let id = store.create_collection(&text).await.unwrap().record().id;

    store.upsert_documents(id, &[doc("a", 1, 1)]).await.unwrap();
    let stored = store.get_collection("text").await.unwrap().unwrap();
    assert_eq!(stored.dimension, Some(DIM));
    assert_eq!(stored.chunking, text.chunking);

    let mut wide = doc("b", 1, 2);
    wide.passages[0].vector.push(0.5);
    assert!(matches!(
        store.upsert_documents(id, &[wide]).await,
        Err(StoreError::DimensionMismatch { expected: DIM, got })  if got == DIM + 1
    ));
    store.set_dimension(id, DIM).await.unwrap();
    assert!(matches!(
        store.set_dimension(id, DIM + 1).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.set_dimension(CollectionId(999), DIM).await,
        Err(StoreError::CollectionNotFound(CollectionId(999)))
    ));
    store.close().await;
}

async fn upsert_replaces_documents_and_returns_removed_passages(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;

    let first = store
        .upsert_documents(id, &[doc("a", 3, 1), doc("b", 2, 2)])
        .await
        .unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        first
            .iter()
            .all(|d| !d.replaced && d.removed_passage_ids.is_empty())
    );
    let a_old = first[0].passage_ids.clone();
    assert_eq!(a_old.len(), 3);
    assert_eq!(first[1].passage_ids.len(), 2);
    let all_old: BTreeSet<PassageId> = first.iter().flat_map(|d| d.passage_ids.clone()).collect();
    assert_eq!(all_old.len(), 5, "passage ids are distinct");

    let before = store.get_document(id, "a").await.unwrap().unwrap();
    let second = store
        .upsert_documents(id, &[doc("a", 2, 7), doc("c", 1, 3)])
        .await
        .unwrap();
    assert_eq!(second[0].id, "a");
    assert!(second[0].replaced);
    assert_eq!(second[0].removed_passage_ids, a_old);
    assert!(!second[1].replaced);
    assert!(second[1].removed_passage_ids.is_empty());
    let new_ids: Vec<PassageId> = second.iter().flat_map(|d| d.passage_ids.clone()).collect();
    assert!(new_ids.iter().all(|n| all_old.iter().all(|o| n > o)));

    let a = store.get_document(id, "a").await.unwrap().unwrap();
    assert_eq!(a.passage_count, 2);
    assert_eq!(a.metadata, json!({"seed": 7, "tag": "t1"}));
    assert_eq!(a.created_at, before.created_at);
    assert!(a.updated_at >= before.updated_at);

    let passages = store.document_passages(id, "a", true).await.unwrap();
    assert_eq!(
        passages.iter().map(|p| p.id).collect::<Vec<_>>(),
        second[0].passage_ids
    );
    let expected = doc("a", 2, 7);
    for (p, want) in passages.iter().zip(&expected.passages) {
        assert_eq!(p.vector.as_deref(), Some(&want.vector[..]));
        assert_eq!(
            (p.start, p.end, p.text.as_ref()),
            (want.start, want.end, want.text.as_ref())
        );
    }
    // The old passages are gone.
    assert!(
        store
            .get_passages(id, &a_old, false)
            .await
            .unwrap()
            .is_empty()
    );

    let summary = store.list_collections().await.unwrap();
    assert_eq!((summary[0].documents, summary[0].passages), (3, 5));
    store.close().await;
}

async fn invalid_writes_are_refused_whole(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let good = doc("ok", 1, 1);

    let mut nan = doc("nan", 1, 2);
    nan.passages[0].vector[3] = f32::NAN;
    let mut past_end = doc("end", 1, 3);
    past_end.passages[0].end = 10_000;
    let mut array_meta = doc("meta", 1, 4);
    array_meta.metadata = json!([1, 2]);
    let mut empty_vec = doc("empty", 1, 5);
    empty_vec.passages[0].vector.clear();
    let mut nul_text = doc("nul", 1, 7);
    nul_text.passages[0].text = Some("a\0b".into());
    for bad in [
        vec![good.clone(), nul_text],
        vec![good.clone(), doc("nul\0id", 1, 8)],
        vec![good.clone(), good.clone()],
        vec![good.clone(), nan],
        vec![good.clone(), past_end],
        vec![good.clone(), array_meta],
        vec![good.clone(), empty_vec],
        vec![good.clone(), doc("", 1, 6)],
    ] {
        let err = store.upsert_documents(id, &bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    }
    assert!(matches!(
        store.upsert_documents(CollectionId(4242), &[good]).await,
        Err(StoreError::CollectionNotFound(CollectionId(4242)))
    ));
    let page = store
        .list_documents(
            id,
            &PageRequest {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.total, 0, "nothing was written");
    store.close().await;
}

async fn passage_ids_are_never_reused(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let first = store.upsert_documents(id, &[doc("a", 4, 1)]).await.unwrap();
    let max_old = *first[0].passage_ids.iter().max().unwrap();

    // Deleting the highest ids is what would let a plain rowid table hand them out again.
    let deleted = store.delete_documents(id, &["a".into()]).await.unwrap();
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].passage_ids, first[0].passage_ids);
    let again = store.upsert_documents(id, &[doc("a", 4, 1)]).await.unwrap();
    assert!(again[0].passage_ids.iter().all(|&p| p > max_old));

    // Also across a restart, and across collections.
    let max_old = *again[0].passage_ids.iter().max().unwrap();
    store.delete_documents(id, &["a".into()]).await.unwrap();
    store.close().await;
    let store = place.open().await;
    let other = create(&store, "other").await;
    let third = store
        .upsert_documents(other, &[doc("x", 2, 9)])
        .await
        .unwrap();
    assert!(third[0].passage_ids.iter().all(|&p| p > max_old));
    store.close().await;
}

async fn deleting_a_collection_removes_everything_in_it(place: Place) {
    let store = place.open().await;
    let gone = create(&store, "gone").await;
    let kept = create(&store, "kept").await;
    store
        .upsert_documents(gone, &[doc("a", 3, 1), doc("b", 2, 2)])
        .await
        .unwrap();
    let kept_docs = store
        .upsert_documents(kept, &[doc("a", 1, 3)])
        .await
        .unwrap();

    assert!(store.delete_collection(gone).await.unwrap());
    assert!(!store.delete_collection(gone).await.unwrap());
    assert_eq!(store.get_collection("gone").await.unwrap(), None);

    assert_eq!(place.count("SELECT count(*) FROM documents").await, 1);
    assert_eq!(place.count("SELECT count(*) FROM passages").await, 1);
    assert_eq!(
        store
            .get_passages(kept, &kept_docs[0].passage_ids, false)
            .await
            .unwrap()
            .len(),
        1
    );

    // The name can be reused; the id cannot.
    let again = create(&store, "gone").await;
    assert!(again > kept);
    assert!(matches!(
        store.upsert_documents(gone, &[doc("z", 1, 1)]).await,
        Err(StoreError::CollectionNotFound(_))
    ));
    store.close().await;
}

async fn schema_cascades_deletes_on_its_own(place: Place) {
    // The store deletes children explicitly for speed; the schema must still cascade for any
    // other writer of the file.
    let store = place.open().await;
    let id = create(&store, "c").await;
    store
        .upsert_documents(id, &[doc("a", 3, 1), doc("b", 2, 2)])
        .await
        .unwrap();
    store.close().await;

    place
        .execute("DELETE FROM documents WHERE doc_id = 'a'")
        .await;
    assert_eq!(place.count("SELECT count(*) FROM passages").await, 2);
    place.execute("DELETE FROM collections").await;
    assert_eq!(place.count("SELECT count(*) FROM documents").await, 0);
    assert_eq!(place.count("SELECT count(*) FROM passages").await, 0);
}

async fn pagination_is_stable_and_complete(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let docs: Vec<NewDocument> = (0..25).map(|i| doc(&format!("d{i:02}"), 1, i)).collect();
    store.upsert_documents(id, &docs).await.unwrap();

    let mut seen = Vec::new();
    let mut request = PageRequest {
        after: None,
        offset: 0,
        limit: 7,
    };
    let mut pages = 0;
    loop {
        let page = store.list_documents(id, &request).await.unwrap();
        pages += 1;
        assert!(page.documents.len() <= 7);
        seen.extend(page.documents.iter().map(|d| d.id.clone()));
        if pages == 2 {
            // Writes between pages: a document added behind the cursor is not seen, one added
            // ahead of it is, one deleted ahead of it is not; nothing is seen twice.
            store
                .upsert_documents(id, &[doc("a-early", 1, 90), doc("z-late", 1, 91)])
                .await
                .unwrap();
            store.delete_documents(id, &["d20".into()]).await.unwrap();
        }
        match page.next_after {
            Some(after) => request.after = Some(after),
            None => {
                assert_eq!(page.total, 26);
                break;
            }
        }
    }
    let mut want: Vec<String> = (0..25)
        .filter(|&i| i != 20)
        .map(|i| format!("d{i:02}"))
        .collect();
    want.push("z-late".into());
    assert_eq!(seen, want);

    // Offset pagination over the same order, and an exact last page has no cursor.
    let page = store
        .list_documents(
            id,
            &PageRequest {
                after: None,
                offset: 24,
                limit: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(
        page.documents
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["d24", "z-late"]
    );
    assert_eq!(page.next_after, None);
    let empty = store
        .list_documents(
            id,
            &PageRequest {
                after: Some("zzz".into()),
                offset: 0,
                limit: 5,
            },
        )
        .await
        .unwrap();
    assert!(empty.documents.is_empty() && empty.next_after.is_none());
    store.close().await;
}

async fn reads_by_id_keep_the_requested_order(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let other = create(&store, "other").await;
    let written = store
        .upsert_documents(id, &[doc("a", 2, 1), doc("b", 1, 2), doc("c", 1, 3)])
        .await
        .unwrap();
    let foreign = store
        .upsert_documents(other, &[doc("a", 1, 4)])
        .await
        .unwrap();

    let ids = ["c", "missing", "a"].map(String::from);
    let got = store.get_documents(id, &ids).await.unwrap();
    assert_eq!(
        got.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["c", "a"]
    );
    assert_eq!(got[1].passage_count, 2);
    assert_eq!(got[1].text.as_deref(), Some("part 0. part 1. "));

    let wanted = [
        written[2].passage_ids[0],
        foreign[0].passage_ids[0], // another collection's: skipped
        written[0].passage_ids[1],
        9_999_999,
    ];
    let passages = store.get_passages(id, &wanted, false).await.unwrap();
    assert_eq!(
        passages
            .iter()
            .map(|p| (p.doc_id.as_str(), p.index))
            .collect::<Vec<_>>(),
        [("c", 0), ("a", 1)]
    );
    assert!(passages.iter().all(|p| p.vector.is_none()));
    let with_vectors = store.get_passages(id, &wanted, true).await.unwrap();
    assert_eq!(
        with_vectors[1].vector.as_deref(),
        Some(&doc("a", 2, 1).passages[1].vector[..])
    );
    store.close().await;
}

async fn scans_read_every_vector_and_document(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let empty = create(&store, "empty").await;
    let docs: Vec<NewDocument> = (0..40)
        .map(|i| doc(&format!("d{i:02}"), 1 + (i % 3) as usize, i))
        .collect();
    let written = store.upsert_documents(id, &docs).await.unwrap();

    let mut scan = store.scan_vectors(id, 7).await.unwrap();
    assert_eq!(scan.dimension(), Some(DIM));
    let mut loaded = Vec::new();
    while let Some(chunk) = scan.next_chunk().await.unwrap() {
        assert!(chunk.len() <= 7 && !chunk.is_empty());
        loaded.extend(chunk.iter().map(|(pid, v)| (pid, v.to_vec())));
    }
    assert!(scan.next_chunk().await.unwrap().is_none());
    let mut expected = Vec::new();
    for (d, w) in docs.iter().zip(&written) {
        for (p, pid) in d.passages.iter().zip(&w.passage_ids) {
            expected.push((*pid, p.vector.clone()));
        }
    }
    expected.sort_by_key(|e| e.0);
    assert_eq!(loaded, expected);

    let mut scan = store.scan_documents(id, 6).await.unwrap();
    let mut seen = Vec::new();
    while let Some(chunk) = scan.next_chunk().await.unwrap() {
        seen.extend(chunk);
    }
    assert_eq!(seen.len(), 40);
    for (s, (d, w)) in seen.iter().zip(docs.iter().zip(&written)) {
        assert_eq!(
            (&s.id, &s.metadata, &s.passage_ids),
            (&d.id, &d.metadata, &w.passage_ids)
        );
        let spans: Vec<(usize, usize)> = d.passages.iter().map(|p| (p.start, p.end)).collect();
        let got: Vec<(usize, usize)> = s.spans.iter().map(|p| (p.start, p.end)).collect();
        assert_eq!(got, spans);
    }

    let mut scan = store.scan_vectors(empty, 7).await.unwrap();
    assert!(scan.next_chunk().await.unwrap().is_none());
    assert!(matches!(
        store.scan_documents(CollectionId(777), 5).await,
        Err(StoreError::CollectionNotFound(_))
    ));
    store.close().await;
}

async fn a_scan_sees_one_snapshot_while_writes_go_on(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let docs: Vec<NewDocument> = (0..10).map(|i| doc(&format!("d{i}"), 1, i)).collect();
    store.upsert_documents(id, &docs).await.unwrap();

    let mut scan = store.scan_vectors(id, 4).await.unwrap();
    let mut n = scan.next_chunk().await.unwrap().unwrap().len();
    store
        .upsert_documents(id, &[doc("new", 3, 50)])
        .await
        .unwrap();
    store.delete_documents(id, &["d9".into()]).await.unwrap();
    while let Some(chunk) = scan.next_chunk().await.unwrap() {
        n += chunk.len();
    }
    assert_eq!(n, 10);
    store.close().await;
}

/// Two stores on one database, as two processes (or two nodes) would have: on SQLite the
/// second's writes contend for the file's lock instead of queueing behind the first's, on
/// PostgreSQL for the collections' row locks.
async fn concurrent_writers_and_readers_never_fail(place: Place) {
    let store = place.open().await;
    let other = place.open().await;
    let a = create(&store, "a").await;
    let b = create(&other, "b").await;
    const ROUNDS: u64 = 25;

    let mut tasks = tokio::task::JoinSet::new();
    for (collection, seed, store) in [(a, 0u64, store.clone()), (b, 1000, other.clone())] {
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                // Each round adds two documents and replaces the first one of the round before.
                let docs = [
                    doc(&format!("r{round}"), 3, seed + round),
                    doc(&format!("s{round}"), 1, seed + round + 500),
                ];
                store.upsert_documents(collection, &docs).await?;
                if round > 0 {
                    store
                        .upsert_documents(collection, &[doc(&format!("r{}", round - 1), 2, seed)])
                        .await?;
                }
            }
            Ok::<_, StoreError>(())
        });
    }
    for reader in 0..8u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let collection = if reader % 2 == 0 { a } else { b };
            for _ in 0..40 {
                let page = store
                    .list_documents(
                        collection,
                        &PageRequest {
                            limit: 10,
                            ..Default::default()
                        },
                    )
                    .await?;
                let ids: Vec<String> = page.documents.iter().map(|d| d.id.clone()).collect();
                store.get_documents(collection, &ids).await?;
                let mut scan = store.scan_vectors(collection, 16).await?;
                let mut ids = Vec::new();
                while let Some(chunk) = scan.next_chunk().await? {
                    ids.extend(chunk.ids);
                }
                store.get_passages(collection, &ids, true).await?;
                store.list_collections().await?;
            }
            Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result
            .expect("task panicked")
            .expect("store operation failed");
    }
    for collection in [a, b] {
        let page = store
            .list_documents(
                collection,
                &PageRequest {
                    limit: 1000,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.total, 2 * ROUNDS);
        let passages: u64 = page.documents.iter().map(|d| d.passage_count).sum();
        assert_eq!(passages, (ROUNDS - 1) * 2 + 3 + ROUNDS);
    }
    other.close().await;
    store.close().await;
}

async fn data_survives_close_and_reopen(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let written = store
        .upsert_documents(id, &[doc("a", 2, 1), doc("b", 1, 2)])
        .await
        .unwrap();
    let before = store
        .get_documents(id, &["a".into(), "b".into()])
        .await
        .unwrap();
    let ids: Vec<PassageId> = written.iter().flat_map(|d| d.passage_ids.clone()).collect();
    let passages = store.get_passages(id, &ids, true).await.unwrap();
    let collection = store.get_collection("c").await.unwrap();
    store.close().await;
    assert!(matches!(
        store.get_collection("c").await,
        Err(StoreError::Database(_))
    ));

    let store = place.open().await;
    assert_eq!(store.get_collection("c").await.unwrap(), collection);
    assert_eq!(
        store
            .get_documents(id, &["a".into(), "b".into()])
            .await
            .unwrap(),
        before
    );
    assert_eq!(store.get_passages(id, &ids, true).await.unwrap(), passages);
    store.close().await;
}

async fn a_wrong_length_vector_blob_is_reported_as_corrupt(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let written = store.upsert_documents(id, &[doc("a", 2, 1)]).await.unwrap();
    let torn = written[0].passage_ids[1];

    place
        .tear_vector(torn as i64, &[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00])
        .await;

    let mut scan = store.scan_vectors(id, 100).await.unwrap();
    let err = scan.next_chunk().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt(ref m) if m.contains(&format!("passage {torn}"))),
        "{err}"
    );
    assert!(
        scan.next_chunk().await.unwrap().is_none(),
        "a failed scan is over"
    );
    assert!(matches!(
        store.get_passages(id, &[torn], true).await,
        Err(StoreError::Corrupt(_))
    ));
    // Reads that do not touch the vector still work.
    assert_eq!(
        store.get_passages(id, &[torn], false).await.unwrap().len(),
        1
    );
    store.close().await;
}

async fn unicode_text_and_metadata_round_trip(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let text = "Zürich 🌍 naïve café — 東京 e\u{301}; end";
    let chars: Vec<char> = text.chars().collect();
    let cut = |a: usize, b: usize| chars[a..b].iter().collect::<String>();
    let vectors = random_vectors(2, DIM, 5);
    let document = NewDocument {
        id: "ドキュメント/1 🙂".into(),
        text: Some(text.into()),
        metadata: json!({"città": "Zürich", "emoji": "🌍", "nested": {"k": ["東京", 1.5, null]}}),
        passages: vec![
            NewPassage {
                start: 0,
                end: 8,
                text: Some(cut(0, 8)),
                vector: vectors[..DIM].to_vec(),
            },
            NewPassage {
                start: 6,
                end: chars.len(),
                text: Some(cut(6, chars.len())),
                vector: vectors[DIM..].to_vec(),
            },
        ],
    };
    let written = store
        .upsert_documents(id, std::slice::from_ref(&document))
        .await
        .unwrap();
    let got = store.get_document(id, &document.id).await.unwrap().unwrap();
    assert_eq!(got.text.as_deref(), Some(text));
    assert_eq!(got.metadata, document.metadata);
    let passages = store
        .get_passages(id, &written[0].passage_ids, false)
        .await
        .unwrap();
    assert_eq!(passages[0].text.as_deref(), Some("Zürich 🌍"));
    assert_eq!((passages[1].start, passages[1].end), (6, chars.len()));
    assert_eq!(passages[1].text, Some(cut(6, chars.len())));
    assert_eq!(passages[1].doc_id, document.id);

    // Offsets count characters, not bytes: one past the last character is refused.
    let mut beyond = document.clone();
    beyond.passages[1].end = chars.len() + 1;
    assert!(matches!(
        store.upsert_documents(id, &[beyond]).await,
        Err(StoreError::Invalid(_))
    ));
    let metadata: Value = store
        .scan_documents(id, 10)
        .await
        .unwrap()
        .next_chunk()
        .await
        .unwrap()
        .unwrap()[0]
        .metadata
        .clone();
    assert_eq!(metadata, document.metadata);
    store.close().await;
}

/// The passage cache answers repeated reads, and never answers with a passage that a
/// replacement, a deletion or a dropped collection removed. Run with the cache on and off: the
/// answers must be the same.
async fn cached_passage_reads_follow_replacements_and_deletions(place: Place) {
    for cache_bytes in [1 << 20, 0] {
        let store = place
            .open_with(&StoreOptions {
                passage_cache_bytes: cache_bytes,
                ..StoreOptions::default()
            })
            .await;
        let id = create(&store, "c").await;
        let first = store
            .upsert_documents(id, &[doc("a", 2, 1), doc("b", 2, 2)])
            .await
            .unwrap();
        let (a_old, b) = (first[0].passage_ids.clone(), first[1].passage_ids.clone());
        let all: Vec<PassageId> = a_old.iter().chain(&b).copied().collect();
        let read = store.get_passages(id, &all, false).await.unwrap();
        assert_eq!(read.len(), 4);
        assert_eq!(store.get_passages(id, &all, false).await.unwrap(), read);
        let stats = store.passage_cache_stats();
        if cache_bytes > 0 {
            assert_eq!((stats.hits, stats.misses), (4, 4), "{stats:?}");
        } else {
            assert_eq!((stats.hits, stats.bytes), (0, 0), "{stats:?}");
        }

        // Replacing `a` removes its cached passages; its new ones read through.
        let second = store.upsert_documents(id, &[doc("a", 3, 9)]).await.unwrap();
        let a_new = second[0].passage_ids.clone();
        assert!(
            store
                .get_passages(id, &a_old, false)
                .await
                .unwrap()
                .is_empty()
        );
        // Cached and uncached ids mixed keep the order asked.
        let mixed = [a_new[2], b[1], a_old[0], a_new[0], b[0]];
        let got = store.get_passages(id, &mixed, false).await.unwrap();
        assert_eq!(
            got.iter()
                .map(|p| (p.doc_id.as_str(), p.index))
                .collect::<Vec<_>>(),
            [("a", 2), ("b", 1), ("a", 0), ("b", 0)]
        );
        assert_eq!(got[0].text.as_deref(), Some("part 2. "));

        // Deleting `b` removes its cached passages.
        store.delete_documents(id, &["b".into()]).await.unwrap();
        assert!(store.get_passages(id, &b, false).await.unwrap().is_empty());
        // Reads with vectors see the same rows, and keep their vectors.
        let with_vectors = store.get_passages(id, &a_new, true).await.unwrap();
        assert_eq!(with_vectors.len(), 3);
        assert!(with_vectors.iter().all(|p| p.vector.is_some()));
        assert!(
            store
                .get_passages(id, &a_new, false)
                .await
                .unwrap()
                .iter()
                .all(|p| p.vector.is_none())
        );

        // A dropped collection's passages are gone from the cache too.
        assert!(store.delete_collection(id).await.unwrap());
        assert!(
            store
                .get_passages(id, &a_new, false)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
    }
}

/// Two stores (two servers) upsert the same new documents at once, many times: each write sees
/// the other's committed rows or waits for them, so every document ends with exactly the
/// passages of the write that committed last, and every passage id returned by a write that
/// lost the race was removed by the one that won.
async fn racing_upserts_of_one_new_document_leave_one_copy(place: Place) {
    let store = place.open().await;
    let other = place.open().await;
    let id = create(&store, "c").await;
    const ROUNDS: u64 = 8;
    const DOCS: u64 = 256;
    for round in 0..ROUNDS {
        let names: Vec<String> = (0..DOCS).map(|i| format!("d{round}-{i}")).collect();
        let first: Vec<NewDocument> = names.iter().map(|n| doc(n, 3, round)).collect();
        let second: Vec<NewDocument> = names.iter().map(|n| doc(n, 2, round + 100)).collect();
        let (s1, s2) = (store.clone(), other.clone());
        let a = tokio::spawn(async move { s1.upsert_documents(id, &first).await });
        let b = tokio::spawn(async move { s2.upsert_documents(id, &second).await });
        let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
        for (i, name) in names.iter().enumerate() {
            let stored: Vec<PassageId> = store
                .document_passages(id, name, false)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.id)
                .collect();
            // The later commit replaced the earlier one, and says so.
            let (winner, loser) = if b[i].replaced {
                (&b[i], &a[i])
            } else {
                (&a[i], &b[i])
            };
            assert!(winner.replaced && !loser.replaced, "{name}: {a:?} {b:?}");
            assert_eq!(stored, winner.passage_ids, "{name}");
            assert_eq!(winner.removed_passage_ids, loser.passage_ids, "{name}");
        }
    }
    let summary = store.list_collections().await.unwrap();
    assert_eq!(summary[0].documents, ROUNDS * DOCS);
    other.close().await;
    store.close().await;
}

/// On PostgreSQL a node id is claimed by one process at a time: a second process with the same
/// id (a copied data directory, say) is refused until the first closes; other ids share the
/// database.
#[tokio::test]
async fn a_node_id_is_claimed_by_one_process_at_a_time() {
    let Some(place) = Place::postgres().await else {
        return;
    };
    let as_node = |id: &str| StoreOptions {
        node_id: id.into(),
        ..StoreOptions::default()
    };
    let first = place.open_with(&as_node("a")).await;
    first.claim().await.unwrap();
    first.claim().await.expect("claiming again is a no-op");
    let other = place.open_with(&as_node("b")).await;
    other
        .claim()
        .await
        .expect("another node shares the database");
    let second = place.open_with(&as_node("a")).await;
    let err = second.claim().await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(ref m) if m.contains("node id 'a' is in use")),
        "{err}"
    );
    first.close().await;
    second
        .claim()
        .await
        .expect("the id is free once the first closes");
    second.close().await;
    other.close().await;
}

/// Every write advances its collection's version by one; a delete that finds nothing, and
/// writes to other collections, do not.
async fn versions_count_the_writes_to_a_collection(place: Place) {
    let store = place.open().await;
    let id = create(&store, "c").await;
    let other = create(&store, "o").await;
    let (_, v1) = store
        .upsert_documents_versioned(id, &[doc("a", 2, 1), doc("b", 1, 2)])
        .await
        .unwrap();
    let (_, v2) = store
        .upsert_documents_versioned(id, &[doc("a", 1, 3)])
        .await
        .unwrap();
    let (_, w1) = store
        .upsert_documents_versioned(other, &[doc("x", 1, 4)])
        .await
        .unwrap();
    let (deleted, v3) = store
        .delete_documents_versioned(id, &["b".to_string()])
        .await
        .unwrap();
    assert_eq!(deleted.len(), 1);
    let (none, v3_again) = store
        .delete_documents_versioned(id, &["nothing".to_string()])
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!((v1, v2, v3, v3_again, w1), (1, 2, 3, 3, 1));
    let versions = store.collection_versions().await.unwrap();
    let of = |c: CollectionId| versions.iter().find(|v| v.id == c).unwrap().version;
    assert_eq!((of(id), of(other)), (3, 1));
    store.close().await;
}

/// The feed gives a follower the current state of every document a change touched, in one
/// snapshot, stops at a bound, and says when a change it needs was pruned.
#[tokio::test]
async fn the_feed_gives_the_states_of_changed_documents() {
    let Some(place) = Place::postgres().await else {
        return;
    };
    let store = place.open().await;
    let id = create(&store, "c").await;
    store
        .upsert_documents(id, &[doc("a", 2, 1), doc("b", 1, 2)])
        .await
        .unwrap();
    store.upsert_documents(id, &[doc("a", 3, 3)]).await.unwrap();
    store
        .delete_documents(id, &["b".to_string()])
        .await
        .unwrap();
    let Catchup::Apply {
        version,
        latest,
        documents,
    } = store.read_changes(id, 0, 1000).await.unwrap()
    else {
        panic!("the feed holds every change");
    };
    assert_eq!((version, latest), (3, 3));
    let states: std::collections::HashMap<String, Option<DocumentState>> =
        documents.into_iter().collect();
    assert_eq!(states.len(), 2);
    let a = states["a"].as_ref().expect("a exists");
    assert_eq!(a.passages.len(), 3, "the latest state of 'a'");
    assert_eq!(a.metadata["seed"], 3);
    assert_eq!(
        a.passages[0].vector,
        random_vectors(3, DIM, 3)[..DIM].to_vec()
    );
    let written = doc("a", 3, 3);
    for (got, want) in a.passages.iter().zip(&written.passages) {
        assert_eq!((got.span.start, got.span.end), (want.start, want.end));
        assert_eq!(got.text, want.text);
    }
    assert!(states["b"].is_none(), "'b' is deleted");

    // A bound on documents stops after the first change that reaches it.
    let Catchup::Apply { version, .. } = store.read_changes(id, 0, 1).await.unwrap() else {
        panic!("the feed holds every change");
    };
    assert_eq!(version, 1);
    // Nothing after the latest.
    let Catchup::Apply {
        version, documents, ..
    } = store.read_changes(id, 3, 1000).await.unwrap()
    else {
        panic!("up to date");
    };
    assert_eq!((version, documents.len()), (3, 0));

    // With no live node holding it back, pruning empties the feed: a follower at version 1
    // must load the collection again, one at the latest version needs nothing.
    store
        .heartbeat("n", "127.0.0.1:1", true, &[(id, 3)])
        .await
        .unwrap();
    let pruned = store
        .prune(Duration::from_secs(60), Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(pruned >= 3, "pruned {pruned}");
    assert!(matches!(
        store.read_changes(id, 1, 1000).await.unwrap(),
        Catchup::Behind { version: 3 }
    ));
    assert!(matches!(
        store.read_changes(id, 3, 1000).await.unwrap(),
        Catchup::Apply { version: 3, .. }
    ));
    store.delete_collection(id).await.unwrap();
    assert!(matches!(
        store.read_changes(id, 3, 1000).await.unwrap(),
        Catchup::Gone
    ));
    store.close().await;
}

/// The late-commit case: a transaction takes its collection's next version and is slow to
/// commit while a second write to the same collection, and one to another collection, start
/// after it. The second write cannot take a version until the first commits (it waits for
/// the collection's row lock), so no follower can see version N + 1 without N; the write to
/// the other collection commits first, and its own version is followed on its own. The
/// follower applies all three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_commits_late_is_never_skipped() {
    let Some(place) = Place::postgres().await else {
        return;
    };
    let store = place.open().await;
    let c = create(&store, "c").await;
    let other = create(&store, "o").await;

    // The slow writer: what a write does, by hand, with the commit held back.
    let mut slow = sqlx::PgConnection::connect(&place.url()).await.unwrap();
    sqlx::query("BEGIN").execute(&mut slow).await.unwrap();
    let taken: i64 = sqlx::query_scalar(
        "UPDATE collections SET version = version + 1 WHERE id = $1 RETURNING version",
    )
    .bind(c.0)
    .fetch_one(&mut slow)
    .await
    .unwrap();
    assert_eq!(taken, 1);
    sqlx::query(
        "INSERT INTO documents (collection_id, doc_id, text, metadata, created_at, updated_at) \
         VALUES ($1, 'slow', NULL, NULL, 'now', 'now')",
    )
    .bind(c.0)
    .execute(&mut slow)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO changes (collection_id, version, kind, doc_ids, node) \
         VALUES ($1, 1, 'upsert', '[\"slow\"]', 'slow-node')",
    )
    .bind(c.0)
    .execute(&mut slow)
    .await
    .unwrap();

    // The second write to the same collection starts, and waits.
    let s = store.clone();
    let fast =
        tokio::spawn(async move { s.upsert_documents_versioned(c, &[doc("fast", 1, 7)]).await });
    // A write to another collection commits meanwhile.
    let (_, w) = store
        .upsert_documents_versioned(other, &[doc("x", 1, 8)])
        .await
        .unwrap();
    assert_eq!(w, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !fast.is_finished(),
        "a second write took a version before the first committed"
    );

    // The follower sees nothing of `c` yet, and all of `other`.
    let Catchup::Apply {
        version, latest, ..
    } = store.read_changes(c, 0, 1000).await.unwrap()
    else {
        panic!("c exists");
    };
    assert_eq!((version, latest), (0, 0));
    let Catchup::Apply {
        version, documents, ..
    } = store.read_changes(other, 0, 1000).await.unwrap()
    else {
        panic!("other exists");
    };
    assert_eq!((version, documents.len()), (1, 1));

    sqlx::query("COMMIT").execute(&mut slow).await.unwrap();
    let (_, v) = fast.await.unwrap().unwrap();
    assert_eq!(v, 2, "the second write comes after the late commit");
    let Catchup::Apply {
        version, documents, ..
    } = store.read_changes(c, 0, 1000).await.unwrap()
    else {
        panic!("c exists");
    };
    assert_eq!(version, 2);
    let ids: BTreeSet<String> = documents
        .into_iter()
        .filter(|(_, s)| s.is_some())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["fast".to_string(), "slow".to_string()])
    );
    store.close().await;
}
