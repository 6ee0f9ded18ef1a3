//! Search: ranking the lists by centroid score (completing split centroids only where they
//! could rank), and scanning the probed lists with the head/tail bound.

use std::cell::RefCell;

use super::IvfIndex;
use super::lists::{InvertedList, Layout};
use crate::distance::{self, Metric};
use crate::index::kmeans::{BOUND_SLACK, KMeans, dot_rows, rounding};
use crate::index::topk::TopK;
use crate::index::{Filter, Hit, IndexError, IndexResult, SearchParams};

/// Rows of a list scored in one batch before their scores are offered to the top-k.
const SCAN_BLOCK: usize = 64;

/// Per-thread buffers reused across searches.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// The query in the stored basis.
    query: Vec<f32>,
    centroid_scores: Vec<f32>,
    /// Lower bounds of centroid scores, while ranking split centroids.
    floors: Vec<f32>,
    /// Whether some centroids were left unscored by the last ranking.
    partial: bool,
    order: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch buffers, or with fresh ones when they are in use (a
/// filter callback that itself searches).
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

impl IvfIndex {
    pub(super) fn resolve_nprobe(&self, params: &SearchParams) -> IndexResult<usize> {
        match params.nprobe {
            Some(0) => Err(IndexError::InvalidParameter(
                "nprobe must be at least 1".into(),
            )),
            Some(n) => Ok(n),
            None => Ok(self.default_nprobe()),
        }
    }

    /// The search proper, on a validated query (as the metric stores it).
    pub(super) fn search_prepared(
        &self,
        query: &[f32],
        k: usize,
        nprobe: usize,
        filter: Option<Filter<'_>>,
        scratch: &mut Scratch,
    ) -> Vec<Hit> {
        let mut top = TopK::new(k);
        let mut q = std::mem::take(&mut scratch.query);
        q.clear();
        q.extend_from_slice(query);
        if let Some(r) = &self.rotation {
            r.apply(&mut q);
        }
        let probe = Probe::new(self.metric, self.layout(), &q);
        let Some(quantizer) = &self.quantizer else {
            self.scan(&self.lists[0], &probe, filter, &mut top);
            scratch.query = q;
            return top.into_sorted_vec();
        };
        let nlist = self.lists.len();
        let nprobe = nprobe.min(nlist);
        self.rank_lists(quantizer, &probe, nprobe, scratch);
        let order = &scratch.order;
        // The vectors an unfiltered search scans; a filtered one works to the same budget.
        let budget: usize = order[..nprobe]
            .iter()
            .map(|&l| self.lists[l as usize].len())
            .sum();
        let (mut examined, mut scored) = (0usize, 0usize);
        for i in 0..nlist {
            if i >= nprobe {
                let enough = filter.is_none()
                    || (examined as u128) * (scored as u128) >= (budget as u128).pow(2);
                if top.is_full() && enough {
                    break;
                }
                if i == nprobe {
                    // Rarely needed: rank the remaining lists in full, once.
                    self.finish_ranking(quantizer, &probe, nprobe, scratch);
                }
            }
            let list = &self.lists[scratch.order[i] as usize];
            examined += list.len();
            scored += self.scan(list, &probe, filter, &mut top);
        }
        scratch.query = q;
        top.into_sorted_vec()
    }

    /// Scores the centroids and leaves in `scratch.order` all list numbers, the best `nprobe`
    /// first and sorted best first, with their exact scores in `scratch.centroid_scores`. With
    /// split centroids only the heads are scored in full; a centroid's tail is added only when
    /// its upper bound reaches the `nprobe`-th best lower bound, and the others are left at
    /// −∞ (`scratch.partial` is set, and [`finish_ranking`](Self::finish_ranking) scores them
    /// if the search goes past `nprobe` lists).
    fn rank_lists(
        &self,
        quantizer: &KMeans,
        probe: &Probe<'_>,
        nprobe: usize,
        scratch: &mut Scratch,
    ) {
        let scores = &mut scratch.centroid_scores;
        scores.resize(quantizer.k(), 0.0);
        scratch.partial = false;
        match quantizer.split_parts() {
            None => {
                dot_rows(probe.query, quantizer.centroids(), scores);
                if self.metric == Metric::L2 {
                    scores
                        .iter_mut()
                        .zip(quantizer.bias())
                        .for_each(|(s, b)| *s += b);
                }
            }
            Some((heads, tails, tail_norms)) => {
                dot_rows(probe.head, heads, scores);
                let reach = probe.tail_norm * (1.0 + BOUND_SLACK);
                let floors = &mut scratch.floors;
                floors.clear();
                floors.extend(scores.iter_mut().zip(quantizer.bias()).zip(tail_norms).map(
                    |((s, &b), &n)| {
                        *s += b;
                        *s - reach * n - rounding(*s)
                    },
                ));
                let floor = if nprobe < floors.len() {
                    *floors
                        .select_nth_unstable_by(nprobe - 1, |a, b| b.total_cmp(a))
                        .1
                } else {
                    f32::NEG_INFINITY
                };
                let t = self.dim - quantizer.head();
                for (c, (s, &n)) in scores.iter_mut().zip(tail_norms).enumerate() {
                    if *s + reach * n + rounding(*s) >= floor {
                        *s += distance::dot(probe.tail, &tails[c * t..(c + 1) * t]);
                    } else {
                        *s = f32::NEG_INFINITY;
                        scratch.partial = true;
                    }
                }
            }
        }
        let order = &mut scratch.order;
        order.clear();
        order.extend(0..self.lists.len() as u32);
        let scores = &scratch.centroid_scores;
        if nprobe < order.len() {
            order.select_nth_unstable_by(nprobe - 1, |&a, &b| rank_cmp(scores, a, b));
        }
        order[..nprobe].sort_unstable_by(|&a, &b| rank_cmp(scores, a, b));
    }

    /// Ranks the lists after the first `nprobe` in full, scoring any centroid that
    /// [`rank_lists`](Self::rank_lists) left unscored. Runs only when a search must go past
    /// its `nprobe` lists.
    fn finish_ranking(
        &self,
        quantizer: &KMeans,
        probe: &Probe<'_>,
        nprobe: usize,
        scratch: &mut Scratch,
    ) {
        let Scratch {
            centroid_scores: scores,
            order,
            partial,
            ..
        } = scratch;
        if let (true, Some((heads, tails, _))) = (*partial, quantizer.split_parts()) {
            let (h, t) = (quantizer.head(), self.dim - quantizer.head());
            for &c in &order[nprobe..] {
                let c = c as usize;
                scores[c] = distance::dot(probe.head, &heads[c * h..(c + 1) * h])
                    + quantizer.bias()[c]
                    + distance::dot(probe.tail, &tails[c * t..(c + 1) * t]);
            }
        }
        *partial = false;
        order[nprobe..].sort_unstable_by(|&a, &b| rank_cmp(scores, a, b));
    }

    /// Offers every vector of `list` (that the filter accepts) to `top`; returns how many were
    /// scored. With split rows a row's tail is read only when its head score plus the largest
    /// contribution its tail could make reaches the current k-th best score.
    fn scan(
        &self,
        list: &InvertedList,
        probe: &Probe<'_>,
        filter: Option<Filter<'_>>,
        top: &mut TopK,
    ) -> usize {
        let (h, t) = (self.head, self.dim - self.head);
        let mut threshold = top.threshold();
        let mut offer = |i: usize, head_score: f32, top: &mut TopK| {
            let score = if t == 0 {
                head_score
            } else {
                if probe.bound(head_score, list.tail_norms[i]) < threshold {
                    return;
                }
                head_score + probe.tail_score(&list.tails[i * t..(i + 1) * t])
            };
            if score >= threshold && top.push(list.ids[i], score) {
                threshold = top.threshold();
            }
        };
        match filter {
            None => {
                let mut scores = [0.0f32; SCAN_BLOCK];
                for (b, heads) in list.heads.chunks(SCAN_BLOCK * h).enumerate() {
                    let scores = &mut scores[..heads.len() / h];
                    probe.head_scores(heads, scores);
                    for (j, &s) in scores.iter().enumerate() {
                        offer(b * SCAN_BLOCK + j, s, top);
                    }
                }
                list.len()
            }
            Some(accept) => {
                let mut scored = 0;
                for (i, &id) in list.ids.iter().enumerate() {
                    if !accept(id) {
                        continue;
                    }
                    scored += 1;
                    let mut s = [0.0f32];
                    probe.head_scores(&list.heads[i * h..(i + 1) * h], &mut s);
                    offer(i, s[0], top);
                }
                scored
            }
        }
    }
}

/// A query prepared for scanning lists: the whole query, its head and tail in the stored
/// basis, and what the tail bound needs.
struct Probe<'q> {
    metric: Metric,
    query: &'q [f32],
    head: &'q [f32],
    tail: &'q [f32],
    tail_norm: f32,
}

impl<'q> Probe<'q> {
    fn new(metric: Metric, layout: Layout, query: &'q [f32]) -> Self {
        let (head, tail) = query.split_at(layout.head);
        Probe {
            metric,
            query,
            head,
            tail,
            tail_norm: distance::dot(tail, tail).sqrt(),
        }
    }

    /// The metric's score of the query's head against each head row in `heads`.
    #[inline]
    fn head_scores(&self, heads: &[f32], out: &mut [f32]) {
        score_rows(self.metric, self.head, heads, out);
    }

    /// The tail's share of the score.
    #[inline]
    fn tail_score(&self, tail: &[f32]) -> f32 {
        self.metric.score(self.tail, tail)
    }

    /// An upper bound on the full score of a row whose head scored `head_score` and whose tail
    /// has norm `tail_norm`: Cauchy–Schwarz for inner products, the reverse triangle inequality
    /// for distances, both loosened by [`BOUND_SLACK`] against rounding.
    #[inline]
    fn bound(&self, head_score: f32, tail_norm: f32) -> f32 {
        let slack = rounding(head_score);
        match self.metric {
            Metric::Cosine | Metric::Dot => {
                head_score + self.tail_norm * tail_norm * (1.0 + BOUND_SLACK) + slack
            }
            Metric::L2 => {
                let gap = self.tail_norm - tail_norm;
                head_score - gap * gap * (1.0 - BOUND_SLACK) + slack
            }
        }
    }
}

/// `metric`'s score of `query` against each of the `out.len()` rows in `rows`: the crate's SIMD
/// inner product (cosine, dot) or negated squared distance (L2), row by row.
#[inline]
fn score_rows(metric: Metric, query: &[f32], rows: &[f32], out: &mut [f32]) {
    match metric {
        Metric::Cosine | Metric::Dot => dot_rows(query, rows, out),
        Metric::L2 => {
            let l2 = distance::kernels().l2_squared;
            for (o, row) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
                *o = -l2(query, row);
            }
        }
    }
}

/// Orders lists best first by centroid score, ties by list number.
#[inline]
fn rank_cmp(scores: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    scores[b as usize]
        .total_cmp(&scores[a as usize])
        .then(a.cmp(&b))
}
