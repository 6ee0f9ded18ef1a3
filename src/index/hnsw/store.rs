//! Contiguous vector storage: one row per graph node, row-major, starting on a cache-line
//! boundary.
//!
//! The allocator only promises `f32` alignment, and a row that straddles one more cache line
//! than it needs costs a memory access on every distance computation. So the buffer keeps up to
//! 15 spare floats in front and the rows start at the first 64-byte boundary; when growth moves
//! the allocation, the rows are shifted to the new boundary. With a dimension that is a multiple
//! of 16 (384, 768, …) every row is then cache-line aligned.

/// Floats per cache line.
const LINE_FLOATS: usize = 16;

/// Row-major `f32` rows of a fixed dimension.
#[derive(Clone, Debug, Default)]
pub(super) struct VectorStore {
    dim: usize,
    rows: usize,
    /// Index in `buf` of the first component of row 0.
    start: usize,
    buf: Vec<f32>,
}

impl VectorStore {
    /// An empty store for rows of `dim` components, with room for `rows` rows.
    pub(super) fn with_capacity(dim: usize, rows: usize) -> Self {
        let mut store = VectorStore {
            dim,
            rows: 0,
            start: 0,
            buf: Vec::new(),
        };
        store.reserve_exact(rows);
        store
    }

    /// A store holding `values` (`values.len() / dim` rows).
    pub(super) fn from_rows(dim: usize, values: &[f32]) -> Self {
        let mut store = Self::with_capacity(dim, values.len() / dim.max(1));
        store.extend(values);
        store
    }

    /// Number of rows.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.rows
    }

    /// Row `i`. Panics if `i` is out of range.
    #[inline]
    pub(super) fn row(&self, i: u32) -> &[f32] {
        let at = self.start + i as usize * self.dim;
        &self.buf[at..at + self.dim]
    }

    /// Every row, row-major.
    pub(super) fn as_slice(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.rows * self.dim]
    }

    /// Makes room for `additional` more rows without over-allocating.
    fn reserve_exact(&mut self, additional: usize) {
        let needed = (self.rows + additional) * self.dim + LINE_FLOATS - 1;
        if self.buf.capacity() < needed {
            self.buf.reserve_exact(needed - self.buf.len());
        }
    }

    /// Appends `values`, a whole number of rows.
    pub(super) fn extend(&mut self, values: &[f32]) {
        debug_assert_eq!(values.len() % self.dim.max(1), 0);
        let added = values.len() / self.dim.max(1);
        let needed = (self.rows + added) * self.dim + LINE_FLOATS - 1;
        if self.buf.capacity() < needed {
            // Grow geometrically so that a stream of small batches stays amortised O(1).
            let target = needed.max(self.buf.capacity() + self.buf.capacity() / 2);
            self.buf.reserve_exact(target - self.buf.len());
        }
        let old_end = self.start + self.rows * self.dim;
        let start = self
            .buf
            .as_ptr()
            .align_offset(LINE_FLOATS * 4)
            .min(LINE_FLOATS - 1);
        let end = start + (self.rows + added) * self.dim;
        if self.buf.len() < end {
            // Capacity suffices, so this never reallocates and `start` stays valid.
            self.buf.resize(end, 0.0);
        }
        if start != self.start {
            self.buf.copy_within(self.start..old_end, start);
            self.start = start;
        }
        let at = start + self.rows * self.dim;
        self.buf[at..at + values.len()].copy_from_slice(values);
        self.rows += added;
    }

    /// Heap bytes held.
    pub(super) fn memory_bytes(&self) -> usize {
        self.buf.capacity() * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_stay_aligned_and_intact_across_growth() {
        let dim = 32;
        let mut s = VectorStore::with_capacity(dim, 1);
        let mut expect = Vec::new();
        for batch in 0..50u32 {
            let rows: Vec<f32> = (0..dim * (batch as usize % 3 + 1))
                .map(|i| (batch * 1000 + i as u32) as f32)
                .collect();
            s.extend(&rows);
            expect.extend_from_slice(&rows);
            assert_eq!(s.as_slice(), &expect[..]);
            assert_eq!(s.row(0).as_ptr() as usize % 64, 0);
        }
        assert_eq!(s.len(), expect.len() / dim);
        assert_eq!(s.row(3), &expect[3 * dim..4 * dim]);
    }
}
