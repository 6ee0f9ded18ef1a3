//! vicinity: a vector similarity search service for retrieval-augmented generation.
//!
//! The library holds everything the `vicinity` binary runs, in layers that only point
//! downwards:
//!
//! * [`distance`]: SIMD distance kernels chosen at run time, and the [`distance::Metric`] type.
//! * [`index`]: exact flat, IVF and HNSW indexes behind one interface; synchronous and CPU-bound.
//! * [`embed`]: the sentence encoder that turns text into vectors (a sentence-transformers
//!   model run on candle's kernels).
//! * [`dataset`]: readers for the TEXMEX (`.fvecs`/`.ivecs`) and `.npy` formats used by
//!   benchmarks.
//! * [`store`]: durable SQLite storage of collections, documents, passages and their vectors.
//! * [`service`]: the use cases (collections, documents, queries, embeddings) over the layers
//!   above, independent of HTTP.
//! * [`api`]: the HTTP edge: axum router, JSON errors, OpenAPI document, server loop.
//! * [`import`]: the bulk importer, a client of the HTTP API (`vicinity import`).
//! * [`eval`]: retrieval quality of queries with known answers, through the service
//!   (`vicinity bench retrieval`).
//! * [`config`], [`telemetry`], [`shutdown`]: the server's configuration, logging and signals.

pub mod api;
pub mod config;
pub mod dataset;
pub mod distance;
pub mod embed;
pub mod eval;
pub mod import;
pub mod index;
pub mod lexical;
pub mod priority;
pub mod store;

pub mod service;
pub mod shutdown;
pub mod telemetry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
