//! A text collection's lexical side: its BM25 index ([`crate::lexical`]) kept in step with the
//! store and the in-memory state, and the lexical leg of a query, filters included.
//!
//! Writes reach the index after the store has committed them and the in-memory state has
//! taken them, on the write's blocking thread with no collection lock held. An index that
//! fails a write stops taking writes and answers lexical queries with a 503 (the collection's
//! dense search goes on); the next start replays or rebuilds it from the store.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::index::Hit;
use crate::lexical::{LexicalIndex, LexicalResult};

use super::collection::Collection;
use super::error::{ServiceError, ServiceResult};
use super::filter::Filter;

/// Filters estimated to match at least this fraction of passages are applied after the
/// lexical search, which then asks for `k / fraction` hits with room to spare; more selective
/// ones are applied inside it, as a set of the matching passages.
const POST_FILTER_FRACTION: f64 = 0.2;

/// A collection's lexical index with its health.
pub(crate) struct Lexical {
    pub(crate) index: LexicalIndex,
    /// The analyzer's language (`en`, …, or `none`).
    pub(crate) language: String,
    /// Why the index stopped taking writes, once it has.
    failed: Mutex<Option<String>>,
}

impl Lexical {
    pub(crate) fn new(index: LexicalIndex, language: String) -> Self {
        Lexical {
            index,
            language,
            failed: Mutex::new(None),
        }
    }

    /// Why the index is out of service, if it is.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failed.lock().clone()
    }

    /// Applies a committed write. A failure takes the index out of service (it would miss
    /// this write from now on) rather than failing a write that is already durable.
    pub(crate) fn write<'t>(
        &self,
        collection: &str,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'t str)>,
    ) {
        if self.failed.lock().is_some() {
            return;
        }
        if let Err(e) = self.index.apply(removed, added) {
            tracing::error!(
                collection,
                error = %e,
                "lexical index failed a write; lexical and hybrid queries of this collection \
                 are refused until a restart rebuilds it"
            );
            *self.failed.lock() = Some(e.to_string());
        }
    }

    /// Replays a batch at start; an error here fails the start of the collection.
    pub(crate) fn replay<'t>(
        &self,
        removed: &[u64],
        added: impl IntoIterator<Item = (u64, &'t str)>,
    ) -> LexicalResult<()> {
        self.index.apply(removed, added)
    }
}

impl Collection {
    /// The collection's lexical index, in service.
    pub(crate) fn lexical(&self) -> ServiceResult<&Lexical> {
        let Some(lexical) = self.lexical.as_ref() else {
            return Err(ServiceError::invalid(
                "lexical_unavailable",
                format!(
                    "collection '{}' takes vectors and has no lexical index; query it with \
                     \"mode\": \"dense\"",
                    self.record.name
                ),
            ));
        };
        if let Some(why) = lexical.failure() {
            return Err(ServiceError::Unavailable(format!(
                "the lexical index of collection '{}' is out of service ({why}); dense queries \
                 still work, and a restart rebuilds it",
                self.record.name
            )));
        }
        Ok(lexical)
    }

    /// The `k` passages with the best BM25 score for `text` among those whose document matches
    /// `filter`, best first. Passages removed from the collection are never returned.
    pub(crate) fn lexical_search(
        &self,
        text: &str,
        k: usize,
        filter: Option<&Filter>,
    ) -> ServiceResult<Vec<Hit>> {
        let lexical = self.lexical()?;
        let search = |n: usize, allow| -> ServiceResult<Vec<Hit>> {
            let found = lexical
                .index
                .search(text, n, allow)
                .map_err(|e| ServiceError::internal("lexical search", e))?;
            Ok(found
                .into_iter()
                .map(|(id, score)| Hit { id, score })
                .collect())
        };
        // The post-filter reads the documents under a brief read lock, after the search,
        // which runs with no lock held.
        let keep = |hits: Vec<Hit>, filter: Option<&Filter>| -> Vec<Hit> {
            let st = self.state.read();
            hits.into_iter()
                .filter(|h| {
                    st.passage_doc
                        .get(&h.id)
                        .is_some_and(|d| filter.is_none_or(|f| f.matches(&d.metadata)))
                })
                .collect()
        };
        let Some(f) = filter else {
            let mut hits = keep(search(k, None)?, None);
            hits.truncate(k);
            return Ok(hits);
        };
        let fraction = self.filter_selectivity(f);
        if fraction >= POST_FILTER_FRACTION {
            let n = ((k as f64 / fraction) * 1.5).ceil() as usize + 10;
            let found = search(n, None)?;
            let exhausted = found.len() < n;
            let mut hits = keep(found, Some(f));
            if hits.len() >= k || exhausted {
                hits.truncate(k);
                return Ok(hits);
            }
        }
        // A selective filter, or a post-filter that came up short: search within the
        // matching passages.
        let allowed: HashSet<u64> = self.passages_matching(f).into_iter().collect();
        if allowed.is_empty() {
            return Ok(Vec::new());
        }
        let allowed = Arc::new(allowed);
        let allow: Arc<dyn Fn(u64) -> bool + Send + Sync> =
            Arc::new(move |id| allowed.contains(&id));
        let mut hits = keep(search(k, Some(allow))?, Some(f));
        hits.truncate(k);
        Ok(hits)
    }
}
