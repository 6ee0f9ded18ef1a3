//! The dense layers' matrix multiplication, with the weights packed once at load.
//!
//! A general-purpose GEMM (the `gemm` crate) copies panels of its right-hand operand into a
//! cache-friendly layout on every call. For the encoder's dense layers that operand is a weight
//! matrix that never changes, so the copy is pure overhead, and it weighs most at the small
//! batches a query server sees (a dozen to a hundred token rows), where each weight copied is
//! then used by only a few rows. [`PackedMatrix`] does the copy once, when the model loads, into
//! exactly the layout the AVX-512 micro-kernel below reads: panels of `16·NV` columns, each `k`
//! rows deep, contiguous and 64-byte aligned, the last zero-padded.
//!
//! Where AVX-512F is missing (older x86-64, other architectures), the matrix stays row-major and
//! [`matmul`] hands it to the `gemm` crate as before. Only one of the two layouts is ever kept.
//!
//! The micro-kernel holds an `MR × 16·NV` (12 × 32) tile of the output in 24 of the 32 `zmm`
//! registers for the whole depth of a K block, so each step loads `NV` vectors of weights and
//! `MR` broadcast inputs for `MR·NV` fused multiply-adds. Twelve rows cover a short query's
//! tokens in one tile, so at batch 1 every weight is loaded once. The inputs `x` are read in
//! place, row-major: each of their rows is reused across all column panels from cache anyway.

use gemm::Parallelism;

use super::lowp::{self, Bf16Matrix, Int8Matrix, Staging};
use super::precision::{CpuFeatures, Kernel, Precision};

/// Vectors of 16 `f32` per panel row: panels are `16·NV` columns wide, the micro-kernel's tile.
/// (6 × 64, 8 × 32 and 14 × 32 tiles ran the same within noise on Zen 5, weights in cache;
/// twelve rows hold a short query's tokens in one tile.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const NV: usize = 2;
/// Rows of the micro-kernel's output tile.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MR: usize = 12;
/// Depth of a K block: one panel's `KC × 16·NV` weights (32 KiB) stay in L1 while every row
/// block of an M block passes over them; the output tile is written back once per K block.
/// (128 ran slower on long batches.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const KC: usize = 256;
/// Rows per M block: their `MC × KC` inputs (120 KiB) stay in L2 while every panel of a task
/// passes over them. Without this, long batches (a thousand rows) streamed their inputs from L3
/// once per panel and ran a quarter slower than the `gemm` crate on the 1536-deep layer.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const MC: usize = 10 * MR;

/// A `k × n` matrix (the transposed weights of a dense layer), stored in the layout its
/// multiplication reads: column panels for the AVX-512 kernel, or plain row-major for the `gemm`
/// crate where that kernel cannot run.
pub(crate) struct PackedMatrix {
    k: usize,
    n: usize,
    layout: Layout,
}

enum Layout {
    /// Row-major `k × n`, multiplied by the `gemm` crate.
    RowMajor(Vec<f32>),
    /// `⌈n / nr⌉` panels (`nr = 16·NV`) one after the other; panel `j` holds rows `0..k` of
    /// columns `j·nr..(j+1)·nr`, each row `nr` contiguous values, columns past `n` zero. Only
    /// built after checking for AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Panels(Vec<Line>),
}

/// One cache line of 16 `f32`: the allocation unit of the panels, so that every vector the
/// kernel loads is aligned and never straddles two lines.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl PackedMatrix {
    /// Takes the row-major `k × n` matrix `weight_t` and keeps it in the layout [`matmul`] will
    /// use on this CPU.
    ///
    /// # Panics
    /// If `weight_t.len() != k·n`.
    pub(crate) fn new(weight_t: Vec<f32>, k: usize, n: usize) -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            return Self::panels(&weight_t, k, n);
        }
        Self::row_major(weight_t, k, n)
    }

    /// Keeps `weight_t` row-major, for the `gemm` crate.
    fn row_major(weight_t: Vec<f32>, k: usize, n: usize) -> Self {
        assert_eq!(weight_t.len(), k * n, "weight matrix is not {k} × {n}");
        PackedMatrix {
            k,
            n,
            layout: Layout::RowMajor(weight_t),
        }
    }

    /// Packs `weight_t` into column panels. Multiplying the result needs AVX-512F, so only
    /// [`PackedMatrix::new`] (after checking) and the tests (likewise) build these.
    #[cfg(target_arch = "x86_64")]
    fn panels(weight_t: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(weight_t.len(), k * n, "weight matrix is not {k} × {n}");
        let lines = pack(weight_t, k, n, NV);
        PackedMatrix {
            k,
            n,
            layout: Layout::Panels(lines),
        }
    }
}

/// A raw output pointer that parallel tasks may share because each writes a disjoint region of
/// it (the kernel's tiles here, the attention heads' columns in `bert`).
#[derive(Clone, Copy)]
pub(super) struct SyncPtr(pub(super) *mut f32);

impl SyncPtr {
    /// The pointer. A method rather than the field, so that closures capture the whole
    /// `SyncPtr` (which is `Send`), not the bare pointer.
    pub(super) fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: every user hands a `SyncPtr` only to tasks that write disjoint regions behind it.
unsafe impl Send for SyncPtr {}
// SAFETY: as above.
unsafe impl Sync for SyncPtr {}

/// The panels of the row-major `k × n` matrix `weight_t`, `nv · 16` columns wide.
#[cfg(target_arch = "x86_64")]
fn pack(weight_t: &[f32], k: usize, n: usize, nv: usize) -> Vec<Line> {
    let nr = nv * 16;
    let panels = n.div_ceil(nr);
    if k == 0 {
        return Vec::new();
    }
    let mut lines = vec![Line([0.0; 16]); panels * k * nv];
    for (j, panel) in lines.chunks_exact_mut(k * nv).enumerate() {
        let c0 = j * nr;
        let width = nr.min(n - c0);
        for (p, row) in panel.chunks_exact_mut(nv).enumerate() {
            let src = &weight_t[p * n + c0..][..width];
            for (line, src) in row.iter_mut().zip(src.chunks(16)) {
                line.0[..src.len()].copy_from_slice(src);
            }
        }
    }
    lines
}

/// The weights of a dense layer in the precision it computes in.
pub(crate) enum Matrix {
    /// `f32`, packed for the AVX-512 kernel or row-major for the `gemm` crate.
    F32(PackedMatrix),
    /// int8 per output column, for the AVX-512 VNNI kernel.
    Int8(Int8Matrix),
    /// bfloat16, for the AVX-512 BF16 kernel.
    Bf16(Bf16Matrix),
}

impl Matrix {
    /// Takes the row-major `k × n` matrix `weight_t` in `precision`, or in `f32` where this CPU
    /// cannot run that precision (see [`CpuFeatures::plan`]). In int8, the input channels
    /// `outliers` stay `f32` (see [`Int8Matrix::quantize`]); other precisions ignore them.
    ///
    /// # Panics
    /// If `weight_t.len() != k·n`, or an outlier is not below `k`.
    pub(crate) fn new(
        weight_t: Vec<f32>,
        k: usize,
        n: usize,
        precision: Precision,
        outliers: &[usize],
    ) -> Self {
        let kernel = CpuFeatures::detect().plan(precision).0;
        match kernel.precision() {
            Precision::F32 => Matrix::F32(PackedMatrix::new(weight_t, k, n)),
            Precision::Int8 => Matrix::Int8(Int8Matrix::quantize(
                &weight_t,
                k,
                n,
                outliers,
                kernel == Kernel::AmxInt8,
            )),
            Precision::Bf16 => Matrix::Bf16(Bf16Matrix::round(&weight_t, k, n)),
        }
    }

    /// Number of output columns.
    pub(crate) fn n_out(&self) -> usize {
        match self {
            Matrix::F32(m) => m.n,
            Matrix::Int8(m) => m.n(),
            Matrix::Bf16(m) => m.n(),
        }
    }

    fn k(&self) -> usize {
        match self {
            Matrix::F32(m) => m.k,
            Matrix::Int8(m) => m.k(),
            Matrix::Bf16(m) => m.k(),
        }
    }
}

/// `dst = x · W` for the row-major `rows × k` matrix `x` and `rows × n` output `dst` (only their
/// first `rows·k` and `rows·n` elements are used), spread over the current rayon pool when
/// `threads > 1` (the pool's size). A lower-precision `w` converts `x` into `staging` first.
///
/// # Panics
/// If `x` or `dst` is too short for `rows`.
pub(crate) fn matmul(
    x: &[f32],
    rows: usize,
    w: &Matrix,
    dst: &mut [f32],
    threads: usize,
    staging: &mut Staging,
) {
    let (k, n) = (w.k(), w.n_out());
    assert!(
        x.len() >= rows * k && dst.len() >= rows * n,
        "matmul operands do not match their shapes. This is a bug."
    );
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // An empty sum; the kernels would leave `dst` untouched.
        dst[..rows * n].fill(0.0);
        return;
    }
    match w {
        Matrix::F32(m) => matmul_f32(x, rows, m, dst, threads),
        Matrix::Int8(m) => lowp::matmul_int8(x, rows, m, dst, threads, staging),
        Matrix::Bf16(m) => lowp::matmul_bf16(x, rows, m, dst, threads, staging),
    }
}

/// [`matmul`] in `f32`, for operands it has checked: a non-empty product of depth `k > 0`
/// (the kernels would leave `dst` untouched for an empty sum).
fn matmul_f32(x: &[f32], rows: usize, w: &PackedMatrix, dst: &mut [f32], threads: usize) {
    let (k, n) = (w.k, w.n);
    match &w.layout {
        Layout::RowMajor(weight_t) => gemm_crate(x, rows, weight_t, k, n, dst, threads),
        #[cfg(target_arch = "x86_64")]
        Layout::Panels(lines) => x86::matmul::<MR, NV>(x, rows, lines, k, n, dst, threads),
    }
}

/// The portable path: the `gemm` crate on the row-major weights (it packs them itself).
fn gemm_crate(
    x: &[f32],
    rows: usize,
    weight_t: &[f32],
    k: usize,
    n: usize,
    dst: &mut [f32],
    threads: usize,
) {
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: `matmul` checked that `x` holds `rows × k` and `dst` `rows × n` values, and
    // `PackedMatrix::row_major` that `weight_t` holds `k × n`; all row-major with unit column
    // stride, so every access the crate makes is inside them.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            weight_t.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512F kernel. Every `unsafe fn` here needs AVX-512F; the only way in is
    //! [`matmul`], which checks for it (a cached flag: [`PackedMatrix::new`] checked already,
    //! before packing, but this keeps the safe function sound on its own).
    //!
    //! [`PackedMatrix::new`]: super::PackedMatrix::new

    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::{KC, Line, MC, SyncPtr};

    /// Below this many multiply-adds a call runs on one thread: splitting it would cost more in
    /// task hand-offs than it saves.
    const MIN_PARALLEL_WORK: usize = 1 << 18;

    /// See [`super::matmul`]; `lines` are the panels of a `k × n` matrix.
    pub(super) fn matmul<const MR: usize, const NV: usize>(
        x: &[f32],
        rows: usize,
        lines: &[Line],
        k: usize,
        n: usize,
        dst: &mut [f32],
        threads: usize,
    ) {
        const { assert!(MR >= 1 && MR <= 12, "tile_m dispatches 1 to 12 rows") };
        let nr = NV * 16;
        let panels = n.div_ceil(nr);
        assert!(
            lines.len() == panels * k * NV && x.len() >= rows * k && dst.len() >= rows * n,
            "packed matmul operands do not match their shapes. This is a bug."
        );
        assert!(
            is_x86_feature_detected!("avx512f"),
            "packed matmul needs AVX-512F. This is a bug."
        );
        let b = lines.as_ptr().cast::<f32>();
        let row_blocks = rows.div_ceil(MR);
        if threads <= 1 || rows * k * n < MIN_PARALLEL_WORK {
            // SAFETY: AVX-512F is present (checked above); the assertions above size `x`,
            // `lines` and `dst` for the full ranges.
            unsafe { block::<MR, NV>(x.as_ptr(), b, dst.as_mut_ptr(), k, n, 0..rows, 0..panels) };
            return;
        }
        let c = SyncPtr(dst.as_mut_ptr());
        // Split by column panels first, so that at small batches each thread streams only its
        // share of the weights; split rows too when there are too few panels to keep a few tasks
        // per thread (load balance on a shared machine).
        let want = 3 * threads;
        let col_groups = panels.min(want);
        let row_groups = want.div_ceil(col_groups).min(row_blocks);
        (0..col_groups * row_groups)
            .into_par_iter()
            .for_each(move |t| {
                let (cg, rg) = (t / row_groups, t % row_groups);
                let p = split(panels, col_groups, cg);
                let r = split(row_blocks, row_groups, rg);
                let r = r.start * MR..(r.end * MR).min(rows);
                // SAFETY: as for the single-threaded call; the tasks' (rows × panels) tiles
                // partition the output, so no two tasks write the same element of `dst`.
                unsafe {
                    let b = lines.as_ptr().cast::<f32>();
                    block::<MR, NV>(x.as_ptr(), b, c.get(), k, n, r, p);
                }
            });
    }

    /// Part `i` of `0..len` cut into `parts` nearly equal ranges.
    fn split(len: usize, parts: usize, i: usize) -> std::ops::Range<usize> {
        len * i / parts..len * (i + 1) / parts
    }

    /// Computes the output rows `rows` × columns of panels `panels`.
    ///
    /// # Safety
    /// AVX-512F; `a` is `? × k` row-major covering `rows`, `b` the panels of a `k × n` matrix
    /// covering `panels`, `c` `? × n` row-major covering `rows`.
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const MR: usize, const NV: usize>(
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        k: usize,
        n: usize,
        rows: std::ops::Range<usize>,
        panels: std::ops::Range<usize>,
    ) {
        let nr = NV * 16;
        // Whole tiles per M block.
        let mc = MC / MR * MR;
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let mut r0 = rows.start;
            while r0 < rows.end {
                let r1 = (r0 + mc).min(rows.end);
                for j in panels.clone() {
                    let cols = nr.min(n - j * nr);
                    // SAFETY: panel `j` starts at `j·k·nr` and its rows `k0..k0 + kc` at `k0·nr`
                    // into it, inside `b`.
                    let bj = unsafe { b.add(j * k * nr + k0 * nr) };
                    // The weights this task reads next, fetched while the first tile of this
                    // panel computes: at small batches each weight is used by only one or two
                    // tiles, so without this every panel waits on memory (the weights of all
                    // layers together are larger than the caches). The address is only a hint
                    // and may point past the panels; prefetches never fault.
                    let next = if j + 1 < panels.end {
                        b.wrapping_add((j + 1) * k * nr + k0 * nr)
                    } else if r1 == rows.end && k0 + kc < k {
                        b.wrapping_add(panels.start * k * nr + (k0 + kc) * nr)
                    } else {
                        std::ptr::null()
                    };
                    let mut i = r0;
                    while i < r1 {
                        let m = MR.min(r1 - i);
                        // SAFETY: `i..i + m` lies in `rows`, which `a` and `c` cover, so `tile`
                        // reads `m` rows × `kc` columns of `a` from `(i, k0)` and writes `m`
                        // rows × `cols` columns of `c` from `(i, j·nr)` inside them, and reads
                        // `kc × nr` panel values from `bj` (above); `prefetch` is only a hint.
                        unsafe {
                            let ai = a.add(i * k + k0);
                            let ci = c.add(i * n + j * nr);
                            let pf = if i == r0 { next } else { std::ptr::null() };
                            tile_m::<NV>(m, kc, ai, k, bj, ci, n, cols, k0 > 0, pf);
                        }
                        i += m;
                    }
                }
                r0 = r1;
            }
            k0 += kc;
        }
    }

    /// [`tile`] for a run-time row count `m` in `1..=12`.
    ///
    /// # Safety
    /// As for [`tile`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile_m<const NV: usize>(
        m: usize,
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        prefetch: *const f32,
    ) {
        // SAFETY: the caller's contract, with `M = m`.
        unsafe {
            match m {
                1 => tile::<1, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                2 => tile::<2, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                3 => tile::<3, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                4 => tile::<4, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                5 => tile::<5, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                6 => tile::<6, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                7 => tile::<7, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                8 => tile::<8, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                9 => tile::<9, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                10 => tile::<10, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                11 => tile::<11, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                12 => tile::<12, NV>(kc, a, lda, b, c, ldc, cols, accumulate, prefetch),
                _ => unreachable!("tile rows {m} outside 1..=12"),
            }
        }
    }

    /// The micro-kernel: `C[0..M, 0..cols] (+)= A[0..M, 0..kc] · B[0..kc, 0..nr]`, with the
    /// `M × nr` tile of `C` held in registers throughout; `accumulate` adds to `C` instead of
    /// overwriting it (K blocks after the first). Unless `prefetch` is null, it also asks for
    /// the `kc × nr` values from there to be brought into cache.
    ///
    /// # Safety
    /// AVX-512F; `a` addresses `M` rows (stride `lda`) of `kc` readable values, `b` `kc × nr`
    /// readable values 64-byte aligned, `c` `M` rows (stride `ldc`) of `cols ≤ nr` writable
    /// values.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const M: usize, const NV: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        accumulate: bool,
        prefetch: *const f32,
    ) {
        let nr = NV * 16;
        let mut acc = [[_mm512_setzero_ps(); NV]; M];
        for p in 0..kc {
            let mut w = [_mm512_setzero_ps(); NV];
            for (v, w) in w.iter_mut().enumerate() {
                // SAFETY: row `p < kc` of the panel, vector `v < NV`: inside the `kc × nr`
                // values at `b`, and 64-byte aligned since `nr·4` bytes is a whole number of
                // lines.
                *w = unsafe { _mm512_load_ps(b.add(p * nr + 16 * v)) };
            }
            if !prefetch.is_null() {
                for v in 0..NV {
                    let line = prefetch.wrapping_add(p * nr + 16 * v);
                    _mm_prefetch::<_MM_HINT_T1>(line.cast());
                }
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: row `i < M`, column `p < kc` of `a`.
                let xi = _mm512_set1_ps(unsafe { *a.add(i * lda + p) });
                for (acc, &w) in acc.iter_mut().zip(&w) {
                    *acc = _mm512_fmadd_ps(xi, w, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                let lanes = cols.saturating_sub(16 * v).min(16);
                if lanes == 0 {
                    break;
                }
                let mask = if lanes == 16 {
                    !0
                } else {
                    ((1u32 << lanes) - 1) as __mmask16
                };
                // SAFETY: row `i < M` of `c`, columns `16v..16v + lanes`, `lanes` counted
                // within `cols`; masked-off lanes are neither read nor written, and cannot
                // fault.
                unsafe {
                    let out = c.add(i * ldc + 16 * v);
                    let sum = if accumulate {
                        _mm512_add_ps(acc, _mm512_maskz_loadu_ps(mask, out))
                    } else {
                        acc
                    };
                    _mm512_mask_storeu_ps(out, mask, sum);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Columns per panel.
    const NR: usize = NV * 16;

    /// Deterministic values in about ±1 with varied magnitudes (splitmix64).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..len)
            .map(|_| {
                s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
            })
            .collect()
    }

    /// Checks `got` against the product computed in f64. Any f32 summation order of `k` products
    /// is within `γₖ·Σ|aᵢbᵢ|` of the exact sum, `γₖ = k·u / (1 − k·u)`, `u = 2⁻²⁴` (Higham,
    /// §3.1); a dropped, doubled or misplaced term would be off by about `|aᵢbᵢ|`, far more.
    fn check(x: &[f32], w: &[f32], rows: usize, k: usize, n: usize, got: &[f32], what: &str) {
        let u = 1.0 / f64::from(1u32 << 24);
        let gamma = k as f64 * u / (1.0 - k as f64 * u);
        for r in 0..rows {
            for c in 0..n {
                let (mut sum, mut abs) = (0.0f64, 0.0f64);
                for p in 0..k {
                    let t = f64::from(x[r * k + p]) * f64::from(w[p * n + c]);
                    sum += t;
                    abs += t.abs();
                }
                let g = f64::from(got[r * n + c]);
                assert!(
                    (g - sum).abs() <= gamma * abs + 1e-30,
                    "{what}: rows {rows}, k {k}, n {n}: ({r}, {c}) = {g}, want {sum}"
                );
            }
        }
    }

    /// Multiplies with every layout this CPU can run, on 1 and 2 threads, and checks each.
    fn check_all(rows: usize, k: usize, n: usize) {
        let x = values(rows * k, (rows * 31 + k * 7 + n) as u64);
        let w = values(k * n, (k * 131 + n) as u64 ^ 0xABCD);
        let mut layouts = vec![("gemm crate", PackedMatrix::row_major(w.clone(), k, n))];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            layouts.push(("avx512 panels", PackedMatrix::panels(&w, k, n)));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (what, packed) in &layouts {
            for threads in [1, 2] {
                // Poisoned so that an unwritten element fails the check.
                let mut dst = vec![f32::NAN; rows * n + 3];
                pool.install(|| matmul_f32(&x, rows, packed, &mut dst, threads));
                check(&x, &w, rows, k, n, &dst, what);
                assert!(
                    dst[rows * n..].iter().all(|v| v.is_nan()),
                    "{what}: wrote past"
                );
            }
        }
    }

    #[test]
    fn new_picks_the_layout_this_cpu_runs() {
        let m = PackedMatrix::new(vec![1.0; 6], 2, 3);
        assert_eq!(m.n, 3);
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            assert!(matches!(m.layout, Layout::Panels(_)));
            return;
        }
        assert!(matches!(m.layout, Layout::RowMajor(_)));
    }

    #[test]
    fn every_row_tail_and_column_tail() {
        for rows in 1..=2 * MR + 1 {
            for n in [1, 15, 16, 17, NR - 1, NR, NR + 1, 2 * NR + 5] {
                check_all(rows, 7, n);
            }
        }
    }

    #[test]
    fn encoder_and_odd_shapes() {
        let rows_list = [1, 5, 6, 7, 13, 64, 92, 97, 200];
        for k in [1, 7, 37, 384, 1536] {
            for n in [1, 17, 63, 64, 65, 384, 1152, 1536] {
                for rows in rows_list {
                    // The f64 reference is slow; the largest products keep a few row counts
                    // that still cover one, a partial and several whole tiles.
                    if rows * k * n > 60_000_000 && ![1, 7, 13].contains(&rows) {
                        continue;
                    }
                    check_all(rows, k, n);
                }
            }
        }
    }

    #[test]
    fn k_blocks_and_parallel_splits() {
        // Several K blocks with a partial last one, and enough work to go parallel.
        check_all(37, 2 * KC + 3, 3 * NR + 9);
        check_all(150, KC, 2 * NR);
    }

    #[test]
    fn zero_depth_gives_zeros() {
        for packed in [
            PackedMatrix::new(Vec::new(), 0, 5),
            PackedMatrix::row_major(Vec::new(), 0, 5),
        ] {
            let mut dst = vec![7.0; 10];
            matmul(
                &[],
                2,
                &Matrix::F32(packed),
                &mut dst,
                1,
                &mut Staging::default(),
            );
            assert_eq!(dst, [0.0; 10]);
        }
    }

    #[test]
    fn empty_product_writes_nothing() {
        let packed = Matrix::F32(PackedMatrix::new(vec![1.0; 12], 3, 4));
        let mut dst = vec![7.0; 4];
        matmul(&[], 0, &packed, &mut dst, 1, &mut Staging::default());
        assert_eq!(dst, [7.0; 4]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_shapes(rows in 1usize..40, k in 1usize..300, n in 1usize..200) {
            check_all(rows, k, n);
        }
    }
}
