//! IVF-Flat: an inverted file over k-means cells, scanning the `nprobe` best cells per query.
//!
//! # Layout
//! A coarse quantiser ([`KMeans`]) splits the space into `nlist` cells. Each cell owns an
//! *inverted list*: its vectors stored contiguously (row-major) next to their ids, so that a
//! probe is one sequential read. An id → (list, slot) map makes replacement and removal O(dim):
//! a removed row is filled by the list's last row.
//!
//! # Training, and vectors added before and after it
//! * **Before training** the index holds every vector in a single list and answers queries
//!   exactly, like a flat index: below a few thousand vectors a scan is as fast as any probe
//!   and k-means would have too little data to learn from.
//! * **Training** runs k-means on a seeded sample of at most
//!   [`sample_per_list`](IvfParams::sample_per_list) · `nlist` of the vectors held, then moves
//!   every vector to its cell. It happens on the first [`add`](IndexMut::add) that brings the
//!   index to [`train_at`](IvfParams::train_at) vectors (default [`DEFAULT_TRAIN_AT`]), when
//!   [`IvfBuilder::build_with`] is given the data up front, or on an explicit
//!   [`IvfIndex::train`]. `nlist` defaults to 4·√N for the N vectors held then, clamped to N.
//! * **After training** new vectors go to the list of their nearest centroid; the centroids
//!   stay fixed. Retraining ([`IvfIndex::train`] again) is advisable once the index has grown to
//!   several times the size it was trained at ([`IvfIndex::needs_retrain`] says so at 4×: the
//!   default `nlist` would then be twice as large, and each list holds twice the vectors the
//!   defaults were tuned for), or when the data drift away from what the centroids describe.
//!
//! # Search
//! The query is scored against every centroid with the SIMD kernel, the `nprobe` best lists are
//! chosen by partial sort and scanned in order of centroid score, exactly: every vector of a
//! probed list is scored and offered to a bounded top-k, so within the probed lists the result
//! is the exact top-k (ties by ascending id). Per-thread scratch buffers hold the centroid
//! scores and the list order, so a search allocates only its result (and, under cosine, the
//! normalised copy of the query that validation makes).
//!
//! `nprobe` defaults to [`default_nprobe`]`(nlist)` = ⌈√nlist⌉ (at least 16, at most `nlist`);
//! see that function for why it scales so. [`SearchParams::nprobe`] overrides it per query; 0
//! is an error and values above `nlist` probe every list, which is an exact search.
//!
//! `nprobe` is a floor, not a cap, where the probed lists could not fill the answer:
//! * Without a filter, if the probed lists hold fewer than `k` vectors, the next lists in
//!   centroid order are scanned until `k` hits are found (or none are left), so a search always
//!   returns `min(k, len)` hits.
//! * With a filter, the search keeps probing lists in centroid order until the geometric mean
//!   of the vectors it has examined (filter calls) and scored (accepted, so distance
//!   computations) reaches the number of vectors the unfiltered search scans in its `nprobe`
//!   lists, and until it holds `k` hits (or no list is left). A filter that accepts a fraction
//!   `s` of the vectors thus probes about `nprobe / √s` lists and computes `√s` times the
//!   distances of an unfiltered search. The filtered top-k sits in a wider neighbourhood than
//!   the unfiltered one, but one that widens more slowly than `1/s`: on 100k embedding-like
//!   vectors, at the `nprobe` where unfiltered recall@10 is 0.95, filters keeping 50 %, 10 % and
//!   1 % of the ids reach 0.96, 0.97 and 0.98 of the exact filtered top-10 (scanning only the
//!   `nprobe` lists gives 0.94, 0.88 and 0.62; scoring the full unfiltered budget of accepted
//!   vectors gives 0.97–1.0 at two to three times the cost). The filter is checked before any
//!   distance is computed. A filter that keeps few vectors still gets `k` hits when `k` exist,
//!   and a very selective one degrades gracefully into an exact filtered scan costing one
//!   filter call per stored vector. (The service sends very selective filters to the flat
//!   index, which is exact and needs no centroid scoring.)
//!
//! # Metrics
//! Lists are ranked for a query by the rule that assigns vectors to them (see
//! [`super::kmeans`]): under L2 by Euclidean distance to the centroid; under cosine and dot by
//! the inner product with the unit centroid, the cells being spherical k-means cells. On
//! 100k normalised embedding-like vectors with 1,265 lists, spherical cells reach
//! recall@10 = 0.95 scanning about 2,350 vectors per query, against about 3,000 for cells made
//! by inner-product assignment to mean centroids (FAISS's IVF under inner product) and 3,250
//! for Euclidean cells ranked by inner product: a probe reads 20–30 % fewer bytes.
//!
//! # Split rows: reading less of each vector, exactly
//! A probe is bound by memory bandwidth: nearly all its time goes into streaming the probed
//! lists' vectors from memory. Embeddings keep most of their energy in a few principal
//! directions, so when the index is trained (with [`IvfParams::pca_split`], the default) it
//! fits an orthogonal basis whose first `head` coordinates span the sample's leading principal
//! directions (`head` is the smallest multiple of 16 holding 95 % of the energy, at most a
//! quarter of the dimension), and stores every row in that basis, cut in two: the heads of a
//! list contiguous, the tails contiguous, and each tail's norm. A scan scores a row's head,
//! adds the largest share its tail could contribute (Cauchy–Schwarz: `‖q_tail‖·‖x_tail‖`; under
//! L2 the reverse triangle inequality), and reads the tail only when that bound reaches the
//! current k-th best score. No row that could enter the top-k is skipped, so the results are
//! those of scanning every full row: an orthogonal basis change leaves inner products and
//! distances unchanged, up to float rounding in the last bits of a score. On 100k 384-d
//! embedding-like vectors the head is 64 coordinates and about 2 % of the probed rows need
//! their tail, so a probe reads about a fifth of the bytes. The centroids are split the same
//! way: a query scores every centroid's head, and completes the score only of centroids whose
//! upper bound reaches the `nprobe`-th best lower bound, which selects exactly the `nprobe`
//! best lists; k-means assignment during training works alike. Queries pay one basis change
//! (`2·head·dim` flops); data whose energy is spread evenly (no head of a quarter of the
//! dimensions holds half of it) or of fewer than 64 dimensions is not split.
//!
//! # Persistence
//! [`save`](VectorIndex::save) writes the centroids, list sizes, ids and vectors (list by list)
//! through [`super::io`]'s checksummed atomic snapshots, streaming the lists without copying
//! them; [`IvfIndex::load`] checks every array and rebuilds the same lists, so a loaded index
//! answers every query exactly as the saved one did. Loading holds the vectors twice while the
//! lists are rebuilt.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;

use rand::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use rotation::Rotation;

use super::io::{SnapshotReader, SnapshotWriter};
use super::kmeans::{BOUND_SLACK, KMeans, KMeansInit, KMeansParams, dot_rows, rounding};
use super::topk::TopK;
use super::{
    Filter, Hit, IndexError, IndexKind, IndexMut, IndexResult, SearchParams, VectorIndex, validate,
};
use crate::distance::{self, Metric};

mod rotation;

/// Default number of vectors at which an untrained index trains itself.
pub const DEFAULT_TRAIN_AT: usize = 10_000;

/// Default cap on the k-means training sample, per list: at most `256 · nlist` vectors.
pub const DEFAULT_SAMPLE_PER_LIST: usize = 256;

/// Default number of Lloyd iterations. On 100k embedding-like vectors recall at a fixed
/// `nprobe` still gains a little from 10 to 15 iterations and nothing measurable beyond 20.
pub const DEFAULT_ITERATIONS: usize = 15;

/// Rows of a list scored in one batch before their scores are offered to the top-k.
const SCAN_BLOCK: usize = 64;

/// The index trained at N vectors is worth retraining once it holds this many times N.
const RETRAIN_GROWTH: usize = 4;

/// Seed offset of the training sample's draw, so that it is independent of the k-means seed's
/// own stream.
const SAMPLE_STREAM: u64 = 0x5a3c_9e17_d2b4_0f61;

/// The default number of lists for `n` vectors: 4·√n rounded, at least 1 and at most `n`.
pub fn default_nlist(n: usize) -> usize {
    ((4.0 * (n as f64).sqrt()).round() as usize).clamp(1, n.max(1))
}

/// The default number of lists probed per query for an index of `nlist` lists: ⌈√nlist⌉, but
/// at least [`MIN_DEFAULT_NPROBE`], and at most `nlist`.
///
/// Why √nlist: the k nearest neighbours of a query lie in the cells around it, and the number
/// of cells a fixed neighbourhood overlaps grows with `nlist`, but more slowly than `nlist`
/// (cells shrink in every direction at once). On 100k normalised embedding-like vectors
/// (384-d, spherical cells) the `nprobe` that first reaches recall@10 ≥ 0.95 was 16, 23, 28
/// and 45 for `nlist` = 316, 632, 1,265 and 2,530: 0.8–0.9·√nlist throughout, so ⌈√nlist⌉
/// clears 0.95 with a small margin while the probed fraction √nlist / nlist falls as the index
/// grows. With the default `nlist` = 4·√N a query then scans about N / √nlist = N^¾ / 2
/// vectors. Coarse indexes need relatively more (1.2·√nlist at `nlist` = 80), which the floor
/// covers at no real cost: such indexes are small.
pub fn default_nprobe(nlist: usize) -> usize {
    ((nlist as f64).sqrt().ceil() as usize)
        .max(MIN_DEFAULT_NPROBE)
        .min(nlist.max(1))
}

/// Smallest default `nprobe` (see [`default_nprobe`]).
pub const MIN_DEFAULT_NPROBE: usize = 16;

/// Build parameters of an [`IvfIndex`]. [`Default`] gives the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IvfParams {
    /// Number of lists (k-means cells). `None`: [`default_nlist`] of the vectors held when
    /// training. Clamped to the number of vectors.
    pub nlist: Option<usize>,
    /// Lists probed per query when [`SearchParams::nprobe`] is not given. `None`:
    /// [`default_nprobe`]`(nlist)`.
    pub nprobe: Option<usize>,
    /// Maximum Lloyd iterations of the k-means training.
    pub iterations: usize,
    /// Seed of the training sample and of the k-means initialisation.
    pub seed: u64,
    /// The training sample holds at most this many vectors per list.
    pub sample_per_list: usize,
    /// How k-means chooses its first centroids.
    pub init: KMeansInit,
    /// An untrained index trains itself on the first `add` that brings it to this many
    /// vectors. `None`: only [`IvfIndex::train`] (or [`IvfBuilder::build_with`]) trains.
    pub train_at: Option<usize>,
    /// Store rows in a principal-component basis cut into a head and a tail, so that scans
    /// skip the tails of rows that cannot enter the top-k (see the module docs). Results are
    /// the same either way, up to float rounding; only speed differs.
    pub pca_split: bool,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams {
            nlist: None,
            nprobe: None,
            iterations: DEFAULT_ITERATIONS,
            seed: 0,
            sample_per_list: DEFAULT_SAMPLE_PER_LIST,
            init: KMeansInit::default(),
            train_at: Some(DEFAULT_TRAIN_AT),
            pca_split: true,
        }
    }
}

impl IvfParams {
    fn validate(&self) -> IndexResult<()> {
        let bad = |what: &str| Err(IndexError::InvalidParameter(what.into()));
        if self.nlist == Some(0) {
            return bad("nlist must be at least 1");
        }
        if self.nprobe == Some(0) {
            return bad("nprobe must be at least 1");
        }
        if self.sample_per_list == 0 {
            return bad("sample_per_list must be at least 1");
        }
        Ok(())
    }
}

/// Fluent construction of an [`IvfIndex`].
///
/// ```
/// use vicinity::distance::Metric;
/// use vicinity::index::ivf::IvfBuilder;
/// use vicinity::index::{SearchParams, VectorIndex};
///
/// let vectors: Vec<f32> = (0..200).map(|i| ((i * 7919) % 101) as f32 + 1.0).collect();
/// let ids: Vec<u64> = (0..100).collect();
/// let index = IvfBuilder::new(Metric::L2, 2)
///     .nlist(8)
///     .seed(42)
///     .build_with(&ids, &vectors)
///     .unwrap();
/// let hits = index.search(&vectors[..2], 3, &SearchParams::default(), None).unwrap();
/// assert_eq!(hits[0].id, 0);
/// ```
#[derive(Clone, Debug)]
pub struct IvfBuilder {
    metric: Metric,
    dim: usize,
    params: IvfParams,
}

impl IvfBuilder {
    /// A builder with default [`IvfParams`].
    pub fn new(metric: Metric, dim: usize) -> Self {
        IvfBuilder {
            metric,
            dim,
            params: IvfParams::default(),
        }
    }

    /// Replaces all parameters.
    pub fn params(mut self, params: IvfParams) -> Self {
        self.params = params;
        self
    }

    /// Sets the number of lists (see [`IvfParams::nlist`]).
    pub fn nlist(mut self, nlist: usize) -> Self {
        self.params.nlist = Some(nlist);
        self
    }

    /// Sets the default number of lists probed per query (see [`IvfParams::nprobe`]).
    pub fn nprobe(mut self, nprobe: usize) -> Self {
        self.params.nprobe = Some(nprobe);
        self
    }

    /// Sets the maximum number of Lloyd iterations.
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.params.iterations = iterations;
        self
    }

    /// Sets the seed of training.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }

    /// Sets the per-list cap of the training sample.
    pub fn sample_per_list(mut self, sample_per_list: usize) -> Self {
        self.params.sample_per_list = sample_per_list;
        self
    }

    /// Sets the k-means initialisation.
    pub fn init(mut self, init: KMeansInit) -> Self {
        self.params.init = init;
        self
    }

    /// Sets the size at which an untrained index trains itself (`None`: never on its own).
    pub fn train_at(mut self, train_at: Option<usize>) -> Self {
        self.params.train_at = train_at;
        self
    }

    /// Sets whether rows are split into head and tail (see [`IvfParams::pca_split`]).
    pub fn pca_split(mut self, split: bool) -> Self {
        self.params.pca_split = split;
        self
    }

    /// An empty, untrained index.
    pub fn build(self) -> IndexResult<IvfIndex> {
        IvfIndex::new(self.metric, self.dim, self.params)
    }

    /// An index holding `vectors` under `ids` (as [`IndexMut::add`] takes them), trained on
    /// them once, whatever [`IvfParams::train_at`] says. With no vectors it stays untrained.
    pub fn build_with(self, ids: &[u64], vectors: &[f32]) -> IndexResult<IvfIndex> {
        let mut index = self.build()?;
        index.insert(ids, vectors, false)?;
        if !index.is_empty() {
            index.train()?;
        }
        Ok(index)
    }
}

/// One inverted list. Row `i` is stored under `ids[i]`: its first `head` coordinates (in the
/// index's stored basis) in `heads`, the other `dim − head` in `tails`, and the norm of those
/// in `tail_norms`. Without a split `head` is `dim` and the tail arrays stay empty.
#[derive(Clone, Debug, Default)]
struct InvertedList {
    ids: Vec<u64>,
    heads: Vec<f32>,
    tails: Vec<f32>,
    tail_norms: Vec<f32>,
}

impl InvertedList {
    fn len(&self) -> usize {
        self.ids.len()
    }

    /// Makes room for `extra` more rows. Growth is by at least a quarter of the current size,
    /// not Vec's doubling, so that a trained index with exactly sized lists does not double its
    /// memory on the first small add.
    fn reserve(&mut self, extra: usize, layout: Layout) {
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
    fn push(&mut self, id: u64, row: &[f32], layout: Layout) {
        let (head, tail) = row.split_at(layout.head);
        self.ids.push(id);
        self.heads.extend_from_slice(head);
        if !tail.is_empty() {
            self.tails.extend_from_slice(tail);
            self.tail_norms.push(distance::dot(tail, tail).sqrt());
        }
    }

    /// Overwrites row `pos` with a row given in the stored basis.
    fn set(&mut self, pos: usize, row: &[f32], layout: Layout) {
        let (head, tail) = row.split_at(layout.head);
        self.heads[pos * layout.head..(pos + 1) * layout.head].copy_from_slice(head);
        if !tail.is_empty() {
            let t = layout.tail();
            self.tails[pos * t..(pos + 1) * t].copy_from_slice(tail);
            self.tail_norms[pos] = distance::dot(tail, tail).sqrt();
        }
    }

    /// Removes row `pos` by moving the last row into it; returns the moved row's id, if any.
    fn swap_remove(&mut self, pos: usize, layout: Layout) -> Option<u64> {
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
    fn rows_into(&self, layout: Layout, out: &mut Vec<f32>) {
        out.reserve(self.len() * layout.dim);
        for i in 0..self.len() {
            out.extend_from_slice(&self.heads[i * layout.head..(i + 1) * layout.head]);
            let t = layout.tail();
            out.extend_from_slice(&self.tails[i * t..(i + 1) * t]);
        }
    }

    fn memory_bytes(&self) -> usize {
        self.ids.capacity() * size_of::<u64>()
            + (self.heads.capacity() + self.tails.capacity() + self.tail_norms.capacity())
                * size_of::<f32>()
    }
}

/// How rows are cut: `head` leading coordinates, then `dim − head`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    dim: usize,
    head: usize,
}

impl Layout {
    fn tail(self) -> usize {
        self.dim - self.head
    }
}

/// Where a vector lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    list: u32,
    pos: u32,
}

/// Per-thread buffers reused across searches.
#[derive(Debug, Default)]
struct Scratch {
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
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => f(&mut scratch),
        Err(_) => f(&mut Scratch::default()),
    })
}

/// An IVF-Flat index. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct IvfIndex {
    metric: Metric,
    dim: usize,
    params: IvfParams,
    /// `None` until trained.
    quantizer: Option<KMeans>,
    /// The basis rows are stored in once trained with a split; `None`: as given.
    rotation: Option<Rotation>,
    /// Head size of the stored rows (`dim` without a split).
    head: usize,
    /// One list per centroid once trained; a single list holding everything before.
    lists: Vec<InvertedList>,
    slots: HashMap<u64, Slot>,
    /// Number of vectors held when the quantiser was trained (0 before).
    trained_len: usize,
}

impl IvfIndex {
    /// An empty, untrained index. Errors when `dim` is 0 or a parameter is out of range.
    pub fn new(metric: Metric, dim: usize, params: IvfParams) -> IndexResult<IvfIndex> {
        if dim == 0 {
            return Err(IndexError::InvalidParameter(
                "dimension must be at least 1".into(),
            ));
        }
        params.validate()?;
        Ok(IvfIndex {
            metric,
            dim,
            params,
            quantizer: None,
            rotation: None,
            head: dim,
            lists: vec![InvertedList::default()],
            slots: HashMap::new(),
            trained_len: 0,
        })
    }

    /// A builder with default parameters.
    pub fn builder(metric: Metric, dim: usize) -> IvfBuilder {
        IvfBuilder::new(metric, dim)
    }

    /// The build parameters.
    pub fn params(&self) -> &IvfParams {
        &self.params
    }

    /// Whether the quantiser has been trained.
    pub fn is_trained(&self) -> bool {
        self.quantizer.is_some()
    }

    /// Number of lists; 0 before training.
    pub fn nlist(&self) -> usize {
        self.quantizer.as_ref().map_or(0, KMeans::k)
    }

    /// Number of vectors in each list, in list order (one list before training).
    pub fn list_sizes(&self) -> Vec<usize> {
        self.lists.iter().map(InvertedList::len).collect()
    }

    /// Coordinates per row that scans read before deciding whether to read the rest: the
    /// dimension when rows are not split (see [`IvfParams::pca_split`]).
    pub fn head_dim(&self) -> usize {
        self.head
    }

    /// The lists probed when a search gives no `nprobe`: [`IvfParams::nprobe`] if set, else
    /// [`default_nprobe`]`(nlist)`. Before training every search is an exact scan.
    pub fn default_nprobe(&self) -> usize {
        self.params
            .nprobe
            .unwrap_or_else(|| default_nprobe(self.nlist()))
    }

    /// The trained quantiser, if any. Its centroids live in the index's stored basis, which
    /// differs from the vectors' own when rows are split.
    pub fn quantizer(&self) -> Option<&KMeans> {
        self.quantizer.as_ref()
    }

    /// Number of vectors held when the index was last trained (0 before training).
    pub fn trained_len(&self) -> usize {
        self.trained_len
    }

    /// Whether [`train`](Self::train) is advisable: the index is trained and has since grown to
    /// at least four times the vectors it was trained on, or it is untrained, cannot train
    /// itself ([`IvfParams::train_at`] is `None`) and holds [`DEFAULT_TRAIN_AT`] vectors or more.
    pub fn needs_retrain(&self) -> bool {
        if self.is_trained() {
            self.len() >= RETRAIN_GROWTH.saturating_mul(self.trained_len)
        } else {
            self.params.train_at.is_none() && self.len() >= DEFAULT_TRAIN_AT
        }
    }

    fn layout(&self) -> Layout {
        Layout {
            dim: self.dim,
            head: self.head,
        }
    }

    /// Brings rows (as the metric stores them) into the stored basis, in parallel.
    fn rotate_rows(rotation: Option<&Rotation>, dim: usize, rows: &mut [f32]) {
        if let Some(r) = rotation {
            rows.par_chunks_mut(dim).for_each(|row| r.apply(row));
        }
    }

    /// The rows of `list` as the metric stores them (undoing the index's rotation).
    fn original_rows(&self, list: &InvertedList) -> Vec<f32> {
        let mut rows = Vec::new();
        list.rows_into(self.layout(), &mut rows);
        if let Some(r) = &self.rotation {
            rows.par_chunks_mut(self.dim).for_each(|row| r.unapply(row));
        }
        rows
    }

    /// (Re)trains the quantiser on the vectors held and redistributes them into the new lists.
    ///
    /// Uses `nlist` = [`IvfParams::nlist`] or [`default_nlist`] of the vectors held (clamped to
    /// their number) and k-means on a seeded sample of at most `sample_per_list · nlist` of
    /// them; with [`IvfParams::pca_split`] the stored basis is refitted to the same sample.
    /// The old and new lists coexist while vectors move, so memory peaks at about twice the
    /// vectors' size. Retraining a split index takes the vectors back out of the old basis
    /// into the new one, which rounds each coordinate in its last bits. Errors when the index
    /// is empty; on error the index is unchanged.
    pub fn train(&mut self) -> IndexResult<()> {
        let n = self.len();
        if n == 0 {
            return Err(IndexError::InvalidParameter(
                "cannot train an IVF index that holds no vectors".into(),
            ));
        }
        let dim = self.dim;
        let nlist = self.params.nlist.unwrap_or_else(|| default_nlist(n)).min(n);
        let sample_len = n.min(self.params.sample_per_list.saturating_mul(nlist));
        let mut rng = SmallRng::seed_from_u64(self.params.seed ^ SAMPLE_STREAM);
        let mut picks = rand::seq::index::sample(&mut rng, n, sample_len).into_vec();
        picks.sort_unstable();
        // Row r of the index is the r-th row in list order; the sample is taken as the metric
        // stores the vectors, before any rotation.
        let mut sample = Vec::with_capacity(sample_len * dim);
        let mut picks = picks.into_iter().peekable();
        let mut first_row = 0;
        let layout = self.layout();
        for list in &self.lists {
            while let Some(&r) = picks.peek() {
                if r >= first_row + list.len() {
                    break;
                }
                let pos = r - first_row;
                sample.extend_from_slice(&list.heads[pos * layout.head..(pos + 1) * layout.head]);
                sample
                    .extend_from_slice(&list.tails[pos * layout.tail()..(pos + 1) * layout.tail()]);
                picks.next();
            }
            first_row += list.len();
        }
        if let Some(r) = &self.rotation {
            sample.par_chunks_mut(dim).for_each(|row| r.unapply(row));
        }
        let rotation = if self.params.pca_split {
            Rotation::fit(self.metric, dim, &sample, self.params.seed)
        } else {
            None
        };
        Self::rotate_rows(rotation.as_ref(), dim, &mut sample);
        let layout = Layout {
            dim,
            head: rotation.as_ref().map_or(dim, Rotation::head),
        };
        let (quantizer, sample_labels) = KMeans::fit(
            self.metric,
            dim,
            &sample,
            &KMeansParams {
                k: nlist,
                iterations: self.params.iterations,
                seed: self.params.seed,
                init: self.params.init,
                head: Some(layout.head),
            },
        )?;
        let mut lists = vec![InvertedList::default(); nlist];
        let old = std::mem::take(&mut self.lists);
        let ids: Vec<u64> = old.iter().flat_map(|l| l.ids.iter().copied()).collect();
        if sample_len == n {
            // The sample is every vector, in list order, already rotated and assigned.
            drop(old);
            reserve_lists(&mut lists, layout, &sample_labels);
            fill_lists(&mut lists, layout, &ids, &sample, &sample_labels);
        } else {
            drop(sample);
            // Two passes over the old lists: labels first, so the new lists are allocated at
            // their exact size, then the rows themselves.
            let to_new = |list: &InvertedList| {
                let mut rows = self.original_rows(list);
                Self::rotate_rows(rotation.as_ref(), dim, &mut rows);
                rows
            };
            let labels: Vec<u32> = old
                .iter()
                .flat_map(|l| quantizer.assign(&to_new(l)))
                .collect();
            reserve_lists(&mut lists, layout, &labels);
            let mut start = 0;
            for list in old {
                let rows = to_new(&list);
                let end = start + list.len();
                fill_lists(&mut lists, layout, &list.ids, &rows, &labels[start..end]);
                start = end;
            }
        }
        self.slots.clear();
        self.slots.reserve(n);
        for (l, list) in lists.iter().enumerate() {
            for (pos, &id) in list.ids.iter().enumerate() {
                self.slots.insert(
                    id,
                    Slot {
                        list: l as u32,
                        pos: pos as u32,
                    },
                );
            }
        }
        self.lists = lists;
        self.head = layout.head;
        self.rotation = rotation;
        self.quantizer = Some(quantizer);
        self.trained_len = n;
        Ok(())
    }

    /// Loads a snapshot written by [`save`](VectorIndex::save), verifying every array's checksum
    /// and the consistency of lists, ids, centroids and basis.
    pub fn load(dir: &Path) -> IndexResult<IvfIndex> {
        let r = SnapshotReader::open(dir)?;
        r.expect_kind(IndexKind::Ivf)?;
        let corrupt = |reason: String| IndexError::corrupt(dir, reason);
        let metric = r.manifest().metric;
        let dim = r.manifest().dim;
        let params: IvfParams = r.param("params")?;
        let trained_len: usize = r.param("trained_len")?;
        let head: usize = r.param("head")?;
        let mut index = IvfIndex::new(metric, dim, params)
            .map_err(|e| corrupt(format!("unusable parameters: {e}")))?;
        let centroids = r.read_f32s("centroids")?;
        let sizes = r.read_u64s("list_sizes")?;
        let ids = r.read_u64s("ids")?;
        let heads = r.read_f32s("heads")?;
        let tails = r.read_f32s("tails")?;
        if head != dim {
            let reflectors = r.read_f32s("reflectors")?;
            let mean = if r.has("mean") {
                Some(r.read_f32s("mean")?)
            } else {
                None
            };
            let rotation = Rotation::from_parts(dim, reflectors, mean)
                .filter(|rot| rot.head() == head)
                .ok_or_else(|| corrupt("the stored basis does not fit the dimension".into()))?;
            index.rotation = Some(rotation);
            index.head = head;
        }
        if centroids.is_empty() {
            if sizes.len() != 1 || head != dim {
                return Err(corrupt(format!(
                    "an untrained index has one unsplit list, found {} lists with head {head}",
                    sizes.len()
                )));
            }
        } else {
            if centroids.len() != sizes.len() * dim {
                return Err(corrupt(format!(
                    "{} centroid values for {} lists of dimension {dim}",
                    centroids.len(),
                    sizes.len()
                )));
            }
            let quantizer = KMeans::from_centroids(metric, dim, centroids)
                .map_err(|e| corrupt(format!("unusable centroids: {e}")))?
                .with_head(head);
            index.quantizer = Some(quantizer);
            index.trained_len = trained_len;
        }
        let layout = index.layout();
        let total = sizes
            .iter()
            .try_fold(0u64, |a, &s| a.checked_add(s))
            .and_then(|t| usize::try_from(t).ok());
        if total != Some(ids.len())
            || Some(heads.len()) != ids.len().checked_mul(layout.head)
            || Some(tails.len()) != ids.len().checked_mul(layout.tail())
        {
            return Err(corrupt(format!(
                "list sizes, {} ids, {} head and {} tail values disagree",
                ids.len(),
                heads.len(),
                tails.len()
            )));
        }
        index.lists.clear();
        index.slots.reserve(ids.len());
        let mut start = 0;
        for (l, &size) in sizes.iter().enumerate() {
            let size = size as usize;
            let (h, t) = (layout.head, layout.tail());
            let list_ids = &ids[start..start + size];
            for (pos, &id) in list_ids.iter().enumerate() {
                let slot = Slot {
                    list: l as u32,
                    pos: pos as u32,
                };
                if index.slots.insert(id, slot).is_some() {
                    return Err(corrupt(format!("id {id} is stored twice")));
                }
            }
            let list_tails = tails[start * t..(start + size) * t].to_vec();
            let tail_norms = if t > 0 {
                list_tails
                    .chunks_exact(t)
                    .map(|x| distance::dot(x, x).sqrt())
                    .collect()
            } else {
                Vec::new()
            };
            index.lists.push(InvertedList {
                ids: list_ids.to_vec(),
                heads: heads[start * h..(start + size) * h].to_vec(),
                tails: list_tails,
                tail_norms,
            });
            start += size;
        }
        Ok(index)
    }

    /// Adds a validated batch; trains afterwards if allowed and due.
    fn insert(&mut self, ids: &[u64], vectors: &[f32], may_train: bool) -> IndexResult<()> {
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
    fn place(&mut self, ids: &[u64], rows: &[f32], target: impl Fn(usize) -> u32) {
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
    fn remove_slot(&mut self, slot: Slot) {
        let layout = self.layout();
        if let Some(moved) = self.lists[slot.list as usize].swap_remove(slot.pos as usize, layout) {
            self.slots
                .get_mut(&moved)
                .expect("every stored id is mapped. This is a bug.")
                .pos = slot.pos;
        }
    }

    fn resolve_nprobe(&self, params: &SearchParams) -> IndexResult<usize> {
        match params.nprobe {
            Some(0) => Err(IndexError::InvalidParameter(
                "nprobe must be at least 1".into(),
            )),
            Some(n) => Ok(n),
            None => Ok(self.default_nprobe()),
        }
    }

    /// The search proper, on a validated query (as the metric stores it).
    fn search_prepared(
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

/// Adds each row (in the stored basis) to the list its label names.
fn fill_lists(
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
fn reserve_lists(lists: &mut [InvertedList], layout: Layout, labels: &[u32]) {
    let mut sizes = vec![0usize; lists.len()];
    labels.iter().for_each(|&l| sizes[l as usize] += 1);
    for (list, &s) in lists.iter_mut().zip(&sizes) {
        list.reserve(s, layout);
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

impl VectorIndex for IvfIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Ivf
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.slots.len()
    }

    fn contains(&self, id: u64) -> bool {
        self.slots.contains_key(&id)
    }

    fn live_ids(&self) -> Vec<u64> {
        self.slots.keys().copied().collect()
    }

    fn memory_bytes(&self) -> usize {
        let lists: usize = self.lists.iter().map(InvertedList::memory_bytes).sum();
        // A hashbrown table holds one control byte per bucket next to each entry.
        let map = self.slots.capacity() * (size_of::<(u64, Slot)>() + 1);
        lists
            + self.lists.capacity() * size_of::<InvertedList>()
            + map
            + self.quantizer.as_ref().map_or(0, KMeans::memory_bytes)
            + self.rotation.as_ref().map_or(0, Rotation::memory_bytes)
    }

    /// See the [module docs](self) for how `nprobe` and filters shape the search.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Hit>> {
        let query = validate::prepare_query(self.metric, self.dim, query, k)?;
        let nprobe = self.resolve_nprobe(params)?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        Ok(with_scratch(|s| {
            self.search_prepared(&query, k, nprobe, filter, s)
        }))
    }

    fn save(&self, dir: &Path) -> IndexResult<()> {
        let mut w = SnapshotWriter::create(dir)?;
        w.write_f32s(
            "centroids",
            self.quantizer.as_ref().map_or(&[][..], KMeans::centroids),
        )?;
        let sizes: Vec<u64> = self.lists.iter().map(|l| l.len() as u64).collect();
        w.write_u64s("list_sizes", &sizes)?;
        w.write_u64_parts("ids", self.lists.iter().map(|l| &l.ids[..]))?;
        w.write_f32_parts("heads", self.lists.iter().map(|l| &l.heads[..]))?;
        w.write_f32_parts("tails", self.lists.iter().map(|l| &l.tails[..]))?;
        if let Some(r) = &self.rotation {
            w.write_f32s("reflectors", r.reflectors())?;
            if let Some(mean) = r.mean() {
                w.write_f32s("mean", mean)?;
            }
        }
        let params = serde_json::json!({
            "params": self.params,
            "trained_len": self.trained_len,
            "head": self.head,
            "nlist": self.nlist(),
            "count": self.len(),
        });
        w.commit(IndexKind::Ivf, self.metric, self.dim, params)
    }
}

impl IndexMut for IvfIndex {
    /// Adds a batch (see the trait). Before training, the add that brings the index to
    /// [`IvfParams::train_at`] vectors trains it; after training each vector goes to the list
    /// of its nearest centroid, moving lists if its id was stored elsewhere.
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> IndexResult<()> {
        self.insert(ids, vectors, true)
    }

    /// Removes ids (see the trait): each removed row is filled by its list's last row. The
    /// lists keep their capacity; [`IvfIndex::train`] rebuilds them at their exact size.
    fn remove(&mut self, ids: &[u64]) -> IndexResult<usize> {
        let mut removed = 0;
        for id in ids {
            if let Some(slot) = self.slots.remove(id) {
                self.remove_slot(slot);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Every stored row is mapped to where it is, sits in its nearest list, and holds (up to
    /// the rounding of the basis change) the vector last added under its id.
    fn check(index: &IvfIndex, expected: &BTreeMap<u64, Vec<f32>>) {
        let layout = index.layout();
        let mut seen = 0;
        for (l, list) in index.lists.iter().enumerate() {
            assert_eq!(list.heads.len(), list.len() * layout.head);
            assert_eq!(list.tails.len(), list.len() * layout.tail());
            let mut stored = Vec::new();
            list.rows_into(layout, &mut stored);
            let original = index.original_rows(list);
            for (pos, &id) in list.ids.iter().enumerate() {
                let slot = index.slots[&id];
                assert_eq!(
                    slot,
                    Slot {
                        list: l as u32,
                        pos: pos as u32
                    }
                );
                let row = &original[pos * layout.dim..(pos + 1) * layout.dim];
                for (a, b) in row.iter().zip(&expected[&id]) {
                    assert!((a - b).abs() < 1e-4, "id {id}: {a} vs {b}");
                }
                if let Some(q) = &index.quantizer {
                    let stored_row = &stored[pos * layout.dim..(pos + 1) * layout.dim];
                    assert_eq!(q.nearest(stored_row), l, "id {id} sits in the wrong list");
                }
                if layout.tail() > 0 {
                    let t = &list.tails[pos * layout.tail()..(pos + 1) * layout.tail()];
                    assert_eq!(list.tail_norms[pos], distance::dot(t, t).sqrt());
                }
                seen += 1;
            }
        }
        assert_eq!(seen, index.slots.len());
        assert_eq!(seen, expected.len());
    }

    /// Random updates on an index whose rows are split (low-rank data in 64 dimensions) or,
    /// with `split` off, not; `sample_per_list` decides whether (re)training samples every
    /// vector or only some.
    fn mixed_updates(split: bool, sample_per_list: usize) {
        let dim = 64;
        let mut rng = SmallRng::seed_from_u64(77);
        let basis = crate::testing::random_vectors(6, dim, 78);
        let row = |rng: &mut SmallRng| -> Vec<f32> {
            let mut v = vec![0.0f32; dim];
            for b in basis.chunks_exact(dim) {
                let c: f32 = rng.random_range(-1.0..1.0);
                v.iter_mut().zip(b).for_each(|(x, &y)| *x += c * y);
            }
            v.iter_mut()
                .for_each(|x| *x += 0.01 * rng.random_range(-1.0f32..1.0));
            v
        };
        let mut index = IvfBuilder::new(Metric::L2, dim)
            .train_at(Some(150))
            .nlist(9)
            .iterations(3)
            .pca_split(split)
            .sample_per_list(sample_per_list)
            .build()
            .unwrap();
        let mut expected = BTreeMap::new();
        for round in 0..60 {
            if rng.random_bool(0.3) {
                let ids: Vec<u64> = (0..rng.random_range(1..20))
                    .map(|_| rng.random_range(0..300))
                    .collect();
                let removed = index.remove(&ids).unwrap();
                let before = expected.len();
                ids.iter().for_each(|id| {
                    expected.remove(id);
                });
                assert_eq!(removed, before - expected.len());
            } else {
                let mut ids: Vec<u64> = (0..rng.random_range(1..30))
                    .map(|_| rng.random_range(0..300))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                let rows: Vec<f32> = ids.iter().flat_map(|_| row(&mut rng)).collect();
                index.add(&ids, &rows).unwrap();
                for (id, r) in ids.iter().zip(rows.chunks_exact(dim)) {
                    expected.insert(*id, r.to_vec());
                }
            }
            check(&index, &expected);
            if round == 40 {
                index.train().unwrap();
                check(&index, &expected);
            }
        }
        assert!(index.is_trained());
        assert_eq!(index.head_dim() < dim, split);
    }

    #[test]
    fn maps_stay_consistent_under_mixed_updates() {
        mixed_updates(true, 256);
        mixed_updates(true, 8);
        mixed_updates(false, 8);
    }

    #[test]
    fn defaults_scale_with_size() {
        assert_eq!(default_nlist(100_000), 1265);
        assert_eq!(default_nlist(20_000), 566);
        assert_eq!(default_nlist(3), 3);
        assert_eq!(default_nlist(0), 1);
        assert_eq!(default_nprobe(1265), 36);
        assert_eq!(default_nprobe(566), 24);
        assert_eq!(default_nprobe(80), MIN_DEFAULT_NPROBE);
        assert_eq!(default_nprobe(5), 5);
        assert_eq!(default_nprobe(0), 1);
    }

    #[test]
    fn growth_is_bounded() {
        let layout = Layout { dim: 4, head: 4 };
        let mut list = InvertedList::default();
        for _ in 0..1000 {
            list.reserve(1, layout);
            list.push(0, &[0.0; 4], layout);
        }
        assert!(list.ids.capacity() <= 1000 + 1000 / 4);
        assert_eq!(list.heads.capacity(), list.ids.capacity() * 4);
    }
}
