//! Vector storage: one row per graph node, in [`Rows`] that never move, so that the index's
//! writer can append vectors while searches read the published ones.
//!
//! Buckets start on a cache-line boundary, so with a dimension that is a multiple of 16 (384,
//! 768, …) every row is cache-line aligned and a distance computation touches no more lines
//! than it must.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::rows::{F32Cell, Rows};

/// Rows of `f32` of a fixed dimension.
#[derive(Debug)]
pub(super) struct VectorStore {
    dim: usize,
    rows: Rows<F32Cell>,
    /// Published rows.
    len: AtomicUsize,
}

impl VectorStore {
    /// An empty store for rows of `dim` (at least 1) components, with room for `rows` rows.
    pub(super) fn with_capacity(dim: usize, rows: usize) -> Self {
        let store = VectorStore {
            dim,
            rows: Rows::new(dim.max(1)),
            len: AtomicUsize::new(0),
        };
        store.rows.reserve(rows);
        store
    }

    /// A store holding `values` (`values.len() / dim` rows).
    pub(super) fn from_rows(dim: usize, values: &[f32]) -> Self {
        let store = Self::with_capacity(dim, values.len() / dim.max(1));
        store.push(values);
        store
    }

    /// Number of rows.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Row `i`. Panics if `i` was never written.
    #[inline]
    pub(super) fn row(&self, i: u32) -> &[f32] {
        self.rows.values(i as usize)
    }

    /// Every row, row-major, as the contiguous runs they are stored in.
    pub(super) fn runs(&self) -> impl Iterator<Item = &[f32]> + '_ {
        self.rows.value_runs(self.len())
    }

    /// Every row, row-major, in one buffer.
    pub(super) fn to_vec(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len() * self.dim);
        for run in self.runs() {
            out.extend_from_slice(run);
        }
        out
    }

    /// Appends `values`, a whole number of rows, and publishes them. One caller at a time (the
    /// index's writer); searches may read the published rows meanwhile.
    pub(super) fn push(&self, values: &[f32]) {
        debug_assert_eq!(values.len() % self.rows.width(), 0);
        let first = self.len();
        let end = first + values.len() / self.rows.width();
        self.rows.reserve(end);
        // SAFETY: rows `first..end` lie beyond the published count, which readers never go past,
        // and the single writer is the caller; they are published by the store below.
        unsafe { self.rows.write_values(first, values) };
        self.len.store(end, Ordering::Release);
    }

    /// Memory the rows take.
    pub(super) fn memory_bytes(&self) -> usize {
        self.rows.memory_bytes(self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_stay_aligned_and_intact_across_growth() {
        let dim = 32;
        let s = VectorStore::with_capacity(dim, 1);
        let mut expect = Vec::new();
        let first = {
            s.push(&vec![0.5; dim]);
            expect.extend(vec![0.5; dim]);
            s.row(0).as_ptr()
        };
        for batch in 0..400u32 {
            let rows: Vec<f32> = (0..dim * (batch as usize % 3 + 1))
                .map(|i| (batch * 1000 + i as u32) as f32)
                .collect();
            s.push(&rows);
            expect.extend_from_slice(&rows);
            assert_eq!(s.to_vec(), expect);
        }
        assert_eq!(s.row(0).as_ptr(), first, "rows never move");
        assert_eq!(s.len(), expect.len() / dim);
        for i in [0, 3, 255, 256, s.len() as u32 - 1] {
            assert_eq!(s.row(i), &expect[i as usize * dim..(i as usize + 1) * dim]);
            assert_eq!(s.row(i).as_ptr() as usize % 64, 0);
        }
    }
}
