//! Document and passage operations: upsert (replace by id), read one, many or a page, delete,
//! and read passages by id for rendering search results.
//!
//! Writes are batched: rows go into multi-row `INSERT` statements of a fixed size (so that the
//! statement is prepared once and cached), and id lists into one `json_each(?)` parameter.
//! Each call is one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::codec::{
    decode_metadata, decode_vector, encode_metadata, encode_vector, json_array, to_i64, to_u64,
    to_usize,
};
use super::error::{StoreError, StoreResult};
use super::rows::{
    CollectionId, DeletedDocument, DocumentPage, DocumentRecord, NewDocument, PageRequest,
    PassageId, PassageRecord, UpsertedDocument,
};
use super::{NOW_SQL, Store};

/// Documents handled per round of statements in an upsert.
const DOCS_PER_BATCH: usize = 128;
/// Rows per multi-row `INSERT`: large enough to amortise a statement's round trip, far below
/// SQLite's limit of 32766 parameters.
const ROWS_PER_INSERT: usize = 128;

/// Columns of a document with its passage count, for [`document_record`].
macro_rules! document_columns {
    () => {
        "d.doc_id, d.text, d.metadata, d.created_at, d.updated_at, \
         (SELECT count(*) FROM passages p WHERE p.collection_id = d.collection_id \
          AND p.doc_id = d.doc_id) AS passage_count"
    };
}

fn document_record(row: &SqliteRow) -> StoreResult<DocumentRecord> {
    let id: String = row.try_get("doc_id")?;
    let metadata = decode_metadata(row.try_get("metadata")?, || {
        format!("metadata of document '{id}'")
    })?;
    let passage_count = to_u64(row.try_get("passage_count")?, || {
        format!("passage count of document '{id}'")
    })?;
    Ok(DocumentRecord {
        text: row.try_get("text")?,
        metadata,
        passage_count,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        id,
    })
}

/// Columns of a passage for [`passage_record`], without and with its vector; `dimension` is
/// the collection's.
macro_rules! passage_columns {
    () => {
        "p.id, p.doc_id, p.idx, p.char_start, p.char_end, p.text"
    };
    (vector) => {
        concat!(
            passage_columns!(),
            ", p.vector, (SELECT dimension FROM collections WHERE id = ?1) AS dimension"
        )
    };
}

fn passage_record(row: &SqliteRow, with_vector: bool) -> StoreResult<PassageRecord> {
    let id: i64 = row.try_get("id")?;
    let what = |field: &'static str| move || format!("passage {id} {field}");
    let vector = if with_vector {
        let dimension: Option<i64> = row.try_get("dimension")?;
        let dimension = dimension.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "passage {id} has a vector but its collection has no dimension"
            ))
        })?;
        let dimension = to_usize(dimension, what("dimension"))?;
        Some(decode_vector(row.try_get("vector")?, dimension, id)?)
    } else {
        None
    };
    Ok(PassageRecord {
        id: to_u64(id, what("id"))?,
        doc_id: row.try_get("doc_id")?,
        index: to_usize(row.try_get("idx")?, what("index"))?,
        start: to_usize(row.try_get("char_start")?, what("start"))?,
        end: to_usize(row.try_get("char_end")?, what("end"))?,
        text: row.try_get("text")?,
        vector,
    })
}

/// `(?,…,?)` repeated: the `VALUES` list of a multi-row insert.
fn values_list(rows: usize, columns: usize) -> String {
    let row = format!("({})", vec!["?"; columns].join(","));
    vec![row.as_str(); rows].join(",")
}

const DOCUMENT_INSERT_HEAD: &str =
    "INSERT INTO documents (collection_id, doc_id, text, metadata, created_at, updated_at) VALUES ";
const DOCUMENT_INSERT_TAIL: &str = " ON CONFLICT (collection_id, doc_id) DO UPDATE SET \
     text = excluded.text, metadata = excluded.metadata, updated_at = excluded.updated_at";
const DOCUMENT_COLUMNS: usize = 6;

const PASSAGE_INSERT_HEAD: &str =
    "INSERT INTO passages (collection_id, doc_id, idx, char_start, char_end, vector, text) VALUES ";
const PASSAGE_INSERT_TAIL: &str = " RETURNING id, doc_id, idx";
const PASSAGE_COLUMNS: usize = 7;

/// A multi-row insert statement for `rows` rows. Full batches share one static string, so that
/// sqlx prepares it once per connection; the shorter last batch of a call is built (and
/// prepared) on the spot.
fn insert_sql(
    full: &'static OnceLock<String>,
    head: &str,
    tail: &str,
    columns: usize,
    rows: usize,
) -> (sqlx::SqlStr, bool) {
    use sqlx::SqlSafeStr;
    let build = |n| format!("{head}{}{tail}", values_list(n, columns));
    if rows == ROWS_PER_INSERT {
        (
            full.get_or_init(|| build(rows)).as_str().into_sql_str(),
            true,
        )
    } else {
        (AssertSqlSafe(build(rows)).into_sql_str(), false)
    }
}

/// Checks a batch of documents before anything is written; returns the dimension their
/// vectors share, if they have any.
fn validate(docs: &[NewDocument]) -> StoreResult<Option<usize>> {
    let mut seen = HashSet::with_capacity(docs.len());
    let mut dimension = None;
    for doc in docs {
        if doc.id.is_empty() {
            return Err(StoreError::Invalid("document id must not be empty".into()));
        }
        if !seen.insert(doc.id.as_str()) {
            return Err(StoreError::Invalid(format!(
                "document id '{}' appears more than once in one write",
                doc.id
            )));
        }
        encode_metadata(&doc.id, &doc.metadata)?;
        let chars = doc.text.as_deref().map(|t| t.chars().count());
        for (i, p) in doc.passages.iter().enumerate() {
            if p.start > p.end || chars.is_some_and(|n| p.end > n) {
                return Err(StoreError::Invalid(format!(
                    "passage {i} of document '{}': offsets {}..{} are not within the text ({} \
                     characters)",
                    doc.id,
                    p.start,
                    p.end,
                    chars.map_or_else(|| "no text".into(), |n| n.to_string()),
                )));
            }
            if p.vector.is_empty() {
                return Err(StoreError::Invalid(format!(
                    "passage {i} of document '{}' has an empty vector",
                    doc.id
                )));
            }
            if p.vector.iter().any(|x| !x.is_finite()) {
                return Err(StoreError::Invalid(format!(
                    "passage {i} of document '{}' has a NaN or infinite vector component",
                    doc.id
                )));
            }
            match dimension {
                None => dimension = Some(p.vector.len()),
                Some(d) if d != p.vector.len() => {
                    return Err(StoreError::DimensionMismatch {
                        expected: d,
                        got: p.vector.len(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    Ok(dimension)
}

impl Store {
    /// Stores `docs` in one transaction: a document whose id exists replaces it (its old
    /// passages are deleted), the others are inserted. Returns, per document and in order, the
    /// ids of its new passages and of the passages it replaced: exactly the changes the vector
    /// indexes must apply.
    ///
    /// Refused as a whole, with nothing written: an unknown collection
    /// ([`StoreError::CollectionNotFound`]); vectors whose length differs from the collection's
    /// dimension or from each other ([`StoreError::DimensionMismatch`]); an empty or repeated
    /// id, metadata that is neither an object nor null, offsets outside the text, empty or
    /// non-finite vectors ([`StoreError::Invalid`]). The first vectors stored in a collection
    /// without a dimension fix it.
    pub async fn upsert_documents(
        &self,
        collection: CollectionId,
        docs: &[NewDocument],
    ) -> StoreResult<Vec<UpsertedDocument>> {
        let batch_dimension = validate(docs)?;
        let mut tx = self.begin_write().await?;
        let stored: Option<Option<i64>> =
            sqlx::query_scalar("SELECT dimension FROM collections WHERE id = ?1")
                .bind(collection.0)
                .fetch_optional(&mut *tx)
                .await?;
        let stored = stored.ok_or(StoreError::CollectionNotFound(collection))?;
        if let Some(got) = batch_dimension {
            match stored {
                Some(d) => {
                    let expected = to_usize(d, || format!("collection {collection} dimension"))?;
                    if expected != got {
                        return Err(StoreError::DimensionMismatch { expected, got });
                    }
                }
                None => {
                    sqlx::query("UPDATE collections SET dimension = ?2 WHERE id = ?1")
                        .bind(collection.0)
                        .bind(to_i64(got, || "dimension".into())?)
                        .execute(&mut *tx)
                        .await?;
                }
            }
        }
        let now: String = sqlx::query_scalar(NOW_SQL).fetch_one(&mut *tx).await?;
        let mut out = Vec::with_capacity(docs.len());
        for batch in docs.chunks(DOCS_PER_BATCH) {
            upsert_batch(&mut tx, collection, batch, &now, &mut out).await?;
        }
        tx.commit().await?;
        self.passage_cache.remove(
            out.iter()
                .flat_map(|d| d.removed_passage_ids.iter().copied()),
        );
        Ok(out)
    }

    /// Deletes the documents with these ids and their passages, in one transaction. Returns the
    /// documents that existed, in the order asked, with their removed passage ids; unknown ids
    /// are skipped.
    pub async fn delete_documents(
        &self,
        collection: CollectionId,
        ids: &[String],
    ) -> StoreResult<Vec<DeletedDocument>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids_json = json_array(ids);
        let mut tx = self.begin_write().await?;
        let removed: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM passages WHERE collection_id = ?1 \
             AND doc_id IN (SELECT value FROM json_each(?2)) RETURNING doc_id, id",
        )
        .bind(collection.0)
        .bind(&ids_json)
        .fetch_all(&mut *tx)
        .await?;
        let deleted: Vec<String> = sqlx::query_scalar(
            "DELETE FROM documents WHERE collection_id = ?1 \
             AND doc_id IN (SELECT value FROM json_each(?2)) RETURNING doc_id",
        )
        .bind(collection.0)
        .bind(&ids_json)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;

        let mut passages: HashMap<String, Vec<PassageId>> = HashMap::new();
        for (doc_id, id) in removed {
            let id = to_u64(id, || format!("passage id of document '{doc_id}'"))?;
            passages.entry(doc_id).or_default().push(id);
        }
        self.passage_cache
            .remove(passages.values().flatten().copied());
        let deleted: HashSet<String> = deleted.into_iter().collect();
        let mut out = Vec::with_capacity(deleted.len());
        let mut reported = HashSet::with_capacity(deleted.len());
        for id in ids {
            if deleted.contains(id) && reported.insert(id.as_str()) {
                let mut passage_ids = passages.remove(id).unwrap_or_default();
                passage_ids.sort_unstable();
                out.push(DeletedDocument {
                    id: id.clone(),
                    passage_ids,
                });
            }
        }
        Ok(out)
    }

    /// The document `id`, if it exists.
    pub async fn get_document(
        &self,
        collection: CollectionId,
        id: &str,
    ) -> StoreResult<Option<DocumentRecord>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " FROM documents d WHERE d.collection_id = ?1 AND d.doc_id = ?2"
        ))
        .bind(collection.0)
        .bind(id)
        .fetch_optional(&self.readers)
        .await?;
        row.as_ref().map(document_record).transpose()
    }

    /// The documents with these ids, in the order asked; unknown ids are skipped, an id asked
    /// twice is returned twice.
    pub async fn get_documents(
        &self,
        collection: CollectionId,
        ids: &[String],
    ) -> StoreResult<Vec<DocumentRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // CROSS JOIN makes SQLite walk the id list and look each id up, never the reverse.
        let rows = sqlx::query(concat!(
            "SELECT ",
            document_columns!(),
            " FROM json_each(?2) j CROSS JOIN documents d \
             ON d.collection_id = ?1 AND d.doc_id = j.value ORDER BY j.key"
        ))
        .bind(collection.0)
        .bind(json_array(ids))
        .fetch_all(&self.readers)
        .await?;
        rows.iter().map(document_record).collect()
    }

    /// A page of the collection's documents in id order, with the collection's document count;
    /// both read from one snapshot. Following `next_after` from the first page to the last
    /// visits every document that exists throughout, exactly once. A limit of 0 reads only the
    /// count.
    pub async fn list_documents(
        &self,
        collection: CollectionId,
        page: &PageRequest,
    ) -> StoreResult<DocumentPage> {
        let limit = i64::from(page.limit);
        let offset = i64::try_from(page.offset)
            .map_err(|_| StoreError::Invalid(format!("offset {} is too large", page.offset)))?;
        let mut tx = self.begin_read().await?;
        let total: i64 =
            sqlx::query_scalar("SELECT count(*) FROM documents WHERE collection_id = ?1")
                .bind(collection.0)
                .fetch_one(&mut *tx)
                .await?;
        // One row more than asked tells whether another page follows.
        let rows = match &page.after {
            None => {
                sqlx::query(concat!(
                    "SELECT ",
                    document_columns!(),
                    " FROM documents d WHERE d.collection_id = ?1 \
                     ORDER BY d.doc_id LIMIT ?2 OFFSET ?3"
                ))
                .bind(collection.0)
                .bind(limit + 1)
                .bind(offset)
                .fetch_all(&mut *tx)
                .await?
            }
            Some(after) => {
                sqlx::query(concat!(
                    "SELECT ",
                    document_columns!(),
                    " FROM documents d WHERE d.collection_id = ?1 AND d.doc_id > ?4 \
                     ORDER BY d.doc_id LIMIT ?2 OFFSET ?3"
                ))
                .bind(collection.0)
                .bind(limit + 1)
                .bind(offset)
                .bind(after)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        tx.commit().await?;
        let more = rows.len() > page.limit as usize;
        let documents = rows
            .iter()
            .take(page.limit as usize)
            .map(document_record)
            .collect::<StoreResult<Vec<_>>>()?;
        let next_after = if more {
            documents.last().map(|d| d.id.clone())
        } else {
            None
        };
        Ok(DocumentPage {
            documents,
            total: to_u64(total, || {
                format!("document count of collection {collection}")
            })?,
            next_after,
        })
    }

    /// The passages of document `id` in order (empty if it does not exist), with their vectors
    /// if `with_vectors`.
    pub async fn document_passages(
        &self,
        collection: CollectionId,
        id: &str,
        with_vectors: bool,
    ) -> StoreResult<Vec<PassageRecord>> {
        let query = if with_vectors {
            sqlx::query(concat!(
                "SELECT ",
                passage_columns!(vector),
                " FROM passages p WHERE p.collection_id = ?1 AND p.doc_id = ?2 ORDER BY p.idx"
            ))
        } else {
            sqlx::query(concat!(
                "SELECT ",
                passage_columns!(),
                " FROM passages p WHERE p.collection_id = ?1 AND p.doc_id = ?2 ORDER BY p.idx"
            ))
        };
        let rows = query
            .bind(collection.0)
            .bind(id)
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|row| passage_record(row, with_vectors))
            .collect()
    }

    /// The passages with these ids, in the order asked, with their vectors if `with_vectors`;
    /// ids not in the collection are skipped. This is how search results get their text.
    ///
    /// Rows without vectors come from the passage cache where they can
    /// ([`StoreOptions::passage_cache_bytes`](super::StoreOptions)); only the others are read
    /// from the database, and then cached.
    pub async fn get_passages(
        &self,
        collection: CollectionId,
        ids: &[PassageId],
        with_vectors: bool,
    ) -> StoreResult<Vec<PassageRecord>> {
        if with_vectors {
            let rows = self.read_passages(collection, ids, true).await?;
            self.passage_cache.insert(collection, &rows);
            return Ok(rows);
        }
        let (cached, missing) = self.passage_cache.lookup(collection, ids);
        if missing.is_empty() {
            return Ok(cached.into_iter().flatten().collect());
        }
        let read = self.read_passages(collection, &missing, false).await?;
        self.passage_cache.insert(collection, &read);
        let read: HashMap<PassageId, PassageRecord> = read.into_iter().map(|r| (r.id, r)).collect();
        Ok(ids
            .iter()
            .zip(cached)
            .filter_map(|(id, c)| c.or_else(|| read.get(id).cloned()))
            .collect())
    }

    /// [`Store::get_passages`] from the database.
    async fn read_passages(
        &self,
        collection: CollectionId,
        ids: &[PassageId],
        with_vectors: bool,
    ) -> StoreResult<Vec<PassageRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // CROSS JOIN: walk the id list, look each id up by primary key.
        let query = if with_vectors {
            sqlx::query(concat!(
                "SELECT ",
                passage_columns!(vector),
                " FROM json_each(?2) j CROSS JOIN passages p ON p.id = j.value \
                 WHERE p.collection_id = ?1 ORDER BY j.key"
            ))
        } else {
            sqlx::query(concat!(
                "SELECT ",
                passage_columns!(),
                " FROM json_each(?2) j CROSS JOIN passages p ON p.id = j.value \
                 WHERE p.collection_id = ?1 ORDER BY j.key"
            ))
        };
        let rows = query
            .bind(collection.0)
            .bind(json_array(ids))
            .fetch_all(&self.readers)
            .await?;
        rows.iter()
            .map(|row| passage_record(row, with_vectors))
            .collect()
    }
}

/// One round of an upsert: up to [`DOCS_PER_BATCH`] documents. Appends their outcomes to `out`.
async fn upsert_batch(
    tx: &mut Transaction<'static, Sqlite>,
    collection: CollectionId,
    docs: &[NewDocument],
    now: &str,
    out: &mut Vec<UpsertedDocument>,
) -> StoreResult<()> {
    let first = out.len();
    let position: HashMap<&str, usize> = docs
        .iter()
        .enumerate()
        .map(|(i, d)| (d.id.as_str(), first + i))
        .collect();
    out.extend(docs.iter().map(|d| UpsertedDocument {
        id: d.id.clone(),
        replaced: false,
        passage_ids: vec![0; d.passages.len()],
        removed_passage_ids: Vec::new(),
    }));
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();

    // Documents being replaced lose their passages first.
    let existing: Vec<String> = sqlx::query_scalar(
        "SELECT doc_id FROM documents WHERE collection_id = ?1 \
         AND doc_id IN (SELECT value FROM json_each(?2))",
    )
    .bind(collection.0)
    .bind(json_array(&ids))
    .fetch_all(&mut **tx)
    .await?;
    if !existing.is_empty() {
        let removed: Vec<(String, i64)> = sqlx::query_as(
            "DELETE FROM passages WHERE collection_id = ?1 \
             AND doc_id IN (SELECT value FROM json_each(?2)) RETURNING doc_id, id",
        )
        .bind(collection.0)
        .bind(json_array(&existing))
        .fetch_all(&mut **tx)
        .await?;
        for doc_id in &existing {
            out[lookup(&position, doc_id)?].replaced = true;
        }
        for (doc_id, id) in removed {
            let slot = lookup(&position, &doc_id)?;
            let id = to_u64(id, || format!("passage id of document '{doc_id}'"))?;
            out[slot].removed_passage_ids.push(id);
        }
        for done in &mut out[first..] {
            done.removed_passage_ids.sort_unstable();
        }
    }

    static DOCUMENT_INSERT: OnceLock<String> = OnceLock::new();
    for rows in docs.chunks(ROWS_PER_INSERT) {
        let (sql, full) = insert_sql(
            &DOCUMENT_INSERT,
            DOCUMENT_INSERT_HEAD,
            DOCUMENT_INSERT_TAIL,
            DOCUMENT_COLUMNS,
            rows.len(),
        );
        let mut query = sqlx::query(sql).persistent(full);
        for doc in rows {
            query = query
                .bind(collection.0)
                .bind(doc.id.as_str())
                .bind(doc.text.as_deref())
                .bind(encode_metadata(&doc.id, &doc.metadata)?)
                .bind(now)
                .bind(now);
        }
        query.execute(&mut **tx).await?;
    }

    static PASSAGE_INSERT: OnceLock<String> = OnceLock::new();
    let passages: Vec<(&NewDocument, usize)> = docs
        .iter()
        .flat_map(|d| (0..d.passages.len()).map(move |i| (d, i)))
        .collect();
    for rows in passages.chunks(ROWS_PER_INSERT) {
        let (sql, full) = insert_sql(
            &PASSAGE_INSERT,
            PASSAGE_INSERT_HEAD,
            PASSAGE_INSERT_TAIL,
            PASSAGE_COLUMNS,
            rows.len(),
        );
        let mut query = sqlx::query(sql).persistent(full);
        for &(doc, i) in rows {
            let p = &doc.passages[i];
            let what = || format!("passage {i} of document '{}'", doc.id);
            query = query
                .bind(collection.0)
                .bind(doc.id.as_str())
                .bind(to_i64(i, what)?)
                .bind(to_i64(p.start, what)?)
                .bind(to_i64(p.end, what)?)
                .bind(encode_vector(&p.vector))
                .bind(p.text.as_deref());
        }
        // RETURNING yields rows in no promised order, hence the lookup by document and index.
        let inserted = query.fetch_all(&mut **tx).await?;
        if inserted.len() != rows.len() {
            return Err(StoreError::Corrupt(format!(
                "inserting {} passages returned {} ids",
                rows.len(),
                inserted.len()
            )));
        }
        for row in &inserted {
            let id: i64 = row.try_get(0)?;
            let doc_id: &str = row.try_get(1)?;
            let idx: i64 = row.try_get(2)?;
            let slot = lookup(&position, doc_id)?;
            let id = to_u64(id, || format!("new passage of document '{doc_id}'"))?;
            let index = to_usize(idx, || format!("new passage {id} index"))?;
            let target = out[slot].passage_ids.get_mut(index).ok_or_else(|| {
                StoreError::Corrupt(format!("insert returned unknown passage index {index}"))
            })?;
            *target = id;
        }
    }
    Ok(())
}

/// Where the outcome of `doc_id` goes; a row for a document not in the batch means the
/// database returned something it was never given.
fn lookup(position: &HashMap<&str, usize>, doc_id: &str) -> StoreResult<usize> {
    position.get(doc_id).copied().ok_or_else(|| {
        StoreError::Corrupt(format!(
            "write returned a row for unknown document '{doc_id}'"
        ))
    })
}
