//! The change feed several nodes follow when they share one PostgreSQL database, and the
//! registry of those nodes.
//!
//! # Ordering
//! Every write to a collection takes the collection's row lock first and then advances its
//! `version` by one ([`record_change`]), so a collection's versions are gapless and commit in
//! increasing order: a write cannot take version N + 1 until the one holding N has committed
//! or rolled back (a rollback gives N back). A follower that has applied version N therefore
//! needs exactly the changes numbered after N, and a change that commits late can never be
//! skipped: a version is only ever visible after all smaller ones of its collection. Writes to
//! different collections are unordered with each other, and nothing needs them to be: each
//! collection is followed on its own.
//!
//! # What a change holds
//! The ids of the documents a write touched, not their contents: a follower reads those
//! documents' current state, in the same snapshot as the changes ([`Store::read_changes`]), so
//! it applies several changes to one document at the cost of one. Applying a document's
//! state is idempotent, which is what lets a restarted node load a collection and then replay
//! the feed from the version it read before loading.
//!
//! SQLite keeps the versions (responses carry them) but no feed: one server holds its file.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use sqlx::postgres::{PgListener, PgPool};

use super::codec::{decode_metadata, decode_vector, to_u64};
use super::error::{StoreError, StoreResult};
use super::rows::{CollectionId, PassageId, Span};
use super::{Db, Store};

/// The `LISTEN/NOTIFY` channel a commit notifies, with `collection_id:version` as payload.
pub(crate) const CHANNEL: &str = "vicinity_changes";

/// Most changes [`Store::read_changes`] reads in one call.
const CHANGES_PER_READ: i64 = 1024;

/// Advances the collection's version inside a write transaction that holds its row lock, and
/// on PostgreSQL records the change in the feed and notifies the followers (delivered at
/// commit). Evaluates to the new version as `u64`.
macro_rules! record_change {
    ($tx:ident, $b:ident, $collection:expr, $kind:expr, $doc_ids:expr, $node:expr) => {{
        let collection: $crate::store::CollectionId = $collection;
        let version: i64 = sqlx::query_scalar(
            "UPDATE collections SET version = version + 1 WHERE id = $1 RETURNING version",
        )
        .bind(collection.0)
        .fetch_one(&mut *$tx)
        .await?;
        if $b == $crate::store::Backend::Postgres {
            $crate::store::feed::insert_change!($tx, collection, version, $kind, $doc_ids, $node);
        }
        $crate::store::codec::to_u64(version, || format!("collection {collection} version"))?
    }};
}

/// Inserts a change row and the notification of it (PostgreSQL only).
macro_rules! insert_change {
    ($tx:ident, $collection:expr, $version:expr, $kind:expr, $doc_ids:expr, $node:expr) => {{
        let (collection, version): ($crate::store::CollectionId, i64) = ($collection, $version);
        sqlx::query(
            "INSERT INTO changes (collection_id, version, kind, doc_ids, node) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(collection.0)
        .bind(version)
        .bind($kind)
        .bind($doc_ids)
        .bind($node)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind($crate::store::feed::CHANNEL)
            .bind(format!("{}:{}", collection.0, version))
            .execute(&mut *$tx)
            .await?;
    }};
}

pub(crate) use {insert_change, record_change};

/// A collection's name and version, as the database holds them now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionVersion {
    /// The collection.
    pub id: CollectionId,
    /// Its name.
    pub name: String,
    /// Its version: the number of writes committed to it.
    pub version: u64,
}

/// A document as a follower applies it: its state in the snapshot a [`Catchup`] was read in.
#[derive(Clone, Debug)]
pub struct DocumentState {
    /// The document's metadata (`null` for none).
    pub metadata: Value,
    /// Its passages in order.
    pub passages: Vec<StatePassage>,
}

/// A passage of a [`DocumentState`].
#[derive(Clone, Debug)]
pub struct StatePassage {
    /// Passage id.
    pub id: PassageId,
    /// Where it lies in the document's text.
    pub span: Span,
    /// Its vector, as stored.
    pub vector: Vec<f32>,
    /// Its text, if stored.
    pub text: Option<String>,
}

/// What a follower must do to bring a collection from the version it has applied up to (part
/// of) what the database holds; see [`Store::read_changes`].
#[derive(Debug)]
pub enum Catchup {
    /// The collection no longer exists.
    Gone,
    /// The changes after the applied version are no longer all in the feed: the collection
    /// must be loaded again.
    Behind {
        /// The collection's version now.
        version: u64,
    },
    /// Apply these documents' states to reach `version`. Empty when nothing changed.
    Apply {
        /// The version reached once applied.
        version: u64,
        /// The collection's latest version (more changes follow when it is larger).
        latest: u64,
        /// Every document a change touched, by id: its state, or `None` when it is deleted.
        documents: Vec<(String, Option<DocumentState>)>,
    },
}

/// A node of the cluster as the registry holds it.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    /// The node's id.
    pub id: String,
    /// Where its API listens, as it announced it.
    pub address: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long ago (by the database's clock) its last heartbeat was.
    pub heartbeat_age: Duration,
    /// The version it had applied of each collection, as of that heartbeat.
    pub versions: HashMap<CollectionId, u64>,
}

/// Wakes a follower when a change commits; see [`Store::listen`].
pub struct ChangeListener {
    inner: PgListener,
}

impl std::fmt::Debug for ChangeListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeListener").finish_non_exhaustive()
    }
}

impl ChangeListener {
    /// Waits for the next notification; returns the collection it names. A lost connection is
    /// an error (notifications sent meanwhile are lost: the follower's polling covers them).
    pub async fn recv(&mut self) -> StoreResult<Option<CollectionId>> {
        let n = self.inner.recv().await?;
        Ok(n.payload()
            .split_once(':')
            .and_then(|(c, _)| c.parse().ok())
            .map(CollectionId))
    }
}

fn interval_secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

impl Store {
    fn postgres(&self) -> StoreResult<&PgPool> {
        match &self.db {
            Db::Postgres(pool) => Ok(pool),
            Db::Sqlite { .. } => Err(StoreError::Invalid(
                "the change feed needs PostgreSQL; an SQLite store has one server".into(),
            )),
        }
    }

    /// Whether other nodes may write to this store (it is PostgreSQL), so that this node must
    /// follow the feed.
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// A listener on the feed's notifications (PostgreSQL only).
    pub async fn listen(&self) -> StoreResult<ChangeListener> {
        let mut inner = PgListener::connect_with(self.postgres()?).await?;
        inner.listen(CHANNEL).await?;
        Ok(ChangeListener { inner })
    }

    /// Every collection with its current version.
    pub async fn collection_versions(&self) -> StoreResult<Vec<CollectionVersion>> {
        let rows: Vec<(i64, String, i64)> = super::read_pool!(self, |pool, _b| {
            sqlx::query_as("SELECT id, name, version FROM collections ORDER BY id")
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(id, name, version)| {
                Ok(CollectionVersion {
                    id: CollectionId(id),
                    version: to_u64(version, || format!("collection {id} version"))?,
                    name,
                })
            })
            .collect()
    }

    /// The version of `collection` now, or `None` if it does not exist.
    pub async fn collection_version(&self, collection: CollectionId) -> StoreResult<Option<u64>> {
        let version: Option<i64> = super::read_pool!(self, |pool, _b| {
            sqlx::query_scalar("SELECT version FROM collections WHERE id = $1")
                .bind(collection.0)
                .fetch_optional(pool)
                .await?
        });
        version
            .map(|v| to_u64(v, || format!("collection {collection} version")))
            .transpose()
    }

    /// The changes of `collection` after version `after`, as the states of the documents they
    /// touched, read in one snapshot: up to [`CHANGES_PER_READ`] changes, and no more once
    /// they touch `max_documents` documents (the first change is always taken whole).
    /// PostgreSQL only.
    pub async fn read_changes(
        &self,
        collection: CollectionId,
        after: u64,
        max_documents: usize,
    ) -> StoreResult<Catchup> {
        let pool = self.postgres()?;
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT version FROM collections WHERE id = $1")
                .bind(collection.0)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(latest) = latest else {
            return Ok(Catchup::Gone);
        };
        let latest = to_u64(latest, || format!("collection {collection} version"))?;
        if latest <= after {
            return Ok(Catchup::Apply {
                version: after,
                latest,
                documents: Vec::new(),
            });
        }
        let after_i = i64::try_from(after)
            .map_err(|_| StoreError::Invalid(format!("version {after} is out of range")))?;
        let rows = sqlx::query(
            "SELECT version, doc_ids FROM changes WHERE collection_id = $1 AND version > $2 \
             ORDER BY version LIMIT $3",
        )
        .bind(collection.0)
        .bind(after_i)
        .bind(CHANGES_PER_READ)
        .fetch_all(&mut *tx)
        .await?;
        let mut expected = after + 1;
        let mut ids = BTreeSet::new();
        for row in &rows {
            let version: i64 = row.try_get(0)?;
            let version = to_u64(version, || "change version".into())?;
            if version != expected {
                break;
            }
            if expected > after + 1 && ids.len() >= max_documents {
                break;
            }
            let doc_ids: String = row.try_get(1)?;
            let doc_ids: Vec<String> = serde_json::from_str(&doc_ids).map_err(|e| {
                StoreError::Corrupt(format!("change {version} of collection {collection}: {e}"))
            })?;
            ids.extend(doc_ids);
            expected += 1;
        }
        if expected == after + 1 {
            // The change right after `after` is pruned: the feed cannot bring this node up.
            return Ok(Catchup::Behind { version: latest });
        }
        let version = expected - 1;
        let ids: Vec<String> = ids.into_iter().collect();
        let ids_json = super::codec::json_array(&ids);
        let dimension: Option<i64> =
            sqlx::query_scalar("SELECT dimension FROM collections WHERE id = $1")
                .bind(collection.0)
                .fetch_one(&mut *tx)
                .await?;
        let mut states: HashMap<String, DocumentState> = HashMap::with_capacity(ids.len());
        let docs = sqlx::query(
            "SELECT doc_id, metadata FROM documents WHERE collection_id = $1 AND \
             doc_id IN (SELECT json_array_elements_text($2::json))",
        )
        .bind(collection.0)
        .bind(&ids_json)
        .fetch_all(&mut *tx)
        .await?;
        for row in docs {
            let id: String = row.try_get(0)?;
            let metadata: Option<String> = row.try_get(1)?;
            let metadata = decode_metadata(metadata.as_deref(), || format!("document '{id}'"))?;
            states.insert(
                id,
                DocumentState {
                    metadata,
                    passages: Vec::new(),
                },
            );
        }
        let passages = sqlx::query(
            "SELECT doc_id, id, vector, text, char_start, char_end FROM passages \
             WHERE collection_id = $1 AND \
             doc_id IN (SELECT json_array_elements_text($2::json)) ORDER BY doc_id, idx",
        )
        .bind(collection.0)
        .bind(&ids_json)
        .fetch_all(&mut *tx)
        .await?;
        for row in passages {
            let doc: String = row.try_get(0)?;
            let id: i64 = row.try_get(1)?;
            let blob: Vec<u8> = row.try_get(2)?;
            let text: Option<String> = row.try_get(3)?;
            let start: i64 = row.try_get(4)?;
            let end: i64 = row.try_get(5)?;
            let dimension = dimension.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "collection {collection} has passages but no dimension"
                ))
            })?;
            let dimension = super::codec::to_usize(dimension, || "dimension".into())?;
            let vector = decode_vector(&blob, dimension, id)?;
            let state = states.get_mut(&doc).ok_or_else(|| {
                StoreError::Corrupt(format!("passage {id} of missing document '{doc}'"))
            })?;
            let what = || format!("passage {id}");
            state.passages.push(StatePassage {
                id: to_u64(id, what)?,
                span: Span {
                    start: super::codec::to_usize(start, what)?,
                    end: super::codec::to_usize(end, what)?,
                },
                vector,
                text,
            });
        }
        tx.commit().await?;
        let documents = ids
            .into_iter()
            .map(|id| {
                let state = states.remove(&id);
                (id, state)
            })
            .collect();
        Ok(Catchup::Apply {
            version,
            latest,
            documents,
        })
    }

    /// Records that node `node` is alive, where it listens, and the versions it has applied
    /// (PostgreSQL only). The first heartbeat of a start also records `started_at`.
    pub async fn heartbeat(
        &self,
        node: &str,
        address: &str,
        first: bool,
        applied: &[(CollectionId, u64)],
    ) -> StoreResult<()> {
        let pool = self.postgres()?;
        let versions = serde_json::to_string(
            &applied
                .iter()
                .map(|(c, v)| (c.0, *v))
                .collect::<Vec<(i64, u64)>>(),
        )
        .expect("pairs of integers serialise");
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO nodes (id, address, started_at, heartbeat_at) VALUES ($1, $2, now(), \
             now()) ON CONFLICT (id) DO UPDATE SET address = EXCLUDED.address, heartbeat_at = \
             now(), started_at = CASE WHEN $3 THEN now() ELSE nodes.started_at END",
        )
        .bind(node)
        .bind(address)
        .bind(first)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO node_versions (node, collection_id, version) \
             SELECT $1, (e->>0)::bigint, (e->>1)::bigint FROM json_array_elements($2::json) e \
             ON CONFLICT (node, collection_id) DO UPDATE SET version = EXCLUDED.version",
        )
        .bind(node)
        .bind(&versions)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM node_versions WHERE node = $1 AND collection_id NOT IN \
             (SELECT (e->>0)::bigint FROM json_array_elements($2::json) e)",
        )
        .bind(node)
        .bind(&versions)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes node `node` from the registry (it stops), so that it holds back no pruning.
    pub async fn leave(&self, node: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(node)
            .execute(self.postgres()?)
            .await?;
        Ok(())
    }

    /// The registered nodes, by id.
    pub async fn nodes(&self) -> StoreResult<Vec<NodeRecord>> {
        let pool = self.postgres()?;
        let rows = sqlx::query(
            "SELECT n.id, n.address, \
             to_char(n.started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
             extract(epoch FROM now() - n.heartbeat_at)::float8, \
             coalesce((SELECT json_agg(json_build_array(v.collection_id, v.version))::text \
               FROM node_versions v WHERE v.node = n.id), '[]') \
             FROM nodes n ORDER BY n.id",
        )
        .fetch_all(pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let versions: String = row.try_get(4)?;
                let versions: Vec<(i64, u64)> = serde_json::from_str(&versions)
                    .map_err(|e| StoreError::Corrupt(format!("node versions: {e}")))?;
                let age: f64 = row.try_get(3)?;
                Ok(NodeRecord {
                    id: row.try_get(0)?,
                    address: row.try_get(1)?,
                    started_at: row.try_get(2)?,
                    heartbeat_age: Duration::from_secs_f64(age.max(0.0)),
                    versions: versions
                        .into_iter()
                        .map(|(c, v)| (CollectionId(c), v))
                        .collect(),
                })
            })
            .collect()
    }

    /// Prunes the feed: changes every live node (a heartbeat within `live`) has applied, and
    /// any older than `retention`, which bounds how long a node that stopped heartbeating can
    /// hold the feed; nodes silent for longer than `retention` leave the registry. Returns the
    /// changes removed.
    pub async fn prune(&self, live: Duration, retention: Duration) -> StoreResult<u64> {
        let pool = self.postgres()?;
        let mut tx = pool.begin().await?;
        // A live node without a row for a collection has applied none of it.
        let applied = sqlx::query(
            "DELETE FROM changes ch USING ( \
               SELECT c.id, min(coalesce(v.version, 0)) AS floor FROM collections c \
               CROSS JOIN nodes n LEFT JOIN node_versions v \
                 ON v.node = n.id AND v.collection_id = c.id \
               WHERE n.heartbeat_at > now() - make_interval(secs => $1) GROUP BY c.id) f \
             WHERE ch.collection_id = f.id AND ch.version <= f.floor",
        )
        .bind(interval_secs(live))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let old = sqlx::query(
            "DELETE FROM changes WHERE committed_at < now() - make_interval(secs => $1)",
        )
        .bind(interval_secs(retention))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM nodes WHERE heartbeat_at < now() - make_interval(secs => $1)")
            .bind(interval_secs(retention))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(applied + old)
    }
}
