//! An orthogonal change of basis that gathers most of a data set's energy into the first
//! coordinates (the *head*), so that an IVF scan can bound a vector's score from its head and
//! read its tail only when the bound says the vector might enter the top-k.
//!
//! The head spans the data's leading principal directions: the second-moment matrix (about
//! the mean under L2, about the origin under dot and cosine) is formed from a sample, its
//! leading eigenvectors are found by subspace iteration with a Rayleigh–Ritz step, and the
//! head is the smallest multiple of [`HEAD_STEP`] coordinates that holds [`HEAD_ENERGY`] of the
//! energy (at most a quarter of the dimensions). The basis change itself is a product of
//! `head` Householder reflections (the QR factorisation of the head basis), which maps the
//! head subspace onto the first coordinates and its orthogonal complement onto the rest. It
//! costs `2·head·dim` flops per vector instead of `dim²` for an explicit matrix, and, being
//! orthogonal, leaves inner products, norms and distances unchanged (a translation by the mean
//! is applied first under L2, which leaves distances unchanged too).

use rand::prelude::*;
use rayon::prelude::*;

use crate::distance::{self, Metric};

/// Head sizes are multiples of this many coordinates.
pub(super) const HEAD_STEP: usize = 16;

/// The head holds at least this share of the sample's energy (when a quarter of the dimensions
/// can hold it).
pub(super) const HEAD_ENERGY: f64 = 0.95;

/// Below this share of energy in the largest allowed head, bounds would rarely prune and the
/// split is not made.
const MIN_HEAD_ENERGY: f64 = 0.5;

/// Dimensions below which no split is made: the tail would be too short to be worth skipping.
pub(super) const MIN_SPLIT_DIM: usize = 64;

/// Rows of the training sample used to estimate the second-moment matrix.
const MOMENT_SAMPLE: usize = 8192;

/// Subspace iterations; each multiplies the basis by the moment matrix and re-orthonormalises.
const SUBSPACE_ITERATIONS: usize = 24;

/// See the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Rotation {
    dim: usize,
    /// `head` unit Householder vectors, row-major; vector `j` is zero before coordinate `j`.
    reflectors: Vec<f32>,
    /// Subtracted before the reflections (L2 only).
    mean: Option<Vec<f32>>,
}

impl Rotation {
    /// Fits a rotation to `sample` (rows of `dim`, as the metric stores them), or `None` when
    /// the dimension is too small or the energy too spread out for a split to pay.
    pub(super) fn fit(metric: Metric, dim: usize, sample: &[f32], seed: u64) -> Option<Rotation> {
        let n = sample.len() / dim;
        if dim < MIN_SPLIT_DIM || n < 2 {
            return None;
        }
        let stride = n.div_ceil(MOMENT_SAMPLE);
        let rows: Vec<&[f32]> = sample.chunks_exact(dim).step_by(stride).collect();
        let mean = match metric {
            Metric::L2 => {
                let mut m = vec![0.0f64; dim];
                for r in &rows {
                    m.iter_mut().zip(*r).for_each(|(a, &x)| *a += f64::from(x));
                }
                Some(
                    m.iter()
                        .map(|&a| (a / rows.len() as f64) as f32)
                        .collect::<Vec<f32>>(),
                )
            }
            Metric::Cosine | Metric::Dot => None,
        };
        let moment = second_moment(dim, &rows, mean.as_deref());
        let trace: f64 = (0..dim).map(|i| moment[i * dim + i]).sum();
        if trace.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) || !trace.is_finite() {
            return None;
        }
        let max_head = (dim / 4) / HEAD_STEP * HEAD_STEP;
        let (basis, values) = leading_subspace(&moment, dim, max_head, seed);
        let mut captured = 0.0;
        let mut head = max_head;
        for (i, &v) in values.iter().enumerate() {
            captured += v.max(0.0);
            if (i + 1) % HEAD_STEP == 0 && captured >= HEAD_ENERGY * trace {
                head = i + 1;
                break;
            }
        }
        let energy: f64 = values[..head].iter().map(|v| v.max(0.0)).sum();
        if energy < MIN_HEAD_ENERGY * trace {
            return None;
        }
        Some(Rotation {
            dim,
            reflectors: householder(&basis[..head * dim], dim, head),
            mean,
        })
    }

    /// Rebuilds a rotation from its parts (as [`reflectors`](Self::reflectors) and
    /// [`mean`](Self::mean) return them); `None` when they do not fit `dim`.
    pub(super) fn from_parts(
        dim: usize,
        reflectors: Vec<f32>,
        mean: Option<Vec<f32>>,
    ) -> Option<Rotation> {
        let ok = dim > 0
            && reflectors.len().is_multiple_of(dim)
            && reflectors.len() / dim < dim
            && !reflectors.is_empty()
            && reflectors.iter().all(|x| x.is_finite())
            && mean
                .as_ref()
                .is_none_or(|m| m.len() == dim && m.iter().all(|x| x.is_finite()));
        ok.then_some(Rotation {
            dim,
            reflectors,
            mean,
        })
    }

    /// Number of head coordinates.
    pub(super) fn head(&self) -> usize {
        self.reflectors.len() / self.dim
    }

    /// The Householder vectors, `head × dim` row-major.
    pub(super) fn reflectors(&self) -> &[f32] {
        &self.reflectors
    }

    /// The translation applied first, under L2.
    pub(super) fn mean(&self) -> Option<&[f32]> {
        self.mean.as_deref()
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        (self.reflectors.capacity() + self.mean.as_ref().map_or(0, Vec::capacity))
            * size_of::<f32>()
    }

    /// Rewrites `x` (length `dim`) in the rotated basis.
    pub(super) fn apply(&self, x: &mut [f32]) {
        if let Some(mean) = &self.mean {
            x.iter_mut().zip(mean).for_each(|(a, m)| *a -= m);
        }
        for (j, v) in self.reflectors.chunks_exact(self.dim).enumerate() {
            reflect(&v[j..], &mut x[j..]);
        }
    }

    /// Undoes [`apply`](Self::apply) (up to rounding).
    pub(super) fn unapply(&self, x: &mut [f32]) {
        for (j, v) in self.reflectors.chunks_exact(self.dim).enumerate().rev() {
            reflect(&v[j..], &mut x[j..]);
        }
        if let Some(mean) = &self.mean {
            x.iter_mut().zip(mean).for_each(|(a, m)| *a += m);
        }
    }
}

/// `x ← (I − 2vvᵀ)x` for a unit `v`.
#[inline]
fn reflect(v: &[f32], x: &mut [f32]) {
    let s = 2.0 * distance::dot(v, x);
    x.iter_mut().zip(v).for_each(|(a, &b)| *a -= s * b);
}

/// `(1/n) Σ (x − m)(x − m)ᵀ` as a dense `dim × dim` matrix, from the columns of the sample with
/// the SIMD inner product.
fn second_moment(dim: usize, rows: &[&[f32]], mean: Option<&[f32]>) -> Vec<f64> {
    let n = rows.len();
    let mut columns = vec![0.0f32; dim * n];
    for (r, row) in rows.iter().enumerate() {
        for (i, &x) in row.iter().enumerate() {
            columns[i * n + r] = x - mean.map_or(0.0, |m| m[i]);
        }
    }
    let mut moment = vec![0.0f64; dim * dim];
    moment.par_chunks_mut(dim).enumerate().for_each(|(i, out)| {
        let ci = &columns[i * n..(i + 1) * n];
        for (j, o) in out.iter_mut().enumerate().skip(i) {
            *o = f64::from(distance::dot(ci, &columns[j * n..(j + 1) * n])) / n as f64;
        }
    });
    for i in 0..dim {
        for j in 0..i {
            moment[i * dim + j] = moment[j * dim + i];
        }
    }
    moment
}

/// The `m` leading eigenvectors (rows of the returned `m × dim` matrix, best first) and
/// eigenvalues of the symmetric `dim × dim` matrix `a`, by seeded subspace iteration followed
/// by a Rayleigh–Ritz step.
fn leading_subspace(a: &[f64], dim: usize, m: usize, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = SmallRng::seed_from_u64(seed);
    // Rows of `q` are the basis vectors.
    let mut q: Vec<f64> = (0..m * dim).map(|_| rng.random::<f64>() - 0.5).collect();
    orthonormalise(&mut q, dim);
    let mut z = vec![0.0f64; m * dim];
    for _ in 0..SUBSPACE_ITERATIONS {
        multiply(a, dim, &q, &mut z);
        std::mem::swap(&mut q, &mut z);
        orthonormalise(&mut q, dim);
    }
    // Rayleigh–Ritz: the small matrix B = Q A Qᵀ, diagonalised, orders the basis by energy.
    multiply(a, dim, &q, &mut z);
    let mut b = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..m {
            b[i * m + j] = dot64(&q[i * dim..(i + 1) * dim], &z[j * dim..(j + 1) * dim]);
        }
    }
    let (values, vectors) = jacobi_eigen(b, m);
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&x, &y| values[y].total_cmp(&values[x]));
    let mut basis = vec![0.0f64; m * dim];
    for (k, &e) in order.iter().enumerate() {
        let out = &mut basis[k * dim..(k + 1) * dim];
        for i in 0..m {
            let w = vectors[i * m + e];
            out.iter_mut()
                .zip(&q[i * dim..(i + 1) * dim])
                .for_each(|(o, &x)| *o += w * x);
        }
    }
    (basis, order.iter().map(|&e| values[e]).collect())
}

/// `z = q·a` for the rows of `q` (`a` symmetric, so each row of `z` is `a` times a row of `q`).
fn multiply(a: &[f64], dim: usize, q: &[f64], z: &mut [f64]) {
    z.par_chunks_mut(dim)
        .zip(q.par_chunks(dim))
        .for_each(|(out, row)| {
            for (o, col) in out.iter_mut().zip(a.chunks_exact(dim)) {
                *o = dot64(row, col);
            }
        });
}

fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Modified Gram–Schmidt on the rows of `q`. A row that collapses (linearly dependent) is
/// replaced by the first coordinate axis that is not yet covered.
fn orthonormalise(q: &mut [f64], dim: usize) {
    let m = q.len() / dim;
    for i in 0..m {
        let (done, rest) = q.split_at_mut(i * dim);
        let row = &mut rest[..dim];
        for _ in 0..2 {
            for prev in done.chunks_exact(dim) {
                let p = dot64(prev, row);
                row.iter_mut().zip(prev).for_each(|(r, &x)| *r -= p * x);
            }
        }
        let norm = dot64(row, row).sqrt();
        if norm > 1e-12 {
            row.iter_mut().for_each(|r| *r /= norm);
            continue;
        }
        for axis in 0..dim {
            row.fill(0.0);
            row[axis] = 1.0;
            for prev in done.chunks_exact(dim) {
                let p = prev[axis];
                row.iter_mut().zip(prev).for_each(|(r, &x)| *r -= p * x);
            }
            let norm = dot64(row, row).sqrt();
            if norm > 0.5 {
                row.iter_mut().for_each(|r| *r /= norm);
                break;
            }
        }
    }
}

/// Eigenvalues and eigenvectors (columns of the returned row-major `m × m` matrix) of the
/// symmetric matrix `b`, by cyclic Jacobi rotations.
fn jacobi_eigen(mut b: Vec<f64>, m: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0f64; m * m];
    (0..m).for_each(|i| v[i * m + i] = 1.0);
    let scale: f64 = b
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    for _sweep in 0..64 {
        let off: f64 = (0..m)
            .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| b[i * m + j].powi(2))
            .sum::<f64>()
            .sqrt();
        if off <= 1e-14 * scale {
            break;
        }
        for p in 0..m {
            for r in p + 1..m {
                let apr = b[p * m + r];
                if apr.abs() <= 1e-300 {
                    continue;
                }
                let theta = (b[r * m + r] - b[p * m + p]) / (2.0 * apr);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..m {
                    let (bkp, bkr) = (b[k * m + p], b[k * m + r]);
                    b[k * m + p] = c * bkp - s * bkr;
                    b[k * m + r] = s * bkp + c * bkr;
                }
                for k in 0..m {
                    let (bpk, brk) = (b[p * m + k], b[r * m + k]);
                    b[p * m + k] = c * bpk - s * brk;
                    b[r * m + k] = s * bpk + c * brk;
                }
                for k in 0..m {
                    let (vkp, vkr) = (v[k * m + p], v[k * m + r]);
                    v[k * m + p] = c * vkp - s * vkr;
                    v[k * m + r] = s * vkp + c * vkr;
                }
            }
        }
    }
    ((0..m).map(|i| b[i * m + i]).collect(), v)
}

/// Unit Householder vectors `v_0 … v_{h−1}` (row-major, `h × dim`) whose reflections, applied
/// in order, map the span of the `h` rows of `basis` onto the first `h` coordinates.
fn householder(basis: &[f64], dim: usize, h: usize) -> Vec<f32> {
    // Columns of the QR input are the basis vectors: work on a copy, one row per vector.
    let mut cols = basis.to_vec();
    let mut out = vec![0.0f32; h * dim];
    for j in 0..h {
        let x = &cols[j * dim..(j + 1) * dim];
        let norm = dot64(&x[j..], &x[j..]).sqrt();
        let mut v = vec![0.0f64; dim];
        v[j..].copy_from_slice(&x[j..]);
        // Reflect x onto −sign(x_j)·‖x‖·e_j, adding rather than cancelling in v_j.
        v[j] += if x[j] >= 0.0 { norm } else { -norm };
        let vnorm = dot64(&v, &v).sqrt();
        if vnorm > 0.0 {
            v.iter_mut().for_each(|a| *a /= vnorm);
        } else {
            v[j] = 1.0;
        }
        for col in cols.chunks_exact_mut(dim).skip(j) {
            let s = 2.0 * dot64(&v[j..], &col[j..]);
            col[j..]
                .iter_mut()
                .zip(&v[j..])
                .for_each(|(a, &b)| *a -= s * b);
        }
        out[j * dim..(j + 1) * dim]
            .iter_mut()
            .zip(&v)
            .for_each(|(o, &a)| *o = a as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows in `dim` dimensions with almost all energy in a random `rank`-dimensional subspace.
    fn low_rank(n: usize, dim: usize, rank: usize, seed: u64) -> Vec<f32> {
        let basis = crate::testing::random_vectors(rank, dim, seed);
        let coef = crate::testing::random_vectors(n, rank, seed + 1);
        let noise = crate::testing::random_vectors(n, dim, seed + 2);
        let mut out = vec![0.0f32; n * dim];
        for r in 0..n {
            for k in 0..rank {
                let c = coef[r * rank + k];
                for i in 0..dim {
                    out[r * dim + i] += c * basis[k * dim + i];
                }
            }
            for i in 0..dim {
                out[r * dim + i] += 0.02 * noise[r * dim + i];
            }
        }
        out
    }

    #[test]
    fn preserves_geometry_and_gathers_energy() {
        let dim = 96;
        let data = low_rank(2000, dim, 10, 1);
        for metric in [Metric::Dot, Metric::L2] {
            let rot = Rotation::fit(metric, dim, &data, 7).expect("low-rank data splits");
            assert_eq!(rot.head(), 16);
            let (a, b) = (&data[..dim], &data[dim..2 * dim]);
            let (mut ra, mut rb) = (a.to_vec(), b.to_vec());
            rot.apply(&mut ra);
            rot.apply(&mut rb);
            let close = |x: f32, y: f32| (x - y).abs() <= 1e-3 * (1.0 + y.abs());
            match metric {
                Metric::L2 => assert!(close(
                    distance::l2_squared(&ra, &rb),
                    distance::l2_squared(a, b)
                )),
                _ => assert!(close(distance::dot(&ra, &rb), distance::dot(a, b))),
            }
            // The tail holds almost nothing.
            let tail: f32 = ra[16..].iter().map(|x| x * x).sum();
            let all: f32 = ra.iter().map(|x| x * x).sum();
            assert!(tail < 0.01 * all, "tail {tail} of {all}");
            rot.unapply(&mut ra);
            for (x, y) in ra.iter().zip(a) {
                assert!((x - y).abs() < 1e-4, "{x} vs {y}");
            }
            let back = Rotation::from_parts(
                dim,
                rot.reflectors().to_vec(),
                rot.mean().map(<[f32]>::to_vec),
            )
            .unwrap();
            assert_eq!(back, rot);
        }
    }

    #[test]
    fn declines_small_or_flat_data() {
        let flat = crate::testing::random_vectors(3000, 128, 3);
        assert!(Rotation::fit(Metric::Dot, 128, &flat, 1).is_none());
        let small = low_rank(500, 32, 4, 5);
        assert!(Rotation::fit(Metric::Dot, 32, &small, 1).is_none());
        assert!(Rotation::fit(Metric::Dot, 96, &vec![0.0; 96 * 10], 1).is_none());
        assert!(Rotation::from_parts(4, vec![1.0; 3], None).is_none());
        assert!(Rotation::from_parts(4, vec![], None).is_none());
    }

    #[test]
    fn jacobi_diagonalises() {
        let b = vec![4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 1.0];
        let (values, vectors) = jacobi_eigen(b.clone(), 3);
        for e in 0..3 {
            for i in 0..3 {
                let av: f64 = (0..3).map(|k| b[i * 3 + k] * vectors[k * 3 + e]).sum();
                assert!((av - values[e] * vectors[i * 3 + e]).abs() < 1e-9);
            }
        }
    }
}
