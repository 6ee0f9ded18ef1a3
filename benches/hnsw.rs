//! HNSW build and single-query search on seeded clustered data, for both graph builders.
//!
//! The 100k×384 comparison against faiss and hnswlib is `vicinity bench ann` on the shared
//! dataset; this bench tracks the same paths at a size criterion can repeat.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vicinity::distance::Metric;
use vicinity::index::hnsw::{Engine, HnswIndex};
use vicinity::index::{SearchParams, VectorIndex};
use vicinity::testing::clustered_vectors;

const SEED: u64 = 42;
const DIM: usize = 384;

fn data(n: usize) -> (Vec<u64>, Vec<f32>, Vec<f32>) {
    let mut all = clustered_vectors(n + 200, DIM, n / 100, 0.5, SEED);
    let queries = all.split_off(n * DIM);
    ((0..n as u64).collect(), all, queries)
}

fn build(c: &mut Criterion) {
    let (ids, vectors, _) = data(5_000);
    let mut group = c.benchmark_group("hnsw-build-5k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for engine in [Engine::Native, Engine::HnswRs] {
        group.bench_function(BenchmarkId::from_parameter(format!("{engine:?}")), |b| {
            b.iter(|| {
                HnswIndex::builder()
                    .engine(engine)
                    .build_with(Metric::Cosine, DIM, &ids, &vectors)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn search(c: &mut Criterion) {
    let (ids, vectors, queries) = data(20_000);
    let index = HnswIndex::builder()
        .build_with(Metric::Cosine, DIM, &ids, &vectors)
        .unwrap();
    let mut group = c.benchmark_group("hnsw-search-20k");
    for ef in [16, 32, 64, 128] {
        let params = SearchParams {
            ef: Some(ef),
            nprobe: None,
            oversampling: None,
        };
        group.bench_function(BenchmarkId::new("ef", ef), |b| {
            let mut qs = queries.chunks_exact(DIM).cycle();
            b.iter(|| {
                let q = qs.next().expect("cycle never ends");
                black_box(index.search(q, 10, &params, None).unwrap())
            })
        });
    }
    let tenth = |id: u64| id.is_multiple_of(10);
    group.bench_function("filter-10pct", |b| {
        let mut qs = queries.chunks_exact(DIM).cycle();
        b.iter(|| {
            let q = qs.next().expect("cycle never ends");
            black_box(
                index
                    .search(q, 10, &SearchParams::default(), Some(&tenth))
                    .unwrap(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, build, search);
criterion_main!(benches);
