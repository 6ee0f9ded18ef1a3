//! Inverted lists: rows stored contiguously per k-means cell, head and tail apart, and the
//! placement, replacement and removal of rows in them.

use super::IvfIndex;
use crate::distance;
use crate::index::{IndexResult, VectorIndex, validate};

/// One inverted list. Row `i` is stored under `ids[i]`: its first `head` coordinates (in the
/// index's stored basis) in `heads`, the other `dim − head` in `tails`, and the norm of those
/// in `tail_norms`. Without a split `head` is `dim` and the tail arrays stay empty.
#[derive(Clone, Debug, Default)]
pub(super) struct InvertedList {
    pub(super) ids: Vec<u64>,
    pub(super) heads: Vec<f32>,
    pub(super) tails: Vec<f32>,
    pub(super) tail_norms: Vec<f32>,
}

impl InvertedList {
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Makes room for `extra` more rows. Growth is by at least a quarter of the current size,
    /// not Vec's doubling, so that a trained index with exactly sized lists does not double its
    /// memory on the first small add.
    pub(super) fn reserve(&mut self, extra: usize, layout: Layout) {
        let len = self.ids.len();
        if len + extra > self.ids.capacity() {
            let grow = extra.max(len / 4);
            self.ids.reserve_exact(grow);
            self.heads.reserve_exact(grow * layout.head);
            if layout.tail() > 0 {
                self.tails.reserve_exact(grow * layout.tail());
                self.tail_norms.reserve_exact(grow);
            }
        }
    }

    /// Appends a row given in the stored basis.
    pub(super) fn push(&mut self, id: u64, row: &[f32], layout: Layout) {
        let (head, tail) = row.split_at(layout.head);
        self.ids.push(id);
        self.heads.extend_from_slice(head);
        if !tail.is_empty() {
            self.tails.extend_from_slice(tail);
            self.tail_norms.push(distance::dot(tail, tail).sqrt());
        }
    }

    /// Overwrites row `pos` with a row given in the stored basis.
    pub(super) fn set(&mut self, pos: usize, row: &[f32], layout: Layout) {
        let (head, tail) = row.split_at(layout.head);
        self.heads[pos * layout.head..(pos + 1) * layout.head].copy_from_slice(head);
        if !tail.is_empty() {
            let t = layout.tail();
            self.tails[pos * t..(pos + 1) * t].copy_from_slice(tail);
            self.tail_norms[pos] = distance::dot(tail, tail).sqrt();
        }
    }

    /// Removes row `pos` by moving the last row into it; returns the moved row's id, if any.
    pub(super) fn swap_remove(&mut self, pos: usize, layout: Layout) -> Option<u64> {
        let last = self.ids.len() - 1;
        let (h, t) = (layout.head, layout.tail());
        let moved = (pos != last).then(|| {
            self.ids[pos] = self.ids[last];
            self.heads.copy_within(last * h..(last + 1) * h, pos * h);
            if t > 0 {
                self.tails.copy_within(last * t..(last + 1) * t, pos * t);
                self.tail_norms[pos] = self.tail_norms[last];
            }
            self.ids[pos]
        });
        self.ids.pop();
        self.heads.truncate(last * h);
        if t > 0 {
            self.tails.truncate(last * t);
            self.tail_norms.pop();
        }
        moved
    }

    /// Appends every row, in the stored basis, to `out`.
    pub(super) fn rows_into(&self, layout: Layout, out: &mut Vec<f32>) {
        out.reserve(self.len() * layout.dim);
        for i in 0..self.len() {
            out.extend_from_slice(&self.heads[i * layout.head..(i + 1) * layout.head]);
            let t = layout.tail();
            out.extend_from_slice(&self.tails[i * t..(i + 1) * t]);
        }
    }

    pub(super) fn memory_bytes(&self) -> usize {
        self.ids.capacity() * size_of::<u64>()
            + (self.heads.capacity() + self.tails.capacity() + self.tail_norms.capacity())
                * size_of::<f32>()
    }
}

/// How rows are cut: `head` leading coordinates, then `dim − head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) dim: usize,
    pub(super) head: usize,
}

impl Layout {
    pub(super) fn tail(self) -> usize {
        self.dim - self.head
    }
}

/// Where a vector lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Slot {
    pub(super) list: u32,
    pub(super) pos: u32,
}

impl IvfIndex {
    /// Adds a validated batch; trains afterwards if allowed and due.
    pub(super) fn insert(
        &mut self,
        ids: &[u64],
        vectors: &[f32],
        may_train: bool,
    ) -> IndexResult<()> {
        let prepared = validate::prepare_batch(self.metric, self.dim, ids, vectors)?;
        if ids.is_empty() {
            return Ok(());
        }
        match &self.quantizer {
            Some(q) => {
                let mut rows = prepared.into_owned();
                Self::rotate_rows(self.rotation.as_ref(), self.dim, &mut rows);
                let labels = q.assign(&rows);
                self.place(ids, &rows, |i| labels[i]);
            }
            None => {
                self.place(ids, &prepared, |_| 0);
                if may_train && self.params.train_at.is_some_and(|t| self.len() >= t.max(1)) {
                    // Training cannot fail on a non-empty index; if it ever did, the vectors
                    // stay added and searches stay exact.
                    self.train()?;
                }
            }
        }
        Ok(())
    }

    /// Stores each row (in the stored basis) in its target list, replacing earlier vectors
    /// under the same id.
    pub(super) fn place(&mut self, ids: &[u64], rows: &[f32], target: impl Fn(usize) -> u32) {
        let layout = self.layout();
        let mut extra = vec![0usize; self.lists.len()];
        (0..ids.len()).for_each(|i| extra[target(i) as usize] += 1);
        for (list, &e) in self.lists.iter_mut().zip(&extra) {
            if e > 0 {
                list.reserve(e, layout);
            }
        }
        for (i, (&id, row)) in ids.iter().zip(rows.chunks_exact(self.dim)).enumerate() {
            let list = target(i);
            match self.slots.get(&id).copied() {
                Some(slot) if slot.list == list => {
                    self.lists[list as usize].set(slot.pos as usize, row, layout);
                }
                existing => {
                    if let Some(slot) = existing {
                        self.remove_slot(slot);
                    }
                    let l = &mut self.lists[list as usize];
                    let slot = Slot {
                        list,
                        pos: l.len() as u32,
                    };
                    l.push(id, row, layout);
                    self.slots.insert(id, slot);
                }
            }
        }
    }

    /// Removes the row at `slot` by moving the list's last row into it. The caller has
    /// already removed (or is replacing) the id's map entry.
    pub(super) fn remove_slot(&mut self, slot: Slot) {
        let layout = self.layout();
        if let Some(moved) = self.lists[slot.list as usize].swap_remove(slot.pos as usize, layout) {
            self.slots
                .get_mut(&moved)
                .expect("every stored id is mapped. This is a bug.")
                .pos = slot.pos;
        }
    }
}

/// Adds each row (in the stored basis) to the list its label names.
pub(super) fn fill_lists(
    lists: &mut [InvertedList],
    layout: Layout,
    ids: &[u64],
    rows: &[f32],
    labels: &[u32],
) {
    for ((&id, row), &l) in ids.iter().zip(rows.chunks_exact(layout.dim)).zip(labels) {
        lists[l as usize].push(id, row, layout);
    }
}

/// Sizes empty lists exactly for the rows that `labels` sends them.
pub(super) fn reserve_lists(lists: &mut [InvertedList], layout: Layout, labels: &[u32]) {
    let mut sizes = vec![0usize; lists.len()];
    labels.iter().for_each(|&l| sizes[l as usize] += 1);
    for (list, &s) in lists.iter_mut().zip(&sizes) {
        list.reserve(s, layout);
    }
}
