//! Durable storage of collections, documents, passages and their vectors, in SQLite via sqlx.
//!
//! This layer knows rows and SQL; it knows nothing of HTTP, of index internals or of the
//! embedding model. The service above it keeps the vector indexes in memory and uses the store
//! as the source of truth: every write is one transaction, and what a write returns (the new
//! and the removed passage ids) is exactly what the in-memory indexes must apply.
//!
//! # Durability and concurrency
//! The database runs in WAL mode with `synchronous = FULL`: once a write method returns `Ok`,
//! the transaction is on disk and survives a killed process and a power loss. Readers never
//! block the writer nor each other, and a read that starts after a write returned sees it.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent write transactions race
//! for the lock (which can fail with `SQLITE_BUSY` no matter the busy timeout, when a
//! transaction that has read tries to upgrade to a write), all writes go through a pool of
//! exactly one connection, so they queue in the process, and each begins with
//! `BEGIN IMMEDIATE`, so that even another process holding the lock only makes it wait for
//! the busy timeout. Reads use a separate pool of read-only connections.
//!
//! A write whose future is dropped before it completes may or may not have committed. Callers
//! that mirror writes in memory (the vector indexes) should drive each write to completion,
//! e.g. in a spawned task, so that they always learn what was committed.
//!
//! # Schema
//! `migrations/` holds the schema, embedded in the binary and applied by [`Store::open`].
//! Passage and collection ids use `AUTOINCREMENT` and are never reused. Vectors are stored as
//! little-endian `f32` blobs and checked against the collection's dimension when read back.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

mod cache;
mod codec;
mod collections;
mod documents;
mod error;
mod rows;
mod scan;

pub use cache::PassageCacheStats;
pub use error::{StoreError, StoreResult};
pub use rows::{
    CollectionId, CollectionRecord, CollectionSource, CollectionSummary, CreateOutcome,
    DeletedDocument, DocumentPage, DocumentPassages, DocumentRecord, NewCollection, NewDocument,
    NewPassage, PageRequest, PassageId, PassageRecord, UpsertedDocument, VectorChunk,
};
pub use scan::{DocumentScan, VectorScan};

/// The schema migrations, embedded at compile time.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// SQLite page size of new databases; see [`Store::open`].
const PAGE_SIZE: u32 = 8192;

/// The current time as stored: RFC 3339 UTC with milliseconds.
const NOW_SQL: &str = "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Tuning of [`Store::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most read connections open at once (at least 1).
    pub max_readers: u32,
    /// How long SQLite waits for a lock held by another process before it gives up with
    /// `SQLITE_BUSY`.
    pub busy_timeout: Duration,
    /// How long a write waits for its turn behind the writes queued before it.
    pub write_wait: Duration,
    /// How long a read waits for a free read connection.
    pub read_wait: Duration,
    /// Most bytes of passage rows kept in memory for search results (0: none); see
    /// [`Store::get_passages`].
    pub passage_cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
        StoreOptions {
            max_readers: u32::try_from(cores * 2).unwrap_or(u32::MAX).clamp(4, 64),
            busy_timeout: Duration::from_secs(30),
            write_wait: Duration::from_secs(300),
            read_wait: Duration::from_secs(30),
            passage_cache_bytes: 64 << 20,
        }
    }
}

/// A handle on the database: cheap to clone, safe to share between tasks.
#[derive(Clone, Debug)]
pub struct Store {
    /// Exactly one connection: writes queue here instead of racing for SQLite's write lock.
    writer: SqlitePool,
    /// Read-only connections.
    readers: SqlitePool,
    /// The database file.
    path: PathBuf,
    /// Passage rows recently read by [`Store::get_passages`].
    passage_cache: Arc<cache::PassageCache>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    ///
    /// `url` is `sqlite://PATH`, `sqlite:PATH` or a plain file path; `sqlite:///abs/db` is an
    /// absolute path. Missing parent directories are created. In-memory databases, query
    /// parameters and other URL schemes are refused with [`StoreError::Invalid`]: the store's
    /// guarantees need a file, and it sets its own connection options.
    pub async fn open(url: &str, opts: &StoreOptions) -> StoreResult<Store> {
        let path = database_path(url)?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|source| StoreError::Io {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }

        let common = SqliteConnectOptions::new()
            .filename(&path)
            .foreign_keys(true)
            .busy_timeout(opts.busy_timeout);
        let writer_options = common
            .clone()
            .create_if_missing(true)
            // Takes effect when the file is created. A 384-d vector row is ~1.6 KiB: two fit a
            // 4 KiB page with a fifth of it wasted, five fit 8 KiB. Measured on 100k such rows,
            // 8 KiB pages give a ~20% (vector) to ~33% (vector + passage text) smaller file,
            // ~1.5x faster bulk inserts and faster full scans.
            .page_size(PAGE_SIZE)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // Without a limit the WAL file keeps the size of the largest write ever made.
            .pragma("journal_size_limit", (64 * 1024 * 1024).to_string())
            .optimize_on_close(true, 400);
        // The single writer connection stays open for the life of the store, which also keeps
        // the WAL and shared-memory files in place for the read-only connections.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(opts.write_wait)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await?;
        MIGRATOR.run(&writer).await?;

        let readers = SqlitePoolOptions::new()
            .max_connections(opts.max_readers.max(1))
            .min_connections(1)
            .acquire_timeout(opts.read_wait)
            .connect_with(common.read_only(true))
            .await;
        let readers = match readers {
            Ok(pool) => pool,
            Err(e) => {
                writer.close().await;
                return Err(e.into());
            }
        };
        Ok(Store {
            writer,
            readers,
            path,
            passage_cache: Arc::new(cache::PassageCache::new(opts.passage_cache_bytes)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hits, misses and size of the passage cache.
    pub fn passage_cache_stats(&self) -> PassageCacheStats {
        self.passage_cache.stats()
    }

    /// Closes every connection, waiting for operations in flight to finish (including open
    /// [`VectorScan`]s and [`DocumentScan`]s: drop them first). Later calls on any clone of this
    /// store fail with a [`StoreError::Database`] (pool closed).
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// Starts a write transaction: takes the writer connection (waiting for earlier writes)
    /// and the database's write lock at once.
    async fn begin_write(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Starts a read transaction, so several statements see one snapshot.
    async fn begin_read(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.readers.begin().await?)
    }
}

/// The file a database URL or path names.
fn database_path(url: &str) -> StoreResult<PathBuf> {
    let invalid = |reason: &str| StoreError::Invalid(format!("database URL '{url}': {reason}"));
    let path = if let Some(rest) = url.strip_prefix("sqlite:") {
        // `sqlite://x` is `x`; `sqlite:///abs` keeps its leading slash.
        let rest = rest.strip_prefix("//").unwrap_or(rest);
        if rest.contains('?') {
            return Err(invalid(
                "query parameters are not supported; the store sets its own options",
            ));
        }
        rest
    } else if let Some(scheme) = url_scheme(url) {
        return Err(invalid(&format!(
            "unsupported scheme '{scheme}'; only SQLite is supported: use sqlite://PATH, \
             sqlite:PATH or a file path"
        )));
    } else {
        url
    };
    if path.is_empty() {
        return Err(invalid("no file path"));
    }
    if path == ":memory:" || path.starts_with("file:") {
        return Err(invalid(
            "in-memory and `file:` databases are not supported; give a file path",
        ));
    }
    PathBuf::from_str(path).map_err(|e| invalid(&e.to_string()))
}

/// The scheme of `s` if it starts like a URL (`postgres://`, `mysql:`...). Single letters are
/// not schemes, so that Windows drive letters (`C:\data\db`) read as paths.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && scheme.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_and_paths_name_files() {
        for (url, path) in [
            ("sqlite://data/v.db", "data/v.db"),
            ("sqlite:///var/lib/v.db", "/var/lib/v.db"),
            ("sqlite:data/v.db", "data/v.db"),
            ("sqlite:/abs/v.db", "/abs/v.db"),
            ("./data/v.db", "./data/v.db"),
            ("/abs/v.db", "/abs/v.db"),
            ("v.db", "v.db"),
            ("C:\\data\\v.db", "C:\\data\\v.db"),
        ] {
            assert_eq!(database_path(url).unwrap(), PathBuf::from(path), "{url}");
        }
    }

    #[test]
    fn other_locations_are_refused() {
        for url in [
            "postgres://user@host/db",
            "mysql://localhost/db",
            "file:v.db",
            "sqlite::memory:",
            "sqlite://:memory:",
            "sqlite://v.db?mode=ro",
            "sqlite://",
            "sqlite:",
            "",
        ] {
            let err = database_path(url).unwrap_err();
            assert!(matches!(err, StoreError::Invalid(_)), "{url}: {err}");
        }
        let msg = database_path("postgres://h/db").unwrap_err().to_string();
        assert!(msg.contains("unsupported scheme 'postgres'"), "{msg}");
    }
}
