//! Hierarchical navigable small-world graph index (Malkov & Yashunin), built and searched over a
//! compact layout of our own.
//!
//! # Layout
//! Vectors sit in one contiguous, cache-line aligned array, one row per internal node; level-0
//! neighbour lists sit in one flat `u32` array with a fixed stride of `1 + 2·M` slots; the few
//! nodes on upper levels keep their lists in a second flat array. Internal node numbers are
//! `u32`; `ids` maps them to the caller's `u64` ids and a hash map maps back. A search allocates
//! nothing but its result: its visited set (epoch-tagged) and heaps are kept per thread.
//!
//! # Construction
//! [`Engine::Native`] (the default) inserts nodes in parallel on the current rayon pool, with the
//! neighbour-selection heuristic and a per-node lock, using the same search routine that serves
//! queries; node levels are drawn from [`HnswParams::seed`] and the node number, so they
//! reproduce (with one thread the whole graph does). [`Engine::HnswRs`] builds the first batch
//! added to an empty index, and every [`rebuild`](HnswIndex::rebuild), with the `hnsw_rs` crate and
//! freezes its lists into the same layout; it is slower and needs more memory while building,
//! and is kept as a cross-check and for comparison. Later batches always go through the native
//! insertion path. After a build, and after any batch that adds at least a sixteenth of the
//! index, a repair pass makes every new node findable: reachable from the entry point, and
//! returned by a search for its own vector (on clustered data, insertion alone leaves some nodes
//! without in-edges, and parallel insertion can leave the first node of a tight cluster linked
//! only to distant nodes); see `build::Inserter::repair`.
//!
//! # Deletion
//! Removing an id marks its node with a tombstone: searches still walk through it but never
//! return it, and keep going until `k` live hits are found when `k` live vectors exist.
//! Re-adding an id tombstones its old node and inserts a new one (re-adding a bit-identical
//! vector is a no-op). When tombstones exceed [`HnswParams::max_tombstone_ratio`] of the nodes
//! (default a quarter), the `add` or `remove` that crossed the line rebuilds the graph from the
//! live vectors ([`HnswIndex::rebuild`]), which frees their memory; that call then takes as long
//! as a build of the live vectors.
//!
//! # Changes while searching
//! [`HnswIndex::insert`] and [`HnswIndex::delete`] take `&self`: an owner can add and remove
//! vectors while other threads search the same index, and no search waits for them. Vectors,
//! ids, levels and lists live in storage that grows without moving what it holds (buckets
//! that double in size, `rows`), the node count and entry point are atomics, and a new node's
//! vector, id and level are written before any list names it, so a search reaches only nodes
//! that are complete; a search that started before a node was added may or may not see it.
//! Tombstones are atomic bits, seen by searches from their next look on. Changes through
//! `&self` are serialised among themselves and with [`save`](VectorIndex::save) by one
//! mutex; they never compact (the owner decides when to, through [`IndexMut`]).
//!
//! # Search breadth
//! A query's `ef` ([`SearchParams::ef`]) wins; then the index's [`HnswParams::ef_search`]; when
//! both are unset the breadth grows with the graph ([`default_ef`]: 64 up to 1,000 nodes, then
//! more per doubling), because at a fixed `ef` recall falls as the graph grows.
//!
//! # Quantization
//! With [`Quantization::Int8`] the index also keeps each vector as one signed byte per component
//! with a per-vector scale (see `quant`), and a search walks the graph on those codes: a
//! 384-d row is 6 cache lines instead of 24, and each score is one exact integer dot product
//! (`vpdpbusd` where the CPU has AVX-512 VNNI). The walk's best `k·oversampling` candidates
//! ([`SearchParams::oversampling`], default [`DEFAULT_OVERSAMPLING`]; the walk's breadth is
//! raised to at least that many) are then rescored on the full-precision vectors, so the hits
//! carry exact scores and the codes' rounding only matters if it pushes a true neighbour out of
//! the candidates. The graph is built on the full-precision vectors, as without quantization;
//! exact scans (filters too selective for the walk) also read them. A snapshot stores the
//! vectors, and loading encodes the codes again.
//!
//! # Filtered search
//! A filter is applied to results, not to the traversal: the search walks the graph as usual but
//! only admits accepted ids into its `ef` best, so it runs until it holds `ef` accepted hits.
//! The walk therefore widens by itself as the filter gets more selective (it scores about
//! `0.5/p` times as many vectors as an unfiltered search at the same `ef` when a fraction `p` is
//! accepted), and its recall rises with it: on the 100k×384 benchmark set at `p = 0.1`, `ef = 16`
//! already gives recall@10 ≈ 0.96, which unfiltered needs `ef ≈ 48` for. So when a query leaves
//! `ef` unset, a filtered query uses `ef·√p` (at least `k`) of the unfiltered default `ef` (see
//! below); at `p = 0.1` and `ef = 64` that is `ef = 20`, recall@10 ≈ 0.97.
//!
//! `p` is estimated from a fixed, evenly spread sample of [`SELECTIVITY_PROBES`] nodes. Below a
//! few percent the walk visits much of the graph and an exact scan over the accepted vectors is
//! both faster and exact. The scan scores about `p·n` vectors, the walk about `10·ef/p`, and a
//! scanned vector costs less than a walked one (sequential rather than random reads), so the
//! index scans when `p²·n ≤ EXACT_SCAN_COST·ef` with [`EXACT_SCAN_COST`] measured: around
//! `p ≤ 5 %` for 100k vectors at the default `ef`, less for larger indexes, more for smaller
//! ones. An int8-quantized walk is about three times cheaper per vector while the scan still
//! reads full-precision rows, so such an index scans only below [`EXACT_SCAN_COST_INT8`]. When
//! the walk cannot see enough accepted vectors (possible only if part of the graph is
//! unreachable) the query falls back to the exact scan as well, so `k` hits come back whenever
//! `k` live vectors pass the filter.

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

use serde::{Deserialize, Serialize};

use super::io::{SnapshotReader, SnapshotWriter};
use super::topk::TopK;
use super::{
    Filter, Hit, IndexError, IndexKind, IndexMut, IndexResult, SearchParams, VectorIndex, validate,
};
use crate::distance::Metric;

mod build;
mod graph;
mod hnsw_rs_builder;
mod id_map;
mod quant;
mod rows;
mod search;
mod store;

use build::{Inserter, draw_level};
use graph::{Entry, Graph};
use id_map::IdMap;
pub use quant::Quantization;
use quant::{CodeStore, QuantQuery};
use rows::Rows;
use search::{Scorer, View, with_scratch};
use store::VectorStore;

/// Number of nodes sampled to estimate how selective a filter is.
pub const SELECTIVITY_PROBES: usize = 256;

/// Filters accepting a fraction `p` of the `n` live vectors are answered by an exact scan when
/// `p²·n ≤ EXACT_SCAN_COST·ef`. Measured on the 100k×384 benchmark set: a filtered walk scores
/// about `10·ef/p` vectors, the scan `p·n`, and the scan's sequential reads make each of its
/// vectors about twice as cheap; at 5 % the two took the same time.
pub const EXACT_SCAN_COST: f64 = 20.0;

/// [`EXACT_SCAN_COST`] of an int8-quantized index, whose walk reads a quarter of the bytes per
/// vector while the scan still reads the full-precision rows. Measured on the same set at
/// `p = 0.1`: a walked vector cost about 62 ns against 200 ns unquantized, a scanned row 94 ns.
pub const EXACT_SCAN_COST_INT8: f64 = 7.0;

/// How many accepted rows ahead an exact scan prefetches.
const EXACT_SCAN_PREFETCH: usize = 4;

/// [`default_ef`] of a graph of at most [`DEFAULT_EF_BASE_NODES`] nodes.
pub const DEFAULT_EF_MIN: usize = 64;

/// Graph size up to which [`default_ef`] is [`DEFAULT_EF_MIN`].
pub const DEFAULT_EF_BASE_NODES: usize = 1_000;

/// What [`default_ef`] adds each time the graph doubles beyond [`DEFAULT_EF_BASE_NODES`].
pub const DEFAULT_EF_PER_DOUBLING: f64 = 16.0;

/// Largest [`default_ef`], reached around 4M nodes.
pub const DEFAULT_EF_MAX: usize = 256;

/// The search breadth a query gets when neither it nor the index sets `ef`, for a graph of
/// `nodes` nodes: [`DEFAULT_EF_MIN`] up to [`DEFAULT_EF_BASE_NODES`], then
/// [`DEFAULT_EF_PER_DOUBLING`] more per doubling, at most [`DEFAULT_EF_MAX`].
///
/// At a fixed `ef` recall falls as the graph grows (a walk of the same length covers a smaller
/// share of the neighbourhood), and sentence embeddings of real text, with their many
/// near-duplicate passages, are harder than the usual benchmark sets: on documentation
/// collections `ef` 64 stopped short of recall@10 0.99 from a few thousand passages on. The
/// rule keeps the default at recall@10 ≥ 0.99 on such collections (see BENCHMARKS.md, "Recall
/// by default"); an explicit `ef`, of the index or of the query, is used as given.
pub fn default_ef(nodes: usize) -> usize {
    if nodes <= DEFAULT_EF_BASE_NODES {
        return DEFAULT_EF_MIN;
    }
    let doublings = (nodes as f64 / DEFAULT_EF_BASE_NODES as f64).log2();
    let ef = DEFAULT_EF_MIN as f64 + DEFAULT_EF_PER_DOUBLING * doublings;
    (ef.round() as usize).min(DEFAULT_EF_MAX)
}

/// Candidates rescored on the full-precision vectors per hit asked for, when the index is
/// quantized and the query does not say ([`SearchParams::oversampling`]).
pub const DEFAULT_OVERSAMPLING: f32 = 2.0;

/// Largest [`SearchParams::oversampling`] accepted.
pub const MAX_OVERSAMPLING: f32 = 100.0;

/// Largest `M` accepted. Lists are stored with fixed strides of `1 + 2·M` slots, and `hnsw_rs`
/// stores `M` in a byte; useful values are 8 to 64.
pub const MAX_M: usize = 128;

/// Which algorithm builds the graph.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// Our parallel insertion over the compact layout.
    #[default]
    Native,
    /// The `hnsw_rs` crate, frozen into the compact layout after the build.
    HnswRs,
}

impl std::str::FromStr for Engine {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "native" => Ok(Engine::Native),
            "hnsw_rs" | "hnswrs" => Ok(Engine::HnswRs),
            other => Err(format!(
                "unknown HNSW engine '{other}', expected native or hnsw_rs"
            )),
        }
    }
}

/// Build and search parameters. The defaults reach recall@10 ≥ 0.95 on sentence-embedding-like
/// data of 100k vectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HnswParams {
    /// `M` from the paper: neighbours per node on upper levels; level 0 keeps up to `2·M`. More
    /// raises recall and memory. Default 16; between 2 and [`MAX_M`].
    pub m: usize,
    /// `efConstruction` from the paper: breadth of the search that finds a new node's
    /// neighbours. More gives a better graph and a slower build. Default 200; at least 1.
    pub ef_construction: usize,
    /// `ef` from the paper used when a query does not set [`SearchParams::ef`]: breadth of the
    /// search, raised to `k` when smaller; at least 1. `None` (the default) takes
    /// [`default_ef`] of the graph's size, which grows with it.
    pub ef_search: Option<usize>,
    /// Seed of the level draws, so builds reproduce.
    pub seed: u64,
    /// Which algorithm builds the graph.
    pub engine: Engine,
    /// Tombstones, as a fraction of all nodes, above which the graph is rebuilt from the live
    /// vectors. Default 0.25; 1 or more turns automatic rebuilds off.
    pub max_tombstone_ratio: f64,
    /// What the search's traversal scores: the full-precision vectors (the default) or their
    /// int8 codes, with the best candidates rescored at full precision. Building always uses
    /// the full-precision vectors.
    #[serde(default)]
    pub quantization: Quantization,
}

impl Default for HnswParams {
    fn default() -> Self {
        HnswParams {
            m: 16,
            ef_construction: 200,
            ef_search: None,
            seed: 0x5EED_CAFE,
            engine: Engine::Native,
            max_tombstone_ratio: 0.25,
            quantization: Quantization::None,
        }
    }
}

impl HnswParams {
    /// Checks that every parameter is in range.
    pub fn validate(&self) -> IndexResult<()> {
        let bad = |msg: String| Err(IndexError::InvalidParameter(msg));
        if !(2..=MAX_M).contains(&self.m) {
            return bad(format!("m must be between 2 and {MAX_M}, got {}", self.m));
        }
        if self.ef_construction == 0 {
            return bad("ef_construction must be at least 1".into());
        }
        if self.ef_search == Some(0) {
            return bad("ef_search must be at least 1".into());
        }
        if self.max_tombstone_ratio.is_nan() || self.max_tombstone_ratio <= 0.0 {
            return bad(format!(
                "max_tombstone_ratio must be positive, got {}",
                self.max_tombstone_ratio
            ));
        }
        Ok(())
    }
}

/// Builder for [`HnswIndex`], starting from [`HnswParams::default`].
#[derive(Clone, Debug, Default)]
pub struct HnswBuilder {
    params: HnswParams,
}

impl HnswBuilder {
    /// A builder with the default parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `M`, the number of neighbours per node (`2·M` on level 0).
    pub fn m(mut self, m: usize) -> Self {
        self.params.m = m;
        self
    }

    /// Sets the `efConstruction` parameter from the paper.
    pub fn ef_construction(mut self, ef: usize) -> Self {
        self.params.ef_construction = ef;
        self
    }

    /// Sets the default search breadth `ef` (instead of [`default_ef`] of the index's size).
    pub fn ef_search(mut self, ef: usize) -> Self {
        self.params.ef_search = Some(ef);
        self
    }

    /// Sets the seed of the level draws.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }

    /// Chooses the graph builder.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.params.engine = engine;
        self
    }

    /// Sets the tombstone fraction that triggers an automatic rebuild.
    pub fn max_tombstone_ratio(mut self, ratio: f64) -> Self {
        self.params.max_tombstone_ratio = ratio;
        self
    }

    /// Chooses what the search's traversal scores (see [`HnswParams::quantization`]).
    pub fn quantization(mut self, quantization: Quantization) -> Self {
        self.params.quantization = quantization;
        self
    }

    /// Replaces all parameters.
    pub fn params(mut self, params: HnswParams) -> Self {
        self.params = params;
        self
    }

    /// An empty index for `dim`-dimensional vectors under `metric`.
    pub fn build(self, metric: Metric, dim: usize) -> IndexResult<HnswIndex> {
        self.params.validate()?;
        if dim == 0 {
            return Err(IndexError::InvalidParameter(
                "dimension must be at least 1".into(),
            ));
        }
        Ok(HnswIndex::empty(metric, dim, self.params))
    }

    /// An index holding `vectors` (row-major, one row per id), built in parallel on the current
    /// rayon pool.
    pub fn build_with(
        self,
        metric: Metric,
        dim: usize,
        ids: &[u64],
        vectors: &[f32],
    ) -> IndexResult<HnswIndex> {
        let mut index = self.build(metric, dim)?;
        index.add(ids, vectors)?;
        Ok(index)
    }
}

/// An HNSW index; see the [module docs](self).
pub struct HnswIndex {
    metric: Metric,
    dim: usize,
    params: HnswParams,
    vectors: VectorStore,
    /// The vectors' int8 codes, when the index is quantized.
    codes: Option<CodeStore>,
    graph: Graph,
    /// Caller's id of every node, tombstoned or not.
    ids: Rows<AtomicU64>,
    /// Live ids to their node. Only writers use it, under `writer`.
    by_id: Mutex<IdMap>,
    /// Live ids.
    live: AtomicUsize,
    /// Tombstone bits, one word per 64 nodes.
    deleted: Rows<AtomicU64>,
    tombstones: AtomicUsize,
    /// Serialises changes made through `&self` ([`HnswIndex::insert`], [`HnswIndex::delete`])
    /// and snapshots, which must see no change half made. Searches never take it.
    writer: Mutex<()>,
}

impl HnswIndex {
    /// An empty index with the default parameters.
    pub fn new(metric: Metric, dim: usize) -> IndexResult<Self> {
        HnswBuilder::new().build(metric, dim)
    }

    /// A builder for an index with chosen parameters.
    pub fn builder() -> HnswBuilder {
        HnswBuilder::new()
    }

    fn empty(metric: Metric, dim: usize, params: HnswParams) -> Self {
        HnswIndex {
            metric,
            dim,
            vectors: VectorStore::with_capacity(dim, 0),
            codes: (params.quantization == Quantization::Int8).then(|| CodeStore::new(dim, metric)),
            graph: Graph::new(params.m),
            params,
            ids: Rows::new(1),
            by_id: Mutex::new(IdMap::default()),
            live: AtomicUsize::new(0),
            deleted: Rows::new(1),
            tombstones: AtomicUsize::new(0),
            writer: Mutex::new(()),
        }
    }

    /// The parameters the index was built with.
    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Replaces the default search breadth (`None`: [`default_ef`] of the size). An index loaded
    /// from a snapshot carries the value it was saved with; its owner's current setting wins.
    pub fn set_ef_search(&mut self, ef: Option<usize>) -> IndexResult<()> {
        if ef == Some(0) {
            return Err(IndexError::InvalidParameter(
                "ef_search must be at least 1".into(),
            ));
        }
        self.params.ef_search = ef;
        Ok(())
    }

    /// The search breadth of a query that does not set one, before it is raised to `k`.
    pub fn default_search_ef(&self) -> usize {
        self.params
            .ef_search
            .unwrap_or_else(|| default_ef(self.graph.len()))
    }

    /// The stored rows of those of `ids` that are live, in the order asked: their ids and the
    /// rows, row-major, as the metric stores them (normalised under cosine). Ids not live are
    /// skipped.
    pub fn stored_rows(&self, ids: &[u64]) -> (Vec<u64>, Vec<f32>) {
        let nodes: Vec<(u64, u32)> = {
            let by_id = self.by_id.lock();
            ids.iter()
                .filter_map(|&id| by_id.get(id, |n| self.id_of(n)).map(|n| (id, n)))
                .collect()
        };
        let mut found = Vec::with_capacity(nodes.len());
        let mut rows = Vec::with_capacity(nodes.len() * self.dim);
        for (id, node) in nodes {
            found.push(id);
            rows.extend_from_slice(self.vectors.row(node));
        }
        (found, rows)
    }

    /// Number of tombstoned nodes still in the graph.
    pub fn tombstones(&self) -> usize {
        self.tombstones.load(Ordering::Acquire)
    }

    /// Rebuilds the graph from the live vectors alone, dropping every tombstone and the memory
    /// it held. Uses the configured [`Engine`] and runs on the current rayon pool; takes as long
    /// as building the live vectors afresh, and holds a second copy of them meanwhile.
    pub fn rebuild(&mut self) {
        let live: Vec<u32> = (0..self.graph.len() as u32)
            .filter(|&n| !self.is_deleted(n))
            .collect();
        let mut rows = Vec::with_capacity(live.len() * self.dim);
        for &n in &live {
            rows.extend_from_slice(self.vectors.row(n));
        }
        let ids: Vec<u64> = live.iter().map(|&n| self.id_of(n)).collect();
        let mut fresh = HnswIndex::empty(self.metric, self.dim, self.params.clone());
        fresh.append_new(&ids, &rows);
        *self = fresh;
    }

    /// Reads an index saved by [`save`](VectorIndex::save). The graph is loaded as saved, not
    /// rebuilt; every array is checked against its checksum and for consistency.
    pub fn load(dir: &Path) -> IndexResult<Self> {
        let reader = SnapshotReader::open(dir)?;
        reader.expect_kind(IndexKind::Hnsw)?;
        let corrupt = |reason: String| IndexError::corrupt(dir, reason);
        let manifest = reader.manifest();
        let (metric, dim) = (manifest.metric, manifest.dim);
        if dim == 0 {
            return Err(corrupt("dimension 0".into()));
        }
        let params: HnswParams = reader.param("params")?;
        params
            .validate()
            .map_err(|e| corrupt(format!("bad parameters: {e}")))?;
        let nodes: usize = reader.param("nodes")?;
        let entry: Option<(u32, usize)> = reader.param("entry")?;
        let vectors = reader.read_f32s("vectors")?;
        if Some(vectors.len()) != nodes.checked_mul(dim) {
            return Err(corrupt(format!(
                "{} vector components for {nodes} nodes of dimension {dim}",
                vectors.len()
            )));
        }
        let ids = reader.read_u64s("ids")?;
        let levels = reader.read_bytes("levels")?;
        let deleted = reader.read_u64s("deleted")?;
        if ids.len() != nodes || levels.len() != nodes || deleted.len() != nodes.div_ceil(64) {
            return Err(corrupt(format!(
                "{} ids, {} levels and {} tombstone words for {nodes} nodes",
                ids.len(),
                levels.len(),
                deleted.len()
            )));
        }
        if !nodes.is_multiple_of(64) && deleted.last().is_some_and(|w| w >> (nodes % 64) != 0) {
            return Err(corrupt("tombstones beyond the last node".into()));
        }
        let graph = Graph::from_parts(
            params.m,
            levels,
            reader.read_u32s("level0")?,
            reader.read_u32s("upper")?,
            entry.map(|(node, level)| Entry { node, level }),
        )
        .map_err(corrupt)?;
        let mut index = HnswIndex::empty(metric, dim, params);
        index.vectors = VectorStore::from_rows(dim, &vectors);
        drop(vectors);
        // Codes are a function of the vectors, so they are encoded again rather than saved.
        if index.codes.is_some() {
            index.codes = Some(CodeStore::from_rows(dim, metric, index.vectors.runs()));
        }
        index.graph = graph;
        index.deleted.reserve(deleted.len());
        for (i, &w) in deleted.iter().enumerate() {
            index.deleted.row(i)[0].store(w, Ordering::Relaxed);
        }
        let tombstones: usize = deleted.iter().map(|w| w.count_ones() as usize).sum();
        index.tombstones.store(tombstones, Ordering::Relaxed);
        index.ids.reserve(nodes);
        for (node, &id) in ids.iter().enumerate() {
            index.ids.row(node)[0].store(id, Ordering::Relaxed);
        }
        let id_rows = &index.ids;
        let id_of = |n: u32| id_rows.row(n as usize)[0].load(Ordering::Relaxed);
        let by_id = index.by_id.get_mut();
        by_id.reserve(nodes - tombstones, id_of);
        for (node, &id) in ids.iter().enumerate() {
            if !is_set(&deleted, node as u32) && by_id.insert(node as u32, id_of).is_some() {
                return Err(corrupt(format!("id {id} is live on two nodes")));
            }
        }
        index.live.store(by_id.len(), Ordering::Relaxed);
        Ok(index)
    }

    #[inline]
    fn is_deleted(&self, node: u32) -> bool {
        self.deleted.row(node as usize / 64)[0].load(Ordering::Relaxed) >> (node % 64) & 1 == 1
    }

    /// The caller's id of `node`.
    #[inline]
    fn id_of(&self, node: u32) -> u64 {
        self.ids.row(node as usize)[0].load(Ordering::Relaxed)
    }

    /// Marks `node` deleted. Searches skip it from their next look at it on.
    fn tombstone(&self, node: u32) {
        self.deleted.row(node as usize / 64)[0].fetch_or(1 << (node % 64), Ordering::Release);
        self.tombstones.fetch_add(1, Ordering::AcqRel);
    }

    fn view(&self) -> View<'_> {
        View {
            graph: &self.graph,
            vectors: &self.vectors,
            scorer: Scorer::new(self.metric),
        }
    }

    /// Adds prepared rows under ids that are not live to an index that may be empty: the first
    /// batch of an empty index is built by the configured [`Engine`].
    fn append_new(&mut self, ids: &[u64], rows: &[f32]) {
        if self.graph.len() == 0 && self.params.engine == Engine::HnswRs && !ids.is_empty() {
            self.push_rows(rows);
            self.register(ids);
            self.graph = hnsw_rs_builder::build(
                self.metric,
                &self.vectors,
                self.params.m,
                self.params.ef_construction,
            );
            let nodes = self.graph.len() as u32;
            let dead = |n: u32| self.is_deleted(n);
            Inserter::new(self.view(), self.params.ef_construction, &dead).repair(0..nodes);
            return;
        }
        self.append(ids, rows);
    }

    /// Stores the rows of the nodes about to be pushed, and their codes.
    fn push_rows(&self, rows: &[f32]) {
        self.vectors.push(rows);
        if let Some(codes) = &self.codes {
            codes.push(rows);
        }
    }

    /// Records the ids of the nodes about to be pushed, numbered from the graph's current
    /// node count on.
    fn register(&self, ids: &[u64]) {
        let first = self.graph.len();
        let nodes = first + ids.len();
        self.ids.reserve(nodes);
        self.deleted.reserve(nodes.div_ceil(64));
        for (i, &id) in ids.iter().enumerate() {
            self.ids.row(first + i)[0].store(id, Ordering::Relaxed);
        }
        let id_of = |n: u32| self.id_of(n);
        let mut by_id = self.by_id.lock();
        by_id.reserve(ids.len(), id_of);
        for node in first..nodes {
            by_id.insert(node as u32, id_of);
        }
        self.live.store(by_id.len(), Ordering::Release);
    }

    /// Adds prepared rows under ids that are not live, and links them into the graph with the
    /// native inserter. One writer at a time; searches may run meanwhile: each new node's vector,
    /// id and level are in place before any list names it.
    fn append(&self, ids: &[u64], rows: &[f32]) {
        if ids.is_empty() {
            return;
        }
        let first = self.graph.len() as u32;
        let levels: Vec<u8> = (0..ids.len() as u32)
            .map(|i| draw_level(self.params.seed, first + i, self.params.m))
            .collect();
        self.push_rows(rows);
        self.register(ids);
        self.graph.push_nodes(&levels);
        let nodes = self.graph.len() as u32;
        let new_nodes = first..nodes;
        let dead = |n: u32| self.is_deleted(n);
        let entry = Inserter::new(self.view(), self.params.ef_construction, &dead)
            .insert_all(new_nodes.clone());
        self.graph.set_entry(entry);
        // Repair after builds and large batches; a small batch's nodes get in-edges from their
        // own reverse links, and a check per small insert would dominate its cost.
        if ids.len() * 16 >= nodes as usize {
            Inserter::new(self.view(), self.params.ef_construction, &dead).repair(new_nodes);
        }
    }

    /// Adds vectors under `ids` while searches may run: a live id whose vector differs is
    /// replaced (its old node tombstoned), one with a bit-identical vector is left alone. Never
    /// compacts (see [`IndexMut::add`] for the owner's call that may). Changes through `&self`
    /// are serialised among themselves; searches never wait for them.
    pub fn insert(&self, ids: &[u64], vectors: &[f32]) -> IndexResult<()> {
        let rows = validate::prepare_batch(self.metric, self.dim, ids, vectors)?;
        let _writer = self.writer.lock();
        check_node_room(self.graph.len(), ids.len())?;
        let existing: Vec<Option<u32>> = {
            let by_id = self.by_id.lock();
            ids.iter()
                .map(|&id| by_id.get(id, |n| self.id_of(n)))
                .collect()
        };
        if existing.iter().all(Option::is_none) {
            self.append(ids, &rows);
            return Ok(());
        }
        let dim = self.dim;
        let mut keep_ids = Vec::with_capacity(ids.len());
        let mut keep_rows: Vec<f32> = Vec::new();
        for ((row, &id), old) in rows.chunks_exact(dim).zip(ids).zip(existing) {
            if let Some(node) = old {
                let same = self
                    .vectors
                    .row(node)
                    .iter()
                    .zip(row)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                if same {
                    continue;
                }
                self.tombstone(node);
            }
            keep_ids.push(id);
            keep_rows.extend_from_slice(row);
        }
        self.append(&keep_ids, &keep_rows);
        Ok(())
    }

    /// Tombstones the nodes of `ids` while searches may run; returns how many were live. Never
    /// compacts.
    pub fn delete(&self, ids: &[u64]) -> usize {
        let _writer = self.writer.lock();
        let mut by_id = self.by_id.lock();
        let mut removed = 0;
        for id in ids {
            if let Some(node) = by_id.remove(*id, |n| self.id_of(n)) {
                self.tombstone(node);
                removed += 1;
            }
        }
        self.live.store(by_id.len(), Ordering::Release);
        removed
    }

    /// Rebuilds when tombstones exceed the configured share of the nodes.
    fn maybe_compact(&mut self) {
        let nodes = self.graph.len();
        let tombstones = self.tombstones();
        if tombstones > 0 && tombstones as f64 > self.params.max_tombstone_ratio * nodes as f64 {
            self.rebuild();
        }
    }

    /// The fraction of live vectors `filter` accepts, estimated from a fixed, evenly spread
    /// sample of nodes; `None` when the sample holds no live node.
    fn selectivity(&self, filter: Filter<'_>) -> Option<f64> {
        let nodes = self.graph.len();
        let (mut live, mut pass) = (0usize, 0usize);
        for j in 0..SELECTIVITY_PROBES.min(nodes) {
            // A Weyl sequence (multiples of the golden ratio, modulo 1): spread evenly over the
            // nodes without the aliasing an arithmetic stride has with filters such as
            // `id % 10 == 0`.
            let frac = (j as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let node = ((u128::from(frac) * nodes as u128) >> 64) as u32;
            if self.is_deleted(node) {
                continue;
            }
            live += 1;
            pass += usize::from(filter(self.id_of(node)));
        }
        (live > 0).then(|| pass as f64 / live as f64)
    }

    /// Exact top-`k` over the live vectors the filter accepts.
    ///
    /// Ids and tombstone words are read run by run rather than node by node, and the accepted
    /// nodes are scored in a second pass that prefetches rows ahead: with a selective filter
    /// most nodes are only looked at, and finding each one's bucket again cost more than the
    /// filter and the scores together; the rows scored are scattered, so the hardware
    /// prefetcher does not see them coming.
    fn exact_search(&self, query: &[f32], k: usize, filter: Option<Filter<'_>>) -> Vec<Hit> {
        let nodes = self.graph.len();
        let deleted = (self.tombstones() > 0).then(|| {
            self.deleted
                .collect(nodes.div_ceil(64), |w| w.load(Ordering::Relaxed))
        });
        let mut accepted: Vec<(u32, u64)> = Vec::new();
        let mut node = 0u32;
        for run in self.ids.runs(nodes) {
            for cell in run {
                let n = node;
                node += 1;
                if deleted.as_ref().is_some_and(|d| is_set(d, n)) {
                    continue;
                }
                let id = cell.load(Ordering::Relaxed);
                if filter.is_none_or(|f| f(id)) {
                    accepted.push((n, id));
                }
            }
        }
        let scorer = Scorer::new(self.metric);
        let mut top = TopK::new(k);
        for (i, &(n, id)) in accepted.iter().enumerate() {
            if let Some(&(ahead, _)) = accepted.get(i + EXACT_SCAN_PREFETCH) {
                crate::distance::prefetch_read(self.vectors.row(ahead));
            }
            top.push(id, scorer.score(query, self.vectors.row(n)));
        }
        top.into_sorted_vec()
    }

    /// Graph search admitting the nodes `admit` accepts. A quantized index walks the codes and
    /// rescores its best `rescore` candidates (at least `k`) on the full-precision vectors.
    /// Returns the hits and whether the walk saw every node.
    fn graph_search(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        rescore: usize,
        admit: impl Fn(u32) -> bool,
    ) -> (Vec<Hit>, bool) {
        let view = self.view();
        with_scratch(|scratch| {
            let scored = match &self.codes {
                None => {
                    let Some(start) = view.descend(query) else {
                        return (Vec::new(), true);
                    };
                    view.search_layer(query, &[start], ef, 0, admit, scratch)
                }
                Some(codes) => {
                    let probe = QuantQuery::new(codes, query);
                    let Some(start) = view.descend(&probe) else {
                        return (Vec::new(), true);
                    };
                    let scored = view.search_layer(&probe, &[start], ef, 0, admit, scratch);
                    scratch.found.truncate(rescore.max(k));
                    for (score, node) in &mut scratch.found {
                        *score = view.score_to(query, *node);
                    }
                    scored
                }
            };
            let mut hits: Vec<Hit> = scratch
                .found
                .iter()
                .map(|&(score, node)| Hit {
                    id: self.id_of(node),
                    score,
                })
                .collect();
            hits.sort_unstable_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
            hits.truncate(k);
            (hits, scored >= self.graph.len())
        })
    }

    /// Candidates a quantized search rescores for `k` hits: `k·oversampling`, rounded up.
    fn rescore_count(&self, k: usize, params: &SearchParams) -> IndexResult<usize> {
        let factor = params.oversampling.unwrap_or(DEFAULT_OVERSAMPLING);
        if !(1.0..=MAX_OVERSAMPLING).contains(&factor) {
            return Err(IndexError::InvalidParameter(format!(
                "oversampling must be between 1 and {MAX_OVERSAMPLING}, got {factor}"
            )));
        }
        Ok(if self.codes.is_some() {
            (k as f64 * f64::from(factor)).ceil() as usize
        } else {
            k
        })
    }
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A summary: the arrays run to hundreds of megabytes.
        f.debug_struct("HnswIndex")
            .field("metric", &self.metric)
            .field("dim", &self.dim)
            .field("live", &self.len())
            .field("tombstones", &self.tombstones())
            .field("entry", &self.graph.entry())
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Refuses a batch that would take a graph of `nodes` nodes past `u32` node numbers.
fn check_node_room(nodes: usize, added: usize) -> IndexResult<()> {
    if nodes.saturating_add(added) >= u32::MAX as usize {
        return Err(IndexError::InvalidParameter(format!(
            "an HNSW index holds fewer than {} nodes (tombstones included)",
            u32::MAX
        )));
    }
    Ok(())
}

/// Bit `i` of a bitset stored in 64-bit words.
#[inline]
fn is_set(words: &[u64], i: u32) -> bool {
    words[i as usize / 64] >> (i % 64) & 1 == 1
}

impl VectorIndex for HnswIndex {
    fn kind(&self) -> IndexKind {
        IndexKind::Hnsw
    }

    fn metric(&self) -> Metric {
        self.metric
    }

    fn dim(&self) -> usize {
        self.dim
    }

    fn len(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn contains(&self, id: u64) -> bool {
        self.by_id.lock().get(id, |n| self.id_of(n)).is_some()
    }

    fn live_ids(&self) -> Vec<u64> {
        let by_id = self.by_id.lock();
        by_id.nodes().map(|n| self.id_of(n)).collect()
    }

    fn memory_bytes(&self) -> usize {
        self.vectors.memory_bytes()
            + self.codes.as_ref().map_or(0, CodeStore::memory_bytes)
            + self.graph.memory_bytes()
            + self.ids.memory_bytes(self.graph.len())
            + self.by_id.lock().memory_bytes()
            + self.deleted.memory_bytes(self.graph.len().div_ceil(64))
    }

    fn rescoring_bytes(&self) -> usize {
        // Building and exact scans read the full-precision vectors too, but a quantized search
        // needs them only for its rescoring pass.
        self.codes
            .as_ref()
            .map_or(0, |_| self.vectors.memory_bytes())
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Hit>> {
        let query = validate::prepare_query(self.metric, self.dim, query, k)?;
        let rescore = self.rescore_count(k, params)?;
        if self.is_empty() {
            return Ok(Vec::new());
        }
        let nodes = self.graph.len();
        let ef = match (filter, params.ef) {
            (None, ef) => ef.unwrap_or_else(|| self.default_search_ef()),
            (Some(f), ef) => {
                let Some(p) = self.selectivity(f) else {
                    return Ok(self.exact_search(&query, k, filter));
                };
                let ef = ef.unwrap_or_else(|| {
                    (self.default_search_ef() as f64 * p.sqrt()).round() as usize
                });
                let ef_cost = ef.max(k).min(nodes) as f64;
                let scan_cost = if self.codes.is_some() {
                    EXACT_SCAN_COST_INT8
                } else {
                    EXACT_SCAN_COST
                };
                if p * p * self.len() as f64 <= scan_cost * ef_cost {
                    return Ok(self.exact_search(&query, k, filter));
                }
                ef
            }
        }
        .max(rescore)
        .max(k)
        .min(nodes);
        let (hits, saw_all) = match filter {
            None if self.tombstones() == 0 => self.graph_search(&query, k, ef, rescore, |_| true),
            None => self.graph_search(&query, k, ef, rescore, |n| !self.is_deleted(n)),
            Some(f) => self.graph_search(&query, k, ef, rescore, |n| {
                !self.is_deleted(n) && f(self.id_of(n))
            }),
        };
        if hits.len() < k && !saw_all {
            // The walk ran out of reachable nodes before finding k admitted ones, so some nodes
            // are unreachable: only a scan can promise every admitted vector.
            return Ok(self.exact_search(&query, k, filter));
        }
        Ok(hits)
    }

    fn save(&self, dir: &Path) -> IndexResult<()> {
        // A change made meanwhile through `&self` would leave the arrays disagreeing.
        let _writer = self.writer.lock();
        let nodes = self.graph.len();
        let mut w = SnapshotWriter::create(dir)?;
        w.write_f32_parts("vectors", self.vectors.runs())?;
        let ids = self.ids.collect(nodes, |x| x.load(Ordering::Relaxed));
        w.write_u64s("ids", &ids)?;
        drop(ids);
        w.write_bytes("levels", &self.graph.levels())?;
        w.write_u32s("level0", &self.graph.level0_words())?;
        w.write_u32s("upper", &self.graph.upper_words())?;
        let deleted = self
            .deleted
            .collect(nodes.div_ceil(64), |x| x.load(Ordering::Relaxed));
        w.write_u64s("deleted", &deleted)?;
        let entry = self.graph.entry().map(|e| (e.node, e.level));
        w.commit(
            IndexKind::Hnsw,
            self.metric,
            self.dim,
            serde_json::json!({
                "params": self.params,
                "nodes": self.graph.len(),
                "live": self.len(),
                "entry": entry,
            }),
        )
    }
}

impl IndexMut for HnswIndex {
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> IndexResult<()> {
        if self.graph.len() == 0 && !ids.is_empty() {
            let rows = validate::prepare_batch(self.metric, self.dim, ids, vectors)?;
            check_node_room(0, ids.len())?;
            self.append_new(ids, &rows);
            return Ok(());
        }
        let tombstones = self.tombstones();
        self.insert(ids, vectors)?;
        if self.tombstones() > tombstones {
            self.maybe_compact();
        }
        Ok(())
    }

    fn remove(&mut self, ids: &[u64]) -> IndexResult<usize> {
        let removed = self.delete(ids);
        if removed > 0 {
            self.maybe_compact();
        }
        Ok(removed)
    }
}
