//! aarch64 kernels: Advanced SIMD (NEON).
//!
//! Each kernel is a `#[target_feature(enable = "neon")]` `unsafe fn`: calling one on a CPU
//! without NEON is undefined behaviour, and that is its only safety requirement (slice lengths
//! are handled inside, so mismatched lengths cannot read out of bounds). The safe entry points
//! that [`Kernels`] hands out are private to this file and reachable only through
//! [`neon_kernels`], which checks the CPU first; every `SAFETY` comment below relies on that.
//!
//! Four independent 4-lane accumulators hide the fused multiply-add latency; a ragged tail is
//! finished with a short scalar loop.
//!
//! The integer `u8 × i8` inner product widens both operands to `i16` and multiply-accumulates
//! into `i32` lanes (`smlal`), exact and wrapping like the scalar oracle. The dot-product
//! extensions are no help: `sdot`/`udot` want both operands of one signedness, and the mixed
//! `usdot` needs the I8MM extension, which many deployed cores lack.

use std::arch::aarch64::*;

use super::{Int8DotKernel, Isa, Kernels, finish_cosine};

/// The NEON kernels, when this CPU has Advanced SIMD (every Linux aarch64 CPU does, but the
/// check keeps the invariant local).
pub(super) fn neon_kernels() -> Option<Kernels> {
    std::arch::is_aarch64_feature_detected!("neon").then_some(Kernels {
        isa: Isa::Neon,
        dot: neon_dot_entry,
        l2_squared: neon_l2_entry,
        cosine: neon_cosine_entry,
        dot_batch: neon_dot_batch_entry,
        l2_squared_batch: neon_l2_batch_entry,
        dot_u8_i8: neon_dot_u8_i8_entry,
        int8_name: "neon",
    })
}

/// The integer inner product kernels this CPU can run: the NEON one, when it has NEON.
pub(super) fn int8_dot_kernels() -> impl Iterator<Item = Int8DotKernel> {
    let neon: Option<Int8DotKernel> =
        std::arch::is_aarch64_feature_detected!("neon").then_some(("neon", neon_dot_u8_i8_entry));
    neon.into_iter()
}

fn neon_dot_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: slices differ in length");
    // SAFETY: reachable only through `neon_kernels`, which checked for NEON.
    unsafe { dot_neon(a, b) }
}

fn neon_l2_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_squared: slices differ in length");
    // SAFETY: reachable only through `neon_kernels`, which checked for NEON.
    unsafe { l2_squared_neon(a, b) }
}

fn neon_cosine_entry(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "cosine: slices differ in length");
    // SAFETY: reachable only through `neon_kernels`, which checked for NEON.
    unsafe { cosine_neon(a, b) }
}

fn neon_dot_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `neon_kernels`, which checked for NEON.
    unsafe { dot_batch_neon(query, rows, out) }
}

fn neon_l2_batch_entry(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    // SAFETY: reachable only through `neon_kernels`, which checked for NEON.
    unsafe { l2_squared_batch_neon(query, rows, out) }
}

fn neon_dot_u8_i8_entry(a: &[u8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_u8_i8: slices differ in length");
    // SAFETY: reachable only through `neon_kernels` and `int8_dot_kernels`, which checked for
    // NEON.
    unsafe { dot_u8_i8_neon(a, b) }
}

/// Inner product over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn dot_neon(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4·l + 4 ≤ i + 16 ≤ n, so all 4 lanes lie inside both slices.
            let (x, y) = unsafe { (vld1q_f32(pa.add(i + 4 * l)), vld1q_f32(pb.add(i + 4 * l))) };
            *acc = vfmaq_f32(*acc, x, y);
        }
        i += 16;
    }
    while i + 4 <= n {
        // SAFETY: i + 4 ≤ n.
        let (x, y) = unsafe { (vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        acc[0] = vfmaq_f32(acc[0], x, y);
        i += 4;
    }
    let mut tail = 0.0f32;
    for j in i..n {
        tail += a[j] * b[j];
    }
    let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(sum) + tail
}

/// Squared Euclidean distance over the first `min(a.len(), b.len())` components.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn l2_squared_neon(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_f32(0.0); 4];
    let mut i = 0;
    while i + 16 <= n {
        for (l, acc) in acc.iter_mut().enumerate() {
            // SAFETY: i + 4·l + 4 ≤ i + 16 ≤ n, so all 4 lanes lie inside both slices.
            let d =
                unsafe { vsubq_f32(vld1q_f32(pa.add(i + 4 * l)), vld1q_f32(pb.add(i + 4 * l))) };
            *acc = vfmaq_f32(*acc, d, d);
        }
        i += 16;
    }
    while i + 4 <= n {
        // SAFETY: i + 4 ≤ n.
        let d = unsafe { vsubq_f32(vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        acc[0] = vfmaq_f32(acc[0], d, d);
        i += 4;
    }
    let mut tail = 0.0f32;
    for j in i..n {
        let d = a[j] - b[j];
        tail += d * d;
    }
    let sum = vaddq_f32(vaddq_f32(acc[0], acc[1]), vaddq_f32(acc[2], acc[3]));
    vaddvq_f32(sum) + tail
}

/// Cosine similarity in one pass (a·b, a·a and b·b together).
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn cosine_neon(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let zero = vdupq_n_f32(0.0);
    let (mut ab, mut aa, mut bb) = ([zero; 2], [zero; 2], [zero; 2]);
    let mut i = 0;
    while i + 8 <= n {
        for l in 0..2 {
            // SAFETY: i + 4·l + 4 ≤ i + 8 ≤ n.
            let (x, y) = unsafe { (vld1q_f32(pa.add(i + 4 * l)), vld1q_f32(pb.add(i + 4 * l))) };
            ab[l] = vfmaq_f32(ab[l], x, y);
            aa[l] = vfmaq_f32(aa[l], x, x);
            bb[l] = vfmaq_f32(bb[l], y, y);
        }
        i += 8;
    }
    let (mut tab, mut taa, mut tbb) = (0.0f32, 0.0f32, 0.0f32);
    for j in i..n {
        let (x, y) = (a[j], b[j]);
        tab += x * y;
        taa += x * x;
        tbb += y * y;
    }
    finish_cosine(
        vaddvq_f32(vaddq_f32(ab[0], ab[1])) + tab,
        vaddvq_f32(vaddq_f32(aa[0], aa[1])) + taa,
        vaddvq_f32(vaddq_f32(bb[0], bb[1])) + tbb,
    )
}

/// `out[i] = dot(query, row i)` for the `out.len()` rows of `query.len()` values in `rows`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn dot_batch_neon(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with NEON, as its own contract requires.
        *o = unsafe { dot_neon(query, row) };
    }
}

/// `out[i] = l2_squared(query, row i)` for the `out.len()` rows of `query.len()` values in
/// `rows`.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
pub(crate) unsafe fn l2_squared_batch_neon(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        // SAFETY: this function runs with NEON, as its own contract requires.
        *o = unsafe { l2_squared_neon(query, row) };
    }
}

/// Integer inner product `Σ aᵢ·bᵢ` over the first `min(a.len(), b.len())` bytes.
///
/// # Safety
/// The CPU must support NEON.
#[target_feature(enable = "neon")]
#[inline]
pub(crate) unsafe fn dot_u8_i8_neon(a: &[u8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [vdupq_n_s32(0); 4];
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: i + 16 ≤ n, so all 16 bytes lie inside both slices.
        let (x, y) = unsafe { (vld1q_u8(pa.add(i)), vld1q_s8(pb.add(i))) };
        // A `u8` widened to `u16` is at most 255, so reading the lanes as `i16` keeps the value.
        let (xl, xh) = (
            vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(x))),
            vreinterpretq_s16_u16(vmovl_high_u8(x)),
        );
        let (yl, yh) = (vmovl_s8(vget_low_s8(y)), vmovl_high_s8(y));
        // Each lane gains an exact `i16 × i16` product; bytes 0–3, 4–7, 8–11, 12–15 each go to
        // their own accumulator, so the four chains are independent.
        acc[0] = vmlal_s16(acc[0], vget_low_s16(xl), vget_low_s16(yl));
        acc[1] = vmlal_high_s16(acc[1], xl, yl);
        acc[2] = vmlal_s16(acc[2], vget_low_s16(xh), vget_low_s16(yh));
        acc[3] = vmlal_high_s16(acc[3], xh, yh);
        i += 16;
    }
    let mut tail = 0i32;
    for j in i..n {
        tail = tail.wrapping_add(i32::from(a[j]) * i32::from(b[j]));
    }
    let sum = vaddq_s32(vaddq_s32(acc[0], acc[1]), vaddq_s32(acc[2], acc[3]));
    vaddvq_s32(sum).wrapping_add(tail)
}
