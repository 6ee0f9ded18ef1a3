//! Document and passage operations: upsert (replace by id), read one, many or a page, delete,
//! and read passages by id for rendering search results.
//!
//! Writes are batched: rows go into multi-row `INSERT` statements of a fixed size (so that the
//! statement is prepared once and cached), and id lists into one JSON array parameter, which
//! SQLite reads with `json_each` and PostgreSQL with `json_array_elements_text`. Each call is
//! one transaction.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use sqlx::{AssertSqlSafe, Row};

use super::codec::{
    decode_metadata, decode_vector, encode_metadata, encode_vector, json_array, to_i64, to_u64,
    to_usize,
};
use super::collections::LOCK_COLLECTION;
use super::error::{StoreError, StoreResult};
use super::feed::record_change;
use super::rows::{
    CollectionId, DeletedDocument, DocumentPage, DocumentRecord, NewDocument, PageRequest,
    PassageId, PassageRecord, UpsertedDocument,
};
use super::{Dialects, Store, now, read_pool, read_tx, write_tx};

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

/// A document row with its passage count, as [`document_columns`] reads it.
#[derive(sqlx::FromRow)]
struct DocumentRow {
    doc_id: String,
    text: Option<String>,
    metadata: Option<String>,
    created_at: String,
    updated_at: String,
    passage_count: i64,
}

impl TryFrom<DocumentRow> for DocumentRecord {
    type Error = StoreError;

    fn try_from(row: DocumentRow) -> StoreResult<Self> {
        let id = row.doc_id;
        let metadata = decode_metadata(row.metadata.as_deref(), || {
            format!("metadata of document '{id}'")
        })?;
        let passage_count = to_u64(row.passage_count, || {
            format!("passage count of document '{id}'")
        })?;
        Ok(DocumentRecord {
            text: row.text,
            metadata,
            passage_count,
            created_at: row.created_at,
            updated_at: row.updated_at,
            id,
        })
    }
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
            ", p.vector, (SELECT dimension FROM collections WHERE id = $1) AS dimension"
        )
    };
}

/// A passage row as `passage_columns!()` reads it.
#[derive(sqlx::FromRow)]
struct PassageRow {
    id: i64,
    doc_id: String,
    idx: i64,
    char_start: i64,
    char_end: i64,
    text: Option<String>,
}

/// A passage row with its vector, as `passage_columns!(vector)` reads it.
#[derive(sqlx::FromRow)]
struct PassageVectorRow {
    #[sqlx(flatten)]
    passage: PassageRow,
    vector: Vec<u8>,
    dimension: Option<i64>,
}

impl TryFrom<PassageRow> for PassageRecord {
    type Error = StoreError;

    fn try_from(row: PassageRow) -> StoreResult<Self> {
        let id = row.id;
        let what = |field: &'static str| move || format!("passage {id} {field}");
        Ok(PassageRecord {
            id: to_u64(id, what("id"))?,
            doc_id: row.doc_id,
            index: to_usize(row.idx, what("index"))?,
            start: to_usize(row.char_start, what("start"))?,
            end: to_usize(row.char_end, what("end"))?,
            text: row.text,
            vector: None,
        })
    }
}

impl TryFrom<PassageVectorRow> for PassageRecord {
    type Error = StoreError;

    fn try_from(row: PassageVectorRow) -> StoreResult<Self> {
        let id = row.passage.id;
        let dimension = row.dimension.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "passage {id} has a vector but its collection has no dimension"
            ))
        })?;
        let dimension = to_usize(dimension, || format!("passage {id} dimension"))?;
        let vector = decode_vector(&row.vector, dimension, id)?;
        let mut record = PassageRecord::try_from(row.passage)?;
        record.vector = Some(vector);
        Ok(record)
    }
}

/// `($1,…,$c),($c+1,…)` for `rows` rows of `columns` values: the `VALUES` list of a multi-row
/// insert, in the numbered parameters both backends read.
fn values_list(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 6);
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..columns {
            if c > 0 {
                out.push(',');
            }
            out.push_str(&format!("${}", r * columns + c + 1));
        }
        out.push(')');
    }
    out
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
        // PostgreSQL's text cannot hold U+0000; SQLite refuses it too, so that a document
        // stored on one backend can be stored on the other.
        let texts = doc.passages.iter().filter_map(|p| p.text.as_deref());
        if std::iter::once(doc.id.as_str())
            .chain(doc.text.as_deref())
            .chain(texts)
            .any(|t| t.contains('\0'))
        {
            return Err(StoreError::Invalid(format!(
                "document '{}': ids and texts must not contain the NUL character (U+0000)",
                doc.id.replace('\0', "\\0")
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

/// The id list of a statement: `$2`, a JSON array of strings or integers, as a table of
/// `value` (text) in the array's order (`key`). SQLite's `CROSS JOIN` makes it walk the list
/// and look each id up, never the reverse.
macro_rules! id_list {
    (sqlite) => {
        "json_each($2) j CROSS JOIN"
    };
    (postgres) => {
        "json_array_elements_text($2::json) WITH ORDINALITY AS j(value, key) JOIN"
    };
}

/// The documents with the ids of `$2`, in its order.
const DOCUMENTS_BY_ID: Dialects = Dialects {
    sqlite: concat!(
        "SELECT ",
        document_columns!(),
        " FROM ",
        id_list!(sqlite),
        " documents d ON d.collection_id = $1 AND d.doc_id = j.value ORDER BY j.key"
    ),
    postgres: concat!(
        "SELECT ",
        document_columns!(),
        " FROM ",
        id_list!(postgres),
        " documents d ON d.collection_id = $1 AND d.doc_id = j.value ORDER BY j.key"
    ),
};

/// The passages with the ids of `$2`, in its order.
const PASSAGES_BY_ID: Dialects = Dialects {
    sqlite: concat!(
        "SELECT ",
        passage_columns!(),
        " FROM ",
        id_list!(sqlite),
        " passages p ON p.id = j.value WHERE p.collection_id = $1 ORDER BY j.key"
    ),
    postgres: concat!(
        "SELECT ",
        passage_columns!(),
        " FROM ",
        id_list!(postgres),
        " passages p ON p.id = j.value::bigint WHERE p.collection_id = $1 ORDER BY j.key"
    ),
};

/// [`PASSAGES_BY_ID`] with their vectors.
const PASSAGE_VECTORS_BY_ID: Dialects = Dialects {
    sqlite: concat!(
        "SELECT ",
        passage_columns!(vector),
        " FROM ",
        id_list!(sqlite),
        " passages p ON p.id = j.value WHERE p.collection_id = $1 ORDER BY j.key"
    ),
    postgres: concat!(
        "SELECT ",
        passage_columns!(vector),
        " FROM ",
        id_list!(postgres),
        " passages p ON p.id = j.value::bigint WHERE p.collection_id = $1 ORDER BY j.key"
    ),
};

/// `doc_id IN` the JSON array of strings `$2`.
macro_rules! in_ids {
    (sqlite) => {
        "doc_id IN (SELECT value FROM json_each($2))"
    };
    (postgres) => {
        "doc_id IN (SELECT json_array_elements_text($2::json))"
    };
}

/// Which of the documents `$2` exist.
const EXISTING_DOCUMENTS: Dialects = Dialects {
    sqlite: concat!(
        "SELECT doc_id FROM documents WHERE collection_id = $1 AND ",
        in_ids!(sqlite)
    ),
    postgres: concat!(
        "SELECT doc_id FROM documents WHERE collection_id = $1 AND ",
        in_ids!(postgres)
    ),
};

/// Deletes the passages of the documents `$2`, returning their document and id.
const DELETE_PASSAGES_OF: Dialects = Dialects {
    sqlite: concat!(
        "DELETE FROM passages WHERE collection_id = $1 AND ",
        in_ids!(sqlite),
        " RETURNING doc_id, id"
    ),
    postgres: concat!(
        "DELETE FROM passages WHERE collection_id = $1 AND ",
        in_ids!(postgres),
        " RETURNING doc_id, id"
    ),
};

/// Deletes the documents `$2`, returning the ids that existed.
const DELETE_DOCUMENTS: Dialects = Dialects {
    sqlite: concat!(
        "DELETE FROM documents WHERE collection_id = $1 AND ",
        in_ids!(sqlite),
        " RETURNING doc_id"
    ),
    postgres: concat!(
        "DELETE FROM documents WHERE collection_id = $1 AND ",
        in_ids!(postgres),
        " RETURNING doc_id"
    ),
};

/// One round of an upsert inside its write transaction `$tx` (backend `$b`): up to
/// [`DOCS_PER_BATCH`] documents `$docs`, their outcomes appended to `$out`. A macro rather
/// than a function so that it is checked against each backend's transaction type, as the
/// bodies of [`write_tx`] are.
macro_rules! upsert_batch {
    ($tx:ident, $b:ident, $collection:expr, $docs:expr, $now:expr, $out:expr) => {{
        let (collection, docs, now, out): (CollectionId, &[NewDocument], &str, &mut Vec<_>) =
            ($collection, $docs, $now, $out);
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
        let existing: Vec<String> = sqlx::query_scalar($b.pick(&EXISTING_DOCUMENTS))
            .bind(collection.0)
            .bind(json_array(&ids))
            .fetch_all(&mut *$tx)
            .await?;
        if !existing.is_empty() {
            let removed: Vec<(String, i64)> = sqlx::query_as($b.pick(&DELETE_PASSAGES_OF))
                .bind(collection.0)
                .bind(json_array(&existing))
                .fetch_all(&mut *$tx)
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
            query.execute(&mut *$tx).await?;
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
            // RETURNING yields rows in no promised order, hence the lookup by document and
            // index.
            let inserted = query.fetch_all(&mut *$tx).await?;
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
    }};
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
    /// non-finite vectors, a NUL character in an id or a text ([`StoreError::Invalid`]). The
    /// first vectors stored in a collection without a dimension fix it.
    pub async fn upsert_documents(
        &self,
        collection: CollectionId,
        docs: &[NewDocument],
    ) -> StoreResult<Vec<UpsertedDocument>> {
        Ok(self.upsert_documents_versioned(collection, docs).await?.0)
    }

    /// As [`upsert_documents`](Self::upsert_documents), also returning the collection version
    /// the write produced.
    pub async fn upsert_documents_versioned(
        &self,
        collection: CollectionId,
        docs: &[NewDocument],
    ) -> StoreResult<(Vec<UpsertedDocument>, u64)> {
        let batch_dimension = validate(docs)?;
        let now = now();
        let out = write_tx!(self, |tx, b| {
            let stored: Option<Option<i64>> = sqlx::query_scalar(b.pick(&LOCK_COLLECTION))
                .bind(collection.0)
                .fetch_optional(&mut *tx)
                .await?;
            let stored = stored.ok_or(StoreError::CollectionNotFound(collection))?;
            if let Some(got) = batch_dimension {
                match stored {
                    Some(d) => {
                        let expected =
                            to_usize(d, || format!("collection {collection} dimension"))?;
                        if expected != got {
                            return Err(StoreError::DimensionMismatch { expected, got });
                        }
                    }
                    None => {
                        sqlx::query("UPDATE collections SET dimension = $2 WHERE id = $1")
                            .bind(collection.0)
                            .bind(to_i64(got, || "dimension".into())?)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
            }
            let mut out = Vec::with_capacity(docs.len());
            for batch in docs.chunks(DOCS_PER_BATCH) {
                upsert_batch!(tx, b, collection, batch, &now, &mut out);
            }
            let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
            let version =
                record_change!(tx, b, collection, "upsert", json_array(&ids), &*self.node);
            tx.commit().await?;
            (out, version)
        });
        let (out, version) = out;
        self.passage_cache.remove(
            out.iter()
                .flat_map(|d| d.removed_passage_ids.iter().copied()),
        );
        Ok((out, version))
    }

    /// Deletes the documents with these ids and their passages, in one transaction. Returns the
    /// documents that existed, in the order asked, with their removed passage ids; unknown ids
    /// are skipped.
    pub async fn delete_documents(
        &self,
        collection: CollectionId,
        ids: &[String],
    ) -> StoreResult<Vec<DeletedDocument>> {
        Ok(self.delete_documents_versioned(collection, ids).await?.0)
    }

    /// As [`delete_documents`](Self::delete_documents), also returning the collection version
    /// after the write (unchanged when no document existed; 0 for an unknown collection).
    pub async fn delete_documents_versioned(
        &self,
        collection: CollectionId,
        ids: &[String],
    ) -> StoreResult<(Vec<DeletedDocument>, u64)> {
        if ids.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let ids_json = json_array(ids);
        let (removed, deleted, version): (Vec<(String, i64)>, Vec<String>, u64) =
            write_tx!(self, |tx, b| {
                let exists: Option<Option<i64>> = sqlx::query_scalar(b.pick(&LOCK_COLLECTION))
                    .bind(collection.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    tx.rollback().await?;
                    return Ok((Vec::new(), 0));
                }
                let removed = sqlx::query_as(b.pick(&DELETE_PASSAGES_OF))
                    .bind(collection.0)
                    .bind(&ids_json)
                    .fetch_all(&mut *tx)
                    .await?;
                let deleted: Vec<String> = sqlx::query_scalar(b.pick(&DELETE_DOCUMENTS))
                    .bind(collection.0)
                    .bind(&ids_json)
                    .fetch_all(&mut *tx)
                    .await?;
                if deleted.is_empty() {
                    // Nothing changed: no new version, no change for the feed.
                    let version: i64 =
                        sqlx::query_scalar("SELECT version FROM collections WHERE id = $1")
                            .bind(collection.0)
                            .fetch_one(&mut *tx)
                            .await?;
                    tx.rollback().await?;
                    let version = to_u64(version, || format!("collection {collection} version"))?;
                    return Ok((Vec::new(), version));
                }
                let version = record_change!(
                    tx,
                    b,
                    collection,
                    "delete",
                    json_array(&deleted),
                    &*self.node
                );
                tx.commit().await?;
                (removed, deleted, version)
            });

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
        Ok((out, version))
    }

    /// The document `id`, if it exists.
    pub async fn get_document(
        &self,
        collection: CollectionId,
        id: &str,
    ) -> StoreResult<Option<DocumentRecord>> {
        let row: Option<DocumentRow> = read_pool!(self, |pool, _b| {
            sqlx::query_as(concat!(
                "SELECT ",
                document_columns!(),
                " FROM documents d WHERE d.collection_id = $1 AND d.doc_id = $2"
            ))
            .bind(collection.0)
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(DocumentRecord::try_from).transpose()
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
        let rows: Vec<DocumentRow> = read_pool!(self, |pool, b| {
            sqlx::query_as(b.pick(&DOCUMENTS_BY_ID))
                .bind(collection.0)
                .bind(json_array(ids))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(DocumentRecord::try_from).collect()
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
        let (total, rows): (i64, Vec<DocumentRow>) = read_tx!(self, |tx, _b| {
            let total: i64 =
                sqlx::query_scalar("SELECT count(*) FROM documents WHERE collection_id = $1")
                    .bind(collection.0)
                    .fetch_one(&mut *tx)
                    .await?;
            // One row more than asked tells whether another page follows.
            let rows = match &page.after {
                None => {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        document_columns!(),
                        " FROM documents d WHERE d.collection_id = $1 \
                         ORDER BY d.doc_id LIMIT $2 OFFSET $3"
                    ))
                    .bind(collection.0)
                    .bind(limit + 1)
                    .bind(offset)
                    .fetch_all(&mut *tx)
                    .await?
                }
                Some(after) => {
                    sqlx::query_as(concat!(
                        "SELECT ",
                        document_columns!(),
                        " FROM documents d WHERE d.collection_id = $1 AND d.doc_id > $4 \
                         ORDER BY d.doc_id LIMIT $2 OFFSET $3"
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
            (total, rows)
        });
        let more = rows.len() > page.limit as usize;
        let documents = rows
            .into_iter()
            .take(page.limit as usize)
            .map(DocumentRecord::try_from)
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
        /// A document's passages in order, with the given columns.
        macro_rules! of_document {
            ($columns:expr) => {
                concat!(
                    "SELECT ",
                    $columns,
                    " FROM passages p WHERE p.collection_id = $1 AND p.doc_id = $2 \
                     ORDER BY p.idx"
                )
            };
        }
        read_pool!(self, |pool, _b| {
            if with_vectors {
                let rows: Vec<PassageVectorRow> =
                    sqlx::query_as(of_document!(passage_columns!(vector)))
                        .bind(collection.0)
                        .bind(id)
                        .fetch_all(pool)
                        .await?;
                rows.into_iter().map(PassageRecord::try_from).collect()
            } else {
                let rows: Vec<PassageRow> = sqlx::query_as(of_document!(passage_columns!()))
                    .bind(collection.0)
                    .bind(id)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(PassageRecord::try_from).collect()
            }
        })
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
        let ids = json_array(ids);
        read_pool!(self, |pool, b| {
            if with_vectors {
                let rows: Vec<PassageVectorRow> = sqlx::query_as(b.pick(&PASSAGE_VECTORS_BY_ID))
                    .bind(collection.0)
                    .bind(&ids)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(PassageRecord::try_from).collect()
            } else {
                let rows: Vec<PassageRow> = sqlx::query_as(b.pick(&PASSAGES_BY_ID))
                    .bind(collection.0)
                    .bind(&ids)
                    .fetch_all(pool)
                    .await?;
                rows.into_iter().map(PassageRecord::try_from).collect()
            }
        })
    }
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
