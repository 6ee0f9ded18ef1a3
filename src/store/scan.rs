//! Cursors over a whole collection, for rebuilding the in-memory state at start: every
//! passage vector ([`VectorScan`]) and every document's metadata with its passage ids
//! ([`DocumentScan`]).
//!
//! A cursor holds one read transaction from its first to its last chunk, so it sees one
//! snapshot of the collection even while writes go on; chunks keep memory bounded and let the
//! caller feed its indexes while the next chunk is read.

use super::{ReadTx, Store, read_tx};

/// Rows per query while filling a [`VectorScan`] chunk.
const ROWS_PER_FETCH: usize = 256;
use super::codec::{decode_metadata, decode_vector_into, to_u64, to_usize};
use super::error::{StoreError, StoreResult};
use super::rows::{CollectionId, DocumentPassages, Span, VectorChunk};

/// Runs `$body` with `$tx` bound to the transaction inside a [`ReadTx`], once per backend.
macro_rules! on_tx {
    ($read:expr, |$tx:ident| $body:block) => {
        match $read {
            ReadTx::Sqlite($tx) => $body,
            ReadTx::Postgres($tx) => $body,
        }
    };
}

/// Reads every passage vector of a collection in ascending id order, chunk by chunk, from one
/// snapshot. Made by [`Store::scan_vectors`].
#[derive(Debug)]
pub struct VectorScan {
    tx: Option<ReadTx>,
    collection: CollectionId,
    dimension: Option<usize>,
    chunk_size: u32,
    after: i64,
}

impl VectorScan {
    /// The collection's dimension (`None` while it holds no vector).
    pub fn dimension(&self) -> Option<usize> {
        self.dimension
    }

    /// The next chunk of at most the chunk size vectors, or `None` after the last. A vector
    /// blob whose length is not the collection's dimension is [`StoreError::Corrupt`]; after an
    /// error the scan is over.
    pub async fn next_chunk(&mut self) -> StoreResult<Option<VectorChunk>> {
        let chunk = self.read_chunk().await;
        if chunk.is_err() {
            // Do not hold a snapshot (and a connection) for a scan that cannot go on.
            self.tx = None;
        }
        chunk
    }

    async fn read_chunk(&mut self) -> StoreResult<Option<VectorChunk>> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(None);
        };
        let wanted = self.chunk_size as usize;
        let mut chunk = VectorChunk::default();
        let mut exhausted = false;
        // sqlx materialises every row of a `fetch_all` before it returns; past a few hundred
        // rows of ~1.5 KiB each that working set falls out of cache and a large chunk loads
        // slower than several small ones, so the chunk is filled by small queries.
        while chunk.ids.len() < wanted {
            let take = (wanted - chunk.ids.len()).min(ROWS_PER_FETCH);
            let rows: Vec<(i64, Vec<u8>)> = on_tx!(tx, |tx| {
                sqlx::query_as(
                    "SELECT id, vector FROM passages WHERE collection_id = $1 AND id > $2 \
                     ORDER BY id LIMIT $3",
                )
                .bind(self.collection.0)
                .bind(self.after)
                .bind(take as i64)
                .fetch_all(&mut **tx)
                .await?
            });
            if !rows.is_empty() {
                let dimension = self.dimension.ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "collection {} has passages but no dimension",
                        self.collection
                    ))
                })?;
                chunk.dimension = dimension;
                chunk.ids.reserve(wanted.min(rows.len() * 8));
                chunk
                    .vectors
                    .reserve(wanted.min(rows.len() * 8) * dimension);
            }
            for (id, vector) in &rows {
                decode_vector_into(vector, chunk.dimension, *id, &mut chunk.vectors)?;
                chunk.ids.push(to_u64(*id, || "passage id".into())?);
                self.after = *id;
            }
            if rows.len() < take {
                exhausted = true;
                break;
            }
        }
        if exhausted {
            self.finish().await?;
        }
        Ok((!chunk.is_empty()).then_some(chunk))
    }

    async fn finish(&mut self) -> StoreResult<()> {
        finish(self.tx.take()).await
    }
}

/// A document row joined with one of its passages (none: the passage columns are null).
type DocumentPassageRow = (
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

/// Reads every document of a collection in id order, with its metadata and passage ids, chunk
/// by chunk, from one snapshot. Made by [`Store::scan_documents`].
#[derive(Debug)]
pub struct DocumentScan {
    tx: Option<ReadTx>,
    collection: CollectionId,
    chunk_size: u32,
    after: String,
}

impl DocumentScan {
    /// The next chunk of at most the chunk size documents, or `None` after the last; after an
    /// error the scan is over.
    pub async fn next_chunk(&mut self) -> StoreResult<Option<Vec<DocumentPassages>>> {
        let chunk = self.read_chunk().await;
        if chunk.is_err() {
            self.tx = None;
        }
        chunk
    }

    async fn read_chunk(&mut self) -> StoreResult<Option<Vec<DocumentPassages>>> {
        let Some(tx) = self.tx.as_mut() else {
            return Ok(None);
        };
        // The document page first, then its passages: a LEFT JOIN keeps a document without
        // passages, and the order groups each document's passages together.
        let rows: Vec<DocumentPassageRow> = on_tx!(tx, |tx| {
            sqlx::query_as(
                "SELECT d.doc_id, d.metadata, p.id, p.char_start, p.char_end FROM \
                 (SELECT doc_id, metadata FROM documents WHERE collection_id = $1 \
                  AND doc_id > $2 ORDER BY doc_id LIMIT $3) d \
                 LEFT JOIN passages p ON p.collection_id = $1 AND p.doc_id = d.doc_id \
                 ORDER BY d.doc_id, p.idx",
            )
            .bind(self.collection.0)
            .bind(&self.after)
            .bind(i64::from(self.chunk_size))
            .fetch_all(&mut **tx)
            .await?
        });
        let mut docs: Vec<DocumentPassages> = Vec::new();
        for (doc_id, metadata, passage, start, end) in &rows {
            if docs.last().is_none_or(|d| &d.id != doc_id) {
                docs.push(DocumentPassages {
                    id: doc_id.clone(),
                    metadata: decode_metadata(metadata.as_deref(), || {
                        format!("metadata of document '{doc_id}'")
                    })?,
                    passage_ids: Vec::new(),
                    spans: Vec::new(),
                });
            }
            if let (Some(id), Some(doc)) = (*passage, docs.last_mut()) {
                let what = || format!("passage of document '{doc_id}'");
                doc.passage_ids.push(to_u64(id, what)?);
                doc.spans.push(Span {
                    start: to_usize(start.unwrap_or(0), what)?,
                    end: to_usize(end.unwrap_or(0), what)?,
                });
            }
        }
        if docs.len() < self.chunk_size as usize {
            self.finish().await?;
        }
        match docs.last() {
            None => Ok(None),
            Some(last) => {
                self.after.clone_from(&last.id);
                Ok(Some(docs))
            }
        }
    }

    async fn finish(&mut self) -> StoreResult<()> {
        finish(self.tx.take()).await
    }
}

impl Store {
    /// A cursor over every passage vector of `collection`, `chunk_size` vectors at a time (at
    /// least 1; a few thousand loads fastest). Fails with [`StoreError::CollectionNotFound`]
    /// for an unknown collection.
    pub async fn scan_vectors(
        &self,
        collection: CollectionId,
        chunk_size: usize,
    ) -> StoreResult<VectorScan> {
        let (tx, dimension) = read_tx!(self, |tx, b| {
            let dimension: Option<Option<i64>> =
                sqlx::query_scalar("SELECT dimension FROM collections WHERE id = $1")
                    .bind(collection.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            (ReadTx::from(tx), dimension)
        });
        let dimension = dimension
            .ok_or(StoreError::CollectionNotFound(collection))?
            .map(|d| to_usize(d, || format!("collection {collection} dimension")))
            .transpose()?;
        Ok(VectorScan {
            tx: Some(tx),
            collection,
            dimension,
            chunk_size: clamp_chunk(chunk_size),
            after: 0,
        })
    }

    /// A cursor over every document of `collection` with its metadata and passage ids,
    /// `chunk_size` documents at a time (at least 1). Fails with
    /// [`StoreError::CollectionNotFound`] for an unknown collection.
    pub async fn scan_documents(
        &self,
        collection: CollectionId,
        chunk_size: usize,
    ) -> StoreResult<DocumentScan> {
        let (tx, exists) = read_tx!(self, |tx, b| {
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM collections WHERE id = $1")
                    .bind(collection.0)
                    .fetch_optional(&mut *tx)
                    .await?;
            (ReadTx::from(tx), exists)
        });
        if exists.is_none() {
            return Err(StoreError::CollectionNotFound(collection));
        }
        Ok(DocumentScan {
            tx: Some(tx),
            collection,
            chunk_size: clamp_chunk(chunk_size),
            after: String::new(),
        })
    }
}

/// Ends a scan's snapshot.
async fn finish(tx: Option<ReadTx>) -> StoreResult<()> {
    match tx {
        Some(ReadTx::Sqlite(tx)) => tx.commit().await?,
        Some(ReadTx::Postgres(tx)) => tx.commit().await?,
        None => {}
    }
    Ok(())
}

fn clamp_chunk(chunk_size: usize) -> u32 {
    u32::try_from(chunk_size).unwrap_or(u32::MAX).max(1)
}
