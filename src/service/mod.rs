//! The use cases of vicinity, independent of HTTP: collections, documents, queries, embeddings.
//!
//! [`Service`] ties the layers below together: it splits and embeds text through an
//! [`Embedder`], commits documents, passages and vectors to the [`Store`], and keeps each
//! collection's vectors and indexes in memory ([`collection`]). CPU-heavy work (splitting, index
//! updates, searches, snapshots) runs on blocking threads, never on the async runtime; writes to
//! one collection are serialised, reads run concurrently.
//!
//! Durability: a write returns only after its SQLite transaction has committed, and the
//! in-memory indexes are updated before it returns, so the next query sees it. Index snapshots
//! are an optimisation for restarts: on start the indexes are reconciled with what the store
//! holds, and rebuilt from the stored vectors when a snapshot is missing or damaged. Nothing is
//! ever re-embedded.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::embed::{Embedder, Reranker};
pub use crate::store::PassageCacheStats;
use crate::store::{CollectionId, CollectionRecord, Store};

pub mod chunk;
pub(crate) mod collection;
mod collections;
pub mod diversify;
mod documents;
pub mod error;
pub mod filter;
mod follow;
mod foreground;
pub mod fusion;
mod indexer;
mod lexical;
mod limits;
mod query;
mod rerank;
pub mod types;

pub use collection::PlannerSettings;
pub use collections::{DEFAULT_QUANTIZATION, valid_name};
pub use documents::{MAX_ID_BYTES, MAX_PAGE};
pub use error::{ServiceError, ServiceResult};
pub use follow::{
    ClusterInfo, ClusterSettings, CollectionVersionInfo, NodeCollection, NodeInfo, Replication,
};
pub use limits::{Limit, LimitKind, Limits};
pub use query::{Embeddings, SearchStats};
pub use rerank::Rerank;
pub use types::*;

use collection::Collection;
use foreground::Foreground;
use query::SearchSlots;

/// Nice value of the maintenance threads: under contention they get about a tenth of a CPU
/// beside a query's thread ([`crate::priority`]), all of it otherwise.
const MAINTENANCE_NICE: i32 = 10;

/// Settings of the service layer.
#[derive(Clone, Debug)]
pub struct ServiceSettings {
    /// Where index snapshots live (`<data_dir>/indexes/<collection id>/`).
    pub data_dir: PathBuf,
    /// Planner and background indexing.
    pub planner: PlannerSettings,
    /// The admission limits every request is checked against before any expensive work.
    pub limits: Limits,
    /// Searches running at once; more wait up to `search_queue_timeout`, then get
    /// [`ServiceError::Overloaded`]. A batch query runs at most a quarter of them (at least
    /// one) at once, so that one batch cannot take them all.
    pub search_concurrency: usize,
    /// How long a search waits for a slot.
    pub search_queue_timeout: Duration,
    /// Snapshot an approximate index after this many changes...
    pub snapshot_every_changes: u64,
    /// ...or after this long with any change.
    pub snapshot_interval: Duration,
    /// Default overlap between passages, in tokens.
    pub default_overlap: usize,
    /// How this node takes part in a cluster sharing a PostgreSQL store.
    pub cluster: ClusterSettings,
}

impl ServiceSettings {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ServiceSettings {
            data_dir: data_dir.into(),
            planner: PlannerSettings::default(),
            limits: Limits::default(),
            search_concurrency: (4 * cores).max(8),
            search_queue_timeout: Duration::from_secs(2),
            snapshot_every_changes: 10_000,
            snapshot_interval: Duration::from_secs(60),
            default_overlap: 32,
            cluster: ClusterSettings::default(),
        }
    }
}

/// A collection that could not be restored at start-up: its stored record and why.
pub(crate) struct FailedCollection {
    pub(crate) record: CollectionRecord,
    pub(crate) reason: String,
    /// Serialises deletes; `true` once the rows are gone.
    pub(crate) deleted: tokio::sync::Mutex<bool>,
}

impl FailedCollection {
    /// What every operation on it but describe and delete answers.
    fn error(&self) -> ServiceError {
        ServiceError::CollectionFailed {
            name: self.record.name.clone(),
            reason: self.reason.clone(),
        }
    }
}

/// A registry entry: a collection that serves, or one that failed to restore.
#[derive(Clone)]
pub(crate) enum Registered {
    /// Restored (or created since start-up) and serving.
    Ready(Arc<Collection>),
    /// Could not be restored; it can be described and deleted.
    Failed(Arc<FailedCollection>),
}

impl Registered {
    /// Whether both are the same entry (not merely the same name).
    fn same(&self, other: &Registered) -> bool {
        match (self, other) {
            (Registered::Ready(a), Registered::Ready(b)) => Arc::ptr_eq(a, b),
            (Registered::Failed(a), Registered::Failed(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

/// The service: one per process, shared behind an `Arc`.
pub struct Service {
    settings: ServiceSettings,
    store: Store,
    embedder: Arc<dyn Embedder>,
    /// The cross-encoder that reranks, if the server runs one.
    reranker: Option<Arc<dyn Reranker>>,
    /// Every collection by name, including those that could not be restored. Held only for a
    /// map lookup or update, never across I/O.
    collections: RwLock<HashMap<String, Registered>>,
    search_slots: Arc<SearchSlots>,
    shutdown: tokio::sync::watch::Sender<bool>,
    indexers: parking_lot::Mutex<tokio::task::JoinSet<()>>,
    /// Embeddings that requests wait for; background indexing gives way to them.
    foreground: Arc<Foreground>,
    /// Threads of lowered priority for index builds and snapshots, so that queries get the CPU
    /// first; builds parallelise over them.
    maintenance: Arc<rayon::ThreadPool>,
    /// Wakes the follower at once (a query waits for a version).
    follow_now: Arc<tokio::sync::Notify>,
    /// Wakes requests waiting for a collection to join the registry.
    registered: tokio::sync::Notify,
    /// Held while a collection joins or leaves the registry because of the store (created
    /// here or elsewhere, deleted elsewhere), so that it is loaded once.
    membership: tokio::sync::Mutex<()>,
    /// When this node started, RFC 3339.
    started_at: String,
    /// Set by tests to hold the follower (see [`Service::pause_following`]).
    #[cfg(any(test, feature = "testing"))]
    following_paused: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("model", &self.embedder.model_id())
            .field("collections", &self.collections.read().len())
            .finish()
    }
}

impl Service {
    /// Opens the service over a store: restores every collection (documents, vectors, index
    /// snapshots) and starts background indexing. Logs how long each collection took.
    pub async fn open(
        settings: ServiceSettings,
        store: Store,
        embedder: Arc<dyn Embedder>,
    ) -> ServiceResult<Arc<Service>> {
        Service::open_with_reranker(settings, store, embedder, None).await
    }

    /// As [`open`](Self::open), with a cross-encoder for reranking.
    pub async fn open_with_reranker(
        settings: ServiceSettings,
        store: Store,
        embedder: Arc<dyn Embedder>,
        reranker: Option<Arc<dyn Reranker>>,
    ) -> ServiceResult<Arc<Service>> {
        let started = Instant::now();
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let maintenance = rayon::ThreadPoolBuilder::new()
            .num_threads(std::thread::available_parallelism().map_or(1, |n| n.get()))
            .thread_name(|i| format!("maintenance-{i}"))
            .start_handler(|_| {
                if let Err(e) = crate::priority::lower_current_thread(MAINTENANCE_NICE) {
                    tracing::warn!(error = %e, "cannot lower the priority of a maintenance thread");
                }
            })
            .build()
            .map_err(|e| ServiceError::internal("maintenance threads", e))?;
        let service = Arc::new(Service {
            maintenance: Arc::new(maintenance),
            search_slots: Arc::new(SearchSlots::new(settings.search_concurrency.max(1))),
            settings,
            store,
            embedder,
            reranker,
            collections: RwLock::new(HashMap::new()),
            shutdown,
            indexers: parking_lot::Mutex::new(tokio::task::JoinSet::new()),
            foreground: Foreground::new(),
            follow_now: Arc::new(tokio::sync::Notify::new()),
            registered: tokio::sync::Notify::new(),
            membership: tokio::sync::Mutex::new(()),
            started_at: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            #[cfg(any(test, feature = "testing"))]
            following_paused: std::sync::atomic::AtomicBool::new(false),
        });
        // Registered before anything loads, with nothing applied: the other nodes keep the
        // feed from then on, however long the loading takes.
        if service.store.is_shared() {
            service.heartbeat(true).await?;
        }
        // Read before the collections load: what they load holds at least these versions,
        // and on a shared store the feed after them brings in what was written meanwhile.
        let versions: HashMap<CollectionId, u64> = service
            .store
            .collection_versions()
            .await?
            .into_iter()
            .map(|v| (v.id, v.version))
            .collect();
        let summaries = service.store.list_collections().await?;
        let count = summaries.len();
        let mut failed = 0;
        for summary in summaries {
            let record = summary.collection;
            // One collection that cannot be restored must not keep the others (or the server)
            // down: it is registered as failed, answers 503 with the reason, and can be deleted.
            let version = versions.get(&record.id).copied();
            match service.load_collection(record.clone(), version).await {
                Ok(coll) => service.register(coll),
                Err(e) => {
                    tracing::error!(
                        collection = %record.name,
                        error = %e,
                        "collection could not be restored; it answers 503 until it is deleted \
                         or the cause is fixed and the server restarted"
                    );
                    failed += 1;
                    service.register_failed(record, e.to_string());
                }
            }
        }
        tracing::info!(
            collections = count,
            failed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "service ready"
        );
        if service.store.is_shared() {
            let this = Arc::downgrade(&service);
            let shutdown = service.shutdown.subscribe();
            service.indexers.lock().spawn(follow::run(this, shutdown));
        }
        Ok(service)
    }

    /// The collections that could not be restored at start-up (and are not deleted yet), by
    /// name.
    pub fn failed_collections(&self) -> Vec<CollectionFailure> {
        let mut out: Vec<CollectionFailure> = self
            .collections
            .read()
            .values()
            .filter_map(|r| match r {
                Registered::Failed(f) => Some(CollectionFailure {
                    name: f.record.name.clone(),
                    error: f.reason.clone(),
                }),
                Registered::Ready(_) => None,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// What the service runs.
    pub fn info(&self) -> ServiceInfo {
        ServiceInfo {
            version: env!("CARGO_PKG_VERSION"),
            model: self.embedder.model_id().to_string(),
            dimension: self.embedder.dim(),
            max_input_tokens: self.embedder.max_input_tokens(),
            reranker: self.reranker.as_ref().map(|r| r.model_id().to_string()),
            precision: self.embedder.kernel().map(|k| k.precision().as_str()),
            kernel: self.embedder.kernel().map(|k| k.as_str()),
        }
    }

    /// The admission limits requests are held to.
    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    /// Hits, misses and size of the store's passage cache.
    pub fn passage_cache_stats(&self) -> PassageCacheStats {
        self.store.passage_cache_stats()
    }

    /// The embedder, for callers that need its tokenizer or statistics.
    pub fn embedder(&self) -> &Arc<dyn Embedder> {
        &self.embedder
    }

    /// Embeds texts a request waits for interactively (queries, the embeddings endpoints):
    /// they go before any queued ingest. Background indexing gives way while this runs.
    async fn embed_texts(&self, texts: Vec<String>) -> ServiceResult<Vec<Vec<f32>>> {
        let _foreground = self.foreground.enter();
        Ok(self.embedder.embed(texts).await?)
    }

    /// Embeds the passages of an upsert as bulk work, which gives way to queries in the
    /// embedder. Background indexing gives way while this runs too: the upsert's caller waits.
    async fn embed_passages(&self, texts: Vec<String>) -> ServiceResult<Vec<Vec<f32>>> {
        let _foreground = self.foreground.enter();
        Ok(self.embedder.embed_bulk(texts).await?)
    }

    /// Stops background indexing and writes a snapshot of every index that changed since its
    /// last one, so the next start needs no rebuild.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.leave().await;
        let mut tasks = std::mem::take(&mut *self.indexers.lock());
        while tasks.join_next().await.is_some() {}
        let collections = self.ready_collections();
        for coll in collections.iter().cloned() {
            let dir = self.snapshot_dir(&coll);
            let name = coll.record.name.clone();
            let pool = self.maintenance.clone();
            let saved =
                tokio::task::spawn_blocking(move || indexer::snapshot(&coll, &dir, 1, &pool))
                    .await
                    .map_err(|e| ServiceError::internal("snapshot task", e))
                    .and_then(|r| r);
            if let Err(e) = saved {
                tracing::warn!(collection = %name, error = %e, "snapshot at shutdown failed");
            }
        }
        // The lexical indexes' writers finish their merges and let go of their directories.
        let lexical: Vec<Arc<Collection>> = collections
            .into_iter()
            .filter(|c| c.lexical.is_some())
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for coll in lexical {
                if let Some(l) = &coll.lexical {
                    l.index.close();
                }
            }
        })
        .await;
    }

    fn snapshot_dir(&self, coll: &Collection) -> PathBuf {
        self.snapshot_dir_of(coll.record.id)
    }

    fn snapshot_dir_of(&self, id: CollectionId) -> PathBuf {
        self.settings.data_dir.join("indexes").join(id.to_string())
    }

    /// Where a collection's lexical index lives.
    fn lexical_dir_of(&self, id: CollectionId) -> PathBuf {
        self.settings.data_dir.join("lexical").join(id.to_string())
    }

    /// A collection that serves: not found and failed ones are errors.
    fn collection(&self, name: &str) -> ServiceResult<Arc<Collection>> {
        match self.registered(name)? {
            Registered::Ready(coll) => Ok(coll),
            Registered::Failed(f) => Err(f.error()),
        }
    }

    /// A collection as registered, ready or failed.
    fn registered(&self, name: &str) -> ServiceResult<Registered> {
        self.collections
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| ServiceError::CollectionNotFound(name.to_string()))
    }

    /// Removes `name` from the registry if it still maps to `entry`: a collection created
    /// under the same name since is left alone.
    fn unregister(&self, name: &str, entry: &Registered) {
        let mut collections = self.collections.write();
        if collections.get(name).is_some_and(|r| r.same(entry)) {
            collections.remove(name);
        }
    }

    fn register(self: &Arc<Self>, coll: Arc<Collection>) {
        self.collections
            .write()
            .insert(coll.record.name.clone(), Registered::Ready(coll.clone()));
        self.registered.notify_waiters();
        let this = Arc::downgrade(self);
        let shutdown = self.shutdown.subscribe();
        self.indexers
            .lock()
            .spawn(indexer::run(this, coll, shutdown));
    }

    /// Registers a collection that could not be restored, so that it can be described and
    /// deleted. It has no in-memory side and no indexer.
    fn register_failed(&self, record: CollectionRecord, reason: String) {
        let failed = FailedCollection {
            record,
            reason,
            deleted: tokio::sync::Mutex::new(false),
        };
        self.collections.write().insert(
            failed.record.name.clone(),
            Registered::Failed(Arc::new(failed)),
        );
        self.registered.notify_waiters();
    }

    /// Runs CPU-bound work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> ServiceResult<T> + Send + 'static,
    ) -> ServiceResult<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ServiceError::internal("worker task", e))?
    }
}
