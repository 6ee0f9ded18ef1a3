//! Following the change feed, when several nodes share one PostgreSQL database.
//!
//! Each node keeps every collection in memory and applies the writes the other nodes make,
//! which it learns of from the feed ([`crate::store::feed`]): woken by `LISTEN/NOTIFY`, and
//! also polling every `follow_interval`, so that a notification lost with a connection only
//! delays. A collection is caught up under its write lock, so that the node's own writes
//! and the feed's are applied one at a time, in version order:
//!
//! * A write this node makes, committed at version N, is applied directly when the collection
//!   is at N - 1, which is the usual case. Otherwise another node's write came first: the
//!   node catches up from the feed, which includes its own.
//! * A collection the node does not hold yet (created elsewhere) is loaded from the store;
//!   one that is gone from it (deleted elsewhere) is dropped.
//! * A collection whose next change was already pruned from the feed (the node was away
//!   too long) is loaded again from the store, and replaces the old one once loaded.
//!
//! The node heartbeats its applied versions into the registry, and prunes the feed up to what
//! every live node has applied.

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::store::{Catchup, CollectionId, CollectionVersion, NodeRecord, Store};

use super::collection::Collection;
use super::error::{ServiceError, ServiceResult};
use super::{Registered, Service};

/// Documents read from the store per catch-up step: bounds the memory and the write lock
/// hold of one step.
const DOCUMENTS_PER_STEP: usize = 2048;

/// Heartbeats between two prunings of the feed.
const PRUNE_EVERY: u32 = 10;

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// This node's id, unique among the nodes of a database.
    pub node_id: String,
    /// Where this node's API can be reached, as `GET /cluster` shows it.
    pub address: String,
    /// How often the feed is polled besides the notifications.
    pub follow_interval: Duration,
    /// How often the node records that it is alive, and its applied versions.
    pub heartbeat_interval: Duration,
    /// A node whose last heartbeat is older than this counts as down: it no longer holds
    /// back the pruning of the feed.
    pub node_timeout: Duration,
    /// Changes older than this are pruned even if a node has not applied them (it reloads the
    /// collection when it comes back), and nodes silent this long leave the registry.
    pub feed_retention: Duration,
    /// Longest a query with `min_version` waits for this node to apply it.
    pub consistency_timeout: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            node_id: "local".into(),
            address: String::new(),
            follow_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(2),
            node_timeout: Duration::from_secs(30),
            feed_retention: Duration::from_secs(24 * 3600),
            consistency_timeout: Duration::from_secs(5),
        }
    }
}

/// How far a catch-up got.
pub(super) enum Caught {
    /// The collection holds this version (the store's latest when it was read).
    At,
    /// The collection is gone from the store.
    Gone,
    /// The feed no longer holds the next change: the collection must be loaded again.
    Behind,
}

/// Applies the feed's changes to `coll` up to the store's latest version. The caller holds
/// the collection's write lock.
pub(super) async fn catch_up(store: &Store, coll: &Arc<Collection>) -> ServiceResult<Caught> {
    loop {
        let applied = coll.applied();
        match store
            .read_changes(coll.record.id, applied, DOCUMENTS_PER_STEP)
            .await?
        {
            Catchup::Gone => return Ok(Caught::Gone),
            Catchup::Behind { version } => {
                coll.saw_version(version);
                return Ok(Caught::Behind);
            }
            Catchup::Apply {
                version,
                latest,
                documents,
            } => {
                coll.saw_version(latest);
                if !documents.is_empty() {
                    let c = coll.clone();
                    Service::blocking(move || {
                        let (removed, added) = c.apply_states(documents);
                        if let Some(lexical) = &c.lexical {
                            lexical.write(
                                &c.record.name,
                                &removed,
                                added.iter().map(|(id, text)| (*id, text.as_str())),
                            );
                        }
                        Ok(())
                    })
                    .await?;
                    coll.indexer.notify_one();
                }
                coll.set_applied(version);
                if version >= latest {
                    return Ok(Caught::At);
                }
            }
        }
    }
}

/// One node's view of the cluster, for `GET /cluster`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterInfo {
    /// This node's id.
    pub node: String,
    /// The store the nodes share: `postgres`, or `sqlite` for a single node.
    pub store: &'static str,
    /// Every registered node, by id.
    pub nodes: Vec<NodeInfo>,
    /// Every collection with its version in the store, by name.
    pub collections: Vec<CollectionVersionInfo>,
}

/// A node as `GET /cluster` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeInfo {
    /// Its id.
    pub id: String,
    /// Where its API listens, as it announced.
    pub address: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// Whether its last heartbeat is recent enough (`node_timeout`).
    pub alive: bool,
    /// How long ago its last heartbeat was, in milliseconds.
    pub heartbeat_age_ms: u64,
    /// What it has applied of each collection, as of that heartbeat, by name.
    pub collections: Vec<NodeCollection>,
}

/// One collection as a node has applied it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeCollection {
    /// The collection.
    pub name: String,
    /// The version the node has applied.
    pub applied: u64,
    /// How many versions behind the store it is.
    pub lag: u64,
}

/// A collection's version in the store.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CollectionVersionInfo {
    /// The collection.
    pub name: String,
    /// Its version.
    pub version: u64,
}

/// A collection's replication state on this node, for the metrics.
#[derive(Clone, Debug)]
pub struct Replication {
    /// The collection.
    pub name: String,
    /// The version applied here.
    pub applied: u64,
    /// The newest version this node knows the store holds.
    pub latest: u64,
}

impl Service {
    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.settings.cluster.node_id
    }

    /// Every collection's applied and latest known version on this node, by name.
    pub fn replication(&self) -> Vec<Replication> {
        let mut out: Vec<Replication> = self
            .ready_collections()
            .into_iter()
            .map(|c| Replication {
                name: c.record.name.clone(),
                applied: c.applied(),
                latest: c.latest(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The nodes of the cluster and what each has applied.
    pub async fn cluster(&self) -> ServiceResult<ClusterInfo> {
        let cluster = &self.settings.cluster;
        if !self.store.is_shared() {
            let replication = self.replication();
            return Ok(ClusterInfo {
                node: cluster.node_id.clone(),
                store: self.store.backend().as_str(),
                collections: replication
                    .iter()
                    .map(|r| CollectionVersionInfo {
                        name: r.name.clone(),
                        version: r.latest,
                    })
                    .collect(),
                nodes: vec![NodeInfo {
                    id: cluster.node_id.clone(),
                    address: cluster.address.clone(),
                    started_at: self.started_at.clone(),
                    alive: true,
                    heartbeat_age_ms: 0,
                    collections: replication
                        .into_iter()
                        .map(|r| NodeCollection {
                            lag: r.latest - r.applied,
                            name: r.name,
                            applied: r.applied,
                        })
                        .collect(),
                }],
            });
        }
        let versions = self.store.collection_versions().await?;
        let nodes = self.store.nodes().await?;
        let by_id: std::collections::HashMap<CollectionId, &CollectionVersion> =
            versions.iter().map(|v| (v.id, v)).collect();
        let node_info = |n: NodeRecord| {
            let mut collections: Vec<NodeCollection> = n
                .versions
                .iter()
                .filter_map(|(id, applied)| {
                    let v = by_id.get(id)?;
                    Some(NodeCollection {
                        name: v.name.clone(),
                        applied: *applied,
                        lag: v.version.saturating_sub(*applied),
                    })
                })
                .collect();
            collections.sort_by(|a, b| a.name.cmp(&b.name));
            NodeInfo {
                alive: n.heartbeat_age <= cluster.node_timeout,
                heartbeat_age_ms: n.heartbeat_age.as_millis() as u64,
                id: n.id,
                address: n.address,
                started_at: n.started_at,
                collections,
            }
        };
        let mut collections: Vec<CollectionVersionInfo> = versions
            .iter()
            .map(|v| CollectionVersionInfo {
                name: v.name.clone(),
                version: v.version,
            })
            .collect();
        collections.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterInfo {
            node: cluster.node_id.clone(),
            store: self.store.backend().as_str(),
            nodes: nodes.into_iter().map(node_info).collect(),
            collections,
        })
    }

    /// Every collection that serves.
    pub(super) fn ready_collections(&self) -> Vec<Arc<Collection>> {
        self.collections
            .read()
            .values()
            .filter_map(|r| match r {
                Registered::Ready(c) => Some(c.clone()),
                Registered::Failed(_) => None,
            })
            .collect()
    }

    /// A collection that serves. On a shared store, one this node does not hold yet but the
    /// store has (another node just created it) is waited for while the follower loads it, up
    /// to the consistency timeout.
    pub(super) async fn collection_synced(&self, name: &str) -> ServiceResult<Arc<Collection>> {
        let missing = match self.collection(name) {
            Err(ServiceError::CollectionNotFound(n)) if self.store.is_shared() => n,
            other => return other,
        };
        if self.store.get_collection(name).await?.is_none() {
            return Err(ServiceError::CollectionNotFound(missing));
        }
        let deadline = tokio::time::Instant::now() + self.settings.cluster.consistency_timeout;
        self.follow_now.notify_one();
        loop {
            // Listening before looking: a registration in between is not missed.
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            match self.collection(name) {
                Err(ServiceError::CollectionNotFound(_))
                    if tokio::time::Instant::now() < deadline => {}
                other => return other,
            }
            let _ = tokio::time::timeout_at(deadline, registered).await;
        }
    }

    /// The collection `name` once this node holds version `wanted` of it, asking the follower
    /// to look at the feed at once; [`ServiceError::VersionNotReached`] after the consistency
    /// timeout. A collection loaded again meanwhile (the node was behind the pruned feed) is
    /// looked up again, so the wait follows it.
    pub(super) async fn collection_at(
        &self,
        name: &str,
        wanted: u64,
    ) -> ServiceResult<Arc<Collection>> {
        let deadline = tokio::time::Instant::now() + self.settings.cluster.consistency_timeout;
        loop {
            let coll = self.collection_synced(name).await?;
            if coll.applied() >= wanted {
                return Ok(coll);
            }
            // Versions come from committed writes: one the store has not reached was never
            // handed out, and waiting cannot bring it.
            if wanted > coll.latest() {
                let stored = self
                    .store
                    .collection_version(coll.record.id)
                    .await?
                    .ok_or_else(|| ServiceError::CollectionNotFound(name.to_string()))?;
                coll.saw_version(stored);
                if wanted > stored {
                    return Err(ServiceError::invalid(
                        "version_not_written",
                        format!(
                            "collection '{name}' is at version {stored}; no write has produced \
                             version {wanted}"
                        ),
                    ));
                }
            }
            self.follow_now.notify_one();
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let slice = left.min(Duration::from_millis(200));
            match coll.wait_applied(wanted, slice).await {
                Ok(_) => return Ok(coll),
                Err(e) if left <= slice => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// Holds the follower (`true`) or lets it go on, for tests that need a node to fall
    /// behind while it runs.
    #[cfg(any(test, feature = "testing"))]
    pub fn pause_following(&self, paused: bool) {
        self.following_paused
            .store(paused, std::sync::atomic::Ordering::SeqCst);
        self.follow_now.notify_one();
    }

    #[cfg(any(test, feature = "testing"))]
    fn following_paused(&self) -> bool {
        self.following_paused
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    #[cfg(not(any(test, feature = "testing")))]
    fn following_paused(&self) -> bool {
        false
    }

    /// Brings every collection in step with the store once: loads new ones, drops deleted
    /// ones, applies the feed to the others. One collection that fails is logged and left
    /// for the next round; it does not hold the others back.
    async fn sync(self: &Arc<Self>) -> ServiceResult<()> {
        let versions = self.store.collection_versions().await?;
        // Checked again once the versions are read: a pause that began while they were read
        // (before some other node's write) holds for what they show.
        if self.following_paused() {
            return Ok(());
        }
        let present: std::collections::HashSet<CollectionId> =
            versions.iter().map(|v| v.id).collect();
        for v in versions {
            let result = match self.registered(&v.name) {
                Ok(Registered::Ready(coll)) if coll.record.id == v.id => {
                    coll.saw_version(v.version);
                    if coll.applied() >= v.version {
                        continue;
                    }
                    self.follow_collection(&coll).await
                }
                // Failed to load at start-up: loaded again only by a restart, as on one node.
                Ok(Registered::Failed(f)) if f.record.id == v.id => continue,
                // Unknown here, or the name now belongs to a newer collection.
                _ => self.load_from_store(&v).await,
            };
            if let Err(e) = result {
                tracing::warn!(collection = %v.name, error = %e, "could not follow the collection");
            }
        }
        for coll in self.ready_collections() {
            // Created here after the list was read, it is not in it: only a collection the
            // store no longer has is dropped.
            if !present.contains(&coll.record.id)
                && self
                    .store
                    .get_collection_by_id(coll.record.id)
                    .await?
                    .is_none()
            {
                self.drop_local(&coll).await;
            }
        }
        Ok(())
    }

    async fn follow_collection(self: &Arc<Self>, coll: &Arc<Collection>) -> ServiceResult<()> {
        let caught = {
            let _write = coll.write_lock.lock().await;
            if coll.is_deleted() {
                return Ok(());
            }
            catch_up(&self.store, coll).await?
        };
        match caught {
            Caught::At => Ok(()),
            Caught::Gone => {
                self.drop_local(coll).await;
                Ok(())
            }
            Caught::Behind => {
                tracing::warn!(
                    collection = %coll.record.name,
                    applied = coll.applied(),
                    "the change feed no longer holds this node's next change; loading the \
                     collection again"
                );
                let Some(record) = self.store.get_collection_by_id(coll.record.id).await? else {
                    self.drop_local(coll).await;
                    return Ok(());
                };
                let _membership = self.membership.lock().await;
                let entry = Registered::Ready(coll.clone());
                if !self
                    .registered(&coll.record.name)
                    .is_ok_and(|r| r.same(&entry))
                {
                    return Ok(());
                }
                // The old state lets go of its files (the lexical index's writer, snapshots in
                // progress) before the new one opens them; requests meanwhile wait for the
                // collection as for one created elsewhere.
                {
                    let _writes = coll.write_lock.lock().await;
                    self.retire(coll, &entry).await;
                }
                match self.load_collection(record.clone(), None).await {
                    Ok(fresh) => self.register(fresh),
                    Err(e) => {
                        tracing::error!(
                            collection = %record.name,
                            error = %e,
                            "could not load the collection again; it answers 503 until the \
                             server restarts"
                        );
                        self.register_failed(record, e.to_string());
                    }
                }
                Ok(())
            }
        }
    }

    /// Loads a collection another node created, unless it is here by now.
    async fn load_from_store(self: &Arc<Self>, v: &CollectionVersion) -> ServiceResult<()> {
        let Some(record) = self.store.get_collection_by_id(v.id).await? else {
            return Ok(());
        };
        self.adopt(record).await.map(|_| ())
    }

    /// The collection `record` as registered here, loading it from the store first if
    /// another node created it and this one has not loaded it yet.
    pub(super) async fn adopt(
        self: &Arc<Self>,
        record: crate::store::CollectionRecord,
    ) -> ServiceResult<Arc<Collection>> {
        let here = |r: &Registered| match r {
            Registered::Ready(c) if c.record.id == record.id => Some(Ok(c.clone())),
            // Failed to load at start-up: it stays failed until deleted or a restart.
            Registered::Failed(f) if f.record.id == record.id => Some(Err(f.error())),
            _ => None,
        };
        if let Some(found) = self.registered(&record.name).ok().as_ref().and_then(here) {
            return found;
        }
        let _membership = self.membership.lock().await;
        let current = self.registered(&record.name);
        if let Some(found) = current.as_ref().ok().and_then(here) {
            return found;
        }
        // The name was deleted and created again elsewhere: the old one is gone.
        if let Ok(old) = current {
            match &old {
                Registered::Ready(c) => {
                    let _writes = c.write_lock.lock().await;
                    self.forget(c, &old).await;
                }
                Registered::Failed(f) => {
                    self.unregister(&record.name, &old);
                    self.remove_snapshot(f.record.id).await;
                }
            }
        }
        match self.load_collection(record.clone(), None).await {
            Ok(coll) => {
                self.register(coll.clone());
                Ok(coll)
            }
            // As at start-up: it fails alone, can be described and deleted, and is not
            // retried by every round of the follower.
            Err(e) => {
                tracing::error!(collection = %record.name, error = %e, "collection could not be loaded");
                let name = record.name.clone();
                self.register_failed(record, e.to_string());
                Err(ServiceError::CollectionFailed {
                    name,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Loads a collection from the store: its state as of a version read first, then the
    /// feed from that version on (loading takes several snapshots; replaying the documents
    /// changed meanwhile makes them agree).
    ///
    /// `version` is the collection's version read before this call, if the caller has it.
    pub(super) async fn load_collection(
        self: &Arc<Self>,
        record: crate::store::CollectionRecord,
        version: Option<u64>,
    ) -> ServiceResult<Arc<Collection>> {
        let version = match version {
            Some(v) => v,
            None => self
                .store
                .collection_versions()
                .await?
                .into_iter()
                .find(|v| v.id == record.id)
                .map(|v| v.version)
                .ok_or_else(|| ServiceError::CollectionNotFound(record.name.clone()))?,
        };
        let coll = self.restore_collection(record).await?;
        coll.set_applied(version);
        if self.store.is_shared() {
            let _write = coll.write_lock.lock().await;
            match catch_up(&self.store, &coll).await? {
                Caught::At => {}
                Caught::Gone => {
                    return Err(ServiceError::CollectionNotFound(coll.record.name.clone()));
                }
                // Pruned past while it loaded: the next round of the follower loads it again.
                Caught::Behind => {}
            }
        }
        Ok(coll)
    }

    /// Drops a collection deleted by another node: what deleting it here does, less the rows.
    async fn drop_local(&self, coll: &Arc<Collection>) {
        let _membership = self.membership.lock().await;
        let _writes = coll.write_lock.lock().await;
        if coll.is_deleted() {
            return;
        }
        self.forget(coll, &Registered::Ready(coll.clone())).await;
        tracing::info!(collection = %coll.record.name, "collection deleted by another node");
    }

    pub(super) async fn heartbeat(&self, first: bool) -> ServiceResult<()> {
        let applied: Vec<(CollectionId, u64)> = self
            .ready_collections()
            .iter()
            .map(|c| (c.record.id, c.applied()))
            .collect();
        let cluster = &self.settings.cluster;
        self.store
            .heartbeat(&cluster.node_id, &cluster.address, first, &applied)
            .await?;
        Ok(())
    }

    /// Removes this node from the registry as it stops.
    pub(super) async fn leave(&self) {
        if self.store.is_shared()
            && let Err(e) = self.store.leave(&self.settings.cluster.node_id).await
        {
            tracing::warn!(error = %e, "could not leave the node registry");
        }
    }
}

/// The follower: runs until shutdown, on a shared store only.
pub(super) async fn run(service: Weak<Service>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let Some((store, settings, follow_now)) = service.upgrade().map(|s| {
        (
            s.store.clone(),
            s.settings.cluster.clone(),
            s.follow_now.clone(),
        )
    }) else {
        return;
    };
    let mut listener = None;
    let mut poll = tokio::time::interval(settings.follow_interval);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(settings.heartbeat_interval);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beats = 0u32;
    let mut registered = false;
    loop {
        if listener.is_none() {
            match store.listen().await {
                Ok(l) => listener = Some(l),
                Err(e) => tracing::debug!(error = %e, "no notifications from the change feed"),
            }
        }
        let mut heartbeat = false;
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = poll.tick() => {}
            _ = follow_now.notified() => {}
            _ = beat.tick() => heartbeat = true,
            got = async {
                match listener.as_mut() {
                    Some(l) => l.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Err(e) = got {
                    tracing::debug!(error = %e, "change notifications lost; polling meanwhile");
                    listener = None;
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        let Some(service) = service.upgrade() else {
            return;
        };
        if service.following_paused() {
            continue;
        }
        if let Err(e) = service.sync().await {
            tracing::warn!(error = %e, "could not read the change feed");
        }
        if heartbeat {
            match service.heartbeat(!registered).await {
                Ok(()) => registered = true,
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
            beats += 1;
            if beats.is_multiple_of(PRUNE_EVERY) {
                match store
                    .prune(settings.node_timeout, settings.feed_retention)
                    .await
                {
                    Ok(n) if n > 0 => tracing::debug!(changes = n, "change feed pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not prune the change feed"),
                }
            }
        }
    }
}
