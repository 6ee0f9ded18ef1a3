//! IVF-Flat index: recall against the exact oracle, exactness when every list is probed,
//! filters, replacement and removal, persistence, and every kind of bad input.

use std::collections::HashSet;

use vicinity::distance::Metric;
use vicinity::index::ivf::{IvfBuilder, IvfIndex, IvfParams, default_nlist, default_nprobe};
use vicinity::index::kmeans::KMeansInit;
use vicinity::index::{Hit, IndexError, IndexMut, SearchParams, VectorIndex};
use vicinity::testing::{clustered_vectors, exact_top_k, random_vectors, recall};

fn probe(nprobe: usize) -> SearchParams {
    SearchParams {
        nprobe: Some(nprobe),
        oversampling: None,
        ..SearchParams::default()
    }
}

/// Rows as the metric stores them (normalised under cosine), for the oracle.
fn preprocessed(metric: Metric, dim: usize, data: &[f32]) -> Vec<f32> {
    let mut out = data.to_vec();
    for row in out.chunks_exact_mut(dim) {
        assert!(metric.preprocess(row));
    }
    out
}

/// Asserts that `found` is the oracle's answer: scores within rounding of the f64 oracle at
/// every rank, and the same ids except where rounding may reorder near-ties at the cut-off.
fn assert_same_hits(found: &[Hit], truth: &[Hit], context: &str) {
    let close = |a: f32, b: f32| (a - b).abs() <= 1e-4 * (1.0 + b.abs());
    assert_eq!(
        found.len(),
        truth.len(),
        "{context}: {found:?} vs {truth:?}"
    );
    for (f, t) in found.iter().zip(truth) {
        assert!(
            close(f.score, t.score),
            "{context}: rank of id {} scored {} where the exact rank holds {} (id {})",
            f.id,
            f.score,
            t.score,
            t.id
        );
    }
    let cut = truth.last().map_or(0.0, |h| h.score);
    let truth_ids: HashSet<u64> = truth.iter().map(|h| h.id).collect();
    for f in found {
        assert!(
            truth_ids.contains(&f.id) || close(f.score, cut),
            "{context}: id {} (score {}) is not in the exact top-k",
            f.id,
            f.score
        );
    }
}

/// The acceptance test: recall@10 ≥ 0.95 at the default `nlist` and `nprobe` on 20k clustered
/// 384-d vectors. The clusters outnumber nothing: with 20 clusters of about a thousand vectors
/// each, a cluster spans ~28 of the 566 lists, more than the default `nprobe` of 24, so the
/// test fails unless the lists follow the structure inside clusters.
#[test]
fn recall_at_default_nprobe_on_clustered_data() {
    const SEED: u64 = 20_240_601;
    let (n, nq, dim) = (20_000, 50, 384);
    println!("seed {SEED}");
    let all = clustered_vectors(n + nq, dim, 20, 0.6, SEED);
    let (base, queries) = all.split_at(n * dim);
    let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
    // Few iterations on a small sample keep the unoptimised test build quick (and make the
    // test harder); the defaults under test are nlist and nprobe.
    let index = IvfBuilder::new(Metric::Cosine, dim)
        .iterations(3)
        .sample_per_list(4)
        .init(KMeansInit::Random)
        .seed(SEED)
        .build_with(&ids, base)
        .unwrap();
    assert_eq!(index.nlist(), default_nlist(n));
    assert_eq!(index.default_nprobe(), default_nprobe(index.nlist()));
    let mut total = 0.0;
    for q in queries.chunks_exact(dim) {
        let truth = exact_top_k(Metric::Cosine, dim, &ids, base, q, 10, None);
        let found = index.search(q, 10, &SearchParams::default(), None).unwrap();
        assert_eq!(found.len(), 10);
        total += recall(&found, &truth);
    }
    let mean = total / nq as f64;
    println!(
        "recall@10 {mean:.4} at nlist {} nprobe {} (seed {SEED})",
        index.nlist(),
        index.default_nprobe()
    );
    assert!(mean >= 0.95, "recall@10 {mean:.4} < 0.95 (seed {SEED})");
}

/// With every list probed the search is exact, for every metric, with and without a filter,
/// whether rows are stored whole (24-d random data) or split into head and tail (96-d data
/// with most of its energy in a few directions).
#[test]
fn exact_when_every_list_is_probed() {
    let cases = [
        (24, random_vectors(1520, 24, 3), false),
        (96, clustered_vectors(1520, 96, 6, 0.3, 3), true),
    ];
    for (dim, all, split) in cases {
        let (data, queries) = all.split_at(1500 * dim);
        let ids: Vec<u64> = (0..1500).map(|i| 10_000 - i * 2).collect();
        let filter = |id: u64| id.is_multiple_of(3);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let index = IvfBuilder::new(metric, dim)
                .nlist(30)
                .iterations(5)
                .seed(1)
                .build_with(&ids, data)
                .unwrap();
            assert_eq!(index.nlist(), 30);
            assert_eq!(index.head_dim() < dim, split, "{metric} at {dim}-d");
            let stored = preprocessed(metric, dim, data);
            for q in queries.chunks_exact(dim) {
                let pq = preprocessed(metric, dim, q);
                let context = format!("{metric} at {dim}-d");
                let truth = exact_top_k(metric, dim, &ids, &stored, &pq, 15, None);
                let found = index.search(q, 15, &probe(30), None).unwrap();
                assert_same_hits(&found, &truth, &format!("{context}, unfiltered"));
                let truth = exact_top_k(metric, dim, &ids, &stored, &pq, 15, Some(&filter));
                let found = index
                    .search(q, 15, &probe(usize::MAX), Some(&filter))
                    .unwrap();
                assert_same_hits(&found, &truth, &format!("{context}, filtered"));
            }
            // A filter that keeps five ids sends the search past its two lists, through every
            // other list in centroid order, and still returns exactly those five.
            let five: HashSet<u64> = ids.iter().step_by(307).copied().collect();
            let rare = |id: u64| five.contains(&id);
            for q in queries.chunks_exact(dim).take(5) {
                let pq = preprocessed(metric, dim, q);
                let truth = exact_top_k(metric, dim, &ids, &stored, &pq, 10, Some(&rare));
                let found = index.search(q, 10, &probe(2), Some(&rare)).unwrap();
                assert_eq!(found.len(), five.len());
                assert_same_hits(&found, &truth, &format!("{metric} at {dim}-d, rare filter"));
            }
            // Without the split the same index gives the same answers.
            let whole = IvfBuilder::new(metric, dim)
                .nlist(30)
                .iterations(5)
                .seed(1)
                .pca_split(false)
                .build_with(&ids, data)
                .unwrap();
            assert_eq!(whole.head_dim(), dim);
            for q in queries.chunks_exact(dim) {
                let a = index.search(q, 10, &probe(30), None).unwrap();
                let b = whole.search(q, 10, &probe(30), None).unwrap();
                assert_same_hits(&a, &b, &format!("{metric} at {dim}-d, split vs whole"));
            }
        }
    }
}

/// A filter that keeps few vectors still gets every one of them when `k` allows, even at
/// `nprobe` = 1, and only accepted ids ever come back.
#[test]
fn selective_filter_fills_k() {
    let dim = 16;
    let data = random_vectors(2000, dim, 8);
    let ids: Vec<u64> = (0..2000).collect();
    let index = IvfBuilder::new(Metric::L2, dim)
        .nlist(40)
        .iterations(3)
        .build_with(&ids, &data)
        .unwrap();
    let keep: HashSet<u64> = [3, 777, 1024, 1500, 1999].into_iter().collect();
    let filter = |id: u64| keep.contains(&id);
    let q = &data[..dim];
    let found = index.search(q, 10, &probe(1), Some(&filter)).unwrap();
    let truth = exact_top_k(Metric::L2, dim, &ids, &data, q, 10, Some(&filter));
    assert_same_hits(&found, &truth, "selective filter");
    assert_eq!(found.len(), 5);
    // A moderately selective filter returns k accepted hits.
    let even = |id: u64| id.is_multiple_of(2);
    let found = index.search(q, 10, &probe(1), Some(&even)).unwrap();
    assert_eq!(found.len(), 10);
    assert!(found.iter().all(|h| h.id.is_multiple_of(2)));
    // A filter that accepts nothing returns nothing.
    let none = |_: u64| false;
    assert!(
        index
            .search(q, 10, &probe(3), Some(&none))
            .unwrap()
            .is_empty()
    );
}

/// A filtered search widens its probe with the filter's selectivity, so at the same `nprobe`
/// its recall of the filtered exact top-k is not worse than the unfiltered recall.
#[test]
fn filtered_recall_tracks_unfiltered_recall() {
    let (n, nq, dim) = (4000, 40, 32);
    let all = clustered_vectors(n + nq, dim, 10, 0.8, 21);
    let (base, queries) = all.split_at(n * dim);
    let ids: Vec<u64> = (0..n as u64).collect();
    let index = IvfBuilder::new(Metric::Cosine, dim)
        .iterations(5)
        .seed(21)
        .build_with(&ids, base)
        .unwrap();
    let filter = |id: u64| id.is_multiple_of(4);
    let (mut plain, mut filtered) = (0.0, 0.0);
    for q in queries.chunks_exact(dim) {
        let truth = exact_top_k(Metric::Cosine, dim, &ids, base, q, 10, None);
        plain += recall(&index.search(q, 10, &probe(4), None).unwrap(), &truth);
        let truth = exact_top_k(Metric::Cosine, dim, &ids, base, q, 10, Some(&filter));
        let found = index.search(q, 10, &probe(4), Some(&filter)).unwrap();
        assert!(found.iter().all(|h| h.id.is_multiple_of(4)));
        filtered += recall(&found, &truth);
    }
    let (plain, filtered) = (plain / nq as f64, filtered / nq as f64);
    println!("recall@10 at nprobe 4: unfiltered {plain:.3}, 25 % filter {filtered:.3}");
    assert!(
        filtered >= plain - 0.03,
        "filtered recall {filtered:.3} fell behind unfiltered {plain:.3}"
    );
}

#[test]
fn fewer_vectors_than_lists() {
    let dim = 8;
    let data = random_vectors(50, dim, 5);
    let ids: Vec<u64> = (100..150).collect();
    let index = IvfBuilder::new(Metric::Dot, dim)
        .nlist(1000)
        .build_with(&ids, &data)
        .unwrap();
    assert_eq!(index.nlist(), 50);
    assert_eq!(index.len(), 50);
    // k larger than the index returns every vector, best first, whatever nprobe says.
    let hits = index.search(&data[..dim], 500, &probe(1), None).unwrap();
    assert_eq!(hits.len(), 50);
    let truth = exact_top_k(Metric::Dot, dim, &ids, &data, &data[..dim], 500, None);
    assert_same_hits(&hits, &truth, "k > len");
    // A single vector trains a single list.
    let one = IvfBuilder::new(Metric::L2, dim)
        .build_with(&[9], &data[..dim])
        .unwrap();
    assert_eq!(one.nlist(), 1);
    assert_eq!(
        one.search(&data[..dim], 3, &probe(5), None).unwrap()[0].id,
        9
    );
}

#[test]
fn empty_and_untrained_indexes() {
    let dim = 4;
    let mut index = IvfIndex::new(Metric::Cosine, dim, IvfParams::default()).unwrap();
    assert!(index.is_empty() && !index.is_trained());
    assert_eq!(index.nlist(), 0);
    let q = [1.0, 0.0, 0.0, 0.0];
    assert!(
        index
            .search(&q, 5, &SearchParams::default(), None)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        index.train(),
        Err(IndexError::InvalidParameter(_))
    ));
    // Below the training threshold the index is exact.
    let data = random_vectors(300, dim, 6);
    let ids: Vec<u64> = (0..300).collect();
    index.add(&ids, &data).unwrap();
    assert!(!index.is_trained());
    let stored = preprocessed(Metric::Cosine, dim, &data);
    let pq = preprocessed(Metric::Cosine, dim, &q);
    let truth = exact_top_k(Metric::Cosine, dim, &ids, &stored, &pq, 7, None);
    let found = index.search(&q, 7, &probe(1), None).unwrap();
    assert_same_hits(&found, &truth, "untrained");
    assert!(index.memory_bytes() >= 300 * dim * 4 + 300 * 8);
    // The batch API agrees with single searches.
    let batch = index
        .search_batch(&data[..3 * dim], 7, &SearchParams::default(), None)
        .unwrap();
    for (row, hits) in data.chunks_exact(dim).zip(&batch) {
        assert_eq!(
            hits,
            &index
                .search(row, 7, &SearchParams::default(), None)
                .unwrap()
        );
    }
}

/// The add that reaches `train_at` trains the index; later adds go to their nearest list.
#[test]
fn trains_itself_at_the_threshold() {
    let dim = 16;
    let data = clustered_vectors(1200, dim, 8, 0.5, 13);
    let ids: Vec<u64> = (0..1200).collect();
    let mut index = IvfBuilder::new(Metric::Cosine, dim)
        .train_at(Some(600))
        .iterations(5)
        .build()
        .unwrap();
    index.add(&ids[..500], &data[..500 * dim]).unwrap();
    assert!(!index.is_trained());
    index
        .add(&ids[500..700], &data[500 * dim..700 * dim])
        .unwrap();
    assert!(index.is_trained());
    assert_eq!(index.trained_len(), 700);
    assert_eq!(index.nlist(), default_nlist(700));
    index.add(&ids[700..], &data[700 * dim..]).unwrap();
    assert_eq!(index.len(), 1200);
    assert_eq!(index.list_sizes().iter().sum::<usize>(), 1200);
    assert!(!index.needs_retrain());
    // Every vector finds itself at the default nprobe: it sits in its nearest list.
    for (i, row) in data.chunks_exact(dim).enumerate().step_by(37) {
        let hits = index
            .search(row, 1, &SearchParams::default(), None)
            .unwrap();
        assert_eq!(hits[0].id, i as u64);
    }
    // Growing to four times the trained size makes a retrain advisable.
    let more = clustered_vectors(1600, dim, 8, 0.5, 14);
    let more_ids: Vec<u64> = (10_000..11_600).collect();
    index.add(&more_ids, &more).unwrap();
    assert!(index.needs_retrain());
    index.train().unwrap();
    assert!(!index.needs_retrain());
    assert_eq!(index.nlist(), default_nlist(2800));
    assert_eq!(index.len(), 2800);
}

#[test]
fn removed_ids_never_come_back() {
    let dim = 12;
    let data = random_vectors(1000, dim, 9);
    let ids: Vec<u64> = (0..1000).collect();
    let mut index = IvfBuilder::new(Metric::L2, dim)
        .nlist(20)
        .iterations(3)
        .build_with(&ids, &data)
        .unwrap();
    let gone: Vec<u64> = (0..1000).filter(|i| i % 3 != 1).collect();
    assert_eq!(index.remove(&gone).unwrap(), gone.len());
    assert_eq!(index.remove(&gone).unwrap(), 0, "second removal is a no-op");
    assert_eq!(index.remove(&[5_000]).unwrap(), 0);
    assert_eq!(index.len(), 1000 - gone.len());
    let gone: HashSet<u64> = gone.into_iter().collect();
    assert!(gone.iter().all(|&id| !index.contains(id)));
    let kept: Vec<u64> = (0..1000).filter(|i| !gone.contains(i)).collect();
    let kept_rows: Vec<f32> = kept
        .iter()
        .flat_map(|&i| data[i as usize * dim..(i as usize + 1) * dim].to_vec())
        .collect();
    for q in data.chunks_exact(dim).step_by(50) {
        let found = index.search(q, 1000, &probe(20), None).unwrap();
        assert_eq!(found.len(), kept.len());
        assert!(found.iter().all(|h| !gone.contains(&h.id)));
        let truth = exact_top_k(Metric::L2, dim, &kept, &kept_rows, q, 10, None);
        assert_same_hits(&found[..10], &truth, "after removal");
    }
    // Removing everything leaves an empty, still trained index.
    index.remove(&kept).unwrap();
    assert!(index.is_empty() && index.is_trained());
    assert!(
        index
            .search(&data[..dim], 3, &probe(20), None)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn re_adding_an_id_replaces_its_vector() {
    let dim = 8;
    let data = clustered_vectors(800, dim, 4, 0.2, 17);
    let ids: Vec<u64> = (0..800).collect();
    let mut index = IvfBuilder::new(Metric::Cosine, dim)
        .nlist(16)
        .iterations(5)
        .build_with(&ids, &data)
        .unwrap();
    // Move id 0 onto another vector's spot (likely another list) and id 1 onto itself.
    let target = &data[799 * dim..800 * dim];
    let mut batch = target.to_vec();
    batch.extend_from_slice(&data[dim..2 * dim]);
    index.add(&[0, 1], &batch).unwrap();
    assert_eq!(index.len(), 800);
    let hits = index.search(target, 2, &probe(1), None).unwrap();
    let top: HashSet<u64> = hits.iter().map(|h| h.id).collect();
    assert_eq!(top, HashSet::from([0, 799]));
    // Nothing is left near id 0's old vector under id 0.
    let old = &data[..dim];
    let hits = index.search(old, 800, &probe(16), None).unwrap();
    let pos0 = hits.iter().position(|h| h.id == 0).unwrap();
    let pos799 = hits.iter().position(|h| h.id == 799).unwrap();
    assert!(pos0.abs_diff(pos799) <= 1);
    assert_eq!(hits.len(), 800);
}

#[test]
fn save_and_load_answer_identically() {
    let dim = 96;
    let data = clustered_vectors(3000, dim, 12, 0.4, 23);
    let ids: Vec<u64> = (0..3000).map(|i| i * 7 + u64::MAX / 2).collect();
    // Each save replaces the snapshot left in the directory by the one before.
    let dir = tempfile::tempdir().unwrap();
    for metric in [Metric::Dot, Metric::L2] {
        let mut index = IvfBuilder::new(metric, dim)
            .nprobe(5)
            .iterations(5)
            .seed(23)
            .build_with(&ids, &data)
            .unwrap();
        assert!(index.head_dim() < dim, "the split layout is saved too");
        index.remove(&ids[..100]).unwrap();
        index.save(dir.path()).unwrap();
        let loaded = IvfIndex::load(dir.path()).unwrap();
        assert_eq!(loaded.len(), index.len());
        assert_eq!(loaded.nlist(), index.nlist());
        assert_eq!(loaded.head_dim(), index.head_dim());
        assert_eq!(loaded.default_nprobe(), 5);
        assert_eq!(loaded.params(), index.params());
        assert_eq!(loaded.list_sizes(), index.list_sizes());
        let filter = |id: u64| id % 2 == 1;
        for q in data.chunks_exact(dim).step_by(97) {
            for params in [SearchParams::default(), probe(1), probe(40)] {
                assert_eq!(
                    loaded.search(q, 10, &params, None).unwrap(),
                    index.search(q, 10, &params, None).unwrap()
                );
                assert_eq!(
                    loaded.search(q, 10, &params, Some(&filter)).unwrap(),
                    index.search(q, 10, &params, Some(&filter)).unwrap()
                );
            }
        }
    }
    // An empty and an untrained index round-trip too.
    let small = IvfBuilder::new(Metric::L2, dim)
        .build_with(&[], &[])
        .unwrap();
    small.save(dir.path()).unwrap();
    let back = IvfIndex::load(dir.path()).unwrap();
    assert!(back.is_empty() && !back.is_trained());
    let mut untrained = IvfIndex::new(Metric::L2, dim, IvfParams::default()).unwrap();
    untrained.add(&ids[..10], &data[..10 * dim]).unwrap();
    untrained.save(dir.path()).unwrap();
    let back = IvfIndex::load(dir.path()).unwrap();
    assert_eq!(
        back.search(&data[..dim], 3, &SearchParams::default(), None)
            .unwrap(),
        untrained
            .search(&data[..dim], 3, &SearchParams::default(), None)
            .unwrap()
    );
}

#[test]
fn damaged_snapshots_are_detected() {
    let dim = 8;
    let data = random_vectors(400, dim, 31);
    let ids: Vec<u64> = (0..400).collect();
    let index = IvfBuilder::new(Metric::L2, dim)
        .nlist(8)
        .iterations(2)
        .build_with(&ids, &data)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    index.save(dir.path()).unwrap();
    let vectors = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("heads.")
        })
        .unwrap();
    let mut bytes = std::fs::read(&vectors).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&vectors, &bytes).unwrap();
    assert!(matches!(
        IvfIndex::load(dir.path()),
        Err(IndexError::Corrupt { .. })
    ));
    bytes.truncate(mid);
    std::fs::write(&vectors, &bytes).unwrap();
    assert!(matches!(
        IvfIndex::load(dir.path()),
        Err(IndexError::Corrupt { .. })
    ));
    let missing = tempfile::tempdir().unwrap();
    assert!(matches!(
        IvfIndex::load(missing.path()),
        Err(IndexError::Io { .. })
    ));
}

#[test]
fn bad_input_is_a_typed_error() {
    let dim = 4;
    let data = random_vectors(200, dim, 41);
    let ids: Vec<u64> = (0..200).collect();
    let mut index = IvfBuilder::new(Metric::Cosine, dim)
        .nlist(4)
        .iterations(2)
        .build_with(&ids, &data)
        .unwrap();
    let q = [0.5, -0.5, 1.0, 2.0];
    let search =
        |index: &IvfIndex, q: &[f32], k: usize, p: SearchParams| index.search(q, k, &p, None);
    let d = SearchParams::default();
    assert!(matches!(
        search(&index, &q[..3], 5, d),
        Err(IndexError::DimensionMismatch {
            expected: 4,
            got: 3
        })
    ));
    assert!(matches!(
        search(&index, &[f32::NAN, 0.0, 0.0, 1.0], 5, d),
        Err(IndexError::NonFinite { .. })
    ));
    assert!(matches!(
        search(&index, &[f32::INFINITY, 0.0, 0.0, 1.0], 5, d),
        Err(IndexError::NonFinite { .. })
    ));
    assert!(matches!(
        search(&index, &[f32::NEG_INFINITY, 0.0, 0.0, 1.0], 5, d),
        Err(IndexError::NonFinite { .. })
    ));
    assert!(matches!(
        search(&index, &[0.0; 4], 5, d),
        Err(IndexError::ZeroVector { .. })
    ));
    assert!(matches!(search(&index, &q, 0, d), Err(IndexError::ZeroK)));
    assert!(matches!(
        search(&index, &q, 5, probe(0)),
        Err(IndexError::InvalidParameter(_))
    ));
    // nprobe beyond nlist probes everything; k beyond len returns everything.
    assert_eq!(search(&index, &q, 1000, probe(1000)).unwrap().len(), 200);

    // Rejected batches leave the index untouched.
    let before = index.search(&q, 10, &d, None).unwrap();
    let bad_batches: Vec<(Vec<u64>, Vec<f32>)> = vec![
        (vec![500], vec![1.0; 3]),
        (vec![500, 501], vec![1.0; 7]),
        (vec![500], vec![1.0, f32::NAN, 0.0, 0.0]),
        (vec![500, 501], vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        (vec![7, 7], vec![1.0; 8]),
    ];
    for (ids, rows) in &bad_batches {
        let err = index.add(ids, rows).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
    }
    assert!(matches!(
        index.add(&[7, 7], &[1.0; 8]),
        Err(IndexError::DuplicateId { id: 7 })
    ));
    assert!(matches!(
        index.add(&[500, 501], &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
        Err(IndexError::ZeroVector { row: 1 })
    ));
    assert_eq!(index.len(), 200);
    assert!(!index.contains(500));
    assert_eq!(index.search(&q, 10, &d, None).unwrap(), before);
    // An empty batch is fine.
    index.add(&[], &[]).unwrap();

    // Out-of-range build parameters.
    for params in [
        IvfParams {
            nlist: Some(0),
            ..IvfParams::default()
        },
        IvfParams {
            nprobe: Some(0),
            ..IvfParams::default()
        },
        IvfParams {
            sample_per_list: 0,
            ..IvfParams::default()
        },
    ] {
        assert!(matches!(
            IvfIndex::new(Metric::L2, 4, params),
            Err(IndexError::InvalidParameter(_))
        ));
    }
    assert!(IvfIndex::new(Metric::L2, 0, IvfParams::default()).is_err());
    // Zero vectors are fine where no direction is needed.
    let mut l2 = IvfIndex::new(Metric::L2, 2, IvfParams::default()).unwrap();
    l2.add(&[1], &[0.0, 0.0]).unwrap();
    let mut dot = IvfBuilder::new(Metric::Dot, 2)
        .build_with(&[1, 2], &[0.0, 0.0, 1.0, 1.0])
        .unwrap();
    dot.add(&[3], &[0.0, 0.0]).unwrap();
    assert_eq!(dot.search(&[1.0, 1.0], 3, &d, None).unwrap()[0].id, 2);
}

/// Two builds with the same seed are identical; the thread count does not matter.
#[test]
fn training_is_reproducible() {
    let dim = 16;
    let data = clustered_vectors(2000, dim, 10, 0.5, 51);
    let ids: Vec<u64> = (0..2000).collect();
    let build = || {
        IvfBuilder::new(Metric::Cosine, dim)
            .iterations(6)
            .seed(51)
            .build_with(&ids, &data)
            .unwrap()
    };
    let a = build();
    let b = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(build);
    assert_eq!(
        a.quantizer().unwrap().centroids(),
        b.quantizer().unwrap().centroids()
    );
    assert_eq!(a.list_sizes(), b.list_sizes());
}
