//! The exact flat index: every vector in one contiguous row-major array, searched by a full
//! SIMD scan. It is the recall oracle for the approximate indexes and the right choice for
//! small collections, where a scan beats any graph.
//!
//! # Layout
//! Row `r` of `vectors` belongs to `ids[r]`; `rows` maps an id back to its row. Removal moves
//! the last row into the hole (swap-remove), so the array stays contiguous and a scan never
//! skips tombstones. Under cosine, vectors are stored normalised, so every metric is scored by
//! one inner-product or squared-L2 kernel.
//!
//! # Search
//! A query is scored against blocks of rows with one batch kernel call per block
//! ([`Kernels::score_batch`]), and only scores that reach the current k-th best are offered to
//! the bounded heap ([`TopK`]). The scan is bound by memory bandwidth, so one query over a large
//! index is split into contiguous row ranges scanned on all of rayon's threads, whose partial
//! top-k's are merged; below [`PARALLEL_MIN_BYTES`] of vectors the hand-off costs more than it
//! saves and the scan stays on the caller's thread. A filter is evaluated once per row, during
//! the scan, and rejected rows are never scored, so a filtered search is exact and cheaper than
//! an unfiltered one.
//!
//! Batches of queries ([`VectorIndex::search_batch`]) run in parallel across groups of queries;
//! within a group every block of rows is scored against all the group's queries while it is in
//! cache, so the vectors stream from memory once per group instead of once per query.
//!
//! Large row arrays live in an anonymous memory map advised onto transparent huge pages
//! (Linux): a scan streams the whole array, and 2 MiB pages spare it a TLB miss and a hardware
//! prefetcher restart every 4 KiB. Measured on the development machine at 100k×384, that is
//! about 12 % more single-core scan bandwidth (31 against 28 GB/s of CPU time per scan).
//!
//! A score that is NaN (possible only under [`Metric::Dot`] when products overflow `f32` with
//! opposite signs, i.e. components beyond about 10¹⁹) ranks as −∞: such a row is returned last.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Range;
use std::path::Path;

use rayon::prelude::*;

use super::io::{SnapshotReader, SnapshotWriter};
use super::topk::TopK;
use super::{
    Filter, Hit, IndexError, IndexKind, IndexMut, IndexResult, SearchParams, VectorIndex, validate,
};
use crate::distance::{self, Kernels, Metric};

/// Vector bytes below which a single query is scanned on the caller's thread only.
///
/// Handing half a scan to another rayon thread costs about 15 µs (measured at d = 384 on the
/// 2-core development machine: 250 rows took 4.6 µs alone, 19 µs split), and a cache-resident
/// scan runs at ~100 GB/s, so splitting loses below a few MiB. With the other core busy, as it
/// is in a service that also runs an encoder, splitting lost 17 µs at 6 MB (4,000 rows: 67
/// against 84 µs median), broke even at 12 MB and won 2.2× at 25 MB (438 against 197 µs).
pub const PARALLEL_MIN_BYTES: usize = 8 << 20;

/// Vector bytes scored per block: small enough that a block stays in L2 while a group of
/// batched queries is scored against it.
const BLOCK_BYTES: usize = 128 << 10;

/// Most rows per block (the size of the on-stack score buffer).
const MAX_BLOCK_ROWS: usize = 512;

/// Most queries a batched search scores against each block.
const MAX_QUERY_GROUP: usize = 16;

/// Exact nearest-neighbour search over contiguous vectors. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct FlatIndex {
    metric: Metric,
    dim: usize,
    /// `ids.len() * dim` values, row-major; normalised under cosine.
    vectors: RowBuf,
    ids: Vec<u64>,
    /// id → row in `ids`/`vectors`.
    rows: HashMap<u64, usize>,
}

impl FlatIndex {
    /// An empty index of `dim`-dimensional vectors scored by `metric`.
    ///
    /// # Errors
    /// [`IndexError::InvalidParameter`] when `dim` is 0.
    pub fn new(metric: Metric, dim: usize) -> IndexResult<Self> {
        if dim == 0 {
            return Err(IndexError::InvalidParameter(
                "dimension must be at least 1".into(),
            ));
        }
        Ok(FlatIndex {
            metric,
            dim,
            vectors: RowBuf::new(),
            ids: Vec::new(),
            rows: HashMap::new(),
        })
    }

    /// Reserves room for `additional` more vectors, so that a known-size load does not
    /// reallocate.
    pub fn reserve(&mut self, additional: usize) {
        self.vectors.reserve(additional.saturating_mul(self.dim));
        self.ids.reserve(additional);
        self.rows.reserve(additional);
    }

    /// A larger, still empty row buffer, when `additional` new rows would not fit the current
    /// one; `None` when they fit. Filling it ([`FlatGrowth::copy_step`]) and installing it
    /// ([`FlatIndex::install_growth`]) moves the rows without one long hold of the index: an
    /// owner that keeps the rows unchanged meanwhile can copy in chunks while others read.
    pub fn growth_for(&self, additional: usize) -> Option<FlatGrowth> {
        let need = self
            .vectors
            .len()
            .checked_add(additional.saturating_mul(self.dim))
            .expect("row buffer capacity overflows usize");
        if need <= self.vectors.capacity() {
            return None;
        }
        let mut buf = RowBuf::new();
        buf.grow_to(need.max(self.vectors.capacity().saturating_mul(2)));
        Some(FlatGrowth { buf })
    }

    /// Makes a buffer filled by [`FlatGrowth::copy_step`] the row buffer, and returns the old one
    /// for the caller to free (after releasing any lock: freeing a large buffer takes a while).
    /// The rows must not have changed since the copy began.
    ///
    /// # Panics
    /// If the growth holds fewer rows than the index: it was not filled, or the rows changed.
    pub fn install_growth(&mut self, growth: FlatGrowth) -> FlatGrowth {
        assert_eq!(
            growth.buf.len(),
            self.vectors.len(),
            "a row buffer installed before it was filled. This is a bug."
        );
        FlatGrowth {
            buf: std::mem::replace(&mut self.vectors, growth.buf),
        }
    }

    /// The stored vector for `id` (normalised under cosine), if present.
    pub fn get(&self, id: u64) -> Option<&[f32]> {
        self.rows.get(&id).map(|&r| self.row(r))
    }

    /// Every `(id, vector)` pair, in storage order (vectors as stored: normalised under cosine).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u64, &[f32])> + '_ {
        self.ids
            .iter()
            .copied()
            .zip(self.vectors.chunks_exact(self.dim))
    }

    /// The ids in storage order; row `r` of [`vectors`](Self::vectors) belongs to `ids()[r]`.
    pub fn ids(&self) -> &[u64] {
        &self.ids
    }

    /// All stored vectors, row-major, in the order of [`ids`](Self::ids).
    pub fn vectors(&self) -> &[f32] {
        &self.vectors
    }

    /// Reads a snapshot written by [`VectorIndex::save`].
    ///
    /// # Errors
    /// [`IndexError::Io`] when the files cannot be read; [`IndexError::Corrupt`] when the
    /// snapshot is for another index kind, is torn or truncated (checksums), or is inconsistent.
    pub fn load(dir: &Path) -> IndexResult<FlatIndex> {
        let reader = SnapshotReader::open(dir)?;
        reader.expect_kind(IndexKind::Flat)?;
        let (metric, dim) = (reader.manifest().metric, reader.manifest().dim);
        let corrupt = |reason: String| IndexError::corrupt(dir, reason);
        if dim == 0 {
            return Err(corrupt("dimension 0".into()));
        }
        let count: usize = reader.param("count")?;
        let ids = reader.read_u64s("ids")?;
        let vectors = reader.read_f32s("vectors")?;
        if ids.len() != count {
            return Err(corrupt(format!("{} ids, manifest says {count}", ids.len())));
        }
        if count.checked_mul(dim) != Some(vectors.len()) {
            return Err(corrupt(format!(
                "{} vector values for {count} rows of dimension {dim}",
                vectors.len()
            )));
        }
        if let Some(i) = vectors.iter().position(|x| !x.is_finite()) {
            return Err(corrupt(format!("row {} has a non-finite value", i / dim)));
        }
        let mut rows = HashMap::with_capacity(count);
        for (r, &id) in ids.iter().enumerate() {
            if rows.insert(id, r).is_some() {
                return Err(corrupt(format!("id {id} is stored twice")));
            }
        }
        Ok(FlatIndex {
            metric,
            dim,
            vectors: RowBuf::from_vec(vectors),
            ids,
            rows,
        })
    }

    #[inline]
    fn row(&self, r: usize) -> &[f32] {
        &self.vectors[r * self.dim..(r + 1) * self.dim]
    }

    fn block_rows(&self) -> usize {
        (BLOCK_BYTES / (self.dim * 4)).clamp(1, MAX_BLOCK_ROWS)
    }

    /// Scores every query of `queries` against the rows in `range` that `filter` accepts,
    /// keeping each query's `k` best.
    fn scan(
        &self,
        kernels: &Kernels,
        queries: &[&[f32]],
        k: usize,
        range: Range<usize>,
        filter: Option<Filter<'_>>,
    ) -> Vec<TopK> {
        let mut tops: Vec<TopK> = queries.iter().map(|_| TopK::new(k)).collect();
        let mut thresholds = vec![f32::NEG_INFINITY; queries.len()];
        let mut scores = [0.0f32; MAX_BLOCK_ROWS];
        let mut accepted: Vec<usize> = Vec::new();
        let block = self.block_rows();
        let d = self.dim;
        let mut start = range.start;
        while start < range.end {
            let end = (start + block).min(range.end);
            let ids = &self.ids[start..end];
            let rows = &self.vectors[start * d..end * d];
            match filter {
                None => {
                    let scores = &mut scores[..end - start];
                    for ((q, top), threshold) in queries.iter().zip(&mut tops).zip(&mut thresholds)
                    {
                        kernels.score_batch(self.metric, q, rows, scores);
                        for (&id, &s) in ids.iter().zip(scores.iter()) {
                            offer(top, threshold, id, s);
                        }
                    }
                }
                Some(f) => {
                    accepted.clear();
                    accepted.extend((0..ids.len()).filter(|&j| f(ids[j])));
                    for ((q, top), threshold) in queries.iter().zip(&mut tops).zip(&mut thresholds)
                    {
                        for &j in &accepted {
                            let s = score_one(kernels, self.metric, q, &rows[j * d..(j + 1) * d]);
                            offer(top, threshold, ids[j], s);
                        }
                    }
                }
            }
            start = end;
        }
        tops
    }

    /// One query's `k` best over the whole index, split across rayon's threads when the index
    /// is large enough for that to pay.
    fn search_one(&self, query: &[f32], k: usize, filter: Option<Filter<'_>>) -> Vec<Hit> {
        let kernels = distance::kernels();
        let n = self.ids.len();
        let threads = rayon::current_num_threads();
        let bytes = n * self.dim * 4;
        if threads <= 1 || bytes < PARALLEL_MIN_BYTES {
            return self.scan_single(kernels, query, k, 0..n, filter);
        }
        // One contiguous range per thread keeps each core streaming; a few extra ranges let an
        // idle core take over work from one that another process is slowing down.
        let parts = (threads * 2).min(bytes / (PARALLEL_MIN_BYTES / 2)).max(2);
        let chunk = n.div_ceil(parts);
        (0..parts)
            .into_par_iter()
            .map(|p| {
                let range = p * chunk..((p + 1) * chunk).min(n);
                let mut tops = self.scan(kernels, &[query], k, range, filter);
                tops.pop().expect("one query gives one top-k")
            })
            .reduce_with(|mut a, b| {
                a.merge(b);
                a
            })
            .expect("at least two parts")
            .into_sorted_vec()
    }

    fn scan_single(
        &self,
        kernels: &Kernels,
        query: &[f32],
        k: usize,
        range: Range<usize>,
        filter: Option<Filter<'_>>,
    ) -> Vec<Hit> {
        let mut tops = self.scan(kernels, &[query], k, range, filter);
        tops.pop()
            .expect("one query gives one top-k")
            .into_sorted_vec()
    }
}

/// Offers one scored row to a query's heap, skipping the heap when the score cannot make it.
#[inline(always)]
fn offer(top: &mut TopK, threshold: &mut f32, id: u64, score: f32) {
    let score = if score.is_nan() {
        f32::NEG_INFINITY
    } else {
        score
    };
    // `>=`: a row that ties the current k-th best may still win on its smaller id.
    if score >= *threshold {
        top.push(id, score);
        *threshold = top.threshold();
    }
}

#[inline]
fn score_one(kernels: &Kernels, metric: Metric, q: &[f32], row: &[f32]) -> f32 {
    match metric {
        Metric::Cosine | Metric::Dot => (kernels.dot)(q, row),
        Metric::L2 => -(kernels.l2_squared)(q, row),
    }
}

/// Moves a single-query validation error to the query's row within a batch.
fn at_row(e: IndexError, row: usize) -> IndexError {
    match e {
        IndexError::NonFinite { position, .. } => IndexError::NonFinite { row, position },
        IndexError::ZeroVector { .. } => IndexError::ZeroVector { row },
        other => other,
    }
}

impl VectorIndex for FlatIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Flat
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.ids.len()
    }

    fn contains(&self, id: u64) -> bool {
        self.rows.contains_key(&id)
    }

    /// Vectors and ids at their allocated capacity, plus the id map (its buckets hold a key, a
    /// row and one control byte each, at hashbrown's 7/8 maximum load).
    fn live_ids(&self) -> Vec<u64> {
        self.ids.to_vec()
    }

    fn memory_bytes(&self) -> usize {
        let map_entry = size_of::<(u64, usize)>() + 1;
        self.vectors.capacity_bytes()
            + self.ids.capacity() * size_of::<u64>()
            + self.rows.capacity() * 8 / 7 * map_entry
    }

    /// Exact search. `params` are ignored: a flat index has no search settings. `k` larger
    /// than the index returns every vector (every accepted one, with a filter).
    fn search(
        &self,
        query: &[f32],
        k: usize,
        _params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Hit>> {
        let query = validate::prepare_query(self.metric, self.dim, query, k)?;
        if self.ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.search_one(&query, k.min(self.ids.len()), filter))
    }

    /// Validates every query first (errors name the query's row), then searches in parallel
    /// across groups of queries, each group streaming the vectors once. Fewer queries than
    /// threads are searched one by one, each split across the threads instead.
    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        _params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Vec<Hit>>> {
        validate::check_batch_shape(self.dim, None, queries)?;
        let prepared: Vec<Cow<'_, [f32]>> = queries
            .chunks_exact(self.dim)
            .enumerate()
            .map(|(row, q)| {
                validate::prepare_query(self.metric, self.dim, q, k).map_err(|e| at_row(e, row))
            })
            .collect::<IndexResult<_>>()?;
        if prepared.is_empty() && k == 0 {
            return Err(IndexError::ZeroK);
        }
        if self.ids.is_empty() {
            return Ok(vec![Vec::new(); prepared.len()]);
        }
        let k = k.min(self.ids.len());
        let threads = rayon::current_num_threads();
        if prepared.len() < threads {
            return Ok(prepared
                .iter()
                .map(|q| self.search_one(q, k, filter))
                .collect());
        }
        let kernels = distance::kernels();
        let group = (prepared.len() / threads).clamp(1, MAX_QUERY_GROUP);
        let refs: Vec<&[f32]> = prepared.iter().map(|q| &**q).collect();
        Ok(refs
            .par_chunks(group)
            .flat_map_iter(|qs| {
                self.scan(kernels, qs, k, 0..self.ids.len(), filter)
                    .into_iter()
                    .map(TopK::into_sorted_vec)
            })
            .collect())
    }

    fn save(&self, dir: &Path) -> IndexResult<()> {
        let mut w = SnapshotWriter::create(dir)?;
        w.write_f32s("vectors", &self.vectors)?;
        w.write_u64s("ids", &self.ids)?;
        w.commit(
            IndexKind::Flat,
            self.metric,
            self.dim,
            serde_json::json!({ "count": self.ids.len() }),
        )
    }
}

impl IndexMut for FlatIndex {
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> IndexResult<()> {
        let prepared = validate::prepare_batch(self.metric, self.dim, ids, vectors)?;
        self.add_prepared(ids, &prepared);
        Ok(())
    }

    fn remove(&mut self, ids: &[u64]) -> IndexResult<usize> {
        Ok(self.remove_rows(ids))
    }
}

impl FlatIndex {
    /// Adds (or replaces) vectors already checked and prepared for this index, as
    /// [`validate::prepare_batch`] returns them (distinct ids, finite values, normalised under
    /// cosine): the infallible half of [`IndexMut::add`], for callers that must check before
    /// they commit and then apply without any chance of failing.
    ///
    /// # Panics
    /// When `prepared` does not hold `ids.len()` rows of this index's dimension: a bug of the
    /// caller.
    pub fn add_prepared(&mut self, ids: &[u64], prepared: &[f32]) {
        assert_eq!(
            prepared.len(),
            ids.len() * self.dim,
            "prepared rows must match the ids. This is a bug."
        );
        let d = self.dim;
        let new = ids.iter().filter(|id| !self.rows.contains_key(id)).count();
        self.reserve(new);
        for (&id, v) in ids.iter().zip(prepared.chunks_exact(d)) {
            match self.rows.entry(id) {
                Entry::Occupied(e) => {
                    let r = *e.get();
                    self.vectors[r * d..(r + 1) * d].copy_from_slice(v);
                }
                Entry::Vacant(e) => {
                    e.insert(self.ids.len());
                    self.ids.push(id);
                    self.vectors.extend_from_slice(v);
                }
            }
        }
    }

    /// Removes the rows of `ids` (unknown ids are skipped); returns how many it removed.
    pub fn remove_rows(&mut self, ids: &[u64]) -> usize {
        let d = self.dim;
        let mut removed = 0;
        for id in ids {
            let Some(r) = self.rows.remove(id) else {
                continue;
            };
            let last = self.ids.len() - 1;
            if r != last {
                let moved = self.ids[last];
                self.ids[r] = moved;
                self.vectors.copy_within(last * d..(last + 1) * d, r * d);
                self.rows.insert(moved, r);
            }
            self.ids.pop();
            self.vectors.truncate(last * d);
            removed += 1;
        }
        // Give memory back after large deletions, but not on every small one: re-adding would
        // only grow it again.
        if self.ids.capacity() > 64 && self.ids.len() < self.ids.capacity() / 4 {
            self.vectors.shrink_to(self.vectors.len() * 2);
            self.ids.shrink_to(self.ids.len() * 2);
            self.rows.shrink_to(self.ids.len() * 2);
        }
        removed
    }
}

/// A larger row buffer for a [`FlatIndex`], filled beside it (see [`FlatIndex::growth_for`]).
pub struct FlatGrowth {
    buf: RowBuf,
}

impl FlatGrowth {
    /// Copies up to `max_values` more of `from`'s row values; returns whether every row is
    /// copied.
    pub fn copy_step(&mut self, from: &FlatIndex, max_values: usize) -> bool {
        let done = self.buf.len();
        let end = done
            .saturating_add(max_values.max(1))
            .min(from.vectors.len());
        if done < end {
            self.buf.extend_from_slice(&from.vectors[done..end]);
        }
        end >= from.vectors.len()
    }
}

impl std::fmt::Debug for FlatGrowth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlatGrowth")
            .field("values", &self.buf.len())
            .field("capacity", &self.buf.capacity())
            .finish()
    }
}

/// A growable `f32` buffer for the row array: an ordinary `Vec` while small, an anonymous memory
/// map advised onto transparent huge pages once it reaches [`RowBuf::MAP_MIN_BYTES`] (Linux
/// only). See the module docs for why.
enum RowBuf {
    Heap(Vec<f32>),
    #[cfg(target_os = "linux")]
    Mapped {
        /// `capacity × 4` bytes; page-aligned, so it can be viewed as `f32`s.
        map: memmap2::MmapMut,
        /// Values in use.
        len: usize,
    },
}

impl RowBuf {
    /// Size from which the rows get their own huge-page mapping: below it a scan fits in cache
    /// anyway, and a mapping would waste most of a 2 MiB page.
    const MAP_MIN_BYTES: usize = 8 << 20;

    fn new() -> Self {
        RowBuf::Heap(Vec::new())
    }

    /// Takes over `v`, moving it into a mapping when it is large.
    fn from_vec(v: Vec<f32>) -> Self {
        if v.len() * size_of::<f32>() < Self::MAP_MIN_BYTES {
            return RowBuf::Heap(v);
        }
        let mut buf = RowBuf::new();
        buf.grow_to(v.len());
        buf.extend_from_slice(&v);
        buf
    }

    fn capacity(&self) -> usize {
        match self {
            RowBuf::Heap(v) => v.capacity(),
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { map, .. } => map.len() / size_of::<f32>(),
        }
    }

    fn capacity_bytes(&self) -> usize {
        self.capacity() * size_of::<f32>()
    }

    fn reserve(&mut self, additional: usize) {
        let need = self
            .len()
            .checked_add(additional)
            .expect("row buffer capacity overflows usize");
        if need > self.capacity() {
            self.grow_to(need.max(self.capacity().saturating_mul(2)));
        }
    }

    /// Reallocates to hold exactly `capacity` values (at least the current length).
    fn grow_to(&mut self, capacity: usize) {
        let capacity = capacity.max(self.len());
        #[cfg(target_os = "linux")]
        if capacity.saturating_mul(size_of::<f32>()) >= Self::MAP_MIN_BYTES
            && let Ok(map) = memmap2::MmapMut::map_anon(capacity * size_of::<f32>())
        {
            // Advice only: without transparent huge pages the mapping still works.
            let _ = map.advise(memmap2::Advice::HugePage);
            let mut next = RowBuf::Mapped { map, len: 0 };
            next.extend_from_slice(self);
            *self = next;
            return;
        }
        match self {
            RowBuf::Heap(v) => v.reserve_exact(capacity - v.len()),
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { .. } => {
                let mut v = Vec::with_capacity(capacity);
                v.extend_from_slice(self);
                *self = RowBuf::Heap(v);
            }
        }
    }

    fn extend_from_slice(&mut self, values: &[f32]) {
        self.reserve(values.len());
        match self {
            RowBuf::Heap(v) => v.extend_from_slice(values),
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { map, len } => {
                let all: &mut [f32] = bytemuck::cast_slice_mut(&mut map[..]);
                all[*len..*len + values.len()].copy_from_slice(values);
                *len += values.len();
            }
        }
    }

    fn truncate(&mut self, new_len: usize) {
        match self {
            RowBuf::Heap(v) => v.truncate(new_len),
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { len, .. } => *len = (*len).min(new_len),
        }
    }

    /// Gives back capacity beyond `min_capacity` (and the length).
    fn shrink_to(&mut self, min_capacity: usize) {
        let target = min_capacity.max(self.len());
        if target < self.capacity() {
            let mut next = RowBuf::new();
            next.grow_to(target);
            next.extend_from_slice(self);
            *self = next;
        }
    }
}

impl std::ops::Deref for RowBuf {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            RowBuf::Heap(v) => v,
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { map, len } => &bytemuck::cast_slice(&map[..])[..*len],
        }
    }
}

impl std::ops::DerefMut for RowBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        match self {
            RowBuf::Heap(v) => v,
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { map, len } => &mut bytemuck::cast_slice_mut(&mut map[..])[..*len],
        }
    }
}

impl Clone for RowBuf {
    fn clone(&self) -> Self {
        let mut copy = RowBuf::new();
        copy.grow_to(self.len());
        copy.extend_from_slice(self);
        copy
    }
}

impl std::fmt::Debug for RowBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            RowBuf::Heap(_) => "heap",
            #[cfg(target_os = "linux")]
            RowBuf::Mapped { .. } => "huge-page map",
        };
        f.debug_struct("RowBuf")
            .field("kind", &kind)
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_grow_beside_the_index_in_chunks_and_the_next_add_copies_nothing() {
        let dim = 8;
        let mut idx = FlatIndex::new(Metric::L2, dim).unwrap();
        let rows = |from: u64, n: u64| -> (Vec<u64>, Vec<f32>) {
            let ids: Vec<u64> = (from..from + n).collect();
            let v = ids
                .iter()
                .flat_map(|&i| (0..dim).map(move |j| (i * 10 + j as u64) as f32))
                .collect();
            (ids, v)
        };
        let (ids, v) = rows(0, 1000);
        idx.add_prepared(&ids, &v);
        let spare = (idx.vectors.capacity() - idx.vectors.len()) / dim;
        assert!(idx.growth_for(spare).is_none(), "what fits needs no growth");
        let mut growth = idx
            .growth_for(spare + 500)
            .expect("500 more rows do not fit");
        let mut steps = 1;
        while !growth.copy_step(&idx, 1000) {
            steps += 1;
        }
        assert_eq!(steps, 8, "8,000 values in chunks of 1,000");
        let old = idx.install_growth(growth);
        assert_eq!(old.buf.len(), 1000 * dim);
        let capacity = idx.vectors.capacity();
        let at = idx.vectors.as_ptr();
        let (more, w) = rows(1000, spare as u64 + 500);
        idx.add_prepared(&more, &w);
        assert_eq!(idx.vectors.capacity(), capacity, "the add reallocated");
        assert_eq!(idx.vectors.as_ptr(), at, "the add moved the rows");
        for id in [0u64, 999, 1000, 1000 + spare as u64 + 499] {
            let want: Vec<f32> = (0..dim).map(|j| (id * 10 + j as u64) as f32).collect();
            assert_eq!(idx.get(id).unwrap(), &want[..], "row {id}");
        }
    }

    #[test]
    fn row_buffer_moves_between_heap_and_map_without_losing_values() {
        let big = RowBuf::MAP_MIN_BYTES / size_of::<f32>();
        let mut buf = RowBuf::new();
        let values: Vec<f32> = (0..big + 1000).map(|i| i as f32).collect();
        buf.extend_from_slice(&values[..10]);
        assert!(matches!(buf, RowBuf::Heap(_)));
        buf.extend_from_slice(&values[10..]);
        #[cfg(target_os = "linux")]
        assert!(matches!(buf, RowBuf::Mapped { .. }), "{buf:?}");
        assert_eq!(&buf[..], &values[..]);
        assert!(buf.capacity() >= values.len());
        let copy = buf.clone();
        assert_eq!(&copy[..], &values[..]);
        buf.copy_within(0..5, 100);
        assert_eq!(&buf[100..105], &values[..5]);
        buf.truncate(20);
        assert_eq!(buf.len(), 20);
        buf.shrink_to(40);
        assert!(matches!(buf, RowBuf::Heap(_)));
        assert!((40..1000).contains(&buf.capacity()));
        assert_eq!(&buf[..5], &values[..5]);
        let from = RowBuf::from_vec(values.clone());
        assert_eq!(&from[..], &values[..]);
        assert_eq!(from.capacity_bytes(), values.len() * 4);
        assert!(RowBuf::from_vec(vec![1.0; 3]).capacity() >= 3);
    }
}
