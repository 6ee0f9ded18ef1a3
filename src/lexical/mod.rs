//! The lexical index of a text collection: BM25 over its passages, with tantivy.
//!
//! Dense search misses exact terms (identifiers, error names, option names); BM25 finds them.
//! A [`LexicalIndex`] holds one tantivy index per collection in its own directory, keyed by
//! passage id: a passage is one tantivy document with the id (indexed, to delete it by, and a
//! fast field, to read it back from a hit) and the text (indexed with term frequencies and
//! lengths, not stored: the store keeps the text).
//!
//! The store is the authority. A write reaches this index after the store has committed it, and
//! is committed here before the write is acknowledged, so the next query finds it; a crash in
//! between leaves this index behind the store, never ahead of it with a passage the store
//! lacks. At start the service compares the passage ids here with the store's and replays the
//! difference ([`LexicalIndex::passage_ids`], [`LexicalIndex::apply`]); an index that is missing
//! or cannot be opened (torn, or of another analyzer) is rebuilt from the stored text, and
//! [`Opened`] says which happened.
//!
//! All methods are synchronous and do I/O or CPU work: call them on blocking threads.

mod analyzer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::{FilterCollector, TopDocs};
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

pub use analyzer::LANGUAGES;

/// Name under which the collection's analyzer is registered; the schema names it, so an index
/// built with another name (another version's analyzer) is rebuilt rather than misread.
const ANALYZER: &str = "vicinity-identifiers-v1";

/// Memory the writer buffers before it writes a segment. tantivy's minimum; writes are
/// committed one by one, so a larger buffer would only fill during rebuilds.
const WRITER_MEMORY: usize = 15_000_000;

/// Name of the file beside the index that records the analyzer's language.
const SETTINGS_FILE: &str = "vicinity-lexical.json";

/// Most terms of a query that are searched; the rest are ignored. Bounds the work of a long
/// query text (each term is a posting list walk).
pub const MAX_QUERY_TERMS: usize = 256;

/// What went wrong in the lexical index.
#[derive(Debug, thiserror::Error)]
pub enum LexicalError {
    /// tantivy failed (I/O, a damaged file).
    #[error("lexical index at {}: {source}", dir.display())]
    Tantivy {
        /// The index directory.
        dir: PathBuf,
        /// What tantivy said.
        source: tantivy::TantivyError,
    },
    /// A file beside the index could not be read or written.
    #[error("lexical index at {}: {source}", dir.display())]
    Io {
        /// The index directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The language is not one the analyzer knows.
    #[error("unknown lexical language '{0}'; supported: {LANGUAGES}")]
    UnknownLanguage(String),
}

/// Result of the lexical index's operations.
pub type LexicalResult<T> = Result<T, LexicalError>;

/// How [`LexicalIndex::open`] found the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opened {
    /// An index was there and opened; the caller replays what it lacks.
    Existing,
    /// There was none: a new, empty index was made.
    Created,
    /// One was there but could not be used (the reason says why): it was removed and a new,
    /// empty one made in its place.
    Replaced(String),
}

/// Whether `code` names a language the analyzer knows (see [`LANGUAGES`]).
pub fn is_language(code: &str) -> bool {
    analyzer::analyzer(code).is_some()
}

/// Why an existing index was not opened.
enum Unusable {
    /// It cannot be used; a new one takes its place.
    Because(String),
    /// It could not be opened for a reason a new one would share (I/O, a lock held).
    Fatal(LexicalError),
}

impl From<String> for Unusable {
    fn from(reason: String) -> Self {
        Unusable::Because(reason)
    }
}

/// A collection's BM25 index. See the module docs.
pub struct LexicalIndex {
    dir: PathBuf,
    reader: IndexReader,
    /// The one writer; `None` once [`close`](Self::close)d.
    writer: Mutex<Option<IndexWriter>>,
    analyzer: Mutex<TextAnalyzer>,
    pid: Field,
    text: Field,
}

impl std::fmt::Debug for LexicalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LexicalIndex")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn schema() -> (Schema, Field, Field) {
    let mut b = Schema::builder();
    let pid = b.add_u64_field("pid", NumericOptions::default() | INDEXED | FAST);
    let text = b.add_text_field(
        "text",
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        ),
    );
    (b.build(), pid, text)
}

impl LexicalIndex {
    /// Opens the index in `dir` with the analyzer of `language`, or makes a new one there (see
    /// [`Opened`]).
    ///
    /// # Errors
    /// [`LexicalError::UnknownLanguage`]; I/O errors making the directory or a new index.
    pub fn open(dir: &Path, language: &str) -> LexicalResult<(LexicalIndex, Opened)> {
        let analyzer = analyzer::analyzer(language)
            .ok_or_else(|| LexicalError::UnknownLanguage(language.to_string()))?;
        let io = |source| LexicalError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        let outcome = if dir.join("meta.json").exists() {
            match Self::open_existing(dir, language, analyzer.clone()) {
                Ok(index) => return Ok((index, Opened::Existing)),
                Err(Unusable::Fatal(e)) => return Err(e),
                Err(Unusable::Because(reason)) => {
                    std::fs::remove_dir_all(dir).map_err(io)?;
                    Opened::Replaced(reason)
                }
            }
        } else {
            if dir.exists() {
                // A directory without the index's metadata: a creation cut short.
                std::fs::remove_dir_all(dir).map_err(io)?;
            }
            Opened::Created
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, _, _) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(|source| LexicalError::Tantivy {
            dir: dir.to_path_buf(),
            source,
        })?;
        let settings = serde_json::json!({ "language": language }).to_string();
        std::fs::write(dir.join(SETTINGS_FILE), settings).map_err(io)?;
        Ok((Self::with_index(dir, index, analyzer)?, outcome))
    }

    /// Opens an existing index made with the same analyzer; the error says why it cannot be.
    fn open_existing(dir: &Path, language: &str, analyzer: TextAnalyzer) -> Result<Self, Unusable> {
        let settings: serde_json::Value = std::fs::read(dir.join(SETTINGS_FILE))
            .map_err(|e| format!("its settings cannot be read: {e}"))
            .and_then(|b| {
                serde_json::from_slice(&b).map_err(|e| format!("its settings are damaged: {e}"))
            })?;
        let stored = settings.get("language").and_then(|l| l.as_str());
        if stored != Some(language) {
            return Err(Unusable::Because(format!(
                "it was built for language {stored:?}, the collection's is '{language}'"
            )));
        }
        let index = Index::open_in_dir(dir).map_err(|e| format!("it is damaged: {e}"))?;
        let (expected, _, _) = schema();
        if index.schema() != expected {
            return Err(Unusable::Because("it was built with another schema".into()));
        }
        // A writer that cannot start (the index is open elsewhere) is no reason to replace it.
        let opened = Self::with_index(dir, index, analyzer).map_err(Unusable::Fatal)?;
        // Every segment's id column is read here, so that a torn segment shows now rather
        // than at the first query.
        opened
            .passage_ids()
            .map_err(|e| format!("it is damaged: {e}"))?;
        Ok(opened)
    }

    fn with_index(dir: &Path, index: Index, analyzer: TextAnalyzer) -> LexicalResult<Self> {
        let tantivy = |source| LexicalError::Tantivy {
            dir: dir.to_path_buf(),
            source,
        };
        index.tokenizers().register(ANALYZER, analyzer.clone());
        let (_, pid, text) = schema();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(tantivy)?;
        let writer = index
            .writer_with_options(
                tantivy::indexer::IndexWriterOptions::builder()
                    .num_worker_threads(1)
                    .num_merge_threads(1)
                    .memory_budget_per_thread(WRITER_MEMORY)
                    .build(),
            )
            .map_err(tantivy)?;
        Ok(LexicalIndex {
            dir: dir.to_path_buf(),
            reader,
            writer: Mutex::new(Some(writer)),
            analyzer: Mutex::new(analyzer),
            pid,
            text,
        })
    }

    fn tantivy(&self, source: tantivy::TantivyError) -> LexicalError {
        LexicalError::Tantivy {
            dir: self.dir.clone(),
            source,
        }
    }

    /// The ids of every passage the index holds, in no particular order.
    ///
    /// # Errors
    /// A segment whose id column cannot be read.
    pub fn passage_ids(&self) -> LexicalResult<Vec<u64>> {
        let searcher = self.reader.searcher();
        let mut ids = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let column = segment
                .fast_fields()
                .u64("pid")
                .map_err(|e| self.tantivy(e))?;
            let alive = segment.alive_bitset();
            for doc in 0..segment.max_doc() {
                if alive.is_none_or(|a| a.is_alive(doc))
                    && let Some(id) = column.first(doc)
                {
                    ids.push(id);
                }
            }
        }
        Ok(ids)
    }

    /// Removes the passages `removed` and adds `added` (id and text), commits, and makes the
    /// change visible to searches. A passage added twice is indexed twice: callers add each
    /// once (the store's ids are never reused).
    ///
    /// # Errors
    /// tantivy failed to index or commit; nothing of the change is then committed.
    pub fn apply<'t>(
        &self,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'t str)>,
    ) -> LexicalResult<()> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some(writer) = guard.as_mut() else {
            return Err(self.tantivy(tantivy::TantivyError::InvalidArgument(
                "the index is closed".into(),
            )));
        };
        for &id in removed {
            writer.delete_term(Term::from_field_u64(self.pid, id));
        }
        for (id, text) in added {
            let mut doc = TantivyDocument::default();
            doc.add_u64(self.pid, id);
            doc.add_text(self.text, text);
            if let Err(e) = writer.add_document(doc) {
                let _ = writer.rollback();
                return Err(self.tantivy(e));
            }
        }
        if let Err(e) = writer.commit() {
            let _ = writer.rollback();
            return Err(self.tantivy(e));
        }
        drop(guard);
        self.reader.reload().map_err(|e| self.tantivy(e))
    }

    /// The analyzed terms of `text`, each once, at most [`MAX_QUERY_TERMS`].
    pub fn query_terms(&self, text: &str) -> Vec<String> {
        let mut analyzer = self.analyzer.lock().unwrap_or_else(|p| p.into_inner());
        let mut stream = analyzer.token_stream(text);
        let mut terms: Vec<String> = Vec::new();
        while stream.advance() && terms.len() < MAX_QUERY_TERMS {
            let t = &stream.token().text;
            if !terms.contains(t) {
                terms.push(t.clone());
            }
        }
        terms
    }

    /// The `k` passages with the highest BM25 score for the terms of `text` (any of them may
    /// match), best first, with their scores; only passages `allow` accepts when it is given.
    ///
    /// # Errors
    /// tantivy failed to read the index.
    pub fn search(
        &self,
        text: &str,
        k: usize,
        allow: Option<std::sync::Arc<dyn Fn(u64) -> bool + Send + Sync>>,
    ) -> LexicalResult<Vec<(u64, f32)>> {
        let terms = self.query_terms(text);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let term = Term::from_field_text(self.text, t);
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(k).order_by_score();
        let found: Vec<(f32, DocAddress)> = match allow {
            None => searcher.search(&query, &top),
            Some(allow) => {
                let filtered =
                    FilterCollector::new("pid".to_string(), move |id: u64| allow(id), top);
                searcher.search(&query, &filtered)
            }
        }
        .map_err(|e| self.tantivy(e))?;
        let mut columns = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(found.len());
        for (score, addr) in found {
            let column = match columns.entry(addr.segment_ord) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(
                    searcher
                        .segment_reader(addr.segment_ord)
                        .fast_fields()
                        .u64("pid")
                        .map_err(|e| self.tantivy(e))?,
                ),
            };
            if let Some(id) = column.first(addr.doc_id) {
                out.push((id, score));
            }
        }
        Ok(out)
    }

    /// Number of passages indexed.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether no passage is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the index takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Stops the writer, waiting for its merges, so that the directory can be removed.
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer
            && let Err(e) = writer.wait_merging_threads()
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "lexical index merge failed");
        }
    }
}

#[cfg(test)]
mod tests;
