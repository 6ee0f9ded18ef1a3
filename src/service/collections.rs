//! Collection use cases: create, describe, list, delete, and restore at start-up.

use std::sync::Arc;
use std::time::Instant;

use crate::index::IndexKind;
use crate::index::ann::{AnnIndex, AnnParams};
use crate::index::hnsw::Quantization;
use crate::index::io::SnapshotReader;
use crate::store::{
    CollectionId, CollectionRecord, CollectionSource, CreateOutcome, NewCollection,
};

use super::chunk::Chunker;
use super::collection::{Collection, DocEntry};
use super::error::{ServiceError, ServiceResult};
use super::lexical::Lexical;
use super::limits::{Limit, Limits};
use super::types::{
    Chunking, CollectionInfo, CollectionSpec, IndexConfig, IndexState, IndexType, LexicalConfig,
    LexicalState,
};
use super::{FailedCollection, Registered, Service};
use crate::lexical::{LexicalIndex, Opened};

/// Rows read per round trip when loading a collection at start-up.
const LOAD_CHUNK: usize = 4096;

/// Passages whose vector in an index snapshot is compared with the store's at start-up.
const SNAPSHOT_CHECKS: usize = 64;

/// Whether `name` is a valid collection name: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a new HNSW (or `auto`) collection's graph walk reads when its settings do not say:
/// one-byte codes, the best candidates rescored on the full-precision vectors. At equal `ef`
/// it recalls what full precision does and answers queries about 1.9 times as fast (see
/// BENCHMARKS.md), for a quarter more vector memory (the codes beside the `f32` rows that
/// rescoring reads).
pub const DEFAULT_QUANTIZATION: Quantization = Quantization::Int8;

/// The index settings of a stored collection, as the service uses them: a record written before
/// int8 became the default has no `quantization`, and searched full-precision vectors.
fn stored_index(mut c: IndexConfig) -> IndexConfig {
    if matches!(c.kind, IndexType::Auto | IndexType::Hnsw) {
        c.quantization.get_or_insert(Quantization::None);
    }
    c
}

/// Whether a create request's index settings `new` (canonical) name the stored settings
/// `stored`. A stored record without a quantization predates int8 as the default and means
/// `none`; a request that left the quantization to the default (`default_quantization`) takes
/// whichever the collection has, so clients that create their collection on every start keep
/// working across the change of default.
fn same_index(
    new: &serde_json::Value,
    stored: &serde_json::Value,
    default_quantization: bool,
) -> bool {
    let split = |v: &serde_json::Value| {
        let mut rest = v.clone();
        let q = rest.as_object_mut().and_then(|f| f.remove("quantization"));
        (rest, q)
    };
    let ((new_rest, new_q), (stored_rest, stored_q)) = (split(new), split(stored));
    new_rest == stored_rest
        && (default_quantization
            || new_q == stored_q
            || (stored_q.is_none() && new_q.as_ref().and_then(|q| q.as_str()) == Some("none")))
}

/// Checks index parameters against the index type and fills in the defaults, so that two
/// requests meaning the same settings compare equal.
fn canonical_index(mut c: IndexConfig, limits: &Limits) -> ServiceResult<IndexConfig> {
    let bad = |m: String| ServiceError::invalid("invalid_parameter", m);
    let hnsw = matches!(c.kind, IndexType::Auto | IndexType::Hnsw);
    let ivf = c.kind == IndexType::Ivf;
    let kind = match c.kind {
        IndexType::Auto => "auto",
        IndexType::Hnsw => "hnsw",
        IndexType::Ivf => "ivf",
        IndexType::Flat => "flat",
    };
    for (name, set, applies) in [
        ("m", c.m.is_some(), hnsw),
        ("ef_construction", c.ef_construction.is_some(), hnsw),
        ("ef", c.ef.is_some(), hnsw),
        ("nlist", c.nlist.is_some(), ivf),
        ("nprobe", c.nprobe.is_some(), ivf),
        ("quantization", c.quantization.is_some(), hnsw),
    ] {
        if set && !applies {
            return Err(bad(format!("'{name}' does not apply to a {kind} index")));
        }
    }
    let defaults = AnnParams::defaults();
    if hnsw {
        // Stored explicitly: a record without the field predates int8 as the default, and
        // means `none` (see `stored_index`).
        c.quantization.get_or_insert(DEFAULT_QUANTIZATION);
        let m = *c.m.get_or_insert(defaults.m.expect("HNSW has a default m"));
        if !(2..=128).contains(&m) {
            return Err(bad(format!("m must be between 2 and 128, got {m}")));
        }
        let efc = *c.ef_construction.get_or_insert(
            defaults
                .ef_construction
                .expect("HNSW has a default ef_construction"),
        );
        if !(1..=4096).contains(&efc) {
            return Err(bad(format!(
                "ef_construction must be between 1 and 4096, got {efc}"
            )));
        }
        if c.ef == Some(0) {
            return Err(bad("ef must be at least 1".into()));
        }
        if let Some(ef) = c.ef {
            Limit::Ef.check("ef", ef, limits.max_ef)?;
        }
    }
    if ivf {
        if c.nlist == Some(0) {
            return Err(bad("nlist must be at least 1".into()));
        }
        if c.nprobe == Some(0) {
            return Err(bad("nprobe must be at least 1".into()));
        }
        if let Some(nlist) = c.nlist {
            Limit::Nlist.check("nlist", nlist, limits.max_nlist)?;
        }
        if let Some(nprobe) = c.nprobe {
            Limit::Nprobe.check("nprobe", nprobe, limits.max_nprobe)?;
        }
    }
    Ok(c)
}

impl Service {
    /// Creates a collection. Returns its description and whether it was created (`false`
    /// when an identical one already existed). A collection of that name with other settings
    /// is a [`ServiceError::CollectionConflict`].
    pub async fn create_collection(
        self: &Arc<Self>,
        name: &str,
        spec: CollectionSpec,
    ) -> ServiceResult<(CollectionInfo, bool)> {
        if !valid_name(name) {
            return Err(ServiceError::InvalidName {
                name: name.to_string(),
            });
        }
        let default_quantization = spec.index.quantization.is_none();
        let index = canonical_index(spec.index, &self.settings.limits)?;
        let model_dim = self.embedder.dim();
        let (dimension, source) = match spec.dimension {
            Some(0) => {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    "dimension must be at least 1",
                ));
            }
            Some(d) if d > 65_536 => {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    format!("dimension must be at most 65536, got {d}"),
                ));
            }
            Some(d) if d != model_dim => (d, CollectionSource::Vector),
            _ => (model_dim, CollectionSource::Text),
        };
        let chunking = match (source, spec.chunking) {
            (CollectionSource::Vector, Some(_)) => {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    format!(
                        "chunking applies to text collections; a collection of dimension \
                         {dimension} takes vectors (the model's dimension is {model_dim})"
                    ),
                ));
            }
            (CollectionSource::Vector, None) => None,
            (CollectionSource::Text, given) => {
                let c = given.unwrap_or_else(|| {
                    let max_tokens = self.embedder.max_input_tokens();
                    Chunking {
                        max_tokens,
                        // A quarter of a passage at most, for models with short inputs.
                        overlap: self.settings.default_overlap.min(max_tokens / 4),
                    }
                });
                // Canonical form: clamped to what the model takes, checked by building it.
                let chunker = self.chunker(&c)?;
                Some(Chunking {
                    max_tokens: chunker.max_tokens(),
                    overlap: chunker.overlap(),
                })
            }
        };
        let lexical = match (source, spec.lexical) {
            (CollectionSource::Vector, Some(_)) => {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    format!(
                        "lexical applies to text collections; a collection of dimension \
                         {dimension} takes vectors (the model's dimension is {model_dim})"
                    ),
                ));
            }
            (CollectionSource::Vector, None) => None,
            (CollectionSource::Text, given) => {
                let l = given.unwrap_or_default();
                if !crate::lexical::is_language(&l.language) {
                    return Err(ServiceError::invalid(
                        "invalid_parameter",
                        format!(
                            "unknown lexical language '{}'; supported: {}",
                            l.language,
                            crate::lexical::LANGUAGES
                        ),
                    ));
                }
                Some(l)
            }
        };
        let new = NewCollection {
            name: name.to_string(),
            distance: spec.distance,
            index: serde_json::to_value(&index).expect("index config serialises"),
            dimension: Some(dimension),
            source,
            model_id: (source == CollectionSource::Text)
                .then(|| self.embedder.model_id().to_string()),
            chunking: chunking.map(|c| serde_json::to_value(c).expect("chunking serialises")),
            lexical: lexical.map(|l| serde_json::to_value(l).expect("lexical serialises")),
        };
        // Counted before the row is written: a collection that already exists is not a new one,
        // so an idempotent re-create is never refused. Two creates racing past the check can
        // exceed the limit by one each; the limit bounds memory, not an exact count.
        let max = self.settings.limits.max_collections;
        let count = self.collections.read().len();
        if count >= max && self.collection(name).is_err() {
            return Err(Limit::Collections.exceeded(
                "the number of collections on the server",
                count + 1,
                max,
            ));
        }
        match self.store.create_collection(&new).await? {
            CreateOutcome::Created(record) => {
                let coll = {
                    let _membership = self.membership.lock().await;
                    match self.registered(name) {
                        // The follower saw the new row first and loaded it.
                        Ok(Registered::Ready(c)) if c.record.id == record.id => c,
                        _ => {
                            let lexical = self.open_lexical(&record).await?;
                            let coll =
                                Arc::new(self.new_collection(record, lexical.map(|(l, _)| l))?);
                            self.register(coll.clone());
                            coll
                        }
                    }
                };
                Ok((self.describe(&coll).await?, true))
            }
            CreateOutcome::AlreadyExists(record) => {
                // Possibly created by another node, and not loaded here yet.
                let coll = self.adopt(record).await?;
                Ok((self.describe(&coll).await?, false))
            }
            // Equal but for how the quantization is spelled (see `same_index`).
            CreateOutcome::Conflict(existing)
                if same_index(&new.index, &existing.index, default_quantization)
                    && existing.matches(&NewCollection {
                        index: existing.index.clone(),
                        ..new.clone()
                    }) =>
            {
                let coll = self.adopt(existing).await?;
                Ok((self.describe(&coll).await?, false))
            }
            CreateOutcome::Conflict(existing) => Err(ServiceError::CollectionConflict {
                name: name.to_string(),
                existing: serde_json::json!({
                    "distance": existing.distance,
                    "index": existing.index,
                    "dimension": existing.dimension,
                    "chunking": existing.chunking,
                })
                .to_string(),
            }),
        }
    }

    /// Describes one collection; one that could not be restored is described as `failed`.
    pub async fn get_collection(&self, name: &str) -> ServiceResult<CollectionInfo> {
        match self.registered(name)? {
            Registered::Ready(coll) => self.describe(&coll).await,
            Registered::Failed(f) => Ok(describe_failed(&f)),
        }
    }

    /// Describes every collection, by name, failed ones included.
    pub async fn list_collections(&self) -> ServiceResult<Vec<CollectionInfo>> {
        let mut colls: Vec<(String, Registered)> = self
            .collections
            .read()
            .iter()
            .map(|(name, r)| (name.clone(), r.clone()))
            .collect();
        colls.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = Vec::with_capacity(colls.len());
        for (_, r) in colls {
            out.push(match r {
                Registered::Ready(c) => self.describe(&c).await?,
                Registered::Failed(f) => describe_failed(&f),
            });
        }
        Ok(out)
    }

    /// Deletes a collection with its documents, passages and index snapshots. A collection
    /// that could not be restored is deleted the same way.
    pub async fn delete_collection(&self, name: &str) -> ServiceResult<()> {
        let entry = self.registered(name)?;
        match &entry {
            Registered::Ready(coll) => {
                // Wait for in-flight writes, and keep new ones out while the rows go.
                let _writes = coll.write_lock.lock().await;
                if coll.is_deleted() {
                    return Err(ServiceError::CollectionNotFound(name.to_string()));
                }
                self.store.delete_collection(coll.record.id).await?;
                self.forget(coll, &entry).await;
            }
            Registered::Failed(f) => {
                let mut deleted = f.deleted.lock().await;
                if *deleted {
                    return Err(ServiceError::CollectionNotFound(name.to_string()));
                }
                self.store.delete_collection(f.record.id).await?;
                *deleted = true;
                self.unregister(name, &entry);
                self.remove_snapshot(f.record.id).await;
            }
        }
        Ok(())
    }

    /// Takes a collection whose rows are gone out of service: its in-flight work stops, it
    /// leaves the registry, its lexical index closes and its files go. The caller holds its
    /// write lock.
    pub(super) async fn forget(&self, coll: &Arc<Collection>, entry: &Registered) {
        self.retire(coll, entry).await;
        self.remove_snapshot(coll.record.id).await;
    }

    /// Takes a collection out of service and lets go of its files, leaving them in place:
    /// its in-flight work stops, it leaves the registry, its lexical index closes. The caller
    /// holds its write lock.
    pub(super) async fn retire(&self, coll: &Arc<Collection>, entry: &Registered) {
        coll.mark_deleted();
        // A snapshot being written now would recreate the directory removed below.
        coll.snapshots_stopped().await;
        self.unregister(&coll.record.name, entry);
        if coll.lexical.is_some() {
            let c = coll.clone();
            let _ = Service::blocking(move || {
                if let Some(l) = &c.lexical {
                    l.index.close();
                }
                Ok(())
            })
            .await;
        }
    }

    /// Removes a deleted collection's index snapshot. The rows are gone already; a snapshot
    /// left behind is only wasted disk (a recreated collection gets a new id, so it can never
    /// be loaded), hence a warning, not an error.
    pub(super) async fn remove_snapshot(&self, id: CollectionId) {
        let dirs = [self.snapshot_dir_of(id), self.lexical_dir_of(id)];
        let removed = tokio::task::spawn_blocking(move || {
            for dir in dirs {
                if dir.exists()
                    && let Err(e) = std::fs::remove_dir_all(&dir)
                {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove index files");
                }
            }
        });
        let _ = removed.await;
    }

    fn chunker(&self, c: &Chunking) -> ServiceResult<Chunker> {
        let tokenizer = self.embedder.tokenizer().ok_or_else(|| {
            ServiceError::invalid(
                "invalid_parameter",
                "the embedding model has no tokenizer to split text with",
            )
        })?;
        Ok(Chunker::new(
            tokenizer,
            self.embedder.max_input_tokens(),
            c.max_tokens,
            c.overlap,
        )?)
    }

    /// Opens (or makes) the lexical index of a text collection; `None` for one that takes
    /// vectors.
    async fn open_lexical(
        &self,
        record: &CollectionRecord,
    ) -> ServiceResult<Option<(Lexical, Opened)>> {
        let Some(settings) = &record.lexical else {
            return Ok(None);
        };
        let config: LexicalConfig = serde_json::from_value(settings.clone())
            .map_err(|e| ServiceError::internal("stored lexical settings", e))?;
        let dir = self.lexical_dir_of(record.id);
        Service::blocking(move || {
            let (index, opened) = LexicalIndex::open(&dir, &config.language)
                .map_err(|e| ServiceError::internal("lexical index", e))?;
            Ok(Some((Lexical::new(index, config.language), opened)))
        })
        .await
    }

    /// Brings a restored collection's lexical index in step with the store: passages it lacks
    /// are added from their stored text, passages the store no longer has are removed.
    /// Returns what it did, for the log.
    async fn replay_lexical(
        &self,
        coll: &Arc<Collection>,
        opened: Opened,
    ) -> ServiceResult<String> {
        let c = coll.clone();
        let (missing, extra) = Service::blocking(move || {
            let lexical = c
                .lexical
                .as_ref()
                .expect("replayed only with a lexical index");
            let indexed: std::collections::HashSet<u64> = lexical
                .index
                .passage_ids()
                .map_err(|e| ServiceError::internal("lexical index", e))?
                .into_iter()
                .collect();
            let stored = c.passage_ids();
            let stored_set: std::collections::HashSet<u64> = stored.iter().copied().collect();
            let mut missing: Vec<u64> = stored
                .into_iter()
                .filter(|id| !indexed.contains(id))
                .collect();
            missing.sort_unstable();
            let extra: Vec<u64> = indexed
                .into_iter()
                .filter(|id| !stored_set.contains(id))
                .collect();
            Ok((missing, extra))
        })
        .await?;
        let (added, removed) = (missing.len(), extra.len());
        let mut extra = Some(extra);
        for chunk in missing.chunks(LOAD_CHUNK).map(<[u64]>::to_vec) {
            let rows = self
                .store
                .get_passages(coll.record.id, &chunk, false)
                .await?;
            let c = coll.clone();
            let removed = extra.take().unwrap_or_default();
            Service::blocking(move || {
                let lexical = c
                    .lexical
                    .as_ref()
                    .expect("replayed only with a lexical index");
                lexical
                    .replay(
                        &removed,
                        rows.iter().map(|r| (r.id, r.text.as_deref().unwrap_or(""))),
                    )
                    .map_err(|e| ServiceError::internal("lexical index replay", e))
            })
            .await?;
        }
        if let Some(removed) = extra.filter(|r| !r.is_empty()) {
            let c = coll.clone();
            Service::blocking(move || {
                let lexical = c
                    .lexical
                    .as_ref()
                    .expect("replayed only with a lexical index");
                lexical
                    .replay(&removed, std::iter::empty())
                    .map_err(|e| ServiceError::internal("lexical index replay", e))
            })
            .await?;
        }
        Ok(match opened {
            Opened::Existing if added == 0 && removed == 0 => "loaded".to_string(),
            Opened::Existing => format!("replayed: {added} added, {removed} removed"),
            Opened::Created => format!("missing, rebuilt from {added} stored passages"),
            Opened::Replaced(why) => {
                tracing::warn!(
                    collection = %coll.record.name,
                    reason = %why,
                    "lexical index unusable, rebuilding from stored passages"
                );
                format!("unusable ({why}), rebuilt from {added} stored passages")
            }
        })
    }

    /// The in-memory side of a stored collection, empty.
    fn new_collection(
        &self,
        record: CollectionRecord,
        lexical: Option<Lexical>,
    ) -> ServiceResult<Collection> {
        let config: IndexConfig = serde_json::from_value(record.index.clone())
            .map(stored_index)
            .map_err(|e| ServiceError::internal("stored index settings", e))?;
        let dim = record.dimension.ok_or_else(|| {
            ServiceError::Internal(format!("collection '{}' has no dimension", record.name))
        })?;
        let chunker = match (&record.source, &record.chunking) {
            (CollectionSource::Text, Some(c)) => {
                let c: Chunking = serde_json::from_value(c.clone())
                    .map_err(|e| ServiceError::internal("stored chunking settings", e))?;
                Some(self.chunker(&c)?)
            }
            _ => None,
        };
        if record.source == CollectionSource::Text
            && record.model_id.as_deref() != Some(self.embedder.model_id())
        {
            tracing::warn!(
                collection = %record.name,
                stored_model = record.model_id.as_deref().unwrap_or("?"),
                model = self.embedder.model_id(),
                "collection was embedded with another model; text queries and new documents \
                 use the current one"
            );
        }
        Collection::new(record, config, dim, chunker, lexical)
    }

    /// Rebuilds a collection's in-memory side from the store and its index snapshot.
    pub(super) async fn restore_collection(
        &self,
        record: CollectionRecord,
    ) -> ServiceResult<Arc<Collection>> {
        let started = Instant::now();
        let (lexical, opened) = match self.open_lexical(&record).await? {
            Some((l, o)) => (Some(l), Some(o)),
            None => (None, None),
        };
        let coll = Arc::new(self.new_collection(record, lexical)?);
        let id = coll.record.id;

        // The snapshot file and the documents are read at once: the file on a blocking
        // thread, the documents on a connection of their own. An HNSW snapshot holds the
        // vectors of the passages it indexes, so only those it lacks are read from the store;
        // without one, every vector is, beside the documents.
        let dir = self.snapshot_dir(&coll);
        let vectors_from_snapshot = coll.ann_params().is_some_and(|p| p.kind == IndexKind::Hnsw)
            && SnapshotReader::exists(&dir);
        let snapshot_file =
            (coll.ann_params().is_some() && SnapshotReader::exists(&dir)).then(|| {
                let d = dir.clone();
                let c = coll.clone();
                let fill = vectors_from_snapshot;
                tokio::task::spawn_blocking(move || {
                    let read = Instant::now();
                    let ann = AnnIndex::load(&d);
                    let read = read.elapsed();
                    // The exact index takes the snapshot's vectors while the documents are
                    // still being read.
                    let filled = match &ann {
                        Ok(ann) if fill && c.snapshot_fits(ann) => c.load_snapshot_vectors(ann),
                        _ => false,
                    };
                    (ann, read, filled)
                })
            });
        // Each chunk of documents goes into memory on a blocking thread while the next is
        // read.
        let documents = async {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<DocEntry>>(4);
            let c = coll.clone();
            let loader = tokio::task::spawn_blocking(move || {
                while let Some(chunk) = rx.blocking_recv() {
                    c.load_documents(chunk);
                }
            });
            let mut passages = Vec::new();
            let mut scan = self.store.scan_documents(id, LOAD_CHUNK).await?;
            while let Some(chunk) = scan.next_chunk().await? {
                let mut entries = Vec::with_capacity(chunk.len());
                for d in chunk {
                    passages.extend_from_slice(&d.passage_ids);
                    entries.push(DocEntry {
                        id: d.id,
                        metadata: d.metadata,
                        passages: d.passage_ids,
                        spans: d.spans,
                    });
                }
                if tx.send(entries).await.is_err() {
                    break;
                }
            }
            drop(tx);
            loader
                .await
                .map_err(|e| ServiceError::internal("document load task", e))?;
            ServiceResult::Ok((passages, started.elapsed()))
        };
        let vectors = async {
            if !vectors_from_snapshot {
                self.load_all_vectors(&coll).await?;
            }
            ServiceResult::Ok(())
        };
        let ((passages, documents_read), ()) = tokio::try_join!(documents, vectors)?;
        let mut snapshot_read = None;

        let snapshot = match snapshot_file {
            None => "none",
            Some(file) => {
                let mut filled = false;
                let ann = match file.await {
                    Ok((Ok(ann), read, f)) => {
                        snapshot_read = Some(read);
                        filled = f;
                        Ok(ann)
                    }
                    Ok((Err(e), _, _)) => Err(e.into()),
                    Err(e) => Err(ServiceError::internal("snapshot load task", e)),
                };
                // `Err`: the snapshot is refused; a failure to read the store is no reason to
                // drop it, and fails the load instead.
                let installed: Result<bool, ServiceError> = match ann {
                    Ok(ann) if !coll.snapshot_fits(&ann) => Ok(false),
                    // Not filled: a kind that keeps no vectors as given, which an HNSW
                    // snapshot never is; the store gives them, and the graph is rebuilt.
                    Ok(_) if vectors_from_snapshot && !filled => Ok(false),
                    Ok(ann) if vectors_from_snapshot => self
                        .install_with_vectors(&coll, ann, passages)
                        .await?
                        .map(|()| true),
                    Ok(ann) => {
                        let c = coll.clone();
                        Service::blocking(move || c.install_snapshot(ann).map(|()| true)).await
                    }
                    Err(e) => Err(e),
                };
                // Whatever the snapshot could not give, the store does: every vector is
                // loaded before the collection is used.
                if vectors_from_snapshot && !matches!(installed, Ok(true)) {
                    coll.clear_vectors()?;
                    self.load_all_vectors(&coll).await?;
                }
                match installed {
                    Ok(true) => "loaded",
                    Ok(false) => "mismatched settings, rebuilding",
                    Err(e) => {
                        tracing::warn!(
                            collection = %coll.record.name,
                            error = %e,
                            "index snapshot unusable, rebuilding from stored vectors"
                        );
                        "unusable, rebuilding"
                    }
                }
            }
        };
        let loaded = started.elapsed();
        let lexical = match opened {
            Some(opened) => self.replay_lexical(&coll, opened).await?,
            None => "none".to_string(),
        };
        let (state, _, passages) = coll.index_state(&self.settings.planner);
        tracing::info!(
            collection = %coll.record.name,
            passages,
            pending = state.pending,
            snapshot,
            lexical,
            documents_ms = documents_read.as_millis() as u64,
            snapshot_read_ms = snapshot_read.map(|d| d.as_millis() as u64),
            load_ms = loaded.as_millis() as u64,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "collection restored"
        );
        // Pending passages and a due build are the indexer's job.
        coll.indexer.notify_one();
        Ok(coll)
    }

    /// Loads every stored vector of `coll` into its exact index.
    async fn load_all_vectors(&self, coll: &Arc<Collection>) -> ServiceResult<()> {
        let mut scan = self.store.scan_vectors(coll.record.id, LOAD_CHUNK).await?;
        while let Some(chunk) = scan.next_chunk().await? {
            let c = coll.clone();
            Service::blocking(move || c.load_vectors(&chunk.ids, &chunk.vectors)).await?;
        }
        Ok(())
    }

    /// Installs an HNSW snapshot whose vectors filled the exact index: those of `passages` (the
    /// stored ones) it holds were taken from it, the rest are read from the store. Passage ids are
    /// never reused, so a vector the snapshot holds for a stored passage is that passage's;
    /// a sample is still checked against the store, so that a snapshot meeting another
    /// database's rows (a restored backup, a copied data directory) is refused rather than
    /// trusted.
    async fn install_with_vectors(
        &self,
        coll: &Arc<Collection>,
        ann: AnnIndex,
        mut passages: Vec<u64>,
    ) -> ServiceResult<Result<(), ServiceError>> {
        let c = coll.clone();
        let (ann, missing, sample) = Service::blocking(move || {
            passages.sort_unstable();
            let missing = c.reconcile_vectors(&passages);
            let sample = c.vector_sample(&passages, &missing, SNAPSHOT_CHECKS);
            Ok((ann, missing, sample))
        })
        .await?;
        if !sample.is_empty() {
            let ids: Vec<u64> = sample.iter().map(|(id, _)| *id).collect();
            let stored = self.store.get_passages(coll.record.id, &ids, true).await?;
            let stored: std::collections::HashMap<u64, Vec<f32>> = stored
                .into_iter()
                .filter_map(|r| r.vector.map(|v| (r.id, v)))
                .collect();
            for (id, held) in &sample {
                // A passage deleted since the document scan has nothing to compare.
                let Some(v) = stored.get(id) else { continue };
                if !coll.same_vector(v, held) {
                    return Ok(Err(ServiceError::Internal(format!(
                        "the snapshot holds another vector than the store for passage {id}"
                    ))));
                }
            }
        }
        for chunk in missing.chunks(LOAD_CHUNK).map(<[u64]>::to_vec) {
            let rows = self
                .store
                .get_passages(coll.record.id, &chunk, true)
                .await?;
            let c = coll.clone();
            Service::blocking(move || {
                let mut ids = Vec::with_capacity(rows.len());
                let mut values = Vec::with_capacity(rows.len() * c.dim);
                for r in rows {
                    if let Some(v) = r.vector {
                        ids.push(r.id);
                        values.extend_from_slice(&v);
                    }
                }
                c.load_vectors(&ids, &values)
            })
            .await?;
        }
        let c = coll.clone();
        Ok(Service::blocking(move || c.install_snapshot(ann)).await)
    }

    pub(super) async fn describe(&self, coll: &Arc<Collection>) -> ServiceResult<CollectionInfo> {
        let c = coll.clone();
        let planner = self.settings.planner.clone();
        let ((index_state, memory, passages), documents, lexical) = Service::blocking(move || {
            let lexical = c.lexical.as_ref().map(|l| {
                let error = l.failure();
                LexicalState {
                    language: l.language.clone(),
                    status: if error.is_some() { "failed" } else { "ready" },
                    error,
                    disk_bytes: l.index.disk_bytes(),
                }
            });
            Ok((c.index_state(&planner), c.document_count(), lexical))
        })
        .await?;
        let documents = documents as u64;
        let r = &coll.record;
        Ok(CollectionInfo {
            name: r.name.clone(),
            status: "ready",
            error: None,
            distance: r.distance,
            dimension: r.dimension,
            source: r.source.as_str(),
            model: r.model_id.clone(),
            index: coll.config.clone(),
            chunking: r
                .chunking
                .as_ref()
                .and_then(|c| serde_json::from_value(c.clone()).ok()),
            lexical,
            documents,
            passages: passages as u64,
            index_state,
            memory_bytes: memory,
            created_at: r.created_at.clone(),
        })
    }
}

/// A collection that could not be restored, described from its stored record: the settings
/// that can be read, no documents, passages or memory.
fn describe_failed(f: &FailedCollection) -> CollectionInfo {
    let r = &f.record;
    CollectionInfo {
        name: r.name.clone(),
        status: "failed",
        error: Some(f.reason.clone()),
        distance: r.distance,
        dimension: r.dimension,
        source: r.source.as_str(),
        model: r.model_id.clone(),
        // Unreadable settings may be the very reason it failed; the defaults stand in, and
        // `error` says what is wrong.
        index: serde_json::from_value(r.index.clone()).unwrap_or_default(),
        chunking: r
            .chunking
            .as_ref()
            .and_then(|c| serde_json::from_value(c.clone()).ok()),
        lexical: None,
        documents: 0,
        passages: 0,
        index_state: IndexState {
            ann: None,
            status: "none",
            pending: 0,
            indexed: 0,
        },
        memory_bytes: 0,
        created_at: r.created_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name("docs"));
        assert!(valid_name("My_docs-2"));
        assert!(valid_name(&"a".repeat(64)));
        assert!(!valid_name(""));
        assert!(!valid_name(&"a".repeat(65)));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("é"));
        assert!(!valid_name("a.b"));
    }

    #[test]
    fn index_settings_are_checked_and_canonical() {
        let c = canonical_index(IndexConfig::default(), &Limits::default()).unwrap();
        assert!(c.m.is_some() && c.ef_construction.is_some());
        assert_eq!(c.quantization, Some(DEFAULT_QUANTIZATION));
        let none = IndexConfig {
            quantization: Some(Quantization::None),
            ..Default::default()
        };
        let none = canonical_index(none, &Limits::default()).unwrap();
        assert_eq!(none.quantization, Some(Quantization::None), "kept as given");
        assert_eq!(
            none,
            canonical_index(none.clone(), &Limits::default()).unwrap()
        );
        assert_eq!(c, canonical_index(c.clone(), &Limits::default()).unwrap());
        let ivf = IndexConfig {
            kind: IndexType::Ivf,
            m: Some(8),
            ..Default::default()
        };
        assert!(canonical_index(ivf, &Limits::default()).is_err());
        let flat = IndexConfig {
            kind: IndexType::Flat,
            nprobe: Some(8),
            ..Default::default()
        };
        assert!(canonical_index(flat, &Limits::default()).is_err());
        let bad_m = IndexConfig {
            kind: IndexType::Hnsw,
            m: Some(1),
            ..Default::default()
        };
        assert!(canonical_index(bad_m, &Limits::default()).is_err());
        let flat = canonical_index(
            IndexConfig {
                kind: IndexType::Flat,
                ..Default::default()
            },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(flat.m, None);
        assert_eq!(flat.quantization, None);
    }

    #[test]
    fn records_without_quantization_read_as_full_precision() {
        let old: IndexConfig =
            serde_json::from_value(serde_json::json!({"type": "hnsw", "m": 16})).unwrap();
        assert_eq!(stored_index(old).quantization, Some(Quantization::None));
        let flat: IndexConfig =
            serde_json::from_value(serde_json::json!({"type": "flat"})).unwrap();
        assert_eq!(stored_index(flat).quantization, None);
        let int8 = serde_json::json!({"type": "auto", "m": 16, "quantization": "int8"});
        let none = serde_json::json!({"type": "auto", "m": 16, "quantization": "none"});
        let old = serde_json::json!({"type": "auto", "m": 16});
        assert!(
            same_index(&int8, &old, true),
            "the default takes what is stored"
        );
        assert!(same_index(&int8, &none, true));
        assert!(
            !same_index(&int8, &old, false),
            "an explicit int8 is not the old none"
        );
        assert!(
            same_index(&none, &old, false),
            "an explicit none is the old none"
        );
        assert!(same_index(&none, &none, false));
        assert!(!same_index(&none, &int8, false));
        let m8 = serde_json::json!({"type": "auto", "m": 8, "quantization": "int8"});
        assert!(!same_index(&m8, &old, true), "other settings still count");
    }
}
