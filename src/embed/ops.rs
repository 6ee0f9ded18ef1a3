//! The forward pass's element-wise kernels over `f32` rows: LayerNorm fused with the bias and
//! residual adds, activation functions fused with the bias add, and softmax.
//!
//! Each kernel is written once as plain loops that the compiler vectorises, and compiled three
//! times: for AVX-512, for AVX2+FMA and for the baseline. The widest one the CPU supports is
//! chosen at run time. Sums run over 16 independent lanes so that they vectorise too (a
//! sequential float sum cannot be reordered by the compiler).
//!
//! `exp` and `erf` are our own polynomial approximations, because the standard library's are
//! scalar calls that cannot vectorise (the profile of the stock model showed them at ~27 % of
//! the time). Their accuracy (relative error of `exp` ≈ 2e-7; absolute error of `erf` ≤ 6e-7)
//! is far below what the parity tests resolve; the unit tests below check it against the
//! standard library.

use std::sync::OnceLock;

use super::config::Activation;

const LANES: usize = 16;

/// The instruction sets the kernels are compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Avx512,
    Avx2,
    Baseline,
}

fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Isa::Avx2;
            }
        }
        Isa::Baseline
    })
}

/// Defines a public kernel `$name` that runs the `#[inline(always)]` body `$generic` compiled
/// for the best instruction set the CPU has.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident => $generic:ident ($($arg:ident : $ty:ty),*)) => {
        $(#[$doc])*
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $generic($($arg),*)
                }
                match isa() {
                    // SAFETY: `isa()` detected these features on the running CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => {}
                }
            }
            $generic($($arg),*)
        }
    };
}

dispatch! {
    /// `rows[i] = act(rows[i] + bias)` for every row of width `bias.len()`.
    bias_activation => bias_activation_generic(rows: &mut [f32], bias: &[f32], act: Activation)
}

dispatch! {
    /// `rows[i] += bias` for every row of width `bias.len()`.
    add_bias => add_bias_generic(rows: &mut [f32], bias: &[f32])
}

dispatch! {
    /// `x[i] = LayerNorm(x[i] + y[i] + bias)` for every row of width `bias.len()`: the end of
    /// an attention or feed-forward block, with its output bias and residual connection.
    residual_layer_norm => residual_layer_norm_generic(
        x: &mut [f32], y: &[f32], bias: &[f32], gamma: &[f32], beta: &[f32], eps: f32
    )
}

dispatch! {
    /// `x[i] = LayerNorm(x[i])` for every row of width `gamma.len()`.
    layer_norm => layer_norm_generic(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32)
}

dispatch! {
    /// Softmax of every row of width `width`, in place.
    softmax_rows => softmax_rows_generic(rows: &mut [f32], width: usize)
}

#[inline(always)]
fn bias_activation_generic(rows: &mut [f32], bias: &[f32], act: Activation) {
    for row in rows.chunks_exact_mut(bias.len()) {
        match act {
            Activation::Gelu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, &b)| *x = gelu_erf(*x + b)),
            Activation::GeluTanh => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, &b)| *x = gelu_tanh(*x + b)),
            Activation::Relu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, &b)| *x = (*x + b).max(0.0)),
            Activation::Silu => row
                .iter_mut()
                .zip(bias)
                .for_each(|(x, &b)| *x = silu(*x + b)),
        }
    }
}

#[inline(always)]
fn add_bias_generic(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_exact_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(x, &b)| *x += b);
    }
}

#[inline(always)]
fn residual_layer_norm_generic(
    x: &mut [f32],
    y: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    let width = bias.len();
    for (xr, yr) in x.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
        xr.iter_mut()
            .zip(yr)
            .zip(bias)
            .for_each(|((x, &y), &b)| *x += y + b);
        normalize_row(xr, gamma, beta, eps);
    }
}

#[inline(always)]
fn layer_norm_generic(x: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    for row in x.chunks_exact_mut(gamma.len()) {
        normalize_row(row, gamma, beta, eps);
    }
}

/// LayerNorm of one row, with the two-pass (mean, then centred variance) formula PyTorch uses.
#[inline(always)]
fn normalize_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = sum_sq_dev(row, mean) / n;
    let inv = 1.0 / (var + eps).sqrt();
    row.iter_mut()
        .zip(gamma)
        .zip(beta)
        .for_each(|((x, &g), &b)| *x = (*x - mean) * inv * g + b);
}

#[inline(always)]
fn softmax_rows_generic(rows: &mut [f32], width: usize) {
    for row in rows.chunks_exact_mut(width) {
        let max = max(row);
        row.iter_mut().for_each(|x| *x = exp(*x - max));
        let inv = 1.0 / sum(row);
        row.iter_mut().for_each(|x| *x *= inv);
    }
}

#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a += v);
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|&v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        acc.iter_mut()
            .zip(c)
            .for_each(|(a, &v)| *a += (v - mean) * (v - mean));
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        acc.iter_mut().zip(c).for_each(|(a, &v)| *a = a.max(v));
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// `e^x`, relative error ≈ 2e-7 for x in [-87, 88]; inputs outside are clamped to it (so it
/// never returns 0 or infinity, which is what softmax and the activations need).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in a part exact in few bits and a remainder (Cody–Waite), so that
    // x − n·ln2 loses no precision.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r to degree 7; |r| ≤ ln2/2 keeps the truncation error below 1e-8.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n, built in the exponent bits; n is in [-126, 127] after the clamp. Adding 2^23 puts
    // the integer n + 127 in the low mantissa bits, which vectorises, unlike a saturating
    // float-to-int cast.
    let biased = (n + (127.0 + 8_388_608.0)).to_bits() & 0x007f_ffff;
    let scale = f32::from_bits(biased << 23);
    p * scale
}

/// The error function, absolute error ≤ 6e-7: the 1.5e-7 of Abramowitz & Stegun's formula
/// 7.1.26 plus the error of our `exp` and f32 rounding.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A1: f32 = 0.254_829_6;
    const A2: f32 = -0.284_496_74;
    const A3: f32 = 1.421_413_7;
    const A4: f32 = -1.453_152;
    const A5: f32 = 1.061_405_4;
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A5 * t + A4) * t + A3) * t + A2) * t + A1) * t;
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// GELU as BERT defines it: `x · Φ(x)` with the exact normal CDF.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// GELU's tanh approximation (`gelu_new` in transformers).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    // tanh(u) = 1 − 2 / (e^{2u} + 1); exp's clamp keeps this finite for any u.
    let tanh = 1.0 - 2.0 / (exp(2.0 * u) + 1.0);
    0.5 * x * (1.0 + tanh)
}

/// SiLU (swish): `x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn erf_reference(x: f64) -> f64 {
        // Maclaurin series, precise in f64 for |x| ≤ 4; erf is ±1 to within
        // 2e-5 beyond, where `erf` is checked against 1 instead.
        let mut term = x;
        let mut total = x;
        for n in 1..200 {
            term *= -x * x / n as f64;
            total += term / (2 * n + 1) as f64;
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn grid(lo: f32, hi: f32, steps: usize) -> impl Iterator<Item = f32> {
        (0..=steps).map(move |i| lo + (hi - lo) * i as f32 / steps as f32)
    }

    #[test]
    fn exp_is_accurate() {
        for x in grid(-87.0, 88.0, 200_000) {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            assert!(rel < 4e-7, "exp({x}): relative error {rel}");
        }
        assert!(exp(-1000.0) > 0.0 && exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn erf_is_accurate() {
        for x in grid(-3.0, 3.0, 60_000) {
            let err = (erf(x) as f64 - erf_reference(x as f64)).abs();
            assert!(err < 6e-7, "erf({x}): error {err}");
        }
        for x in grid(3.0, 50.0, 1000) {
            assert!((erf(x) - 1.0).abs() < 3e-5 && (erf(-x) + 1.0).abs() < 3e-5);
        }
        assert!(erf(0.0).abs() < 6e-7);
    }

    #[test]
    fn activations_match_their_definitions() {
        for x in grid(-20.0, 20.0, 40_000) {
            let xd = x as f64;
            // Beyond |x| = 5.5 the series loses precision, and GELU is within 1e-6 of ReLU.
            let gelu = if xd.abs() <= 5.5 {
                0.5 * xd * (1.0 + erf_reference(xd / 2f64.sqrt()))
            } else {
                xd.max(0.0)
            };
            assert!((gelu_erf(x) as f64 - gelu).abs() < 1e-5, "gelu({x})");
            let tanh = 0.5
                * xd
                * (1.0
                    + ((2.0 / std::f64::consts::PI).sqrt() * (xd + 0.044715 * xd.powi(3))).tanh());
            assert!((gelu_tanh(x) as f64 - tanh).abs() < 1e-5, "gelu_tanh({x})");
            let silu_ref = xd / (1.0 + (-xd).exp());
            assert!((silu(x) as f64 - silu_ref).abs() < 1e-5, "silu({x})");
        }
    }

    #[test]
    fn dispatched_kernels_match_direct_formulas() {
        // Odd widths exercise the lane remainders.
        for width in [1usize, 7, 16, 33, 384] {
            let rows = 3;
            let data: Vec<f32> = (0..rows * width)
                .map(|i| ((i * 7919) % 101) as f32 / 10.0 - 5.0)
                .collect();
            let bias: Vec<f32> = (0..width).map(|i| i as f32 / width as f32).collect();
            let gamma: Vec<f32> = (0..width).map(|i| 1.0 + i as f32 / 100.0).collect();
            let beta: Vec<f32> = (0..width).map(|i| -(i as f32) / 50.0).collect();

            let mut x = data.clone();
            let y: Vec<f32> = data.iter().map(|v| v * 0.5).collect();
            residual_layer_norm(&mut x, &y, &bias, &gamma, &beta, 1e-12);
            for r in 0..rows {
                let pre: Vec<f64> = (0..width)
                    .map(|c| (data[r * width + c] + y[r * width + c] + bias[c]) as f64)
                    .collect();
                let mean = pre.iter().sum::<f64>() / width as f64;
                let var = pre.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / width as f64;
                for c in 0..width {
                    let want = if var == 0.0 {
                        beta[c] as f64
                    } else {
                        (pre[c] - mean) / (var + 1e-12).sqrt() * gamma[c] as f64 + beta[c] as f64
                    };
                    let got = x[r * width + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-4,
                        "layer norm {width}: {got} vs {want}"
                    );
                }
            }

            let mut s = data.clone();
            softmax_rows(&mut s, width);
            for r in 0..rows {
                let row = &data[r * width..(r + 1) * width];
                let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                for c in 0..width {
                    let want = (row[c] as f64 - m).exp() / z;
                    assert!((s[r * width + c] as f64 - want).abs() < 1e-6);
                }
            }

            let mut g = data.clone();
            bias_activation(&mut g, &bias, Activation::Gelu);
            for (i, (&got, &v)) in g.iter().zip(&data).enumerate() {
                assert!((got - gelu_erf(v + bias[i % width])).abs() < 1e-6);
            }
            let mut b = data.clone();
            add_bias(&mut b, &bias);
            for (i, (&got, &v)) in b.iter().zip(&data).enumerate() {
                assert_eq!(got, v + bias[i % width]);
            }
        }
    }
}
