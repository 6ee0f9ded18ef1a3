//! `vicinity bench retrieval`: loads a corpus into a fresh collection of an in-process
//! service, runs queries whose relevant documents are known in each retrieval mode, and prints
//! MRR@k, nDCG@k, hit@1, recall@k and the query latency per mode (see [`vicinity::eval`]).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use vicinity::embed::Embedder;
use vicinity::eval::{self, EvalQuery, Mode, ModeReport};
use vicinity::service::{
    Chunking, CollectionSpec, DocumentInput, Fusion, Hybrid, IndexConfig, Metric, Mmr, Service,
    ServiceSettings,
};
use vicinity::store::{Store, StoreOptions};

use super::model::{ModelArgs, WorkerArgs};

/// The collection the corpus is loaded into.
const COLLECTION: &str = "eval";

/// Documents per upsert while loading.
const LOAD_BATCH: usize = 64;

/// Arguments of `vicinity bench retrieval`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Threads the encoder runs the model on. Default: one per CPU.
    #[arg(long, env = "VICINITY_EMBED_THREADS")]
    threads: Option<usize>,

    /// The corpus: JSONL, one {"id", "text", "metadata"?} document per line.
    #[arg(long)]
    corpus: PathBuf,

    /// The queries: JSONL, one {"query", "relevant": [document ids], "kind"?} per line.
    #[arg(long)]
    queries: PathBuf,

    /// The cutoff, in documents, of every score (and the query's k).
    #[arg(long, default_value_t = 10)]
    k: usize,

    /// Modes to evaluate, comma-separated: dense, lexical, hybrid-rrf (reciprocal rank
    /// fusion), hybrid-dbsf (distribution-based score fusion, the server's default),
    /// hybrid-rerank (hybrid-dbsf, then the first --top-n reranked by --reranker), mmr,
    /// grouped.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense,lexical,hybrid-rrf,hybrid-dbsf,mmr,grouped"
    )]
    modes: Vec<String>,

    /// Hybrid: the weight of the dense leg.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,

    /// Hybrid: the rank constant of reciprocal rank fusion.
    #[arg(long, default_value_t = 60.0)]
    rrf_k: f32,

    /// hybrid-rerank: the hits the cross-encoder (--reranker) scores.
    #[arg(long, default_value_t = 50)]
    top_n: usize,

    /// Hybrid: candidates per leg (default: the server's).
    #[arg(long)]
    candidates: Option<usize>,

    /// MMR's weight of relevance against diversity.
    #[arg(long, default_value_t = 0.5)]
    mmr_lambda: f32,

    /// MMR's candidates.
    #[arg(long, default_value_t = 20)]
    fetch_k: usize,

    /// Largest passage, in tokens (default: the server's).
    #[arg(long)]
    chunk_tokens: Option<usize>,

    /// Print one JSON object per report instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `vicinity bench retrieval`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let modes = args
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "dense" => Ok(Mode::Dense),
            "lexical" => Ok(Mode::Lexical),
            "hybrid-rrf" | "hybrid-dbsf" => Ok(Mode::Hybrid(Hybrid {
                fusion: if m == "hybrid-rrf" {
                    Fusion::Rrf { k: args.rrf_k }
                } else {
                    Fusion::Dbsf
                },
                alpha: args.alpha,
                candidates: args.candidates,
            })),
            "hybrid-rerank" => Ok(Mode::Reranked(
                Hybrid {
                    alpha: args.alpha,
                    ..Hybrid::default()
                },
                args.top_n,
            )),
            "mmr" => Ok(Mode::Mmr(Mmr {
                lambda: args.mmr_lambda,
                fetch_k: args.fetch_k,
            })),
            "grouped" => Ok(Mode::Grouped),
            other => anyhow::bail!(
                "unknown mode {other:?}: dense, lexical, hybrid-rrf, hybrid-dbsf, hybrid-rerank, \
                 mmr or grouped"
            ),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let corpus = read_corpus(&args.corpus)?;
    let queries = read_jsonl::<EvalQuery>(&args.queries)?;
    anyhow::ensure!(
        !corpus.is_empty(),
        "{} holds no document",
        args.corpus.display()
    );
    anyhow::ensure!(
        !queries.is_empty(),
        "{} holds no query",
        args.queries.display()
    );
    let encoder = args.model.load(args.threads)?;
    let worker = Arc::new(args.worker.start(encoder)?);
    let reranker = args
        .model
        .load_reranker(args.threads)?
        .map(|r| Arc::new(r) as Arc<dyn vicinity::embed::Reranker>);
    anyhow::ensure!(
        reranker.is_some() || !modes.iter().any(|m| matches!(m, Mode::Reranked(..))),
        "the hybrid-rerank mode needs a cross-encoder: name one with --reranker"
    );
    let dir = tempfile::tempdir().context("cannot create a temporary data directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reports = runtime.block_on(async {
        let store = Store::open(
            dir.path()
                .join("vicinity.db")
                .to_str()
                .expect("a UTF-8 path"),
            &StoreOptions::default(),
        )
        .await?;
        let embedder: Arc<dyn Embedder> = worker.clone();
        let service = Service::open_with_reranker(
            ServiceSettings::new(dir.path()),
            store.clone(),
            embedder,
            reranker,
        )
        .await?;
        let result = load_and_evaluate(&service, corpus, &queries, &modes, &args).await;
        service.shutdown().await;
        store.close().await;
        result
    });
    drop(runtime);
    let reports = reports?;
    if args.json {
        for r in &reports {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&reports);
    }
    Ok(())
}

async fn load_and_evaluate(
    service: &Arc<Service>,
    corpus: Vec<DocumentInput>,
    queries: &[EvalQuery],
    modes: &[Mode],
    args: &Args,
) -> anyhow::Result<Vec<ModeReport>> {
    let spec = CollectionSpec {
        distance: Metric::Cosine,
        index: IndexConfig::default(),
        dimension: None,
        chunking: args.chunk_tokens.map(|max_tokens| Chunking {
            max_tokens,
            overlap: (max_tokens / 8).min(32),
        }),
        lexical: None,
    };
    service.create_collection(COLLECTION, spec).await?;
    let started = Instant::now();
    let total = corpus.len();
    let mut loaded = 0;
    let mut docs = corpus.into_iter();
    loop {
        let batch: Vec<DocumentInput> = docs.by_ref().take(LOAD_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        loaded += batch.len();
        service
            .upsert_documents(COLLECTION, batch)
            .await
            .with_context(|| format!("loading the corpus, near document {loaded}"))?;
        if loaded % (LOAD_BATCH * 32) == 0 || loaded == total {
            eprintln!("  loaded {loaded}/{total} documents");
        }
    }
    let info = loop {
        let info = service.get_collection(COLLECTION).await?;
        let state = &info.index_state;
        if matches!(state.status, "ready" | "none") && state.pending == 0 {
            break info;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "  {} documents, {} passages, index {:?} ready in {:.1} s; {} queries",
        info.documents,
        info.passages,
        info.index_state.ann,
        started.elapsed().as_secs_f64(),
        queries.len()
    );
    let mut reports = Vec::new();
    for &mode in modes {
        reports.extend(eval::evaluate(service, COLLECTION, queries, mode, args.k).await?);
    }
    Ok(reports)
}

/// Reads corpus lines: an `id` and a `text` each, `metadata` optional.
fn read_corpus(path: &Path) -> anyhow::Result<Vec<DocumentInput>> {
    read_jsonl::<Value>(path)?
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let field = |name: &str| {
                v.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .with_context(|| format!("{}: line {} has no {name}", path.display(), i + 1))
            };
            Ok(DocumentInput {
                id: Some(field("id")?),
                text: Some(field("text")?),
                vector: None,
                metadata: v.get("metadata").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}: line {}", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

fn print_table(reports: &[ModeReport]) {
    let k = reports.first().map_or(10, |r| r.k);
    println!(
        "| mode | queries | MRR@{k} | nDCG@{k} | hit@1 | recall@{k} | p50 ms | p99 ms |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in reports {
        let name = match &r.kind {
            Some(kind) => format!("{} ({kind})", r.mode),
            None => r.mode.to_owned(),
        };
        let s = &r.scores;
        println!(
            "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.2} | {:.2} |",
            r.queries, s.mrr, s.ndcg, s.hit_at_1, s.recall, r.p50_ms, r.p99_ms
        );
    }
}
