//! Scalar reference kernels: the oracle every SIMD kernel is tested against.
//!
//! They are written for clarity, not speed, but the `f32` ones still accumulate in four
//! independent lanes so that their rounding behaves like the vector kernels' (a single running
//! sum drifts further from the exact value on long inputs, which would make the comparison
//! tolerance meaningless). The integer kernel needs no such care: its sum is exact, so every
//! implementation must match it bit for bit.

/// Inner product `Σ aᵢ·bᵢ`.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "dot: slices differ in length");
    let mut acc = [0.0f32; 4];
    let (ca, ra) = a.as_chunks::<4>();
    let (cb, rb) = b.as_chunks::<4>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Squared Euclidean distance `Σ (aᵢ − bᵢ)²`.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "l2_squared: slices differ in length");
    let mut acc = [0.0f32; 4];
    let (ca, ra) = a.as_chunks::<4>();
    let (cb, rb) = b.as_chunks::<4>();
    for (x, y) in ca.iter().zip(cb) {
        for l in 0..4 {
            let d = x[l] - y[l];
            acc[l] += d * d;
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ra.iter().zip(rb) {
        let d = x - y;
        tail += d * d;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Cosine similarity `a·b / (‖a‖·‖b‖)`, in `[-1, 1]`; `0.0` when either vector is all zeros.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let ab = dot(a, b);
    let aa = dot(a, a);
    let bb = dot(b, b);
    super::finish_cosine(ab, aa, bb)
}

/// `out[i] = dot(query, row i)` for the `out.len()` rows of `query.len()` values in `rows`.
///
/// # Panics
/// If `rows.len() != out.len() * query.len()`.
pub fn dot_batch(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    batch_with(query, rows, out, dot);
}

/// `out[i] = l2_squared(query, row i)` for the `out.len()` rows of `query.len()` values in
/// `rows`.
///
/// # Panics
/// If `rows.len() != out.len() * query.len()`.
pub fn l2_squared_batch(query: &[f32], rows: &[f32], out: &mut [f32]) {
    super::check_batch(query, rows, out);
    batch_with(query, rows, out, l2_squared);
}

/// Exact integer inner product `Σ aᵢ·bᵢ` of unsigned codes and signed query bytes.
///
/// Each product lies in `[-32640, 32385]`, so the `i32` sum is exact for lengths up to
/// [`DOT_U8_I8_EXACT_LEN`](super::DOT_U8_I8_EXACT_LEN) (65,793). Past that the sum wraps
/// modulo 2³²: wrapping rather than panicking or saturating keeps every vectorised kernel,
/// whose lane additions wrap, bit-identical to this one at any length.
///
/// # Panics
/// If `a` and `b` differ in length.
pub fn dot_u8_i8(a: &[u8], b: &[i8]) -> i32 {
    assert_eq!(a.len(), b.len(), "dot_u8_i8: slices differ in length");
    a.iter().zip(b).fold(0i32, |acc, (&x, &y)| {
        acc.wrapping_add(i32::from(x) * i32::from(y))
    })
}

fn batch_with(query: &[f32], rows: &[f32], out: &mut [f32], f: fn(&[f32], &[f32]) -> f32) {
    let d = query.len();
    if d == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(d)) {
        *o = f(query, row);
    }
}
