//! Reranking: a cross-encoder's second look at a query's first hits, and the scoring of
//! arbitrary (query, text) pairs for the TEI-shaped `/rerank` endpoint.
//!
//! The cross-encoder reads the query and a passage together, which makes it a better judge of
//! relevance than the distance between two independent embeddings, and too slow to run over a
//! collection: it runs over the first `top_n` hits of a search only. Its work is interactive
//! (a query waits for it), so it runs on its own batching worker, never behind ingest.

use std::sync::Arc;
use std::time::Duration;

use crate::embed::{EmbedError, RerankScore, Reranker};

use super::Service;
use super::error::{ServiceError, ServiceResult};
use super::limits::Limit;
use super::types::QueryHit;

/// A query's request to rerank its first hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rerank {
    /// How many of the search's hits the cross-encoder scores (at least `k`); the best `k`
    /// by its score are returned.
    pub top_n: usize,
}

/// What a reranker's failure means to a caller.
fn rerank_error(e: EmbedError) -> ServiceError {
    match e {
        EmbedError::Overloaded { .. } => ServiceError::Overloaded {
            what: "the reranking queue",
            retry_after: Duration::from_secs(1),
        },
        EmbedError::WorkerStopped => {
            ServiceError::Unavailable("the reranking model is shutting down".into())
        }
        other => other.into(),
    }
}

impl Service {
    /// The configured reranker, or the 400 that says there is none.
    pub(super) fn reranker(&self) -> ServiceResult<&Arc<dyn Reranker>> {
        self.reranker.as_ref().ok_or_else(|| {
            ServiceError::invalid(
                "reranker_unavailable",
                "this server runs no reranker: start it with --reranker (VICINITY_RERANKER) \
                 naming a sentence-transformers cross-encoder",
            )
        })
    }

    /// The most texts one rerank may score: the reranker's own bound and the server's `max_k`.
    pub(super) fn max_rerank(&self) -> usize {
        let own = self.reranker.as_ref().map_or(usize::MAX, |r| r.max_texts());
        own.min(self.settings.limits.max_k)
    }

    /// Scores each of `texts` against `query` with the reranker, in the order given. Everything
    /// is checked before any text is tokenized.
    pub async fn rerank(
        &self,
        query: String,
        texts: Vec<String>,
    ) -> ServiceResult<Vec<RerankScore>> {
        let reranker = self.reranker()?.clone();
        let limits = &self.settings.limits;
        if query.trim().is_empty() {
            return Err(ServiceError::invalid("empty_input", "the query is empty"));
        }
        if texts.is_empty() {
            return Err(ServiceError::invalid("empty_input", "no texts given"));
        }
        limits.check_text("the query", &query)?;
        Limit::K.check("the number of texts", texts.len(), self.max_rerank())?;
        for (i, t) in texts.iter().enumerate() {
            limits.check_text(&format!("texts[{i}]"), t)?;
        }
        reranker.rerank(query, texts).await.map_err(rerank_error)
    }

    /// Reorders `hits` (a search's first hits, with their text) by the reranker's score of each
    /// against `query`, keeps the best `k`, and sets their `rerank_score`; ties keep the search's
    /// order.
    pub(super) async fn rerank_hits(
        &self,
        query: &str,
        hits: Vec<QueryHit>,
        k: usize,
    ) -> ServiceResult<Vec<QueryHit>> {
        if hits.is_empty() {
            return Ok(hits);
        }
        let reranker = self.reranker()?.clone();
        let texts = hits
            .iter()
            .map(|h| h.text.clone().unwrap_or_default())
            .collect();
        let scores = reranker
            .rerank(query.to_owned(), texts)
            .await
            .map_err(rerank_error)?;
        let mut scored: Vec<(QueryHit, f32)> = hits
            .into_iter()
            .zip(scores)
            .map(|(h, s)| (h, s.score))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(scored
            .into_iter()
            .take(k)
            .map(|(mut h, s)| {
                h.rerank_score = Some(s);
                h
            })
            .collect())
    }
}
