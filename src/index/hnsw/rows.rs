//! Append-only storage of fixed-width rows that never move once allocated, so that one thread
//! can add rows while others read the rows already published, with no lock.
//!
//! Rows live in buckets that double in size: bucket `b` holds the `F·2^b` rows from
//! `F·(2^b − 1)` on (`F` = [`FIRST_BUCKET_ROWS`]), so finding a row's bucket is a leading-zeros
//! count. Growing allocates the next bucket and leaves the others where they are, where a `Vec`
//! would copy every row to a new place, which readers would have to be kept out of. Buckets are
//! allocated zeroed, a valid value of every element type ([`Zeroed`]); the operating system maps
//! large zeroed allocations lazily, so the untouched tail of the last bucket costs address space
//! rather than memory.
//!
//! Publication is the caller's business: a row's contents become visible to another thread
//! through whatever the writer releases after writing them (a node count, a neighbour list),
//! which the reader acquires before it reads the row.

use std::alloc::{self, Layout};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// log2 of the rows in the first bucket.
const FIRST_BUCKET_SHIFT: u32 = 8;

/// Rows in the first bucket.
pub(super) const FIRST_BUCKET_ROWS: usize = 1 << FIRST_BUCKET_SHIFT;

/// Bucket slots: enough for `F·(2^32 − 1)` rows, more than `u32` node numbers can use (upper
/// lists number at most a sixteenth as many as nodes, on average).
const BUCKETS: usize = 32;

/// Alignment of every bucket: a cache line, so that rows whose size is a multiple of 64 bytes
/// (384 or 768 `f32`s) each start one.
const BUCKET_ALIGN: usize = 64;

/// Element types whose all-zero bit pattern is a valid value, and that may be shared between
/// threads.
///
/// # Safety
/// Implementors must accept all-zero bytes as a value and be `Sync`.
pub(super) unsafe trait Zeroed: Sync {}

// SAFETY: atomics of integers are plain integers in memory; zero is a value.
unsafe impl Zeroed for AtomicU8 {}
// SAFETY: as above.
unsafe impl Zeroed for AtomicU32 {}
// SAFETY: as above.
unsafe impl Zeroed for AtomicU64 {}
// SAFETY: zero bytes are 0.0; sharing is governed by `Rows::write_values`' contract.
unsafe impl Zeroed for Cell<f32> {}
// SAFETY: zero bytes are 0; sharing as above.
unsafe impl Zeroed for Cell<u8> {}

/// A plain number that the writer of a [`Rows`] may set through a shared reference while the
/// row it belongs to is not yet published (see [`Rows::write_values`]).
#[repr(transparent)]
pub(super) struct Cell<T>(UnsafeCell<T>);

/// Rows of `f32`s: vectors.
pub(super) type F32Cell = Cell<f32>;

// SAFETY: a cell is written only before its row is published and never after, and read only
// after; publication orders the two (see the module docs).
unsafe impl<T: Send> Sync for Cell<T> {}

/// Rows of `width` elements, added at the end and never moved or removed.
pub(super) struct Rows<T: Zeroed> {
    width: usize,
    buckets: [AtomicPtr<T>; BUCKETS],
    /// Rows the allocated buckets hold.
    capacity: AtomicUsize,
}

// SAFETY: the buckets are owned allocations of `T: Sync` elements; all shared access goes
// through `&T` (atomics) or follows `write_values`' contract.
unsafe impl<T: Zeroed> Send for Rows<T> {}
// SAFETY: as above.
unsafe impl<T: Zeroed> Sync for Rows<T> {}

impl<T: Zeroed> Rows<T> {
    /// No rows yet; each will hold `width` elements.
    pub(super) fn new(width: usize) -> Self {
        assert!(width > 0, "rows hold at least one element");
        Rows {
            width,
            buckets: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
            capacity: AtomicUsize::new(0),
        }
    }

    /// Elements per row.
    pub(super) fn width(&self) -> usize {
        self.width
    }

    /// The bucket of `row` and the row's place in it.
    #[inline(always)]
    fn locate(row: usize) -> (usize, usize) {
        let r = (row >> FIRST_BUCKET_SHIFT) + 1;
        let bucket = (usize::BITS - 1 - r.leading_zeros()) as usize;
        let start = ((1usize << bucket) - 1) << FIRST_BUCKET_SHIFT;
        (bucket, row - start)
    }

    /// Rows bucket `b` holds.
    fn bucket_rows(b: usize) -> usize {
        FIRST_BUCKET_ROWS << b
    }

    fn layout(&self, b: usize) -> Layout {
        let bytes = Self::bucket_rows(b)
            .checked_mul(self.width)
            .and_then(|n| n.checked_mul(std::mem::size_of::<T>()))
            .expect("bucket size overflows");
        Layout::from_size_align(bytes, BUCKET_ALIGN.max(std::mem::align_of::<T>()))
            .expect("bucket layout")
    }

    /// Makes room for rows `0..rows`: allocates the buckets they fall in. Safe to call from
    /// several threads; rows already there are untouched.
    pub(super) fn reserve(&self, rows: usize) {
        if rows == 0 || self.capacity.load(Ordering::Acquire) >= rows {
            return;
        }
        let (last, _) = Self::locate(rows - 1);
        for b in 0..=last {
            if !self.buckets[b].load(Ordering::Acquire).is_null() {
                continue;
            }
            let layout = self.layout(b);
            // SAFETY: the layout has a non-zero size (width and rows are positive).
            let fresh = unsafe { alloc::alloc_zeroed(layout) }.cast::<T>();
            if fresh.is_null() {
                alloc::handle_alloc_error(layout);
            }
            if self.buckets[b]
                .compare_exchange(
                    std::ptr::null_mut(),
                    fresh,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_err()
            {
                // Another thread allocated it first.
                // SAFETY: `fresh` came from `alloc_zeroed` with this layout and was never shared.
                unsafe { alloc::dealloc(fresh.cast(), layout) };
            }
        }
        self.capacity.fetch_max(
            ((1usize << (last + 1)) - 1) << FIRST_BUCKET_SHIFT,
            Ordering::AcqRel,
        );
    }

    /// Row `row`, which must have been reserved (panics otherwise).
    #[inline(always)]
    pub(super) fn row(&self, row: usize) -> &[T] {
        let (b, at) = Self::locate(row);
        let base = self.buckets[b].load(Ordering::Acquire);
        assert!(!base.is_null(), "row {row} was never reserved");
        // SAFETY: the bucket holds `bucket_rows(b)` rows of `width` initialised (zeroed or
        // since written) elements, `at` is below that, and buckets live as long as `self`.
        unsafe { std::slice::from_raw_parts(base.add(at * self.width), self.width) }
    }

    /// The first `rows` rows as one slice per bucket, in order: the contiguous runs they are
    /// stored in.
    pub(super) fn runs(&self, rows: usize) -> impl Iterator<Item = &[T]> + '_ {
        let mut left = rows;
        (0..BUCKETS).map_while(move |b| {
            if left == 0 {
                return None;
            }
            let take = left.min(Self::bucket_rows(b));
            left -= take;
            let start = ((1usize << b) - 1) << FIRST_BUCKET_SHIFT;
            let first = self.row(start).as_ptr();
            // SAFETY: rows `start..start + take` all lie in bucket `b` (the row call above
            // checked it is allocated), contiguously from its first row.
            Some(unsafe { std::slice::from_raw_parts(first, take * self.width) })
        })
    }

    /// The elements of the first `rows` rows, in order, each read by `read`.
    pub(super) fn collect<V>(&self, rows: usize, read: impl Fn(&T) -> V) -> Vec<V> {
        self.runs(rows).flatten().map(read).collect()
    }

    /// Memory the first `rows` rows take. The rest of the last bucket is address space that
    /// no page backs until rows are written there, so this is what the rows cost.
    pub(super) fn memory_bytes(&self, rows: usize) -> usize {
        rows.min(self.capacity.load(Ordering::Acquire)) * self.width * std::mem::size_of::<T>()
    }
}

impl<T: Copy> Rows<Cell<T>>
where
    Cell<T>: Zeroed,
{
    /// Row `row` as plain values.
    #[inline(always)]
    pub(super) fn values(&self, row: usize) -> &[T] {
        let cells = self.row(row);
        // SAFETY: `Cell` is a transparent `UnsafeCell<T>`; the row is published, so nobody
        // writes it any more (see `write_values`).
        unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<T>(), cells.len()) }
    }

    /// The first `rows` rows as runs of plain values, one per bucket.
    pub(super) fn value_runs(&self, rows: usize) -> impl Iterator<Item = &[T]> + '_ {
        self.runs(rows).map(|cells| {
            // SAFETY: as in `values`.
            unsafe { std::slice::from_raw_parts(cells.as_ptr().cast::<T>(), cells.len()) }
        })
    }

    /// Writes `values` (whole rows) from row `first` on; the rows must be reserved.
    ///
    /// # Safety
    /// No other thread may read or write these rows until the caller publishes them, and once
    /// published they are never written again: callers write only rows beyond every count or
    /// link readers can see, from one thread at a time.
    pub(super) unsafe fn write_values(&self, first: usize, values: &[T]) {
        debug_assert_eq!(values.len() % self.width, 0);
        for (i, row) in values.chunks_exact(self.width).enumerate() {
            let cells = self.row(first + i);
            let dst = UnsafeCell::raw_get(cells.as_ptr().cast::<UnsafeCell<T>>());
            // SAFETY: the caller guarantees exclusive access to these unpublished rows, and
            // `dst` points at `width` values of this row.
            unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), dst, self.width) };
        }
    }
}

impl<T: Zeroed> Drop for Rows<T> {
    fn drop(&mut self) {
        for b in 0..BUCKETS {
            let p = *self.buckets[b].get_mut();
            if !p.is_null() {
                // SAFETY: allocated in `reserve` with this layout; dropping `T` is a no-op for
                // every `Zeroed` type (atomics and cells of plain numbers).
                unsafe { alloc::dealloc(p.cast(), self.layout(b)) };
            }
        }
    }
}

impl<T: Zeroed> std::fmt::Debug for Rows<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("width", &self.width)
            .field("capacity", &self.capacity.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_map_to_doubling_buckets() {
        let f = FIRST_BUCKET_ROWS;
        assert_eq!(Rows::<AtomicU32>::locate(0), (0, 0));
        assert_eq!(Rows::<AtomicU32>::locate(f - 1), (0, f - 1));
        assert_eq!(Rows::<AtomicU32>::locate(f), (1, 0));
        assert_eq!(Rows::<AtomicU32>::locate(3 * f - 1), (1, 2 * f - 1));
        assert_eq!(Rows::<AtomicU32>::locate(3 * f), (2, 0));
        assert_eq!(Rows::<AtomicU32>::locate(7 * f), (3, 0));
    }

    #[test]
    fn rows_never_move_and_keep_their_values_as_buckets_are_added() {
        let rows = Rows::<AtomicU64>::new(3);
        rows.reserve(1);
        let first = rows.row(0).as_ptr();
        let n = 20 * FIRST_BUCKET_ROWS + 5;
        for r in 0..n {
            rows.reserve(r + 1);
            for (i, x) in rows.row(r).iter().enumerate() {
                assert_eq!(x.load(Ordering::Relaxed), 0, "fresh rows are zero");
                x.store((r * 3 + i) as u64, Ordering::Relaxed);
            }
        }
        assert_eq!(rows.row(0).as_ptr(), first, "row 0 stayed where it was");
        for r in 0..n {
            let got: Vec<u64> = rows
                .row(r)
                .iter()
                .map(|x| x.load(Ordering::Relaxed))
                .collect();
            assert_eq!(got, [r as u64 * 3, r as u64 * 3 + 1, r as u64 * 3 + 2]);
        }
        let flat: Vec<u64> = rows
            .runs(n)
            .flatten()
            .map(|x| x.load(Ordering::Relaxed))
            .collect();
        assert_eq!(flat, (0..3 * n as u64).collect::<Vec<_>>());
        assert_eq!(rows.memory_bytes(n), n * 3 * 8);
    }

    #[test]
    fn float_rows_are_aligned_and_read_back() {
        let rows = Rows::<F32Cell>::new(16);
        let n = 3 * FIRST_BUCKET_ROWS + 1;
        rows.reserve(n);
        let values: Vec<f32> = (0..n * 16).map(|i| i as f32).collect();
        // SAFETY: no other thread sees `rows`.
        unsafe { rows.write_values(0, &values) };
        for r in [0, 1, FIRST_BUCKET_ROWS, n - 1] {
            assert_eq!(rows.values(r), &values[r * 16..(r + 1) * 16]);
            assert_eq!(rows.values(r).as_ptr() as usize % 64, 0);
        }
        let joined: Vec<f32> = rows.value_runs(n).flatten().copied().collect();
        assert_eq!(joined, values);
    }

    #[test]
    #[should_panic(expected = "never reserved")]
    fn reading_an_unreserved_row_panics() {
        let rows = Rows::<AtomicU32>::new(1);
        rows.reserve(1);
        let _ = rows.row(FIRST_BUCKET_ROWS);
    }

    #[test]
    fn readers_see_rows_a_writer_publishes_while_it_grows() {
        let rows = Rows::<AtomicU64>::new(2);
        let published = AtomicUsize::new(0);
        let n = 8 * FIRST_BUCKET_ROWS;
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while published.load(Ordering::Acquire) < n {
                        let len = published.load(Ordering::Acquire);
                        for r in (0..len).step_by(97) {
                            let row = rows.row(r);
                            assert_eq!(row[0].load(Ordering::Relaxed), r as u64 + 1);
                            assert_eq!(row[1].load(Ordering::Relaxed), 2 * r as u64 + 1);
                        }
                    }
                });
            }
            for r in 0..n {
                rows.reserve(r + 1);
                rows.row(r)[0].store(r as u64 + 1, Ordering::Relaxed);
                rows.row(r)[1].store(2 * r as u64 + 1, Ordering::Relaxed);
                published.store(r + 1, Ordering::Release);
            }
        });
    }
}
