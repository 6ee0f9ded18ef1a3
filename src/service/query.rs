//! Query use cases: k-nearest-neighbour search over a collection, alone or in batches, and raw
//! embeddings for the OpenAI- and TEI-shaped endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::try_join_all;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::index::{Hit, SearchParams};

use super::Service;
use super::collection::Collection;
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;
use super::types::{PassageSpan, Plan, Query, QueryHit, QueryInput, QueryResult};

/// How the search slots are used: the service's `search_concurrency`, and the searches run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchStats {
    /// Searches that may run at once.
    pub slots: usize,
    /// Slots held now.
    pub in_use: usize,
    /// Most slots held at once since the service started, as seen by each search as it
    /// started.
    pub peak_in_use: usize,
    /// Searches run.
    pub searches: u64,
    /// Searches skipped because their request had gone away (timed out, or its client
    /// disconnected) before they started.
    pub cancelled: u64,
}

/// The slots searches run in on the blocking pool, and their accounting.
#[derive(Debug)]
pub(crate) struct SearchSlots {
    semaphore: Arc<Semaphore>,
    slots: usize,
    peak_in_use: AtomicUsize,
    searches: AtomicU64,
    cancelled: AtomicU64,
}

impl SearchSlots {
    pub(crate) fn new(slots: usize) -> Self {
        SearchSlots {
            semaphore: Arc::new(Semaphore::new(slots)),
            slots,
            peak_in_use: AtomicUsize::new(0),
            searches: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }

    fn in_use(&self) -> usize {
        self.slots - self.semaphore.available_permits()
    }

    /// Slots one batch query may hold at once: a quarter of them, at least one.
    fn batch_share(&self) -> usize {
        (self.slots / 4).max(1)
    }

    /// Counts a search that starts now, or one skipped because `cancelled` is set; says
    /// whether to run it.
    fn start(&self, cancelled: &AtomicBool) -> bool {
        if cancelled.load(Ordering::Acquire) {
            self.cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.peak_in_use.fetch_max(self.in_use(), Ordering::Relaxed);
        true
    }
}

/// Set when the future of the request it belongs to is dropped (the request timed out, or its
/// client went away), so that blocking work queued for the request is skipped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Embeddings of several texts with their token counts.
#[derive(Clone, Debug)]
pub struct Embeddings {
    /// One vector per input, in order.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens the model read, over all inputs (after truncation to its input limit).
    pub tokens: usize,
}

impl Service {
    /// Runs one query.
    pub async fn query(&self, collection: &str, query: Query) -> ServiceResult<QueryResult> {
        let started = Instant::now();
        let coll = self.collection(collection)?;
        let vector = match &query.input {
            QueryInput::Vector(v) => v.clone(),
            QueryInput::Text(t) => {
                self.check_text_query(&coll, t)?;
                self.embed_texts(vec![t.clone()])
                    .await?
                    .pop()
                    .expect("one embedding per text")
            }
        };
        self.run_query(&coll, query, vector, started, None).await
    }

    /// How the search slots are used.
    pub fn search_stats(&self) -> SearchStats {
        let slots = &self.search_slots;
        SearchStats {
            slots: slots.slots,
            in_use: slots.in_use(),
            peak_in_use: slots.peak_in_use.load(Ordering::Relaxed),
            searches: slots.searches.load(Ordering::Relaxed),
            cancelled: slots.cancelled.load(Ordering::Relaxed),
        }
    }

    /// Runs several queries; text queries are embedded together.
    pub async fn query_batch(
        &self,
        collection: &str,
        queries: Vec<Query>,
    ) -> ServiceResult<Vec<QueryResult>> {
        let started = Instant::now();
        let coll = self.collection(collection)?;
        if queries.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no queries given"));
        }
        if queries.len() > self.settings.max_batch {
            return Err(ServiceError::invalid(
                "too_many_queries",
                format!(
                    "{} queries in one batch; the limit is {}",
                    queries.len(),
                    self.settings.max_batch
                ),
            ));
        }
        let mut texts = Vec::new();
        for q in &queries {
            if let QueryInput::Text(t) = &q.input {
                self.check_text_query(&coll, t)?;
                texts.push(t.clone());
            }
        }
        let mut embedded = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed_texts(texts).await?
        }
        .into_iter();
        // The batch's searches share a few slots, so that other requests keep the rest.
        let share = Arc::new(Semaphore::new(self.search_slots.batch_share()));
        let runs = queries.into_iter().map(|q| {
            let vector = match &q.input {
                QueryInput::Vector(v) => v.clone(),
                QueryInput::Text(_) => embedded.next().expect("one embedding per text"),
            };
            self.run_query(&coll, q, vector, started, Some(&share))
        });
        try_join_all(runs).await
    }

    /// Embeds texts for the embeddings endpoints.
    pub async fn embed(&self, texts: Vec<String>) -> ServiceResult<Embeddings> {
        if texts.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no input given"));
        }
        if texts.len() > self.settings.max_batch {
            return Err(ServiceError::invalid(
                "too_many_inputs",
                format!(
                    "{} inputs in one request; the limit is {}",
                    texts.len(),
                    self.settings.max_batch
                ),
            ));
        }
        if let Some(i) = texts.iter().position(|t| t.is_empty()) {
            return Err(ServiceError::invalid(
                "empty_input",
                format!("input {i} is an empty string"),
            ));
        }
        let embedder = self.embedder.clone();
        let counted = texts.clone();
        let limit = embedder.max_input_tokens();
        let tokens = Service::blocking(move || {
            let mut total = 0;
            for t in &counted {
                total += embedder.count_tokens(t)?.min(limit);
            }
            Ok(total)
        })
        .await?;
        let vectors = self.embed_texts(texts).await?;
        Ok(Embeddings { vectors, tokens })
    }

    fn check_text_query(&self, coll: &Collection, text: &str) -> ServiceResult<()> {
        if coll.chunker.is_none() {
            return Err(ServiceError::invalid(
                "vector_required",
                format!(
                    "collection '{}' holds vectors of dimension {}, which the embedding model \
                     does not produce; query it with \"vector\"",
                    coll.record.name, coll.dim
                ),
            ));
        }
        if text.trim().is_empty() {
            return Err(ServiceError::invalid(
                "empty_input",
                "the query text is empty",
            ));
        }
        Ok(())
    }

    /// Runs one search in a search slot; a query of a batch first takes one of the batch's
    /// `share` of slots.
    async fn run_query(
        &self,
        coll: &Arc<Collection>,
        query: Query,
        vector: Vec<f32>,
        started: Instant,
        share: Option<&Arc<Semaphore>>,
    ) -> ServiceResult<QueryResult> {
        if query.k == 0 || query.k > self.settings.max_k {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                format!("k must be between 1 and {}", self.settings.max_k),
            ));
        }
        if query.ef == Some(0) || query.nprobe == Some(0) {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                "ef and nprobe must be at least 1",
            ));
        }
        coll.check_length(&vector)?;
        let filter = match &query.filter {
            Some(Value::Null) | None => None,
            Some(f) => Some(Filter::parse(f)?),
        };
        let shutting_down = |_| ServiceError::Unavailable("the service is shutting down".into());
        let batch_permit = match share {
            Some(share) => Some(share.clone().acquire_owned().await.map_err(shutting_down)?),
            None => None,
        };
        let permit = tokio::time::timeout(
            self.settings.search_queue_timeout,
            self.search_slots.semaphore.clone().acquire_owned(),
        )
        .await
        .map_err(|_| ServiceError::Overloaded {
            what: "search",
            retry_after: std::time::Duration::from_secs(1),
        })?
        .map_err(shutting_down)?;
        // Dropped with this future, it tells the search not to start.
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let cancelled = cancel.0.clone();
        let slots = self.search_slots.clone();
        let c = coll.clone();
        let planner = self.settings.planner.clone();
        let params = SearchParams {
            ef: query.ef,
            nprobe: query.nprobe,
        };
        let (k, exact, want_meta) = (query.k, query.exact, query.include.metadata);
        let (hits, plan, metadata) = Service::blocking(move || {
            let _permits = (permit, batch_permit);
            if !slots.start(&cancelled) {
                // Nobody waits for this answer.
                return Err(ServiceError::Unavailable(
                    "the request was cancelled".into(),
                ));
            }
            let (hits, plan) = c.search(&vector, k, &params, filter.as_ref(), exact, &planner)?;
            let metadata: Vec<Option<Value>> = if want_meta {
                let st = c.state.read();
                hits.iter()
                    .map(|h| st.passage_doc.get(&h.id).map(|d| d.metadata.clone()))
                    .collect()
            } else {
                Vec::new()
            };
            Ok((hits, plan, metadata))
        })
        .await?;
        drop(cancel);
        let results = self.render(coll, &query, hits, metadata).await?;
        Ok(QueryResult {
            results,
            plan,
            // Microsecond resolution: more digits are noise, and bloat every response.
            time_ms: (started.elapsed().as_micros() as f64) / 1e3,
        })
    }

    /// Turns index hits into results: passage rows from the store, metadata from memory.
    async fn render(
        &self,
        coll: &Collection,
        query: &Query,
        hits: Vec<Hit>,
        metadata: Vec<Option<Value>>,
    ) -> ServiceResult<Vec<QueryHit>> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = hits.iter().map(|h| h.id).collect();
        let rows = self
            .store
            .get_passages(coll.record.id, &ids, query.include.vector)
            .await?;
        let mut rows: HashMap<u64, _> = rows.into_iter().map(|r| (r.id, r)).collect();
        let mut out = Vec::with_capacity(hits.len());
        for (i, hit) in hits.into_iter().enumerate() {
            // A passage deleted between the search and this read is simply left out.
            let Some(row) = rows.remove(&hit.id) else {
                continue;
            };
            out.push(QueryHit {
                id: format!("{}#{}", row.doc_id, row.index),
                passage: PassageSpan {
                    index: row.index,
                    start: row.start,
                    end: row.end,
                },
                document_id: row.doc_id,
                score: hit.score,
                distance: hit.distance(coll.metric),
                text: if query.include.text { row.text } else { None },
                metadata: if query.include.metadata {
                    Some(metadata.get(i).cloned().flatten().unwrap_or(Value::Null))
                } else {
                    None
                },
                vector: row.vector,
            });
        }
        Ok(out)
    }
}

/// Plans are reported by name in responses and logs.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Plan::Hnsw => "hnsw",
            Plan::Ivf => "ivf",
            Plan::Flat => "flat",
        })
    }
}
