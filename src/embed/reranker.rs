//! The [`Reranker`] trait (what the service needs from a cross-encoder, asynchronously) and
//! [`RerankWorker`], the production implementation.
//!
//! # Why a worker of its own
//! A cross-encoder is a second model: its own weights, its own head, so its batches cannot be
//! mixed with the sentence encoder's. [`RerankWorker`] is the embedding worker's machinery
//! (the same admission, tokenizer thread, token-budget batching, cancellation and oneshot
//! replies; see [`EmbeddingWorker`](super::EmbeddingWorker)) run over the cross-encoder, with
//! only the interactive lane: reranking is always interactive work, a caller is waiting for
//! the ranking. Its model thread runs at normal priority on the cross-encoder's own pool,
//! sized like the encoder's, so a rerank
//!
//! * never queues behind bulk embedding: upserts run on the embedding worker's bulk lane, whose
//!   threads have a lowered priority and give the CPU up to it;
//! * never waits for a query embedding, nor makes one wait for a long rerank: each has its own
//!   model thread, and the two share the CPU as equals.
//!
//! Sharing the embedding worker's interactive model thread instead would have serialised a
//! long rerank (a thousand passages take seconds on a CPU) in front of every query's
//! embedding.

use std::sync::Arc;

use super::cross_encoder::{CrossEncoder, Pair};
use super::worker::{Batcher, Lane, Pending, WorkerOptions};
use super::{EmbedError, EmbedResult, RerankScore, WorkerStats};

/// Most passages one rerank request may score: 1000, a generous top-k for a first-stage
/// retriever, and about as much as a CPU scores within a request's time budget. Larger
/// requests are refused before any work is spent on them.
pub const MAX_RERANK_TEXTS: usize = 1000;

/// Scores passages against a query with a cross-encoder.
///
/// Implementations are shared between tasks (`Send + Sync`) and must never block the async
/// runtime: the model's work belongs on threads of its own. Object-safe, so the service holds
/// an `Arc<dyn Reranker>`; see [`Embedder`](super::Embedder) for why it uses `async_trait`.
#[async_trait::async_trait]
pub trait Reranker: Send + Sync {
    /// Scores each of `texts` against `query`: one [`RerankScore`] per text, in the order
    /// given (not sorted; sort by `score` to rank). An empty list gives an empty result.
    ///
    /// Pairs longer than [`max_input_tokens`](Self::max_input_tokens) are truncated to it, the
    /// longer of query and text losing tokens first, as sentence-transformers does.
    ///
    /// # Errors
    /// [`EmbedError::InvalidInput`] for more than [`max_texts`](Self::max_texts) texts (checked
    /// before any tokenizing); [`EmbedError::Overloaded`] when the reranker cannot take more
    /// work now (retry later); other variants for a failure of the model or tokenizer.
    async fn rerank(&self, query: String, texts: Vec<String>) -> EmbedResult<Vec<RerankScore>>;

    /// The model's name, e.g. `cross-encoder/ms-marco-MiniLM-L6-v2`.
    fn model_id(&self) -> &str;

    /// Longest (query, text) pair scored whole, in the model's tokens with its special tokens
    /// included.
    fn max_input_tokens(&self) -> usize;

    /// Most texts one [`rerank`](Self::rerank) call may score.
    fn max_texts(&self) -> usize;

    /// The queue and batch statistics of a reranker that batches requests on a worker (for
    /// the server's metrics; "texts" there count pairs); `None`, the default, for one that
    /// does not.
    fn stats(&self) -> Option<WorkerStats> {
        None
    }
}

/// Settings of a [`RerankWorker`]. The defaults suit a small cross-encoder on a CPU.
#[derive(Clone, Debug)]
pub struct RerankOptions {
    /// Most pairs in one batch. Default 128, so that the token budget is what binds.
    pub max_batch_size: usize,
    /// Most tokens in one batch (the sum of its pairs' token counts; the model runs unpadded).
    /// A pair with more tokens than this still runs, alone. Default 4096: pairs are long (a
    /// query and a whole passage), and on a CPU throughput is flat from a few hundred tokens
    /// per batch up.
    pub max_batch_tokens: usize,
    /// Most pairs admitted and not yet taken into a batch, over all requests; the request
    /// that would exceed it is refused with [`EmbedError::Overloaded`] (unless nothing else
    /// waits). Default 4096: four full-size requests.
    pub queue_capacity: usize,
    /// Most texts one request may score; a larger request is refused with
    /// [`EmbedError::InvalidInput`]. Default [`MAX_RERANK_TEXTS`].
    pub max_texts: usize,
    /// Threads that tokenize requests ahead of the model thread. Default 1.
    pub tokenizer_threads: usize,
}

impl Default for RerankOptions {
    fn default() -> Self {
        RerankOptions {
            max_batch_size: 128,
            max_batch_tokens: 4096,
            queue_capacity: 4096,
            max_texts: MAX_RERANK_TEXTS,
            tokenizer_threads: 1,
        }
    }
}

/// The production [`Reranker`]: a [`CrossEncoder`] run by a model thread that batches
/// concurrent requests, fed by a tokenizer thread.
///
/// It is the [`EmbeddingWorker`](super::EmbeddingWorker)'s machinery with the interactive lane
/// only, beside the embedding worker rather than inside it: its model thread runs at normal
/// priority on the cross-encoder's own pool, so a rerank never queues behind bulk embedding
/// (whose threads have a lowered priority), and a long rerank never holds up the embedding of
/// queries, nor they it.
///
/// A request is checked against [`RerankOptions::max_texts`] and admitted or refused
/// ([`EmbedError::Overloaded`]) when it is submitted. Whenever the model thread is free it
/// fills a batch with the queued pairs, first come first served, up to
/// [`RerankOptions::max_batch_size`] pairs and [`RerankOptions::max_batch_tokens`] tokens (at
/// least one pair), runs them longest first, and answers each request once all its pairs are
/// scored, in its own order. Pairs of callers that have gone away are skipped. Dropping the
/// worker (or [`shutdown`](Self::shutdown)) finishes every queued request and joins the
/// threads, blocking until then.
pub struct RerankWorker {
    core: Batcher<CrossEncoder>,
    options: RerankOptions,
}

/// The scores of a request admitted by [`RerankWorker::submit`], once computed.
pub type PendingScores = Pending<RerankScore>;

impl std::fmt::Debug for RerankWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RerankWorker")
            .field("cross_encoder", self.core.model())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl RerankWorker {
    /// Starts the model thread and the tokenizer threads around `cross_encoder`.
    ///
    /// # Errors
    /// [`EmbedError::InvalidOptions`] for a zero in `options`; [`EmbedError::ThreadPool`] when
    /// a thread cannot be started.
    pub fn new(cross_encoder: CrossEncoder, options: RerankOptions) -> EmbedResult<Self> {
        if options.max_texts == 0 {
            return Err(EmbedError::InvalidOptions(
                "max_texts must be at least 1".into(),
            ));
        }
        let worker_options = WorkerOptions {
            max_batch_size: options.max_batch_size,
            max_batch_tokens: options.max_batch_tokens,
            queue_capacity: options.queue_capacity,
            tokenizer_threads: options.tokenizer_threads,
            // There is no bulk lane; these only pass validation.
            ..WorkerOptions::default()
        };
        Ok(RerankWorker {
            core: Batcher::start(cross_encoder, worker_options, false, "rerank")?,
            options,
        })
    }

    /// The cross-encoder the worker runs.
    pub fn cross_encoder(&self) -> &CrossEncoder {
        self.core.model()
    }

    /// The worker's settings.
    pub fn options(&self) -> &RerankOptions {
        &self.options
    }

    /// A snapshot of the queue and the batch statistics ("texts" count pairs).
    pub fn stats(&self) -> WorkerStats {
        self.core.stats()
    }

    /// Admits a request to score `texts` against `query` now, or refuses it: the returned
    /// future then only waits for the scores. This is [`Reranker::rerank`] split at the point
    /// where the request is accepted.
    ///
    /// # Errors
    /// [`EmbedError::InvalidInput`] for more than [`RerankOptions::max_texts`] texts;
    /// [`EmbedError::Overloaded`] when the queue has no room for them;
    /// [`EmbedError::WorkerStopped`] when the worker is shutting down or its model thread is
    /// gone.
    pub fn submit(&self, query: String, texts: Vec<String>) -> EmbedResult<PendingScores> {
        if texts.len() > self.options.max_texts {
            return Err(EmbedError::InvalidInput(format!(
                "{} texts to rerank; at most {} are allowed in one request",
                texts.len(),
                self.options.max_texts
            )));
        }
        let query: Arc<str> = query.into();
        let pairs: Vec<Pair> = texts
            .into_iter()
            .map(|text| (Arc::clone(&query), text))
            .collect();
        self.core.enqueue(pairs, Lane::Interactive)
    }

    /// Stops admitting requests, finishes every queued one and joins the threads. Dropping
    /// the worker does the same.
    ///
    /// This blocks until the queue is drained: call it from a blocking context, not from an
    /// async task.
    pub fn shutdown(self) {
        drop(self);
    }
}

#[async_trait::async_trait]
impl Reranker for RerankWorker {
    async fn rerank(&self, query: String, texts: Vec<String>) -> EmbedResult<Vec<RerankScore>> {
        self.submit(query, texts)?.await
    }

    fn model_id(&self) -> &str {
        self.cross_encoder().model_id()
    }

    fn max_input_tokens(&self) -> usize {
        self.cross_encoder().max_length()
    }

    fn max_texts(&self) -> usize {
        self.options.max_texts
    }

    fn stats(&self) -> Option<WorkerStats> {
        Some(RerankWorker::stats(self))
    }
}
