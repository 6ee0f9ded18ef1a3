//! The dense layers in lower precision: int8 (AVX-512 VNNI) and bf16 (AVX-512 BF16).
//!
//! Both instructions multiply pairs of narrow values inside each 32-bit lane and add the
//! products into that lane: `vpdpbusd` four `u8 × i8` products into an `i32`, `vdpbf16ps` two
//! `bf16 × bf16` products into an `f32`. So both matrices are packed alike, at load: panels of
//! [`NR`] = 32 output columns (two vectors of 16 lanes); for each group of `G` consecutive rows
//! of `Wᵀ` (`G` = 4 for int8, 2 for bf16) a panel holds two 64-byte blocks, lane `j` of block
//! `v` holding those `G` weights of column `16v + j`. The activations are converted per call
//! into rows of the same groups, and the micro-kernel broadcasts one group of a row (32 bits)
//! against the two blocks, for an `MR × 32` tile held in 24 registers over the whole depth.
//!
//! **int8.** Weights are quantized symmetrically per output column (`w ≈ s_c·q`, `q` in
//! `-127..=127`), activations per row (`x ≈ s_r·q`). `vpdpbusd` wants its first operand
//! unsigned, so activations are stored as `q + 128` (`1..=255`) and the excess, `128·Σ_k q_w`,
//! precomputed per column, is subtracted from the exact `i32` sum before scaling back:
//! `y = s_r·s_c·(Σ (q_x + 128)·q_w − 128·Σ q_w)`. Sums of up to 2²⁴ rows cannot overflow.
//!
//! **bf16.** Values are rounded to nearest-even bfloat16 (8 significant bits); their
//! products are exact in `f32`, and accumulate in `f32`.
//!
//! Both need AVX-512 F, BW and VL besides their own extension; [`CpuFeatures::plan`] picks
//! them only where present, and each entry point checks again.
//!
//! [`CpuFeatures::plan`]: super::precision::CpuFeatures::plan

use rayon::prelude::*;

/// Output columns per panel: two vectors of 16 32-bit lanes.
const NR: usize = 32;
/// Rows of the micro-kernel's output tile (24 accumulators, 2 weight vectors and a broadcast
/// fit the 32 registers).
const MR: usize = 12;
/// Rows per M block: their converted activations (`MC × k`, at most 180 KiB at `k` = 1536
/// in int8) stay in L2 while every panel of a task passes over them.
const MC: usize = 10 * MR;
/// Below this many multiply-adds a call runs on one thread.
const MIN_PARALLEL_WORK: usize = 1 << 20;
/// Rows of activations the AMX kernel handles at once (two tiles of 16).
const AMX_ROWS: usize = 32;
/// Rows past the last that a kernel may read: the AMX kernel loads whole tiles.
const SPARE_ROWS: usize = AMX_ROWS;

/// 64 bytes, 64-byte aligned: the unit of the packed panels and of the converted activations,
/// so that every vector the kernel loads is aligned.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Block([u8; 64]);

const ZERO_BLOCK: Block = Block([0; 64]);

/// The activations of one call converted for a low-precision kernel, kept between calls so
/// that a forward pass does not allocate them per layer.
#[derive(Default)]
pub(crate) struct Staging {
    rows: Vec<Block>,
    scales: Vec<f32>,
}

impl Staging {
    /// Room for `rows` rows of `row_bytes` bytes each (a multiple of 4), and `rows` scales;
    /// returns the byte buffer and the scales. The buffer has [`SPARE_ROWS`] more rows, which
    /// the AMX kernel may read (and ignore) past the last.
    fn reserve(&mut self, rows: usize, row_bytes: usize) -> (&mut [u8], &mut [f32]) {
        let blocks = ((rows + SPARE_ROWS) * row_bytes).div_ceil(64);
        if self.rows.len() < blocks {
            self.rows.resize(blocks, ZERO_BLOCK);
        }
        if self.scales.len() < rows {
            self.scales.resize(rows, 0.0);
        }
        let bytes: &mut [u8] = block_bytes(&mut self.rows[..blocks]);
        (
            &mut bytes[..(rows + SPARE_ROWS) * row_bytes],
            &mut self.scales[..rows],
        )
    }
}

/// The bytes of `blocks`.
fn block_bytes(blocks: &mut [Block]) -> &mut [u8] {
    let len = blocks.len() * 64;
    // SAFETY: `Block` is `repr(C)` around `[u8; 64]`, with no padding (its size is its
    // alignment, 64), so `blocks` is `len` initialised bytes, borrowed mutably for the result's
    // lifetime.
    unsafe { std::slice::from_raw_parts_mut(blocks.as_mut_ptr().cast::<u8>(), len) }
}

/// A `k × n` matrix (the transposed weights of a dense layer) quantized to int8 per column and
/// packed for the VNNI kernel.
pub(crate) struct Int8Matrix {
    k: usize,
    n: usize,
    /// Groups of 4 rows, a multiple of 16 (the padding zero).
    groups: usize,
    /// `⌈n / NR⌉` panels of `groups × 2` blocks.
    panels: Vec<Block>,
    /// Per column (padded to whole panels with zeros): the weight scale `s_c`.
    scale: Vec<f32>,
    /// Per column (padded likewise): `128 · Σ_k q[k][c]`, the excess of the unsigned
    /// activations.
    excess: Vec<i32>,
    /// The outlier input channels (rows of `Wᵀ`), ascending: left out of the quantization of
    /// both operands and multiplied in `f32` instead.
    outliers: Vec<usize>,
    /// Their rows of `Wᵀ` in `f32`, per panel: `panels × outliers × NR`, zero-padded.
    outlier_rows: Vec<f32>,
    /// Per 16 input channels, the mask of those that are quantized (not outliers).
    keep: Vec<u16>,
    /// Multiplied on AMX tiles rather than with VNNI (same layout, same results).
    amx: bool,
}

impl Int8Matrix {
    /// Quantizes the row-major `k × n` matrix `weight_t` column by column: `s_c = max_k
    /// |w[k][c]| / 127` and `q = round(w / s_c)`, over the rows that are not `outliers`; those
    /// (input channels whose activations run far larger than the others') stay `f32`.
    ///
    /// # Panics
    /// If `weight_t.len() != k·n` or an outlier is not below `k`.
    ///
    /// `amx` picks the AMX kernel over the VNNI one for the products; they give the same
    /// results. Only pass `true` where [`amx_int8_ready`].
    pub(crate) fn quantize(
        weight_t: &[f32],
        k: usize,
        n: usize,
        outliers: &[usize],
        amx: bool,
    ) -> Self {
        assert_eq!(weight_t.len(), k * n, "weight matrix is not {k} × {n}");
        let mut outliers = outliers.to_vec();
        outliers.sort_unstable();
        outliers.dedup();
        assert!(
            outliers.iter().all(|&o| o < k),
            "outlier channel out of range"
        );
        let mut keep = vec![0u16; k.div_ceil(16)];
        for r in 0..k {
            if outliers.binary_search(&r).is_err() {
                keep[r / 16] |= 1 << (r % 16);
            }
        }
        let kept = |r: usize| keep[r / 16] & (1 << (r % 16)) != 0;
        let panels = n.div_ceil(NR);
        // Whole AMX tile rows of 64 bytes (16 groups): the AMX kernel reads the depth in those
        // steps; the zero weights of the padding add nothing in either kernel.
        let groups = k.div_ceil(64) * 16;
        let mut scale = vec![0.0f32; panels * NR];
        let mut excess = vec![0i32; panels * NR];
        let mut q = vec![0i8; k * n];
        for c in 0..n {
            let amax = (0..k)
                .filter(|&r| kept(r))
                .fold(0.0f32, |m, r| m.max(weight_t[r * n + c].abs()));
            let s = amax / 127.0;
            scale[c] = s;
            let mut sum = 0i32;
            if s > 0.0 {
                for r in (0..k).filter(|&r| kept(r)) {
                    let v = (weight_t[r * n + c] / s).round().clamp(-127.0, 127.0) as i8;
                    q[r * n + c] = v;
                    sum += i32::from(v);
                }
            }
            excess[c] = 128 * sum;
        }
        let mut blocks = vec![ZERO_BLOCK; panels * groups * 2];
        for (j, panel) in blocks.chunks_exact_mut(groups * 2).enumerate() {
            for (g, pair) in panel.chunks_exact_mut(2).enumerate() {
                for (v, block) in pair.iter_mut().enumerate() {
                    for lane in 0..16 {
                        let c = j * NR + 16 * v + lane;
                        if c >= n {
                            break;
                        }
                        for t in 0..4 {
                            let r = 4 * g + t;
                            if r < k {
                                block.0[4 * lane + t] = q[r * n + c] as u8;
                            }
                        }
                    }
                }
            }
        }
        let mut outlier_rows = vec![0.0f32; panels * outliers.len() * NR];
        for (j, panel) in outlier_rows
            .chunks_exact_mut((outliers.len() * NR).max(1))
            .enumerate()
        {
            for (row, &o) in panel.chunks_exact_mut(NR).zip(&outliers) {
                let width = NR.min(n - j * NR);
                row[..width].copy_from_slice(&weight_t[o * n + j * NR..][..width]);
            }
        }
        Int8Matrix {
            k,
            n,
            groups,
            panels: blocks,
            scale,
            excess,
            outliers,
            outlier_rows,
            keep,
            amx,
        }
    }

    /// Number of input rows.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Number of output columns.
    pub(crate) fn n(&self) -> usize {
        self.n
    }
}

/// A `k × n` matrix rounded to bfloat16 and packed for the AVX-512 BF16 kernel.
pub(crate) struct Bf16Matrix {
    k: usize,
    n: usize,
    /// Pairs of rows (the last zero-padded).
    pairs: usize,
    /// `⌈n / NR⌉` panels of `pairs × 2` blocks.
    panels: Vec<Block>,
}

impl Bf16Matrix {
    /// Rounds the row-major `k × n` matrix `weight_t` to bfloat16 and packs it.
    ///
    /// # Panics
    /// If `weight_t.len() != k·n`.
    pub(crate) fn round(weight_t: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(weight_t.len(), k * n, "weight matrix is not {k} × {n}");
        let panels = n.div_ceil(NR);
        let pairs = k.div_ceil(2);
        let mut blocks = vec![ZERO_BLOCK; panels * pairs * 2];
        for (j, panel) in blocks.chunks_exact_mut(pairs * 2).enumerate() {
            for (p, two) in panel.chunks_exact_mut(2).enumerate() {
                for (v, block) in two.iter_mut().enumerate() {
                    for lane in 0..16 {
                        let c = j * NR + 16 * v + lane;
                        if c >= n {
                            break;
                        }
                        for t in 0..2 {
                            let r = 2 * p + t;
                            if r < k {
                                let b = to_bf16(weight_t[r * n + c]).to_le_bytes();
                                block.0[4 * lane + 2 * t..][..2].copy_from_slice(&b);
                            }
                        }
                    }
                }
            }
        }
        Bf16Matrix {
            k,
            n,
            pairs,
            panels: blocks,
        }
    }

    /// Number of input rows.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Number of output columns.
    pub(crate) fn n(&self) -> usize {
        self.n
    }
}

/// `x` rounded to the nearest bfloat16, ties to even (what `vcvtneps2bf16` does); NaN stays NaN.
pub(crate) fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// The `f32` value of the bfloat16 `b`.
#[cfg(test)]
pub(crate) fn from_bf16(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::amx_int8_ready;

/// Without x86-64 there is no AMX.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn amx_int8_ready() -> bool {
    false
}

/// `dst = x · W` in int8 for the row-major `rows × k` matrix `x` and `rows × n` output `dst`,
/// on the current rayon pool when `threads > 1`.
///
/// # Panics
/// If `x` or `dst` is too short, or the CPU lacks AVX-512 F, BW, VL or VNNI (a bug: the
/// matrix is only built after checking).
pub(crate) fn matmul_int8(
    x: &[f32],
    rows: usize,
    w: &Int8Matrix,
    dst: &mut [f32],
    threads: usize,
    staging: &mut Staging,
) {
    #[cfg(target_arch = "x86_64")]
    {
        x86::int8(x, rows, w, dst, threads, staging);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, rows, w, dst, threads, staging);
        unreachable!("int8 matrices are only built on x86-64 with AVX-512 VNNI. This is a bug.");
    }
}

/// `dst = x · W` in bf16, as [`matmul_int8`].
///
/// # Panics
/// As [`matmul_int8`], for AVX-512 F, BW, VL and BF16.
pub(crate) fn matmul_bf16(
    x: &[f32],
    rows: usize,
    w: &Bf16Matrix,
    dst: &mut [f32],
    threads: usize,
    staging: &mut Staging,
) {
    #[cfg(target_arch = "x86_64")]
    {
        x86::bf16(x, rows, w, dst, threads, staging);
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, rows, w, dst, threads, staging);
        unreachable!("bf16 matrices are only built on x86-64 with AVX-512 BF16. This is a bug.");
    }
}

/// The tiles of a `rows × panels` output, cut into tasks for `threads` threads: by column
/// panels first, so that at small batches each thread streams only its share of the weights,
/// then by rows when there are too few panels to keep a few tasks per thread. Runs
/// `block(row range, panel range)` for each task, in parallel when the work is large enough.
fn for_each_block(
    rows: usize,
    panels: usize,
    work: usize,
    threads: usize,
    block: impl Fn(std::ops::Range<usize>, std::ops::Range<usize>) + Sync,
) {
    if threads <= 1 || work < MIN_PARALLEL_WORK {
        block(0..rows, 0..panels);
        return;
    }
    let row_blocks = rows.div_ceil(MR);
    let want = 3 * threads;
    let col_groups = panels.min(want);
    let row_groups = want.div_ceil(col_groups).min(row_blocks);
    let split = |len: usize, parts: usize, i: usize| len * i / parts..len * (i + 1) / parts;
    (0..col_groups * row_groups).into_par_iter().for_each(|t| {
        let (cg, rg) = (t / row_groups, t % row_groups);
        let p = split(panels, col_groups, cg);
        let r = split(row_blocks, row_groups, rg);
        block(r.start * MR..(r.end * MR).min(rows), p);
    });
}

/// Walks the tiles of one task: M blocks of [`MC`] rows, panel by panel, `MR` rows at a time,
/// calling `tile(first row, rows, panel, first tile of its panel in this M block)`.
fn for_each_tile(
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    mut tile: impl FnMut(usize, usize, usize, bool),
) {
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + MC).min(rows.end);
        for j in panels.clone() {
            let mut i = r0;
            while i < r1 {
                let m = MR.min(r1 - i);
                tile(i, m, j, i == r0);
                i += m;
            }
        }
        r0 = r1;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX-512 kernels. Every `unsafe fn` here needs the features its `target_feature`
    //! names; the only ways in are [`int8`] and [`bf16`], which check for them.

    use std::arch::x86_64::*;

    use rayon::prelude::*;

    use super::{Bf16Matrix, Block, Int8Matrix, MR, NR, Staging, for_each_block, for_each_tile};

    /// Raw pointers shared by the tasks of one call: they read `a`, `b` and the per-column
    /// vectors, and write disjoint tiles of `c`.
    #[derive(Clone, Copy)]
    struct Ptrs {
        a: *const u8,
        scales: *const f32,
        b: *const Block,
        c: *mut f32,
        col_scale: *const f32,
        col_excess: *const i32,
    }

    // SAFETY: the tasks only read through the `const` pointers, and write disjoint tiles of
    // `c` (the blocks of `for_each_block` partition the output).
    unsafe impl Send for Ptrs {}
    // SAFETY: as above.
    unsafe impl Sync for Ptrs {}

    impl Ptrs {
        /// Returns the pointers; a method, so that closures capture the whole `Ptrs`.
        fn get(self) -> Self {
            self
        }
    }

    fn check_shapes(x: &[f32], rows: usize, k: usize, n: usize, dst: &[f32]) {
        assert!(
            x.len() >= rows * k && dst.len() >= rows * n,
            "matmul operands do not match their shapes. This is a bug."
        );
    }

    /// See [`super::matmul_int8`].
    pub(super) fn int8(
        x: &[f32],
        rows: usize,
        w: &Int8Matrix,
        dst: &mut [f32],
        threads: usize,
        staging: &mut Staging,
    ) {
        let (k, n) = (w.k, w.n);
        check_shapes(x, rows, k, n, dst);
        assert!(
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni"),
            "the int8 kernel needs AVX-512 F, BW, VL and VNNI. This is a bug."
        );
        if rows == 0 || n == 0 {
            return;
        }
        let row_bytes = 4 * w.groups;
        let (act, scales) = staging.reserve(rows, row_bytes);
        let keep = &w.keep[..];
        act[..rows * row_bytes]
            .par_chunks_mut(row_bytes)
            .zip(scales.par_iter_mut())
            .zip(x.par_chunks(k.max(1)))
            .with_min_len(16)
            .for_each(|((out, scale), x)| {
                // SAFETY: the features were checked above; `out` is `4·⌈k/4⌉ ≥ k` bytes and
                // `keep` has a mask per 16 of the `k` values of `x`.
                *scale = unsafe { quantize_row(&x[..k], keep, out) };
            });
        let p = Ptrs {
            a: act.as_ptr(),
            scales: scales.as_ptr(),
            b: w.panels.as_ptr(),
            c: dst.as_mut_ptr(),
            col_scale: w.scale.as_ptr(),
            col_excess: w.excess.as_ptr(),
        };
        let outliers = Outliers {
            x: x.as_ptr(),
            ldx: k,
            channels: w.outliers.as_ptr(),
            count: w.outliers.len(),
            rows: w.outlier_rows.as_ptr(),
        };
        let groups = w.groups;
        let panels = n.div_ceil(NR);
        if w.amx {
            assert!(amx_int8_ready(), "AMX kernel without AMX. This is a bug.");
            for_each_block(rows, panels, rows * k * n, threads, move |rows, panels| {
                // SAFETY: AMX is permitted (asserted just above) and the AVX-512 features were
                // checked at the top. `rows` lies inside the converted rows, which have
                // `SPARE_ROWS` readable rows after them, so whole 32-row strips from any row of
                // `rows` stay inside the buffer; the scales, panels, column vectors and `dst`
                // are as for the VNNI kernel below.
                unsafe { amx::block(rows, panels, groups, row_bytes, n, p.get(), outliers) };
            });
            return;
        }
        for_each_block(rows, panels, rows * k * n, threads, move |rows, panels| {
            let p = p.get();
            let end = panels.end;
            for_each_tile(rows, panels, |i, m, j, first| {
                let last = j + 1 == end;
                // SAFETY: the features were checked above. Row `i..i + m` lies inside the
                // `rows` converted rows of `row_bytes` bytes and scales, and of `dst` (checked);
                // panel `j < ⌈n/NR⌉` is `2·groups` blocks at `j·2·groups`, and its `NR` column
                // scales and excesses are inside the padded vectors; the tile writes columns
                // `j·NR..` of rows `i..i + m`, at most `n − j·NR` of them. The prefetch address
                // is only a hint.
                unsafe {
                    let b = p.b.add(j * 2 * groups);
                    let next = if first && !last {
                        b.wrapping_add(2 * groups)
                    } else {
                        std::ptr::null()
                    };
                    int8_tile(
                        m,
                        groups,
                        p.a.add(i * row_bytes),
                        row_bytes,
                        p.scales.add(i),
                        b,
                        p.col_scale.add(j * NR),
                        p.col_excess.add(j * NR),
                        p.c.add(i * n + j * NR),
                        n,
                        NR.min(n - j * NR),
                        next,
                        outliers.at(i, j),
                    );
                }
            });
        });
    }

    /// The outlier channels of an int8 call: the `f32` inputs they are read from and their
    /// rows of `Wᵀ`. Shared like [`Ptrs`].
    #[derive(Clone, Copy)]
    struct Outliers {
        x: *const f32,
        ldx: usize,
        channels: *const usize,
        count: usize,
        rows: *const f32,
    }

    // SAFETY: read-only pointers into buffers that outlive the call.
    unsafe impl Send for Outliers {}
    // SAFETY: as above.
    unsafe impl Sync for Outliers {}

    impl Outliers {
        /// The same, for the tile of rows from `i` in panel `j`.
        fn at(self, i: usize, j: usize) -> Self {
            Outliers {
                x: self.x.wrapping_add(i * self.ldx),
                rows: self.rows.wrapping_add(j * self.count * NR),
                ..self
            }
        }
    }

    /// See [`super::matmul_bf16`].
    pub(super) fn bf16(
        x: &[f32],
        rows: usize,
        w: &Bf16Matrix,
        dst: &mut [f32],
        threads: usize,
        staging: &mut Staging,
    ) {
        let (k, n) = (w.k, w.n);
        check_shapes(x, rows, k, n, dst);
        assert!(
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512bf16"),
            "the bf16 kernel needs AVX-512 F, BW, VL and BF16. This is a bug."
        );
        if rows == 0 || n == 0 {
            return;
        }
        let row_bytes = 4 * w.pairs;
        let (act, _) = staging.reserve(rows, row_bytes);
        act.par_chunks_mut(row_bytes)
            .zip(x.par_chunks(k.max(1)))
            .with_min_len(16)
            .for_each(|(out, x)| {
                // SAFETY: the features were checked above; `out` is `2·⌈k/2⌉ ≥ k` values.
                unsafe { round_row(x, out) };
            });
        let p = Ptrs {
            a: act.as_ptr(),
            scales: std::ptr::null(),
            b: w.panels.as_ptr(),
            c: dst.as_mut_ptr(),
            col_scale: std::ptr::null(),
            col_excess: std::ptr::null(),
        };
        let pairs = w.pairs;
        let panels = n.div_ceil(NR);
        for_each_block(rows, panels, rows * k * n, threads, move |rows, panels| {
            let p = p.get();
            let end = panels.end;
            for_each_tile(rows, panels, |i, m, j, first| {
                let last = j + 1 == end;
                // SAFETY: as in `int8`, with `2·pairs` blocks per panel.
                unsafe {
                    let b = p.b.add(j * 2 * pairs);
                    let next = if first && !last {
                        b.wrapping_add(2 * pairs)
                    } else {
                        std::ptr::null()
                    };
                    bf16_tile(
                        m,
                        pairs,
                        p.a.add(i * row_bytes),
                        row_bytes,
                        b,
                        p.c.add(i * n + j * NR),
                        n,
                        NR.min(n - j * NR),
                        next,
                    );
                }
            });
        });
    }

    /// The mask of the first `len ≤ 16` lanes.
    fn mask16(len: usize) -> __mmask16 {
        if len >= 16 {
            !0
        } else {
            ((1u32 << len) - 1) as __mmask16
        }
    }

    /// Quantizes the row `x` to `out` (`4·⌈len/4⌉` bytes): `q + 128` with `q = round(x / s)`,
    /// `s = max |x| / 127`, over the values `keep` marks (one mask per 16 values); the others,
    /// and the padding, are 128 (zero). Returns `s` (0 for a zero row).
    ///
    /// # Safety
    /// AVX-512 F, BW and VL; `out.len() ≥ x.len()`, `keep.len() ≥ ⌈x.len() / 16⌉`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn quantize_row(x: &[f32], keep: &[u16], out: &mut [u8]) -> f32 {
        debug_assert!(out.len() >= x.len() && keep.len() >= x.len().div_ceil(16));
        let mut amax = _mm512_setzero_ps();
        for (chunk, &keep) in x.chunks(16).zip(keep) {
            // SAFETY: the masked lanes are inside `chunk`; the others are not read.
            let v = unsafe { _mm512_maskz_loadu_ps(mask16(chunk.len()) & keep, chunk.as_ptr()) };
            amax = _mm512_max_ps(amax, _mm512_abs_ps(v));
        }
        let amax = _mm512_reduce_max_ps(amax);
        out[x.len()..].fill(128);
        if amax == 0.0 {
            out[..x.len()].fill(128);
            return 0.0;
        }
        let inv = _mm512_set1_ps(127.0 / amax);
        let bias = _mm512_set1_epi32(128);
        for ((chunk, out), &keep) in x.chunks(16).zip(out.chunks_mut(16)).zip(keep) {
            let mask = mask16(chunk.len());
            // SAFETY: as above; the store writes the first `chunk.len() ≤ out.len()` bytes.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask & keep, chunk.as_ptr());
                // Rounds to nearest even (the default MXCSR mode); |x·inv| ≤ 127.
                let q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v, inv)), bias);
                let bytes = _mm512_cvtusepi32_epi8(q);
                _mm_mask_storeu_epi8(out.as_mut_ptr().cast(), mask, bytes);
            }
        }
        amax / 127.0
    }

    /// Rounds the row `x` to bfloat16 into `out` (`2·⌈len/2⌉` values, as bytes), zero in the
    /// padding.
    ///
    /// # Safety
    /// AVX-512 F, BW, VL and BF16; `out.len() ≥ 2·x.len()`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    pub(super) unsafe fn round_row(x: &[f32], out: &mut [u8]) {
        debug_assert!(out.len() >= 2 * x.len());
        out[2 * x.len()..].fill(0);
        for (chunk, out) in x.chunks(16).zip(out.chunks_mut(32)) {
            let mask = mask16(chunk.len());
            // SAFETY: the masked lanes are inside `chunk`; the store writes `chunk.len()`
            // 16-bit values, `2·chunk.len() ≤ out.len()` bytes.
            unsafe {
                let v = _mm512_maskz_loadu_ps(mask, chunk.as_ptr());
                let b: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_mask_storeu_epi16(out.as_mut_ptr().cast(), mask, b);
            }
        }
    }

    /// [`int8_tile_m`] for a run-time row count `m` in `1..=MR`.
    ///
    /// # Safety
    /// As for [`int8_tile_m`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn int8_tile(
        m: usize,
        groups: usize,
        a: *const u8,
        lda: usize,
        row_scale: *const f32,
        b: *const Block,
        col_scale: *const f32,
        col_excess: *const i32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        prefetch: *const Block,
        outliers: Outliers,
    ) {
        macro_rules! rows {
            ($($m:literal)*) => {
                match m {
                    $($m => int8_tile_m::<$m>(
                        groups, a, lda, row_scale, b, col_scale, col_excess, c, ldc, cols,
                        prefetch, outliers,
                    ),)*
                    _ => unreachable!("tile rows {m} outside 1..={MR}"),
                }
            };
        }
        // SAFETY: the caller's contract, with `M = m`.
        unsafe { rows!(1 2 3 4 5 6 7 8 9 10 11 12) }
    }

    /// The int8 micro-kernel: `C[0..M, 0..cols] = s_r·s_c·(A·B − excess_c) + X_o·W_o` for `M`
    /// rows of unsigned activations `A` (`4·groups` bytes each) and one panel `B`, the `M × 32`
    /// `i32` tile in registers over the whole depth, plus the outlier channels' products in
    /// `f32`. Unless `prefetch` is null, it also asks for the next panel (`2·groups` blocks
    /// from there) to be brought into cache.
    ///
    /// # Safety
    /// AVX-512 F, BW, VL and VNNI; `a` addresses `M` rows (stride `lda`) of `4·groups`
    /// readable bytes, `row_scale` `M` values, `b` `2·groups` blocks, `col_scale` and
    /// `col_excess` 32 values each, `c` `M` rows (stride `ldc`) of `cols ≤ 32` writable values;
    /// `outliers.x` `M` rows (stride `ldx`) holding every column `outliers.channels` names
    /// (`count` of them), `outliers.rows` `count × 32` values.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
    unsafe fn int8_tile_m<const M: usize>(
        groups: usize,
        a: *const u8,
        lda: usize,
        row_scale: *const f32,
        b: *const Block,
        col_scale: *const f32,
        col_excess: *const i32,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        prefetch: *const Block,
        outliers: Outliers,
    ) {
        let mut acc = [[_mm512_setzero_si512(); 2]; M];
        for g in 0..groups {
            // SAFETY: blocks `2g` and `2g + 1 < 2·groups` of the panel, aligned.
            let (w0, w1) = unsafe {
                (
                    _mm512_load_si512(b.add(2 * g).cast()),
                    _mm512_load_si512(b.add(2 * g + 1).cast()),
                )
            };
            if !prefetch.is_null() {
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(2 * g).cast());
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(2 * g + 1).cast());
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: bytes `4g..4g + 4` of row `i < M`, inside its `4·groups`.
                let quad = unsafe { a.add(i * lda + 4 * g).cast::<i32>().read_unaligned() };
                let xi = _mm512_set1_epi32(quad);
                acc[0] = _mm512_dpbusd_epi32(acc[0], xi, w0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], xi, w1);
            }
        }
        // Scaled to f32 in place, then the outlier channels added: outliers outermost, so that
        // each one's weights are loaded once per tile and its inputs once per row.
        let mut y = [[_mm512_setzero_ps(); 2]; M];
        for v in 0..2 {
            // SAFETY: lanes `16v..16v + 16` of the 32 (padded) column values.
            let (excess, scale) = unsafe {
                (
                    _mm512_loadu_si512(col_excess.add(16 * v).cast()),
                    _mm512_loadu_ps(col_scale.add(16 * v)),
                )
            };
            for (i, (y, acc)) in y.iter_mut().zip(&acc).enumerate() {
                // SAFETY: row `i < M` of `row_scale`.
                let sr = unsafe { *row_scale.add(i) };
                let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[v], excess));
                y[v] = _mm512_mul_ps(_mm512_mul_ps(sum, scale), _mm512_set1_ps(sr));
            }
        }
        for o in 0..outliers.count {
            // SAFETY: outlier `o < count` names a column of `x`, and its row of
            // `outliers.rows` holds 32 values.
            let (channel, w0, w1) = unsafe {
                (
                    *outliers.channels.add(o),
                    _mm512_loadu_ps(outliers.rows.add(o * NR)),
                    _mm512_loadu_ps(outliers.rows.add(o * NR + 16)),
                )
            };
            for (i, y) in y.iter_mut().enumerate() {
                // SAFETY: row `i < M` of `outliers.x`, at a column it holds.
                let xo = _mm512_set1_ps(unsafe { *outliers.x.add(i * outliers.ldx + channel) });
                y[0] = _mm512_fmadd_ps(xo, w0, y[0]);
                y[1] = _mm512_fmadd_ps(xo, w1, y[1]);
            }
        }
        for v in 0..2 {
            let lanes = cols.saturating_sub(16 * v).min(16);
            if lanes == 0 {
                break;
            }
            for (i, y) in y.iter().enumerate() {
                // SAFETY: row `i < M` of `c`, columns `16v..16v + lanes` within `cols`;
                // masked-off lanes are neither read nor written.
                unsafe { _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), mask16(lanes), y[v]) };
            }
        }
    }

    /// [`bf16_tile_m`] for a run-time row count `m` in `1..=MR`.
    ///
    /// # Safety
    /// As for [`bf16_tile_m`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn bf16_tile(
        m: usize,
        pairs: usize,
        a: *const u8,
        lda: usize,
        b: *const Block,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        prefetch: *const Block,
    ) {
        macro_rules! rows {
            ($($m:literal)*) => {
                match m {
                    $($m => bf16_tile_m::<$m>(pairs, a, lda, b, c, ldc, cols, prefetch),)*
                    _ => unreachable!("tile rows {m} outside 1..={MR}"),
                }
            };
        }
        // SAFETY: the caller's contract, with `M = m`.
        unsafe { rows!(1 2 3 4 5 6 7 8 9 10 11 12) }
    }

    /// The bf16 micro-kernel: `C[0..M, 0..cols] = A·B` for `M` rows of bfloat16 activations
    /// (`pairs` pairs each) and one panel `B`, the `M × 32` `f32` tile in registers over the
    /// whole depth; `prefetch` as for [`int8_tile_m`].
    ///
    /// # Safety
    /// AVX-512 F, BW, VL and BF16; `a` addresses `M` rows (stride `lda` bytes) of `4·pairs`
    /// readable bytes, `b` `2·pairs` blocks, `c` `M` rows (stride `ldc`) of `cols ≤ 32`
    /// writable values.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
    unsafe fn bf16_tile_m<const M: usize>(
        pairs: usize,
        a: *const u8,
        lda: usize,
        b: *const Block,
        c: *mut f32,
        ldc: usize,
        cols: usize,
        prefetch: *const Block,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        for p in 0..pairs {
            // SAFETY: blocks `2p` and `2p + 1 < 2·pairs` of the panel, aligned; the bits are
            // 32 bfloat16 values each, which is what `__m512bh` holds.
            let (w0, w1): (__m512bh, __m512bh) = unsafe {
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_load_si512(
                        b.add(2 * p).cast(),
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_load_si512(
                        b.add(2 * p + 1).cast(),
                    )),
                )
            };
            if !prefetch.is_null() {
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(2 * p).cast());
                _mm_prefetch::<_MM_HINT_T0>(prefetch.wrapping_add(2 * p + 1).cast());
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                // SAFETY: bytes `4p..4p + 4` of row `i < M` (one pair of bfloat16), inside its
                // `4·pairs`; the broadcast bits are 32 bfloat16 values.
                let xi: __m512bh = unsafe {
                    let pair = a.add(i * lda + 4 * p).cast::<i32>().read_unaligned();
                    std::mem::transmute(_mm512_set1_epi32(pair))
                };
                acc[0] = _mm512_dpbf16_ps(acc[0], xi, w0);
                acc[1] = _mm512_dpbf16_ps(acc[1], xi, w1);
            }
        }
        for v in 0..2 {
            let lanes = cols.saturating_sub(16 * v).min(16);
            if lanes == 0 {
                break;
            }
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: row `i < M` of `c`, columns `16v..16v + lanes` within `cols`;
                // masked-off lanes are neither read nor written.
                unsafe { _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), mask16(lanes), acc[v]) };
            }
        }
    }

    /// [`MR`] is what the tile dispatchers cover.
    const _: () = assert!(MR == 12);

    /// Whether this process may run the AMX int8 kernel: the CPU has AMX-TILE and AMX-INT8,
    /// and Linux granted the process the tile data state (asked for once; the kernel keeps
    /// that 8 KB state off for processes that do not ask).
    pub(crate) fn amx_int8_ready() -> bool {
        static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *READY.get_or_init(|| {
            let edx = __cpuid_count(7, 0).edx;
            let (tile, int8) = (edx & (1 << 24) != 0, edx & (1 << 25) != 0);
            tile && int8 && cfg!(target_os = "linux") && amx::request_tile_data()
        })
    }

    mod amx {
        //! The int8 product on AMX tiles. Rust has no stable AMX intrinsics, so the few
        //! instructions are written as inline assembly; the tile registers are not visible to
        //! the compiler, and only this module's functions touch them, each configuring them
        //! first and releasing them before it returns.
        //!
        //! One step multiplies a 32 × 64 block of activations (two A tiles of 16 rows) by a
        //! 64 × 32 block of weights (two B tiles, one per half panel: 16 groups of 4 rows by 16
        //! columns, which is exactly 16 blocks of the VNNI layout at a stride of two blocks)
        //! into four 16 × 16 `i32` tiles, 65,536 multiply-adds in four `tdpbusd`. The tiles are
        //! then stored and scaled by the same AVX-512 epilogue arithmetic as the VNNI kernel.

        use std::arch::asm;
        use std::arch::x86_64::*;

        use super::super::{AMX_ROWS, NR};
        use super::{Outliers, Ptrs, mask16};

        /// `ARCH_REQ_XCOMP_PERM`: asks Linux for an extended state component.
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        /// The AMX tile data state component.
        const XFEATURE_XTILEDATA: i64 = 18;
        /// `arch_prctl`'s system call number on x86-64.
        const SYS_ARCH_PRCTL: i64 = 158;

        /// Asks Linux to let this process use the AMX tile data; whether it agreed.
        pub(super) fn request_tile_data() -> bool {
            let ret: i64;
            // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` only changes which
            // register state the kernel saves for this process; it reads and writes no memory
            // of ours. `syscall` clobbers rcx and r11, declared.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret == 0
        }

        /// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
        #[repr(C, align(64))]
        struct TileConfig([u8; 64]);

        impl TileConfig {
            fn new() -> Self {
                let mut c = [0u8; 64];
                c[0] = 1;
                for t in 0..8 {
                    c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                    c[48 + t] = 16;
                }
                TileConfig(c)
            }
        }

        /// A strip's products: 32 rows of 32 `i32` columns.
        #[repr(C, align(64))]
        struct Products([[i32; NR]; AMX_ROWS]);

        /// Computes the output rows `rows` × columns of panels `panels`, 32 rows at a time.
        ///
        /// # Safety
        /// AMX tile data permitted ([`request_tile_data`]); AVX-512 F, BW and VL. `p.a` holds
        /// rows of `row_bytes = 4·groups` bytes (`groups` a multiple of 16) up to 32 rows past
        /// `rows.end`; `p.scales` covers `rows`; the panels `panels` of `p.b` hold `2·groups`
        /// blocks each; the column vectors 32 values per panel; `p.c` is `? × n` covering
        /// `rows`; `outliers` as for the VNNI tile.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        pub(super) unsafe fn block(
            rows: std::ops::Range<usize>,
            panels: std::ops::Range<usize>,
            groups: usize,
            row_bytes: usize,
            n: usize,
            p: Ptrs,
            outliers: Outliers,
        ) {
            let config = TileConfig::new();
            let mut out = Products([[0; NR]; AMX_ROWS]);
            // SAFETY: a valid palette-1 configuration, 64 bytes.
            unsafe { asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack)) };
            let mut i0 = rows.start;
            while i0 < rows.end {
                let m = AMX_ROWS.min(rows.end - i0);
                for j in panels.clone() {
                    // SAFETY: rows `i0..i0 + 32` of the activations are readable (the
                    // contract), each step reads 64 bytes of them at `64s < row_bytes`; the
                    // weights of panel `j` are `2·groups` blocks of 64 bytes, and step `s`
                    // reads 16 of them at a stride of 2 from block `32s` (+1 for the second
                    // half), all inside. The tiles are configured above.
                    unsafe {
                        let a0 = p.a.add(i0 * row_bytes);
                        let a1 = a0.add(16 * row_bytes);
                        let b = p.b.add(j * 2 * groups).cast::<u8>();
                        asm!(
                            "tilezero tmm0",
                            "tilezero tmm1",
                            "tilezero tmm2",
                            "tilezero tmm3",
                            options(nostack, nomem)
                        );
                        for s in 0..groups / 16 {
                            let b0 = b.add(s * 32 * 64);
                            asm!(
                                "tileloadd tmm4, [{a0} + {sa}*1]",
                                "tileloadd tmm5, [{a1} + {sa}*1]",
                                "tileloadd tmm6, [{b0} + {sb}*1]",
                                "tileloadd tmm7, [{b1} + {sb}*1]",
                                "tdpbusd tmm0, tmm4, tmm6",
                                "tdpbusd tmm1, tmm4, tmm7",
                                "tdpbusd tmm2, tmm5, tmm6",
                                "tdpbusd tmm3, tmm5, tmm7",
                                a0 = in(reg) a0.add(64 * s),
                                a1 = in(reg) a1.add(64 * s),
                                b0 = in(reg) b0,
                                b1 = in(reg) b0.add(64),
                                sa = in(reg) row_bytes,
                                sb = in(reg) 128usize,
                                options(nostack, readonly),
                            );
                        }
                        let c = out.0.as_mut_ptr().cast::<u8>();
                        asm!(
                            "tilestored [{c0} + {s}*1], tmm0",
                            "tilestored [{c1} + {s}*1], tmm1",
                            "tilestored [{c2} + {s}*1], tmm2",
                            "tilestored [{c3} + {s}*1], tmm3",
                            c0 = in(reg) c,
                            c1 = in(reg) c.add(64),
                            c2 = in(reg) c.add(16 * 128),
                            c3 = in(reg) c.add(16 * 128 + 64),
                            s = in(reg) 128usize,
                            options(nostack),
                        );
                    }
                    let cols = NR.min(n - j * NR);
                    // SAFETY: as the contract says for row `i0` on and panel `j`; `m` rows.
                    unsafe {
                        epilogue(
                            &out,
                            m,
                            cols,
                            p.scales.add(i0),
                            p.col_scale.add(j * NR),
                            p.col_excess.add(j * NR),
                            outliers.at(i0, j),
                            p.c.add(i0 * n + j * NR),
                            n,
                        );
                    }
                }
                i0 += m;
            }
            // SAFETY: releases the tiles configured above.
            unsafe { asm!("tilerelease", options(nostack, nomem)) };
        }

        /// Scales `m` rows of the products into `c` as the VNNI tile's epilogue does, in the
        /// same order of operations, so that both kernels give the same bits.
        ///
        /// # Safety
        /// AVX-512 F, BW and VL; as for the VNNI tile's `row_scale`, `col_scale`, `col_excess`,
        /// `outliers` and `c`, for `m` rows.
        #[allow(clippy::too_many_arguments)]
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn epilogue(
            out: &Products,
            m: usize,
            cols: usize,
            row_scale: *const f32,
            col_scale: *const f32,
            col_excess: *const i32,
            outliers: Outliers,
            c: *mut f32,
            ldc: usize,
        ) {
            for (i, row) in out.0.iter().enumerate().take(m) {
                for v in 0..2 {
                    let lanes = cols.saturating_sub(16 * v).min(16);
                    if lanes == 0 {
                        break;
                    }
                    // SAFETY: the contract; lanes `16v..16v + 16` of the padded column
                    // vectors and of `row`; masked-off lanes of `c` are not written.
                    unsafe {
                        let acc = _mm512_loadu_si512(row[16 * v..].as_ptr().cast());
                        let excess = _mm512_loadu_si512(col_excess.add(16 * v).cast());
                        let scale = _mm512_loadu_ps(col_scale.add(16 * v));
                        let sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, excess));
                        let sr = _mm512_set1_ps(*row_scale.add(i));
                        let mut y = _mm512_mul_ps(_mm512_mul_ps(sum, scale), sr);
                        for o in 0..outliers.count {
                            let channel = *outliers.channels.add(o);
                            let wo = _mm512_loadu_ps(outliers.rows.add(o * NR + 16 * v));
                            let xo = *outliers.x.add(i * outliers.ldx + channel);
                            y = _mm512_fmadd_ps(_mm512_set1_ps(xo), wo, y);
                        }
                        _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), mask16(lanes), y);
                    }
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    //! Each kernel against the exact product (in `f64`) within an error bound derived from its
    //! number format, on shapes with row, column and depth tails, on one and two threads; and
    //! the int8 kernel against a scalar model of its integer arithmetic, which it must match
    //! bit for bit (integer sums are exact, and the scaling runs the same `f32` operations).

    use proptest::prelude::*;

    use super::*;
    use crate::embed::precision::CpuFeatures;

    fn values(len: usize, seed: u64) -> Vec<f32> {
        // A SplitMix64 stream mapped to [-1, 1), with a few larger outliers as real activations
        // have (quantization error scales with each row's largest value).
        let mut s = seed;
        (0..len)
            .map(|i| {
                s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = s;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                let u = (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
                if i % 97 == 13 { 8.0 * u } else { u }
            })
            .collect()
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// The bound on |int8 result − exact| for row `x` and column `w`: with `s_x = max|x|/127`
    /// and `s_w = max|w|/127`, each value is within half a step of its quantized value, so
    /// `|x·w − x̂·ŵ| ≤ Σ |e_x||ŵ| + |x̂||e_w| + |e_x||e_w| ≤ s_x/2·Σ|w| + s_w/2·Σ|x| + ¾·k·s_x·s_w`;
    /// the `f32` scaling adds a few roundings of the result, bounded by `2⁻²⁰·Σ|x||w|`.
    fn int8_bound(x: &[f64], w: &[f64], outliers: &[usize]) -> f64 {
        let sum_xw: f64 = x.iter().zip(w).map(|(a, b)| (a * b).abs()).sum();
        // Outlier channels are multiplied in f32: only their roundings, in the last term.
        let kept = |v: &[f64]| -> Vec<f64> {
            v.iter()
                .enumerate()
                .filter(|(i, _)| !outliers.contains(i))
                .map(|(_, &v)| v)
                .collect()
        };
        let (x, w) = (&kept(x)[..], &kept(w)[..]);
        let k = x.len() as f64;
        let sx = x.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 127.0;
        let sw = w.iter().fold(0.0f64, |m, v| m.max(v.abs())) / 127.0;
        let sum_x: f64 = x.iter().map(|v| v.abs()).sum();
        let sum_w: f64 = w.iter().map(|v| v.abs()).sum();
        // The steps and the divisions by them are computed in f32: within 2⁻¹³ relative.
        (sx / 2.0 * sum_w + sw / 2.0 * sum_x + 0.75 * k * sx * sw) * (1.0 + 2f64.powi(-13))
            + sum_xw * 2f64.powi(-20)
    }

    /// The bound on |bf16 result − exact|: each operand is within `u = 2⁻⁸` (relative) of its
    /// bfloat16 rounding, so each product within `(2u + u²)·|x w|`; products of bfloat16 are
    /// exact in `f32`, and summing `k` of them in `f32` adds at most `k·2⁻²³·Σ|x̂ ŵ|` (two
    /// roundings per pair, generously).
    fn bf16_bound(x: &[f64], w: &[f64], _outliers: &[usize]) -> f64 {
        let u = 2f64.powi(-8);
        let k = x.len() as f64;
        let sum_xw: f64 = x.iter().zip(w).map(|(a, b)| (a * b).abs()).sum();
        (2.0 * u + u * u) * sum_xw + k * 2f64.powi(-23) * sum_xw * (1.0 + 2.0 * u)
    }

    fn exact_and_bounds(
        x: &[f32],
        w: &[f32],
        rows: usize,
        k: usize,
        n: usize,
        bound: fn(&[f64], &[f64], &[usize]) -> f64,
        outliers: &[usize],
    ) -> (Vec<f64>, Vec<f64>) {
        let mut exact = vec![0.0; rows * n];
        let mut bounds = vec![0.0; rows * n];
        for c in 0..n {
            let col: Vec<f64> = (0..k).map(|r| f64::from(w[r * n + c])).collect();
            for r in 0..rows {
                let row: Vec<f64> = x[r * k..][..k].iter().map(|&v| f64::from(v)).collect();
                exact[r * n + c] = row.iter().zip(&col).map(|(a, b)| a * b).sum();
                bounds[r * n + c] = bound(&row, &col, outliers);
            }
        }
        (exact, bounds)
    }

    fn assert_within(got: &[f32], exact: &[f64], bounds: &[f64], what: &str) {
        for (i, ((&g, &e), &b)) in got.iter().zip(exact).zip(bounds).enumerate() {
            let err = (f64::from(g) - e).abs();
            assert!(
                err <= b,
                "{what}: element {i}: got {g}, exact {e}, error {err:e} over the bound {b:e}"
            );
        }
    }

    /// The int8 kernel's result computed in scalar code from the same quantized activations
    /// (and the `f32` inputs `x`, for the outlier channels).
    fn int8_model(x: &[f32], act: &[u8], scales: &[f32], w: &Int8Matrix, rows: usize) -> Vec<f32> {
        let (n, row_bytes) = (w.n, 4 * w.groups);
        let mut out = vec![0.0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                let (j, lane) = (c / NR, c % NR);
                let mut acc = 0i32;
                for g in 0..w.groups {
                    let block = &w.panels[(j * w.groups + g) * 2 + lane / 16].0;
                    for t in 0..4 {
                        let q = i32::from(block[4 * (lane % 16) + t] as i8);
                        acc += i32::from(act[r * row_bytes + 4 * g + t]) * q;
                    }
                }
                let sum = (acc - w.excess[c]) as f32;
                let mut y = sum * w.scale[c] * scales[r];
                for (o, &channel) in w.outliers.iter().enumerate() {
                    let wo = w.outlier_rows[(j * w.outliers.len() + o) * NR + lane];
                    y = x[r * w.k + channel].mul_add(wo, y);
                }
                out[r * n + c] = y;
            }
        }
        out
    }

    fn check(rows: usize, k: usize, n: usize, seed: u64) {
        let features = CpuFeatures::detect();
        let base = features.avx512f && features.avx512bw && features.avx512vl;
        let x = values(rows * k, seed);
        let w = values(k * n, seed ^ 0xabcdef);
        // Every third channel an outlier when there are few, else a scattered handful.
        let outliers: Vec<usize> = (0..k)
            .filter(|c| c % 3 == 1 && (k < 12 || c % 29 == 1))
            .collect();
        let kernels: &[bool] = if amx_int8_ready() {
            &[false, true]
        } else {
            &[false]
        };
        for (outliers, &amx) in [&[][..], &outliers[..]]
            .into_iter()
            .flat_map(|o| kernels.iter().map(move |a| (o, a)))
        {
            if !(base && features.avx512vnni) {
                break;
            }
            let m = Int8Matrix::quantize(&w, k, n, outliers, amx);
            let (exact, bounds) = exact_and_bounds(&x, &w, rows, k, n, int8_bound, outliers);
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; rows * n];
                let mut staging = Staging::default();
                pool(threads).install(|| {
                    matmul_int8(&x, rows, &m, &mut got, threads, &mut staging);
                });
                let what = format!(
                    "int8 ({}) {rows}×{k}×{n} with {} outliers on {threads} threads",
                    if amx { "amx" } else { "vnni" },
                    outliers.len()
                );
                assert_within(&got, &exact, &bounds, &what);
                let (act, scales) = staging.reserve(rows, 4 * m.groups);
                let model = int8_model(&x, act, scales, &m, rows);
                let same = got
                    .iter()
                    .zip(&model)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{what}: differs from the scalar model of its arithmetic"
                );
            }
        }
        if base && features.avx512bf16 {
            let m = Bf16Matrix::round(&w, k, n);
            let (exact, bounds) = exact_and_bounds(&x, &w, rows, k, n, bf16_bound, &[]);
            for threads in [1, 2] {
                let mut got = vec![f32::NAN; rows * n];
                let mut staging = Staging::default();
                pool(threads).install(|| {
                    matmul_bf16(&x, rows, &m, &mut got, threads, &mut staging);
                });
                let what = format!("bf16 {rows}×{k}×{n} on {threads} threads");
                assert_within(&got, &exact, &bounds, &what);
            }
        }
    }

    #[test]
    fn every_row_column_and_depth_tail() {
        for rows in 1..=13 {
            check(rows, 7, 33, rows as u64);
        }
        for k in [1, 2, 3, 4, 5, 63, 64, 65] {
            check(5, k, 17, k as u64);
        }
        for n in [1, 15, 16, 17, 31, 32, 33, 65] {
            check(3, 9, n, n as u64);
        }
    }

    #[test]
    fn encoder_shapes_and_parallel_splits() {
        // The layers of a 384-wide model, at a short query's and a batch's rows (the larger
        // ones cross the parallel threshold and the M blocks).
        check(14, 384, 1152, 1);
        check(131, 384, 1536, 2);
        check(250, 1536, 384, 3);
    }

    #[test]
    fn zero_rows_and_columns_scale_to_zero() {
        let features = CpuFeatures::detect();
        if !(features.avx512f && features.avx512bw && features.avx512vl && features.avx512vnni) {
            return;
        }
        let (rows, k, n) = (3, 10, 20);
        let mut x = values(rows * k, 9);
        x[k..2 * k].fill(0.0);
        let mut w = values(k * n, 10);
        for r in 0..k {
            w[r * n + 4] = 0.0;
        }
        let m = Int8Matrix::quantize(&w, k, n, &[], amx_int8_ready());
        let mut got = vec![f32::NAN; rows * n];
        matmul_int8(&x, rows, &m, &mut got, 1, &mut Staging::default());
        assert!(got[n..2 * n].iter().all(|&v| v == 0.0), "zero row");
        assert!((0..rows).all(|r| got[r * n + 4] == 0.0), "zero column");
        assert!(got.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties go to the even one, 1.
        assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), 0x3f80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: to 1 + 2⁻⁶ (even).
        assert_eq!(
            from_bf16(to_bf16(1.0 + 3.0 * 2f32.powi(-8))),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        for v in values(1000, 5) {
            let r = from_bf16(to_bf16(v));
            assert!((r - v).abs() <= v.abs() * 2f32.powi(-8), "{v} → {r}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn random_shapes(rows in 1usize..40, k in 1usize..300, n in 1usize..100, seed: u64) {
            check(rows, k, n, seed);
        }
    }
}
