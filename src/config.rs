//! The server's configuration: [`ServeConfig`], the flags and environment variables of
//! `vicinity serve` as clap parses them, and [`Settings`], what they mean once checked.
//!
//! Every flag has an environment variable (`VICINITY_…`); the doc comments are the `--help`
//! text. [`ServeConfig::validate`] checks the values once and fills in what depends on other
//! settings (the database in the data directory), so the rest of the program takes a
//! [`Settings`] whole and never re-checks. The model flags (`--model`, `--data-dir`, …) and
//! the embedding worker's batching flags are shared with the other subcommands that embed and
//! live with them in the binary.

use std::path::Path;
use std::time::Duration;

use crate::api::ApiSettings;
use crate::api::auth::{ApiKey, ApiKeys};
use crate::service::{ClusterSettings, Limits, PlannerSettings, ServiceSettings};
use crate::store::StoreOptions;

/// A configuration value that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {flag} ({env}): {reason}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// What is wrong.
    pub reason: String,
}

fn service_defaults() -> ServiceSettings {
    ServiceSettings::new("")
}

/// Flags of `vicinity serve` other than the model's and the embedding worker's.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on, HOST:PORT.
    #[arg(long, env = "VICINITY_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: String,

    /// Where collections are stored: an SQLite file (sqlite://PATH, or
    /// sqlite:///ABSOLUTE/PATH), or a PostgreSQL database (postgres://USER:PASSWORD@HOST/DB,
    /// which must exist). Default: sqlite://DATA_DIR/vicinity.db. Index snapshots and the
    /// lexical index stay in the data directory either way.
    #[arg(long, env = "VICINITY_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,

    /// This node's id among the nodes sharing a PostgreSQL database (letters, digits, '.',
    /// '_', '-'; at most 64). Default: an id made at first start and kept in the data
    /// directory (`node-id`).
    #[arg(long, env = "VICINITY_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,

    /// Where other nodes and operators reach this node's API, as `GET /cluster` shows it.
    /// Default: the address it listens on.
    #[arg(long, env = "VICINITY_ADVERTISE_ADDR", value_name = "HOST:PORT")]
    pub advertise_addr: Option<String>,

    /// With PostgreSQL: how often a node polls the change feed for other nodes' writes,
    /// besides being notified of them.
    #[arg(long, env = "VICINITY_FOLLOW_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub follow_interval: Duration,

    /// With PostgreSQL: how often a node records in the database that it is alive.
    #[arg(long, env = "VICINITY_HEARTBEAT_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// With PostgreSQL: a node silent this long counts as down, and stops holding back the
    /// pruning of the change feed.
    #[arg(long, env = "VICINITY_NODE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub node_timeout: Duration,

    /// With PostgreSQL: changes older than this leave the feed even if a node has not applied
    /// them (that node loads the collection again), and silent nodes leave the registry.
    #[arg(long, env = "VICINITY_FEED_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    pub feed_retention: Duration,

    /// Longest a query with `consistency.min_version` waits for this node to apply that
    /// version before it gets 503 `version_not_reached`.
    #[arg(long, env = "VICINITY_CONSISTENCY_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub consistency_timeout: Duration,

    /// Memory for passage rows kept to answer queries without reading the database, in MiB
    /// (0: read every result from the database).
    #[arg(long, env = "VICINITY_PASSAGE_CACHE_MB", default_value_t = StoreOptions::default().passage_cache_bytes >> 20)]
    pub passage_cache_mb: u64,

    /// Largest request body, in bytes; larger requests are refused with 413.
    #[arg(long, env = "VICINITY_MAX_BODY_BYTES", default_value_t = ApiSettings::default().max_body_bytes)]
    pub max_body_bytes: usize,

    /// Longest a request may take (body upload included), e.g. 60s or 2m; slower requests are
    /// answered 503 with code `timeout` (a write may still complete).
    #[arg(long, env = "VICINITY_REQUEST_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Truncate inputs of /v1/embeddings and /embed that are longer than the model reads,
    /// instead of refusing them with 400 `input_too_long` (/embed's `truncate` overrides it).
    #[arg(
        long,
        env = "VICINITY_AUTO_TRUNCATE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub auto_truncate: bool,

    /// The admission limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Searches running at once; more wait up to --search-queue-timeout, then get 429.
    /// Default: 4 per CPU, at least 8.
    #[arg(long, env = "VICINITY_SEARCH_CONCURRENCY")]
    pub search_concurrency: Option<usize>,

    /// How long a search waits for a free slot before it is refused with 429.
    #[arg(long, env = "VICINITY_SEARCH_QUEUE_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub search_queue_timeout: Duration,

    /// Collections (and filtered candidate sets) of at most this many passages are scanned
    /// exactly; larger collections get an approximate index (HNSW, or IVF where configured).
    #[arg(long, env = "VICINITY_EXACT_THRESHOLD", default_value_t = PlannerSettings::default().exact_threshold)]
    pub exact_threshold: usize,

    /// While requests wait for the encoder, background indexing waits too, until this many
    /// passages are left out of the approximate index (queries scan them exactly meanwhile).
    /// 0: index at once, alongside the encoder.
    #[arg(long, env = "VICINITY_INDEX_DEFER_MAX", default_value_t = PlannerSettings::default().defer_max_unindexed)]
    pub index_defer_max: usize,

    /// Filters estimated to match at most this fraction of a collection's passages are answered
    /// by an exact scan of the matches.
    #[arg(long, env = "VICINITY_FILTER_EXACT_FRACTION", default_value_t = PlannerSettings::default().filter_exact_fraction)]
    pub filter_exact_fraction: f64,

    /// Snapshot an approximate index after this many changes (or --snapshot-interval).
    #[arg(long, env = "VICINITY_SNAPSHOT_EVERY", default_value_t = service_defaults().snapshot_every_changes)]
    pub snapshot_every: u64,

    /// Snapshot an approximate index this long after its first unsaved change.
    #[arg(long, env = "VICINITY_SNAPSHOT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,

    /// Tokens neighbouring passages share, for collections created without `chunking`.
    #[arg(long, env = "VICINITY_CHUNK_OVERLAP", default_value_t = service_defaults().default_overlap)]
    pub chunk_overlap: usize,

    /// On SIGTERM or Ctrl-C, how long to wait for requests in flight before stopping anyway
    /// (the indexes are snapshotted either way).
    #[arg(long, env = "VICINITY_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// API keys with full access, comma-separated. When this or --read-only-api-key is set,
    /// every route but /healthz, /readyz and the playground page (/ui, which holds no data and
    /// asks for the key) needs a key, as 'Authorization: Bearer KEY' or 'api-key: KEY'.
    #[arg(
        long,
        env = "VICINITY_API_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_key: Vec<ApiKey>,

    /// API keys that may only read (queries, embeddings, listings, metrics), comma-separated;
    /// writes with them are refused with 403.
    #[arg(
        long,
        env = "VICINITY_READ_ONLY_API_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub read_only_api_key: Vec<ApiKey>,
}

/// The admission limits of `vicinity serve`: each refuses a request over it with a 4xx
/// `limit_exceeded` whose `limit` names the setting (see [`Limits`]).
#[derive(Clone, Debug, clap::Args)]
pub struct LimitArgs {
    /// Longest query text, or input of /v1/embeddings and /embed, in bytes; checked before
    /// tokenizing.
    #[arg(long, env = "VICINITY_MAX_TEXT_BYTES", default_value_t = Limits::default().max_text_bytes)]
    pub max_text_bytes: usize,

    /// Most documents in one upsert, and most ids in one read or delete.
    #[arg(long, env = "VICINITY_MAX_DOCUMENTS", default_value_t = Limits::default().max_documents)]
    pub max_documents: usize,

    /// Most passages one upsert may split into; larger upserts are refused (413) before
    /// embedding: split them into several requests.
    #[arg(long, env = "VICINITY_MAX_PASSAGES", default_value_t = Limits::default().max_passages)]
    pub max_passages: usize,

    /// Largest metadata object of one document, in bytes of compact JSON.
    #[arg(long, env = "VICINITY_MAX_METADATA_BYTES", default_value_t = Limits::default().max_metadata_bytes)]
    pub max_metadata_bytes: usize,

    /// Largest `k` a query may ask for.
    #[arg(long, env = "VICINITY_MAX_K", default_value_t = Limits::default().max_k)]
    pub max_k: usize,

    /// Largest HNSW `ef` of a query or a collection.
    #[arg(long, env = "VICINITY_MAX_EF", default_value_t = Limits::default().max_ef)]
    pub max_ef: usize,

    /// Largest IVF `nprobe` of a query or a collection.
    #[arg(long, env = "VICINITY_MAX_NPROBE", default_value_t = Limits::default().max_nprobe)]
    pub max_nprobe: usize,

    /// Largest IVF `nlist` of a collection (k-means costs grow with it).
    #[arg(long, env = "VICINITY_MAX_NLIST", default_value_t = Limits::default().max_nlist)]
    pub max_nlist: usize,

    /// Most queries in one batch query, and most inputs in one embeddings request.
    #[arg(long, env = "VICINITY_MAX_CLIENT_BATCH_SIZE", default_value_t = Limits::default().max_batch)]
    pub max_client_batch_size: usize,

    /// Most hits one batch query may ask for: the sum of its queries' `k`.
    #[arg(long, env = "VICINITY_MAX_BATCH_K", default_value_t = Limits::default().max_batch_k)]
    pub max_batch_k: usize,

    /// Deepest nesting of `$and`/`$or` in a filter.
    #[arg(long, env = "VICINITY_MAX_FILTER_DEPTH", default_value_t = Limits::default().max_filter_depth)]
    pub max_filter_depth: usize,

    /// Most values in one `$in`/`$nin` list of a filter.
    #[arg(long, env = "VICINITY_MAX_FILTER_VALUES", default_value_t = Limits::default().max_filter_values)]
    pub max_filter_values: usize,

    /// Most collections on the server.
    #[arg(long, env = "VICINITY_MAX_COLLECTIONS", default_value_t = Limits::default().max_collections)]
    pub max_collections: usize,
}

impl LimitArgs {
    /// The limits, each checked to be at least 1.
    pub fn validate(&self) -> Result<Limits, ConfigError> {
        let one = |flag: &'static str, env: &'static str, value: usize| {
            if value == 0 {
                Err(ConfigError {
                    flag,
                    env,
                    reason: "must be at least 1, got 0".into(),
                })
            } else {
                Ok(value)
            }
        };
        Ok(Limits {
            max_text_bytes: one(
                "--max-text-bytes",
                "VICINITY_MAX_TEXT_BYTES",
                self.max_text_bytes,
            )?,
            max_documents: one(
                "--max-documents",
                "VICINITY_MAX_DOCUMENTS",
                self.max_documents,
            )?,
            max_passages: one("--max-passages", "VICINITY_MAX_PASSAGES", self.max_passages)?,
            max_metadata_bytes: one(
                "--max-metadata-bytes",
                "VICINITY_MAX_METADATA_BYTES",
                self.max_metadata_bytes,
            )?,
            max_k: one("--max-k", "VICINITY_MAX_K", self.max_k)?,
            max_ef: one("--max-ef", "VICINITY_MAX_EF", self.max_ef)?,
            max_nprobe: one("--max-nprobe", "VICINITY_MAX_NPROBE", self.max_nprobe)?,
            max_nlist: one("--max-nlist", "VICINITY_MAX_NLIST", self.max_nlist)?,
            max_batch: one(
                "--max-client-batch-size",
                "VICINITY_MAX_CLIENT_BATCH_SIZE",
                self.max_client_batch_size,
            )?,
            max_batch_k: one("--max-batch-k", "VICINITY_MAX_BATCH_K", self.max_batch_k)?,
            max_filter_depth: one(
                "--max-filter-depth",
                "VICINITY_MAX_FILTER_DEPTH",
                self.max_filter_depth,
            )?,
            max_filter_values: one(
                "--max-filter-values",
                "VICINITY_MAX_FILTER_VALUES",
                self.max_filter_values,
            )?,
            max_collections: one(
                "--max-collections",
                "VICINITY_MAX_COLLECTIONS",
                self.max_collections,
            )?,
        })
    }
}

/// The server's settings, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Address to listen on.
    pub addr: String,
    /// The database URL: `sqlite:` or `postgres:`.
    pub database_url: String,
    /// The HTTP layer's limits.
    pub api: ApiSettings,
    /// The service's settings.
    pub service: ServiceSettings,
    /// How the database is opened.
    pub store: StoreOptions,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout: Duration,
}

impl ServeConfig {
    /// Checks the values and resolves the defaults that depend on `data_dir`.
    pub fn validate(self, data_dir: &Path) -> Result<Settings, ConfigError> {
        fn at_least<T: PartialOrd + std::fmt::Display>(
            flag: &'static str,
            env: &'static str,
            value: T,
            min: T,
        ) -> Result<T, ConfigError> {
            if value < min {
                return Err(ConfigError {
                    flag,
                    env,
                    reason: format!("must be at least {min}, got {value}"),
                });
            }
            Ok(value)
        }
        fn positive(
            flag: &'static str,
            env: &'static str,
            value: Duration,
        ) -> Result<Duration, ConfigError> {
            if value.is_zero() {
                return Err(ConfigError {
                    flag,
                    env,
                    reason: "must be longer than zero".into(),
                });
            }
            Ok(value)
        }

        let database_url = match self.database_url {
            Some(url) => check_database_url(url)?,
            None => format!("sqlite://{}", data_dir.join("vicinity.db").display()),
        };
        if !(0.0..=1.0).contains(&self.filter_exact_fraction) {
            return Err(ConfigError {
                flag: "--filter-exact-fraction",
                env: "VICINITY_FILTER_EXACT_FRACTION",
                reason: format!(
                    "must be between 0 and 1, got {}",
                    self.filter_exact_fraction
                ),
            });
        }
        if self
            .read_only_api_key
            .iter()
            .any(|k| self.api_key.contains(k))
        {
            return Err(ConfigError {
                flag: "--read-only-api-key",
                env: "VICINITY_READ_ONLY_API_KEY",
                reason: "a key is also given as a read-write key (--api-key); give each key \
                         one access"
                    .into(),
            });
        }
        let defaults = ServiceSettings::new(data_dir);
        let service = ServiceSettings {
            planner: PlannerSettings {
                exact_threshold: self.exact_threshold,
                filter_exact_fraction: self.filter_exact_fraction,
                defer_max_unindexed: self.index_defer_max,
                ..defaults.planner.clone()
            },
            limits: self.limits.validate()?,
            search_concurrency: match self.search_concurrency {
                Some(n) => at_least("--search-concurrency", "VICINITY_SEARCH_CONCURRENCY", n, 1)?,
                None => defaults.search_concurrency,
            },
            search_queue_timeout: self.search_queue_timeout,
            snapshot_every_changes: at_least(
                "--snapshot-every",
                "VICINITY_SNAPSHOT_EVERY",
                self.snapshot_every,
                1,
            )?,
            snapshot_interval: positive(
                "--snapshot-interval",
                "VICINITY_SNAPSHOT_INTERVAL",
                self.snapshot_interval,
            )?,
            default_overlap: self.chunk_overlap,
            cluster: ClusterSettings {
                node_id: match self.node_id {
                    Some(id) => check_node_id(id)?,
                    None => String::new(),
                },
                address: self.advertise_addr.unwrap_or_default(),
                follow_interval: positive(
                    "--follow-interval",
                    "VICINITY_FOLLOW_INTERVAL",
                    self.follow_interval,
                )?,
                heartbeat_interval: positive(
                    "--heartbeat-interval",
                    "VICINITY_HEARTBEAT_INTERVAL",
                    self.heartbeat_interval,
                )?,
                node_timeout: positive(
                    "--node-timeout",
                    "VICINITY_NODE_TIMEOUT",
                    self.node_timeout,
                )?,
                feed_retention: positive(
                    "--feed-retention",
                    "VICINITY_FEED_RETENTION",
                    self.feed_retention,
                )?,
                consistency_timeout: self.consistency_timeout,
            },
            ..defaults
        };
        if service.cluster.node_timeout <= service.cluster.heartbeat_interval {
            return Err(ConfigError {
                flag: "--node-timeout",
                env: "VICINITY_NODE_TIMEOUT",
                reason: "must be longer than --heartbeat-interval, or live nodes count as down"
                    .into(),
            });
        }
        let api = ApiSettings {
            // Below a kilobyte not even a small query fits.
            max_body_bytes: at_least(
                "--max-body-bytes",
                "VICINITY_MAX_BODY_BYTES",
                self.max_body_bytes,
                1024,
            )?,
            request_timeout: positive(
                "--request-timeout",
                "VICINITY_REQUEST_TIMEOUT",
                self.request_timeout,
            )?,
            auto_truncate: self.auto_truncate,
            api_keys: ApiKeys::new(self.api_key, self.read_only_api_key),
        };
        Ok(Settings {
            addr: self.addr,
            database_url,
            api,
            service,
            store: StoreOptions {
                passage_cache_bytes: self.passage_cache_mb.saturating_mul(1 << 20),
                ..StoreOptions::default()
            },
            shutdown_timeout: self.shutdown_timeout,
        })
    }
}

/// Whether `id` can name a node: `[A-Za-z0-9._-]{1,64}`.
pub fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_node_id(id: String) -> Result<String, ConfigError> {
    if valid_node_id(&id) {
        return Ok(id);
    }
    Err(ConfigError {
        flag: "--node-id",
        env: "VICINITY_NODE_ID",
        reason: format!("'{id}' is not a node id: 1 to 64 letters, digits, '.', '_' or '-'"),
    })
}

/// Accepts `sqlite:` and `postgres:` (or `postgresql:`) URLs, naming any other scheme in the
/// error.
fn check_database_url(url: String) -> Result<String, ConfigError> {
    if ["sqlite:", "postgres:", "postgresql:"]
        .iter()
        .any(|scheme| url.starts_with(scheme))
    {
        return Ok(url);
    }
    let reason = match url.split_once("://") {
        Some((scheme, _)) => format!(
            "'{scheme}' databases are not supported: use sqlite://PATH or \
             postgres://USER@HOST/DATABASE"
        ),
        None => format!("expected a sqlite: URL such as sqlite://{url}, or a postgres: URL"),
    };
    Err(ConfigError {
        flag: "--database-url",
        env: "VICINITY_DATABASE_URL",
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServeConfig,
    }

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv)
            .expect("arguments parse")
            .config
            .validate(Path::new("/srv/data"))
    }

    #[test]
    fn defaults() {
        let s = parse(&[]).unwrap();
        assert_eq!(s.addr, "0.0.0.0:8080");
        assert_eq!(s.database_url, "sqlite:///srv/data/vicinity.db");
        assert_eq!(s.api, ApiSettings::default());
        assert_eq!(s.service.data_dir, Path::new("/srv/data"));
        assert_eq!(s.service.limits, Limits::default());
        assert_eq!(s.shutdown_timeout, Duration::from_secs(30));
        assert!(!s.api.api_keys.enabled());
    }

    #[test]
    fn api_keys_are_split_and_redacted() {
        let s = parse(&[
            "--api-key",
            "first-secret, second-secret",
            "--read-only-api-key",
            "reader-secret",
        ])
        .unwrap();
        assert_eq!(s.api.api_keys.read_write_count(), 2);
        assert_eq!(s.api.api_keys.read_only_count(), 1);
        let printed = format!("{s:?}");
        assert!(!printed.contains("secret"), "{printed}");
    }

    #[test]
    fn values_are_parsed_and_checked() {
        let s = parse(&[
            "--request-timeout",
            "1m 30s",
            "--max-body-bytes",
            "2048",
            "--exact-threshold",
            "5",
            "--auto-truncate",
        ])
        .unwrap();
        assert_eq!(s.api.request_timeout, Duration::from_secs(90));
        assert_eq!(s.api.max_body_bytes, 2048);
        assert_eq!(s.service.planner.exact_threshold, 5);
        assert!(s.api.auto_truncate);

        let flag = |args: &[&str]| parse(args).unwrap_err().flag;
        assert_eq!(flag(&["--max-k", "0"]), "--max-k");
        assert_eq!(flag(&["--max-body-bytes", "10"]), "--max-body-bytes");
        assert_eq!(flag(&["--request-timeout", "0s"]), "--request-timeout");
        assert_eq!(
            flag(&["--filter-exact-fraction", "1.5"]),
            "--filter-exact-fraction"
        );
        let e = parse(&["--api-key", "a", "--read-only-api-key", "b,a"]).unwrap_err();
        assert_eq!(e.flag, "--read-only-api-key");
        let e = parse(&["--database-url", "mysql://db/x"]).unwrap_err();
        assert!(e.reason.contains("'mysql'"), "{e}");
        assert_eq!(
            parse(&["--database-url", "postgres://u:p@db/x"])
                .unwrap()
                .database_url,
            "postgres://u:p@db/x"
        );
        assert_eq!(
            parse(&["--database-url", "sqlite:///tmp/x.db"])
                .unwrap()
                .database_url,
            "sqlite:///tmp/x.db"
        );
    }
}
