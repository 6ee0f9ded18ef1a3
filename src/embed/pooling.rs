//! Pooling: from a sequence's token embeddings to one sentence embedding, and normalisation.
//!
//! The forward pass hands over each sequence's rows without padding, so every row is a real
//! token: the attention mask sentence-transformers multiplies in is already applied.

/// One way of reducing token embeddings to a sentence embedding (a sentence-transformers
/// pooling mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PoolingMode {
    /// The first token's embedding (`[CLS]`).
    Cls,
    /// The element-wise maximum over tokens.
    Max,
    /// The mean over tokens.
    Mean,
    /// The sum over tokens divided by the square root of their count.
    MeanSqrtLen,
    /// The mean over tokens weighted by position (1, 2, …, n).
    WeightedMean,
    /// The last token's embedding.
    LastToken,
}

/// The pooling module: one or more modes whose results are concatenated, in the order of the
/// [`PoolingMode`] variants (the order sentence-transformers uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pooling {
    modes: Vec<PoolingMode>,
}

impl Pooling {
    /// Pooling with the given modes; duplicates are dropped and the order normalised.
    ///
    /// # Panics
    /// If `modes` is empty: the configuration reader rejects that case first.
    pub(crate) fn new(mut modes: Vec<PoolingMode>) -> Self {
        modes.sort();
        modes.dedup();
        assert!(
            !modes.is_empty(),
            "pooling needs at least one mode. This is a bug."
        );
        Pooling { modes }
    }

    /// The modes, in output order.
    pub fn modes(&self) -> &[PoolingMode] {
        &self.modes
    }

    /// Width of the pooled embedding for token embeddings of width `hidden`.
    pub fn output_dim(&self, hidden: usize) -> usize {
        hidden * self.modes.len()
    }

    /// Pools the `n × hidden` row-major token embeddings `tokens` (n ≥ 1) into `out`, which
    /// has [`output_dim`](Self::output_dim) elements.
    pub(crate) fn pool(&self, tokens: &[f32], hidden: usize, out: &mut [f32]) {
        let n = tokens.len() / hidden;
        debug_assert!(n >= 1 && tokens.len() == n * hidden);
        debug_assert_eq!(out.len(), self.output_dim(hidden));
        let rows = || tokens.chunks_exact(hidden);
        for (mode, out) in self.modes.iter().zip(out.chunks_exact_mut(hidden)) {
            match mode {
                PoolingMode::Cls => out.copy_from_slice(&tokens[..hidden]),
                PoolingMode::LastToken => out.copy_from_slice(&tokens[(n - 1) * hidden..]),
                PoolingMode::Max => {
                    out.copy_from_slice(&tokens[..hidden]);
                    for row in rows().skip(1) {
                        out.iter_mut().zip(row).for_each(|(o, &x)| *o = o.max(x));
                    }
                }
                PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                    out.fill(0.0);
                    for row in rows() {
                        out.iter_mut().zip(row).for_each(|(o, &x)| *o += x);
                    }
                    let div = if *mode == PoolingMode::Mean {
                        n as f32
                    } else {
                        (n as f32).sqrt()
                    };
                    out.iter_mut().for_each(|o| *o /= div);
                }
                PoolingMode::WeightedMean => {
                    out.fill(0.0);
                    for (i, row) in rows().enumerate() {
                        let w = (i + 1) as f32;
                        out.iter_mut().zip(row).for_each(|(o, &x)| *o += w * x);
                    }
                    let total = (n * (n + 1) / 2) as f32;
                    out.iter_mut().for_each(|o| *o /= total);
                }
            }
        }
    }
}

/// L2-normalises `v` in place as sentence-transformers' Normalize module does: the norm is
/// clamped below at 1e-12, so a zero vector stays zero instead of becoming NaN.
pub(crate) fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|&x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_pool_as_defined() {
        // Three tokens of width 2.
        let tokens = [1.0, -2.0, 3.0, 0.0, -1.0, 4.0];
        let pool = |mode| {
            let mut out = vec![0.0; 2];
            Pooling::new(vec![mode]).pool(&tokens, 2, &mut out);
            out
        };
        assert_eq!(pool(PoolingMode::Cls), [1.0, -2.0]);
        assert_eq!(pool(PoolingMode::LastToken), [-1.0, 4.0]);
        assert_eq!(pool(PoolingMode::Max), [3.0, 4.0]);
        assert_eq!(pool(PoolingMode::Mean), [1.0, 2.0 / 3.0]);
        let s = 3f32.sqrt();
        assert_eq!(pool(PoolingMode::MeanSqrtLen), [3.0 / s, 2.0 / s]);
        // Weights 1, 2, 3 over a total of 6.
        assert_eq!(
            pool(PoolingMode::WeightedMean),
            [(1.0 + 6.0 - 3.0) / 6.0, (-2.0 + 0.0 + 12.0) / 6.0]
        );
    }

    #[test]
    fn several_modes_concatenate_in_canonical_order() {
        let pooling = Pooling::new(vec![PoolingMode::Mean, PoolingMode::Cls, PoolingMode::Mean]);
        assert_eq!(pooling.modes(), [PoolingMode::Cls, PoolingMode::Mean]);
        let mut out = vec![0.0; pooling.output_dim(1)];
        pooling.pool(&[2.0, 4.0], 1, &mut out);
        assert_eq!(out, [2.0, 3.0]);
    }

    #[test]
    fn normalize_keeps_zero_vectors_finite() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, [0.6, 0.8]);
        let mut z = vec![0.0; 3];
        normalize(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
