//! Distance kernels over `f32` slices, the integer inner product that int8-quantized vectors
//! are scored with, and the [`Metric`] type that the indexes are built on.
//!
//! # Score convention
//! Every index in vicinity ranks by a **similarity score where higher means closer**, as Qdrant
//! does. For [`Metric::Dot`] the score is the inner product; for [`Metric::Cosine`] it is the
//! cosine similarity (vectors are normalised once, on the way in, by [`Metric::preprocess`], so
//! the score is computed as an inner product); for [`Metric::L2`] it is the *negated* squared
//! Euclidean distance. [`Metric::distance`] turns a score back into a distance where lower means
//! closer (`1 − cos`, `−dot`, squared L2).
//!
//! # Kernels and dispatch
//! [`dot`], [`l2_squared`] and [`cosine`] run on the most capable instruction set the CPU offers,
//! chosen once at first use ([`kernels`]): AVX-512F, then AVX2+FMA on x86-64, NEON on aarch64,
//! and the portable [`scalar`] kernels otherwise. [`dot_batch`] and [`l2_squared_batch`] score one
//! query against many contiguous rows in one call, which is what exact scans (flat index, IVF
//! lists) want: the dispatch happens once per block instead of once per row. The [`scalar`] module
//! holds the reference implementations; tests compare every vectorised kernel with it.
//!
//! The vectorised kernels live in per-architecture files (`x86.rs`, `aarch64.rs`) as
//! `#[target_feature]` `unsafe fn`s; the only `unsafe` in the index and distance code is there
//! and in the safe wrappers that those files hand out after checking the CPU. [`prefetch_read`],
//! the cache hint graph searches issue ahead of scoring, is one of those wrappers.
//!
//! # Integer inner product
//! [`dot_u8_i8`] scores a query quantized to `i8` against stored `u8` codes: the exact `i32` sum
//! of the products, so every implementation returns the same bits as
//! [`scalar::dot_u8_i8`]. It is chosen with the `f32` kernels but by its own feature checks
//! ([`Kernels::int8_name`] says which): AVX-512 VNNI (`vpdpbusd`), then AVX-512BW, then AVX2
//! (both widen to `i16` and multiply-add pairs with `vpmaddwd`), NEON, scalar. `vpmaddubsw`,
//! the obvious AVX2 instruction for `u8 × i8`, is deliberately not used: it saturates the sum of
//! two products to `i16` (`255·127·2` does not fit), and a saturated score is silently wrong.
//! [`int8_dot_kernels`] lists every implementation this CPU runs, for tests and benchmarks.
//!
//! There is no minimum dimension below which the scalar kernels take over: the vector kernels
//! finish short inputs with masked or scalar tails, and `benches/distance.rs` (`dot_small`)
//! measured them within half a nanosecond of scalar at 4 and 8 components and ahead from 16 on
//! (AVX-512F, 2.3 ns against 2.8 ns at 16; 3.1 against 8.4 at 64). A threshold would add a
//! branch to every call to win a fraction of a nanosecond at dimensions no encoder produces.
//!
//! This module knows only slices of numbers: it allocates nothing (outside
//! [`int8_dot_kernels`], a listing for tests and benchmarks) and does no I/O.

use std::sync::OnceLock;

pub mod scalar;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;

/// A similarity measure between vectors. See the [module docs](self) for the score convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity. Vectors are L2-normalised on insertion and at query time.
    Cosine,
    /// Inner product, on the vectors as given.
    Dot,
    /// Euclidean distance; scores are the negated squared distance.
    L2,
}

impl Metric {
    /// The name used in configuration, file formats and the API (`cosine`, `dot`, `l2`).
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Dot => "dot",
            Metric::L2 => "l2",
        }
    }

    /// Similarity score of two vectors that have both been through [`Metric::preprocess`]:
    /// higher means closer.
    #[inline]
    pub fn score(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine | Metric::Dot => dot(a, b),
            Metric::L2 => -l2_squared(a, b),
        }
    }

    /// [`score`](Self::score) of `query` against each row of the row-major `rows`, into `out`,
    /// on the fastest kernels. See [`Kernels::score_batch`].
    ///
    /// # Panics
    /// If `rows.len() != out.len() * query.len()`.
    #[inline]
    pub fn score_batch(self, query: &[f32], rows: &[f32], out: &mut [f32]) {
        kernels().score_batch(self, query, rows, out)
    }

    /// The distance that corresponds to a [`score`](Self::score): lower means closer.
    /// `1 − cos` for cosine, `−dot` for dot, the squared Euclidean distance for L2.
    #[inline]
    pub fn distance(self, score: f32) -> f32 {
        match self {
            Metric::Cosine => 1.0 - score,
            Metric::Dot | Metric::L2 => -score,
        }
    }

    /// Whether vectors are rewritten by [`preprocess`](Self::preprocess) (normalised).
    pub fn normalizes(self) -> bool {
        matches!(self, Metric::Cosine)
    }

    /// Brings a vector into the form the metric scores: L2-normalises it for cosine, leaves it
    /// as it is otherwise. Returns `false`, leaving `v` untouched, when a cosine vector has zero
    /// (or denormal) length and so has no direction.
    pub fn preprocess(self, v: &mut [f32]) -> bool {
        if !self.normalizes() {
            return true;
        }
        let mut norm = dot(v, v).sqrt();
        if norm.is_infinite() {
            // The squares overflowed: scale into range first; direction is all that matters.
            let max = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            v.iter_mut().for_each(|x| *x /= max);
            norm = dot(v, v).sqrt();
        }
        if norm.is_nan() || norm <= f32::MIN_POSITIVE || norm.is_infinite() {
            return false;
        }
        let inv = 1.0 / norm;
        v.iter_mut().for_each(|x| *x *= inv);
        true
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Metric::Cosine),
            "dot" | "ip" | "inner_product" => Ok(Metric::Dot),
            "l2" | "euclid" | "euclidean" => Ok(Metric::L2),
            other => Err(format!(
                "unknown metric '{other}', expected one of cosine, dot, l2"
            )),
        }
    }
}

/// An instruction set a kernel family is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// x86-64 AVX2 with fused multiply-add.
    Avx2Fma,
    /// x86-64 AVX-512 Foundation.
    Avx512F,
    /// aarch64 Advanced SIMD.
    Neon,
}

impl Isa {
    /// Every instruction set, most capable first within each architecture.
    pub const ALL: [Isa; 4] = [Isa::Avx512F, Isa::Avx2Fma, Isa::Neon, Isa::Scalar];

    /// A short lowercase name, for logs and benchmark labels.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512F => "avx512f",
            Isa::Neon => "neon",
        }
    }
}

/// The longest input for which [`dot_u8_i8`] is exact: the most negative product is
/// `255 · −128 = −32640`, and `65,793 · 32,640 = 2,147,483,520 ≤ 2³¹` while one more term
/// would pass `i32::MIN` (the most positive product, `255 · 127 = 32385`, allows 66,311).
/// Longer inputs wrap modulo 2³², identically in every implementation. Embedding dimensions are
/// far below this.
pub const DOT_U8_I8_EXACT_LEN: usize = 65_793;

/// One implementation of [`dot_u8_i8`] and its name, as listed by [`int8_dot_kernels`].
pub type Int8DotKernel = (&'static str, fn(&[u8], &[i8]) -> i32);

/// A family of kernels for one instruction set. All functions panic if the slices differ in
/// length (or, for the batch kernels, if `rows` does not hold exactly `out.len()` rows of
/// `query.len()` values); callers validate dimensions before they get here.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    /// The instruction set these kernels use.
    pub isa: Isa,
    /// Inner product.
    pub dot: fn(&[f32], &[f32]) -> f32,
    /// Squared Euclidean distance.
    pub l2_squared: fn(&[f32], &[f32]) -> f32,
    /// Cosine similarity of vectors that need not be normalised (0 when either is zero).
    pub cosine: fn(&[f32], &[f32]) -> f32,
    /// `dot_batch(query, rows, out)`: `out[i]` = inner product of `query` with row `i` of the
    /// row-major `rows`.
    pub dot_batch: fn(&[f32], &[f32], &mut [f32]),
    /// `l2_squared_batch(query, rows, out)`: `out[i]` = squared Euclidean distance between
    /// `query` and row `i` of the row-major `rows`.
    pub l2_squared_batch: fn(&[f32], &[f32], &mut [f32]),
    /// Exact integer inner product of `u8` codes and `i8` query bytes; see [`dot_u8_i8`]. Not
    /// always written for [`isa`](Self::isa): the AVX-512F family carries the best of VNNI,
    /// AVX-512BW, AVX2 and scalar that this CPU has.
    pub dot_u8_i8: fn(&[u8], &[i8]) -> i32,
    /// The name, as listed by [`int8_dot_kernels`], of the implementation in
    /// [`dot_u8_i8`](Self::dot_u8_i8): `avx512vnni`, `avx512bw`, `avx2`, `neon` or `scalar`.
    pub int8_name: &'static str,
}

impl Kernels {
    /// The scalar reference kernels.
    pub const SCALAR: Kernels = Kernels {
        isa: Isa::Scalar,
        dot: scalar::dot,
        l2_squared: scalar::l2_squared,
        cosine: scalar::cosine,
        dot_batch: scalar::dot_batch,
        l2_squared_batch: scalar::l2_squared_batch,
        dot_u8_i8: scalar::dot_u8_i8,
        int8_name: "scalar",
    };

    /// The kernels for `isa`, or `None` when this CPU (or this build's target architecture)
    /// lacks it.
    pub fn for_isa(isa: Isa) -> Option<Kernels> {
        match isa {
            Isa::Scalar => Some(Kernels::SCALAR),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512F => x86::avx512f_kernels(),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => x86::avx2_fma_kernels(),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => aarch64::neon_kernels(),
            #[allow(unreachable_patterns)] // which arms remain depends on the target
            _ => None,
        }
    }

    /// `metric`'s [`score`](Metric::score) of `query` against each row of the row-major `rows`,
    /// into `out`: the inner product for cosine (rows and query already normalised) and dot, the
    /// negated squared distance for L2.
    ///
    /// # Panics
    /// If `rows.len() != out.len() * query.len()`.
    #[inline]
    pub fn score_batch(&self, metric: Metric, query: &[f32], rows: &[f32], out: &mut [f32]) {
        match metric {
            Metric::Cosine | Metric::Dot => (self.dot_batch)(query, rows, out),
            Metric::L2 => {
                (self.l2_squared_batch)(query, rows, out);
                out.iter_mut().for_each(|x| *x = -*x);
            }
        }
    }

    /// The most capable kernels this CPU supports.
    pub fn detect() -> Kernels {
        Isa::ALL
            .iter()
            .find_map(|&isa| Kernels::for_isa(isa))
            .unwrap_or(Kernels::SCALAR)
    }
}

static KERNELS: OnceLock<Kernels> = OnceLock::new();

/// The kernels in use, chosen once on first call by [`Kernels::detect`].
#[inline]
pub fn kernels() -> &'static Kernels {
    KERNELS.get_or_init(Kernels::detect)
}

/// Inner product on the fastest kernel. Panics if the lengths differ.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    (kernels().dot)(a, b)
}

/// Squared Euclidean distance on the fastest kernel. Panics if the lengths differ.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    (kernels().l2_squared)(a, b)
}

/// Cosine similarity on the fastest kernel (0 when either vector is zero). Panics if the
/// lengths differ.
#[inline]
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    (kernels().cosine)(a, b)
}

/// Inner products of `query` with each row of the row-major `rows`, on the fastest kernel:
/// `out[i] = dot(query, rows[i·d .. (i+1)·d])` with `d = query.len()`.
///
/// # Panics
/// If `rows.len() != out.len() * query.len()`.
#[inline]
pub fn dot_batch(query: &[f32], rows: &[f32], out: &mut [f32]) {
    (kernels().dot_batch)(query, rows, out)
}

/// Squared Euclidean distances from `query` to each row of the row-major `rows`, on the fastest
/// kernel.
///
/// # Panics
/// If `rows.len() != out.len() * query.len()`.
#[inline]
pub fn l2_squared_batch(query: &[f32], rows: &[f32], out: &mut [f32]) {
    (kernels().l2_squared_batch)(query, rows, out)
}

/// Exact integer inner product `Σ aᵢ·bᵢ` of stored `u8` codes and an `i8` query, on the fastest
/// kernel (see [`Kernels::int8_name`]). Exact up to [`DOT_U8_I8_EXACT_LEN`] components, and the
/// same bits as [`scalar::dot_u8_i8`] at any length.
///
/// # Panics
/// If the lengths differ.
#[inline]
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    (kernels().dot_u8_i8)(a, b)
}

/// Every implementation of [`dot_u8_i8`] this CPU (and this build's target) can run, with its
/// name, most capable first and `scalar` last: on x86-64 `avx512vnni`, `avx512bw` and `avx2`
/// where present, on aarch64 `neon`. For tests and benchmarks; the indexes use [`dot_u8_i8`].
pub fn int8_dot_kernels() -> Vec<Int8DotKernel> {
    let mut all: Vec<Int8DotKernel> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    all.extend(x86::int8_dot_kernels());
    #[cfg(target_arch = "aarch64")]
    all.extend(aarch64::int8_dot_kernels());
    all.push(("scalar", scalar::dot_u8_i8));
    all
}

/// Asks the CPU to start loading `data` into cache, one request per 64-byte line, so that a
/// later read finds it there. A hint only: it never faults, changes no value, and compiles to
/// nothing on targets other than x86-64.
///
/// Worth calling where the next rows to score are known before the current one is done, as in
/// a graph walk, whose reads are random and so missed by the hardware prefetcher.
#[inline(always)]
pub fn prefetch_read<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    x86::prefetch_read(data.as_ptr().cast(), std::mem::size_of_val(data));
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// The shape check every batch kernel makes before it touches memory.
#[inline]
pub(crate) fn check_batch(query: &[f32], rows: &[f32], out: &[f32]) {
    assert!(
        out.len().checked_mul(query.len()) == Some(rows.len()),
        "batch kernel: {} values are not {} rows of dimension {}",
        rows.len(),
        out.len(),
        query.len()
    );
}

/// Shared tail of every cosine kernel: the ratio, guarded against zero norms and clamped to
/// `[-1, 1]` because rounding can push it slightly outside.
#[inline]
pub(crate) fn finish_cosine(ab: f32, aa: f32, bb: f32) -> f32 {
    let denom = (aa * bb).sqrt();
    if denom.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
        return 0.0;
    }
    (ab / denom).clamp(-1.0, 1.0)
}
