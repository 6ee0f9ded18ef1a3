//! The [`Embedder`] trait: what the service needs from a sentence encoder, asynchronously.
//!
//! The service holds an `Arc<dyn Embedder>`. In production that is an
//! [`EmbeddingWorker`](super::EmbeddingWorker), which runs the model on its own thread and
//! batches concurrent requests; tests of code where the model is not the point can put a
//! cheaper implementation behind the same trait.
//!
//! The trait uses `async_trait` rather than a native `async fn`: a native one is not
//! dyn-compatible, and the boxed `Send` future `async_trait` generates is exactly what an
//! object-safe version has to return anyway (one allocation per request, against the
//! milliseconds a request spends in the model), while implementors still write a plain
//! `async fn`.

use tokenizers::Tokenizer;

use super::{EmbedResult, Kernel, WorkerStats};

/// Turns texts into embedding vectors.
///
/// Implementations are shared between tasks (`Send + Sync`) and must never block the async
/// runtime: the model's work belongs on threads of its own.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync {
    /// Embeds `texts`: one vector of [`dim`](Self::dim) values per text, in the order given.
    ///
    /// Texts longer than [`max_input_tokens`](Self::max_input_tokens) are truncated to it (split
    /// long documents into passages first). An empty list gives an empty result.
    ///
    /// # Errors
    /// [`EmbedError::Overloaded`](super::EmbedError::Overloaded) when the embedder cannot take
    /// more work now (retry later); other variants for a failure of the model or tokenizer.
    async fn embed(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>>;

    /// Embeds `texts` as bulk work: the passages of documents being ingested, which can be
    /// many and whose caller can wait. The result is what [`embed`](Self::embed) gives, but an
    /// embedder that queues work runs these after the interactive texts of `embed` (queries),
    /// so that a query never waits behind ingest. The default embeds them as `embed` does.
    ///
    /// # Errors
    /// [`EmbedError::BulkOverloaded`](super::EmbedError::BulkOverloaded) when the embedder's
    /// ingest backlog is full (retry later); as [`embed`](Self::embed) otherwise.
    async fn embed_bulk(&self, texts: Vec<String>) -> EmbedResult<Vec<Vec<f32>>> {
        self.embed(texts).await
    }

    /// The model's name, e.g. `sentence-transformers/all-MiniLM-L6-v2`.
    fn model_id(&self) -> &str;

    /// Width of the embeddings.
    fn dim(&self) -> usize;

    /// Longest input embedded whole, in the model's tokens with its special tokens included.
    fn max_input_tokens(&self) -> usize;

    /// The model's tokenizer, without padding and truncation, for splitting documents into
    /// passages on the model's own tokens; `None` where the embedder has none (a fake).
    fn tokenizer(&self) -> Option<&Tokenizer>;

    /// Number of tokens `text` has for the model, special tokens included, before truncation:
    /// it is embedded whole when this is at most [`max_input_tokens`](Self::max_input_tokens).
    fn count_tokens(&self, text: &str) -> EmbedResult<usize>;

    /// The queue and batch statistics of an embedder that batches requests on a worker (for
    /// the server's metrics); `None`, the default, for one that does not.
    fn stats(&self) -> Option<WorkerStats> {
        None
    }

    /// The matrix kernel the model runs on, which fixes the precision it computes in; `None`,
    /// the default, for an embedder that runs no model of its own.
    fn kernel(&self) -> Option<Kernel> {
        None
    }
}
