//! Graph traversal shared by queries and by insertion: greedy descent through the upper levels
//! and the best-first beam search of one level, over the compact [`Graph`] and [`VectorStore`].
//!
//! Per-search state (a visited bitset and the two heaps) lives in a [`Scratch`]
//! that each thread keeps and reuses, so a search allocates nothing but its result. Heap entries
//! are single `u64`s: the score mapped to an order-preserving `u32` in the high half and the
//! node in the low half, so every heap comparison is one integer comparison.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::graph::Graph;
use super::store::VectorStore;
use crate::distance::{self, Metric};

/// A metric's similarity kernel, resolved once (instead of through the dispatch table on every
/// call) and applied to rows of the store.
#[derive(Clone, Copy)]
pub(super) struct Scorer {
    kernel: fn(&[f32], &[f32]) -> f32,
    negate: bool,
}

impl Scorer {
    /// The kernel [`Metric::score`] would use, as a direct function pointer.
    pub(super) fn new(metric: Metric) -> Self {
        let kernels = distance::kernels();
        match metric {
            Metric::Cosine | Metric::Dot => Scorer {
                kernel: kernels.dot,
                negate: false,
            },
            Metric::L2 => Scorer {
                kernel: kernels.l2_squared,
                negate: true,
            },
        }
    }

    /// Similarity of two preprocessed vectors, higher is closer; equal to [`Metric::score`],
    /// except that NaN (an inner product of finite vectors whose terms overflow to +∞ and −∞)
    /// becomes −∞ and so ranks last instead of first.
    #[inline(always)]
    pub(super) fn score(&self, a: &[f32], b: &[f32]) -> f32 {
        let s = (self.kernel)(a, b);
        let s = if self.negate { -s } else { s };
        if s.is_nan() { f32::NEG_INFINITY } else { s }
    }
}

/// Maps a score to a `u32` whose unsigned order is the score's total order.
#[inline(always)]
pub(super) fn ord_key(score: f32) -> u32 {
    let bits = score.to_bits();
    if bits >> 31 == 1 {
        !bits
    } else {
        bits | 1 << 31
    }
}

/// Inverse of [`ord_key`].
#[inline(always)]
pub(super) fn key_score(key: u32) -> f32 {
    f32::from_bits(if key >> 31 == 1 {
        key & !(1 << 31)
    } else {
        !key
    })
}

#[inline(always)]
fn pack(score: f32, node: u32) -> u64 {
    (u64::from(ord_key(score)) << 32) | u64::from(node)
}

#[inline(always)]
fn unpack(entry: u64) -> (f32, u32) {
    (key_score((entry >> 32) as u32), entry as u32)
}

/// Reusable per-thread search state.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// One bit per node, set for the nodes seen by the current search. A bit rather than the
    /// usual epoch tag of 16 bits: a search checks the mark of every neighbour it meets, at
    /// random places, and a bitset of 100,000 nodes (12.5 KB) stays in the first-level cache
    /// where tags (200 KB) missed it; at a million nodes the bits fit the second level.
    visited: Vec<u64>,
    /// Words of `visited` made non-zero since the last search, to clear only those.
    dirty: Vec<u32>,
    /// Nodes still to expand, best first.
    candidates: BinaryHeap<u64>,
    /// The best admitted nodes so far, worst on top.
    results: BinaryHeap<Reverse<u64>>,
    /// Unvisited neighbours of the node being expanded.
    fresh: Vec<u32>,
    /// Results of the last search, best first.
    pub(super) found: Vec<(f32, u32)>,
    /// Work space for neighbour selection during insertion: candidates, the selection, and the
    /// selection's node numbers.
    pub(super) pool: Vec<(f32, u32)>,
    pub(super) chosen: Vec<(f32, u32)>,
    pub(super) ids: Vec<u32>,
    /// The same for re-selecting the list of an existing neighbour.
    pub(super) link_pool: Vec<(f32, u32)>,
    pub(super) link_chosen: Vec<(f32, u32)>,
}

/// Above this share of dirty words (1 in 16), clearing the whole bitset at once is cheaper than
/// word by word.
const CLEAR_ALL_SHARE: usize = 16;

impl Scratch {
    /// Starts a new search over a graph of `nodes` nodes.
    fn begin(&mut self, nodes: usize) {
        let words = nodes.div_ceil(64);
        if self.dirty.len() * CLEAR_ALL_SHARE > self.visited.len() {
            self.visited.fill(0);
        } else {
            for &w in &self.dirty {
                self.visited[w as usize] = 0;
            }
        }
        self.dirty.clear();
        if self.visited.len() < words {
            self.visited.resize(words, 0);
        }
        self.candidates.clear();
        self.results.clear();
    }

    /// Marks `node` visited; returns whether it was new.
    #[inline(always)]
    fn visit(&mut self, node: u32) -> bool {
        let w = (node >> 6) as usize;
        if w >= self.visited.len() {
            // A node added to the graph since this search began.
            self.grow(w);
        }
        let bit = 1u64 << (node & 63);
        let word = self.visited[w];
        if word & bit != 0 {
            return false;
        }
        if word == 0 {
            self.dirty.push(w as u32);
        }
        self.visited[w] = word | bit;
        true
    }
}

impl Scratch {
    #[cold]
    fn grow(&mut self, word: usize) {
        let len = (word + 1).max(self.visited.len() * 5 / 4);
        self.visited.resize(len, 0);
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch space. A nested call (a filter that searches another
/// index on the same thread) gets a fresh one instead.
pub(super) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// How many neighbours ahead of the one being scored to prefetch, whole vectors. A search is
/// bound by memory latency (each 384-d row is 24 cache lines, mostly not cached); on the 100k×384
/// benchmark set, fetching 4 rows ahead served 1.5× the queries of 1 row ahead and 1.1× of all
/// rows of a node at once, which overflows the line-fill buffers.
const PREFETCH_AHEAD: usize = 4;

/// What a traversal scores nodes against: a full-precision query (`[f32]`, scored on the
/// view's vectors), or a quantized one that scores the nodes' codes.
pub(super) trait Probe {
    /// Similarity of the query to `node`, higher is closer.
    fn score(&self, view: &View<'_>, node: u32) -> f32;
    /// Starts loading what [`score`](Probe::score) will read for `node`.
    fn prefetch(&self, view: &View<'_>, node: u32);
}

impl Probe for [f32] {
    #[inline(always)]
    fn score(&self, view: &View<'_>, node: u32) -> f32 {
        view.scorer.score(self, view.vectors.row(node))
    }

    #[inline(always)]
    fn prefetch(&self, view: &View<'_>, node: u32) {
        distance::prefetch_read(view.vectors.row(node));
    }
}

/// A read-only view of a graph and its vectors, with the kernel resolved.
#[derive(Clone, Copy)]
pub(super) struct View<'a> {
    pub(super) graph: &'a Graph,
    pub(super) vectors: &'a VectorStore,
    pub(super) scorer: Scorer,
}

impl View<'_> {
    /// Score of `query` against node `node`.
    #[inline(always)]
    pub(super) fn score_to<Q: Probe + ?Sized>(&self, query: &Q, node: u32) -> f32 {
        query.score(self, node)
    }

    /// Greedy walk on `level` from `start` (with its score): moves to the best neighbour while
    /// that improves the score. Returns the local optimum.
    pub(super) fn greedy<Q: Probe + ?Sized>(
        &self,
        query: &Q,
        start: (f32, u32),
        level: usize,
    ) -> (f32, u32) {
        let (mut best, mut node) = start;
        loop {
            let mut moved = false;
            for n in self.graph.neighbours(node, level) {
                let s = self.score_to(query, n);
                if s > best {
                    best = s;
                    node = n;
                    moved = true;
                }
            }
            if !moved {
                return (best, node);
            }
        }
    }

    /// From the top entry point down to level 1 by greedy walks: the best level-0 start for
    /// `query`. `None` on an empty graph.
    pub(super) fn descend<Q: Probe + ?Sized>(&self, query: &Q) -> Option<(f32, u32)> {
        let entry = self.graph.entry()?;
        let mut cur = (self.score_to(query, entry.node), entry.node);
        for level in (1..=entry.level).rev() {
            cur = self.greedy(query, cur, level);
        }
        Some(cur)
    }

    /// Best-first beam search on `level` from `entries` (scored): keeps the `ef` best nodes that
    /// `admit` accepts in `scratch.found`, best first. Nodes `admit` refuses are still traversed;
    /// the search runs until `ef` admitted nodes are held and no candidate can improve them, or
    /// until every reachable node was seen. Returns the number of nodes scored.
    pub(super) fn search_layer<Q: Probe + ?Sized>(
        &self,
        query: &Q,
        entries: &[(f32, u32)],
        ef: usize,
        level: usize,
        admit: impl Fn(u32) -> bool,
        scratch: &mut Scratch,
    ) -> usize {
        let ef = ef.max(1);
        scratch.begin(self.graph.len());
        let mut worst = 0u32;
        for &(s, n) in entries {
            if scratch.visit(n) {
                scratch.candidates.push(pack(s, n));
                if admit(n) {
                    scratch.results.push(Reverse(pack(s, n)));
                    if scratch.results.len() > ef {
                        scratch.results.pop();
                    }
                }
            }
        }
        if scratch.results.len() >= ef {
            worst = (scratch.results.peek().expect("full").0 >> 32) as u32;
        }
        let mut scored = entries.len();
        while let Some(top) = scratch.candidates.pop() {
            if scratch.results.len() >= ef && ((top >> 32) as u32) < worst {
                break;
            }
            if let Some(&next) = scratch.candidates.peek() {
                let slots = self.graph.slots(next as u32, level);
                prefetch_slots(slots);
            }
            scratch.fresh.clear();
            for n in self.graph.neighbours(top as u32, level) {
                if scratch.visit(n) {
                    scratch.fresh.push(n);
                }
            }
            for &n in scratch.fresh.iter().take(PREFETCH_AHEAD) {
                query.prefetch(self, n);
            }
            scored += scratch.fresh.len();
            for i in 0..scratch.fresh.len() {
                if let Some(&ahead) = scratch.fresh.get(i + PREFETCH_AHEAD) {
                    query.prefetch(self, ahead);
                }
                let n = scratch.fresh[i];
                let s = self.score_to(query, n);
                let key = ord_key(s);
                if scratch.results.len() < ef || key > worst {
                    scratch.candidates.push(pack(s, n));
                    if admit(n) {
                        scratch.results.push(Reverse(pack(s, n)));
                        if scratch.results.len() > ef {
                            scratch.results.pop();
                        }
                        if scratch.results.len() >= ef {
                            worst = (scratch.results.peek().expect("full").0 >> 32) as u32;
                        }
                    }
                }
            }
        }
        scratch.found.clear();
        while let Some(Reverse(e)) = scratch.results.pop() {
            scratch.found.push(unpack(e));
        }
        scratch.found.reverse();
        scored
    }

    /// The neighbour-selection heuristic of Malkov & Yashunin (Algorithm 4, without extending
    /// or refilling): walks `candidates` (best first, scored against the base node) and keeps a
    /// candidate only if it is closer to the base than to every candidate kept before it, up to
    /// `max`. Spreading neighbours over directions this way is what keeps clustered data
    /// navigable. `skip` excludes nodes outright.
    pub(super) fn select_neighbours(
        &self,
        candidates: &[(f32, u32)],
        max: usize,
        skip: impl Fn(u32) -> bool,
        out: &mut Vec<(f32, u32)>,
    ) {
        out.clear();
        for &(s, c) in candidates {
            if out.len() >= max {
                break;
            }
            if skip(c) {
                continue;
            }
            let vc = self.vectors.row(c);
            if out
                .iter()
                .all(|&(_, kept)| self.scorer.score(vc, self.vectors.row(kept)) <= s)
            {
                out.push((s, c));
            }
        }
    }
}

/// Prefetches a neighbour list (its first two cache lines; a level-0 list of `M = 16` spans
/// 132 bytes).
#[inline(always)]
fn prefetch_slots(slots: &[std::sync::atomic::AtomicU32]) {
    distance::prefetch_read(&slots[..slots.len().min(32)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_order_and_round_trip() {
        let xs = [
            f32::NEG_INFINITY,
            -3.5,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            0.25,
            7.0,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(ord_key(w[0]) < ord_key(w[1]), "{} vs {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(key_score(ord_key(x)).to_bits(), x.to_bits());
        }
        assert_eq!(unpack(pack(-2.5, 77)), (-2.5, 77));
    }

    #[test]
    fn visited_marks_clear_between_searches_and_grow() {
        let mut s = Scratch::default();
        // Few marks (cleared word by word), then nearly all (cleared at once), repeatedly.
        for round in 0..200u32 {
            s.begin(1_000);
            let marked: Vec<u32> = if round % 2 == 0 {
                vec![round, 999 - round, 500]
            } else {
                (0..1_000).filter(|n| n % 3 != 0).collect()
            };
            for &n in &marked {
                assert!(s.visit(n), "round {round}: {n} seen before");
                assert!(!s.visit(n));
            }
            // A node past the size the search began with (added meanwhile).
            assert!(s.visit(5_000 + round));
            assert!(!s.visit(5_000 + round));
        }
        s.begin(10);
        assert!((0..10_000).all(|n| s.visit(n)), "every mark cleared");
    }
}
