//! The map from a live caller id to its node, which writers use to replace and delete.
//!
//! The caller's id of every node is already in the index's id rows, so the table holds node
//! numbers only and finds a node's id through them: 4 bytes a slot where a `HashMap<u64, u32>`
//! takes 16 (the id again, and padding). At a million vectors that is 10 MB instead of 36.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Live ids to their nodes; every method takes `id_of`, the node's id as the id rows hold it.
#[derive(Default)]
pub(super) struct IdMap {
    table: HashTable<u32>,
    /// Seeded per map: ids may come from clients, and a fixed hash would let them collide.
    hasher: RandomState,
}

impl IdMap {
    fn hash(&self, id: u64) -> u64 {
        self.hasher.hash_one(id)
    }

    /// Number of live ids.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The node of `id`, if it is live.
    pub(super) fn get(&self, id: u64, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        self.table
            .find(self.hash(id), |&node| id_of(node) == id)
            .copied()
    }

    /// Makes `node` the node of `id_of(node)`; returns the node that held it before, if any.
    pub(super) fn insert(&mut self, node: u32, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        let id = id_of(node);
        let hash = self.hash(id);
        let hasher = &self.hasher;
        match self.table.entry(
            hash,
            |&other| id_of(other) == id,
            |&other| hasher.hash_one(id_of(other)),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                Some(std::mem::replace(slot.get_mut(), node))
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(node);
                None
            }
        }
    }

    /// Removes `id`; returns its node if it was live.
    pub(super) fn remove(&mut self, id: u64, id_of: impl Fn(u32) -> u64) -> Option<u32> {
        self.table
            .find_entry(self.hash(id), |&node| id_of(node) == id)
            .ok()
            .map(|slot| slot.remove().0)
    }

    /// Makes room for `additional` more ids.
    pub(super) fn reserve(&mut self, additional: usize, id_of: impl Fn(u32) -> u64) {
        let hasher = &self.hasher;
        self.table
            .reserve(additional, |&node| hasher.hash_one(id_of(node)));
    }

    /// The live nodes, in no particular order.
    pub(super) fn nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.table.iter().copied()
    }

    /// Memory the table takes: a node number and a control byte per bucket, with a bucket for
    /// every 7/8 of an id it can hold.
    pub(super) fn memory_bytes(&self) -> usize {
        self.table.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_inserts_replacements_and_removals() {
        // Node n carries id ids[n]; node 3 replaces node 1 under id 70.
        let ids = [10u64, 70, 30, 70, u64::MAX];
        let id_of = |n: u32| ids[n as usize];
        let mut map = IdMap::default();
        map.reserve(2, id_of);
        for node in [0, 1, 2, 4] {
            assert_eq!(map.insert(node, id_of), None);
        }
        assert_eq!(map.insert(3, id_of), Some(1));
        assert_eq!(map.len(), 4);
        assert_eq!(map.get(70, id_of), Some(3));
        assert_eq!(map.get(u64::MAX, id_of), Some(4));
        assert_eq!(map.get(20, id_of), None);
        assert_eq!(map.remove(10, id_of), Some(0));
        assert_eq!(map.remove(10, id_of), None);
        let mut nodes: Vec<u32> = map.nodes().collect();
        nodes.sort_unstable();
        assert_eq!(nodes, [2, 3, 4]);
        assert!(map.memory_bytes() >= 3 * 5);
    }

    #[test]
    fn grows_past_many_ids() {
        let id_of = |n: u32| u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut map = IdMap::default();
        for node in 0..50_000 {
            assert_eq!(map.insert(node, id_of), None);
        }
        for node in (0..50_000).step_by(7) {
            assert_eq!(map.get(id_of(node), id_of), Some(node));
        }
        assert_eq!(map.len(), 50_000);
    }
}
