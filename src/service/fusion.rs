//! Hybrid search: how the rankings of the dense and the lexical leg become one.
//!
//! Two ways, as Qdrant offers them. Reciprocal rank fusion ([`Fusion::Rrf`]) looks only at
//! ranks: a passage scores `α / (rrf_k + rank_dense) + (1 − α) / (rrf_k + rank_lexical)`, ranks
//! from 1, a leg that did not return it adding nothing; it needs no calibration between cosine
//! similarities and BM25 scores, which live on unrelated scales. Distribution-based score
//! fusion ([`Fusion::Dbsf`]) keeps the scores' spacing: each leg's scores are normalised by
//! that leg's own distribution over the candidates, `(s − (μ − 3σ)) / 6σ` clamped to [0, 1],
//! then weighted by `α` and `1 − α` and summed. In both, `α` (default 0.5) weights the dense
//! leg.

use std::collections::HashMap;

use crate::index::Hit;

/// How the legs of a hybrid query are fused.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion with this rank constant (60 by default, as in the original
    /// paper and in Qdrant, Elasticsearch and OpenSearch).
    Rrf {
        /// The rank constant: larger values flatten the difference between top ranks.
        k: f32,
    },
    /// Distribution-based score fusion.
    Dbsf,
}

/// The default rank constant of reciprocal rank fusion.
pub const DEFAULT_RRF_K: f32 = 60.0;

/// Settings of a hybrid query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hybrid {
    /// How the legs are fused.
    pub fusion: Fusion,
    /// Weight of the dense leg, between 0 and 1; the lexical leg weighs `1 − alpha`.
    pub alpha: f32,
    /// Candidates each leg returns for fusion; `None` for [`Hybrid::candidates_for`]'s
    /// default.
    pub candidates: Option<usize>,
}

/// The fusion of a hybrid query that names none: distribution-based score fusion, which
/// ranked the right section first more often than reciprocal rank fusion on the evaluation set
/// (BENCHMARKS.md, "Answer quality"), for every kind of query in it.
pub const DEFAULT_FUSION: Fusion = Fusion::Dbsf;

impl Default for Hybrid {
    fn default() -> Self {
        Hybrid {
            fusion: DEFAULT_FUSION,
            alpha: 0.5,
            candidates: None,
        }
    }
}

/// Candidates per leg when a query does not say: a passage ranked far down one leg can still
/// win on the other, so each leg returns more than the answer needs.
const DEFAULT_CANDIDATES: usize = 50;

impl Hybrid {
    /// Candidates each leg returns when the fused answer needs `n` hits.
    pub fn candidates_for(&self, n: usize) -> usize {
        self.candidates
            .unwrap_or(DEFAULT_CANDIDATES.max(2 * n))
            .max(n)
    }
}

/// Fuses two rankings (each best first) into one, best first: every passage of either, with
/// its fused score. Ties keep the dense leg's order, then the lexical leg's.
pub fn fuse(dense: &[Hit], lexical: &[Hit], fusion: Fusion, alpha: f32) -> Vec<Hit> {
    let weights = [alpha, 1.0 - alpha];
    let mut fused: HashMap<u64, (f32, usize)> = HashMap::with_capacity(dense.len() + lexical.len());
    let mut order = 0;
    for (leg, hits) in [dense, lexical].into_iter().enumerate() {
        let norm = match fusion {
            Fusion::Rrf { .. } => None,
            Fusion::Dbsf => Some(Bounds::of(hits)),
        };
        for (rank, hit) in hits.iter().enumerate() {
            let part = match (fusion, &norm) {
                (Fusion::Rrf { k }, _) => 1.0 / (k + (rank + 1) as f32),
                (Fusion::Dbsf, Some(b)) => b.normalise(hit.score),
                (Fusion::Dbsf, None) => unreachable!("bounds are computed for DBSF"),
            };
            let entry = fused.entry(hit.id).or_insert_with(|| {
                order += 1;
                (0.0, order)
            });
            entry.0 += weights[leg] * part;
        }
    }
    let mut out: Vec<(u64, f32, usize)> =
        fused.into_iter().map(|(id, (s, o))| (id, s, o)).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.2.cmp(&b.2)));
    out.into_iter()
        .map(|(id, score, _)| Hit { id, score })
        .collect()
}

/// A leg's score range for DBSF: three standard deviations either side of the mean.
struct Bounds {
    low: f32,
    width: f32,
}

impl Bounds {
    fn of(hits: &[Hit]) -> Bounds {
        let n = hits.len().max(1) as f64;
        let mean = hits.iter().map(|h| h.score as f64).sum::<f64>() / n;
        let var = hits
            .iter()
            .map(|h| (h.score as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let sd = var.sqrt();
        Bounds {
            low: (mean - 3.0 * sd) as f32,
            width: (6.0 * sd) as f32,
        }
    }

    /// The score within the bounds, in [0, 1]; every score of a leg whose scores are all equal
    /// (or that has one) is 1: it is that leg's best.
    fn normalise(&self, score: f32) -> f32 {
        if self.width <= f32::EPSILON * self.low.abs().max(1.0) {
            return 1.0;
        }
        ((score - self.low) / self.width).clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(list: &[(u64, f32)]) -> Vec<Hit> {
        list.iter().map(|&(id, score)| Hit { id, score }).collect()
    }

    #[test]
    fn rrf_on_fixed_rankings() {
        let dense = hits(&[(1, 0.9), (2, 0.8), (3, 0.7)]);
        let lexical = hits(&[(3, 12.0), (4, 9.0), (1, 2.0)]);
        let fused = fuse(&dense, &lexical, Fusion::Rrf { k: 60.0 }, 0.5);
        let score = |id| fused.iter().find(|h| h.id == id).unwrap().score;
        let rrf = |rank: f32| 1.0 / (60.0 + rank);
        assert!((score(1) - 0.5 * (rrf(1.0) + rrf(3.0))).abs() < 1e-7);
        assert!((score(3) - 0.5 * (rrf(3.0) + rrf(1.0))).abs() < 1e-7);
        assert!((score(2) - 0.5 * rrf(2.0)).abs() < 1e-7);
        assert!((score(4) - 0.5 * rrf(2.0)).abs() < 1e-7);
        // 1 and 3 tie on fused score; the dense leg's order breaks it, then 2 before 4.
        assert_eq!(fused.iter().map(|h| h.id).collect::<Vec<_>>(), [1, 3, 2, 4]);

        // All weight on one leg gives that leg's order; the other leg's extras come last.
        let dense_only = fuse(&dense, &lexical, Fusion::Rrf { k: 60.0 }, 1.0);
        assert_eq!(
            dense_only.iter().take(3).map(|h| h.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let lexical_only = fuse(&dense, &lexical, Fusion::Rrf { k: 60.0 }, 0.0);
        assert_eq!(
            lexical_only
                .iter()
                .take(3)
                .map(|h| h.id)
                .collect::<Vec<_>>(),
            [3, 4, 1]
        );
        // A small rank constant sharpens the top ranks.
        let sharp = fuse(&dense, &lexical, Fusion::Rrf { k: 1.0 }, 0.5);
        assert!((sharp[0].score - 0.5 * (1.0 / 2.0 + 1.0 / 4.0)).abs() < 1e-7);
    }

    #[test]
    fn dbsf_normalises_each_leg_by_its_distribution() {
        // Dense scores 0.9, 0.8, 0.7: mean 0.8, σ = √(0.02/3).
        let dense = hits(&[(1, 0.9), (2, 0.8), (3, 0.7)]);
        let lexical = hits(&[(3, 30.0), (4, 10.0)]);
        let fused = fuse(&dense, &lexical, Fusion::Dbsf, 0.5);
        let score = |id| fused.iter().find(|h| h.id == id).unwrap().score;
        let sd = (0.02f32 / 3.0).sqrt();
        let d = |s: f32| (s - (0.8 - 3.0 * sd)) / (6.0 * sd);
        // Lexical: mean 20, σ 10: bounds -10 and 50.
        let l = |s: f32| (s + 10.0) / 60.0;
        assert!((score(1) - 0.5 * d(0.9)).abs() < 1e-5);
        assert!((score(2) - 0.5 * d(0.8)).abs() < 1e-5);
        assert!((score(3) - 0.5 * (d(0.7) + l(30.0))).abs() < 1e-5);
        assert!((score(4) - 0.5 * l(10.0)).abs() < 1e-5);
        assert_eq!(fused[0].id, 3);
        for h in &fused {
            assert!((0.0..=1.0).contains(&h.score));
        }
        // A leg of one hit, or of equal scores, counts each as its best.
        let fused = fuse(&hits(&[(7, 0.3)]), &[], Fusion::Dbsf, 0.25);
        assert_eq!(fused.len(), 1);
        assert!((fused[0].score - 0.25).abs() < 1e-7);
    }

    #[test]
    fn empty_legs() {
        assert!(fuse(&[], &[], Fusion::Rrf { k: 60.0 }, 0.5).is_empty());
        let only = fuse(&[], &hits(&[(5, 1.0), (6, 0.5)]), Fusion::Dbsf, 0.5);
        assert_eq!(only.iter().map(|h| h.id).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn candidates_cover_the_answer() {
        let h = Hybrid::default();
        assert_eq!(h.candidates_for(10), 50);
        assert_eq!(h.candidates_for(40), 80);
        let given = Hybrid {
            candidates: Some(20),
            ..Hybrid::default()
        };
        assert_eq!(given.candidates_for(10), 20);
        assert_eq!(given.candidates_for(30), 30);
    }
}
