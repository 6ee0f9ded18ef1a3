//! Background index maintenance, one task per collection: builds the approximate index when the
//! collection outgrows exact scans, moves pending passages into it in small steps, and writes
//! snapshots so that restarts need no rebuild.

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Instant;

use crate::index::VectorIndex;

use super::Service;
use super::collection::Collection;
use super::error::ServiceResult;

/// The maintenance loop of one collection. Ends when the service shuts down, when the service
/// is dropped, or when the collection is deleted.
pub(super) async fn run(
    service: Weak<Service>,
    coll: Arc<Collection>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut last_snapshot = Instant::now();
    loop {
        let interval = match service.upgrade() {
            Some(s) => s.settings.snapshot_interval,
            None => return,
        };
        tokio::select! {
            _ = coll.indexer.notified() => {}
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() || coll.is_deleted() {
            return;
        }
        let Some(svc) = service.upgrade() else { return };
        let settings = svc.settings.clone();
        let dir = svc.snapshot_dir(&coll);
        drop(svc);
        let due = last_snapshot.elapsed() >= settings.snapshot_interval;
        let c = coll.clone();
        let result = tokio::task::spawn_blocking(move || -> ServiceResult<bool> {
            maintain(&c, &settings.planner)?;
            let threshold = if due {
                1
            } else {
                settings.snapshot_every_changes
            };
            snapshot(&c, &dir, threshold)
        })
        .await;
        match result {
            Ok(Ok(true)) => last_snapshot = Instant::now(),
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(collection = %coll.record.name, error = %e, "index maintenance failed")
            }
            Err(e) => {
                tracing::error!(collection = %coll.record.name, error = %e, "index maintenance panicked")
            }
        }
    }
}

/// Builds the approximate index if it is due, then drains pending passages into it.
pub(super) fn maintain(
    coll: &Collection,
    settings: &super::collection::PlannerSettings,
) -> ServiceResult<()> {
    if coll.wants_build(settings) {
        let started = Instant::now();
        let n = coll.state.read().flat.len();
        tracing::info!(collection = %coll.record.name, passages = n, "building approximate index");
        coll.build_ann()?;
        tracing::info!(
            collection = %coll.record.name,
            passages = n,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "approximate index built"
        );
    }
    while !coll.is_deleted() && coll.drain_pending_step(settings.insert_step)? > 0 {}
    Ok(())
}

/// Writes a snapshot of the approximate index when at least `min_changes` changes are not in
/// the last one. Returns whether it wrote one.
pub(super) fn snapshot(coll: &Collection, dir: &Path, min_changes: u64) -> ServiceResult<bool> {
    let started = Instant::now();
    let written = {
        let st = coll.state.read();
        let Some(ann) = st.ann.as_ref() else {
            return Ok(false);
        };
        if st.building || st.unsnapshotted < min_changes.max(1) || coll.is_deleted() {
            return Ok(false);
        }
        ann.save(dir)?;
        st.unsnapshotted
    };
    let mut st = coll.state.write();
    st.unsnapshotted = st.unsnapshotted.saturating_sub(written);
    tracing::debug!(
        collection = %coll.record.name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "index snapshot written"
    );
    Ok(true)
}
