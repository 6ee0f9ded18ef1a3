//! The admission limits: every bound a request is held to before any expensive work (tokenizing,
//! embedding, k-means, a search) is spent on it.
//!
//! Each limit is a setting ([`Limits`], one flag and environment variable each, see
//! `vicinity serve --help`), and a request over one is refused with
//! [`ServiceError::LimitExceeded`], which names the setting so that the client (or the operator
//! reading the log) knows which knob it hit. The HTTP layer adds its own limit on the body's size
//! before the body is read; everything that depends on the body's content is checked here.
//!
//! The checks are cheap (lengths and counts), so a request is validated completely, every query
//! of a batch and every document of an upsert, before the first text reaches the encoder.

use serde_json::Value;

use super::error::{ServiceError, ServiceResult};

/// One of the admission limits, named as its setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Bytes of one query text or one embedding input.
    TextBytes,
    /// Documents in one upsert, ids in one read or delete.
    Documents,
    /// Passages one upsert splits into.
    Passages,
    /// Bytes of one document's metadata, as compact JSON.
    MetadataBytes,
    /// `k` of one query.
    K,
    /// A query's or a collection's HNSW `ef`.
    Ef,
    /// A query's or a collection's IVF `nprobe`.
    Nprobe,
    /// A collection's IVF `nlist`.
    Nlist,
    /// Queries in one batch, inputs in one embedding request.
    Batch,
    /// The sum of `k` over a batch's queries.
    BatchK,
    /// How deep a filter nests `$and`/`$or`.
    FilterDepth,
    /// Values in one `$in`/`$nin` list.
    FilterValues,
    /// Collections on the server.
    Collections,
}

/// How a limit's refusal is reported: a request too large (413), a parameter out of range
/// (400), or a server that holds as much as it may (409).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    /// The request carries more than a limit allows.
    Size,
    /// A parameter is larger than a limit allows.
    Range,
    /// The server already holds what a limit allows.
    Capacity,
}

impl Limit {
    /// The setting's name, as in the error body's `limit` field.
    pub fn name(self) -> &'static str {
        match self {
            Limit::TextBytes => "max_text_bytes",
            Limit::Documents => "max_documents",
            Limit::Passages => "max_passages",
            Limit::MetadataBytes => "max_metadata_bytes",
            Limit::K => "max_k",
            Limit::Ef => "max_ef",
            Limit::Nprobe => "max_nprobe",
            Limit::Nlist => "max_nlist",
            Limit::Batch => "max_client_batch_size",
            Limit::BatchK => "max_batch_k",
            Limit::FilterDepth => "max_filter_depth",
            Limit::FilterValues => "max_filter_values",
            Limit::Collections => "max_collections",
        }
    }

    /// The environment variable that sets it (the flag is the same name in kebab case).
    pub fn env(self) -> &'static str {
        match self {
            Limit::TextBytes => "VICINITY_MAX_TEXT_BYTES",
            Limit::Documents => "VICINITY_MAX_DOCUMENTS",
            Limit::Passages => "VICINITY_MAX_PASSAGES",
            Limit::MetadataBytes => "VICINITY_MAX_METADATA_BYTES",
            Limit::K => "VICINITY_MAX_K",
            Limit::Ef => "VICINITY_MAX_EF",
            Limit::Nprobe => "VICINITY_MAX_NPROBE",
            Limit::Nlist => "VICINITY_MAX_NLIST",
            Limit::Batch => "VICINITY_MAX_CLIENT_BATCH_SIZE",
            Limit::BatchK => "VICINITY_MAX_BATCH_K",
            Limit::FilterDepth => "VICINITY_MAX_FILTER_DEPTH",
            Limit::FilterValues => "VICINITY_MAX_FILTER_VALUES",
            Limit::Collections => "VICINITY_MAX_COLLECTIONS",
        }
    }

    /// How a refusal is reported.
    pub fn kind(self) -> LimitKind {
        match self {
            Limit::TextBytes
            | Limit::Documents
            | Limit::Passages
            | Limit::MetadataBytes
            | Limit::Batch
            | Limit::BatchK => LimitKind::Size,
            Limit::K
            | Limit::Ef
            | Limit::Nprobe
            | Limit::Nlist
            | Limit::FilterDepth
            | Limit::FilterValues => LimitKind::Range,
            Limit::Collections => LimitKind::Capacity,
        }
    }

    /// The refusal of `what` (which is `got`) over this limit's `max`.
    pub fn exceeded(self, what: &str, got: usize, max: usize) -> ServiceError {
        ServiceError::LimitExceeded {
            limit: self,
            message: format!(
                "{what} is {got}; the limit is {max} ({}, set with --{} or {})",
                self.name(),
                self.name().replace('_', "-"),
                self.env()
            ),
        }
    }

    /// Refuses `got` when it is over `max`.
    pub fn check(self, what: &str, got: usize, max: usize) -> ServiceResult<()> {
        if got > max {
            Err(self.exceeded(what, got, max))
        } else {
            Ok(())
        }
    }
}

/// The admission limits of a server. The defaults suit a single node serving a RAG
/// application: generous for real requests, small enough that no single request can hold the
/// encoder, the search slots or the memory for long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest query text or embedding input, in bytes (UTF-8), checked before tokenizing. The
    /// default model reads 256 tokens, about 1.5 KB of English; 16 KiB leaves room for other
    /// languages and longer models while a refused text costs nothing.
    pub max_text_bytes: usize,
    /// Most documents in one upsert, and most ids in one read or delete.
    pub max_documents: usize,
    /// Most passages one upsert may split into (checked after splitting, before embedding).
    pub max_passages: usize,
    /// Largest metadata object of one document, as compact JSON. Metadata is held in memory
    /// for filters and copied into every hit that returns it.
    pub max_metadata_bytes: usize,
    /// Largest `k` of a query.
    pub max_k: usize,
    /// Largest HNSW `ef` of a query or a collection.
    pub max_ef: usize,
    /// Largest IVF `nprobe` of a query or a collection.
    pub max_nprobe: usize,
    /// Largest IVF `nlist` of a collection: k-means costs grow with it.
    pub max_nlist: usize,
    /// Most queries in one batch query, and most inputs in one embedding request.
    pub max_batch: usize,
    /// Most hits one batch query may ask for: the sum of its queries' `k`.
    pub max_batch_k: usize,
    /// Deepest nesting of `$and`/`$or` in a filter.
    pub max_filter_depth: usize,
    /// Most values in one `$in`/`$nin` list.
    pub max_filter_values: usize,
    /// Most collections on the server (each keeps its vectors in memory and a task of its own).
    pub max_collections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 16 * 1024,
            max_documents: 10_000,
            max_passages: 20_000,
            max_metadata_bytes: 64 * 1024,
            max_k: 1000,
            max_ef: 4096,
            max_nprobe: 16_384,
            max_nlist: 65_536,
            max_batch: 2048,
            max_batch_k: 20_000,
            max_filter_depth: 8,
            max_filter_values: 1024,
            max_collections: 1000,
        }
    }
}

impl Limits {
    /// Checks a query text's size, before it is tokenized.
    pub fn check_text(&self, what: &str, text: &str) -> ServiceResult<()> {
        Limit::TextBytes.check(
            &format!("{what}'s size in bytes"),
            text.len(),
            self.max_text_bytes,
        )
    }

    /// Checks a document's metadata size.
    pub fn check_metadata(&self, doc: &str, metadata: &Value) -> ServiceResult<()> {
        if metadata.is_null() {
            return Ok(());
        }
        let bytes = json_size(metadata);
        Limit::MetadataBytes.check(
            &format!("the metadata of document '{doc}', in bytes of JSON,"),
            bytes,
            self.max_metadata_bytes,
        )
    }
}

/// The length of a value's compact JSON text, counted without building it.
pub(crate) fn json_size(v: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Counter(0);
    serde_json::to_writer(&mut c, v).expect("a JSON value always serialises. This is a bug.");
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_size_is_the_compact_length() {
        let v = json!({"a": [1, 2, "é"], "b": null});
        assert_eq!(json_size(&v), serde_json::to_string(&v).unwrap().len());
    }

    #[test]
    fn refusals_name_the_setting() {
        let e = Limit::K.check("k", 1001, 1000).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("max_k") && text.contains("VICINITY_MAX_K"),
            "{text}"
        );
        assert!(Limit::K.check("k", 1000, 1000).is_ok());
        let limits = Limits::default();
        assert!(
            limits
                .check_text("the query text", &"x".repeat(16 * 1024))
                .is_ok()
        );
        let e = limits
            .check_text("the query text", &"x".repeat(16 * 1024 + 1))
            .unwrap_err();
        assert!(matches!(
            e,
            ServiceError::LimitExceeded {
                limit: Limit::TextBytes,
                ..
            }
        ));
    }
}
