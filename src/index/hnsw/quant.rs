//! int8 scalar quantization of the graph's vectors: a traversal scores the query against one
//! byte per component instead of four, and the best candidates it finds are rescored on the
//! full-precision vectors.
//!
//! # Codes
//! Each vector is quantized on its own: with `s = max|x|/127`, component `x_d` is stored as
//! `round(x_d/s) + 128`, a byte in `1..=255`, beside `s` (and, under L2, the squared norm of the
//! decoded vector). Per-vector scales need no training pass over the data, so an index that
//! grows one document at a time gives its first vectors and its millionth the same resolution,
//! and never re-encodes; per-dimension ranges learned from the first batch would clip what
//! comes later.
//! On sentence embeddings (unit length, no dimension much larger than the rest) the step `s` is
//! about what per-dimension ranges give.
//!
//! # Scores
//! A query is quantized the same way, to signed bytes `q_d` with scale `t`. Its inner product
//! with a stored vector is then `s·t·Σ q_d·(c_d − 128)`, where the sum is one exact integer dot
//! product of unsigned codes with signed query bytes ([`distance::dot_u8_i8`], one `vpdpbusd`
//! per 64 components on AVX-512 VNNI) less `128·Σ q_d`, a per-query constant. L2 adds the
//! stored squared norm and the query's own. The only errors are the two roundings; the
//! rescoring pass removes them from the final ranking.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use super::rows::{Cell, Rows};
use super::search::{Probe, View};
use crate::distance::{self, Metric};

/// How the graph's traversal sees the vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// Full-precision `f32` vectors throughout.
    #[default]
    None,
    /// One byte per component, per-vector scale, for the traversal; the full-precision vectors
    /// rescore the best candidates (see [`SearchParams::oversampling`](crate::index::SearchParams::oversampling)).
    Int8,
}

impl Quantization {
    /// Lowercase name as used in the API and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Quantization::None => "none",
            Quantization::Int8 => "int8",
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "f32" => Ok(Quantization::None),
            "int8" => Ok(Quantization::Int8),
            other => Err(format!(
                "unknown quantization '{other}', expected none or int8"
            )),
        }
    }
}

/// Added to a signed code to store it as a byte.
const BIAS: i32 = 128;

/// Largest magnitude of a signed code.
const LEVELS: f32 = 127.0;

/// The int8 codes of the graph's vectors, one row per node, appended by the index's writer
/// while searches read the published ones (as [`VectorStore`](super::store::VectorStore)).
///
/// A row holds the `dim` codes followed by the node's factors as native-endian `f32` bytes: the
/// scale, and under L2 the squared norm of the decoded vector (inner products and cosine do
/// without it, and a million vectors save 4 MB). Keeping the factors in the row means the one
/// prefetch of a row brings everything its score reads; held apart, they cost every scored node
/// a second cache miss, which profiles showed as the larger part of a quantized search.
#[derive(Debug)]
pub(super) struct CodeStore {
    dim: usize,
    /// Whether scores are (negated squared) L2 distances, which need the stored norms.
    l2: bool,
    rows: Rows<Cell<u8>>,
    len: AtomicUsize,
}

/// Bytes of one stored factor.
const FACTOR_BYTES: usize = std::mem::size_of::<f32>();

impl CodeStore {
    /// An empty store for vectors of `dim` (at least 1) components, scored under `metric`.
    pub(super) fn new(dim: usize, metric: Metric) -> Self {
        let l2 = metric == Metric::L2;
        let factors = if l2 { 2 } else { 1 };
        CodeStore {
            dim,
            l2,
            rows: Rows::new(dim + factors * FACTOR_BYTES),
            len: AtomicUsize::new(0),
        }
    }

    /// A store holding the codes of `values` (whole rows).
    pub(super) fn from_rows<'a>(
        dim: usize,
        metric: Metric,
        runs: impl Iterator<Item = &'a [f32]>,
    ) -> Self {
        let store = Self::new(dim, metric);
        for run in runs {
            store.push(run);
        }
        store
    }

    /// Number of rows.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Encodes `values`, a whole number of rows, appends the codes and publishes them. One
    /// caller at a time (the index's writer).
    pub(super) fn push(&self, values: &[f32]) {
        let dim = self.dim;
        debug_assert_eq!(values.len() % dim, 0);
        let rows = values.len() / dim;
        let first = self.len();
        let end = first + rows;
        self.rows.reserve(end);
        let width = self.rows.width();
        let mut bytes = vec![0u8; rows * width];
        for (row, out) in values.chunks_exact(dim).zip(bytes.chunks_exact_mut(width)) {
            let (codes, factors) = out.split_at_mut(dim);
            let (scale, norm) = encode(row, codes);
            factors[..FACTOR_BYTES].copy_from_slice(&scale.to_ne_bytes());
            if self.l2 {
                factors[FACTOR_BYTES..].copy_from_slice(&norm.to_ne_bytes());
            }
        }
        // SAFETY: rows `first..end` lie beyond the published count, which readers never go past,
        // and the single writer is the caller; they are published by the store below.
        unsafe { self.rows.write_values(first, &bytes) };
        self.len.store(end, Ordering::Release);
    }

    /// The stored row of `node`: its codes, then its factors.
    #[inline(always)]
    fn row(&self, node: u32) -> &[u8] {
        self.rows.values(node as usize)
    }

    /// Factor `i` of a row from [`row`](Self::row): 0 the scale, 1 (under L2 only) the decoded
    /// squared norm.
    #[inline(always)]
    fn factor(&self, row: &[u8], i: usize) -> f32 {
        let at = self.dim + i * FACTOR_BYTES;
        let bytes: [u8; FACTOR_BYTES] = row[at..at + FACTOR_BYTES].try_into().expect("4 bytes");
        f32::from_ne_bytes(bytes)
    }

    /// Memory the codes take.
    pub(super) fn memory_bytes(&self) -> usize {
        self.rows.memory_bytes(self.len())
    }
}

/// The scale that maps the largest magnitude of `values` to [`LEVELS`]; 0 for a vector of zeros
/// (or one so small that the scale underflows).
fn scale_of(values: &[f32]) -> f32 {
    values.iter().fold(0f32, |m, x| m.max(x.abs())) / LEVELS
}

/// The signed code of `x` at `scale` (positive).
#[inline]
fn quantize(x: f32, scale: f32) -> i32 {
    // `x / scale` may exceed the range by an ulp at the largest component.
    (x / scale).round().clamp(-LEVELS, LEVELS) as i32
}

/// Quantizes `row` into `out` (same length); returns its scale and the squared norm of the
/// decoded row.
pub(super) fn encode(row: &[f32], out: &mut [u8]) -> (f32, f32) {
    let scale = scale_of(row);
    if scale == 0.0 {
        out.fill(BIAS as u8);
        return (0.0, 0.0);
    }
    let mut sum_sq = 0u64;
    for (o, &x) in out.iter_mut().zip(row) {
        let q = quantize(x, scale);
        *o = (q + BIAS) as u8;
        sum_sq += (q * q) as u64;
    }
    (scale, scale * scale * sum_sq as f32)
}

/// A query prepared for scoring against the codes of one [`CodeStore`].
pub(super) struct QuantQuery<'a> {
    codes: &'a CodeStore,
    kernel: fn(&[u8], &[i8]) -> i32,
    l2: bool,
    /// The query's signed codes.
    q: Vec<i8>,
    scale: f32,
    /// `BIAS·Σ q`: what the stored codes' bias adds to the integer dot product.
    bias: i32,
    /// Squared norm of the (full-precision) query, for L2.
    norm: f32,
}

impl<'a> QuantQuery<'a> {
    /// Quantizes `query` (preprocessed for `metric`, as stored rows are) for `codes`.
    pub(super) fn new(codes: &'a CodeStore, query: &[f32]) -> Self {
        let scale = scale_of(query);
        let q: Vec<i8> = if scale == 0.0 {
            vec![0; query.len()]
        } else {
            query.iter().map(|&x| quantize(x, scale) as i8).collect()
        };
        let bias = BIAS * q.iter().map(|&x| i32::from(x)).sum::<i32>();
        QuantQuery {
            codes,
            kernel: distance::kernels().dot_u8_i8,
            l2: codes.l2,
            q,
            scale,
            bias,
            norm: query.iter().map(|x| x * x).sum(),
        }
    }

    /// Approximate similarity to `node` under the metric, higher is closer.
    #[inline(always)]
    pub(super) fn score(&self, node: u32) -> f32 {
        let row = self.codes.row(node);
        let dot = (self.kernel)(&row[..self.codes.dim], &self.q) - self.bias;
        let ip = self.scale * self.codes.factor(row, 0) * dot as f32;
        if self.l2 {
            -(self.norm - 2.0 * ip + self.codes.factor(row, 1))
        } else {
            ip
        }
    }
}

impl Probe for QuantQuery<'_> {
    #[inline(always)]
    fn score(&self, _view: &View<'_>, node: u32) -> f32 {
        QuantQuery::score(self, node)
    }

    #[inline(always)]
    fn prefetch(&self, _view: &View<'_>, node: u32) {
        distance::prefetch_read(self.codes.row(node));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(codes: &[u8], scale: f32) -> Vec<f32> {
        codes
            .iter()
            .map(|&c| (i32::from(c) - BIAS) as f32 * scale)
            .collect()
    }

    #[test]
    fn codes_round_trip_within_half_a_step() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let mut codes = vec![0; row.len()];
        let (scale, norm) = encode(&row, &mut codes);
        let max = row.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!((scale - max / 127.0).abs() <= f32::EPSILON * max);
        assert!(codes.iter().all(|&c| (1..=255).contains(&c)));
        let back = decode(&codes, scale);
        for (x, y) in row.iter().zip(&back) {
            assert!((x - y).abs() <= scale * 0.5001, "{x} vs {y}");
        }
        let want: f32 = back.iter().map(|x| x * x).sum();
        assert!((norm - want).abs() <= 1e-5 * want);
        assert!(
            codes.contains(&255) || codes.contains(&1),
            "the largest uses the range"
        );
    }

    #[test]
    fn zero_and_tiny_vectors_encode_to_the_bias() {
        for row in [vec![0.0f32; 5], vec![1e-45, -1e-45, 0.0]] {
            let mut codes = vec![0; row.len()];
            assert_eq!(encode(&row, &mut codes), (0.0, 0.0));
            assert!(codes.iter().all(|&c| c == 128));
        }
    }

    #[test]
    fn scores_approximate_the_exact_ones() {
        let dim = 96;
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let rows: Vec<f32> = (0..50 * dim).map(|_| next()).collect();
        let query: Vec<f32> = (0..dim).map(|_| next()).collect();
        for metric in [Metric::Dot, Metric::L2] {
            let store = CodeStore::from_rows(dim, metric, std::iter::once(&rows[..]));
            assert_eq!(store.len(), 50);
            let q = QuantQuery::new(&store, &query);
            for (node, row) in rows.chunks_exact(dim).enumerate() {
                let exact = metric.score(&query, row);
                let approx = q.score(node as u32);
                // Each rounding moves a component by at most half a step; bound the effect on
                // the inner product (and, for L2, on the decoded norm) by the triangle
                // inequality.
                let (s, t) = (scale_of(row), scale_of(&query));
                let qn: f32 = query.iter().map(|x| x.abs()).sum();
                let rn: f32 = row.iter().map(|x| x.abs()).sum();
                let mut bound = 0.5 * s * qn + 0.5 * t * rn + 0.25 * s * t * dim as f32;
                if metric == Metric::L2 {
                    bound = 2.0 * bound + s * rn + 0.25 * s * s * dim as f32;
                }
                assert!(
                    (exact - approx).abs() <= bound * 1.001 + 1e-5,
                    "{metric:?} node {node}: {exact} vs {approx}, bound {bound}"
                );
            }
        }
    }
}
