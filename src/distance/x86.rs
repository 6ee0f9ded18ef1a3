//! x86-64 kernels: AVX-512F and AVX2+FMA, and the integer `u8 × i8` inner product on AVX-512
//! VNNI, AVX-512BW and AVX2.
//!
//! Each kernel is a `#[target_feature]` `unsafe fn`: calling one on a CPU without the feature is
//! undefined behaviour, and that is its only safety requirement (slice lengths are handled
//! inside, so mismatched lengths cannot read out of bounds). The safe entry points that
//! [`Kernels`] hands out are private to this file and reachable only through
//! [`avx512f_kernels`], [`avx2_fma_kernels`] and [`int8_dot_kernels`], which check the CPU
//! first; that is the invariant every `SAFETY` comment below relies on.
//!
//! The kernels keep four independent vector accumulators so that consecutive fused
//! multiply-adds do not wait on each other's latency; AVX-512 finishes a ragged tail with one
//! masked load (masked-off lanes are never read, so no fault past the end), AVX2 with a short
//! scalar loop.
//!
//! The integer kernels never use `vpmaddubsw`: it adds two `u8 × i8` products with `i16`
//! saturation, and `2 · 255 · 127` does not fit. VNNI's `vpdpbusd` adds four products straight
//! into an `i32` lane without saturating; without VNNI both operands are widened to `i16` and
//! multiplied with `vpmaddwd`, whose pair sums (at most `2 · 32640` in magnitude) always fit.
//! Every lane addition wraps like the scalar oracle's, so the results are bit-identical.
//!
//! [`prefetch_read`] is here too, for the same reason: it is the one other intrinsic the crate
//! calls, and this file is where `unsafe` lives.

use std::arch::x86_64::*;

use super::{Int8DotKernel, Isa, Kernels, finish_cosine, scalar};

/// The AVX-512F kernels, when this CPU has AVX-512F. Their integer inner product is the best
/// this CPU has, which on some AVX-512F CPUs (Knights Landing) is not an AVX-512 one at all.
pub(super) fn avx512f_kernels() -> Option<Kernels> {
    let (int8_name, dot_u8_i8) = int8_dot_kernels()
        .next()
        .unwrap_or(("scalar", scalar::dot_u8_i8));
    is_x86_feature_detected!("avx512f").then_some(Kernels {
        isa: Isa::Avx512F,
        dot: avx512_dot_entry,
        l2_squared: avx512_l2_entry,
        cosine: avx512_cosine_entry,
        dot_batch: avx512_dot_batch_entry,
        l2_squared_batch: avx512_l2_batch_entry,
        dot_u8_i8,
        int8_name,
    })
}

/// The AVX2+FMA kernels, when this CPU has both AVX2 and FMA.
pub(super) fn avx2_fma_kernels() -> Option<Kernels> {
    (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Kernels {
        isa: Isa::Avx2Fma,
        dot: avx2_dot_entry,
        l2_squared: avx2_l2_entry,
        cosine: avx2_cosine_entry,
        dot_batch: avx2_dot_batch_entry,
        l2_squared_batch: avx2_l2_batch_entry,
        dot_u8_i8: avx2_dot_u8_i8_entry,
        int8_name: "avx2",
    })
}

/// The integer inner product kernels this CPU can run, most capable first.
pub(super) fn int8_dot_kernels() -> impl Iterator<Item = Int8DotKernel> {
    let avx512bw = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw");
    let vnni = avx512bw && is_x86_feature_detected!("avx512vnni");
    let avx2 = is_x86_feature_detected!("avx2");
    let all: [(bool, Int8DotKernel); 3] = [
        (vnni, ("avx512vnni", vnni_dot_u8_i8_entry)),
        (avx512bw, ("avx512bw", avx512bw_dot_u8_i8_entry)),
        (avx2, ("avx2", avx2_dot_u8_i8_entry)),
    ];
    all.into_iter()
        .filter_map(|(present, k)| present.then_some(k))
}

// ---------------------------------------------------------------------------------------------
// Safe entry points. Private: only the constructors above, after feature detection, expose them.
// ---------------------------------------------------------------------------------------------

fn avx512_dot_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: slices differ in length");
    // SAFETY: reachable only through `avx512f_kernels`, which checked for AVX-512F.
    unsafe { dot_avx512(a, b) }
}

fn avx512_l2_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_squared: slices differ in length");
    // SAFETY: reachable only through `avx512f_kernels`, which checked for AVX-512F.
    unsafe { l2_squared_avx512(a, b) }
}

fn avx512_cosine_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine: slices differ in length");
    // SAFETY: reachable only through `avx512f_kernels`, which checked for AVX-512F.
    unsafe { cosine_avx512(a, b) }
}

fn avx512_dot_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `avx512f_kernels`, which checked for AVX-512F.
    unsafe { dot_batch_avx512(query, rows, out) }
}

fn avx512_l2_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `avx512f_kernels`, which checked for AVX-512F.
    unsafe { l2_squared_batch_avx512(query, rows, out) }
}

fn avx2_dot_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: slices differ in length");
    // SAFETY: reachable only through `avx2_fma_kernels`, which checked for AVX2 and FMA.
    unsafe { dot_avx2(a, b) }
}

fn avx2_l2_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_squared: slices differ in length");
    // SAFETY: reachable only through `avx2_fma_kernels`, which checked for AVX2 and FMA.
    unsafe { l2_squared_avx2(a, b) }
}

fn avx2_cosine_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine: slices differ in length");
    // SAFETY: reachable only through `avx2_fma_kernels`, which checked for AVX2 and FMA.
    unsafe { cosine_avx2(a, b) }
}

fn avx2_dot_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `avx2_fma_kernels`, which checked for AVX2 and FMA.
    unsafe { dot_batch_avx2(query, rows, out) }
}

fn avx2_l2_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `avx2_fma_kernels`, which checked for AVX2 and FMA.
    unsafe { l2_squared_batch_avx2(query, rows, out) }
}

fn vnni_dot_u8_i8_entry(a: &[u8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_u8_i8: slices differ in length");
    // SAFETY: reachable only through `int8_dot_kernels` (and so `avx512f_kernels`), which
    // checked for AVX-512F, AVX-512BW and AVX-512 VNNI.
    unsafe { dot_u8_i8_avx512vnni(a, b) }
}

fn avx512bw_dot_u8_i8_entry(a: &[u8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_u8_i8: slices differ in length");
    // SAFETY: reachable only through `int8_dot_kernels` (and so `avx512f_kernels`), which
    // checked for AVX-512F and AVX-512BW.
    unsafe { dot_u8_i8_avx512bw(a, b) }
}

fn avx2_dot_u8_i8_entry(a: &[u8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_u8_i8: slices differ in length");
    // SAFETY: reachable only through `int8_dot_kernels` and `avx2_fma_kernels` (and so
    // `avx512f_kernels`), which checked for AVX2.
    unsafe { dot_u8_i8_avx2(a, b) }
}

// ---------------------------------------------------------------------------------------------
// Prefetch
// ---------------------------------------------------------------------------------------------

/// Requests the cache lines of the `bytes` bytes at `start`, one `prefetcht0` per 64 bytes.
/// Needs no feature check: SSE is part of the x86-64 baseline.
#[inline(always)]
pub(super) fn prefetch_read(start: *const u8, bytes: usize) {
    #[target_feature(enable = "sse")]
    fn lines(start: *const u8, bytes: usize) {
        for offset in (0..bytes).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset).cast());
        }
    }
    // SAFETY: SSE is part of the x86-64 baseline, so every x86-64 CPU has it. A prefetch never
    // faults, whatever the address, and reads nothing the program can observe; the addresses
    // are formed with wrapping arithmetic, so forming them is not undefined behaviour either.
    unsafe { lines(start, bytes) }
}

// ---------------------------------------------------------------------------------------------
// AVX-512F
// ---------------------------------------------------------------------------------------------

/// Mask selecting the first `n` of 16 lanes, `n < 16`.
#[inline(always)]
fn tail_mask(n: usize) -> __mmask16 {
    debug_assert!(n < 16);
    ((1u32 << n) - 1) as __mmask16
}

/// Inner product over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·l + 16 ≤ i + 64 ≤ n, so all 16 lanes lie inside both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            *acc = _mm512_fmadd_ps(x, y, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        let (x, y) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        acc[0] = _mm512_fmadd_ps(x, y, acc[0]);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask enables only lanes i..n, inside both slices; masked-off lanes are
        // neither read nor able to fault.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc[1] = _mm512_fmadd_ps(x, y, acc[1]);
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum)
}

/// Squared Euclidean distance over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn l2_squared_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·l + 16 ≤ i + 64 ≤ n, so all 16 lanes lie inside both slices.
            let d = unsafe {
                _mm512_sub_ps(
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            *acc = _mm512_fmadd_ps(d, d, *acc);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        let d = unsafe { _mm512_sub_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        acc[0] = _mm512_fmadd_ps(d, d, acc[0]);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask enables only lanes i..n, inside both slices; masked-off lanes are
        // neither read nor able to fault (they load as zero on both sides, so d = 0 there).
        let d = unsafe {
            _mm512_sub_ps(
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        acc[1] = _mm512_fmadd_ps(d, d, acc[1]);
    }
    let sum = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(sum)
}

/// Cosine similarity in one pass (a·b, a·a and b·b together).
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn cosine_avx512(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let zero = _mm512_setzero_ps();
    let (mut ab, mut aa, mut bb) = ([zero; 2], [zero; 2], [zero; 2]);
    let mut i = 0;
    while i + 32 <= n {
        for l in 0..2 {
            // SAFETY: i + 16·l + 16 ≤ i + 32 ≤ n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(pa.add(i + 16 * l)),
                    _mm512_loadu_ps(pb.add(i + 16 * l)),
                )
            };
            ab[l] = _mm512_fmadd_ps(x, y, ab[l]);
            aa[l] = _mm512_fmadd_ps(x, x, aa[l]);
            bb[l] = _mm512_fmadd_ps(y, y, bb[l]);
        }
        i += 32;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        let (x, y) = unsafe { (_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i))) };
        ab[0] = _mm512_fmadd_ps(x, y, ab[0]);
        aa[0] = _mm512_fmadd_ps(x, x, aa[0]);
        bb[0] = _mm512_fmadd_ps(y, y, bb[0]);
        i += 16;
    }
    if i < n {
        let m = tail_mask(n - i);
        // SAFETY: the mask enables only lanes i..n, inside both slices; masked-off lanes are
        // neither read nor able to fault.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_ps(m, pa.add(i)),
                _mm512_maskz_loadu_ps(m, pb.add(i)),
            )
        };
        ab[1] = _mm512_fmadd_ps(x, y, ab[1]);
        aa[1] = _mm512_fmadd_ps(x, x, aa[1]);
        bb[1] = _mm512_fmadd_ps(y, y, bb[1]);
    }
    finish_cosine(
        _mm512_reduce_add_ps(_mm512_add_ps(ab[0], ab[1])),
        _mm512_reduce_add_ps(_mm512_add_ps(aa[0], aa[1])),
        _mm512_reduce_add_ps(_mm512_add_ps(bb[0], bb[1])),
    )
}

/// `out[i] = dot(query, row i)` for the `out.len()` rows of `query.len()` values in `rows`.
///
/// # Safety
/// The CPU must support AVX-512F. (Rows past what `rows` holds are not read; their outputs are
/// left as they are.)
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn dot_batch_avx512(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with AVX-512F, as its own contract requires.
        *o = unsafe { dot_avx512(query, row) };
    }
}

/// `out[i] = l2_squared(query, row i)` for the `out.len()` rows of `query.len()` values in
/// `rows`.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn l2_squared_batch_avx512(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with AVX-512F, as its own contract requires.
        *o = unsafe { l2_squared_avx512(query, row) };
    }
}

// ---------------------------------------------------------------------------------------------
// Integer inner product: AVX-512 VNNI, AVX-512BW, AVX2
// ---------------------------------------------------------------------------------------------

/// Mask selecting the first `n` of 64 byte lanes, `n < 64`.
#[inline(always)]
fn byte_tail_mask(n: usize) -> __mmask64 {
    debug_assert!(n < 64);
    (1u64 << n) - 1
}

/// Integer inner product `Σ aᵢ·bᵢ` over the first `min(a.len(), b.len())` bytes, with
/// `vpdpbusd`: each `i32` lane gains the four `u8 × i8` products of its bytes, exactly.
///
/// # Safety
/// The CPU must support AVX-512F, AVX-512BW (the masked byte load) and AVX-512 VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
pub(crate) unsafe fn dot_u8_i8_avx512vnni(a: &[u8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + 256 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 64·l + 64 ≤ i + 256 ≤ n, so all 64 bytes lie inside both slices.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_si512(pa.add(i + 64 * l).cast()),
                    _mm512_loadu_si512(pb.add(i + 64 * l).cast()),
                )
            };
            *acc = _mm512_dpbusd_epi32(*acc, x, y);
        }
        i += 256;
    }
    // Two accumulators here, not one: 384 bytes (a common dimension) leaves 128 after the loop
    // above, and two dependent `vpdpbusd` in a row would wait on each other's latency.
    while i + 128 <= n {
        for (l, acc) in acc[..2].iter_mut().enumerate() {
            // SAFETY: i + 64·l + 64 ≤ i + 128 ≤ n.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_si512(pa.add(i + 64 * l).cast()),
                    _mm512_loadu_si512(pb.add(i + 64 * l).cast()),
                )
            };
            *acc = _mm512_dpbusd_epi32(*acc, x, y);
        }
        i += 128;
    }
    if i + 64 <= n {
        // SAFETY: i + 64 ≤ n.
        let (x, y) = unsafe {
            (
                _mm512_loadu_si512(pa.add(i).cast()),
                _mm512_loadu_si512(pb.add(i).cast()),
            )
        };
        acc[2] = _mm512_dpbusd_epi32(acc[2], x, y);
        i += 64;
    }
    if i < n {
        let m = byte_tail_mask(n - i);
        // SAFETY: the mask enables only bytes i..n, inside both slices; masked-off bytes are
        // neither read nor able to fault, and load as zero, adding nothing.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_epi8(m, pa.add(i).cast()),
                _mm512_maskz_loadu_epi8(m, pb.add(i)),
            )
        };
        acc[3] = _mm512_dpbusd_epi32(acc[3], x, y);
    }
    let sum = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(sum)
}

/// `Σ xᵢ·yᵢ` of 32 `u8` at `pa` and 32 `i8` at `pb`, in 16 `i32` lanes: both sides widened to
/// `i16`, then `vpmaddwd` (exact: a pair sums to at most `2 · 32640` in magnitude).
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW, and 32 bytes must be readable at `pa` and `pb`.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn madd32_avx512bw(pa: *const u8, pb: *const i8) -> __m512i {
    // SAFETY: the caller guarantees 32 readable bytes at each pointer.
    let (x, y) = unsafe { (_mm256_loadu_si256(pa.cast()), _mm256_loadu_si256(pb.cast())) };
    _mm512_madd_epi16(_mm512_cvtepu8_epi16(x), _mm512_cvtepi8_epi16(y))
}

/// Integer inner product `Σ aᵢ·bᵢ` over the first `min(a.len(), b.len())` bytes, for AVX-512
/// CPUs without VNNI.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
pub(crate) unsafe fn dot_u8_i8_avx512bw(a: &[u8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut i = 0;
    while i + 128 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32·l + 32 ≤ i + 128 ≤ n, so all 32 bytes lie inside both slices.
            let p = unsafe { madd32_avx512bw(pa.add(i + 32 * l), pb.add(i + 32 * l)) };
            *acc = _mm512_add_epi32(*acc, p);
        }
        i += 128;
    }
    while i + 32 <= n {
        // SAFETY: i + 32 ≤ n.
        let p = unsafe { madd32_avx512bw(pa.add(i), pb.add(i)) };
        acc[0] = _mm512_add_epi32(acc[0], p);
        i += 32;
    }
    if i < n {
        // Fewer than 32 bytes: one masked load each, of which the low half is widened.
        let m = byte_tail_mask(n - i);
        // SAFETY: the mask enables only bytes i..n, inside both slices; masked-off bytes are
        // neither read nor able to fault, and load as zero, adding nothing.
        let (x, y) = unsafe {
            (
                _mm512_maskz_loadu_epi8(m, pa.add(i).cast()),
                _mm512_maskz_loadu_epi8(m, pb.add(i)),
            )
        };
        let p = _mm512_madd_epi16(
            _mm512_cvtepu8_epi16(_mm512_castsi512_si256(x)),
            _mm512_cvtepi8_epi16(_mm512_castsi512_si256(y)),
        );
        acc[1] = _mm512_add_epi32(acc[1], p);
    }
    let sum = _mm512_add_epi32(
        _mm512_add_epi32(acc[0], acc[1]),
        _mm512_add_epi32(acc[2], acc[3]),
    );
    _mm512_reduce_add_epi32(sum)
}

/// `Σ xᵢ·yᵢ` of 16 `u8` at `pa` and 16 `i8` at `pb`, in 8 `i32` lanes: both sides widened to
/// `i16`, then `vpmaddwd` (exact: a pair sums to at most `2 · 32640` in magnitude).
///
/// # Safety
/// The CPU must support AVX2, and 16 bytes must be readable at `pa` and `pb`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn madd16_avx2(pa: *const u8, pb: *const i8) -> __m256i {
    // SAFETY: the caller guarantees 16 readable bytes at each pointer.
    let (x, y) = unsafe { (_mm_loadu_si128(pa.cast()), _mm_loadu_si128(pb.cast())) };
    _mm256_madd_epi16(_mm256_cvtepu8_epi16(x), _mm256_cvtepi8_epi16(y))
}

/// Integer inner product `Σ aᵢ·bᵢ` over the first `min(a.len(), b.len())` bytes.
///
/// # Safety
/// The CPU must support AVX2.
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn dot_u8_i8_avx2(a: &[u8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_si256(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 16·l + 16 ≤ i + 64 ≤ n, so all 16 bytes lie inside both slices.
            let p = unsafe { madd16_avx2(pa.add(i + 16 * l), pb.add(i + 16 * l)) };
            *acc = _mm256_add_epi32(*acc, p);
        }
        i += 64;
    }
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n.
        let p = unsafe { madd16_avx2(pa.add(i), pb.add(i)) };
        acc[0] = _mm256_add_epi32(acc[0], p);
        i += 16;
    }
    let mut tail = 0i32;
    for j in i..n {
        tail = tail.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
    }
    let sum = _mm256_add_epi32(
        _mm256_add_epi32(acc[0], acc[1]),
        _mm256_add_epi32(acc[2], acc[3]),
    );
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(sum),
        _mm256_extracti128_si256::<1>(sum),
    );
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s).wrapping_add(tail)
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------

/// Sum of the eight lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Inner product over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8·l + 8 ≤ i + 32 ≤ n, so all 8 lanes lie inside both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let mut tail = 0.0f32;
    for j in i..n {
        tail += a[j] * b[j];
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum256(sum) + tail
}

/// Squared Euclidean distance over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn l2_squared_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8·l + 8 ≤ i + 32 ≤ n, so all 8 lanes lie inside both slices.
            let d = unsafe {
                _mm256_sub_ps(
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            *acc = _mm256_fmadd_ps(d, d, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n.
        let d = unsafe { _mm256_sub_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(d, d, acc[0]);
        i += 8;
    }
    let mut tail = 0.0f32;
    for j in i..n {
        let d = a[j] - b[j];
        tail += d * d;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    hsum256(sum) + tail
}

/// Cosine similarity in one pass (a·b, a·a and b·b together).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn cosine_avx2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let zero = _mm256_setzero_ps();
    let (mut ab, mut aa, mut bb) = ([zero; 2], [zero; 2], [zero; 2]);
    let mut i = 0;
    while i + 16 <= n {
        for l in 0..2 {
            // SAFETY: i + 8·l + 8 ≤ i + 16 ≤ n.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * l)),
                    _mm256_loadu_ps(pb.add(i + 8 * l)),
                )
            };
            ab[l] = _mm256_fmadd_ps(x, y, ab[l]);
            aa[l] = _mm256_fmadd_ps(x, x, aa[l]);
            bb[l] = _mm256_fmadd_ps(y, y, bb[l]);
        }
        i += 16;
    }
    let (mut tab, mut taa, mut tbb) = (0.0f32, 0.0f32, 0.0f32);
    for j in i..n {
        let (x, y) = (a[j], b[j]);
        tab += x * y;
        taa += x * x;
        tbb += y * y;
    }
    finish_cosine(
        hsum256(_mm256_add_ps(ab[0], ab[1])) + tab,
        hsum256(_mm256_add_ps(aa[0], aa[1])) + taa,
        hsum256(_mm256_add_ps(bb[0], bb[1])) + tbb,
    )
}

/// `out[i] = dot(query, row i)` for the `out.len()` rows of `query.len()` values in `rows`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn dot_batch_avx2(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with AVX2 and FMA, as its own contract requires.
        *o = unsafe { dot_avx2(query, row) };
    }
}

/// `out[i] = l2_squared(query, row i)` for the `out.len()` rows of `query.len()` values in
/// `rows`.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn l2_squared_batch_avx2(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with AVX2 and FMA, as its own contract requires.
        *o = unsafe { l2_squared_avx2(query, row) };
    }
}
