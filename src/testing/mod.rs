//! Seeded data and reference computations for tests and benchmarks (feature `testing`).
//!
//! Everything here is deterministic in its seed, so a failing recall test can be replayed.

use rand::prelude::*;

use crate::distance::Metric;
use crate::index::Hit;

pub mod postgres;

/// A standard normal sample (Box–Muller), so that no distribution crate is needed.
pub fn gaussian(rng: &mut SmallRng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// `n` row-major vectors of dimension `dim` with independent standard normal components.
pub fn random_vectors(n: usize, dim: usize, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n * dim).map(|_| gaussian(&mut rng)).collect()
}

/// `n` unit vectors of dimension `dim` drawn around `clusters` random centres, shaped like
/// sentence embeddings: each point is its centre plus Gaussian noise of relative size `spread`
/// (0.3–0.6 gives realistic overlap), then L2-normalised.
pub fn clustered_vectors(
    n: usize,
    dim: usize,
    clusters: usize,
    spread: f32,
    seed: u64,
) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let clusters = clusters.max(1);
    let mut centres = vec![0.0f32; clusters * dim];
    for c in centres.chunks_exact_mut(dim) {
        c.iter_mut().for_each(|x| *x = gaussian(&mut rng));
        normalize(c);
    }
    let noise = spread / (dim as f32).sqrt();
    let mut out = vec![0.0f32; n * dim];
    for v in out.chunks_exact_mut(dim) {
        let c = rng.random_range(0..clusters);
        let centre = &centres[c * dim..(c + 1) * dim];
        for (x, m) in v.iter_mut().zip(centre) {
            *x = m + noise * gaussian(&mut rng);
        }
        normalize(v);
    }
    out
}

fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Exact top-`k` by brute force with the scalar kernels, in f64 accumulation: the oracle for
/// index tests. `data` rows must already be preprocessed for the metric (normalised for
/// cosine), as must `query`. Ties are broken by ascending id.
pub fn exact_top_k(
    metric: Metric,
    dim: usize,
    ids: &[u64],
    data: &[f32],
    query: &[f32],
    k: usize,
    filter: Option<&dyn Fn(u64) -> bool>,
) -> Vec<Hit> {
    let mut hits: Vec<Hit> = ids
        .iter()
        .zip(data.chunks_exact(dim))
        .filter(|(id, _)| filter.is_none_or(|f| f(**id)))
        .map(|(&id, v)| {
            let score = match metric {
                Metric::Cosine | Metric::Dot => v
                    .iter()
                    .zip(query)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum::<f64>(),
                Metric::L2 => -v
                    .iter()
                    .zip(query)
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
                    .sum::<f64>(),
            };
            Hit {
                id,
                score: score as f32,
            }
        })
        .collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits.truncate(k);
    hits
}

/// Fraction of `truth`'s ids that `found` contains (recall@k with k = `truth.len()`).
pub fn recall(found: &[Hit], truth: &[Hit]) -> f64 {
    if truth.is_empty() {
        return 1.0;
    }
    let found: std::collections::HashSet<u64> = found.iter().map(|h| h.id).collect();
    truth.iter().filter(|h| found.contains(&h.id)).count() as f64 / truth.len() as f64
}

/// Nice values of this process's threads whose name starts with `prefix` (Linux: read from
/// `/proc/self/task`), for checking which threads run bulk work at a lowered priority.
#[cfg(target_os = "linux")]
pub fn thread_nice_values(prefix: &str) -> Vec<i32> {
    let mut nice = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return nice;
    };
    for task in tasks.flatten() {
        let dir = task.path();
        // A thread may end between listing and reading.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        // After the parenthesised name come the fields from the 3rd (state); nice is the 19th.
        let value = stat
            .rfind(')')
            .and_then(|end| stat[end + 1..].split_whitespace().nth(16))
            .and_then(|v| v.parse().ok());
        if let Some(v) = value {
            nice.push(v);
        }
    }
    nice
}
