//! Durable storage of collections, documents, passages and their vectors: embedded SQLite by
//! default, or a PostgreSQL server that several vicinity nodes can share, both through sqlx.
//!
//! This layer knows rows and SQL; it knows nothing of HTTP, of index internals or of the
//! embedding model. The service above it keeps the vector indexes in memory and uses the store
//! as the source of truth: every write is one transaction, and what a write returns (the new
//! and the removed passage ids) is exactly what the in-memory indexes must apply.
//!
//! # Durability and concurrency
//! SQLite runs in WAL mode with `synchronous = FULL`, PostgreSQL with its own write-ahead log:
//! on both, once a write method returns `Ok` the transaction is committed and survives a killed
//! process. Readers never block writers nor each other, and a read that starts after a write
//! returned sees it.
//!
//! SQLite allows one writer at a time. Rather than letting concurrent write transactions race
//! for the lock (which can fail with `SQLITE_BUSY` no matter the busy timeout, when a
//! transaction that has read tries to upgrade to a write), all its writes go through a pool of
//! exactly one connection, so they queue in the process, and each begins with
//! `BEGIN IMMEDIATE`, so that even another process holding the lock only makes it wait for
//! the busy timeout. Reads use a separate pool of read-only connections.
//!
//! PostgreSQL takes writes from many connections (and many nodes) at once. Every write that
//! changes a collection's documents first locks the collection's row (`SELECT ... FOR
//! UPDATE`), so the writes of one collection commit one after the other, as they do on SQLite:
//! two upserts of the same new document cannot both insert its passages, and the order in
//! which a collection's writes commit is the order in which they took the lock.
//!
//! A write whose future is dropped before it completes may or may not have committed. Callers
//! that mirror writes in memory (the vector indexes) should drive each write to completion,
//! e.g. in a spawned task, so that they always learn what was committed.
//!
//! # Schema
//! `migrations/` holds the SQLite schema and `migrations/postgres/` the same schema in
//! PostgreSQL's types, both embedded in the binary and applied by [`Store::open`]. Passage and
//! collection ids are never reused. Vectors are stored as little-endian `f32` blobs and checked
//! against the collection's dimension when read back.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

mod cache;
mod codec;
mod collections;
mod documents;
mod error;
pub(crate) mod feed;
mod rows;
mod scan;

pub use cache::PassageCacheStats;
pub use error::{StoreError, StoreResult};
pub use feed::{
    Catchup, ChangeListener, CollectionVersion, DocumentState, NodeRecord, StatePassage,
};
pub use rows::{
    CollectionId, CollectionRecord, CollectionSource, CollectionSummary, CreateOutcome,
    DeletedDocument, DocumentPage, DocumentPassages, DocumentRecord, NewCollection, NewDocument,
    NewPassage, PageRequest, PassageId, PassageRecord, Span, UpsertedDocument, VectorChunk,
};
pub use scan::{DocumentScan, VectorScan};

/// The SQLite schema migrations, embedded at compile time.
static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
/// The PostgreSQL schema migrations, embedded at compile time.
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Longest wait for a PostgreSQL connection; see [`Store::open`].
const PG_CONNECT_WAIT: Duration = Duration::from_secs(5);

/// The first key of the advisory locks that [`Store::claim`] takes ("vcty" in ASCII); the
/// second is a hash of the node id.
const CLAIM_LOCK: i32 = 0x7663_7479;

/// SQLite page size of new databases; see [`Store::open`].
const PAGE_SIZE: u32 = 8192;

/// Tuning of [`Store::open`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// Most read connections open at once (at least 1); on PostgreSQL, most connections of
    /// any kind.
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
    /// The id of this node, recorded with each change it writes to the feed.
    pub node_id: String,
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
            node_id: "local".into(),
        }
    }
}

/// The database engine behind a [`Store`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An SQLite file on this machine.
    Sqlite,
    /// A PostgreSQL server, possibly shared with other nodes.
    Postgres,
}

impl Backend {
    /// `"sqlite"` or `"postgres"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The connections of a store, per backend.
#[derive(Clone, Debug)]
enum Db {
    Sqlite {
        /// Exactly one connection: writes queue here instead of racing for SQLite's write
        /// lock.
        writer: SqlitePool,
        /// Read-only connections.
        readers: SqlitePool,
        /// The database file.
        path: PathBuf,
    },
    Postgres(PgPool),
}

/// A statement whose text differs between the backends.
pub(crate) struct Dialects {
    pub(crate) sqlite: &'static str,
    pub(crate) postgres: &'static str,
}

/// Runs `$body` on a new write transaction bound to `$tx`, once per backend (the body is
/// type-checked against each), with `$b` bound to the [`Backend`] for the statements whose
/// text differs. A write transaction on SQLite takes the database's write lock at once.
macro_rules! write_tx {
    ($store:expr, |$tx:ident, $b:ident| $body:block) => {
        match &$store.db {
            $crate::store::Db::Sqlite { writer, .. } => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Sqlite;
                #[allow(unused_mut)]
                let mut $tx = writer.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Postgres;
                #[allow(unused_mut)]
                let mut $tx = pool.begin().await?;
                $body
            }
        }
    };
}

/// Runs `$body` on a new read transaction bound to `$tx`: all its statements see one
/// snapshot (on PostgreSQL, a repeatable-read, read-only transaction).
macro_rules! read_tx {
    ($store:expr, |$tx:ident, $b:ident| $body:block) => {
        match &$store.db {
            $crate::store::Db::Sqlite { readers, .. } => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Sqlite;
                #[allow(unused_mut)]
                let mut $tx = readers.begin().await?;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Postgres;
                #[allow(unused_mut)]
                let mut $tx = pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?;
                $body
            }
        }
    };
}

/// Runs `$body` with `$pool` bound to the pool single reads use, once per backend.
macro_rules! read_pool {
    ($store:expr, |$pool:ident, $b:ident| $body:block) => {
        match &$store.db {
            $crate::store::Db::Sqlite { readers, .. } => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Sqlite;
                let $pool = readers;
                $body
            }
            $crate::store::Db::Postgres(pool) => {
                #[allow(unused_variables)]
                let $b = $crate::store::Backend::Postgres;
                let $pool = pool;
                $body
            }
        }
    };
}

pub(crate) use {read_pool, read_tx, write_tx};

impl Backend {
    /// The text of `sql` for this backend.
    pub(crate) fn pick(self, sql: &Dialects) -> &'static str {
        match self {
            Backend::Sqlite => sql.sqlite,
            Backend::Postgres => sql.postgres,
        }
    }
}

/// A handle on the database: cheap to clone, safe to share between tasks.
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
    /// On PostgreSQL, the connection that holds this node's claim on its id (see
    /// [`Store::claim`]).
    claim: Arc<tokio::sync::Mutex<Option<sqlx::PgConnection>>>,
    /// This node's id, recorded with the changes it writes.
    node: Arc<str>,
    /// Passage rows recently read by [`Store::get_passages`].
    passage_cache: Arc<cache::PassageCache>,
}

impl Store {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// `postgres://...` (or `postgresql://...`) names a PostgreSQL database, with the usual
    /// libpq URL parameters (`?host=/run/postgresql` for a Unix socket, `sslmode`, ...); the
    /// database must exist. Anything else is an SQLite file: `sqlite://PATH`, `sqlite:PATH` or
    /// a plain file path, `sqlite:///abs/db` for an absolute path, created with its missing
    /// parent directories. SQLite in-memory databases, SQLite URL parameters and other schemes
    /// are refused with [`StoreError::Invalid`]: the store's guarantees need a file, and it sets
    /// its own connection options.
    pub async fn open(url: &str, opts: &StoreOptions) -> StoreResult<Store> {
        let db = match url_scheme(url) {
            Some("postgres" | "postgresql") => Self::open_postgres(url, opts).await?,
            _ => Self::open_sqlite(url, opts).await?,
        };
        Ok(Store {
            db,
            claim: Arc::default(),
            node: opts.node_id.as_str().into(),
            passage_cache: Arc::new(cache::PassageCache::new(opts.passage_cache_bytes)),
        })
    }

    /// Claims this node's id for this process, for as long as the store is open (on
    /// PostgreSQL, a session advisory lock on a connection of its own; SQLite needs none, its
    /// file is in this server's data directory). Nodes that share a database tell their
    /// changes and their applied versions apart by id: a second process started with an id in
    /// use (a copied data directory, say) is refused with [`StoreError::Conflict`].
    pub async fn claim(&self) -> StoreResult<()> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(());
        };
        let mut held = self.claim.lock().await;
        if held.is_some() {
            return Ok(());
        }
        let mut conn: sqlx::PgConnection =
            sqlx::ConnectOptions::connect(&*pool.connect_options()).await?;
        let claimed: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
            .bind(CLAIM_LOCK)
            .bind(&*self.node)
            .fetch_one(&mut conn)
            .await?;
        if !claimed {
            let _ = sqlx::Connection::close(conn).await;
            return Err(StoreError::Conflict(format!(
                "node id '{}' is in use by another running vicinity server on this database; \
                 give each node its own id",
                self.node
            )));
        }
        *held = Some(conn);
        Ok(())
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node
    }

    async fn open_sqlite(url: &str, opts: &StoreOptions) -> StoreResult<Db> {
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
        SQLITE_MIGRATOR.run(&writer).await?;

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
        Ok(Db::Sqlite {
            writer,
            readers,
            path,
        })
    }

    async fn open_postgres(url: &str, opts: &StoreOptions) -> StoreResult<Db> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("database URL: {e}")))?
            .application_name("vicinity");
        // Reads and writes share one pool: PostgreSQL serialises what must be serialised
        // (the collection row locks), so writes need no queue of their own; the two extra
        // connections keep a burst of reads from starving the writes.
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_readers.max(1) + 2)
            .min_connections(1)
            // The pool keeps trying to connect until this runs out: with the server down, a
            // write should learn so in seconds (503, retry), not after the read wait.
            .acquire_timeout(opts.read_wait.min(PG_CONNECT_WAIT))
            .connect_with(options)
            .await?;
        // Nodes that start together take turns: the migrator holds an advisory lock.
        if let Err(e) = POSTGRES_MIGRATOR.run(&pool).await {
            pool.close().await;
            return Err(e.into());
        }
        Ok(Db::Postgres(pool))
    }

    /// The database engine behind this store.
    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite { .. } => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite database file; `None` on PostgreSQL.
    pub fn path(&self) -> Option<&Path> {
        match &self.db {
            Db::Sqlite { path, .. } => Some(path),
            Db::Postgres(_) => None,
        }
    }

    /// Hits, misses and size of the passage cache.
    pub fn passage_cache_stats(&self) -> PassageCacheStats {
        self.passage_cache.stats()
    }

    /// Closes every connection, waiting for operations in flight to finish (including open
    /// [`VectorScan`]s and [`DocumentScan`]s: drop them first). Later calls on any clone of this
    /// store fail with a [`StoreError::Database`] (pool closed).
    pub async fn close(&self) {
        match &self.db {
            Db::Sqlite {
                writer, readers, ..
            } => {
                readers.close().await;
                writer.close().await;
            }
            Db::Postgres(pool) => {
                if let Some(conn) = self.claim.lock().await.take() {
                    let _ = sqlx::Connection::close(conn).await;
                }
                pool.close().await;
            }
        }
    }
}

/// The time a write records, as stored: RFC 3339 UTC with milliseconds. Taken from this
/// machine's clock rather than the database's, so that both backends store the same format.
fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A read transaction of either backend, held by the scans from their first chunk to their
/// last.
#[derive(Debug)]
enum ReadTx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl From<Transaction<'static, Sqlite>> for ReadTx {
    fn from(tx: Transaction<'static, Sqlite>) -> Self {
        ReadTx::Sqlite(tx)
    }
}

impl From<Transaction<'static, Postgres>> for ReadTx {
    fn from(tx: Transaction<'static, Postgres>) -> Self {
        ReadTx::Postgres(tx)
    }
}

/// `url` with its password (in the user part or a `password=` parameter) replaced by `***`,
/// for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => match user.split_once(':') {
            Some((name, _)) => format!("{name}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// The file a database URL or path names.
fn database_path(url: &str) -> StoreResult<PathBuf> {
    let invalid =
        |reason: &str| StoreError::Invalid(format!("database URL '{}': {reason}", redact_url(url)));
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
            "unsupported scheme '{scheme}': use postgres://... for PostgreSQL, or \
             sqlite://PATH, sqlite:PATH or a file path for SQLite"
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
    fn passwords_are_redacted() {
        for (url, shown) in [
            (
                "postgres://u:secret@h:5432/db",
                "postgres://u:***@h:5432/db",
            ),
            ("postgres://u@h/db", "postgres://u@h/db"),
            (
                "postgres://h/db?user=u&password=secret",
                "postgres://h/db?user=u&password=***",
            ),
            (
                "postgres://u:p%40ss@h/db?sslmode=require",
                "postgres://u:***@h/db?sslmode=require",
            ),
            ("sqlite:///data/v.db", "sqlite:///data/v.db"),
            ("v.db", "v.db"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn other_locations_are_refused() {
        for url in [
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
        let msg = database_path("mysql://h/db").unwrap_err().to_string();
        assert!(msg.contains("unsupported scheme 'mysql'"), "{msg}");
    }
}
