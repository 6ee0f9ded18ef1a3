//! Collection operations: create (idempotent, with conflict detection), look up, list with
//! sizes, fix the dimension, delete with everything in it.

use serde_json::Value;

use super::codec::{decode_object, to_i64, to_u64, to_usize};
use super::error::{StoreError, StoreResult};
use super::rows::{
    CollectionId, CollectionRecord, CollectionSource, CollectionSummary, CreateOutcome,
    NewCollection,
};
use super::{Backend, Dialects, Store, now, read_pool, read_tx, write_tx};

/// Locks a collection's row for the rest of a write transaction and reads its dimension. On
/// PostgreSQL the lock makes the collection's writes commit one after the other (see the
/// module docs of `store`); SQLite's single writer does that already.
pub(super) const LOCK_COLLECTION: Dialects = Dialects {
    sqlite: "SELECT dimension FROM collections WHERE id = $1",
    postgres: "SELECT dimension FROM collections WHERE id = $1 FOR UPDATE",
};

/// The columns [`CollectionRow`] reads, in a macro so that queries can be built with `concat!`
/// and stay `&'static str`. Unqualified, because `RETURNING` accepts no table names.
macro_rules! collection_columns {
    () => {
        "id, name, distance, index_config, dimension, source, model_id, chunking, lexical, created_at"
    };
}

/// A `collections` row as stored.
#[derive(sqlx::FromRow)]
struct CollectionRow {
    id: i64,
    name: String,
    distance: String,
    index_config: String,
    dimension: Option<i64>,
    source: String,
    model_id: Option<String>,
    chunking: Option<String>,
    lexical: Option<String>,
    created_at: String,
}

impl TryFrom<CollectionRow> for CollectionRecord {
    type Error = StoreError;

    fn try_from(row: CollectionRow) -> StoreResult<Self> {
        let what = |field: &str| format!("collection '{}' {field}", row.name);
        let distance = row
            .distance
            .parse()
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", what("distance"))))?;
        let source = CollectionSource::parse(&row.source).ok_or_else(|| {
            StoreError::Corrupt(format!(
                "{}: unknown source '{}'",
                what("source"),
                row.source
            ))
        })?;
        let index = decode_object(&row.index_config, || what("index_config"))?;
        let chunking = row
            .chunking
            .as_deref()
            .map(|c| decode_object(c, || what("chunking")))
            .transpose()?;
        let lexical = row
            .lexical
            .as_deref()
            .map(|c| decode_object(c, || what("lexical")))
            .transpose()?;
        let dimension = row
            .dimension
            .map(|d| to_usize(d, || what("dimension")))
            .transpose()?;
        Ok(CollectionRecord {
            id: CollectionId(row.id),
            name: row.name,
            distance,
            index,
            dimension,
            source,
            model_id: row.model_id,
            chunking,
            lexical,
            created_at: row.created_at,
        })
    }
}

/// A `collections` row with its sizes.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    collection: CollectionRow,
    documents: i64,
    passages: i64,
}

impl TryFrom<SummaryRow> for CollectionSummary {
    type Error = StoreError;

    fn try_from(row: SummaryRow) -> StoreResult<Self> {
        let collection = CollectionRecord::try_from(row.collection)?;
        let what = || format!("collection '{}' size", collection.name);
        Ok(CollectionSummary {
            documents: to_u64(row.documents, what)?,
            passages: to_u64(row.passages, what)?,
            collection,
        })
    }
}

/// Checks the parts of a [`NewCollection`] that the schema would otherwise refuse with a less
/// helpful message.
fn validate(new: &NewCollection) -> StoreResult<()> {
    if new.name.is_empty() {
        return Err(StoreError::Invalid(
            "collection name must not be empty".into(),
        ));
    }
    if !new.index.is_object() {
        return Err(StoreError::Invalid(
            "index configuration must be a JSON object".into(),
        ));
    }
    if new.chunking.as_ref().is_some_and(|c| !c.is_object()) {
        return Err(StoreError::Invalid(
            "chunking configuration must be a JSON object".into(),
        ));
    }
    if new.lexical.as_ref().is_some_and(|c| !c.is_object()) {
        return Err(StoreError::Invalid(
            "lexical configuration must be a JSON object".into(),
        ));
    }
    if new.dimension == Some(0) {
        return Err(StoreError::Invalid("dimension must be at least 1".into()));
    }
    Ok(())
}

impl Store {
    /// Creates a collection unless one with that name exists; the check and the insert are one
    /// transaction. See [`CollectionRecord::matches`] for when settings count as identical.
    pub async fn create_collection(&self, new: &NewCollection) -> StoreResult<CreateOutcome> {
        validate(new)?;
        let dimension = new
            .dimension
            .map(|d| to_i64(d, || "dimension".into()))
            .transpose()?;
        let now = now();
        write_tx!(self, |tx, b| {
            // A name taken by a write that commits first makes this insert a no-op (it waits
            // for that write on PostgreSQL), and the existing collection is read back instead.
            let created: Option<CollectionRow> = sqlx::query_as(concat!(
                "INSERT INTO collections (name, distance, index_config, dimension, source, \
                 model_id, chunking, lexical, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
                 $8, $9) ON CONFLICT (name) DO NOTHING RETURNING ",
                collection_columns!()
            ))
            .bind(&new.name)
            .bind(new.distance.as_str())
            .bind(new.index.to_string())
            .bind(dimension)
            .bind(new.source.as_str())
            .bind(new.model_id.as_deref())
            .bind(new.chunking.as_ref().map(Value::to_string))
            .bind(new.lexical.as_ref().map(Value::to_string))
            .bind(&now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = created {
                if b == Backend::Postgres {
                    super::feed::insert_change!(
                        tx,
                        CollectionId(row.id),
                        0,
                        "create",
                        "[]",
                        &*self.node
                    );
                }
                tx.commit().await?;
                return Ok(CreateOutcome::Created(row.try_into()?));
            }
            let existing: CollectionRow = sqlx::query_as(concat!(
                "SELECT ",
                collection_columns!(),
                " FROM collections WHERE name = $1"
            ))
            .bind(&new.name)
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            let existing = CollectionRecord::try_from(existing)?;
            Ok(if existing.matches(new) {
                CreateOutcome::AlreadyExists(existing)
            } else {
                CreateOutcome::Conflict(existing)
            })
        })
    }

    /// The collection called `name`, if any.
    pub async fn get_collection(&self, name: &str) -> StoreResult<Option<CollectionRecord>> {
        let row: Option<CollectionRow> = read_pool!(self, |pool, _b| {
            sqlx::query_as(concat!(
                "SELECT ",
                collection_columns!(),
                " FROM collections WHERE name = $1"
            ))
            .bind(name)
            .fetch_optional(pool)
            .await?
        });
        row.map(CollectionRecord::try_from).transpose()
    }

    /// The collection with id `id`, if any.
    pub async fn get_collection_by_id(
        &self,
        id: CollectionId,
    ) -> StoreResult<Option<CollectionRecord>> {
        let row: Option<CollectionRow> = read_pool!(self, |pool, _b| {
            sqlx::query_as(concat!(
                "SELECT ",
                collection_columns!(),
                " FROM collections WHERE id = $1"
            ))
            .bind(id.0)
            .fetch_optional(pool)
            .await?
        });
        row.map(CollectionRecord::try_from).transpose()
    }

    /// Every collection with its document and passage counts, ordered by name.
    pub async fn list_collections(&self) -> StoreResult<Vec<CollectionSummary>> {
        // One snapshot, so that the sizes and the list agree.
        let rows: Vec<SummaryRow> = read_tx!(self, |tx, _b| {
            let rows = sqlx::query_as(concat!(
                "SELECT ",
                collection_columns!(),
                ", (SELECT count(*) FROM documents d WHERE d.collection_id = c.id) AS documents, \
                 (SELECT count(*) FROM passages p WHERE p.collection_id = c.id) AS passages \
                 FROM collections c ORDER BY c.name"
            ))
            .fetch_all(&mut *tx)
            .await?;
            tx.commit().await?;
            rows
        });
        rows.into_iter().map(CollectionSummary::try_from).collect()
    }

    /// Fixes the dimension of a collection that has none yet. Setting the dimension it already
    /// has is a no-op; another one is a [`StoreError::Conflict`].
    pub async fn set_dimension(&self, id: CollectionId, dimension: usize) -> StoreResult<()> {
        if dimension == 0 {
            return Err(StoreError::Invalid("dimension must be at least 1".into()));
        }
        let wanted = to_i64(dimension, || "dimension".into())?;
        write_tx!(self, |tx, b| {
            let current: Option<Option<i64>> = sqlx::query_scalar(b.pick(&LOCK_COLLECTION))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            match current {
                None => Err(StoreError::CollectionNotFound(id)),
                Some(Some(d)) if d == wanted => Ok(()),
                Some(Some(d)) => Err(StoreError::Conflict(format!(
                    "collection {id} already has dimension {d}, not {dimension}"
                ))),
                Some(None) => {
                    sqlx::query("UPDATE collections SET dimension = $2 WHERE id = $1")
                        .bind(id.0)
                        .bind(wanted)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                }
            }
        })
    }

    /// Deletes a collection with all its documents and passages. Returns whether it existed.
    pub async fn delete_collection(&self, id: CollectionId) -> StoreResult<bool> {
        let deleted = write_tx!(self, |tx, b| {
            // Waits for the collection's writes in flight, so none commits into it after.
            let exists: Option<Option<i64>> = sqlx::query_scalar(b.pick(&LOCK_COLLECTION))
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                tx.rollback().await?;
                return Ok(false);
            }
            // Deleting the passages first, by the collection index, is one range delete
            // instead of one cascade lookup per document.
            sqlx::query("DELETE FROM passages WHERE collection_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM documents WHERE collection_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            if b == Backend::Postgres {
                let version: i64 =
                    sqlx::query_scalar("SELECT version + 1 FROM collections WHERE id = $1")
                        .bind(id.0)
                        .fetch_one(&mut *tx)
                        .await?;
                super::feed::insert_change!(tx, id, version, "drop", "[]", &*self.node);
            }
            let deleted = sqlx::query("DELETE FROM collections WHERE id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            tx.commit().await?;
            deleted
        });
        self.passage_cache.remove_collection(id);
        Ok(deleted > 0)
    }
}
