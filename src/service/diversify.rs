//! Shaping a query's hits beyond nearest-first: maximal marginal relevance (MMR), which trades
//! closeness to the query for difference from the hits already chosen, and grouping, which
//! keeps a few passages per document so that one long document cannot fill the answer.
//!
//! Both work on candidates the search has already ranked, best first; they pick among them
//! and never search again.

use std::collections::HashMap;
use std::hash::Hash;

use crate::distance::Metric;
use crate::index::Hit;

/// MMR settings of a query, with LangChain's names and meaning
/// (`max_marginal_relevance_search`): `fetch_k` candidates are searched for, and `k` of them
/// chosen one at a time, each maximising
/// `lambda · sim(query, c) − (1 − lambda) · max over chosen s of sim(c, s)`, where `sim` is the
/// cosine similarity, whatever the collection's metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mmr {
    /// Weight of relevance against diversity, 0 to 1 (1: nearest first, as without MMR).
    pub lambda: f32,
    /// Candidates to choose from; at least `k`.
    pub fetch_k: usize,
}

/// How many passages a grouped query keeps per document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grouping {
    /// Passages per document, best first.
    pub group_size: usize,
}

/// The order in which MMR chooses `k` of `candidates` (their vectors, in search order) for
/// `query`: indexes into `candidates`. The first is the candidate most similar to the query;
/// ties go to the earlier candidate. Vectors of zero length have similarity 0 to everything.
pub fn mmr_order(query: &[f32], candidates: &[&[f32]], k: usize, lambda: f32) -> Vec<usize> {
    let n = candidates.len();
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let norm = |v: &[f32]| Metric::Dot.score(v, v).sqrt();
    let query_norm = norm(query);
    let norms: Vec<f32> = candidates.iter().map(|c| norm(c)).collect();
    let cosine = |a: &[f32], na: f32, b: &[f32], nb: f32| {
        let s = Metric::Dot.score(a, b) / (na * nb);
        if s.is_finite() { s } else { 0.0 }
    };
    let relevance: Vec<f32> = candidates
        .iter()
        .zip(&norms)
        .map(|(c, &nc)| cosine(query, query_norm, c, nc))
        .collect();
    // The highest similarity of each candidate to any chosen one, updated as each is chosen.
    let mut redundancy = vec![f32::NEG_INFINITY; n];
    let mut chosen = vec![false; n];
    let mut order = Vec::with_capacity(k);
    let mut next = first_max(relevance.iter().copied().enumerate());
    while let Some(pick) = next {
        chosen[pick] = true;
        order.push(pick);
        if order.len() == k {
            break;
        }
        for i in 0..n {
            if !chosen[i] {
                let s = cosine(candidates[i], norms[i], candidates[pick], norms[pick]);
                redundancy[i] = redundancy[i].max(s);
            }
        }
        next = first_max(
            (0..n)
                .filter(|&i| !chosen[i])
                .map(|i| (i, lambda * relevance[i] - (1.0 - lambda) * redundancy[i])),
        );
    }
    order
}

/// The index of the first largest score (NaN never wins).
fn first_max(scores: impl Iterator<Item = (usize, f32)>) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, s) in scores {
        if best.is_none_or(|(_, b)| s > b) && !s.is_nan() {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// Keeps, from `hits` ranked best first, at most `group_size` passages of each document and
/// the passages of the first `k` documents to appear, ordered by document (a document ranks by
/// its best passage) and by score within one. `doc_of` names each hit's document; hits it
/// returns `None` for (a passage deleted since the search) are dropped. Also says whether `k`
/// documents were found.
pub fn group_hits<D: Eq + Hash>(
    hits: Vec<Hit>,
    k: usize,
    grouping: Grouping,
    mut doc_of: impl FnMut(u64) -> Option<D>,
) -> (Vec<Hit>, bool) {
    let mut slot: HashMap<D, usize> = HashMap::new();
    let mut groups: Vec<Vec<Hit>> = Vec::new();
    for hit in hits {
        let Some(doc) = doc_of(hit.id) else {
            continue;
        };
        match slot.get(&doc) {
            Some(&g) if groups[g].len() < grouping.group_size => groups[g].push(hit),
            None if groups.len() < k => {
                slot.insert(doc, groups.len());
                groups.push(vec![hit]);
            }
            Some(_) | None => {}
        }
    }
    let full = groups.len() == k;
    (groups.into_iter().flatten().collect(), full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        if na == 0.0 || nb == 0.0 {
            0.0
        } else {
            dot / (na * nb)
        }
    }

    /// The textbook form: every step recomputes every candidate's score from scratch over
    /// all chosen ones, in f64.
    fn brute_force(query: &[f32], cands: &[Vec<f32>], k: usize, lambda: f64) -> Vec<usize> {
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < k.min(cands.len()) {
            let mut best = (usize::MAX, f64::NEG_INFINITY);
            for (i, c) in cands.iter().enumerate() {
                if chosen.contains(&i) {
                    continue;
                }
                let score = if chosen.is_empty() {
                    cos(query, c)
                } else {
                    let red = chosen
                        .iter()
                        .map(|&j| cos(c, &cands[j]))
                        .fold(f64::NEG_INFINITY, f64::max);
                    lambda * cos(query, c) - (1.0 - lambda) * red
                };
                if score > best.1 {
                    best = (i, score);
                }
            }
            chosen.push(best.0);
        }
        chosen
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn mmr_matches_a_brute_force_reference() {
        let mut seed = 11u64;
        for round in 0..40 {
            let dim = 8 + round % 5;
            let n = 5 + round * 3 % 40;
            let query: Vec<f32> = (0..dim).map(|_| lcg(&mut seed)).collect();
            // Clusters of near-duplicates, which MMR must spread over.
            let centres: Vec<Vec<f32>> = (0..4)
                .map(|_| (0..dim).map(|_| lcg(&mut seed)).collect())
                .collect();
            let cands: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    centres[i % 4]
                        .iter()
                        .map(|x| x + 0.1 * lcg(&mut seed))
                        .collect()
                })
                .collect();
            let refs: Vec<&[f32]> = cands.iter().map(|c| c.as_slice()).collect();
            for lambda in [0.0f32, 0.25, 0.5, 0.9, 1.0] {
                for k in [1, 3, n / 2, n, n + 2] {
                    assert_eq!(
                        mmr_order(&query, &refs, k, lambda),
                        brute_force(&query, &cands, k, lambda as f64),
                        "round {round}, lambda {lambda}, k {k}"
                    );
                }
            }
        }
    }

    #[test]
    fn mmr_spreads_over_near_duplicates_and_lambda_one_keeps_the_ranking() {
        let query = [1.0f32, 0.0];
        // The second is the first again; the third is half-way; the fourth shares nothing.
        let cands: Vec<&[f32]> = vec![&[1.0, 0.0], &[0.99, 0.0], &[0.8, 0.6], &[0.0, 1.0]];
        // 2λ − 1, 0.8 (2λ − 1) and 0 for the three left after the first.
        assert_eq!(mmr_order(&query, &cands, 2, 0.25), vec![0, 3]);
        assert_eq!(mmr_order(&query, &cands, 2, 0.75), vec![0, 1]);
        assert_eq!(mmr_order(&query, &cands, 4, 1.0), vec![0, 1, 2, 3]);
        assert_eq!(mmr_order(&query, &cands, 0, 0.5), Vec::<usize>::new());
        // A zero vector is similar to nothing, and still chosen when nothing else is left.
        let zero: Vec<&[f32]> = vec![&[0.0, 0.0], &[1.0, 0.0]];
        assert_eq!(mmr_order(&query, &zero, 2, 0.5), vec![1, 0]);
    }

    #[test]
    fn groups_keep_distinct_documents_in_rank_order() {
        let hit = |id: u64, score: f32| Hit { id, score };
        // Passage id / 10 is its document.
        let hits = vec![
            hit(11, 0.9),
            hit(12, 0.8),
            hit(13, 0.7),
            hit(21, 0.6),
            hit(99, 0.55),
            hit(31, 0.5),
            hit(22, 0.4),
            hit(41, 0.3),
        ];
        let doc = |id: u64| (id != 99).then_some(id / 10);
        let (one, full) = group_hits(hits.clone(), 3, Grouping { group_size: 1 }, doc);
        assert!(full);
        assert_eq!(
            one.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![11, 21, 31]
        );
        let (two, full) = group_hits(hits.clone(), 3, Grouping { group_size: 2 }, doc);
        assert!(full);
        assert_eq!(
            two.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![11, 12, 21, 22, 31]
        );
        let (all, full) = group_hits(hits, 9, Grouping { group_size: 5 }, doc);
        assert!(!full, "only four documents");
        assert_eq!(all.len(), 7);
    }
}
