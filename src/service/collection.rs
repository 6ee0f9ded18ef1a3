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
//! # Who waits for whom
//! The state sits behind one task-fair read-write lock: a writer waiting for it holds back new
//! readers, so every hold, read or write, must be short. The rule here is that no hold spans
//! I/O, a copy larger than a bounded chunk, or an index build:
//!
//! * Queries search under a read lock, with no I/O and no copy; a writer waits for the
//!   searches in flight, no more.
//! * Writes ([`Collection::apply_write`]) change the flat index, which stays the authority, and
//!   the metadata, in time proportional to the write. They never touch the approximate index:
//!   passages they add become `pending`, passages they remove are queued as `stale`. Searches of
//!   the approximate index skip stale ids (through the id filter its search takes), so a removed
//!   passage is never returned, however long its removal waits.
//! * The approximate index is an `Arc<AnnIndex>` that only the indexer task changes. An HNSW
//!   graph takes insertions and removals while it is searched (its storage never moves and
//!   its lists are atomics, see [`crate::index::hnsw`]), so the indexer changes it with no lock
//!   held: a brief write lock takes up to `shared_insert_step` pending passages (they stay
//!   pending, listed in `inserting`, so queries keep scanning them and drop their copies from
//!   the graph), the insertion runs on the maintenance pool beside the queries, and a second
//!   brief write lock moves them out of `pending`. A passage removed meanwhile is made stale,
//!   since the graph may hold it already. Removals likewise tombstone with no lock held, then
//!   leave `stale`. An IVF index needs exclusive access: its steps (`insert_step` insertions,
//!   [`REMOVE_STEP`] removals) run under the write lock through `Arc::get_mut`. A snapshot
//!   clones the `Arc` under a brief read lock and writes the file with no lock held; the
//!   indexer waits for the save before it changes the index again, so the index is never
//!   copied.
//! * A build or rebuild takes the list of passage ids under a read lock (8 bytes a passage),
//!   then copies their vectors in chunks of [`COPY_CHUNK_BYTES`], releasing the lock between
//!   chunks, and builds with no lock held. Meanwhile the live index keeps answering queries
//!   (their plan stays `hnsw`/`ivf`), and writes are recorded for the new index
//!   (`build_added`, `build_removed`). A live HNSW graph keeps taking them too, from the
//!   indexer's thread while the maintenance pool builds, so the passages queries scan exactly
//!   stay as few as between builds however long the build takes; a live IVF index leaves them
//!   pending and stale. Once built, the new index catches up with the recorded writes in
//!   chunks (copied under brief locks, applied with none), for at most as many as were waiting
//!   when the catch-up began, so that a steady stream of writes cannot hold the swap off. It
//!   is then swapped in under a brief write lock and reconciled: the few passages written
//!   during the catch-up stay pending for it, those removed become stale for it. The old index
//!   is dropped after the lock is released. A rebuild therefore holds two indexes and a copy
//!   of the vectors at its peak; that memory is the price of never dropping queries to exact
//!   scans.
//!
//! A write that would outgrow the flat index's row buffer first moves the rows to a buffer
//! twice the size beside it ([`Collection::make_room`]: chunked copies under read locks, then a
//! swap), so its own hold copies no rows; the id list and map still grow in place (8 and about
//! 16 bytes a passage, a few milliseconds at 100,000).
//!
//! A lock-free immutable view (an `ArcSwap` of the whole state) was the alternative; it would
//! need a copy of the flat index or a persistent structure for every write, where the bounded
//! holds above cost nothing per write.
//!
//! All methods here are synchronous and CPU-bound; the service calls them on blocking threads.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use parking_lot::{RwLock, RwLockUpgradableReadGuard};
use rayon::ThreadPool;
use serde_json::Value;

use crate::distance::Metric;
use crate::index::ann::{AnnIndex, AnnParams};
use crate::index::flat::FlatIndex;
use crate::index::topk::TopK;
use crate::index::{
    Filter as IdFilter, Hit, IndexKind, IndexMut, SearchParams, VectorIndex, validate,
};
use crate::store::{CollectionRecord, PassageId, Span};

use super::chunk::Chunker;
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;
use super::lexical::Lexical;
use super::types::{IndexConfig, IndexState, Plan};

/// How many sampled passages estimate a filter's selectivity.
const FILTER_SAMPLE: usize = 256;

/// Vector bytes an index build copies per read-lock hold: about 0.1 ms of copying, so a write
/// waits at most that long behind the copy.
pub(crate) const COPY_CHUNK_BYTES: usize = 1 << 20;

/// Stale passages taken out of the approximate index per write-lock hold (a removal is a
/// tombstone or a list swap, well under a microsecond).
const REMOVE_STEP: usize = 4096;

/// How long a build's calling thread waits, when the live index has nothing to catch up,
/// before it looks again.
const LIVE_STEP_NAP: Duration = Duration::from_millis(20);

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
    /// Passages inserted per step into an approximate index that needs exclusive access for it
    /// (IVF), under the write lock: queries wait at most one such small step.
    pub insert_step: usize,
    /// Passages inserted per step into an HNSW graph, which takes insertions while queries
    /// search it: no lock is held for the insertion, only briefly before and after it to move
    /// the passages out of `pending`. Each insertion costs about 0.3 ms of CPU
    /// (`ef_construction` 200); larger steps take the lock less often.
    pub shared_insert_step: usize,
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
            insert_step: 8,
            shared_insert_step: 256,
            ivf_regrow_factor: 4.0,
            defer_max_unindexed: 100_000,
            defer_quiet: Duration::from_millis(250),
            // Measured: an HNSW insertion at ef_construction 200 takes ~0.28 ms of CPU, a
            // 384-d distance ~50 ns.
            defer_insert_cost: 5_000,
        }
    }
}

/// A document as the filters and the rendering of hits see it: everything but its text and
/// vectors, so that a hit is rendered without the store unless those are asked for.
#[derive(Debug)]
pub(crate) struct DocEntry {
    pub(crate) id: String,
    pub(crate) metadata: Value,
    pub(crate) passages: Vec<PassageId>,
    /// The passages' spans, in the same order.
    pub(crate) spans: Vec<Span>,
}

/// Where a passage is: its document, its position there and its characters.
#[derive(Clone, Debug)]
pub(crate) struct PassageRef {
    pub(crate) doc_id: String,
    pub(crate) index: usize,
    pub(crate) span: Span,
}

/// The mutable part of a collection.
pub(crate) struct State {
    pub(crate) flat: FlatIndex,
    /// The live approximate index. Only the indexer mutates it (see the module docs), so
    /// `Arc::get_mut` succeeds under the write lock.
    ann: Option<Arc<AnnIndex>>,
    /// A build of the approximate index is running beside the live one (if any).
    building: bool,
    /// Passages in `flat` that the live approximate index does not hold yet: scanned exactly.
    pending: HashSet<PassageId>,
    /// Pending passages an insertion step is adding to the live index with no lock held: still
    /// pending (queries scan them and skip their copies in the index), and made stale if they
    /// are removed meanwhile, since the index may already hold them.
    inserting: HashSet<PassageId>,
    /// Passages gone from `flat` that the live approximate index still holds: searches skip
    /// them until the indexer removes them.
    stale: HashSet<PassageId>,
    /// Passages added since the running build took its input: pending for the new index.
    build_added: Vec<PassageId>,
    /// Passages removed since the running build took its input: stale for the new index.
    build_removed: Vec<PassageId>,
    pub(crate) docs: HashMap<String, Arc<DocEntry>>,
    pub(crate) passage_doc: HashMap<PassageId, Arc<DocEntry>>,
    /// Changes to the approximate index since its last snapshot.
    unsnapshotted: u64,
    /// Collection size when the current approximate index was built.
    built_at_len: usize,
}

/// A pause point of background maintenance, for tests that need work caught in the middle.
#[cfg(any(test, feature = "testing"))]
pub(crate) type MaintenanceHook = Arc<dyn Fn(&str) + Send + Sync>;

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
    /// The BM25 index of a text collection's passages; `None` for collections that take
    /// vectors.
    pub(crate) lexical: Option<Lexical>,
    /// Set once the collection is deleted: in-flight work stops touching it.
    deleted: AtomicBool,
    /// Held while a snapshot is written (which checks `deleted` first), so that deletion can
    /// wait for one in flight before it removes the snapshot directory.
    pub(crate) saving: tokio::sync::Mutex<()>,
    /// Distance computations queries have spent on passages the approximate index does not
    /// hold, since it last held them all: what deferring their indexing has cost so far.
    exact_debt: AtomicU64,
    /// The collection version this node's state holds: every write up to it is applied.
    /// Changed under `write_lock` only; queries with `min_version` wait on it.
    applied: tokio::sync::watch::Sender<u64>,
    /// The newest version this node has seen in the store: `latest - applied` is its lag.
    latest: AtomicU64,
    /// Called by background maintenance at its named points (`"built"`: a new index is built
    /// and not yet swapped in; `"swapped"`: it has just replaced the live one; `"snapshot"`: a
    /// snapshot is about to be written, no lock held;
    /// `"inserted"`: an insertion step's passages are in the graph and still pending, no lock
    /// held).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) hook: parking_lot::Mutex<Option<MaintenanceHook>>,
}

impl Collection {
    pub(crate) fn new(
        record: CollectionRecord,
        config: IndexConfig,
        dim: usize,
        chunker: Option<Chunker>,
        lexical: Option<Lexical>,
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
                inserting: HashSet::new(),
                stale: HashSet::new(),
                build_added: Vec::new(),
                build_removed: Vec::new(),
                docs: HashMap::new(),
                passage_doc: HashMap::new(),
                unsnapshotted: 0,
                built_at_len: 0,
            }),
            indexer: tokio::sync::Notify::new(),
            chunker,
            lexical,
            deleted: AtomicBool::new(false),
            saving: tokio::sync::Mutex::new(()),
            exact_debt: AtomicU64::new(0),
            applied: tokio::sync::watch::Sender::new(0),
            latest: AtomicU64::new(0),
            #[cfg(any(test, feature = "testing"))]
            hook: parking_lot::Mutex::new(None),
        })
    }

    /// Runs the test hook at a maintenance point, if one is set.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn maintenance_point(&self, point: &str) {
        let hook = self.hook.lock().clone();
        if let Some(hook) = hook {
            hook(point);
        }
    }

    /// Runs the test hook at a maintenance point, if one is set.
    #[cfg(not(any(test, feature = "testing")))]
    pub(crate) fn maintenance_point(&self, _point: &str) {}

    /// Whether the collection has been deleted.
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    /// Marks the collection deleted and wakes its indexer so that it stops.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::Release);
        self.indexer.notify_one();
    }

    /// Waits for a snapshot being written, if any; once the collection is marked deleted no
    /// new one starts, so its snapshot directory can then be removed for good.
    pub(crate) async fn snapshots_stopped(&self) {
        drop(self.saving.lock().await);
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
            quantization: self.config.quantization.unwrap_or_default(),
        })
    }

    /// Loads documents read from the store at start-up.
    pub(crate) fn load_documents(&self, docs: Vec<DocEntry>) {
        let mut st = self.state.write();
        for entry in docs {
            let entry = Arc::new(entry);
            for &p in &entry.passages {
                st.passage_doc.insert(p, entry.clone());
            }
            st.docs.insert(entry.id.clone(), entry);
        }
    }

    /// Adds a chunk of stored vectors at start-up.
    pub(crate) fn load_vectors(&self, ids: &[PassageId], vectors: &[f32]) -> ServiceResult<()> {
        self.state.write().flat.add(ids, vectors)?;
        Ok(())
    }

    /// Whether a snapshot's index is of this collection's kind, metric and dimension.
    pub(crate) fn snapshot_fits(&self, ann: &AnnIndex) -> bool {
        self.ann_params().is_some_and(|p| p.kind == ann.kind())
            && ann.metric() == self.metric
            && ann.dim() == self.dim
    }

    /// Fills the exact index, at start-up, with every vector `ann` (a snapshot not installed
    /// yet) holds, as it stores them, in ascending id order (the layout a scan of the store
    /// gives). Returns `false`, adding nothing, when its kind does not keep vectors as given.
    pub(crate) fn load_snapshot_vectors(&self, ann: &AnnIndex) -> bool {
        // Chunks bound the copy made beside the two indexes.
        const CHUNK: usize = 65_536;
        let mut ids = ann.live_ids();
        ids.sort_unstable();
        self.state.write().flat.reserve(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let Some((found, rows)) = ann.stored_vectors(chunk) else {
                return false;
            };
            self.state.write().flat.add_prepared(&found, &rows);
        }
        true
    }

    /// Brings the exact index, filled from a snapshot, to the stored passages `stored`:
    /// removes what the store no longer has, and returns the stored passages it lacks.
    pub(crate) fn reconcile_vectors(&self, stored: &[PassageId]) -> Vec<PassageId> {
        let mut st = self.state.write();
        let wanted: HashSet<PassageId> = stored.iter().copied().collect();
        let gone: Vec<PassageId> = st
            .flat
            .ids()
            .iter()
            .copied()
            .filter(|id| !wanted.contains(id))
            .collect();
        st.flat.remove_rows(&gone);
        let mut missing: Vec<PassageId> = stored
            .iter()
            .copied()
            .filter(|&id| !st.flat.contains(id))
            .collect();
        missing.sort_unstable();
        missing
    }

    /// Up to `n` passages of `ids`, spread evenly and none in `missing`, with the vectors the
    /// exact index holds for them.
    pub(crate) fn vector_sample(
        &self,
        ids: &[PassageId],
        missing: &[PassageId],
        n: usize,
    ) -> Vec<(PassageId, Vec<f32>)> {
        let missing: HashSet<PassageId> = missing.iter().copied().collect();
        let step = (ids.len() / n.max(1)).max(1);
        let st = self.state.read();
        ids.iter()
            .step_by(step)
            .filter(|id| !missing.contains(id))
            .filter_map(|&id| st.flat.get(id).map(|v| (id, v.to_vec())))
            .take(n)
            .collect()
    }

    /// Whether `held`, a vector as the exact index stores it, is `stored` (as the store
    /// holds it) once prepared, to within rounding.
    pub(crate) fn same_vector(&self, stored: &[f32], held: &[f32]) -> bool {
        let mut v = stored.to_vec();
        stored.len() == held.len()
            && self.metric.preprocess(&mut v)
            && v.iter()
                .zip(held)
                .all(|(a, b)| (a - b).abs() <= 1e-5 * a.abs().max(1.0))
    }

    /// Empties the exact index at start-up, before it is filled again from the store.
    pub(crate) fn clear_vectors(&self) -> ServiceResult<()> {
        let empty = FlatIndex::new(self.metric, self.dim)?;
        self.state.write().flat = empty;
        Ok(())
    }

    /// The collection version this node has applied.
    pub(crate) fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The newest version of the collection this node knows of.
    pub(crate) fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire).max(self.applied())
    }

    /// Records that the state now holds every write up to `version`, and wakes the queries
    /// waiting for it. The caller holds `write_lock`.
    pub(crate) fn set_applied(&self, version: u64) {
        self.applied.send_if_modified(|v| {
            let newer = version > *v;
            if newer {
                *v = version;
            }
            newer
        });
        self.saw_version(version);
    }

    /// Records that the store holds `version` of the collection.
    pub(crate) fn saw_version(&self, version: u64) {
        self.latest.fetch_max(version, Ordering::AcqRel);
    }

    /// Waits until the state holds version `wanted`, for at most `wait`.
    pub(crate) async fn wait_applied(&self, wanted: u64, wait: Duration) -> ServiceResult<u64> {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(wait, rx.wait_for(|v| *v >= wanted)).await;
        match reached {
            Ok(Ok(v)) => Ok(*v),
            _ => Err(ServiceError::VersionNotReached {
                collection: self.record.name.clone(),
                wanted,
                applied: self.applied(),
            }),
        }
    }

    /// Brings documents to the state the store holds for them (`None`: deleted), as a
    /// follower learns it from the change feed, and returns what changed for the lexical
    /// index: passages removed, passages added with their text. Idempotent: a passage already
    /// held is kept (passage ids are never reused, so its vector cannot have changed), one
    /// already gone is skipped. A stored vector the indexes refuse (which the writing node
    /// checked before its commit, so only a damaged row) is left out, with an error logged.
    /// The caller holds `write_lock`.
    pub(crate) fn apply_states(
        &self,
        documents: Vec<(String, Option<crate::store::DocumentState>)>,
    ) -> (Vec<PassageId>, Vec<(PassageId, String)>) {
        let mut removed_docs = Vec::new();
        let mut removed = Vec::new();
        // The documents that stay, with which of their passages the state holds already.
        let mut staying = Vec::new();
        // Only what the state holds is looked up under the read lock; vectors are prepared
        // after it, with no lock held (the caller's `write_lock` keeps the rows as they are).
        {
            let st = self.state.read();
            for (id, state) in documents {
                let old: HashSet<PassageId> = st
                    .docs
                    .get(&id)
                    .map(|d| d.passages.iter().copied().collect())
                    .unwrap_or_default();
                let Some(state) = state else {
                    if st.docs.contains_key(&id) {
                        removed_docs.push(id);
                    }
                    removed.extend(old.into_iter().filter(|p| st.flat.contains(*p)));
                    continue;
                };
                let new: HashSet<PassageId> = state.passages.iter().map(|p| p.id).collect();
                removed.extend(
                    old.iter()
                        .copied()
                        .filter(|p| !new.contains(p) && st.flat.contains(*p)),
                );
                let held: Vec<bool> = state
                    .passages
                    .iter()
                    .map(|p| st.flat.contains(p.id))
                    .collect();
                staying.push((id, state, held));
            }
        }
        let mut added_docs = Vec::with_capacity(staying.len());
        let mut added_text = Vec::new();
        let mut ready = Vec::new();
        let mut new_rows = 0;
        for (id, state, held) in staying {
            let mut kept = Vec::with_capacity(state.passages.len());
            let mut spans = Vec::with_capacity(state.passages.len());
            for (p, held) in state.passages.into_iter().zip(held) {
                let pid = p.id;
                if held {
                    kept.push(pid);
                    spans.push(p.span);
                    continue;
                }
                match validate::prepare_batch(self.metric, self.dim, &[pid], &p.vector) {
                    Ok(v) => {
                        ready.extend_from_slice(&v);
                        kept.push(pid);
                        spans.push(p.span);
                        new_rows += 1;
                        added_text.push((pid, p.text.unwrap_or_default()));
                    }
                    Err(e) => tracing::error!(
                        collection = %self.record.name,
                        passage = pid,
                        error = %e,
                        "a stored vector is unusable; the passage is left out"
                    ),
                }
            }
            added_docs.push(DocEntry {
                id,
                metadata: state.metadata,
                passages: kept,
                spans,
            });
        }
        self.make_room(new_rows);
        self.apply_write(&removed_docs, &removed, added_docs, &ready);
        (removed, added_text)
    }

    /// Passages in the collection.
    pub(crate) fn len(&self) -> usize {
        self.state.read().flat.len()
    }

    /// Moves the flat index's rows to a larger buffer ahead of a write of `new_rows` rows that
    /// would outgrow it, copying in chunks of [`COPY_CHUNK_BYTES`] under short read locks, so
    /// that the write's own hold copies nothing. The caller holds `write_lock`: no other write
    /// changes the rows meanwhile.
    pub(crate) fn make_room(&self, new_rows: usize) {
        let Some(mut growth) = self.state.read().flat.growth_for(new_rows) else {
            return;
        };
        let chunk = COPY_CHUNK_BYTES / std::mem::size_of::<f32>();
        while !growth.copy_step(&self.state.read().flat, chunk) {}
        let old = self.state.write().flat.install_growth(growth);
        drop(old);
    }

    /// Applies a committed write: documents replaced or removed (their old passages go) and
    /// documents added with their new passages, whose vectors `ready` holds in order, already
    /// checked and prepared for the indexes. It cannot fail: everything that could was checked
    /// before the commit, so a durable write is always applied. Touches the flat index and the
    /// metadata only: the approximate index learns of the change from the indexer (see the
    /// module docs).
    pub(crate) fn apply_write(
        &self,
        removed_docs: &[String],
        removed_passages: &[PassageId],
        added: Vec<DocEntry>,
        ready: &[f32],
    ) {
        let mut guard = self.state.write();
        let st = &mut *guard;
        for id in removed_docs {
            st.docs.remove(id);
        }
        if !removed_passages.is_empty() {
            st.flat.remove_rows(removed_passages);
            for &p in removed_passages {
                st.passage_doc.remove(&p);
                // A pending passage never reached the live index: nothing to take out of it,
                // unless an insertion step is adding it right now.
                let was_pending = st.pending.remove(&p);
                if st.ann.is_some() && (!was_pending || st.inserting.contains(&p)) {
                    st.stale.insert(p);
                }
            }
            if st.building {
                st.build_removed.extend_from_slice(removed_passages);
            }
        }
        let mut ids = Vec::new();
        for entry in added {
            // A follower re-applying a document keeps the passages it holds: `ready` has rows
            // for the others only.
            ids.extend(
                entry
                    .passages
                    .iter()
                    .copied()
                    .filter(|&p| !st.flat.contains(p)),
            );
            let entry = Arc::new(entry);
            for &p in &entry.passages {
                st.passage_doc.insert(p, entry.clone());
            }
            st.docs.insert(entry.id.clone(), entry);
        }
        if !ids.is_empty() {
            st.flat.add_prepared(&ids, ready);
            if st.ann.is_some() || st.building {
                st.pending.extend(ids.iter().copied());
            }
            if st.building {
                st.build_added.extend_from_slice(&ids);
            }
        }
    }

    /// A summary of the index state, for collection info: the state, memory in bytes and
    /// passages.
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
                // Stale entries are still in the index but no query sees them.
                indexed: st
                    .ann
                    .as_ref()
                    .map_or(0, |a| a.len().saturating_sub(st.stale.len())),
            },
            memory as u64,
            st.flat.len(),
        )
    }

    /// Documents in the collection.
    pub(crate) fn document_count(&self) -> usize {
        self.state.read().docs.len()
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

    /// Builds the approximate index from the current vectors beside the live one, catches it
    /// up with the writes made meanwhile, then swaps it in. No lock is held for the build or
    /// for more than one chunk of a copy; queries keep using the live index throughout (see the
    /// module docs).
    ///
    /// While the build runs, the calling thread keeps the live index current with
    /// `live_step` (one step of removals and insertions; it says whether it did any work), so
    /// that queries do not scan an ever longer list of pending passages exactly for as long as
    /// the build takes.
    ///
    /// The build itself runs on `pool` (threads of lowered priority); the copies and the swap,
    /// which take the collection's lock, stay on the calling thread, so that a lock queries
    /// wait for is never held by a thread the scheduler holds back.
    pub(crate) fn build_ann(
        &self,
        pool: &ThreadPool,
        live_step: &mut dyn FnMut() -> ServiceResult<bool>,
    ) -> ServiceResult<()> {
        let Some(params) = self.ann_params() else {
            return Ok(());
        };
        let ids = {
            // The ids are taken and `building` set in one hold, so that every later write is
            // recorded for the reconciliation and none is counted twice.
            let st = self.state.upgradable_read();
            if st.building {
                return Ok(());
            }
            let ids = st.flat.ids().to_vec();
            let mut st = RwLockUpgradableReadGuard::upgrade(st);
            st.building = true;
            st.build_added.clear();
            st.build_removed.clear();
            ids
        };
        let built = self
            .build_beside(&params, ids, pool, live_step)
            .and_then(|(mut ann, len)| {
                self.catch_up(&mut ann, pool, live_step)?;
                Ok((ann, len))
            });
        let mut guard = self.state.write();
        let st = &mut *guard;
        st.building = false;
        let added = std::mem::take(&mut st.build_added);
        let removed = std::mem::take(&mut st.build_removed);
        let (ann, built_len) = match built {
            Ok(built) => built,
            Err(e) => {
                // The live index (if any) was kept current: pending and stale still describe
                // it. Without one nothing is pending.
                if st.ann.is_none() {
                    st.pending.clear();
                }
                return Err(e);
            }
        };
        // What the catch-up left: written in its last moments.
        let pending: HashSet<PassageId> = added
            .into_iter()
            .filter(|&id| st.flat.contains(id))
            .collect();
        let stale: HashSet<PassageId> =
            removed.into_iter().filter(|&id| ann.contains(id)).collect();
        let old_pending = std::mem::replace(&mut st.pending, pending);
        let old_stale = std::mem::replace(&mut st.stale, stale);
        let old = st.ann.replace(Arc::new(ann));
        st.built_at_len = built_len;
        st.unsnapshotted = u64::MAX / 2;
        drop(guard);
        // Freeing a whole index takes a while; queries need not wait for it.
        drop((old, old_pending, old_stale));
        self.maintenance_point("swapped");
        Ok(())
    }

    /// Copies the vectors of `ids` in chunks, each under its own short read lock, and builds an
    /// approximate index of them on `pool` with no lock held, running `live_step` on this
    /// thread until the build is done. Passages removed meanwhile are left out (they are in
    /// `build_removed` too). Returns the index and how many passages it holds.
    fn build_beside(
        &self,
        params: &AnnParams,
        ids: Vec<PassageId>,
        pool: &ThreadPool,
        live_step: &mut dyn FnMut() -> ServiceResult<bool>,
    ) -> ServiceResult<(AnnIndex, usize)> {
        let rows_per_chunk = self.rows_per_copy_chunk();
        let mut kept = Vec::with_capacity(ids.len());
        let mut vectors = Vec::with_capacity(ids.len() * self.dim);
        for chunk in ids.chunks(rows_per_chunk) {
            let st = self.state.read();
            for &id in chunk {
                if let Some(v) = st.flat.get(id) {
                    kept.push(id);
                    vectors.extend_from_slice(v);
                }
            }
        }
        drop(ids);
        let (done_tx, done) = std::sync::mpsc::channel::<()>();
        let built = std::thread::scope(|scope| {
            let build = scope.spawn(|| {
                let ann = pool.install(|| {
                    let ann = AnnIndex::build(params, self.metric, self.dim, &kept, &vectors);
                    self.maintenance_point("built");
                    ann
                });
                let _ = done_tx.send(());
                ann
            });
            let mut worked = false;
            loop {
                // After a step that found work, only a look; otherwise a nap until the build is
                // done or writes may have queued more.
                let nap = if worked {
                    Duration::ZERO
                } else {
                    LIVE_STEP_NAP
                };
                match done.recv_timeout(nap) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) => {}
                }
                worked = self.run_live_step(live_step);
            }
            build.join()
        });
        // A panicked build is a failed one: the live index stays, and a later build may try
        // again.
        let ann = built.map_err(|_| ServiceError::internal("index build", "it panicked"))??;
        drop(vectors);
        Ok((ann, kept.len()))
    }

    /// Brings a newly built index up to date with the writes made since its input was taken:
    /// removals recorded in `build_removed`, then passages recorded in `build_added`, in chunks
    /// taken under brief locks and applied on `pool` with no lock held, with a `live_step`
    /// between chunks. Writes keep coming meanwhile, so it takes at most what was waiting when
    /// it began, plus one chunk; the rest stays pending for the new index after the swap.
    fn catch_up(
        &self,
        ann: &mut AnnIndex,
        pool: &ThreadPool,
        live_step: &mut dyn FnMut() -> ServiceResult<bool>,
    ) -> ServiceResult<()> {
        let rows_per_chunk = self.rows_per_copy_chunk();
        let mut budget = None;
        loop {
            let (removed, taken) = {
                let mut st = self.state.write();
                let budget = budget.get_or_insert(st.build_added.len() + rows_per_chunk);
                let n = st.build_added.len().min(rows_per_chunk).min(*budget);
                if n == 0 && st.build_removed.is_empty() {
                    return Ok(());
                }
                *budget -= n;
                let removed = std::mem::take(&mut st.build_removed);
                let taken: Vec<PassageId> = st.build_added.drain(..n).collect();
                (removed, taken)
            };
            // Removed since they were taken: in `build_removed` again, for the next round or
            // the swap.
            let (ids, values) = vectors_of(&self.state.read().flat, &taken, self.dim);
            let removed: Vec<PassageId> =
                removed.into_iter().filter(|&id| ann.contains(id)).collect();
            pool.install(|| -> ServiceResult<()> {
                if !removed.is_empty() {
                    ann.remove(&removed)?;
                }
                if !ids.is_empty() {
                    ann.add(&ids, &values)?;
                }
                Ok(())
            })?;
            if taken.is_empty() {
                // Only removals were left, and none of the additions the budget allows.
                return Ok(());
            }
            self.run_live_step(live_step);
        }
    }

    /// Runs one step that keeps the live index current during a build; says whether it found
    /// work. A failed step leaves the live index as it was, and the build goes on.
    fn run_live_step(&self, live_step: &mut dyn FnMut() -> ServiceResult<bool>) -> bool {
        live_step().unwrap_or_else(|e| {
            tracing::warn!(
                collection = %self.record.name,
                error = %e,
                "keeping the live index current during a build failed"
            );
            false
        })
    }

    /// Rows one copy under a lock may take: [`COPY_CHUNK_BYTES`] of vectors.
    fn rows_per_copy_chunk(&self) -> usize {
        (COPY_CHUNK_BYTES / (self.dim * std::mem::size_of::<f32>())).max(1)
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
        st.stale.clear();
        st.ann = Some(Arc::new(ann));
        Ok(())
    }

    /// Takes stale passages out of the approximate index: an HNSW graph takes them while it is
    /// searched (tombstones), with the write lock held only to update `stale` after each step;
    /// other kinds in steps of [`REMOVE_STEP`] under the write lock. Only the indexer calls
    /// this.
    pub(crate) fn apply_removals(&self) -> ServiceResult<()> {
        loop {
            let (ann, take) = {
                let mut guard = self.state.write();
                let st = &mut *guard;
                if st.stale.is_empty() {
                    return Ok(());
                }
                let building = st.building;
                let Some(ann) = st.ann.as_mut() else {
                    st.stale.clear();
                    return Ok(());
                };
                // During a build, only an index that takes changes while it is searched is
                // kept current (the build's thread does it between looks at the build); an
                // exclusive one waits for the new index, which replaces `stale` anyway.
                if building && !ann.changes_while_searched() {
                    return Ok(());
                }
                let take: Vec<u64> = st.stale.iter().copied().take(REMOVE_STEP).collect();
                if ann.changes_while_searched() {
                    (ann.clone(), take)
                } else {
                    Arc::get_mut(ann).ok_or_else(shared_index)?.remove(&take)?;
                    for id in &take {
                        st.stale.remove(id);
                    }
                    st.unsnapshotted += take.len() as u64;
                    continue;
                }
            };
            // Searches skip these ids already (they are stale); tombstoning them needs no lock.
            ann.remove_shared(&take);
            drop(ann);
            let mut st = self.state.write();
            for id in &take {
                st.stale.remove(id);
            }
            st.unsnapshotted += take.len() as u64;
        }
    }

    /// Moves pending passages into the approximate index, after any stale ones have been taken
    /// out: up to `settings.shared_insert_step` into an HNSW graph on `pool` with no lock held
    /// (queries keep searching the graph meanwhile), or `settings.insert_step` under the write
    /// lock into an index that needs exclusive access. Returns how many it moved: 0 when none
    /// were pending or the index cannot take them now (an exclusive one during a build). Only
    /// the indexer calls this.
    pub(crate) fn drain_pending_step(
        &self,
        settings: &PlannerSettings,
        pool: &ThreadPool,
    ) -> ServiceResult<usize> {
        self.apply_removals()?;
        let (ann, ids, values) = {
            let mut guard = self.state.write();
            let st = &mut *guard;
            let building = st.building;
            let Some(ann) = st.ann.as_mut() else {
                return Ok(0);
            };
            let shared = ann.changes_while_searched();
            // As in `apply_removals`: during a build only a shared index is kept current.
            if building && !shared {
                return Ok(0);
            }
            let step = if shared {
                settings.shared_insert_step
            } else {
                settings.insert_step
            };
            let take: Vec<u64> = st.pending.iter().copied().take(step).collect();
            let (ids, values) = vectors_of(&st.flat, &take, self.dim);
            if !shared {
                let ann = Arc::get_mut(ann).ok_or_else(shared_index)?;
                for id in &take {
                    st.pending.remove(id);
                }
                if !ids.is_empty() {
                    ann.add(&ids, &values)?;
                    st.unsnapshotted += ids.len() as u64;
                }
                return Ok(take.len());
            }
            st.inserting.extend(ids.iter().copied());
            (ann.clone(), ids, values)
        };
        let inserted = pool.install(|| {
            let inserted = ann
                .insert_shared(&ids, &values)
                .expect("the index took shared insertions a moment ago");
            self.maintenance_point("inserted");
            inserted
        });
        drop(ann);
        let mut st = self.state.write();
        for id in &ids {
            st.inserting.remove(id);
        }
        // A failed insertion leaves its passages pending: queries keep finding them by exact
        // scan, and the next step tries again.
        inserted?;
        for id in &ids {
            st.pending.remove(id);
        }
        st.unsnapshotted += ids.len() as u64;
        Ok(ids.len())
    }

    /// The approximate index to snapshot, with the changes it holds that no snapshot has, when
    /// there is one and it has at least `min_changes` of them. The index is shared, not copied:
    /// the caller writes it with no lock held.
    pub(crate) fn snapshot_source(&self, min_changes: u64) -> Option<(Arc<AnnIndex>, u64)> {
        let st = self.state.read();
        let ann = st.ann.as_ref()?;
        if st.building || st.unsnapshotted < min_changes.max(1) || self.is_deleted() {
            return None;
        }
        Some((ann.clone(), st.unsnapshotted))
    }

    /// Records that a snapshot holding `changes` changes was written.
    pub(crate) fn snapshot_written(&self, changes: u64) {
        let mut st = self.state.write();
        st.unsnapshotted = st.unsnapshotted.saturating_sub(changes);
    }

    /// The metadata of the documents the hits belong to (`None` for passages deleted since).
    pub(crate) fn metadata_of(&self, hits: &[Hit]) -> Vec<Option<Value>> {
        let st = self.state.read();
        hits.iter()
            .map(|h| st.passage_doc.get(&h.id).map(|d| d.metadata.clone()))
            .collect()
    }

    /// Where each of `ids` is (`None` for passages deleted since).
    pub(crate) fn locate(&self, ids: &[u64]) -> Vec<Option<PassageRef>> {
        let st = self.state.read();
        ids.iter()
            .map(|id| {
                let doc = st.passage_doc.get(id)?;
                let index = doc.passages.iter().position(|p| p == id)?;
                Some(PassageRef {
                    doc_id: doc.id.clone(),
                    index,
                    span: doc.spans.get(index).copied().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// The stored vectors of those of `ids` still in the collection, row-major, with their
    /// ids in the order given, as the index holds them (normalised under cosine).
    pub(crate) fn vectors_for(&self, ids: &[u64]) -> (Vec<u64>, Vec<f32>) {
        vectors_of(&self.state.read().flat, ids, self.dim)
    }

    /// A key per passage that is equal for passages of the same document and differs between
    /// documents (`None` for passages gone since): valid for comparing the keys of one call.
    pub(crate) fn document_keys(&self, ids: &[u64]) -> Vec<Option<usize>> {
        let st = self.state.read();
        ids.iter()
            .map(|id| st.passage_doc.get(id).map(|d| Arc::as_ptr(d) as usize))
            .collect()
    }

    /// The fraction of passages whose document matches `filter`, estimated from a sample.
    pub(crate) fn filter_selectivity(&self, filter: &Filter) -> f64 {
        estimate_selectivity(&self.state.read(), filter)
    }

    /// Every passage whose document matches `filter`.
    pub(crate) fn passages_matching(&self, filter: &Filter) -> Vec<u64> {
        matching_passages(&self.state.read(), filter)
    }

    /// Every passage id, in no particular order.
    pub(crate) fn passage_ids(&self) -> Vec<u64> {
        self.state.read().flat.ids().to_vec()
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
        // A build does not take the live index away: it is used until the new one replaces it.
        let ann = st
            .ann
            .as_deref()
            .filter(|_| !exact && n > settings.exact_threshold);
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
            // Passages removed but still in the index are skipped; with none, the search runs
            // unfiltered.
            let not_stale = |id: u64| !st.stale.contains(&id);
            let live: Option<IdFilter<'_>> = (!st.stale.is_empty()).then_some(&not_stale);
            let mut hits = ann.search(&query, k, params, live)?;
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
        // Stale passages have no document any more, so they never pass.
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

/// The error for an approximate index found shared where only its owner should hold it.
fn shared_index() -> ServiceError {
    ServiceError::Internal(
        "the approximate index is shared outside its indexer. This is a bug.".into(),
    )
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

/// The vectors of those of `ids` that `flat` holds, row-major, with their ids.
fn vectors_of(flat: &FlatIndex, ids: &[u64], dim: usize) -> (Vec<u64>, Vec<f32>) {
    let mut kept = Vec::with_capacity(ids.len());
    let mut values = Vec::with_capacity(ids.len() * dim);
    for &id in ids {
        if let Some(v) = flat.get(id) {
            kept.push(id);
            values.extend_from_slice(v);
        }
    }
    (kept, values)
}

/// Folds the exact scores of pending passages (written but not yet in the approximate index)
/// into approximate hits. A passage an insertion step is adding may be in both: its copy from
/// the index is dropped, the exact one kept.
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
        if !st.inserting.contains(&h.id) {
            top.push(h.id, h.score);
        }
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
