//! One collection's in-memory side: its vectors, its approximate index, the metadata that
//! filters read, and the planner that picks a search path per query.
//!
//! Every passage vector lives in an exact [`FlatIndex`], always complete and always current; an
//! approximate index ([`AnnIndex`], HNSW or IVF) is built beside it once the collection is large
//! enough for exact scans to cost more than a graph search. Passages written since the
//! approximate index last caught up are listed in `pending` and scanned exactly alongside it, so a
//! write is visible to the next query without waiting for the (slower) graph insertion, which a
//! background task does in small steps.
//!
//! All methods here are synchronous and CPU-bound; the service calls them on blocking threads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde_json::Value;

use crate::distance::Metric;
use crate::index::ann::{AnnIndex, AnnParams};
use crate::index::flat::FlatIndex;
use crate::index::topk::TopK;
use crate::index::{Hit, IndexKind, IndexMut, SearchParams, VectorIndex, validate};
use crate::store::{CollectionRecord, PassageId};

use super::chunk::Chunker;
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;
use super::types::{IndexConfig, IndexState, Plan};

/// How many sampled passages estimate a filter's selectivity.
const FILTER_SAMPLE: usize = 256;

/// Largest squared length of a vector under dot or L2. Finite components are not enough: the
/// score of two vectors of 3e38s overflows to infinity (or NaN), which ranks arbitrarily and
/// reaches JSON as `null`. Within this bound every score is finite, since |a·b| ≤ |a||b| and
/// |a − b|² ≤ 2(|a|² + |b|²), with room to spare for rounding. Cosine vectors are normalised.
const MAX_SQUARED_LENGTH: f64 = f32::MAX as f64 / 8.0;

/// Tuning of the planner and of background indexing, shared by all collections.
#[derive(Clone, Debug)]
pub struct PlannerSettings {
    /// Collections (and filtered candidate sets) of at most this many passages are scanned
    /// exactly; above it an approximate index is built and used.
    pub exact_threshold: usize,
    /// Filters estimated to match at most this fraction of passages are answered by an exact
    /// scan of the matching passages, which beats a graph search that must skip most nodes.
    pub filter_exact_fraction: f64,
    /// Passages inserted into the approximate index per write-lock hold, so that queries wait
    /// at most one small step behind background indexing.
    pub insert_step: usize,
    /// Rebuild an IVF index once the collection has grown this many times past the size it was
    /// trained on (its cells no longer fit the data).
    pub ivf_regrow_factor: f64,
    /// While requests wait for the encoder, background indexing waits too, until this many
    /// passages are left out of the approximate index (queries scan those exactly, so this
    /// bounds what that costs them). 0: never wait.
    pub defer_max_unindexed: usize,
    /// How long the encoder must have been idle before background indexing resumes.
    pub defer_quiet: Duration,
    /// What inserting one passage into the approximate index costs, in exact distance
    /// computations. Once queries have spent as many scanning unindexed passages as indexing
    /// them would cost, indexing proceeds even while the encoder is busy: waiting saves a bulk
    /// load the insertions, but under steady queries it would make every query pay for them.
    pub defer_insert_cost: u64,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            exact_threshold: 10_000,
            filter_exact_fraction: 0.02,
            insert_step: 64,
            ivf_regrow_factor: 4.0,
            defer_max_unindexed: 100_000,
            defer_quiet: Duration::from_millis(250),
            // Measured: an HNSW insertion at ef_construction 200 takes ~0.28 ms of CPU, a
            // 384-d distance ~50 ns.
            defer_insert_cost: 5_000,
        }
    }
}

/// A document as the filters see it.
#[derive(Debug)]
pub(crate) struct DocEntry {
    pub(crate) metadata: Value,
    pub(crate) passages: Vec<PassageId>,
}

/// A passage to add to the in-memory indexes, after it has been committed.
pub(crate) struct NewPassageVector<'a> {
    pub(crate) id: PassageId,
    pub(crate) vector: &'a [f32],
}

/// The mutable part of a collection.
pub(crate) struct State {
    pub(crate) flat: FlatIndex,
    pub(crate) ann: Option<AnnIndex>,
    /// A full build of the approximate index is running; queries scan exactly meanwhile.
    pub(crate) building: bool,
    /// Passages in `flat` that the approximate index (live or being built) does not hold yet.
    pub(crate) pending: HashSet<PassageId>,
    /// Passages removed while a build was running: the new index must drop them.
    pub(crate) removed_during_build: Vec<PassageId>,
    pub(crate) docs: HashMap<String, Arc<DocEntry>>,
    pub(crate) passage_doc: HashMap<PassageId, Arc<DocEntry>>,
    /// Changes to the approximate index since its last snapshot.
    pub(crate) unsnapshotted: u64,
    /// Collection size when the current approximate index was built.
    pub(crate) built_at_len: usize,
}

/// A collection: its settings and its in-memory state.
pub(crate) struct Collection {
    pub(crate) record: CollectionRecord,
    pub(crate) config: IndexConfig,
    pub(crate) metric: Metric,
    pub(crate) dim: usize,
    /// Serialises writes, so that the store and the in-memory state change in the same order.
    pub(crate) write_lock: tokio::sync::Mutex<()>,
    pub(crate) state: RwLock<State>,
    /// Wakes the background indexer.
    pub(crate) indexer: tokio::sync::Notify,
    /// Splits text documents into passages; `None` for collections that take vectors.
    pub(crate) chunker: Option<Chunker>,
    /// Set once the collection is deleted: in-flight work stops touching it.
    deleted: AtomicBool,
    /// Distance computations queries have spent on passages the approximate index does not
    /// hold, since it last held them all: what deferring their indexing has cost so far.
    exact_debt: AtomicU64,
}

impl Collection {
    pub(crate) fn new(
        record: CollectionRecord,
        config: IndexConfig,
        dim: usize,
        chunker: Option<Chunker>,
    ) -> ServiceResult<Self> {
        let metric = record.distance;
        let flat = FlatIndex::new(metric, dim)?;
        Ok(Collection {
            record,
            config,
            metric,
            dim,
            write_lock: tokio::sync::Mutex::new(()),
            state: RwLock::new(State {
                flat,
                ann: None,
                building: false,
                pending: HashSet::new(),
                removed_during_build: Vec::new(),
                docs: HashMap::new(),
                passage_doc: HashMap::new(),
                unsnapshotted: 0,
                built_at_len: 0,
            }),
            indexer: tokio::sync::Notify::new(),
            chunker,
            deleted: AtomicBool::new(false),
            exact_debt: AtomicU64::new(0),
        })
    }

    /// Whether the collection has been deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Marks the collection deleted and wakes its indexer so that it stops.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.indexer.notify_one();
    }

    /// Refuses a vector whose scores against this collection's vectors could overflow `f32`
    /// (see [`MAX_SQUARED_LENGTH`]). Non-finite components are left to the index's own checks,
    /// which name the position.
    pub(crate) fn check_length(&self, v: &[f32]) -> ServiceResult<()> {
        if self.metric.normalizes() || v.iter().any(|x| !x.is_finite()) {
            return Ok(());
        }
        let squared: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        if squared > MAX_SQUARED_LENGTH {
            return Err(ServiceError::invalid(
                "invalid_vector",
                format!(
                    "the vector's length {:.3e} is too large for {} scores to stay finite; \
                     the limit is {:.3e}",
                    squared.sqrt(),
                    self.metric,
                    MAX_SQUARED_LENGTH.sqrt()
                ),
            ));
        }
        Ok(())
    }

    /// The approximate index parameters this collection builds with.
    pub(crate) fn ann_params(&self) -> Option<AnnParams> {
        let kind = self.config.kind.ann_kind()?;
        Some(AnnParams {
            kind,
            m: self.config.m,
            ef_construction: self.config.ef_construction,
            ef: self.config.ef,
            nlist: self.config.nlist,
            nprobe: self.config.nprobe,
        })
    }

    /// Loads documents and vectors read from the store at start-up. `vectors` is row-major.
    pub(crate) fn load_documents(&self, docs: Vec<(String, Value, Vec<PassageId>)>) {
        let mut st = self.state.write();
        for (id, metadata, passages) in docs {
            let entry = Arc::new(DocEntry { metadata, passages });
            for &p in &entry.passages {
                st.passage_doc.insert(p, entry.clone());
            }
            st.docs.insert(id, entry);
        }
    }

    /// Adds a chunk of stored vectors at start-up.
    pub(crate) fn load_vectors(&self, ids: &[PassageId], vectors: &[f32]) -> ServiceResult<()> {
        self.state.write().flat.add(ids, vectors)?;
        Ok(())
    }

    /// Applies a committed write: documents replaced or removed (their old passages go) and
    /// documents added with their new passages.
    pub(crate) fn apply_write(
        &self,
        removed_docs: &[String],
        removed_passages: &[PassageId],
        added: Vec<(String, Value, Vec<NewPassageVector<'_>>)>,
    ) -> ServiceResult<()> {
        let mut guard = self.state.write();
        let st = &mut *guard;
        for id in removed_docs {
            st.docs.remove(id);
        }
        if !removed_passages.is_empty() {
            st.flat.remove(removed_passages)?;
            for p in removed_passages {
                st.passage_doc.remove(p);
                st.pending.remove(p);
            }
            if let Some(ann) = st.ann.as_mut() {
                ann.remove(removed_passages)?;
                st.unsnapshotted += removed_passages.len() as u64;
            }
            if st.building {
                st.removed_during_build.extend_from_slice(removed_passages);
            }
        }
        let mut ids = Vec::new();
        let mut values = Vec::new();
        for (doc_id, metadata, passages) in added {
            let entry = Arc::new(DocEntry {
                metadata,
                passages: passages.iter().map(|p| p.id).collect(),
            });
            for p in &passages {
                ids.push(p.id);
                values.extend_from_slice(p.vector);
                st.passage_doc.insert(p.id, entry.clone());
            }
            st.docs.insert(doc_id, entry);
        }
        if !ids.is_empty() {
            st.flat.add(&ids, &values)?;
            if st.ann.is_some() || st.building {
                st.pending.extend(ids.iter().copied());
            }
        }
        Ok(())
    }

    /// A summary of the index state, for collection info.
    pub(crate) fn index_state(&self, settings: &PlannerSettings) -> (IndexState, u64, usize) {
        let st = self.state.read();
        let scheduled = self.first_build_due(&st, settings);
        let memory = st.flat.memory_bytes() + st.ann.as_ref().map_or(0, |a| a.memory_bytes());
        let status = if st.building {
            "building"
        } else if st.ann.is_some() {
            "ready"
        } else if scheduled {
            "scheduled"
        } else {
            "none"
        };
        (
            IndexState {
                ann: st.ann.as_ref().map(|a| a.kind()).or_else(|| {
                    (st.building || scheduled)
                        .then(|| self.config.kind.ann_kind())
                        .flatten()
                }),
                status,
                pending: self.unindexed_in(&st, settings),
                indexed: st.ann.as_ref().map_or(0, |a| a.len()),
            },
            memory as u64,
            st.flat.len(),
        )
    }

    /// Whether the collection has outgrown exact scans and has no approximate index yet, nor
    /// one being built.
    fn first_build_due(&self, st: &State, settings: &PlannerSettings) -> bool {
        self.config.kind.ann_kind().is_some()
            && !st.building
            && st.ann.is_none()
            && st.flat.len() > settings.exact_threshold
    }

    /// Whether background indexing may keep waiting for the encoder: the unindexed passages
    /// are within the bound, and queries have not yet spent on scanning them what indexing them
    /// would cost.
    pub(crate) fn may_defer(&self, settings: &PlannerSettings) -> bool {
        let unindexed = self.unindexed(settings);
        unindexed <= settings.defer_max_unindexed
            && self.exact_debt.load(Ordering::Relaxed)
                < (unindexed as u64).saturating_mul(settings.defer_insert_cost)
    }

    /// Forgets the cost of deferred indexing, once the approximate index holds everything.
    pub(crate) fn clear_exact_debt(&self) {
        self.exact_debt.store(0, Ordering::Relaxed);
    }

    fn add_exact_debt(&self, distances: usize) {
        if distances > 0 {
            self.exact_debt
                .fetch_add(distances as u64, Ordering::Relaxed);
        }
    }

    /// Passages that queries scan exactly because the approximate index does not hold them:
    /// those pending insertion, or all of them while the collection waits for its first build.
    pub(crate) fn unindexed(&self, settings: &PlannerSettings) -> usize {
        self.unindexed_in(&self.state.read(), settings)
    }

    fn unindexed_in(&self, st: &State, settings: &PlannerSettings) -> usize {
        if self.first_build_due(st, settings) {
            st.flat.len()
        } else if st.ann.is_some() || st.building {
            st.pending.len()
        } else {
            0
        }
    }

    /// Whether the approximate index should be (re)built now: the collection has outgrown
    /// exact scans and has none, or an IVF index has outgrown its training.
    pub(crate) fn wants_build(&self, settings: &PlannerSettings) -> bool {
        if self.config.kind.ann_kind().is_none() {
            return false;
        }
        let st = self.state.read();
        if st.building {
            return false;
        }
        let n = st.flat.len();
        match &st.ann {
            None => n > settings.exact_threshold,
            Some(ann) => {
                ann.kind() == IndexKind::Ivf
                    && n as f64 > settings.ivf_regrow_factor * st.built_at_len.max(1) as f64
                    || ann.wants_compaction()
            }
        }
    }

    /// Builds the approximate index from the current vectors without holding the lock during
    /// the build, then installs it. Queries scan exactly while it runs.
    pub(crate) fn build_ann(&self) -> ServiceResult<()> {
        let Some(params) = self.ann_params() else {
            return Ok(());
        };
        let (ids, vectors) = {
            let mut st = self.state.write();
            if st.building {
                return Ok(());
            }
            st.building = true;
            // The old index (if any) is dropped now: queries scan exactly until the new one is
            // in, and the memory of two graphs is never held at once.
            st.ann = None;
            st.pending.clear();
            st.removed_during_build.clear();
            (st.flat.ids().to_vec(), st.flat.vectors().to_vec())
        };
        let built = AnnIndex::build(&params, self.metric, self.dim, &ids, &vectors);
        drop(vectors);
        let mut st = self.state.write();
        st.building = false;
        let mut ann = match built {
            Ok(ann) => ann,
            Err(e) => {
                st.pending.clear();
                return Err(e.into());
            }
        };
        let removed = std::mem::take(&mut st.removed_during_build);
        if !removed.is_empty() {
            ann.remove(&removed)?;
        }
        st.built_at_len = ids.len();
        st.unsnapshotted = u64::MAX / 2;
        st.ann = Some(ann);
        Ok(())
    }

    /// Installs an index loaded from a snapshot, reconciled with the stored vectors: entries
    /// the store no longer has are removed, stored passages it lacks become pending.
    pub(crate) fn install_snapshot(&self, mut ann: AnnIndex) -> ServiceResult<()> {
        // The snapshot carries the search breadth it was saved with; the configuration wins.
        ann.set_default_ef(self.config.ef)?;
        let mut st = self.state.write();
        let in_ann: HashSet<u64> = ann.live_ids().into_iter().collect();
        let stale: Vec<u64> = in_ann
            .iter()
            .copied()
            .filter(|id| !st.flat.contains(*id))
            .collect();
        if !stale.is_empty() {
            ann.remove(&stale)?;
        }
        let missing: Vec<u64> = st
            .flat
            .ids()
            .iter()
            .copied()
            .filter(|id| !in_ann.contains(id))
            .collect();
        st.unsnapshotted = (stale.len() + missing.len()) as u64;
        st.built_at_len = ann.len();
        st.pending = missing.into_iter().collect();
        st.ann = Some(ann);
        Ok(())
    }

    /// Moves up to `step` pending passages into the approximate index. Returns how many are
    /// still pending.
    pub(crate) fn drain_pending_step(&self, step: usize) -> ServiceResult<usize> {
        let mut guard = self.state.write();
        let st = &mut *guard;
        if st.building || st.ann.is_none() {
            return Ok(0);
        }
        let take: Vec<u64> = st.pending.iter().copied().take(step).collect();
        let mut ids = Vec::with_capacity(take.len());
        let mut values = Vec::with_capacity(take.len() * self.dim);
        for id in take {
            st.pending.remove(&id);
            if let Some(v) = st.flat.get(id) {
                ids.push(id);
                values.extend_from_slice(v);
            }
        }
        if !ids.is_empty() {
            let ann = st.ann.as_mut().expect("checked above");
            ann.add(&ids, &values)?;
            st.unsnapshotted += ids.len() as u64;
        }
        Ok(st.pending.len())
    }

    /// Answers a query: picks the path, runs it, and returns hits best first.
    pub(crate) fn search(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<&Filter>,
        exact: bool,
        settings: &PlannerSettings,
    ) -> ServiceResult<(Vec<Hit>, Plan)> {
        let query = validate::prepare_query(self.metric, self.dim, query, k)?;
        let st = self.state.read();
        let n = st.flat.len();
        let ann = st
            .ann
            .as_ref()
            .filter(|_| !exact && !st.building && n > settings.exact_threshold);
        let Some(ann) = ann else {
            // An exact scan that an approximate index, had it been built, would have spared.
            let unbuilt = !exact && self.first_build_due(&st, settings);
            let hits = match filter {
                None => {
                    if unbuilt {
                        self.add_exact_debt(n);
                    }
                    st.flat.search(&query, k, params, None)?
                }
                Some(f) => exact_subset(&st, self.metric, &query, k, &matching_passages(&st, f)),
            };
            return Ok((hits, Plan::Flat));
        };
        let plan = Plan::from(ann.kind());
        let Some(f) = filter else {
            let mut hits = ann.search(&query, k, params, None)?;
            self.add_exact_debt(st.pending.len());
            merge_pending(&st, self.metric, &query, k, &mut hits, None);
            return Ok((hits, plan));
        };
        let fraction = estimate_selectivity(&st, f);
        if fraction * n as f64 <= settings.exact_threshold as f64
            || fraction <= settings.filter_exact_fraction
        {
            let ids = matching_passages(&st, f);
            return Ok((exact_subset(&st, self.metric, &query, k, &ids), Plan::Flat));
        }
        let passes = |id: u64| {
            st.passage_doc
                .get(&id)
                .is_some_and(|d| f.matches(&d.metadata))
        };
        let mut hits = ann.search(&query, k, params, Some(&passes))?;
        self.add_exact_debt(st.pending.len());
        merge_pending(&st, self.metric, &query, k, &mut hits, Some(&passes));
        if hits.len() < k {
            // The graph could not reach k matching passages; an exact scan of the matches is
            // the only way to honour "k results whenever k passages match".
            let ids = matching_passages(&st, f);
            return Ok((exact_subset(&st, self.metric, &query, k, &ids), Plan::Flat));
        }
        Ok((hits, plan))
    }
}

/// Every passage whose document matches the filter.
fn matching_passages(st: &State, filter: &Filter) -> Vec<u64> {
    st.docs
        .values()
        .filter(|d| filter.matches(&d.metadata))
        .flat_map(|d| d.passages.iter().copied())
        .collect()
}

/// The fraction of passages a filter matches, estimated from an evenly spaced sample.
fn estimate_selectivity(st: &State, filter: &Filter) -> f64 {
    let ids = st.flat.ids();
    if ids.is_empty() {
        return 0.0;
    }
    let stride = (ids.len() / FILTER_SAMPLE).max(1);
    let mut seen = 0usize;
    let mut hits = 0usize;
    for &id in ids.iter().step_by(stride) {
        seen += 1;
        if st
            .passage_doc
            .get(&id)
            .is_some_and(|d| filter.matches(&d.metadata))
        {
            hits += 1;
        }
    }
    hits as f64 / seen as f64
}

/// Exact top-k over the given passages.
fn exact_subset(st: &State, metric: Metric, query: &[f32], k: usize, ids: &[u64]) -> Vec<Hit> {
    let mut top = TopK::new(k);
    for &id in ids {
        if let Some(v) = st.flat.get(id) {
            top.push(id, metric.score(query, v));
        }
    }
    top.into_sorted_vec()
}

/// Folds the exact scores of pending passages (written but not yet in the approximate index)
/// into approximate hits.
fn merge_pending(
    st: &State,
    metric: Metric,
    query: &[f32],
    k: usize,
    hits: &mut Vec<Hit>,
    filter: Option<&dyn Fn(u64) -> bool>,
) {
    if st.pending.is_empty() {
        return;
    }
    let mut top = TopK::new(k);
    for h in hits.drain(..) {
        top.push(h.id, h.score);
    }
    for &id in &st.pending {
        if filter.is_some_and(|f| !f(id)) {
            continue;
        }
        if let Some(v) = st.flat.get(id) {
            top.push(id, metric.score(query, v));
        }
    }
    *hits = top.into_sorted_vec();
}
