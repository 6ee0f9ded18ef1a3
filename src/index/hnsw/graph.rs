//! The compact HNSW graph: neighbour lists in arrays of fixed-width rows, addressed by internal
//! `u32` node numbers.
//!
//! * Level 0 holds every node: one list of `1 + 2·M` slots per node (a count, then up to `2·M`
//!   neighbours), so a node's list is one contiguous read.
//! * Upper levels hold about one node in `M` (and one in `M²` above that, …): each such node owns
//!   `level` consecutive lists of `1 + M` slots in a second array, found through
//!   `upper_start`.
//!
//! Slots are atomics so that insertion threads can extend the graph while other threads search
//! it: a writer takes the node's lock, stores the neighbours and then publishes the count with
//! release ordering; readers take no lock. A reader that races with a writer may see a mix of the
//! old and the new list, which only costs the search a slightly different path: every slot
//! always holds a valid node number. On x86-64 and aarch64 these loads and stores are plain
//! moves.
//!
//! Nodes are added at the end ([`Graph::push_nodes`], one caller at a time) into storage that
//! never moves ([`Rows`]), and the node count and entry point are atomics, so a graph can grow
//! while it is searched: readers reach a new node only through a list that names it, published
//! after the node's level and lists were set up.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::rows::Rows;

/// Highest level a node may be drawn at. With `M ≥ 2` a level above 16 has probability below
/// 2⁻¹⁶ per node and only adds a layer with a handful of nodes, so draws are capped here.
pub(super) const MAX_LEVEL: usize = 16;

/// `upper_start` of a node that lives on level 0 only.
const NO_UPPER: u32 = u32::MAX;

/// The packed entry point of a graph that has none.
const NO_ENTRY: u64 = u64::MAX;

/// Spins of a contended node lock before it yields the thread.
const LOCK_SPINS: u32 = 64;

/// The node searches start from: the first node drawn at the highest level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// Internal node number.
    pub(super) node: u32,
    /// Its level.
    pub(super) level: usize,
}

impl Entry {
    fn pack(entry: Option<Entry>) -> u64 {
        entry.map_or(NO_ENTRY, |e| u64::from(e.node) | (e.level as u64) << 32)
    }

    fn unpack(word: u64) -> Option<Entry> {
        (word != NO_ENTRY).then_some(Entry {
            node: word as u32,
            level: (word >> 32) as usize,
        })
    }
}

/// Neighbour lists of every level, for nodes `0..len()`.
pub(super) struct Graph {
    m: usize,
    /// Published nodes.
    len: AtomicUsize,
    level0: Rows<AtomicU32>,
    levels: Rows<AtomicU8>,
    /// Per node, its first row in `upper`, or [`NO_UPPER`].
    upper_start: Rows<AtomicU32>,
    /// One row per list of a node on a level above 0.
    upper: Rows<AtomicU32>,
    /// Rows of `upper` handed out.
    upper_rows: AtomicUsize,
    /// One spin lock per node: 0 free, 1 held.
    locks: Rows<AtomicU8>,
    entry: AtomicU64,
}

/// Holds a node's lock; releases it when dropped.
pub(super) struct NodeGuard<'a>(&'a AtomicU8);

impl Drop for NodeGuard<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

impl Graph {
    /// An empty graph whose nodes keep up to `m` neighbours per upper level and `2·m` on level 0.
    pub(super) fn new(m: usize) -> Self {
        Graph {
            m,
            len: AtomicUsize::new(0),
            level0: Rows::new(1 + 2 * m),
            levels: Rows::new(1),
            upper_start: Rows::new(1),
            upper: Rows::new(1 + m),
            upper_rows: AtomicUsize::new(0),
            locks: Rows::new(1),
            entry: AtomicU64::new(NO_ENTRY),
        }
    }

    /// Number of nodes.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The `M` parameter.
    pub(super) fn m(&self) -> usize {
        self.m
    }

    /// Maximum number of neighbours on `level`.
    #[inline]
    pub(super) fn capacity(&self, level: usize) -> usize {
        if level == 0 { 2 * self.m } else { self.m }
    }

    /// The entry point, `None` while the graph is empty.
    pub(super) fn entry(&self) -> Option<Entry> {
        Entry::unpack(self.entry.load(Ordering::Acquire))
    }

    /// Replaces the entry point. The new entry's lists must be in place: searches start from it
    /// as soon as this returns.
    pub(super) fn set_entry(&self, entry: Option<Entry>) {
        self.entry.store(Entry::pack(entry), Ordering::Release);
    }

    /// The highest level of `node`.
    #[inline]
    pub(super) fn level(&self, node: u32) -> usize {
        usize::from(self.levels.row(node as usize)[0].load(Ordering::Relaxed))
    }

    /// Per-node levels, for snapshots.
    pub(super) fn levels(&self) -> Vec<u8> {
        self.levels
            .collect(self.len(), |l| l.load(Ordering::Relaxed))
    }

    /// The slots of `node`'s list on `level` (`level ≤ self.level(node)`): the count, then
    /// `capacity(level)` neighbour slots.
    #[inline]
    pub(super) fn slots(&self, node: u32, level: usize) -> &[AtomicU32] {
        if level == 0 {
            self.level0.row(node as usize)
        } else {
            let start = self.upper_start.row(node as usize)[0].load(Ordering::Relaxed);
            self.upper.row(start as usize + level - 1)
        }
    }

    /// The neighbours of `node` on `level`, as currently published.
    #[inline]
    pub(super) fn neighbours(&self, node: u32, level: usize) -> impl Iterator<Item = u32> + '_ {
        let slots = self.slots(node, level);
        let count = (slots[0].load(Ordering::Acquire) as usize).min(slots.len() - 1);
        slots[1..=count].iter().map(|s| s.load(Ordering::Relaxed))
    }

    /// Number of neighbours `node` has on `level`.
    #[inline]
    pub(super) fn degree(&self, node: u32, level: usize) -> usize {
        let slots = self.slots(node, level);
        (slots[0].load(Ordering::Acquire) as usize).min(slots.len() - 1)
    }

    /// Publishes `neighbours` (at most `capacity(level)`, extra ones dropped) as `node`'s list on
    /// `level`. Callers that run concurrently with other writers hold [`lock`](Self::lock).
    pub(super) fn set_neighbours(&self, node: u32, level: usize, neighbours: &[u32]) {
        let slots = self.slots(node, level);
        let count = neighbours.len().min(slots.len() - 1);
        for (slot, &n) in slots[1..=count].iter().zip(neighbours) {
            slot.store(n, Ordering::Relaxed);
        }
        slots[0].store(count as u32, Ordering::Release);
    }

    /// Appends `neighbour` to `node`'s list on `level` if there is room; returns whether it did.
    /// The caller holds `node`'s lock.
    pub(super) fn try_push(&self, node: u32, level: usize, neighbour: u32) -> bool {
        let slots = self.slots(node, level);
        let count = slots[0].load(Ordering::Relaxed) as usize;
        if count >= slots.len() - 1 {
            return false;
        }
        slots[1 + count].store(neighbour, Ordering::Relaxed);
        slots[0].store(count as u32 + 1, Ordering::Release);
        true
    }

    /// Serialises writers of `node`'s lists. Held only while a list is rewritten, so a
    /// contended lock spins briefly, then yields.
    #[inline]
    pub(super) fn lock(&self, node: u32) -> NodeGuard<'_> {
        let lock = &self.locks.row(node as usize)[0];
        let mut spins = 0;
        while lock
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            if spins < LOCK_SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        NodeGuard(lock)
    }

    /// Adds nodes with the given levels and empty lists, and publishes them; returns the first
    /// new node number. One caller at a time (the index's writer): searches may run meanwhile.
    pub(super) fn push_nodes(&self, levels: &[u8]) -> u32 {
        let first = self.len();
        let end = first + levels.len();
        self.level0.reserve(end);
        self.levels.reserve(end);
        self.upper_start.reserve(end);
        self.locks.reserve(end);
        let mut upper_rows = self.upper_rows.load(Ordering::Relaxed);
        for (i, &level) in levels.iter().enumerate() {
            let node = first + i;
            self.levels.row(node)[0].store(level, Ordering::Relaxed);
            let start = if level == 0 {
                NO_UPPER
            } else {
                let start = upper_rows;
                upper_rows += usize::from(level);
                self.upper.reserve(upper_rows);
                u32::try_from(start).expect("upper lists fit u32 row numbers")
            };
            self.upper_start.row(node)[0].store(start, Ordering::Relaxed);
        }
        self.upper_rows.store(upper_rows, Ordering::Relaxed);
        self.len.store(end, Ordering::Release);
        first as u32
    }

    /// Level-0 slots as plain numbers, for snapshots.
    pub(super) fn level0_words(&self) -> Vec<u32> {
        self.level0
            .collect(self.len(), |s| s.load(Ordering::Relaxed))
    }

    /// Upper-level slots as plain numbers, for snapshots.
    pub(super) fn upper_words(&self) -> Vec<u32> {
        self.upper
            .collect(self.upper_rows.load(Ordering::Relaxed), |s| {
                s.load(Ordering::Relaxed)
            })
    }

    /// Reassembles a graph from snapshot arrays, checking that they are consistent: sizes match
    /// the levels, counts fit their lists, every neighbour is a node, the entry point exists and
    /// sits on the highest level. Returns a description of the first problem found.
    pub(super) fn from_parts(
        m: usize,
        levels: Vec<u8>,
        level0: Vec<u32>,
        upper: Vec<u32>,
        entry: Option<Entry>,
    ) -> Result<Self, String> {
        let n = levels.len();
        let stride0 = 1 + 2 * m;
        let stride = 1 + m;
        if level0.len() != n * stride0 {
            return Err(format!(
                "level-0 lists hold {} slots, {n} nodes need {}",
                level0.len(),
                n * stride0
            ));
        }
        let upper_len: usize = levels.iter().map(|&l| usize::from(l) * stride).sum();
        if upper.len() != upper_len {
            return Err(format!(
                "upper lists hold {} slots, the levels need {upper_len}",
                upper.len()
            ));
        }
        if let Some(l) = levels.iter().find(|&&l| usize::from(l) > MAX_LEVEL) {
            return Err(format!("level {l} exceeds the maximum {MAX_LEVEL}"));
        }
        let check_lists = |words: &[u32], stride: usize| -> Result<(), String> {
            for list in words.chunks_exact(stride) {
                let count = list[0] as usize;
                if count >= stride {
                    return Err(format!(
                        "a list claims {count} neighbours, at most {}",
                        stride - 1
                    ));
                }
                if let Some(bad) = list[1..=count].iter().find(|&&x| x as usize >= n) {
                    return Err(format!("a list names node {bad}, the graph has {n}"));
                }
            }
            Ok(())
        };
        check_lists(&level0, stride0)?;
        check_lists(&upper, stride)?;
        // An upper-level list may only name nodes that live on that level.
        let mut at = 0;
        for &l in &levels {
            for level in 1..=usize::from(l) {
                let list = &upper[at..at + stride];
                if let Some(bad) = list[1..=list[0] as usize]
                    .iter()
                    .find(|&&x| usize::from(levels[x as usize]) < level)
                {
                    return Err(format!(
                        "node {bad} is listed on level {level} above its own"
                    ));
                }
                at += stride;
            }
        }
        match entry {
            None if n > 0 => return Err("the graph has nodes but no entry point".into()),
            Some(e) if e.node as usize >= n => {
                return Err(format!("entry point {} is not a node", e.node));
            }
            Some(e) => {
                let top = levels.iter().copied().max().map_or(0, usize::from);
                if usize::from(levels[e.node as usize]) != e.level || e.level != top {
                    return Err("the entry point is not on the highest level".into());
                }
            }
            None => {}
        }
        let graph = Graph::new(m);
        graph.push_nodes(&levels);
        for (node, list) in level0.chunks_exact(stride0).enumerate() {
            for (slot, &w) in graph.level0.row(node).iter().zip(list) {
                slot.store(w, Ordering::Relaxed);
            }
        }
        for (row, list) in upper.chunks_exact(stride).enumerate() {
            for (slot, &w) in graph.upper.row(row).iter().zip(list) {
                slot.store(w, Ordering::Relaxed);
            }
        }
        graph.set_entry(entry);
        Ok(graph)
    }

    /// Memory the lists, levels and locks of the nodes take.
    pub(super) fn memory_bytes(&self) -> usize {
        let n = self.len();
        self.level0.memory_bytes(n)
            + self.levels.memory_bytes(n)
            + self.upper_start.memory_bytes(n)
            + self
                .upper
                .memory_bytes(self.upper_rows.load(Ordering::Relaxed))
            + self.locks.memory_bytes(n)
    }
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("m", &self.m)
            .field("nodes", &self.len())
            .field("entry", &self.entry())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_round_trip_through_parts() {
        let g = Graph::new(2);
        g.push_nodes(&[1, 2, 1]);
        g.set_neighbours(0, 0, &[1, 2]);
        g.set_neighbours(1, 1, &[2, 0, 0]); // one too many: truncated to M = 2
        assert!(g.try_push(2, 1, 1));
        assert!(g.try_push(2, 1, 0));
        assert!(!g.try_push(2, 1, 0));
        g.set_entry(Some(Entry { node: 1, level: 2 }));
        assert_eq!(g.neighbours(1, 1).collect::<Vec<_>>(), vec![2, 0]);
        let h =
            Graph::from_parts(2, g.levels(), g.level0_words(), g.upper_words(), g.entry()).unwrap();
        for node in 0..3 {
            for level in 0..=h.level(node) {
                assert_eq!(
                    h.neighbours(node, level).collect::<Vec<_>>(),
                    g.neighbours(node, level).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn rejects_inconsistent_parts() {
        let ok = |levels: Vec<u8>, l0: Vec<u32>, up: Vec<u32>, e| {
            Graph::from_parts(1, levels, l0, up, e)
        };
        let entry = Some(Entry { node: 0, level: 1 });
        assert!(ok(vec![1, 0], vec![1, 1, 0, 0, 0, 0], vec![0, 0], entry).is_ok());
        assert!(ok(vec![1, 0], vec![1, 1, 0, 0, 0], vec![0, 0], entry).is_err());
        assert!(ok(vec![1, 0], vec![1, 7, 0, 0, 0, 0], vec![0, 0], entry).is_err());
        assert!(ok(vec![1, 0], vec![3, 1, 0, 0, 0, 0], vec![0, 0], entry).is_err());
        assert!(ok(vec![1, 0], vec![1, 1, 0, 0, 0, 0], vec![0], entry).is_err());
        assert!(ok(vec![1, 0], vec![0; 6], vec![0, 0], None).is_err());
        let low = Some(Entry { node: 1, level: 0 });
        assert!(ok(vec![1, 0], vec![0; 6], vec![0, 0], low).is_err());
        // Node 0's level-1 list names node 1, which lives on level 0 only.
        assert!(ok(vec![1, 0], vec![0; 6], vec![1, 1], entry).is_err());
    }
}
