//! [`EmbeddingWorker`]: the production [`Embedder`]. It owns a [`SentenceEncoder`], runs it on a
//! dedicated thread, and coalesces concurrent requests into batches.
//!
//! # Pipeline
//!
//! ```text
//! embed(texts) ─admission─▶ tokenizer thread(s) ─▶ queue ─▶ model thread ─▶ oneshot reply
//! ```
//!
//! * **Admission** happens synchronously in [`EmbeddingWorker::submit`]: the worker counts the
//!   texts admitted but not yet taken into a batch, and refuses a request that would take that
//!   count above [`WorkerOptions::queue_capacity`] with [`EmbedError::Overloaded`], at once and
//!   before any work is spent on it.
//! * **Tokenization** runs on threads of its own (`embed-tokenize-{i}`), so that the next
//!   requests are tokenized while the model runs the current batch, and so that the token
//!   counts the batcher budgets with are known when a request reaches the queue.
//! * **Batching** runs on the model thread (`embed-model`) whenever it is free: it takes
//!   requests first come, first served, sequence by sequence, until the batch holds
//!   [`WorkerOptions::max_batch_size`] texts or the next text would take it past
//!   [`WorkerOptions::max_batch_tokens`]. A batch always takes at least one text, so a text
//!   longer than the token budget runs alone rather than being refused; a request with more
//!   texts than fit is spread over consecutive batches. Requests whose caller has gone away
//!   (the future was dropped) are skipped.
//! * **The batch** is sorted longest first before the forward pass. The encoder runs sequences
//!   unpadded, so sorting cannot cut padding; it keeps sequences of similar length in the same
//!   internal pass and lets the per-sequence attention work, scheduled longest first, balance
//!   over the encoder's threads. The queue itself is not sorted by length: with no padding to
//!   save, that would only let short texts overtake long ones indefinitely.
//! * **Replies** go back over oneshot channels, each request's vectors in its own order, when
//!   its last text has been embedded.
//!
//! Dropping the worker (or [`EmbeddingWorker::shutdown`]) stops admission, finishes every
//! admitted request and joins the threads; it blocks until then, so drop the last handle
//! outside the async runtime's worker threads (or accept the wait at shutdown).

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;
use tokio::sync::oneshot;

use super::{EmbedError, EmbedResult, Embedder, Encoded, SentenceEncoder};

/// What a request's caller receives.
type Reply = EmbedResult<Vec<Vec<f32>>>;

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
    /// Most texts admitted but not yet taken into a batch (being tokenized or queued), over all
    /// requests; the request that would exceed it is refused with
    /// [`EmbedError::Overloaded`]. A request with more texts than the whole capacity is
    /// admitted only when nothing else is waiting, so it is delayed, never refused forever.
    /// Default 4096.
    pub queue_capacity: usize,
    /// Threads that tokenize requests ahead of the model thread. Default 1: tokenizing costs
    /// about 1 % of embedding.
    pub tokenizer_threads: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            max_batch_size: 128,
            max_batch_tokens: 2048,
            queue_capacity: 4096,
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

/// A snapshot of an [`EmbeddingWorker`]'s queue and of the batches it has run. Counters are
/// totals since the worker started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Texts admitted and not yet taken into a batch (being tokenized or queued): what
    /// [`WorkerOptions::queue_capacity`] bounds.
    pub queued_texts: usize,
    /// Requests with texts not yet taken into a batch.
    pub queued_requests: usize,
    /// Texts in the batch the model is running now (0 when idle).
    pub running_texts: usize,
    /// Batches run.
    pub batches: u64,
    /// Texts embedded.
    pub texts: u64,
    /// Tokens embedded.
    pub tokens: u64,
    /// Requests refused with [`EmbedError::Overloaded`].
    pub rejected_requests: u64,
    /// Texts skipped because their caller had gone away.
    pub cancelled_texts: u64,
    /// Batches the model failed on (their requests got [`EmbedError::Inference`]).
    pub failed_batches: u64,
    /// Time the model thread spent running batches.
    pub busy: Duration,
    /// Texts per batch.
    pub batch_texts: BatchHistogram,
    /// Tokens per batch.
    pub batch_tokens: BatchHistogram,
}

/// A request on its way through the worker: tokenized texts, how far batching has got, and
/// the results so far.
struct Request {
    seqs: Vec<Encoded>,
    /// Texts already handed to a batch: a prefix of `seqs`.
    taken: usize,
    /// Texts embedded so far.
    done: usize,
    vectors: Vec<Vec<f32>>,
    reply: oneshot::Sender<Reply>,
}

/// Work for a tokenizer thread.
struct TokenizeJob {
    texts: Vec<String>,
    reply: oneshot::Sender<Reply>,
}

/// State shared by the caller side, the tokenizer threads and the model thread.
struct State {
    /// Tokenized requests waiting for the model thread.
    queue: VecDeque<Request>,
    /// Requests admitted and not yet pushed to `queue`.
    tokenizing: usize,
    /// No new requests are admitted; the threads finish what they have and exit.
    closing: bool,
    /// The model thread has exited; nothing will be answered any more.
    stopped: bool,
    stats: WorkerStats,
}

struct Shared {
    state: Mutex<State>,
    /// Signals the model thread: work was queued, or the worker is closing.
    work: Condvar,
    options: WorkerOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The production [`Embedder`]: a [`SentenceEncoder`] run on a dedicated model thread that
/// batches concurrent requests, fed by tokenizer threads through a bounded queue.
///
/// A request is admitted or refused ([`EmbedError::Overloaded`]) when it is submitted, then
/// tokenized off the model thread. Whenever the model thread is free it takes the queued texts
/// first come, first served, up to [`WorkerOptions::max_batch_size`] texts and
/// [`WorkerOptions::max_batch_tokens`] tokens (at least one text, however long), runs them
/// longest first, and answers each request once all its texts are done, in its own order.
/// Texts of callers that have gone away are skipped. Dropping the worker (or
/// [`shutdown`](Self::shutdown)) finishes every admitted request and joins the threads,
/// blocking until then.
///
/// Its futures need no particular async runtime (they wait on a oneshot channel), and the
/// worker never runs model or tokenizer work on the caller's thread.
pub struct EmbeddingWorker {
    encoder: Arc<SentenceEncoder>,
    shared: Arc<Shared>,
    jobs: Option<mpsc::Sender<TokenizeJob>>,
    tokenizers: Vec<JoinHandle<()>>,
    model: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddingWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingWorker")
            .field("encoder", &self.encoder)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

/// The embeddings of a request admitted by [`EmbeddingWorker::submit`], once computed.
///
/// Dropping it withdraws the request: texts not yet embedded are skipped.
#[derive(Debug)]
#[must_use = "a request is withdrawn when its PendingEmbeddings is dropped"]
pub struct PendingEmbeddings {
    inner: PendingInner,
}

#[derive(Debug)]
enum PendingInner {
    Ready(Option<Reply>),
    Waiting(oneshot::Receiver<Reply>),
}

impl Future for PendingEmbeddings {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        match &mut self.inner {
            PendingInner::Ready(reply) => Poll::Ready(
                reply
                    .take()
                    .expect("PendingEmbeddings polled after completion. This is a bug."),
            ),
            // The sender is dropped without a reply only when the model thread is gone.
            PendingInner::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(EmbedError::WorkerStopped))),
        }
    }
}

impl EmbeddingWorker {
    /// Starts the model thread and the tokenizer threads around `encoder`.
    ///
    /// # Errors
    /// [`EmbedError::InvalidOptions`] for a zero in `options`; [`EmbedError::ThreadPool`] when
    /// a thread cannot be started.
    pub fn new(encoder: SentenceEncoder, options: WorkerOptions) -> EmbedResult<Self> {
        for (name, value) in [
            ("max_batch_size", options.max_batch_size),
            ("max_batch_tokens", options.max_batch_tokens),
            ("queue_capacity", options.queue_capacity),
            ("tokenizer_threads", options.tokenizer_threads),
        ] {
            if value == 0 {
                return Err(EmbedError::InvalidOptions(format!(
                    "{name} must be at least 1"
                )));
            }
        }
        let encoder = Arc::new(encoder);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                tokenizing: 0,
                closing: false,
                stopped: false,
                stats: WorkerStats::default(),
            }),
            work: Condvar::new(),
            options,
        });
        let (jobs, job_rx) = mpsc::channel::<TokenizeJob>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut worker = EmbeddingWorker {
            encoder: Arc::clone(&encoder),
            shared: Arc::clone(&shared),
            jobs: Some(jobs),
            tokenizers: Vec::new(),
            model: None,
        };
        let spawn_error = |e: std::io::Error| EmbedError::ThreadPool(e.to_string());
        // On an early return, dropping `worker` closes and joins whatever was started.
        worker.model = Some(
            std::thread::Builder::new()
                .name("embed-model".into())
                .spawn({
                    let encoder = Arc::clone(&encoder);
                    let shared = Arc::clone(&shared);
                    move || model_thread(&encoder, &shared)
                })
                .map_err(spawn_error)?,
        );
        for i in 0..shared.options.tokenizer_threads {
            let handle = std::thread::Builder::new()
                .name(format!("embed-tokenize-{i}"))
                .spawn({
                    let encoder = Arc::clone(&encoder);
                    let shared = Arc::clone(&shared);
                    let job_rx = Arc::clone(&job_rx);
                    move || tokenizer_thread(&encoder, &shared, &job_rx)
                })
                .map_err(spawn_error)?;
            worker.tokenizers.push(handle);
        }
        Ok(worker)
    }

    /// The encoder the worker runs.
    pub fn encoder(&self) -> &SentenceEncoder {
        &self.encoder
    }

    /// The worker's settings.
    pub fn options(&self) -> &WorkerOptions {
        &self.shared.options
    }

    /// A snapshot of the queue and the batch statistics.
    pub fn stats(&self) -> WorkerStats {
        self.shared.lock().stats.clone()
    }

    /// Admits a request for embedding `texts` now, or refuses it: the returned future then
    /// only waits for the result. This is [`Embedder::embed`] split at the point where the
    /// request is accepted, for callers that want to know that before awaiting.
    ///
    /// # Errors
    /// [`EmbedError::Overloaded`] when the queue has no room for `texts`;
    /// [`EmbedError::WorkerStopped`] when the worker is shutting down or its model thread is
    /// gone.
    pub fn submit(&self, texts: Vec<String>) -> EmbedResult<PendingEmbeddings> {
        if texts.is_empty() {
            return Ok(PendingEmbeddings {
                inner: PendingInner::Ready(Some(Ok(Vec::new()))),
            });
        }
        let n = texts.len();
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.closing || state.stopped {
                return Err(EmbedError::WorkerStopped);
            }
            let queued = state.stats.queued_texts;
            let capacity = self.shared.options.queue_capacity;
            if queued > 0 && queued + n > capacity {
                state.stats.rejected_requests += 1;
                return Err(EmbedError::Overloaded { queued, capacity });
            }
            state.stats.queued_texts += n;
            state.stats.queued_requests += 1;
            state.tokenizing += 1;
        }
        let job = TokenizeJob { texts, reply: tx };
        let sent = self
            .jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(job).is_ok());
        if !sent {
            // The tokenizer threads are gone (they only exit on shutdown or by a bug): undo
            // the admission; dropping the job's sender makes `rx` report WorkerStopped.
            let mut state = self.shared.lock();
            release(&mut state, n);
            state.tokenizing -= 1;
            self.shared.work.notify_all();
        }
        Ok(PendingEmbeddings {
            inner: PendingInner::Waiting(rx),
        })
    }

    /// Stops admitting requests, finishes every admitted one and joins the threads. Dropping
    /// the worker does the same.
    ///
    /// This blocks until the queue is drained: call it from a blocking context, not from an
    /// async task.
    pub fn shutdown(mut self) {
        self.close();
    }

    fn close(&mut self) {
        self.shared.lock().closing = true;
        // Closing the channel lets the tokenizer threads exit once they have drained it.
        self.jobs = None;
        for handle in self.tokenizers.drain(..) {
            // A tokenizer thread only ends by panicking on a bug; nothing more to do here.
            let _ = handle.join();
        }
        self.shared.work.notify_all();
        if let Some(handle) = self.model.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for EmbeddingWorker {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl Embedder for EmbeddingWorker {
    async fn embed(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        self.submit(texts)?.await
    }

    fn model_id(&self) -> &str {
        self.encoder.model_id()
    }

    fn dim(&self) -> usize {
        self.encoder.dim()
    }

    fn max_input_tokens(&self) -> usize {
        self.encoder.max_seq_length()
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        Some(self.encoder.tokenizer())
    }

    fn count_tokens(&self, text: &str) -> EmbedResult<usize> {
        self.encoder.count_tokens(text)
    }

    fn stats(&self) -> Option<WorkerStats> {
        Some(EmbeddingWorker::stats(self))
    }
}

/// Forgets `n` admitted texts that will not reach a batch, and their request.
fn release(state: &mut State, n: usize) {
    state.stats.queued_texts -= n;
    state.stats.queued_requests -= 1;
}

fn tokenizer_thread(
    encoder: &SentenceEncoder,
    shared: &Shared,
    jobs: &Mutex<mpsc::Receiver<TokenizeJob>>,
) {
    loop {
        // The lock only hands out jobs; tokenizing happens after it is released.
        let job = match jobs.lock().unwrap_or_else(PoisonError::into_inner).recv() {
            Ok(job) => job,
            Err(mpsc::RecvError) => return,
        };
        let n = job.texts.len();
        let outcome = if job.reply.is_closed() {
            None
        } else {
            let texts: Vec<&str> = job.texts.iter().map(String::as_str).collect();
            Some(encoder.tokenize(&texts))
        };
        let mut state = shared.lock();
        state.tokenizing -= 1;
        match outcome {
            Some(Ok(seqs)) if !state.stopped => {
                state.queue.push_back(Request {
                    vectors: vec![Vec::new(); seqs.len()],
                    seqs,
                    taken: 0,
                    done: 0,
                    reply: job.reply,
                });
            }
            Some(Ok(_)) => release(&mut state, n),
            Some(Err(e)) => {
                release(&mut state, n);
                let _ = job.reply.send(Err(e));
            }
            None => {
                release(&mut state, n);
                state.stats.cancelled_texts += n as u64;
            }
        }
        drop(state);
        shared.work.notify_all();
    }
}

/// Marks the worker stopped when the model thread ends, however it ends, so that callers are
/// answered ([`EmbedError::WorkerStopped`]) instead of waiting forever.
struct StoppedOnExit<'a>(&'a Shared);

impl Drop for StoppedOnExit<'_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.stopped = true;
        state.stats.running_texts = 0;
        // Dropping the queued requests' senders answers their callers.
        let queued: Vec<Request> = state.queue.drain(..).collect();
        for request in &queued {
            release(&mut state, request.seqs.len() - request.taken);
        }
        drop(state);
        drop(queued);
    }
}

fn model_thread(encoder: &SentenceEncoder, shared: &Shared) {
    let _stopped = StoppedOnExit(shared);
    let options = &shared.options;
    // Requests this thread has taken from the shared queue, oldest first; only the first
    // may be partly batched.
    let mut local: VecDeque<Request> = VecDeque::new();
    loop {
        let mut state = shared.lock();
        while state.queue.is_empty() && local.is_empty() {
            if state.closing && state.tokenizing == 0 {
                return;
            }
            state = shared
                .work
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        local.extend(state.queue.drain(..));

        // Withdrawn requests give their place back without running.
        local.retain(|r| {
            if r.reply.is_closed() {
                let untaken = r.seqs.len() - r.taken;
                if untaken > 0 {
                    state.stats.queued_texts -= untaken;
                    state.stats.queued_requests -= 1;
                }
                state.stats.cancelled_texts += (r.seqs.len() - r.done) as u64;
                false
            } else {
                true
            }
        });
        if local.is_empty() {
            continue;
        }

        // Requests first come, first served, text by text, within the budgets.
        let mut batch: Vec<(usize, usize)> = Vec::new();
        let mut tokens = 0;
        'fill: for (ri, request) in local.iter_mut().enumerate() {
            while request.taken < request.seqs.len() {
                let len = request.seqs[request.taken].len();
                if !batch.is_empty()
                    && (batch.len() == options.max_batch_size
                        || tokens + len > options.max_batch_tokens)
                {
                    break 'fill;
                }
                batch.push((ri, request.taken));
                tokens += len;
                request.taken += 1;
                state.stats.queued_texts -= 1;
                if request.taken == request.seqs.len() {
                    state.stats.queued_requests -= 1;
                }
            }
        }
        state.stats.running_texts = batch.len();
        drop(state);

        batch.sort_by_key(|&(ri, si)| std::cmp::Reverse(local[ri].seqs[si].len()));
        let seqs: Vec<Encoded> = batch
            .iter()
            .map(|&(ri, si)| std::mem::replace(&mut local[ri].seqs[si], Encoded::from_ids(vec![])))
            .collect();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| encoder.embed_encoded(&seqs)));
        let busy = started.elapsed();
        let outcome = match outcome {
            Ok(Ok(vectors)) if vectors.len() == seqs.len() => Ok(vectors),
            Ok(Ok(vectors)) => Err(format!(
                "the encoder returned {} vectors for {} texts",
                vectors.len(),
                seqs.len()
            )),
            Ok(Err(e)) => Err(e.to_string()),
            Err(panic) => Err(panic_message(&*panic)),
        };

        let last = batch.iter().map(|&(ri, _)| ri).max().unwrap_or(0);
        let mut state = shared.lock();
        state.stats.running_texts = 0;
        state.stats.busy += busy;
        state.stats.batches += 1;
        state.stats.batch_texts.record(seqs.len());
        state.stats.batch_tokens.record(tokens);
        match outcome {
            Ok(vectors) => {
                state.stats.texts += seqs.len() as u64;
                state.stats.tokens += tokens as u64;
                drop(state);
                for (&(ri, si), vector) in batch.iter().zip(vectors) {
                    local[ri].vectors[si] = vector;
                    local[ri].done += 1;
                }
                while local.front().is_some_and(|r| r.done == r.seqs.len()) {
                    let request = local.pop_front().expect("front exists. This is a bug.");
                    // A caller that has gone away no longer wants the reply.
                    let _ = request.reply.send(Ok(request.vectors));
                }
            }
            Err(message) => {
                // Every request with a text in the failed batch fails whole.
                state.stats.failed_batches += 1;
                tracing::error!(error = %message, texts = seqs.len(), "embedding batch failed");
                for request in local.drain(..=last) {
                    let untaken = request.seqs.len() - request.taken;
                    if untaken > 0 {
                        release(&mut state, untaken);
                    }
                    let _ = request
                        .reply
                        .send(Err(EmbedError::Inference(message.clone())));
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    format!("the encoder panicked: {detail}")
}

#[cfg(test)]
mod tests {
    use super::BatchHistogram;

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
}
