//! Retrieval evaluation: queries whose relevant documents are known are run through the
//! service in one retrieval mode after another, and the document rankings they return are
//! scored (`vicinity bench retrieval`).
//!
//! A query answers passages; a ranking of documents is read from them in order, each document
//! at the rank of its first passage. Relevance is binary (a document is relevant to a query or
//! it is not), and every score is taken at a cutoff of `k` documents:
//!
//! * MRR@k: the reciprocal of the rank of the first relevant document (0 when none is in the
//!   first k), averaged over the queries;
//! * nDCG@k: the discounted gain `Σ 1/log2(rank + 1)` over the relevant documents in the first
//!   k, divided by the best gain possible for that query;
//! * hit@1: the share of queries whose first document is relevant;
//! * recall@k: the share of a query's relevant documents found in the first k, averaged.

use std::collections::HashSet;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::service::{
    Fusion, Grouping, Hybrid, Include, Mmr, Query, QueryInput, Rerank, SearchMode, Service,
    ServiceResult,
};

/// One evaluation query: its text and the ids of the documents that answer it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct EvalQuery {
    /// The query text.
    pub query: String,
    /// Ids of the relevant documents.
    pub relevant: Vec<String>,
    /// What kind of query it is (a heading, an identifier, a question...), to score the kinds
    /// apart; optional.
    #[serde(default)]
    pub kind: Option<String>,
}

/// A retrieval mode to evaluate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// The `k` nearest passages.
    Dense,
    /// The `k` best passages by BM25.
    Lexical,
    /// Dense and lexical, fused.
    Hybrid(Hybrid),
    /// Dense and lexical, fused, then the first `top_n` reranked by the cross-encoder.
    Reranked(Hybrid, usize),
    /// Maximal marginal relevance among more candidates.
    Mmr(Mmr),
    /// The best passage of each of `k` documents.
    Grouped,
}

impl Mode {
    /// The mode's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Lexical => "lexical",
            Mode::Hybrid(h) => match h.fusion {
                Fusion::Rrf { .. } => "hybrid-rrf",
                Fusion::Dbsf => "hybrid-dbsf",
            },
            Mode::Reranked(..) => "hybrid-rerank",
            Mode::Mmr(_) => "mmr",
            Mode::Grouped => "grouped",
        }
    }
}

/// Scores of one ranking, or their means over several.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Scores {
    /// Mean reciprocal rank of the first relevant document, at the cutoff.
    pub mrr: f64,
    /// Normalised discounted cumulative gain, at the cutoff.
    pub ndcg: f64,
    /// Share of rankings whose first document is relevant.
    pub hit_at_1: f64,
    /// Share of the relevant documents found, at the cutoff.
    pub recall: f64,
}

/// The scores of one mode over a set of queries, with the latency of its queries.
#[derive(Clone, Debug, Serialize)]
pub struct ModeReport {
    /// The mode's name.
    pub mode: &'static str,
    /// The query kind these scores are for (`None`: every query).
    pub kind: Option<String>,
    /// Queries scored.
    pub queries: usize,
    /// The cutoff, in documents.
    pub k: usize,
    /// Mean scores.
    pub scores: Scores,
    /// Median query latency through the service, milliseconds (embedding included).
    pub p50_ms: f64,
    /// 99th-percentile query latency, milliseconds.
    pub p99_ms: f64,
}

/// Scores one ranking of document ids (best first, each id once) against the relevant ones,
/// at a cutoff of `k` documents. A query with no relevant document scores 0 everywhere.
pub fn score_ranking(ranked: &[String], relevant: &HashSet<&str>, k: usize) -> Scores {
    if relevant.is_empty() || k == 0 {
        return Scores::default();
    }
    let top = &ranked[..ranked.len().min(k)];
    let gain = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let mut scores = Scores::default();
    let mut found = 0usize;
    let mut dcg = 0.0;
    for (rank, doc) in top.iter().enumerate() {
        if relevant.contains(doc.as_str()) {
            if found == 0 {
                scores.mrr = 1.0 / (rank + 1) as f64;
                scores.hit_at_1 = if rank == 0 { 1.0 } else { 0.0 };
            }
            found += 1;
            dcg += gain(rank);
        }
    }
    let ideal: f64 = (0..relevant.len().min(k)).map(gain).sum();
    scores.ndcg = dcg / ideal;
    scores.recall = found as f64 / relevant.len() as f64;
    scores
}

/// The documents of a query's hits in rank order, each once (at its first passage).
pub fn documents_in_order<'a>(doc_ids: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut seen = HashSet::new();
    doc_ids
        .into_iter()
        .filter(|d| seen.insert(*d))
        .map(str::to_owned)
        .collect()
}

/// Runs every query through `collection` in `mode` and scores the rankings at `k` documents:
/// one report over all queries, then one per query kind when there are several kinds.
///
/// # Errors
/// The first query the service refuses.
pub async fn evaluate(
    service: &Service,
    collection: &str,
    queries: &[EvalQuery],
    mode: Mode,
    k: usize,
) -> ServiceResult<Vec<ModeReport>> {
    let mut scored: Vec<(Option<&str>, Scores, f64)> = Vec::with_capacity(queries.len());
    for q in queries {
        let query = Query {
            input: QueryInput::Text(q.query.clone()),
            k,
            filter: None,
            ef: None,
            nprobe: None,
            oversampling: None,
            exact: false,
            include: Include {
                text: false,
                metadata: false,
                vector: false,
            },
            mmr: match mode {
                Mode::Mmr(m) => Some(Mmr {
                    fetch_k: m.fetch_k.max(k),
                    ..m
                }),
                _ => None,
            },
            group: (mode == Mode::Grouped).then_some(Grouping { group_size: 1 }),
            // MMR and grouping shape the dense answer, as they did before hybrid search, so
            // that their scores compare with dense's.
            mode: Some(match mode {
                Mode::Lexical => SearchMode::Lexical,
                Mode::Hybrid(_) | Mode::Reranked(..) => SearchMode::Hybrid,
                Mode::Dense | Mode::Mmr(_) | Mode::Grouped => SearchMode::Dense,
            }),
            hybrid: match mode {
                Mode::Hybrid(h) | Mode::Reranked(h, _) => h,
                _ => Hybrid::default(),
            },
            rerank: match mode {
                Mode::Reranked(_, top_n) => Some(Rerank {
                    top_n: top_n.max(k),
                }),
                _ => None,
            },
        };
        let started = Instant::now();
        let result = service.query(collection, query).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let ranked = documents_in_order(result.results.iter().map(|h| h.document_id.as_str()));
        let relevant: HashSet<&str> = q.relevant.iter().map(String::as_str).collect();
        scored.push((q.kind.as_deref(), score_ranking(&ranked, &relevant, k), ms));
    }
    let report = |kind: Option<&str>| {
        let rows: Vec<&(Option<&str>, Scores, f64)> = scored
            .iter()
            .filter(|(k, _, _)| kind.is_none() || *k == kind)
            .collect();
        let n = rows.len().max(1) as f64;
        let mean = |f: fn(&Scores) -> f64| rows.iter().map(|(_, s, _)| f(s)).sum::<f64>() / n;
        let mut ms: Vec<f64> = rows.iter().map(|(_, _, ms)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            ms.get(((ms.len() as f64 * q) as usize).min(ms.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        ModeReport {
            mode: mode.name(),
            kind: kind.map(str::to_owned),
            queries: rows.len(),
            k,
            scores: Scores {
                mrr: mean(|s| s.mrr),
                ndcg: mean(|s| s.ndcg),
                hit_at_1: mean(|s| s.hit_at_1),
                recall: mean(|s| s.recall),
            },
            p50_ms: pct(0.5),
            p99_ms: pct(0.99),
        }
    };
    let mut reports = vec![report(None)];
    let mut kinds: Vec<&str> = scored.iter().filter_map(|(k, _, _)| *k).collect();
    kinds.sort_unstable();
    kinds.dedup();
    if kinds.len() > 1 {
        reports.extend(kinds.into_iter().map(|k| report(Some(k))));
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranking(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scores_of_fixed_rankings() {
        let relevant: HashSet<&str> = ["b", "d"].into();
        let s = score_ranking(&ranking(&["a", "b", "c", "d"]), &relevant, 10);
        assert_eq!(s.mrr, 0.5);
        assert_eq!(s.hit_at_1, 0.0);
        assert_eq!(s.recall, 1.0);
        // (1/log2 3 + 1/log2 5) / (1 + 1/log2 3)
        let want = (1.0 / 3f64.log2() + 1.0 / 5f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((s.ndcg - want).abs() < 1e-12, "{} against {want}", s.ndcg);

        let s = score_ranking(&ranking(&["d", "b"]), &relevant, 10);
        assert_eq!((s.mrr, s.hit_at_1, s.recall, s.ndcg), (1.0, 1.0, 1.0, 1.0));

        // The cutoff: the relevant document at rank 3 is not seen at k = 2.
        let s = score_ranking(&ranking(&["a", "c", "b"]), &relevant, 2);
        assert_eq!(s, Scores::default());
        let one: HashSet<&str> = ["b"].into();
        let s = score_ranking(&ranking(&["a", "c", "b"]), &one, 3);
        assert_eq!((s.mrr, s.recall), (1.0 / 3.0, 1.0));
        assert!((s.ndcg - 0.5).abs() < 1e-12);
        assert_eq!(
            score_ranking(&ranking(&["a"]), &HashSet::new(), 10),
            Scores::default()
        );
    }

    #[test]
    fn documents_come_in_the_order_of_their_first_passage() {
        assert_eq!(
            documents_in_order(["x", "y", "x", "z", "y"]),
            ranking(&["x", "y", "z"])
        );
    }
}
