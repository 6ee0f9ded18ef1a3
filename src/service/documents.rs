//! Document use cases: upsert (split, embed, commit, index), read, list and delete.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use crate::index::validate;
use crate::store::{DocumentRecord, NewDocument, NewPassage, PageRequest, Span};

use super::Service;
use super::collection::{Collection, DocEntry};
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;
use super::follow;
use super::limits::Limit;
use super::types::Versioned;
use super::types::{Document, DocumentInput, DocumentPage, Selector, UpsertedDocument};

/// Longest document id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// Most documents per page when listing.
pub const MAX_PAGE: u32 = 1000;

impl From<DocumentRecord> for Document {
    fn from(r: DocumentRecord) -> Self {
        Document {
            id: r.id,
            text: r.text,
            metadata: r.metadata,
            passages: r.passage_count,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// A document checked and, for text, split, waiting for its passages' vectors.
struct Prepared {
    id: String,
    text: Option<String>,
    metadata: Value,
    /// `(start, end, passage text)` per passage.
    spans: Vec<(usize, usize, Option<String>)>,
    /// The caller's vector, for a document given as one.
    vector: Option<Vec<f32>>,
    /// That vector checked and as the indexes hold it (normalised under cosine).
    ready: Option<Vec<f32>>,
}

/// Checks a passage's vector and returns it as the indexes hold it (normalised under cosine).
fn check_vector(coll: &Collection, v: &[f32], doc: &str) -> ServiceResult<Vec<f32>> {
    coll.check_length(v)
        .and_then(|()| Ok(validate::prepare_batch(coll.metric, coll.dim, &[0], v)?.into_owned()))
        .map_err(|e| e.in_context(&format!("document '{doc}'")))
}

/// Builds the documents to commit from the checked input and the passages' embeddings, and
/// each passage's vector as the indexes hold it (checked, normalised under cosine), in the same
/// order.
fn assemble(
    coll: &Collection,
    prepared: Vec<Prepared>,
    embedded: Vec<Vec<f32>>,
) -> ServiceResult<(Vec<NewDocument>, Vec<f32>)> {
    let mut embedded = embedded.into_iter();
    let mut ready = Vec::new();
    let mut new_docs = Vec::with_capacity(prepared.len());
    for d in prepared {
        let passages = match d.vector {
            Some(vector) => {
                ready.extend_from_slice(
                    d.ready
                        .as_deref()
                        .expect("given vectors are checked in prepare. This is a bug."),
                );
                let (start, end, text) = d.spans.into_iter().next().expect("one span");
                vec![NewPassage {
                    start,
                    end,
                    text,
                    vector,
                }]
            }
            None => d
                .spans
                .into_iter()
                .enumerate()
                .map(|(i, (start, end, text))| {
                    let vector = embedded.next().expect("one embedding per passage");
                    ready.extend_from_slice(&check_embedding(coll, &vector, &d.id, i)?);
                    Ok(NewPassage {
                        start,
                        end,
                        text,
                        vector,
                    })
                })
                .collect::<ServiceResult<Vec<_>>>()?,
        };
        new_docs.push(NewDocument {
            id: d.id,
            text: d.text,
            metadata: d.metadata,
            passages,
        });
    }
    Ok((new_docs, ready))
}

/// Checks what the model made of a passage before it is committed: a vector the indexes would
/// refuse (wrong width, not finite, zero under cosine) must fail the request while nothing is
/// stored, never after the commit, when the write is durable but not searchable.
fn check_embedding(
    coll: &Collection,
    v: &[f32],
    doc: &str,
    passage: usize,
) -> ServiceResult<Vec<f32>> {
    check_vector(coll, v, doc).map_err(|e| {
        ServiceError::Internal(format!(
            "the embedding model produced an unusable vector for passage {passage} of document \
             '{doc}': {e}"
        ))
    })
}

fn check_id(id: &str) -> ServiceResult<()> {
    if id.is_empty() || id.len() > MAX_ID_BYTES {
        return Err(ServiceError::invalid(
            "invalid_id",
            format!("document ids must be 1 to {MAX_ID_BYTES} bytes long"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(ServiceError::invalid(
            "invalid_id",
            "document ids must not contain control characters",
        ));
    }
    Ok(())
}

impl Service {
    /// Upserts documents: each is split into passages (or taken as one passage when it comes
    /// with a vector), embedded, committed, and indexed. Returns once the write is durable
    /// and visible to queries.
    pub async fn upsert_documents(
        &self,
        collection: &str,
        docs: Vec<DocumentInput>,
    ) -> ServiceResult<Vec<UpsertedDocument>> {
        Ok(self
            .upsert_documents_versioned(collection, docs)
            .await?
            .value)
    }

    /// As [`upsert_documents`](Self::upsert_documents), with the collection version the write
    /// produced.
    pub async fn upsert_documents_versioned(
        &self,
        collection: &str,
        docs: Vec<DocumentInput>,
    ) -> ServiceResult<Versioned<Vec<UpsertedDocument>>> {
        let coll = self.collection_synced(collection).await?;
        if docs.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no documents given"));
        }
        let limits = &self.settings.limits;
        Limit::Documents.check(
            "the number of documents in the request",
            docs.len(),
            limits.max_documents,
        )?;
        let prepared = self.prepare(&coll, docs).await?;
        let passages = prepared.iter().map(|d| d.spans.len()).sum::<usize>();
        Limit::Passages
            .check(
                "the number of passages the documents split into",
                passages,
                limits.max_passages,
            )
            .map_err(|e| {
                e.in_context(&format!(
                    "the request is too large to embed at once; send its {} documents in several \
                 requests",
                    prepared.len()
                ))
            })?;

        // Embed every passage of the text documents in one bulk request: the worker batches
        // them behind queries, admitting them in chunks.
        let texts: Vec<String> = prepared
            .iter()
            .filter(|d| d.vector.is_none())
            .flat_map(|d| d.spans.iter().map(|s| s.2.clone().unwrap_or_default()))
            .collect();
        let embedded = if texts.is_empty() {
            Vec::new()
        } else {
            self.embed_passages(texts).await?
        };
        // Every vector is checked and prepared for the indexes before the commit, so that
        // nothing that can fail runs between the commit and the in-memory update.
        let c = coll.clone();
        let (new_docs, ready) = Service::blocking(move || assemble(&c, prepared, embedded)).await?;
        self.commit(coll, new_docs, ready).await
    }

    /// Checks the documents and splits text ones into passages.
    async fn prepare(
        &self,
        coll: &Arc<Collection>,
        docs: Vec<DocumentInput>,
    ) -> ServiceResult<Vec<Prepared>> {
        let mut seen = HashSet::with_capacity(docs.len());
        let mut out = Vec::with_capacity(docs.len());
        for doc in docs {
            let id = match doc.id {
                Some(id) => {
                    check_id(&id)?;
                    id
                }
                None => uuid::Uuid::new_v4().to_string(),
            };
            if !seen.insert(id.clone()) {
                return Err(ServiceError::invalid(
                    "duplicate_id",
                    format!("document '{id}' appears more than once in the request"),
                ));
            }
            if !(doc.metadata.is_object() || doc.metadata.is_null()) {
                return Err(ServiceError::invalid(
                    "invalid_metadata",
                    format!("document '{id}': metadata must be a JSON object"),
                ));
            }
            self.settings.limits.check_metadata(&id, &doc.metadata)?;
            let chars = doc.text.as_ref().map_or(0, |t| t.chars().count());
            let (spans, vector) = match (doc.vector, &doc.text) {
                // Checked with the splitting below, off the runtime.
                (Some(v), _) => (vec![(0, chars, doc.text.clone())], Some(v)),
                (None, Some(t)) if !t.trim().is_empty() => {
                    if coll.chunker.is_none() {
                        return Err(ServiceError::invalid(
                            "vector_required",
                            format!(
                                "document '{id}': collection '{}' takes vectors of dimension {}, \
                                 which the embedding model does not produce; send \"vector\"",
                                coll.record.name, coll.dim
                            ),
                        ));
                    }
                    (Vec::new(), None)
                }
                (None, text) => {
                    let what = if text.is_some() {
                        "text of only whitespace, and no vector"
                    } else {
                        "neither text nor a vector"
                    };
                    return Err(ServiceError::invalid(
                        "empty_input",
                        format!("document '{id}' has {what}"),
                    ));
                }
            };
            out.push(Prepared {
                id,
                text: doc.text,
                metadata: doc.metadata,
                spans,
                vector,
                ready: None,
            });
        }
        // Checking vectors and splitting texts (the tokenizer, many times per document) are CPU
        // work: off the runtime. Vectors are prepared for the indexes once, here.
        let c = coll.clone();
        Service::blocking(move || {
            let chunker = c.chunker.as_ref();
            for d in out.iter_mut() {
                if let Some(v) = &d.vector {
                    d.ready = Some(check_vector(&c, v, &d.id)?);
                    continue;
                }
                let chunker = chunker.expect("text documents were checked above");
                let text = d.text.as_deref().expect("checked above");
                d.spans = chunker
                    .split(text)?
                    .into_iter()
                    .map(|p| (p.start, p.end, Some(p.text)))
                    .collect();
                if d.spans.is_empty() {
                    return Err(ServiceError::invalid(
                        "empty_input",
                        format!("document '{}' has no text to embed", d.id),
                    ));
                }
            }
            Ok(out)
        })
        .await
    }

    /// Commits documents and applies them to the in-memory indexes, as one
    /// [`serialized_write`].
    ///
    /// `ready` holds every passage's vector as the indexes take it, in document and passage
    /// order.
    async fn commit(
        &self,
        coll: Arc<Collection>,
        docs: Vec<NewDocument>,
        ready: Vec<f32>,
    ) -> ServiceResult<Versioned<Vec<UpsertedDocument>>> {
        let store = self.store.clone();
        serialized_write(coll, "write task", move |coll| async move {
            let (done, version) = store
                .upsert_documents_versioned(coll.record.id, &docs)
                .await?;
            let result = done.clone();
            if !in_order(&coll, version) {
                follow::catch_up(&store, &coll).await?;
                return Ok(Versioned::new(upserted(result), version));
            }
            let c = coll.clone();
            Service::blocking(move || {
                let removed: Vec<u64> = done
                    .iter()
                    .flat_map(|d| d.removed_passage_ids.iter().copied())
                    .collect();
                let added = docs
                    .iter()
                    .zip(&done)
                    .map(|(doc, up)| DocEntry {
                        id: doc.id.clone(),
                        metadata: doc.metadata.clone(),
                        passages: up.passage_ids.clone(),
                        spans: doc
                            .passages
                            .iter()
                            .map(|p| Span {
                                start: p.start,
                                end: p.end,
                            })
                            .collect(),
                    })
                    .collect();
                c.make_room(ready.len() / c.dim);
                c.apply_write(&[], &removed, added, &ready);
                if let Some(lexical) = &c.lexical {
                    let texts = docs.iter().zip(&done).flat_map(|(doc, up)| {
                        up.passage_ids
                            .iter()
                            .copied()
                            .zip(doc.passages.iter().map(|p| p.text.as_deref().unwrap_or("")))
                    });
                    lexical.write(&c.record.name, &removed, texts);
                }
                c.set_applied(version);
                Ok(())
            })
            .await?;
            Ok(Versioned::new(upserted(result), version))
        })
        .await
    }

    /// One document.
    pub async fn get_document(&self, collection: &str, id: &str) -> ServiceResult<Document> {
        let coll = self.collection_synced(collection).await?;
        self.store
            .get_document(coll.record.id, id)
            .await?
            .map(Document::from)
            .ok_or_else(|| ServiceError::DocumentNotFound {
                collection: collection.to_string(),
                id: id.to_string(),
            })
    }

    /// Documents selected by ids (in request order, each once, missing ones left out) or by a
    /// metadata filter (in id order), a page at a time: `after` is the last id of the previous
    /// page.
    pub async fn get_documents(
        &self,
        collection: &str,
        selector: Option<Selector>,
        after: Option<String>,
        limit: u32,
    ) -> ServiceResult<DocumentPage> {
        let coll = self.collection_synced(collection).await?;
        if limit == 0 || limit > MAX_PAGE {
            return Err(ServiceError::invalid(
                "invalid_parameter",
                format!("limit must be between 1 and {MAX_PAGE}"),
            ));
        }
        // The ids of the selection, and how many of them the cursor has passed.
        let (ids, start) = match selector {
            None | Some(Selector::All) => {
                let page = self
                    .store
                    .list_documents(
                        coll.record.id,
                        &PageRequest {
                            after,
                            offset: 0,
                            limit,
                        },
                    )
                    .await?;
                return Ok(DocumentPage {
                    documents: page.documents.into_iter().map(Document::from).collect(),
                    total: page.total,
                    next_after: page.next_after,
                });
            }
            Some(Selector::Ids(ids)) => {
                Limit::Documents.check(
                    "the number of ids in the request",
                    ids.len(),
                    self.settings.limits.max_documents,
                )?;
                let c = coll.clone();
                // The ids (up to `max_documents`) are de-duplicated and searched off the
                // runtime, beside the lookups.
                Service::blocking(move || {
                    let ids = first_occurrences(ids);
                    // The cursor is found among the ids asked for, not just the existing ones,
                    // so that deleting the document it names does not send paging back to the
                    // start.
                    let passed = match &after {
                        None => 0,
                        Some(a) => match ids.iter().position(|i| i == a) {
                            Some(p) => p + 1,
                            // Restarting from the first page would hand the client pages it
                            // has already seen; a cursor from another request is a client
                            // error.
                            None => {
                                return Err(ServiceError::invalid(
                                    "invalid_parameter",
                                    format!(
                                        "\"after\" names '{a}', which is not among the \
                                         requested ids"
                                    ),
                                ));
                            }
                        },
                    };
                    let st = c.state.read();
                    let found = |i: &String| st.docs.contains_key(i);
                    let start = ids[..passed].iter().filter(|i| found(i)).count();
                    Ok((ids.into_iter().filter(found).collect::<Vec<_>>(), start))
                })
                .await?
            }
            Some(Selector::Filter(f)) => {
                // In id order, like the unfiltered listing: the cursor is a position in that
                // order, whether or not its document still exists or still matches.
                let filter = Filter::parse_with(&f, &self.settings.limits)?;
                let ids = self.matching_ids(&coll, filter).await?;
                let start = after
                    .as_ref()
                    .map_or(0, |a| ids.partition_point(|i| i <= a));
                (ids, start)
            }
        };
        let total = ids.len() as u64;
        let page: Vec<String> = ids
            .iter()
            .skip(start)
            .take(limit as usize)
            .cloned()
            .collect();
        let next_after = (start + page.len() < ids.len())
            .then(|| page.last().cloned())
            .flatten();
        let documents = self
            .store
            .get_documents(coll.record.id, &page)
            .await?
            .into_iter()
            .map(Document::from)
            .collect();
        Ok(DocumentPage {
            documents,
            total,
            next_after,
        })
    }

    /// Deletes documents selected by ids or by a filter, with their passages. Returns the
    /// ids deleted.
    pub async fn delete_documents(
        &self,
        collection: &str,
        selector: Selector,
    ) -> ServiceResult<Vec<String>> {
        Ok(self
            .delete_documents_versioned(collection, selector)
            .await?
            .value)
    }

    /// As [`delete_documents`](Self::delete_documents), with the collection version after the
    /// write (unchanged when nothing was deleted).
    pub async fn delete_documents_versioned(
        &self,
        collection: &str,
        selector: Selector,
    ) -> ServiceResult<Versioned<Vec<String>>> {
        let coll = self.collection_synced(collection).await?;
        let ids = match selector {
            Selector::Ids(ids) => {
                Limit::Documents.check(
                    "the number of ids in the request",
                    ids.len(),
                    self.settings.limits.max_documents,
                )?;
                ids
            }
            Selector::Filter(f) => {
                let filter = Filter::parse_with(&f, &self.settings.limits)?;
                if filter.is_empty() {
                    return Err(ServiceError::invalid(
                        "empty_filter",
                        "an empty filter matches every document; to delete every document of \
                         the collection, send {\"all\": true} instead",
                    ));
                }
                self.matching_ids(&coll, filter).await?
            }
            Selector::All => self.matching_ids(&coll, Filter::everything()).await?,
        };
        if ids.is_empty() {
            return Ok(Versioned::new(Vec::new(), coll.applied()));
        }
        let store = self.store.clone();
        serialized_write(coll, "delete task", move |coll| async move {
            let (deleted, version) = store
                .delete_documents_versioned(coll.record.id, &ids)
                .await?;
            if deleted.is_empty() {
                return Ok(Versioned::new(Vec::new(), version));
            }
            let doc_ids: Vec<String> = deleted.iter().map(|d| d.id.clone()).collect();
            if !in_order(&coll, version) {
                follow::catch_up(&store, &coll).await?;
                return Ok(Versioned::new(doc_ids, version));
            }
            let passages: Vec<u64> = deleted
                .iter()
                .flat_map(|d| d.passage_ids.iter().copied())
                .collect();
            let c = coll.clone();
            let ids = doc_ids.clone();
            Service::blocking(move || {
                c.apply_write(&ids, &passages, Vec::new(), &[]);
                if let Some(lexical) = &c.lexical {
                    lexical.write(&c.record.name, &passages, std::iter::empty());
                }
                c.set_applied(version);
                Ok(())
            })
            .await?;
            Ok(Versioned::new(doc_ids, version))
        })
        .await
    }

    /// Ids of the documents whose metadata matches a filter, sorted.
    async fn matching_ids(
        &self,
        coll: &Arc<Collection>,
        filter: Filter,
    ) -> ServiceResult<Vec<String>> {
        let c = coll.clone();
        Service::blocking(move || {
            let st = c.state.read();
            let mut ids: Vec<String> = st
                .docs
                .iter()
                .filter(|(_, d)| filter.matches(&d.metadata))
                .map(|(id, _)| id.clone())
                .collect();
            ids.sort_unstable();
            Ok(ids)
        })
        .await
    }
}

/// Whether a write committed at `version` comes right after what `coll` holds, so that it can
/// be applied directly; otherwise another node's write came between, and the feed brings both.
fn in_order(coll: &Collection, version: u64) -> bool {
    coll.applied() + 1 == version
}

/// What an upsert reports of each document.
fn upserted(done: Vec<crate::store::UpsertedDocument>) -> Vec<UpsertedDocument> {
    done.into_iter()
        .map(|d| UpsertedDocument {
            passages: d.passage_ids.len(),
            id: d.id,
            replaced: d.replaced,
        })
        .collect()
}

/// Runs a write to `coll` as a task of its own, so that a caller who goes away mid-write cannot
/// leave the store and the indexes apart: under the collection's write lock (writes to one
/// collection are serialised), refused once the collection is deleted, and waking the
/// collection's indexer when it has changed the indexes.
async fn serialized_write<T, F, Fut>(
    coll: Arc<Collection>,
    what: &'static str,
    write: F,
) -> ServiceResult<T>
where
    T: Send + 'static,
    F: FnOnce(Arc<Collection>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ServiceResult<T>> + Send,
{
    tokio::spawn(async move {
        let _write = coll.write_lock.lock().await;
        if coll.is_deleted() {
            return Err(ServiceError::CollectionNotFound(coll.record.name.clone()));
        }
        let out = write(coll.clone()).await?;
        coll.indexer.notify_one();
        Ok(out)
    })
    .await
    .map_err(|e| ServiceError::internal(what, e))?
}

/// `ids` with each id at its first position only: an id asked for twice is answered once, so
/// that a cursor naming it has one position and paging gets past it.
fn first_occurrences(ids: Vec<String>) -> Vec<String> {
    let mut seen = HashSet::with_capacity(ids.len());
    let keep: Vec<bool> = ids.iter().map(|i| seen.insert(i.as_str())).collect();
    ids.into_iter()
        .zip(keep)
        .filter_map(|(id, first)| first.then_some(id))
        .collect()
}
