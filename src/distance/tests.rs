//! Every vectorised kernel against the scalar oracle.
//!
//! # Tolerance
//! Two kernels add the same products in different orders (and with or without fused
//! multiply-add), so neither is "right"; both are within the classic bound of the exact sum.
//! For any summation order, computing `Σ xᵢ·yᵢ` over `n` terms in binary32 gives
//! `|fl(Σ) − Σ| ≤ γₙ · Σ|xᵢ·yᵢ|` with `γₙ = n·u / (1 − n·u)` and `u = 2⁻²⁴` (Higham, *Accuracy
//! and Stability of Numerical Algorithms*, §3.1: at most `n − 1` additions plus one product
//! rounding touch each term). Two such results differ by at most twice that, which is the bound
//! checked here ([`sum_tolerance`]), plus `n · 2⁻¹⁴⁹` for products that round into the subnormal
//! range.
//!
//! * dot: `2·γₙ·Σ|aᵢbᵢ|`.
//! * squared L2: every kernel computes `dᵢ = aᵢ − bᵢ` with one identical IEEE subtraction, so
//!   they differ only in summing `dᵢ²`: `2·γₙ·Σdᵢ²`.
//! * cosine: `a·b` is off by at most `γₙ·Σ|aᵢbᵢ| ≤ γₙ·‖a‖‖b‖` (Cauchy–Schwarz) and the squared
//!   norms by a relative `γₙ` each, so one kernel's cosine is within `2γₙ + 3u` of the exact
//!   value (the `3u` from the square root, product and division) and two kernels within
//!   `4γₙ + 6u`.
//!
//! The bound is loose for short inputs but still catches real bugs: a dropped, doubled or
//! misaligned term moves the result by about `|aᵢbᵢ|`, far outside `2γₙ·Σ|aᵢbᵢ|` for the random
//! data below.
//!
//! Values mix signs and magnitudes from about 10⁻⁸ up to 10¹⁵, so sums reach 10³³ without
//! overflowing `f32`; slices start at random offsets into their allocation to exercise
//! unaligned loads.
//!
//! # Integer inner product
//! [`dot_u8_i8`] is integer arithmetic, so there is no tolerance: every implementation in
//! [`int8_dot_kernels`] must return exactly the scalar oracle's bits, on random bytes (biased
//! towards the extremes, where a saturating instruction would give itself away) at every length
//! up to 1100 and at the lengths either side of each vector width, and the oracle must match the
//! closed form on constant inputs.

use std::sync::Once;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;

const U: f64 = 1.0 / (1u64 << 24) as f64;

fn gamma(n: usize) -> f64 {
    let nu = n as f64 * U;
    nu / (1.0 - nu)
}

/// Allowed difference between two kernels' sums of `n` products whose absolute values sum to
/// `abs_sum`: see the module docs.
fn sum_tolerance(n: usize, abs_sum: f64) -> f64 {
    2.0 * gamma(n) * abs_sum + n as f64 * f64::from(f32::from_bits(1))
}

/// Allowed difference between two kernels' cosine similarities of length `n`.
fn cosine_tolerance(n: usize) -> f64 {
    4.0 * gamma(n) + 6.0 * U
}

/// The non-scalar kernel families this CPU runs. Those it lacks are reported once, so that a
/// run on a smaller machine says what it did not check.
fn vector_kernels() -> Vec<Kernels> {
    static REPORT: Once = Once::new();
    REPORT.call_once(|| {
        for isa in Isa::ALL {
            if Kernels::for_isa(isa).is_none() {
                println!(
                    "distance kernel tests: skipping {} (not supported by this CPU or target)",
                    isa.name()
                );
            }
        }
    });
    Isa::ALL
        .iter()
        .filter(|&&isa| isa != Isa::Scalar)
        .filter_map(|&isa| Kernels::for_isa(isa))
        .collect()
}

fn value() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -1.0f32..1.0,
        3 => (-1.0f32..1.0, 0i32..=15).prop_map(|(m, e)| m * 10f32.powi(e)),
        1 => Just(0.0f32),
    ]
}

/// Two equally long slices, each starting `offset` elements into its own allocation.
fn pair(max_len: usize) -> impl Strategy<Value = (Vec<f32>, usize, Vec<f32>, usize)> {
    (0..=max_len, 0usize..8, 0usize..8).prop_flat_map(|(n, oa, ob)| {
        (
            vec(value(), n + oa),
            Just(oa),
            vec(value(), n + ob),
            Just(ob),
        )
    })
}

fn abs_dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) * f64::from(*y)).abs())
        .sum()
}

fn sum_sq_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

/// A `u8` code: uniform, or one of the extremes a saturating or mis-signed kernel gets wrong.
fn code() -> impl Strategy<Value = u8> {
    prop_oneof![3 => any::<u8>(), 1 => Just(255u8), 1 => Just(0u8)]
}

/// An `i8` query byte: uniform, or an extreme.
fn query_byte() -> impl Strategy<Value = i8> {
    prop_oneof![3 => any::<i8>(), 1 => Just(i8::MIN), 1 => Just(i8::MAX)]
}

/// Equally long codes and query bytes, each starting `offset` bytes into its own allocation.
fn int8_pair(max_len: usize) -> impl Strategy<Value = (Vec<u8>, usize, Vec<i8>, usize)> {
    (0..=max_len, 0usize..8, 0usize..8).prop_flat_map(|(n, oa, ob)| {
        (
            vec(code(), n + oa),
            Just(oa),
            vec(query_byte(), n + ob),
            Just(ob),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dot_u8_i8_matches_scalar_exactly((va, oa, vb, ob) in int8_pair(1100)) {
        let (a, b) = (&va[oa..], &vb[ob..]);
        let want = scalar::dot_u8_i8(a, b);
        let exact: i64 = a.iter().zip(b).map(|(&x, &y)| i64::from(x) * i64::from(y)).sum();
        prop_assert_eq!(i64::from(want), exact, "scalar (n = {})", a.len());
        for (name, f) in int8_dot_kernels() {
            prop_assert_eq!(f(a, b), want, "{} (n = {})", name, a.len());
        }
        prop_assert_eq!(dot_u8_i8(a, b), want, "dispatched (n = {})", a.len());
    }

    #[test]
    fn dot_matches_scalar((va, oa, vb, ob) in pair(1100)) {
        let (a, b) = (&va[oa..], &vb[ob..]);
        let want = scalar::dot(a, b);
        let tol = sum_tolerance(a.len(), abs_dot(a, b));
        for k in vector_kernels() {
            let got = (k.dot)(a, b);
            prop_assert!(
                (f64::from(got) - f64::from(want)).abs() <= tol,
                "{}: dot {got} vs scalar {want} (n = {}, tolerance {tol})", k.isa.name(), a.len()
            );
        }
    }

    #[test]
    fn l2_squared_matches_scalar((va, oa, vb, ob) in pair(1100)) {
        let (a, b) = (&va[oa..], &vb[ob..]);
        let want = scalar::l2_squared(a, b);
        let tol = sum_tolerance(a.len(), sum_sq_diff(a, b));
        for k in vector_kernels() {
            let got = (k.l2_squared)(a, b);
            prop_assert!(
                (f64::from(got) - f64::from(want)).abs() <= tol,
                "{}: l2 {got} vs scalar {want} (n = {}, tolerance {tol})", k.isa.name(), a.len()
            );
        }
    }

    #[test]
    fn cosine_matches_scalar((va, oa, vb, ob) in pair(1100)) {
        let (a, b) = (&va[oa..], &vb[ob..]);
        let want = scalar::cosine(a, b);
        let tol = cosine_tolerance(a.len());
        for k in vector_kernels() {
            let got = (k.cosine)(a, b);
            prop_assert!(
                (f64::from(got) - f64::from(want)).abs() <= tol,
                "{}: cosine {got} vs scalar {want} (n = {}, tolerance {tol})", k.isa.name(), a.len()
            );
            prop_assert!((-1.0..=1.0).contains(&got));
        }
    }

    #[test]
    fn batch_kernels_match_scalar(
        dim in 0usize..=100,
        rows in 0usize..=12,
        offset in 0usize..8,
        seed_values in vec(value(), 1300 + 100),
    ) {
        let query = &seed_values[offset..offset + dim];
        let data = &seed_values[100 + offset..100 + offset + rows * dim];
        let mut want = vec![0.0; rows];
        let mut got = vec![f32::NAN; rows];
        for k in vector_kernels() {
            (k.dot_batch)(query, data, &mut got);
            for (i, row) in data.chunks_exact(dim.max(1)).enumerate().take(rows) {
                want[i] = scalar::dot(query, row);
                let tol = sum_tolerance(dim, abs_dot(query, row));
                prop_assert!(
                    (f64::from(got[i]) - f64::from(want[i])).abs() <= tol,
                    "{}: dot_batch row {i}: {} vs {}", k.isa.name(), got[i], want[i]
                );
            }
            (k.l2_squared_batch)(query, data, &mut got);
            for (i, row) in data.chunks_exact(dim.max(1)).enumerate().take(rows) {
                want[i] = scalar::l2_squared(query, row);
                let tol = sum_tolerance(dim, sum_sq_diff(query, row));
                prop_assert!(
                    (f64::from(got[i]) - f64::from(want[i])).abs() <= tol,
                    "{}: l2_squared_batch row {i}: {} vs {}", k.isa.name(), got[i], want[i]
                );
            }
            if dim == 0 {
                prop_assert!(got.iter().all(|&x| x == 0.0));
            }
        }
    }
}

#[test]
fn scalar_batch_equals_scalar_per_row() {
    let q = [1.0, -2.0, 3.0];
    let rows = [1.0, 1.0, 1.0, 0.5, 0.0, -1.0];
    let mut out = [0.0; 2];
    scalar::dot_batch(&q, &rows, &mut out);
    assert_eq!(out, [2.0, -2.5]);
    scalar::l2_squared_batch(&q, &rows, &mut out);
    assert_eq!(out, [0.0 + 9.0 + 4.0, 0.25 + 4.0 + 16.0]);
    let mut scores = [0.0; 2];
    Kernels::SCALAR.score_batch(Metric::L2, &q, &rows, &mut scores);
    assert_eq!(scores, [-13.0, -20.25]);
}

#[test]
fn exact_on_small_integers_and_empty_inputs() {
    // Small integers are exact in f32 whatever the order of summation, so every kernel must
    // agree with the arithmetic exactly; this pins the tail handling for each length up to 70.
    for k in vector_kernels().into_iter().chain([Kernels::SCALAR]) {
        for n in 0..=70usize {
            let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 - 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i % 5) as f32 - 1.0).collect();
            let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let l2: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert_eq!((k.dot)(&a, &b), dot, "{} dot n={n}", k.isa.name());
            assert_eq!((k.l2_squared)(&a, &b), l2, "{} l2 n={n}", k.isa.name());
        }
        assert_eq!((k.cosine)(&[], &[]), 0.0);
        assert_eq!((k.cosine)(&[0.0; 19], &[1.0; 19]), 0.0);
        assert_eq!((k.cosine)(&[2.0; 19], &[3.0; 19]), 1.0);
        assert_eq!((k.cosine)(&[2.0; 33], &[-3.0; 33]), -1.0);
    }
}

#[test]
fn mismatched_lengths_panic_in_every_kernel() {
    for k in vector_kernels().into_iter().chain([Kernels::SCALAR]) {
        let name = k.isa.name();
        let a = [1.0f32; 17];
        let b = [1.0f32; 16];
        assert!(
            std::panic::catch_unwind(|| (k.dot)(&a, &b)).is_err(),
            "{name} dot"
        );
        assert!(
            std::panic::catch_unwind(|| (k.l2_squared)(&a, &b)).is_err(),
            "{name} l2"
        );
        assert!(
            std::panic::catch_unwind(|| (k.cosine)(&a, &b)).is_err(),
            "{name} cosine"
        );
        let bad_batch = std::panic::catch_unwind(|| {
            let mut out = [0.0f32; 2];
            (k.dot_batch)(&a[..4], &a[..7], &mut out);
        });
        assert!(bad_batch.is_err(), "{name} dot_batch");
        let bad_batch = std::panic::catch_unwind(|| {
            let mut out = [0.0f32; 1];
            (k.l2_squared_batch)(&a[..4], &a[..8], &mut out);
        });
        assert!(bad_batch.is_err(), "{name} l2_squared_batch");
    }
}

/// Lengths either side of every vector width and unrolled step the int8 kernels use (16 to 256
/// bytes), and the common embedding dimensions.
const INT8_LENGTHS: [usize; 23] = [
    0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 255, 256, 257, 383, 384, 385, 448,
    768, 1000,
];

#[test]
fn dot_u8_i8_extremes_match_the_closed_form() {
    // 255 · −128 and 255 · 127 are the largest products of either sign; any two of them overflow
    // `i16`, so a kernel that saturates a pair sum (`vpmaddubsw`) fails here, and one that drops
    // or doubles a tail byte misses the closed form by a whole product.
    let kernels = int8_dot_kernels();
    let dispatched: Int8DotKernel = ("dispatched", dot_u8_i8);
    for n in INT8_LENGTHS {
        for offset in [0, 1] {
            let a = vec![255u8; n + offset];
            for (q, product) in [(i8::MIN, -32640i64), (i8::MAX, 32385)] {
                let b = vec![q; n + offset];
                let want = product * n as i64;
                for &(name, f) in kernels.iter().chain([&dispatched]) {
                    let got = f(&a[offset..], &b[offset..]);
                    assert_eq!(
                        i64::from(got),
                        want,
                        "{name}: 255 × {q}, n = {n}, offset {offset}"
                    );
                }
            }
        }
    }
}

#[test]
fn dot_u8_i8_exact_up_to_its_documented_length_and_wraps_alike_beyond() {
    let n = DOT_U8_I8_EXACT_LEN;
    let a = vec![255u8; n + 1];
    let b = vec![i8::MIN; n + 1];
    let at_limit = -32640i64 * n as i64;
    assert!(at_limit >= i64::from(i32::MIN) && at_limit - 32640 < i64::from(i32::MIN));
    let wrapped = scalar::dot_u8_i8(&a, &b);
    assert_eq!(i64::from(wrapped), at_limit - 32640 + (1i64 << 32));
    for (name, f) in int8_dot_kernels() {
        assert_eq!(
            i64::from(f(&a[..n], &b[..n])),
            at_limit,
            "{name} at the limit"
        );
        assert_eq!(f(&a, &b), wrapped, "{name} one past the limit");
    }
}

#[test]
#[should_panic(expected = "differ in length")]
fn dot_u8_i8_panics_on_unequal_lengths() {
    dot_u8_i8(&[1u8; 17], &[1i8; 16]);
}

#[test]
fn every_int8_kernel_panics_on_unequal_lengths() {
    for (name, f) in int8_dot_kernels() {
        for (la, lb) in [(17, 16), (0, 1), (384, 383)] {
            let (a, b) = (vec![1u8; la], vec![1i8; lb]);
            assert!(
                std::panic::catch_unwind(|| f(&a, &b)).is_err(),
                "{name}: lengths {la} and {lb}"
            );
        }
    }
}

#[test]
fn dispatch_picks_the_most_capable_int8_kernel() {
    let available = int8_dot_kernels();
    let names: Vec<&str> = available.iter().map(|&(name, _)| name).collect();
    assert_eq!(names.last(), Some(&"scalar"));
    assert!(names.contains(&kernels().int8_name), "{names:?}");
    assert_eq!(Kernels::SCALAR.int8_name, "scalar");
    if let Some(k) = Kernels::for_isa(Isa::Avx512F) {
        assert_eq!(k.int8_name, names[0]);
    }
    if let Some(k) = Kernels::for_isa(Isa::Avx2Fma) {
        assert_eq!(k.int8_name, "avx2");
    }
    if let Some(k) = Kernels::for_isa(Isa::Neon) {
        assert_eq!(k.int8_name, "neon");
    }
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
        assert_eq!(names, ["avx512vnni", "avx512bw", "avx2", "scalar"]);
        assert_eq!(kernels().int8_name, "avx512vnni");
    }
}

#[test]
fn dispatch_picks_the_most_capable_kernels() {
    let expected = Isa::ALL
        .iter()
        .find_map(|&isa| Kernels::for_isa(isa))
        .expect("scalar is always available");
    assert_eq!(kernels().isa, expected.isa);
    assert_eq!(
        Kernels::for_isa(Isa::Scalar).map(|k| k.isa),
        Some(Isa::Scalar)
    );
    #[cfg(target_arch = "x86_64")]
    assert!(Kernels::for_isa(Isa::Neon).is_none());
    #[cfg(target_arch = "aarch64")]
    assert!(Kernels::for_isa(Isa::Avx2Fma).is_none() && Kernels::for_isa(Isa::Avx512F).is_none());
}

#[test]
fn metric_score_and_batch_agree() {
    let q = [0.6, 0.8, 0.0];
    let rows = [0.6, 0.8, 0.0, 0.0, 0.0, 1.0];
    let mut out = [0.0; 2];
    for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
        metric.score_batch(&q, &rows, &mut out);
        for (i, row) in rows.chunks_exact(3).enumerate() {
            assert!((out[i] - metric.score(&q, row)).abs() < 1e-6, "{metric}");
        }
    }
    assert!((Metric::L2.score(&q, &rows[3..]) + 2.0).abs() < 1e-6);
}

#[test]
fn prefetch_accepts_any_slice() {
    // A hint has no result to check; this only shows that no shape of slice panics or faults:
    // empty, unaligned, ragged, zero-sized and wider-than-a-line elements.
    let v: Vec<f32> = (0..100).map(|i| i as f32).collect();
    prefetch_read::<f32>(&[]);
    prefetch_read(&v[1..]);
    prefetch_read(&v[3..20]);
    prefetch_read(&[(); 8]);
    prefetch_read(&[[0u8; 200]; 3]);
    assert_eq!(v[99], 99.0, "prefetching changes no value");
}
