//! The exact flat index against a naive exact search, and its edge cases: replacement,
//! removal, filters, snapshots and bad input.

use std::path::Path;

use vicinity::distance::Metric;
use vicinity::index::flat::FlatIndex;
use vicinity::index::io::SnapshotWriter;
use vicinity::index::{Hit, IndexError, IndexKind, IndexMut, SearchParams, VectorIndex};
use vicinity::testing::{exact_top_k, random_vectors};

const METRICS: [Metric; 3] = [Metric::Cosine, Metric::Dot, Metric::L2];
const P: SearchParams = SearchParams {
    ef: None,
    nprobe: None,
    oversampling: None,
};

/// Distinct, scattered ids, so that nothing can confuse an id with a row number.
fn ids(n: usize, seed: u64) -> Vec<u64> {
    (0..n as u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed)
        .collect()
}

fn build(metric: Metric, dim: usize, ids: &[u64], data: &[f32]) -> FlatIndex {
    let mut index = FlatIndex::new(metric, dim).unwrap();
    index.add(ids, data).unwrap();
    index
}

/// Preprocessed copy of `v`, as the index stores and scores it.
fn prepared(metric: Metric, v: &[f32]) -> Vec<f32> {
    let mut v = v.to_vec();
    assert!(metric.preprocess(&mut v));
    v
}

/// Allowed gap between an f32 kernel's score and the f64 oracle's: the summation bound
/// `γ_d · Σ|terms|` (see the distance kernel tests), doubled for the oracle's own rounding.
fn tolerance(metric: Metric, q: &[f32], v: &[f32]) -> f32 {
    let d = q.len() as f64;
    let gamma = d * f64::from(f32::EPSILON) / 2.0;
    let mass: f64 = match metric {
        Metric::Cosine | Metric::Dot => q
            .iter()
            .zip(v)
            .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
            .sum(),
        Metric::L2 => q.iter().zip(v).map(|(a, b)| f64::from(a - b).powi(2)).sum(),
    };
    (4.0 * gamma * mass + 1e-6) as f32
}

/// `found` is the exact ranking `truth`: same length, same ids in the same order, scores within
/// rounding. Where ids differ, the two rows must tie within rounding (a legitimate swap).
fn assert_same_ranking(index: &FlatIndex, q: &[f32], found: &[Hit], truth: &[Hit]) {
    assert_eq!(found.len(), truth.len(), "result length");
    let m = index.metric();
    for (i, (f, t)) in found.iter().zip(truth).enumerate() {
        let tol = tolerance(m, q, index.get(t.id).expect("truth ids are stored"));
        assert!(
            (f.score - t.score).abs() <= tol,
            "{m} rank {i}: score {} vs exact {} (tolerance {tol})",
            f.score,
            t.score
        );
        if f.id != t.id {
            let mine = truth.iter().find(|h| h.id == f.id);
            let exact = mine.map_or_else(|| m.score(q, index.get(f.id).unwrap()), |h| h.score);
            assert!(
                (exact - t.score).abs() <= 2.0 * tol,
                "{m} rank {i}: id {} instead of {} without a tie",
                f.id,
                t.id
            );
        }
    }
    let mut seen: Vec<u64> = found.iter().map(|h| h.id).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), found.len(), "an id came back twice");
}

fn check_against_exact(index: &FlatIndex, queries: &[f32], k: usize) {
    let (dim, m) = (index.dim(), index.metric());
    for raw in queries.chunks_exact(dim) {
        let q = prepared(m, raw);
        let found = index.search(raw, k, &P, None).unwrap();
        let truth = exact_top_k(m, dim, index.ids(), index.vectors(), &q, k, None);
        assert_same_ranking(index, &q, &found, &truth);
    }
}

#[test]
fn equals_exact_search_for_every_metric() {
    let (n, dim) = (700, 37);
    let data = random_vectors(n, dim, 1);
    let queries = random_vectors(15, dim, 2);
    let ids = ids(n, 3);
    for m in METRICS {
        let index = build(m, dim, &ids, &data);
        for k in [1, 10, 64, n] {
            check_against_exact(&index, &queries, k);
        }
    }
}

#[test]
fn split_scan_equals_exact_search() {
    // 8.6 MB of vectors: above the threshold where one query's scan is split across threads.
    let (n, dim) = (5600, 384);
    assert!(n * dim * 4 > vicinity::index::flat::PARALLEL_MIN_BYTES);
    let data = random_vectors(n, dim, 4);
    let queries = random_vectors(4, dim, 5);
    let ids = ids(n, 6);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for m in METRICS {
        let index = build(m, dim, &ids, &data);
        pool.install(|| {
            for k in [1, 10, 300] {
                check_against_exact(&index, &queries, k);
            }
        });
        // The same answer whether split or not.
        let serial = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let q = &queries[..dim];
        let split = pool.install(|| index.search(q, 25, &P, None).unwrap());
        let whole = serial.install(|| index.search(q, 25, &P, None).unwrap());
        assert_eq!(split, whole, "{m}");
        // A filter is applied inside every part of a split scan.
        let filter = |id: u64| id % 5 == 1;
        let qp = prepared(m, q);
        let truth = exact_top_k(m, dim, index.ids(), index.vectors(), &qp, 10, Some(&filter));
        let found = pool.install(|| index.search(q, 10, &P, Some(&filter)).unwrap());
        assert_same_ranking(&index, &qp, &found, &truth);
    }
}

#[test]
fn batch_search_equals_single_searches() {
    let (n, dim) = (2000, 160);
    let data = random_vectors(n, dim, 7);
    let queries = random_vectors(37, dim, 8);
    let ids = ids(n, 9);
    let not_third = |id: u64| !id.is_multiple_of(3);
    for threads in [1, 2, 4, 64] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for m in METRICS {
            let index = build(m, dim, &ids, &data);
            pool.install(|| {
                for filter in [None, Some(&not_third as &(dyn Fn(u64) -> bool + Sync))] {
                    let batch = index.search_batch(&queries, 10, &P, filter).unwrap();
                    assert_eq!(batch.len(), 37);
                    for (q, got) in queries.chunks_exact(dim).zip(&batch) {
                        assert_eq!(got, &index.search(q, 10, &P, filter).unwrap(), "{m}");
                    }
                }
            });
        }
    }
}

#[test]
fn filtered_search_is_the_filtered_exact_top_k() {
    let (n, dim) = (3000, 100);
    let data = random_vectors(n, dim, 10);
    let queries = random_vectors(8, dim, 11);
    let ids = ids(n, 12);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let selective = |id: u64| id % 10 == 7;
    let none = |_: u64| false;
    for m in METRICS {
        let index = build(m, dim, &ids, &data);
        for raw in queries.chunks_exact(dim) {
            let q = prepared(m, raw);
            for k in [1, 10, n] {
                let truth = exact_top_k(
                    m,
                    dim,
                    index.ids(),
                    index.vectors(),
                    &q,
                    k,
                    Some(&selective),
                );
                assert!(!truth.is_empty() && truth.len() < n / 5);
                for found in [
                    index.search(raw, k, &P, Some(&selective)).unwrap(),
                    pool.install(|| index.search(raw, k, &P, Some(&selective)).unwrap()),
                ] {
                    assert_same_ranking(&index, &q, &found, &truth);
                    assert!(found.iter().all(|h| selective(h.id)));
                }
            }
            assert!(index.search(raw, 5, &P, Some(&none)).unwrap().is_empty());
        }
    }
}

#[test]
fn re_adding_an_id_replaces_its_vector() {
    let mut index = FlatIndex::new(Metric::L2, 3).unwrap();
    index
        .add(&[1, 2, 3], &[0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 9.0, 9.0, 9.0])
        .unwrap();
    index
        .add(&[2, 4], &[-1.0, -1.0, -1.0, 7.0, 7.0, 7.0])
        .unwrap();
    assert_eq!(index.len(), 4);
    assert_eq!(index.get(2), Some(&[-1.0, -1.0, -1.0][..]));
    let hits = index.search(&[-1.0, -1.0, -1.0], 4, &P, None).unwrap();
    let order: Vec<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(order, vec![2, 1, 4, 3]);
    assert_eq!(hits[0].score, 0.0);
    assert_eq!(hits[1].distance(Metric::L2), 3.0);
}

#[test]
fn removed_ids_never_come_back() {
    let (n, dim) = (500, 24);
    let data = random_vectors(n, dim, 13);
    let ids = ids(n, 14);
    for m in METRICS {
        let mut index = build(m, dim, &ids, &data);
        let gone: Vec<u64> = ids.iter().copied().step_by(3).collect();
        let before: Vec<Vec<f32>> = ids
            .iter()
            .map(|&id| index.get(id).unwrap().to_vec())
            .collect();
        // Ids not present, and repeats, are ignored.
        let mut request = gone.clone();
        request.extend([12345, gone[0]]);
        assert_eq!(index.remove(&request).unwrap(), gone.len());
        assert_eq!(index.len(), n - gone.len());
        for (i, &id) in ids.iter().enumerate() {
            if gone.contains(&id) {
                assert!(!index.contains(id) && index.get(id).is_none());
            } else {
                assert!(index.contains(id));
                assert_eq!(
                    index.get(id).unwrap(),
                    &before[i][..],
                    "survivor moved intact"
                );
            }
        }
        for q in data.chunks_exact(dim).take(20) {
            let hits = index.search(q, n, &P, None).unwrap();
            assert_eq!(hits.len(), n - gone.len());
            assert!(hits.iter().all(|h| !gone.contains(&h.id)));
        }
        check_against_exact(&index, &random_vectors(5, dim, 15), 10);
        // Removing everything, then adding back, works from an empty store.
        assert_eq!(index.remove(&ids).unwrap(), n - gone.len());
        assert!(index.is_empty());
        assert!(index.search(&data[..dim], 3, &P, None).unwrap().is_empty());
        index.add(&ids[..2], &data[..2 * dim]).unwrap();
        assert_eq!(index.len(), 2);
    }
}

#[test]
fn save_load_round_trip_returns_identical_results() {
    let (n, dim) = (800, 48);
    let data = random_vectors(n, dim, 16);
    let queries = random_vectors(10, dim, 17);
    let ids = ids(n, 18);
    let dir = tempfile::tempdir().unwrap();
    for m in METRICS {
        let mut index = build(m, dim, &ids, &data);
        index.remove(&ids[100..150]).unwrap();
        let path = dir.path().join(m.as_str());
        index.save(&path).unwrap();
        // A second save replaces the first atomically.
        index.add(&[u64::MAX], &data[..dim]).unwrap();
        index.save(&path).unwrap();
        let loaded = FlatIndex::load(&path).unwrap();
        assert_eq!(loaded.metric(), m);
        assert_eq!(loaded.dim(), dim);
        assert_eq!(loaded.len(), index.len());
        assert!(loaded.contains(u64::MAX) && !loaded.contains(ids[120]));
        let filter = |id: u64| id.is_multiple_of(2);
        for q in queries.chunks_exact(dim) {
            assert_eq!(
                loaded.search(q, 10, &P, None).unwrap(),
                index.search(q, 10, &P, None).unwrap()
            );
            assert_eq!(
                loaded.search(q, 7, &P, Some(&filter)).unwrap(),
                index.search(q, 7, &P, Some(&filter)).unwrap()
            );
        }
    }
}

fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect()
}

#[test]
fn torn_or_foreign_snapshots_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let index = build(
        Metric::Dot,
        4,
        &[1, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
    );
    index.save(dir.path()).unwrap();
    for file in data_files(dir.path()) {
        let good = std::fs::read(&file).unwrap();
        let mut torn = good.clone();
        torn[good.len() / 2] ^= 0x01;
        std::fs::write(&file, &torn).unwrap();
        assert!(
            matches!(FlatIndex::load(dir.path()), Err(IndexError::Corrupt { .. })),
            "flipped bit in {file:?}"
        );
        std::fs::write(&file, &good[..good.len() - 4]).unwrap();
        assert!(
            matches!(FlatIndex::load(dir.path()), Err(IndexError::Corrupt { .. })),
            "truncated {file:?}"
        );
        std::fs::write(&file, &good).unwrap();
    }
    assert_eq!(FlatIndex::load(dir.path()).unwrap().len(), 2);

    // A snapshot of another kind, or with inconsistent arrays, is refused.
    let other = tempfile::tempdir().unwrap();
    let mut w = SnapshotWriter::create(other.path()).unwrap();
    w.write_f32s("vectors", &[1.0; 8]).unwrap();
    w.write_u64s("ids", &[1, 2]).unwrap();
    w.commit(
        IndexKind::Hnsw,
        Metric::Dot,
        4,
        serde_json::json!({"count": 2}),
    )
    .unwrap();
    assert!(matches!(
        FlatIndex::load(other.path()),
        Err(IndexError::Corrupt { .. })
    ));
    let mut w = SnapshotWriter::create(other.path()).unwrap();
    w.write_f32s("vectors", &[1.0; 8]).unwrap();
    w.write_u64s("ids", &[1, 1]).unwrap();
    w.commit(
        IndexKind::Flat,
        Metric::Dot,
        4,
        serde_json::json!({"count": 2}),
    )
    .unwrap();
    assert!(matches!(
        FlatIndex::load(other.path()),
        Err(IndexError::Corrupt { .. })
    ));
    let mut w = SnapshotWriter::create(other.path()).unwrap();
    w.write_f32s("vectors", &[1.0; 7]).unwrap();
    w.write_u64s("ids", &[1, 2]).unwrap();
    w.commit(
        IndexKind::Flat,
        Metric::Dot,
        4,
        serde_json::json!({"count": 2}),
    )
    .unwrap();
    assert!(matches!(
        FlatIndex::load(other.path()),
        Err(IndexError::Corrupt { .. })
    ));

    let missing = dir.path().join("nothing-here");
    assert!(matches!(
        FlatIndex::load(&missing),
        Err(IndexError::Io { .. })
    ));
}

#[test]
fn bad_input_gives_typed_errors_and_changes_nothing() {
    assert!(matches!(
        FlatIndex::new(Metric::Cosine, 0),
        Err(IndexError::InvalidParameter(_))
    ));
    let mut index = build(Metric::Cosine, 2, &[1, 2], &[1.0, 0.0, 0.0, 1.0]);
    let snapshot = index.clone();
    let unchanged = |index: &FlatIndex| {
        assert_eq!(index.ids(), snapshot.ids());
        assert_eq!(index.vectors(), snapshot.vectors());
    };

    let e = index.add(&[3], &[1.0, 2.0, 3.0]).unwrap_err();
    assert!(matches!(
        e,
        IndexError::DimensionMismatch {
            expected: 2,
            got: 3
        }
    ));
    let e = index.add(&[3, 4], &[1.0, 2.0, 3.0]).unwrap_err();
    assert!(matches!(e, IndexError::BatchShape { .. }));
    // The bad row is the last one: the rows before it must not have been added.
    let e = index
        .add(&[1, 3, 4], &[5.0, 5.0, 1.0, 1.0, f32::NAN, 1.0])
        .unwrap_err();
    assert!(matches!(
        e,
        IndexError::NonFinite {
            row: 2,
            position: 0
        }
    ));
    let e = index
        .add(&[3, 4], &[1.0, 1.0, 0.0, f32::NEG_INFINITY])
        .unwrap_err();
    assert!(matches!(
        e,
        IndexError::NonFinite {
            row: 1,
            position: 1
        }
    ));
    let e = index.add(&[3, 4], &[1.0, 1.0, 0.0, 0.0]).unwrap_err();
    assert!(matches!(e, IndexError::ZeroVector { row: 1 }));
    let e = index.add(&[3, 4, 3], &[1.0; 6]).unwrap_err();
    assert!(matches!(e, IndexError::DuplicateId { id: 3 }));
    unchanged(&index);
    assert!(e.is_invalid_input());

    let q = [1.0, 1.0];
    assert!(matches!(
        index.search(&q, 0, &P, None),
        Err(IndexError::ZeroK)
    ));
    assert!(matches!(
        index.search(&[1.0], 1, &P, None),
        Err(IndexError::DimensionMismatch {
            expected: 2,
            got: 1
        })
    ));
    assert!(matches!(
        index.search(&[f32::INFINITY, 1.0], 1, &P, None),
        Err(IndexError::NonFinite {
            row: 0,
            position: 0
        })
    ));
    assert!(matches!(
        index.search(&[0.0, 0.0], 1, &P, None),
        Err(IndexError::ZeroVector { row: 0 })
    ));
    assert!(matches!(
        index.search_batch(&[1.0, 1.0, 1.0], 1, &P, None),
        Err(IndexError::BatchShape { .. })
    ));
    assert!(matches!(
        index.search_batch(&[1.0, 1.0, 1.0, f32::NAN], 1, &P, None),
        Err(IndexError::NonFinite {
            row: 1,
            position: 1
        })
    ));
    assert!(matches!(
        index.search_batch(&[1.0, 1.0], 0, &P, None),
        Err(IndexError::ZeroK)
    ));
    assert!(index.search_batch(&[], 3, &P, None).unwrap().is_empty());

    // k larger than the index returns every vector, best first.
    let hits = index.search(&[1.0, 0.2], 50, &P, None).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![1, 2]);
    // An empty index answers with no hits, but still checks its input.
    let empty = FlatIndex::new(Metric::L2, 2).unwrap();
    assert!(empty.search(&q, 10, &P, None).unwrap().is_empty());
    assert_eq!(
        empty.search_batch(&[1.0; 4], 10, &P, None).unwrap(),
        vec![vec![]; 2]
    );
    assert!(matches!(
        empty.search(&q, 0, &P, None),
        Err(IndexError::ZeroK)
    ));
    // Zero vectors are fine under L2 and dot.
    let mut l2 = FlatIndex::new(Metric::L2, 2).unwrap();
    l2.add(&[9], &[0.0, 0.0]).unwrap();
    assert_eq!(l2.search(&[0.0, 0.0], 1, &P, None).unwrap()[0].id, 9);
    // An empty batch adds nothing.
    index.add(&[], &[]).unwrap();
    unchanged(&index);
}

#[test]
fn overflowing_dot_scores_rank_last_instead_of_failing() {
    // Finite components whose products overflow: +∞ + −∞ makes the score NaN, which must not
    // poison the ranking.
    let mut index = FlatIndex::new(Metric::Dot, 2).unwrap();
    index
        .add(&[1, 2, 3], &[3e38, -3e38, 1.0, 1.0, 1.0, 0.0])
        .unwrap();
    let hits = index.search(&[1e38, 1e38], 3, &P, None).unwrap();
    assert_eq!(hits.iter().map(|h| h.id).collect::<Vec<_>>(), vec![2, 3, 1]);
    assert_eq!(hits[2].score, f32::NEG_INFINITY);
}

#[test]
fn accessors_and_memory() {
    let (n, dim) = (300, 16);
    let data = random_vectors(n, dim, 19);
    let ids = ids(n, 20);
    let index = build(Metric::Dot, dim, &ids, &data);
    assert_eq!(index.kind(), IndexKind::Flat);
    assert_eq!(index.iter().len(), n);
    for ((id, v), (want_id, want_v)) in index.iter().zip(ids.iter().zip(data.chunks_exact(dim))) {
        assert_eq!((id, v), (*want_id, want_v));
    }
    assert!(index.memory_bytes() >= n * dim * 4 + n * 8);
    assert!(index.memory_bytes() < 2 * (n * dim * 4 + n * 40));
    let cosine = build(Metric::Cosine, dim, &ids, &data);
    let v = cosine.get(ids[5]).unwrap();
    assert!(
        (v.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-5,
        "stored normalised"
    );
}

#[test]
fn large_index_behaves_the_same_on_huge_page_storage() {
    // 9 MiB of rows: past the size where the rows move into their own memory map.
    let (n, dim) = (6000, 384);
    let data = random_vectors(n, dim, 21);
    let ids = ids(n, 22);
    let mut index = FlatIndex::new(Metric::Dot, dim).unwrap();
    index.add(&ids[..1000], &data[..1000 * dim]).unwrap();
    index.add(&ids[1000..], &data[1000 * dim..]).unwrap();
    index.remove(&ids[10..20]).unwrap();
    assert!(index.memory_bytes() >= (n - 10) * dim * 4);
    let queries = random_vectors(3, dim, 23);
    check_against_exact(&index, &queries, 10);
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    let loaded = FlatIndex::load(dir.path()).unwrap();
    let copy = index.clone();
    for q in queries.chunks_exact(dim) {
        let want = index.search(q, 10, &P, None).unwrap();
        assert_eq!(loaded.search(q, 10, &P, None).unwrap(), want);
        assert_eq!(copy.search(q, 10, &P, None).unwrap(), want);
    }
    assert_eq!(loaded.vectors(), index.vectors());
    assert_eq!(index.get(ids[5000]).unwrap(), &data[5000 * dim..5001 * dim]);
}
