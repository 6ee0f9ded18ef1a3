//! Distance kernels side by side: the dispatched entry points, every instruction set this CPU
//! has, the scalar oracle and the `simsimd` crate, at the dimensions of common sentence
//! encoders. One group per metric; a batch group compares one call over many rows with a loop
//! of single calls, and a small-dimension group checks whether short inputs would be better
//! served by the scalar kernels. The `dot_u8_i8` group puts every implementation of the integer
//! inner product (int8 quantization) beside the `f32` dot product it replaces.
//!
//! `cargo bench --bench distance` (add `-- dot/`, `-- dot_u8_i8` etc. to filter).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::prelude::*;
use simsimd::SpatialSimilarity;
use vicinity::distance::{self, Isa, Kernels};

const DIMS: [usize; 4] = [128, 384, 768, 1536];
const SEED: u64 = 42;

fn random(n: usize, rng: &mut SmallRng) -> Vec<f32> {
    (0..n).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
}

fn isa_kernels() -> Vec<Kernels> {
    Isa::ALL
        .iter()
        .filter_map(|&isa| Kernels::for_isa(isa))
        .collect()
}

type Pick = fn(&Kernels) -> fn(&[f32], &[f32]) -> f32;

fn metric_group(
    c: &mut Criterion,
    name: &str,
    dispatched: fn(&[f32], &[f32]) -> f32,
    pick: Pick,
    simsimd: fn(&[f32], &[f32]) -> Option<f64>,
) {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut g = c.benchmark_group(name);
    for d in DIMS {
        let (a, b) = (random(d, &mut rng), random(d, &mut rng));
        g.bench_with_input(BenchmarkId::new("dispatched", d), &d, |bn, _| {
            bn.iter(|| dispatched(black_box(&a), black_box(&b)))
        });
        for k in isa_kernels() {
            let f = pick(&k);
            g.bench_with_input(BenchmarkId::new(k.isa.name(), d), &d, |bn, _| {
                bn.iter(|| f(black_box(&a), black_box(&b)))
            });
        }
        g.bench_with_input(BenchmarkId::new("simsimd", d), &d, |bn, _| {
            bn.iter(|| simsimd(black_box(&a), black_box(&b)))
        });
    }
    g.finish();
}

fn dot(c: &mut Criterion) {
    metric_group(
        c,
        "dot",
        distance::dot,
        |k| k.dot,
        <f32 as SpatialSimilarity>::dot,
    );
}

fn l2_squared(c: &mut Criterion) {
    metric_group(
        c,
        "l2_squared",
        distance::l2_squared,
        |k| k.l2_squared,
        <f32 as SpatialSimilarity>::l2sq,
    );
}

fn cosine(c: &mut Criterion) {
    // simsimd returns the cosine *distance*; the work is the same.
    metric_group(
        c,
        "cosine",
        distance::cosine,
        |k| k.cosine,
        <f32 as SpatialSimilarity>::cos,
    );
}

/// Short vectors: would a scalar fallback below some dimension pay off?
fn small_dims(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut g = c.benchmark_group("dot_small");
    for d in [4usize, 8, 16, 32, 64] {
        let (a, b) = (random(d, &mut rng), random(d, &mut rng));
        for k in isa_kernels() {
            let f = k.dot;
            g.bench_with_input(BenchmarkId::new(k.isa.name(), d), &d, |bn, _| {
                bn.iter(|| f(black_box(&a), black_box(&b)))
            });
        }
    }
    g.finish();
}

/// One query against 1,000 cache-resident rows: one batch call against a loop of single calls.
fn batch(c: &mut Criterion) {
    const ROWS: usize = 1000;
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut g = c.benchmark_group("dot_batch_1000_rows");
    for d in [128usize, 384] {
        let q = random(d, &mut rng);
        let rows = random(ROWS * d, &mut rng);
        let mut out = vec![0.0f32; ROWS];
        for k in isa_kernels() {
            g.bench_with_input(
                BenchmarkId::new(format!("{}/batch", k.isa.name()), d),
                &d,
                |bn, _| bn.iter(|| (k.dot_batch)(black_box(&q), black_box(&rows), &mut out)),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("{}/loop", k.isa.name()), d),
                &d,
                |bn, _| {
                    bn.iter(|| {
                        for (o, r) in out.iter_mut().zip(rows.chunks_exact(d)) {
                            *o = (k.dot)(black_box(&q), r);
                        }
                    })
                },
            );
        }
    }
    g.finish();
}

/// Integer `u8 × i8` inner product, each implementation this CPU runs, against the dispatched
/// `f32` dot product of the same dimension (the one the int8 scores stand in for).
fn dot_u8_i8(c: &mut Criterion) {
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut g = c.benchmark_group("dot_u8_i8");
    let chosen = distance::kernels().int8_name;
    for d in [384usize, 768] {
        let codes: Vec<u8> = (0..d).map(|_| rng.random()).collect();
        let query: Vec<i8> = (0..d).map(|_| rng.random()).collect();
        g.bench_with_input(
            BenchmarkId::new(format!("dispatched({chosen})"), d),
            &d,
            |bn, _| bn.iter(|| distance::dot_u8_i8(black_box(&codes), black_box(&query))),
        );
        for (name, f) in distance::int8_dot_kernels() {
            g.bench_with_input(BenchmarkId::new(name, d), &d, |bn, _| {
                bn.iter(|| f(black_box(&codes), black_box(&query)))
            });
        }
        let (a, b) = (random(d, &mut rng), random(d, &mut rng));
        g.bench_with_input(BenchmarkId::new("f32_dot", d), &d, |bn, _| {
            bn.iter(|| distance::dot(black_box(&a), black_box(&b)))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = dot, l2_squared, cosine, small_dims, batch, dot_u8_i8
}
criterion_main!(benches);
