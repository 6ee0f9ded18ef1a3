//! [`EmbeddingWorker`]: the production [`Embedder`]. It owns a [`SentenceEncoder`], runs it on
//! dedicated threads, and coalesces concurrent requests into batches.
//!
//! # Pipeline
//!
//! ```text
//! embed(texts) ──admission──▶ tokenizer ─▶ interactive lane ─▶ embed-model thread ─▶ reply
//! embed_bulk(texts) ─admission, ─▶ thread(s) ─▶ bulk lane ──▶ embed-bulk thread ──▶ reply
//!                    in chunks                                 (lowered priority)
//! ```
//!
//! * **Two lanes, two model threads.** [`Embedder::embed`] (query texts, the embeddings
//!   endpoints) feeds the *interactive* lane; [`Embedder::embed_bulk`] (document passages of an
//!   upsert) feeds the *bulk* lane. Each lane has a model thread of its own, and the bulk one
//!   runs the encoder on a thread pool of its own whose threads run at a lowered scheduling
//!   priority ([`crate::priority`]). So a query never waits for a bulk batch to finish, however
//!   long the batch or the backlog behind it: its batch starts at once and takes the CPU from
//!   the bulk threads while it runs.
//! * **Bulk keeps a minimum share.** The bulk threads' priority follows
//!   [`WorkerOptions::bulk_min_share`]: under query load that keeps every CPU busy, the
//!   kernel's scheduler still gives them about that share of the CPU, so upserts progress
//!   rather than stall (and time out); when queries leave the CPU idle, bulk work takes all of
//!   it.
//! * **Admission** happens synchronously: [`EmbeddingWorker::submit`] counts the interactive
//!   texts admitted but not yet taken into a batch and refuses a request that would take that
//!   count above [`WorkerOptions::queue_capacity`] with [`EmbedError::Overloaded`], at once and
//!   before any work is spent on it. A bulk request is admitted whole against
//!   [`WorkerOptions::max_bulk_queue`] (texts of bulk requests admitted and not yet embedded),
//!   or refused with [`EmbedError::BulkOverloaded`]; once admitted it enters the bulk lane in
//!   chunks of [`WorkerOptions::bulk_chunk`] texts, at most two at a time, so that its
//!   tokenized texts take bounded memory, concurrent bulk requests take turns chunk by chunk,
//!   and a bulk request larger than any queue is still admitted (it is refused only when other
//!   bulk work fills the backlog, never for its own size).
//! * **Tokenization** runs on threads of its own (`embed-tokenize-{i}`), so that the next
//!   requests are tokenized while the model runs the current batches, and so that the token
//!   counts the batchers budget with are known when a request reaches its lane. Interactive
//!   requests are tokenized first; a bulk chunk being tokenized gives way to them between texts.
//! * **Batching** runs on each model thread whenever it is free: it takes texts of its lane
//!   first come, first served, until the batch holds [`WorkerOptions::max_batch_size`] texts or
//!   the next text would take it past [`WorkerOptions::max_batch_tokens`]. A batch always takes
//!   at least one text, so a text longer than the token budget runs alone rather than being
//!   refused; a request with more texts than fit is spread over consecutive batches. Requests
//!   whose caller has gone away (the future was dropped) are skipped.
//! * **The batch** is sorted longest first before the forward pass. The encoder runs sequences
//!   unpadded, so sorting cannot cut padding; it keeps sequences of similar length in the same
//!   internal pass and lets the per-sequence attention work, scheduled longest first, balance
//!   over the encoder's threads. The lanes themselves are not sorted by length: with no padding
//!   to save, that would only let short texts overtake long ones indefinitely.
//! * **Replies** go back over oneshot channels, each request's vectors in its own order, when
//!   its last text has been embedded.
//!
//! The machinery is generic over the model it runs ([`BatchModel`]: one input → one token
//! sequence, a batch of sequences → one output each): [`EmbeddingWorker`] runs it over the
//! sentence encoder with both lanes, [`RerankWorker`](super::RerankWorker) over a cross-encoder
//! with the interactive lane alone (a rerank always has a caller waiting).
//!
//! Dropping the worker (or [`EmbeddingWorker::shutdown`]) stops admission, finishes every
//! admitted request (a bulk request: the chunks already in its lane; the next chunk is refused
//! with [`EmbedError::WorkerStopped`]) and joins the threads; it blocks until then, so drop the
//! last handle outside the async runtime's worker threads (or accept the wait at shutdown).

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rayon::ThreadPool;
use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use super::precision::Kernel;
use super::{EmbedError, EmbedResult, Embedder, Encoded, SentenceEncoder};

/// A model a worker runs: it turns each input of a request into one token sequence, and a
/// batch of sequences into one output each. The sentence encoder (a text to a vector) and the
/// cross-encoder (a query–passage pair to a relevance score) both run on the same transformer
/// forward pass, so one worker design serves both.
pub(crate) trait BatchModel: Send + Sync + 'static {
    /// One item of a request: a text to embed, a pair to score.
    type Input: Send + 'static;
    /// What the model makes of one input. `Default` only fills the slots of a request's
    /// results before its batches come back.
    type Output: Default + Send + 'static;
    /// What the model is called in error messages and logs.
    const NAME: &'static str;

    /// Tokenizes one input (truncated to the model's limit).
    fn tokenize(&self, input: &Self::Input) -> EmbedResult<Encoded>;

    /// Runs a batch on `pool` (the model's own when `None`): one output per sequence, in order.
    fn run(&self, pool: Option<&ThreadPool>, batch: &[Encoded]) -> EmbedResult<Vec<Self::Output>>;

    /// Threads of the model's own pool (a lane with a pool of its own gets as many).
    fn threads(&self) -> usize;
}

impl BatchModel for SentenceEncoder {
    type Input = String;
    type Output = Vec<f32>;
    const NAME: &'static str = "encoder";

    fn tokenize(&self, text: &String) -> EmbedResult<Encoded> {
        let mut encoded = SentenceEncoder::tokenize(self, &[text.as_str()])?;
        encoded
            .pop()
            .ok_or_else(|| EmbedError::Tokenizer("the tokenizer returned nothing".into()))
    }

    fn run(&self, pool: Option<&ThreadPool>, batch: &[Encoded]) -> EmbedResult<Vec<Vec<f32>>> {
        match pool {
            Some(pool) => self.embed_encoded_on(pool, batch),
            None => self.embed_encoded(batch),
        }
    }

    fn threads(&self) -> usize {
        SentenceEncoder::threads(self)
    }
}

/// What a request's caller receives.
type Reply<O> = EmbedResult<Vec<O>>;

/// Chunks of one bulk request in its lane at once: one being embedded while the next is
/// tokenized and waits, so that the model never waits for a bulk caller to send more.
const BULK_CHUNKS_IN_FLIGHT: usize = 2;

/// Settings of an [`EmbeddingWorker`]. The defaults suit a small sentence encoder on a CPU.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Most texts in one batch. Default 128, so that for short texts the token budget is
    /// what binds.
    pub max_batch_size: usize,
    /// Most tokens in one batch: the sum of its texts' token counts, special tokens included
    /// (the encoder runs unpadded, so these are all real tokens). A text with more tokens than
    /// this still runs, alone. Default 2048: on a CPU, throughput is flat from about 1000
    /// tokens per batch up, while every extra token lengthens the wait of requests that arrive
    /// during the batch.
    pub max_batch_tokens: usize,
    /// Most texts of interactive requests ([`Embedder::embed`]: queries, the embeddings
    /// endpoints) admitted but not yet taken into a batch (being tokenized or queued); the
    /// request that would exceed it is refused with [`EmbedError::Overloaded`]. A request with
    /// more texts than the whole capacity is admitted only when no other interactive text is
    /// waiting, so it is delayed, never refused forever. Bulk work does not count here.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Most texts of bulk requests ([`Embedder::embed_bulk`]: the passages of upserts) admitted
    /// and not yet embedded, over all of them (the ingest backlog). A bulk request that would
    /// take the backlog past it is refused with [`EmbedError::BulkOverloaded`], unless the
    /// backlog is empty: a single request larger than this is admitted alone rather than
    /// refused for its size. The texts themselves are already in the callers' memory; what
    /// this bounds is how long an admitted upsert can wait behind others (at a few hundred
    /// passages per second on a CPU, the default is minutes of work). Default 65 536.
    pub max_bulk_queue: usize,
    /// Texts of a bulk request that enter the bulk lane (are tokenized and queued) at a time;
    /// a request has at most two such chunks in the lane, so concurrent upserts take turns
    /// chunk by chunk and the tokenized texts waiting are bounded. Default 256.
    pub bulk_chunk: usize,
    /// Share of the CPU the bulk lane's threads keep while queries keep the CPU busy, between
    /// 0 and 1: it sets their nice value ([`crate::priority::nice_for_share`]), so that upserts
    /// progress at about this share rather than stopping (and timing out) under saturating
    /// query load. 0.5 and above give bulk work the same priority as queries; 0 the lowest
    /// (about 1.5 %). Where threads have no priority of their own (outside Linux), bulk and
    /// interactive batches share the CPU equally whatever this is. Default 0.1.
    pub bulk_min_share: f64,
    /// Threads that tokenize requests ahead of the model threads. Default 1: tokenizing costs
    /// about 1 % of embedding.
    pub tokenizer_threads: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            max_batch_size: 128,
            max_batch_tokens: 2048,
            queue_capacity: 4096,
            max_bulk_queue: 65_536,
            bulk_chunk: 256,
            bulk_min_share: 0.1,
            tokenizer_threads: 1,
        }
    }
}

/// Counts of batches by size, in power-of-two buckets: bucket `i` counts the batches whose
/// value `v` satisfies `2^(i-1) < v ≤ 2^i` (bucket 0: `v ≤ 1`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchHistogram {
    counts: Vec<u64>,
    sum: u64,
}

impl BatchHistogram {
    pub(crate) fn record(&mut self, value: usize) {
        let bucket = value.max(1).next_power_of_two().trailing_zeros() as usize;
        if self.counts.len() <= bucket {
            self.counts.resize(bucket + 1, 0);
        }
        self.counts[bucket] += 1;
        self.sum += value as u64;
    }

    /// `(upper bound, count)` for every bucket up to the largest value recorded.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, &count)| (1u64 << i, count))
    }

    /// Number of batches recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of the values recorded.
    pub fn sum(&self) -> u64 {
        self.sum
    }
}

/// A snapshot of an [`EmbeddingWorker`]'s lanes and of the batches it has run. Counters are
/// totals since the worker started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Interactive texts admitted and not yet taken into a batch (being tokenized or queued):
    /// what [`WorkerOptions::queue_capacity`] bounds.
    pub queued_texts: usize,
    /// Interactive requests with texts not yet taken into a batch.
    pub queued_requests: usize,
    /// Bulk texts in the bulk lane (their chunk is being tokenized or queued) and not yet taken
    /// into a batch.
    pub bulk_queued_texts: usize,
    /// Texts of bulk requests admitted and not yet embedded, in the lane or waiting for their
    /// chunk to enter it: what [`WorkerOptions::max_bulk_queue`] bounds.
    pub bulk_backlog: usize,
    /// Texts in the batches the model threads are running now, both lanes (0 when idle).
    pub running_texts: usize,
    /// Batches run.
    pub batches: u64,
    /// Texts embedded, both lanes.
    pub texts: u64,
    /// Texts embedded from the bulk lane.
    pub bulk_texts: u64,
    /// Tokens embedded.
    pub tokens: u64,
    /// Requests refused with [`EmbedError::Overloaded`] or [`EmbedError::BulkOverloaded`].
    pub rejected_requests: u64,
    /// Texts skipped because their caller had gone away.
    pub cancelled_texts: u64,
    /// Batches the model failed on (their requests got [`EmbedError::Inference`]).
    pub failed_batches: u64,
    /// Time the model threads spent running batches, both lanes added up.
    pub busy: Duration,
    /// Texts per batch.
    pub batch_texts: BatchHistogram,
    /// Tokens per batch.
    pub batch_tokens: BatchHistogram,
    /// For each interactive request, the interactive batches that started from the moment it
    /// was queued (tokenized) to the one that took its last text, that one included: 1 when it
    /// went into the next batch. Bulk batches never count: they run on a thread of their own.
    pub interactive_waits: BatchHistogram,
}

/// The two queues, each with a model thread of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Texts a caller waits for interactively: queries, the embeddings endpoints.
    Interactive = 0,
    /// Document passages of upserts.
    Bulk = 1,
}

/// A request on its way through the worker: tokenized texts, how far batching has got, and
/// the results so far.
struct Request<O> {
    seqs: Vec<Encoded>,
    /// Texts already handed to a batch: a prefix of `seqs`.
    taken: usize,
    /// Texts embedded so far.
    done: usize,
    outputs: Vec<O>,
    reply: oneshot::Sender<Reply<O>>,
    /// Batches of its lane started before the request reached the lane.
    queued_at: u64,
}

/// Work for a tokenizer thread.
struct TokenizeJob<M: BatchModel> {
    inputs: Vec<M::Input>,
    reply: oneshot::Sender<Reply<M::Output>>,
    lane: Lane,
}

/// State shared by the caller side, the tokenizer threads and the model threads.
struct State<M: BatchModel> {
    /// Requests admitted and waiting for a tokenizer thread, by lane.
    jobs: [VecDeque<TokenizeJob<M>>; 2],
    /// Tokenized requests waiting for their lane's model thread.
    lanes: [VecDeque<Request<M::Output>>; 2],
    /// Requests admitted and not yet pushed to a lane.
    tokenizing: usize,
    /// Batches each lane's model thread has started.
    batches_started: [u64; 2],
    /// No new requests are admitted; the threads finish what they have and exit.
    closing: bool,
    /// The lane's model thread has exited; nothing of that lane will be answered any more.
    stopped: [bool; 2],
    stats: WorkerStats,
}

struct Shared<M: BatchModel> {
    state: Mutex<State<M>>,
    /// Signals the model threads: work was queued, or the worker is closing.
    work: Condvar,
    /// Signals the tokenizer threads: a job was admitted, or the worker is closing.
    jobs: Condvar,
    /// Interactive jobs waiting for a tokenizer thread; read without the lock by a thread
    /// tokenizing a bulk chunk, to give way between its texts.
    interactive_jobs: AtomicUsize,
    options: WorkerOptions,
}

impl<M: BatchModel> Shared<M> {
    fn lock(&self) -> MutexGuard<'_, State<M>> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The production [`Embedder`]: a [`SentenceEncoder`] run by two model threads that batch
/// concurrent requests, one per lane, fed by tokenizer threads.
///
/// An interactive request ([`Embedder::embed`], [`submit`](Self::submit)) is admitted or
/// refused ([`EmbedError::Overloaded`]) when it is submitted; a bulk request
/// ([`Embedder::embed_bulk`]) is admitted against the ingest backlog
/// ([`EmbedError::BulkOverloaded`]) and then enters its lane in chunks. Whenever a lane's
/// model thread is free it fills a batch from its lane, up to
/// [`WorkerOptions::max_batch_size`] texts and [`WorkerOptions::max_batch_tokens`] tokens (at
/// least one text, however long); runs them longest first, and answers each request once all
/// its texts are done, in its own order. The bulk lane runs on threads of lowered priority
/// ([`WorkerOptions::bulk_min_share`]), so queries never wait for bulk work. Texts of callers
/// that have gone away are skipped. Dropping the worker (or [`shutdown`](Self::shutdown)) finishes every queued
/// request and joins the threads, blocking until then.
///
/// Its futures need no particular async runtime (they wait on oneshot channels), and the
/// worker never runs model or tokenizer work on the caller's thread.
pub struct EmbeddingWorker {
    core: Batcher<SentenceEncoder>,
}

impl std::fmt::Debug for EmbeddingWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingWorker")
            .field("encoder", self.core.model())
            .field("options", self.core.options())
            .finish_non_exhaustive()
    }
}

/// The results of a request admitted by a worker ([`EmbeddingWorker::submit`],
/// [`RerankWorker::submit`](super::RerankWorker::submit)), once computed: one output per
/// input, in input order.
///
/// Dropping it withdraws the request: inputs not yet run are skipped.
#[derive(Debug)]
#[must_use = "a request is withdrawn when its pending result is dropped"]
pub struct Pending<O> {
    inner: PendingInner<O>,
}

/// The embeddings of a request admitted by [`EmbeddingWorker::submit`], once computed.
pub type PendingEmbeddings = Pending<Vec<f32>>;

#[derive(Debug)]
enum PendingInner<O> {
    Ready(Option<Reply<O>>),
    Waiting(oneshot::Receiver<Reply<O>>),
}

impl<O> Pending<O> {
    /// A request that needs no work: its (empty) result is ready.
    pub(crate) fn ready(outputs: Vec<O>) -> Self {
        Pending {
            inner: PendingInner::Ready(Some(Ok(outputs))),
        }
    }
}

impl<O: Unpin> Future for Pending<O> {
    type Output = Reply<O>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply<O>> {
        match &mut self.inner {
            PendingInner::Ready(reply) => Poll::Ready(
                reply
                    .take()
                    .expect("Pending polled after completion. This is a bug."),
            ),
            // The sender is dropped without a reply only when the lane's model thread is gone.
            PendingInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(EmbedError::WorkerStopped))),
        }
    }
}

/// A bulk request's share of the ingest backlog: released chunk by chunk as they are
/// embedded, and whole when the request ends early (refused chunk, failure, caller gone).
struct BulkBacklog<M: BatchModel> {
    shared: Arc<Shared<M>>,
    remaining: usize,
}

impl<M: BatchModel> BulkBacklog<M> {
    fn release(&mut self, n: usize) {
        self.shared.lock().stats.bulk_backlog -= n;
        self.remaining -= n;
    }
}

impl<M: BatchModel> Drop for BulkBacklog<M> {
    fn drop(&mut self) {
        if self.remaining > 0 {
            self.shared.lock().stats.bulk_backlog -= self.remaining;
        }
    }
}

/// The machinery of a worker, whatever model it runs: the lanes, the tokenizer threads and
/// one model thread per lane. [`EmbeddingWorker`] runs the sentence encoder on both lanes;
/// [`RerankWorker`](super::RerankWorker) runs a cross-encoder on the interactive lane alone.
pub(crate) struct Batcher<M: BatchModel> {
    model: Arc<M>,
    shared: Arc<Shared<M>>,
    tokenizers: Vec<JoinHandle<()>>,
    /// The model threads, one per lane.
    models: Vec<JoinHandle<()>>,
}

impl<M: BatchModel> Batcher<M> {
    /// Starts the model threads (the interactive lane's, and with `bulk` the bulk lane's with
    /// a pool of lowered threads) and the tokenizer threads around `model`. Threads are named
    /// `{name}-model`, `{name}-bulk`, `{name}-bulk-{i}` and `{name}-tokenize-{i}`.
    ///
    /// # Errors
    /// [`EmbedError::InvalidOptions`] for a zero in `options` or a
    /// [`bulk_min_share`](WorkerOptions::bulk_min_share) outside 0..=1;
    /// [`EmbedError::ThreadPool`] when a thread cannot be started.
    pub(crate) fn start(
        model: M,
        options: WorkerOptions,
        bulk: bool,
        name: &'static str,
    ) -> EmbedResult<Self> {
        for (option, value) in [
            ("max_batch_size", options.max_batch_size),
            ("max_batch_tokens", options.max_batch_tokens),
            ("queue_capacity", options.queue_capacity),
            ("max_bulk_queue", options.max_bulk_queue),
            ("bulk_chunk", options.bulk_chunk),
            ("tokenizer_threads", options.tokenizer_threads),
        ] {
            if value == 0 {
                return Err(EmbedError::InvalidOptions(format!(
                    "{option} must be at least 1"
                )));
            }
        }
        if !(0.0..=1.0).contains(&options.bulk_min_share) {
            return Err(EmbedError::InvalidOptions(format!(
                "bulk_min_share must be between 0 and 1, got {}",
                options.bulk_min_share
            )));
        }
        let model = Arc::new(model);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: [VecDeque::new(), VecDeque::new()],
                lanes: [VecDeque::new(), VecDeque::new()],
                tokenizing: 0,
                batches_started: [0; 2],
                closing: false,
                // A worker without a bulk lane refuses bulk work as a stopped lane does.
                stopped: [false, !bulk],
                stats: WorkerStats::default(),
            }),
            work: Condvar::new(),
            jobs: Condvar::new(),
            interactive_jobs: AtomicUsize::new(0),
            options,
        });
        let mut batcher = Batcher {
            model: Arc::clone(&model),
            shared: Arc::clone(&shared),
            tokenizers: Vec::new(),
            models: Vec::new(),
        };
        let spawn_error = |e: std::io::Error| EmbedError::ThreadPool(e.to_string());
        let nice = crate::priority::nice_for_share(shared.options.bulk_min_share);
        let mut lanes = vec![(Lane::Interactive, format!("{name}-model"), None)];
        if bulk {
            let bulk_pool = rayon::ThreadPoolBuilder::new()
                .num_threads(model.threads())
                .thread_name(move |i| format!("{name}-bulk-{i}"))
                .start_handler(move |_| lower_priority(nice))
                .build()
                .map_err(|e| EmbedError::ThreadPool(e.to_string()))?;
            lanes.push((Lane::Bulk, format!("{name}-bulk"), Some(bulk_pool)));
        }
        // On an early return, dropping `batcher` closes and joins whatever was started.
        for (lane, thread_name, pool) in lanes {
            let handle = std::thread::Builder::new()
                .name(thread_name)
                .spawn({
                    let model = Arc::clone(&model);
                    let shared = Arc::clone(&shared);
                    move || {
                        if pool.is_some() {
                            lower_priority(nice);
                        }
                        model_thread(&*model, &shared, lane, pool.as_ref());
                    }
                })
                .map_err(spawn_error)?;
            batcher.models.push(handle);
        }
        for i in 0..shared.options.tokenizer_threads {
            let handle = std::thread::Builder::new()
                .name(format!("{name}-tokenize-{i}"))
                .spawn({
                    let model = Arc::clone(&model);
                    let shared = Arc::clone(&shared);
                    move || tokenizer_thread(&*model, &shared)
                })
                .map_err(spawn_error)?;
            batcher.tokenizers.push(handle);
        }
        Ok(batcher)
    }

    /// The model the worker runs.
    pub(crate) fn model(&self) -> &M {
        &self.model
    }

    /// The worker's settings.
    pub(crate) fn options(&self) -> &WorkerOptions {
        &self.shared.options
    }

    /// A snapshot of the lanes and the batch statistics.
    pub(crate) fn stats(&self) -> WorkerStats {
        self.shared.lock().stats.clone()
    }

    /// Hands `inputs` to the tokenizer threads for `lane`: interactive inputs are admitted
    /// against the lane's capacity here, bulk inputs were admitted to the backlog before.
    pub(crate) fn enqueue(
        &self,
        inputs: Vec<M::Input>,
        lane: Lane,
    ) -> EmbedResult<Pending<M::Output>> {
        if inputs.is_empty() {
            return Ok(Pending::ready(Vec::new()));
        }
        let n = inputs.len();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.closing || state.stopped[lane as usize] {
                return Err(EmbedError::WorkerStopped);
            }
            match lane {
                Lane::Interactive => {
                    let queued = state.stats.queued_texts;
                    let capacity = self.shared.options.queue_capacity;
                    if queued > 0 && queued + n > capacity {
                        state.stats.rejected_requests += 1;
                        return Err(EmbedError::Overloaded { queued, capacity });
                    }
                    state.stats.queued_texts += n;
                    state.stats.queued_requests += 1;
                    self.shared.interactive_jobs.fetch_add(1, Ordering::AcqRel);
                }
                Lane::Bulk => state.stats.bulk_queued_texts += n,
            }
            state.tokenizing += 1;
            state.jobs[lane as usize].push_back(TokenizeJob {
                inputs,
                reply: tx,
                lane,
            });
        }
        self.shared.jobs.notify_one();
        Ok(Pending {
            inner: PendingInner::Waiting(rx),
        })
    }

    /// Admits `n` bulk texts to the ingest backlog, or refuses them.
    fn admit_bulk(&self, n: usize) -> EmbedResult<BulkBacklog<M>> {
        let mut state = self.shared.lock();
        if state.closing || state.stopped[Lane::Bulk as usize] {
            return Err(EmbedError::WorkerStopped);
        }
        let backlog = state.stats.bulk_backlog;
        let limit = self.shared.options.max_bulk_queue;
        if backlog > 0 && backlog + n > limit {
            state.stats.rejected_requests += 1;
            return Err(EmbedError::BulkOverloaded { backlog, limit });
        }
        state.stats.bulk_backlog += n;
        Ok(BulkBacklog {
            shared: Arc::clone(&self.shared),
            remaining: n,
        })
    }

    /// Stops admitting requests, finishes every queued one and joins the threads; blocks until
    /// then.
    fn close(&mut self) {
        self.shared.lock().closing = true;
        // The tokenizer threads exit once they have drained the jobs.
        self.shared.jobs.notify_all();
        for handle in self.tokenizers.drain(..) {
            // A tokenizer thread only ends by panicking on a bug; nothing more to do here.
            let _ = handle.join();
        }
        self.shared.work.notify_all();
        for handle in self.models.drain(..) {
            let _ = handle.join();
        }
    }
}

impl<M: BatchModel> Drop for Batcher<M> {
    fn drop(&mut self) {
        self.close();
    }
}

impl EmbeddingWorker {
    /// Starts the two model threads (the bulk one with a pool of lowered threads) and the
    /// tokenizer threads around `encoder`.
    ///
    /// # Errors
    /// [`EmbedError::InvalidOptions`] for a zero in `options` or a
    /// [`bulk_min_share`](WorkerOptions::bulk_min_share) outside 0..=1;
    /// [`EmbedError::ThreadPool`] when a thread cannot be started.
    pub fn new(encoder: SentenceEncoder, options: WorkerOptions) -> EmbedResult<Self> {
        Ok(EmbeddingWorker {
            core: Batcher::start(encoder, options, true, "embed")?,
        })
    }

    /// The encoder the worker runs.
    pub fn encoder(&self) -> &SentenceEncoder {
        self.core.model()
    }

    /// The worker's settings.
    pub fn options(&self) -> &WorkerOptions {
        self.core.options()
    }

    /// A snapshot of the lanes and the batch statistics.
    pub fn stats(&self) -> WorkerStats {
        self.core.stats()
    }

    /// Admits an interactive request for embedding `texts` now, or refuses it: the returned
    /// future then only waits for the result. This is [`Embedder::embed`] split at the point
    /// where the request is accepted, for callers that want to know that before awaiting.
    ///
    /// # Errors
    /// [`EmbedError::Overloaded`] when the interactive lane has no room for `texts`;
    /// [`EmbedError::WorkerStopped`] when the worker is shutting down or the interactive
    /// lane's model thread is gone.
    pub fn submit(&self, texts: Vec<String>) -> EmbedResult<PendingEmbeddings> {
        self.core.enqueue(texts, Lane::Interactive)
    }

    /// Stops admitting requests, finishes every queued one and joins the threads. Dropping
    /// the worker does the same.
    ///
    /// This blocks until the lanes are drained: call it from a blocking context, not from an
    /// async task.
    pub fn shutdown(self) {
        drop(self);
    }
}

#[async_trait::async_trait]
impl Embedder for EmbeddingWorker {
    async fn embed(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        self.submit(texts)?.await
    }

    async fn embed_bulk(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        let n = texts.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // Dropped with this future (the caller went away) or on an error, it gives back what
        // is left; the chunks' own futures withdraw their texts from the lane.
        let mut backlog = self.core.admit_bulk(n)?;
        let chunk = self.core.options().bulk_chunk;
        let mut rest = texts.into_iter();
        let mut in_flight: VecDeque<(usize, PendingEmbeddings)> =
            VecDeque::with_capacity(BULK_CHUNKS_IN_FLIGHT);
        let mut out = Vec::with_capacity(n);
        loop {
            while in_flight.len() < BULK_CHUNKS_IN_FLIGHT {
                let part: Vec<String> = rest.by_ref().take(chunk).collect();
                if part.is_empty() {
                    break;
                }
                in_flight.push_back((part.len(), self.core.enqueue(part, Lane::Bulk)?));
            }
            let Some((len, pending)) = in_flight.pop_front() else {
                break;
            };
            out.extend(pending.await?);
            backlog.release(len);
        }
        Ok(out)
    }

    fn model_id(&self) -> &str {
        self.encoder().model_id()
    }

    fn dim(&self) -> usize {
        self.encoder().dim()
    }

    fn max_input_tokens(&self) -> usize {
        self.encoder().max_seq_length()
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        Some(self.encoder().tokenizer())
    }

    fn count_tokens(&self, text: &str) -> EmbedResult<usize> {
        self.encoder().count_tokens(text)
    }

    fn stats(&self) -> Option<WorkerStats> {
        Some(EmbeddingWorker::stats(self))
    }

    fn kernel(&self) -> Option<Kernel> {
        Some(self.encoder().kernel())
    }
}

/// Forgets `n` texts of a request in `lane` that will not reach a batch (nor will the rest of
/// the request).
fn release<M: BatchModel>(state: &mut State<M>, lane: Lane, n: usize) {
    match lane {
        Lane::Interactive => {
            state.stats.queued_texts -= n;
            state.stats.queued_requests -= 1;
        }
        Lane::Bulk => state.stats.bulk_queued_texts -= n,
    }
}

fn tokenizer_thread<M: BatchModel>(model: &M, shared: &Shared<M>) {
    loop {
        let job = {
            let mut state = shared.lock();
            loop {
                if let Some(job) = next_job(shared, &mut state, Lane::Bulk) {
                    break job;
                }
                if state.closing {
                    return;
                }
                state = shared
                    .jobs
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
        };
        run_job(model, shared, job);
    }
}

/// The next job to tokenize: an interactive one first, a bulk one only if `lowest` allows.
fn next_job<M: BatchModel>(
    shared: &Shared<M>,
    state: &mut State<M>,
    lowest: Lane,
) -> Option<TokenizeJob<M>> {
    if let Some(job) = state.jobs[Lane::Interactive as usize].pop_front() {
        shared.interactive_jobs.fetch_sub(1, Ordering::AcqRel);
        return Some(job);
    }
    if lowest == Lane::Bulk {
        return state.jobs[Lane::Bulk as usize].pop_front();
    }
    None
}

/// Tokenizes a job's inputs and puts the request in its lane (or answers it with the error).
fn run_job<M: BatchModel>(model: &M, shared: &Shared<M>, job: TokenizeJob<M>) {
    let n = job.inputs.len();
    let mut seqs = Vec::with_capacity(n);
    let mut outcome = Ok(());
    for input in &job.inputs {
        if job.lane == Lane::Bulk {
            // A query that arrives while a chunk is being tokenized waits for one text of it,
            // not for the whole chunk.
            while shared.interactive_jobs.load(Ordering::Acquire) > 0 {
                let next = next_job(shared, &mut shared.lock(), Lane::Interactive);
                match next {
                    Some(next) => run_job(model, shared, next),
                    None => break,
                }
            }
        }
        if job.reply.is_closed() {
            break;
        }
        let one = std::panic::catch_unwind(AssertUnwindSafe(|| model.tokenize(input)));
        match one {
            Ok(Ok(encoded)) => seqs.push(encoded),
            Ok(Err(e)) => {
                outcome = Err(e);
                break;
            }
            Err(panic) => {
                outcome = Err(EmbedError::Tokenizer(panic_message("tokenizer", &*panic)));
                break;
            }
        }
    }

    let lane = job.lane;
    let mut state = shared.lock();
    state.tokenizing -= 1;
    if job.reply.is_closed() {
        release(&mut state, lane, n);
        state.stats.cancelled_texts += n as u64;
    } else {
        match outcome {
            Ok(()) if !state.stopped[lane as usize] => {
                let queued_at = state.batches_started[lane as usize];
                state.lanes[lane as usize].push_back(Request {
                    outputs: std::iter::repeat_with(M::Output::default)
                        .take(seqs.len())
                        .collect(),
                    seqs,
                    taken: 0,
                    done: 0,
                    reply: job.reply,
                    queued_at,
                });
            }
            Ok(()) => release(&mut state, lane, n),
            Err(e) => {
                release(&mut state, lane, n);
                let _ = job.reply.send(Err(e));
            }
        }
    }
    drop(state);
    shared.work.notify_all();
}

/// Marks a lane stopped when its model thread ends, however it ends, so that its callers are
/// answered ([`EmbedError::WorkerStopped`]) instead of waiting forever.
struct StoppedOnExit<'a, M: BatchModel>(&'a Shared<M>, Lane);

impl<M: BatchModel> Drop for StoppedOnExit<'_, M> {
    fn drop(&mut self) {
        let lane = self.1;
        let mut state = self.0.lock();
        state.stopped[lane as usize] = true;
        // Dropping the queued requests' senders answers their callers.
        let requests: Vec<Request<M::Output>> = state.lanes[lane as usize].drain(..).collect();
        for request in &requests {
            release(&mut state, lane, request.seqs.len() - request.taken);
        }
        drop(state);
        drop(requests);
    }
}

/// Lowers the calling thread's priority for bulk work; where that fails, the work still runs,
/// at the priority of queries.
fn lower_priority(nice: i32) {
    if let Err(e) = crate::priority::lower_current_thread(nice) {
        tracing::warn!(error = %e, nice, "cannot lower the priority of a bulk embedding thread");
    }
}

/// How many of the untaken texts (their token counts, in order) the next batch takes, and
/// their tokens: first come, first served, within `max_texts` texts and `max_tokens` tokens,
/// and at least one text however long.
fn plan(lens: impl Iterator<Item = usize>, max_texts: usize, max_tokens: usize) -> (usize, usize) {
    let (mut take, mut tokens) = (0usize, 0usize);
    for len in lens {
        if take > 0 && (take == max_texts || tokens.saturating_add(len) > max_tokens) {
            break;
        }
        take += 1;
        tokens += len;
    }
    (take, tokens)
}

/// Token counts of the texts of `queue` not yet taken into a batch, in order.
fn untaken<O>(queue: &VecDeque<Request<O>>) -> impl Iterator<Item = usize> + '_ {
    queue
        .iter()
        .flat_map(|r| r.seqs[r.taken..].iter().map(Encoded::len))
}

/// Drops the requests of `queue` whose caller has gone away; their texts give their place back
/// without running.
fn withdraw<M: BatchModel>(
    state: &mut State<M>,
    lane: Lane,
    queue: &mut VecDeque<Request<M::Output>>,
) {
    queue.retain(|r| {
        if r.reply.is_closed() {
            let untaken = r.seqs.len() - r.taken;
            if untaken > 0 {
                release(state, lane, untaken);
            }
            state.stats.cancelled_texts += (r.seqs.len() - r.done) as u64;
            false
        } else {
            true
        }
    });
}

/// The model thread of `lane`: batches the lane's requests and runs them on `pool` (the
/// model's own when `None`).
fn model_thread<M: BatchModel>(
    model: &M,
    shared: &Shared<M>,
    lane: Lane,
    pool: Option<&ThreadPool>,
) {
    let _stopped = StoppedOnExit(shared, lane);
    let l = lane as usize;
    let options = &shared.options;
    // Requests this thread has taken from the shared lane, oldest first; only the first may be
    // partly batched.
    let mut queue: VecDeque<Request<M::Output>> = VecDeque::new();
    loop {
        let mut state = shared.lock();
        while state.lanes[l].is_empty() && queue.is_empty() {
            if state.closing && state.tokenizing == 0 {
                return;
            }
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        queue.extend(state.lanes[l].drain(..));
        withdraw(&mut state, lane, &mut queue);
        if queue.is_empty() {
            continue;
        }

        let (take, tokens) = plan(
            untaken(&queue),
            options.max_batch_size,
            options.max_batch_tokens,
        );
        state.batches_started[l] += 1;
        let mut batch: Vec<(usize, usize)> = Vec::with_capacity(take);
        let mut want = take;
        for (ri, request) in queue.iter_mut().enumerate() {
            if want == 0 {
                break;
            }
            let k = want.min(request.seqs.len() - request.taken);
            batch.extend((request.taken..request.taken + k).map(|si| (ri, si)));
            request.taken += k;
            want -= k;
            match lane {
                Lane::Interactive => state.stats.queued_texts -= k,
                Lane::Bulk => state.stats.bulk_queued_texts -= k,
            }
            if k > 0 && request.taken == request.seqs.len() && lane == Lane::Interactive {
                state.stats.queued_requests -= 1;
                let waited = state.batches_started[l] - request.queued_at;
                state.stats.interactive_waits.record(waited as usize);
            }
        }
        state.stats.running_texts += batch.len();
        drop(state);

        batch.sort_by_key(|&(ri, si)| std::cmp::Reverse(queue[ri].seqs[si].len()));
        let seqs: Vec<Encoded> = batch
            .iter()
            .map(|&(ri, si)| std::mem::replace(&mut queue[ri].seqs[si], Encoded::from_ids(vec![])))
            .collect();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| model.run(pool, &seqs)));
        let busy = started.elapsed();
        let outcome = match outcome {
            Ok(Ok(outputs)) if outputs.len() == seqs.len() => Ok(outputs),
            Ok(Ok(outputs)) => Err(format!(
                "the {} returned {} outputs for {} inputs",
                M::NAME,
                outputs.len(),
                seqs.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(panic_message(M::NAME, &*panic)),
        };

        let last = batch.iter().map(|&(ri, _)| ri).max();
        let mut state = shared.lock();
        state.stats.running_texts -= batch.len();
        state.stats.busy += busy;
        state.stats.batches += 1;
        state.stats.batch_texts.record(seqs.len());
        state.stats.batch_tokens.record(tokens);
        match outcome {
            Ok(outputs) => {
                state.stats.texts += seqs.len() as u64;
                if lane == Lane::Bulk {
                    state.stats.bulk_texts += seqs.len() as u64;
                }
                state.stats.tokens += tokens as u64;
                drop(state);
                for (&(ri, si), output) in batch.iter().zip(outputs) {
                    let request = &mut queue[ri];
                    request.outputs[si] = output;
                    request.done += 1;
                }
                while queue.front().is_some_and(|r| r.done == r.seqs.len()) {
                    let request = queue.pop_front().expect("front exists. This is a bug.");
                    // A caller that has gone away no longer wants the reply.
                    let _ = request.reply.send(Ok(request.outputs));
                }
            }
            Err(message) => {
                // Every request with a text in the failed batch fails whole.
                state.stats.failed_batches += 1;
                tracing::error!(
                    error = %message,
                    model = M::NAME,
                    texts = seqs.len(),
                    "batch failed"
                );
                if let Some(last) = last {
                    for request in queue.drain(..=last) {
                        let untaken = request.seqs.len() - request.taken;
                        if untaken > 0 {
                            release(&mut state, lane, untaken);
                        }
                        let _ = request
                            .reply
                            .send(Err(EmbedError::Inference(message.clone())));
                    }
                }
            }
        }
    }
}

fn panic_message(what: &str, panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the {what} panicked: {detail}")
}

#[cfg(test)]
mod tests {
    use super::{BatchHistogram, plan};

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let mut h = BatchHistogram::default();
        for v in [1, 2, 3, 4, 5, 64, 65] {
            h.record(v);
        }
        let buckets: Vec<(u64, u64)> = h.buckets().collect();
        assert_eq!(
            buckets,
            vec![
                (1, 1),
                (2, 1),
                (4, 2),
                (8, 1),
                (16, 0),
                (32, 0),
                (64, 1),
                (128, 1)
            ]
        );
        assert_eq!(h.count(), 7);
        assert_eq!(h.sum(), 144);
    }

    #[test]
    fn a_batch_takes_texts_in_order_within_both_budgets() {
        // By tokens, then by texts.
        assert_eq!(plan([30, 30, 30, 30].into_iter(), 8, 100), (3, 90));
        assert_eq!(plan([1; 20].into_iter(), 8, 100), (8, 8));
        // First come, first served: a short text does not jump a long one that does not fit.
        assert_eq!(plan([60, 50, 1].into_iter(), 8, 100), (1, 60));
        // A text longer than the budget runs, alone.
        assert_eq!(plan([500, 1].into_iter(), 8, 100), (1, 500));
        assert_eq!(plan(std::iter::empty(), 8, 100), (0, 0));
    }
}
