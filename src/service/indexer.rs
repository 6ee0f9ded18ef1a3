//! Background index maintenance, one task per collection: builds the approximate index when the
//! collection outgrows exact scans, moves pending passages into it in small steps, and writes
//! snapshots so that restarts need no rebuild.
//!
//! It gives way to the encoder: while requests wait for embeddings (and for a short quiet period
//! after), it starts no build and inserts nothing. Queries scan the passages left out exactly,
//! so they are found all the same, and a bulk load runs at the encoder's speed while the index
//! catches up after. Two bounds keep the wait from costing more than it saves (see
//! [`PlannerSettings`]): at most `defer_max_unindexed` passages wait, and once queries have
//! spent on scanning them what indexing them would cost (`defer_insert_cost` each, in distance
//! computations), indexing proceeds: under steady queries and writes, deferring would otherwise
//! make every query pay for the insertions.
//!
//! This task is the only one that changes a collection's approximate index (see
//! [`super::collection`]): removals queued by writes are applied first, never deferred (a
//! removal is a tombstone, and queries pay for every queued one), then builds and insertions.
//! A build runs beside the live index (a live HNSW graph keeps taking insertions and removals
//! meanwhile, from this task's thread), and a snapshot is written from the shared index with
//! no lock held, so neither makes a query or a write wait; so does an insertion step into an
//! HNSW graph, which takes insertions while it is searched. The build, the file writing and those
//! insertions run on the service's maintenance pool, whose threads have a lowered scheduling
//! priority ([`crate::priority`]): they take the CPU that queries leave, rather than slowing
//! queries down. Everything that takes the collection's lock (the brief holds around an
//! insertion step, IVF insertion steps, the build's copy and swap) stays at normal priority,
//! so that a lock queries wait for is never held by a thread the scheduler holds back.

use std::path::Path;
use std::sync::{Arc, Weak};

use rayon::ThreadPool;
use std::time::{Duration, Instant};

use crate::index::VectorIndex;

use super::Service;
use super::collection::{Collection, PlannerSettings};
use super::error::ServiceResult;

/// How often a maintenance loop that is giving way looks again.
const YIELD_POLL: Duration = Duration::from_millis(100);

/// The maintenance loop of one collection. Ends when the service shuts down, when the service
/// is dropped, or when the collection is deleted.
pub(super) async fn run(
    service: Weak<Service>,
    coll: Arc<Collection>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_snapshot = Instant::now();
    // Set while work is left that the loop gave way on: it looks again soon.
    let mut unfinished = false;
    loop {
        let interval = match service.upgrade() {
            Some(s) => s.settings.snapshot_interval,
            None => return,
        };
        let wait = if unfinished { YIELD_POLL } else { interval };
        tokio::select! {
            _ = coll.indexer.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || coll.is_deleted() {
            return;
        }
        let Some(svc) = service.upgrade() else { return };
        let settings = svc.settings.clone();
        let dir = svc.snapshot_dir(&coll);
        let foreground = svc.foreground.clone();
        let pool = svc.maintenance.clone();
        drop(svc);
        let due = last_snapshot.elapsed() >= settings.snapshot_interval;
        let c = coll.clone();
        let result = tokio::task::spawn_blocking(move || -> ServiceResult<(bool, bool)> {
            let planner = &settings.planner;
            let give_way = || foreground.busy(planner.defer_quiet) && c.may_defer(planner);
            let finished = maintain(&c, planner, &give_way, &pool)?;
            if !finished {
                return Ok((false, false));
            }
            let threshold = if due {
                1
            } else {
                settings.snapshot_every_changes
            };
            Ok((true, snapshot(&c, &dir, threshold, &pool)?))
        })
        .await;
        unfinished = false;
        match result {
            Ok(Ok((finished, snapshotted))) => {
                unfinished = !finished;
                if snapshotted {
                    last_snapshot = Instant::now();
                }
            }
            Ok(Err(e)) => {
                tracing::error!(collection = %coll.record.name, error = %e, "index maintenance failed")
            }
            Err(e) => {
                tracing::error!(collection = %coll.record.name, error = %e, "index maintenance panicked")
            }
        }
    }
}

/// Builds the approximate index if it is due (on `pool`), then drains pending passages into it,
/// checking `give_way` before the build and between steps. Returns `false` when it stopped to
/// give way with work left.
pub(super) fn maintain(
    coll: &Collection,
    settings: &PlannerSettings,
    give_way: &dyn Fn() -> bool,
    pool: &ThreadPool,
) -> ServiceResult<bool> {
    coll.apply_removals()?;
    if coll.wants_build(settings) {
        if give_way() {
            return Ok(false);
        }
        let started = Instant::now();
        let n = coll.len();
        tracing::info!(collection = %coll.record.name, passages = n, "building approximate index");
        // The live index keeps taking the writes made during the build, under the same rules
        // as between builds: removals at once, insertions unless they give way.
        let mut live_step = || -> ServiceResult<bool> {
            coll.apply_removals()?;
            if coll.unindexed(settings) == 0 || give_way() {
                return Ok(false);
            }
            Ok(coll.drain_pending_step(settings, pool)? > 0)
        };
        coll.build_ann(pool, &mut live_step)?;
        tracing::info!(
            collection = %coll.record.name,
            passages = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "approximate index built"
        );
    }
    while !coll.is_deleted() && coll.unindexed(settings) > 0 {
        if give_way() {
            return Ok(false);
        }
        if coll.drain_pending_step(settings, pool)? == 0 {
            break;
        }
    }
    if coll.unindexed(settings) == 0 {
        coll.clear_exact_debt();
    }
    Ok(true)
}

/// Writes a snapshot of the approximate index when at least `min_changes` changes are not in
/// the last one. Returns whether it wrote one. No lock is held while the file is written (on
/// `pool`); the index is shared meanwhile, which is why only this task, which waits for the
/// save, mutates it.
pub(super) fn snapshot(
    coll: &Collection,
    dir: &Path,
    min_changes: u64,
    pool: &ThreadPool,
) -> ServiceResult<bool> {
    let started = Instant::now();
    // Deletion waits for this: no file lands after the directory is removed.
    let _saving = coll.saving.blocking_lock();
    let Some((ann, changes)) = coll.snapshot_source(min_changes) else {
        return Ok(false);
    };
    pool.install(|| {
        coll.maintenance_point("snapshot");
        ann.save(dir)
    })?;
    // The index is the indexer's own again once this share is gone.
    drop(ann);
    coll.snapshot_written(changes);
    tracing::debug!(
        collection = %coll.record.name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index snapshot written"
    );
    Ok(true)
}

#[cfg(any(test, feature = "testing"))]
use super::collection::MaintenanceHook;

#[cfg(any(test, feature = "testing"))]
impl Service {
    /// Sets (or with `None` clears) a function that a collection's background maintenance
    /// calls at its pause points: `"built"` once a new approximate index is built and before
    /// it catches up and replaces the live one (on a maintenance thread, while the indexer
    /// keeps the live index current), `"swapped"` right after it replaced the live one (on the
    /// indexer's thread, before any insertion step), `"snapshot"` before a snapshot is written,
    /// `"inserted"` once an insertion step has added its passages to an HNSW graph and before
    /// they leave `pending` (no lock held at any of them). A hook that blocks holds the work
    /// there, so that tests can catch a rebuild or a snapshot in progress.
    pub fn set_maintenance_hook(
        &self,
        collection: &str,
        hook: Option<MaintenanceHook>,
    ) -> ServiceResult<()> {
        *self.collection(collection)?.hook.lock() = hook;
        Ok(())
    }
}
