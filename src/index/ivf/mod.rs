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

use std::collections::HashMap;
use std::path::Path;

use super::kmeans::KMeans;
use super::{
    Filter, Hit, IndexError, IndexKind, IndexMut, IndexResult, SearchParams, VectorIndex, validate,
};
use crate::distance::Metric;
use lists::{InvertedList, Layout, Slot};
use rotation::Rotation;
use search::with_scratch;

mod lists;
mod params;
mod rotation;
mod search;
mod snapshot;
mod training;

pub use params::{
    DEFAULT_ITERATIONS, DEFAULT_SAMPLE_PER_LIST, DEFAULT_TRAIN_AT, IvfBuilder, IvfParams,
    MIN_DEFAULT_NPROBE, default_nlist, default_nprobe,
};

/// The index trained at N vectors is worth retraining once it holds this many times N.
const RETRAIN_GROWTH: usize = 4;

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
        self.write_snapshot(dir)
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

    use rand::prelude::*;

    use crate::distance;

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
