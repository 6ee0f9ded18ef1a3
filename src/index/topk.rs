//! A bounded collector of the `k` best hits, shared by every index.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use super::Hit;

/// Heap entry ordered so that the heap's maximum is the *worst* kept hit: lowest score, and
/// among equal scores the largest id (ties resolve to ascending ids in results).
#[derive(Clone, Copy, Debug)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.id.cmp(&other.0.id))
    }
}

/// Keeps the `k` highest-scoring hits seen so far.
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// An empty collector for `k` hits.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1 << 16)),
        }
    }

    /// Whether `k` hits are held.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.heap.len() >= self.k
    }

    /// Number of hits held.
    #[inline]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no hit is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The score a new hit must beat to be kept once full; `-inf` while not full.
    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.is_full() {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score)
        } else {
            f32::NEG_INFINITY
        }
    }

    /// Offers a hit; returns whether it was kept.
    #[inline]
    pub fn push(&mut self, id: u64, score: f32) -> bool {
        if self.k == 0 {
            return false;
        }
        let entry = Worst(Hit { id, score });
        if self.heap.len() < self.k {
            self.heap.push(entry);
            return true;
        }
        let mut worst = self.heap.peek_mut().expect("a full heap has a top");
        if entry < *worst {
            *worst = entry;
            true
        } else {
            false
        }
    }

    /// Folds another collector's hits into this one.
    pub fn merge(&mut self, other: TopK) {
        for Worst(h) in other.heap {
            self.push(h.id, h.score);
        }
    }

    /// The hits, best first (ties by ascending id).
    pub fn into_sorted_vec(self) -> Vec<Hit> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_sorted_with_id_ties() {
        let mut t = TopK::new(3);
        for (id, s) in [(5, 0.1), (1, 0.9), (2, 0.5), (9, 0.9), (3, 0.7), (4, -1.0)] {
            t.push(id, s);
        }
        let ids: Vec<u64> = t.into_sorted_vec().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![1, 9, 3]);
    }

    #[test]
    fn threshold_and_merge() {
        let mut a = TopK::new(2);
        assert_eq!(a.threshold(), f32::NEG_INFINITY);
        a.push(1, 1.0);
        a.push(2, 2.0);
        assert_eq!(a.threshold(), 1.0);
        let mut b = TopK::new(2);
        b.push(3, 3.0);
        a.merge(b);
        let ids: Vec<u64> = a.into_sorted_vec().iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![3, 2]);
        assert!(TopK::new(0).into_sorted_vec().is_empty());
    }
}
