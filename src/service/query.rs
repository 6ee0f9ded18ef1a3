//! Query use cases: k-nearest-neighbour search over a collection, alone or in batches, and raw
//! embeddings for the OpenAI- and TEI-shaped endpoints.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use futures_util::future::try_join_all;
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::index::hnsw::MAX_OVERSAMPLING;
use crate::index::{Hit, SearchParams, validate};
use crate::store::PassageRecord;

use super::Service;
use super::collection::Collection;
use super::diversify::{self, Grouping, Mmr};
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;
use super::fusion::{self, Fusion};
use super::limits::Limit;
use super::types::{Leg, PassageSpan, Plan, Query, QueryHit, QueryInput, QueryResult, SearchMode};

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
    /// Runs one query. It is checked whole before its text is embedded.
    pub async fn query(&self, collection: &str, query: Query) -> ServiceResult<QueryResult> {
        self.query_at(collection, query, None).await
    }

    /// As [`query`](Self::query), answered once this node has applied version `min_version`
    /// of the collection (if given), waiting up to the consistency timeout for it, then failing
    /// with [`ServiceError::VersionNotReached`].
    pub async fn query_at(
        &self,
        collection: &str,
        query: Query,
        min_version: Option<u64>,
    ) -> ServiceResult<QueryResult> {
        let started = Instant::now();
        let coll = self.collection_synced(collection).await?;
        let checked = self.check_query(&coll, &query)?;
        let coll = match min_version {
            Some(wanted) => self.collection_at(collection, wanted).await?,
            None => coll,
        };
        let mode = checked.1;
        let vector = match &query.input {
            QueryInput::Vector(v) => Some(v.clone()),
            QueryInput::Text(t) if needs_vector(mode, &query) => Some(
                self.embed_texts(vec![t.clone()])
                    .await?
                    .pop()
                    .expect("one embedding per text"),
            ),
            QueryInput::Text(_) => None,
        };
        self.run_query(&coll, query, checked, vector, started, None)
            .await
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

    /// Runs several queries; text queries are embedded together. Every query is checked
    /// before any text is embedded.
    pub async fn query_batch(
        &self,
        collection: &str,
        queries: Vec<Query>,
    ) -> ServiceResult<Vec<QueryResult>> {
        self.query_batch_at(collection, queries, None).await
    }

    /// As [`query_batch`](Self::query_batch), answered once this node has applied version
    /// `min_version` of the collection (see [`query_at`](Self::query_at)).
    pub async fn query_batch_at(
        &self,
        collection: &str,
        queries: Vec<Query>,
        min_version: Option<u64>,
    ) -> ServiceResult<Vec<QueryResult>> {
        let started = Instant::now();
        let coll = self.collection_synced(collection).await?;
        let limits = &self.settings.limits;
        if queries.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no queries given"));
        }
        Limit::Batch.check(
            "the number of queries in the batch",
            queries.len(),
            limits.max_batch,
        )?;
        let total_k = queries
            .iter()
            .map(|q| q.k)
            .fold(0usize, usize::saturating_add);
        Limit::BatchK.check(
            "the sum of k over the batch's queries",
            total_k,
            limits.max_batch_k,
        )?;
        let filters = queries
            .iter()
            .enumerate()
            .map(|(i, q)| {
                self.check_query(&coll, q)
                    .map_err(|e| e.in_context(&format!("query {i}")))
            })
            .collect::<ServiceResult<Vec<_>>>()?;
        let coll = match min_version {
            Some(wanted) => self.collection_at(collection, wanted).await?,
            None => coll,
        };
        let texts: Vec<String> = queries
            .iter()
            .zip(&filters)
            .filter_map(|(q, (_, mode))| match &q.input {
                QueryInput::Text(t) if needs_vector(*mode, q) => Some(t.clone()),
                _ => None,
            })
            .collect();
        let mut embedded = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed_texts(texts).await?
        }
        .into_iter();
        // The batch's searches share a few slots, so that other requests keep the rest.
        let share = Arc::new(Semaphore::new(self.search_slots.batch_share()));
        let runs = queries.into_iter().zip(filters).map(|(q, checked)| {
            let mode = checked.1;
            let vector = match &q.input {
                QueryInput::Vector(v) => Some(v.clone()),
                QueryInput::Text(_) if needs_vector(mode, &q) => {
                    Some(embedded.next().expect("one embedding per text"))
                }
                QueryInput::Text(_) => None,
            };
            self.run_query(&coll, q, checked, vector, started, Some(&share))
        });
        try_join_all(runs).await
    }

    /// Embeds texts for the embeddings endpoints. `field` names the request's input field in
    /// errors. Unless `truncate`, an input longer than the model reads is refused with
    /// `input_too_long` (as OpenAI and TEI do) rather than silently cut.
    pub async fn embed(
        &self,
        texts: Vec<String>,
        field: &str,
        truncate: bool,
    ) -> ServiceResult<Embeddings> {
        if texts.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no input given"));
        }
        let limits = &self.settings.limits;
        Limit::Batch.check(
            "the number of inputs in the request",
            texts.len(),
            limits.max_batch,
        )?;
        for (i, t) in texts.iter().enumerate() {
            if t.is_empty() {
                return Err(ServiceError::invalid(
                    "empty_input",
                    format!("{field}[{i}] is an empty string"),
                ));
            }
            limits.check_text(&format!("{field}[{i}]"), t)?;
        }
        let embedder = self.embedder.clone();
        let counted = texts.clone();
        let limit = embedder.max_input_tokens();
        // Tokenizing is CPU work: off the async workers. Each text is tokenized once, both to
        // refuse one that is too long and to report the tokens read.
        let counts = Service::blocking(move || {
            counted
                .iter()
                .map(|t| Ok(embedder.count_tokens(t)?))
                .collect::<ServiceResult<Vec<usize>>>()
        })
        .await?;
        if !truncate && let Some((i, &n)) = counts.iter().enumerate().find(|(_, n)| **n > limit) {
            return Err(ServiceError::invalid(
                "input_too_long",
                format!(
                    "{field}[{i}] has {n} tokens; the model reads at most {limit}: split it, or \
                     ask for truncation (\"truncate\": true on /embed, or the server's \
                     --auto-truncate)"
                ),
            ));
        }
        let tokens = counts.iter().map(|&n| n.min(limit)).sum();
        let vectors = self.embed_texts(texts).await?;
        Ok(Embeddings { vectors, tokens })
    }

    /// Checks everything about a query that can be checked before its text is embedded:
    /// the input, `k`, the mode, the search parameters and the filter. Returns the filter,
    /// parsed, and the mode the query runs in.
    fn check_query(
        &self,
        coll: &Collection,
        query: &Query,
    ) -> ServiceResult<(Option<Filter>, SearchMode)> {
        let limits = &self.settings.limits;
        let is_text = matches!(query.input, QueryInput::Text(_));
        let mode = query
            .mode
            .unwrap_or_else(|| SearchMode::default_for(is_text, coll.lexical.is_some()));
        if mode != SearchMode::Dense {
            if !is_text {
                return Err(ServiceError::invalid(
                    "text_required",
                    "lexical and hybrid queries search the passages' text: give \"query\" \
                     (text), or use \"mode\": \"dense\" with a vector",
                ));
            }
            coll.lexical()?;
        }
        check_hybrid(query, mode, limits)?;
        match &query.input {
            QueryInput::Text(text) => {
                if coll.chunker.is_none() {
                    return Err(ServiceError::invalid(
                        "vector_required",
                        format!(
                            "collection '{}' holds vectors of dimension {}, which the embedding \
                             model does not produce; query it with \"vector\"",
                            coll.record.name, coll.dim
                        ),
                    ));
                }
                limits.check_text("the query text", text)?;
                if text.trim().is_empty() {
                    return Err(ServiceError::invalid(
                        "empty_input",
                        "the query text is empty",
                    ));
                }
            }
            QueryInput::Vector(v) => {
                validate::prepare_query(coll.metric, coll.dim, v, query.k.max(1))?;
                coll.check_length(v)?;
            }
        }
        if query.k == 0 {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                "k must be at least 1",
            ));
        }
        Limit::K.check("k", query.k, limits.max_k)?;
        if query.ef == Some(0) || query.nprobe == Some(0) {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                "ef and nprobe must be at least 1",
            ));
        }
        if let Some(ef) = query.ef {
            Limit::Ef.check("ef", ef, limits.max_ef)?;
        }
        if let Some(nprobe) = query.nprobe {
            Limit::Nprobe.check("nprobe", nprobe, limits.max_nprobe)?;
        }
        if let Some(o) = query.oversampling
            && !(1.0..=MAX_OVERSAMPLING).contains(&o)
        {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                format!("oversampling must be between 1 and {MAX_OVERSAMPLING}, got {o}"),
            ));
        }
        check_shaping(query, limits)?;
        if let Some(r) = &query.rerank {
            if !is_text {
                return Err(ServiceError::invalid(
                    "text_required",
                    "reranking reads the query's text: give \"query\" (text)",
                ));
            }
            self.reranker()?;
            if query.mmr.is_some() || query.group.is_some() {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    "rerank cannot be combined with mmr or group_by in one query",
                ));
            }
            if r.top_n < query.k {
                return Err(ServiceError::invalid(
                    "invalid_parameter",
                    format!(
                        "rerank.top_n ({}) must be at least k ({})",
                        r.top_n, query.k
                    ),
                ));
            }
            Limit::K.check("rerank.top_n", r.top_n, self.max_rerank())?;
        }
        let filter = match &query.filter {
            Some(Value::Null) | None => None,
            Some(f) => Some(Filter::parse_with(f, limits)?),
        };
        Ok((filter, mode))
    }

    /// Runs one checked query's search in a search slot; a query of a batch first takes one
    /// of the batch's `share` of slots.
    async fn run_query(
        &self,
        coll: &Arc<Collection>,
        query: Query,
        (filter, mode): (Option<Filter>, SearchMode),
        vector: Option<Vec<f32>>,
        started: Instant,
        share: Option<&Arc<Semaphore>>,
    ) -> ServiceResult<QueryResult> {
        // A text query's vector comes from the model: its length is checked here, the rest
        // was checked before embedding.
        if let Some(v) = &vector {
            coll.check_length(v)?;
        }
        // Read before the search: it sees at least every write up to this version.
        let version = coll.applied();
        let text = match &query.input {
            QueryInput::Text(t) => Some(t.clone()),
            QueryInput::Vector(_) => None,
        };
        let hybrid = query.hybrid;
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
            oversampling: query.oversampling,
        };
        let (k, exact, want_meta) = (query.k, query.exact, query.include.metadata);
        // A reranked query searches for the passages the cross-encoder is to judge.
        let fetch = query.rerank.map_or(k, |r| r.top_n.max(k));
        let shape = Shape {
            mmr: query.mmr,
            group: query.group,
            max_fetch: self.settings.limits.max_k.saturating_mul(GROUP_FETCH_LIMIT),
        };
        let (hits, plan, legs, metadata) = Service::blocking(move || {
            let _permits = (permit, batch_permit);
            if !slots.start(&cancelled) {
                // Nobody waits for this answer.
                return Err(ServiceError::Unavailable(
                    "the request was cancelled".into(),
                ));
            }
            let vector = vector.as_deref().unwrap_or_default();
            let text = text.as_deref().unwrap_or_default();
            let filter = filter.as_ref();
            // The legs of the last search a hybrid query ran (a grouped query may run several).
            let legs = std::cell::RefCell::new(Vec::new());
            let dense = |n: usize| c.search(vector, n, &params, filter, exact, &planner);
            let search = |n: usize| -> ServiceResult<(Vec<Hit>, Plan)> {
                match mode {
                    SearchMode::Dense => dense(n),
                    SearchMode::Lexical => Ok((c.lexical_search(text, n, filter)?, Plan::Lexical)),
                    SearchMode::Hybrid => {
                        let m = hybrid.candidates_for(n);
                        let t = Instant::now();
                        let (dense_hits, dense_plan) = dense(m)?;
                        let dense_ms = elapsed_ms(t);
                        let t = Instant::now();
                        let lexical_hits = c.lexical_search(text, m, filter)?;
                        let lexical_ms = elapsed_ms(t);
                        *legs.borrow_mut() = vec![
                            Leg {
                                leg: SearchMode::Dense,
                                plan: dense_plan,
                                candidates: dense_hits.len(),
                                time_ms: dense_ms,
                            },
                            Leg {
                                leg: SearchMode::Lexical,
                                plan: Plan::Lexical,
                                candidates: lexical_hits.len(),
                                time_ms: lexical_ms,
                            },
                        ];
                        let mut fused =
                            fusion::fuse(&dense_hits, &lexical_hits, hybrid.fusion, hybrid.alpha);
                        fused.truncate(n);
                        Ok((fused, Plan::Hybrid))
                    }
                }
            };
            let (hits, plan) = shape.search(&c, vector, fetch, search)?;
            let metadata: Vec<Option<Value>> = if want_meta {
                c.metadata_of(&hits)
            } else {
                Vec::new()
            };
            Ok((hits, plan, legs.into_inner(), metadata))
        })
        .await?;
        drop(cancel);
        let mut results = self
            .render(coll, &query, mode == SearchMode::Dense, hits, metadata)
            .await?;
        if query.rerank.is_some() {
            let QueryInput::Text(text) = &query.input else {
                unreachable!("a reranked query is a text query: check_query says so");
            };
            results = self.rerank_hits(text, results, k).await?;
            if !query.include.text {
                results.iter_mut().for_each(|h| h.text = None);
            }
        }
        Ok(QueryResult {
            results,
            plan,
            legs,
            // Microsecond resolution: more digits are noise, and bloat every response.
            time_ms: (started.elapsed().as_micros() as f64) / 1e3,
            version,
        })
    }

    /// Turns index hits into results: where each passage is and its document's metadata from
    /// memory; the text and the vector, when asked for, from the store (through its passage
    /// cache). A hit that needs neither is rendered without the store, so such queries keep
    /// being answered while the database is unreachable.
    async fn render(
        &self,
        coll: &Collection,
        query: &Query,
        metric_scores: bool,
        hits: Vec<Hit>,
        metadata: Vec<Option<Value>>,
    ) -> ServiceResult<Vec<QueryHit>> {
        if hits.is_empty() {
            return Ok(Vec::new());
        }
        let ids = hit_ids(&hits);
        let located = coll.locate(&ids);
        // A reranked query reads every hit's text, returned or not. A document given as a
        // vector keeps its text (if it came with one) as its one passage's text, in vector
        // collections too.
        let wants_text = query.include.text || query.rerank.is_some();
        let mut rows: HashMap<u64, PassageRecord> = HashMap::new();
        if wants_text || query.include.vector {
            let present: Vec<u64> = ids
                .iter()
                .zip(&located)
                .filter(|(_, l)| l.is_some())
                .map(|(id, _)| *id)
                .collect();
            rows = self
                .store
                .get_passages(coll.record.id, &present, query.include.vector)
                .await?
                .into_iter()
                .map(|r| (r.id, r))
                .collect();
        }
        let mut out = Vec::with_capacity(hits.len());
        for (i, (hit, place)) in hits.into_iter().zip(located).enumerate() {
            // A passage deleted since the search is simply left out.
            let Some(place) = place else { continue };
            let (text, vector) = if wants_text || query.include.vector {
                let Some(row) = rows.remove(&hit.id) else {
                    continue;
                };
                (row.text.filter(|_| wants_text), row.vector)
            } else {
                (None, None)
            };
            out.push(QueryHit {
                id: format!("{}#{}", place.doc_id, place.index),
                passage: PassageSpan {
                    index: place.index,
                    start: place.span.start,
                    end: place.span.end,
                },
                document_id: place.doc_id,
                score: hit.score,
                distance: metric_scores.then(|| hit.distance(coll.metric)),
                rerank_score: None,
                text,
                metadata: if query.include.metadata {
                    Some(metadata.get(i).cloned().flatten().unwrap_or(Value::Null))
                } else {
                    None
                },
                vector,
            });
        }
        Ok(out)
    }
}

/// Whether a query needs its text embedded: every mode but lexical does, and MMR, which
/// compares vectors, in any mode.
fn needs_vector(mode: SearchMode, query: &Query) -> bool {
    mode != SearchMode::Lexical || query.mmr.is_some()
}

fn elapsed_ms(since: Instant) -> f64 {
    since.elapsed().as_micros() as f64 / 1e3
}

/// Largest rank constant of reciprocal rank fusion: far beyond it every rank scores the same.
const MAX_RRF_K: f32 = 1e6;

/// Checks a query's fusion settings: they apply to hybrid queries only.
fn check_hybrid(query: &Query, mode: SearchMode, limits: &super::Limits) -> ServiceResult<()> {
    let invalid = |message: String| Err(ServiceError::invalid("invalid_parameter", message));
    let h = &query.hybrid;
    if mode != SearchMode::Hybrid {
        if *h != fusion::Hybrid::default() {
            return invalid(format!(
                "fusion, rrf_k, alpha and candidates apply to hybrid queries; this one runs in \
                 {} mode",
                match mode {
                    SearchMode::Dense => "dense",
                    SearchMode::Lexical => "lexical",
                    SearchMode::Hybrid => "hybrid",
                }
            ));
        }
        return Ok(());
    }
    if !(0.0..=1.0).contains(&h.alpha) {
        return invalid(format!("alpha must be between 0 and 1, got {}", h.alpha));
    }
    if let Fusion::Rrf { k } = h.fusion
        && !(k > 0.0 && k <= MAX_RRF_K)
    {
        return invalid(format!(
            "rrf_k must be above 0 and at most {MAX_RRF_K}, got {k}"
        ));
    }
    if let Some(n) = h.candidates {
        if n == 0 {
            return invalid("candidates must be at least 1".into());
        }
        Limit::K.check("candidates", n, limits.max_k)?;
    }
    Ok(())
}

/// How many times `max_k` candidates a grouped query may search for, at most, to find its
/// `k` documents.
const GROUP_FETCH_LIMIT: usize = 4;

/// Checks a query's MMR and grouping settings.
fn check_shaping(query: &Query, limits: &super::Limits) -> ServiceResult<()> {
    let invalid = |message: String| Err(ServiceError::invalid("invalid_parameter", message));
    if query.mmr.is_some() && query.group.is_some() {
        return invalid("mmr and group_by cannot be combined in one query".into());
    }
    if let Some(mmr) = &query.mmr {
        if !(0.0..=1.0).contains(&mmr.lambda) {
            return invalid(format!(
                "mmr.lambda must be between 0 and 1, got {}",
                mmr.lambda
            ));
        }
        if mmr.fetch_k < query.k {
            return invalid(format!(
                "mmr.fetch_k ({}) must be at least k ({})",
                mmr.fetch_k, query.k
            ));
        }
        Limit::K.check("mmr.fetch_k", mmr.fetch_k, limits.max_k)?;
    }
    if let Some(group) = &query.group {
        if group.group_size == 0 {
            return invalid("group_size must be at least 1".into());
        }
        Limit::K.check(
            "k × group_size",
            query.k.saturating_mul(group.group_size),
            limits.max_k,
        )?;
    }
    Ok(())
}

/// How a query's hits are chosen from the search's candidates.
struct Shape {
    mmr: Option<Mmr>,
    group: Option<Grouping>,
    /// Most candidates a grouped query searches for.
    max_fetch: usize,
}

impl Shape {
    /// Runs `search` (which takes a number of candidates) as often as the shape needs and
    /// picks the query's hits from what it returns. CPU-bound: on a blocking thread.
    fn search(
        &self,
        coll: &Collection,
        query: &[f32],
        k: usize,
        search: impl Fn(usize) -> ServiceResult<(Vec<Hit>, Plan)>,
    ) -> ServiceResult<(Vec<Hit>, Plan)> {
        if let Some(mmr) = self.mmr {
            let (mut hits, plan) = search(mmr.fetch_k)?;
            let (kept, values) = coll.vectors_for(&hit_ids(&hits));
            // Passages deleted since the search have no vector and drop out; the others keep
            // their order.
            let mut kept = kept.into_iter().peekable();
            hits.retain(|h| kept.next_if_eq(&h.id).is_some());
            let rows: Vec<&[f32]> = values.chunks_exact(coll.dim).collect();
            let order = diversify::mmr_order(query, &rows, k, mmr.lambda);
            return Ok((order.into_iter().map(|i| hits[i]).collect(), plan));
        }
        let Some(group) = self.group else {
            return search(k);
        };
        // Enough candidates for k full groups, four times over; more while documents are
        // missing and the search may have left some out.
        let mut fetch = k
            .saturating_mul(group.group_size)
            .saturating_mul(4)
            .clamp(k, self.max_fetch.max(k));
        loop {
            let (hits, plan) = search(fetch)?;
            let exhausted = hits.len() < fetch || fetch >= self.max_fetch;
            let ids = hit_ids(&hits);
            let keys = coll.document_keys(&ids);
            let docs: HashMap<u64, usize> = ids
                .into_iter()
                .zip(keys)
                .filter_map(|(id, d)| d.map(|d| (id, d)))
                .collect();
            let (grouped, full) =
                diversify::group_hits(hits, k, group, |id| docs.get(&id).copied());
            if full || exhausted {
                return Ok((grouped, plan));
            }
            fetch = fetch.saturating_mul(4).min(self.max_fetch);
        }
    }
}

fn hit_ids(hits: &[Hit]) -> Vec<u64> {
    hits.iter().map(|h| h.id).collect()
}

/// Plans are reported by name in responses and logs.
impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Plan::Hnsw => "hnsw",
            Plan::Ivf => "ivf",
            Plan::Flat => "flat",
            Plan::Lexical => "lexical",
            Plan::Hybrid => "hybrid",
        })
    }
}
