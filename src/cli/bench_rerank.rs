//! `vicinity bench rerank`: pairs per second and request latency of the cross-encoder
//! reranker, through the rerank worker (what the service gets) and the direct synchronous
//! path, on generated English-like queries and passages (or pairs read from a file).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::prelude::*;
use serde::{Deserialize, Serialize};
use vicinity::embed::fetch::{self, FetchOptions};
use vicinity::embed::{CrossEncoder, CrossEncoderOptions, RerankOptions, RerankWorker};

/// What the benchmark sends its requests through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// The rerank worker, as the service uses it: each request (one query, its passages) is
    /// submitted and awaited, the worker tokenizing and batching it.
    Worker,
    /// `CrossEncoder::rerank` on this thread: the model alone, tokenization included, with no
    /// queueing.
    Direct,
}

/// Arguments of `vicinity bench rerank`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Requests (one query and --texts-per-query passages each) run one after another \
                  after one warm-up request, for --rounds passes over the --pairs pairs. \
                  pairs_per_s is pairs over the summed request times; p50_ms and p99_ms are \
                  request latencies. Text is drawn from a fixed English word list by a seeded \
                  generator, so every run measures the same pairs; --print-pairs writes them for \
                  scripts/bench_rerank_pytorch.py, --pairs-file reads them back."
)]
pub(crate) struct Args {
    /// The cross-encoder: a local model directory, or a Hugging Face hub model id (ORG/NAME),
    /// looked up in the model cache and downloaded into it when missing.
    #[arg(long, env = "VICINITY_RERANK_MODEL")]
    model: Option<String>,

    /// vicinity's data directory; downloaded models are cached in DATA_DIR/models/ORG/NAME.
    #[arg(long, env = "VICINITY_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,

    /// Never contact the Hugging Face hub.
    #[arg(
        long,
        env = "HF_HUB_OFFLINE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    offline: bool,

    /// Threads the cross-encoder runs the model on. Default: one per CPU.
    #[arg(long)]
    threads: Option<usize>,

    /// Pairs scored per round, split into requests of --texts-per-query passages.
    #[arg(long, default_value_t = 1000)]
    pairs: usize,

    /// Passages per request (one query each).
    #[arg(long, default_value_t = 100)]
    texts_per_query: usize,

    /// Words per passage (about as many tokens for this vocabulary; the mean token count per
    /// pair is measured and printed).
    #[arg(long, default_value_t = 100)]
    text_words: usize,

    /// Words per query.
    #[arg(long, default_value_t = 8)]
    query_words: usize,

    /// Passes over all the pairs.
    #[arg(long, default_value_t = 1)]
    rounds: usize,

    /// Measure through the rerank worker, the direct path, or both (one after the other).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Via::Worker, Via::Direct])]
    via: Vec<Via>,

    /// Most tokens the worker runs in one batch.
    #[arg(long, default_value_t = RerankOptions::default().max_batch_tokens)]
    max_batch_tokens: usize,

    /// Most pairs the worker runs in one batch.
    #[arg(long, default_value_t = RerankOptions::default().max_batch_size)]
    max_batch_size: usize,

    /// Seed of the text generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Read the requests from this JSONL file (`{"query": …, "texts": […]}` per line) instead
    /// of generating them.
    #[arg(long, value_name = "FILE")]
    pairs_file: Option<PathBuf>,

    /// Load no model: print the requests as JSONL (`{"query": …, "texts": […]}` per line),
    /// for scripts/bench_rerank_pytorch.py to measure on exactly the same pairs.
    #[arg(long)]
    print_pairs: bool,

    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,
}

/// One rerank request: a query and the passages to score against it.
#[derive(Debug, Serialize, Deserialize)]
struct Request {
    query: String,
    texts: Vec<String>,
}

/// One measured mode.
#[derive(Debug, Serialize)]
struct Point {
    via: Via,
    requests: usize,
    pairs: usize,
    /// Mean tokens per pair, special tokens included, after truncation.
    tokens_per_pair: f64,
    pairs_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    threads: usize,
    max_length: usize,
}

/// Runs the benchmark.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.pairs > 0 && args.texts_per_query > 0 && args.rounds > 0,
        "--pairs, --texts-per-query and --rounds must be at least 1"
    );
    let requests = match &args.pairs_file {
        Some(path) => read_requests(path)?,
        None => generate(&args),
    };
    anyhow::ensure!(!requests.is_empty(), "no requests to run");
    if args.print_pairs {
        let mut out = std::io::stdout().lock();
        for request in &requests {
            serde_json::to_writer(&mut out, request)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let spec = args
        .model
        .as_deref()
        .context("name the cross-encoder with --model (or VICINITY_RERANK_MODEL)")?;
    let opts = FetchOptions {
        offline: args.offline,
        ..FetchOptions::new(&args.data_dir)
    };
    let model = fetch::resolve_cross_encoder(spec, &opts)?;
    let load = || {
        CrossEncoder::load(
            &model.dir,
            &CrossEncoderOptions {
                threads: args.threads,
                model_id: Some(model.model_id.clone()),
                ..CrossEncoderOptions::default()
            },
        )
        .with_context(|| format!("cannot load the cross-encoder in {}", model.dir.display()))
    };
    let tokens = {
        let ce = load()?;
        let mut sum = 0usize;
        let mut count = 0usize;
        for request in &requests {
            for text in &request.texts {
                sum += ce.tokenize_pair(&request.query, text)?.len();
                count += 1;
            }
        }
        sum as f64 / count as f64
    };
    if !args.json {
        println!(
            "{:>7} {:>8} {:>7} {:>8} {:>9} {:>9} {:>9} {:>7}",
            "via", "requests", "pairs", "tokens", "pairs/s", "p50 ms", "p99 ms", "threads"
        );
    }
    for &via in &args.via {
        let ce = load()?;
        let (threads, max_length) = (ce.threads(), ce.max_length());
        let mut runner = match via {
            Via::Direct => Runner::Direct(Box::new(ce)),
            Via::Worker => {
                let options = RerankOptions {
                    max_batch_tokens: args.max_batch_tokens,
                    max_batch_size: args.max_batch_size,
                    ..RerankOptions::default()
                };
                let worker =
                    RerankWorker::new(ce, options).context("cannot start the rerank worker")?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .context("cannot start the async runtime")?;
                Runner::Worker(Box::new(worker), runtime)
            }
        };
        runner.request(&requests[0])?;
        let mut latencies = Vec::new();
        let mut total = Duration::ZERO;
        let mut pairs = 0;
        for _ in 0..args.rounds {
            for request in &requests {
                let elapsed = runner.request(request)?;
                total += elapsed;
                pairs += request.texts.len();
                latencies.push(elapsed);
            }
        }
        latencies.sort();
        let point = Point {
            via,
            requests: latencies.len(),
            pairs,
            tokens_per_pair: tokens,
            pairs_per_s: pairs as f64 / total.as_secs_f64(),
            p50_ms: percentile(&latencies, 0.50),
            p99_ms: percentile(&latencies, 0.99),
            threads,
            max_length,
        };
        print_point(&point, args.json)?;
    }
    Ok(())
}

enum Runner {
    Direct(Box<CrossEncoder>),
    Worker(Box<RerankWorker>, tokio::runtime::Runtime),
}

impl Runner {
    /// Scores one request and returns how long it took.
    fn request(&mut self, request: &Request) -> anyhow::Result<Duration> {
        let n = request.texts.len();
        let started = Instant::now();
        let scores = match self {
            Runner::Direct(ce) => {
                let texts: Vec<&str> = request.texts.iter().map(String::as_str).collect();
                ce.rerank(&request.query, &texts)?
            }
            Runner::Worker(worker, runtime) => {
                let pending = worker.submit(request.query.clone(), request.texts.clone())?;
                runtime.block_on(pending)?
            }
        };
        let elapsed = started.elapsed();
        anyhow::ensure!(scores.len() == n, "{} scores for {n} texts", scores.len());
        Ok(elapsed)
    }
}

fn read_requests(path: &PathBuf) -> anyhow::Result<Vec<Request>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut requests = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Request = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a request", path.display(), i + 1))?;
        requests.push(request);
    }
    Ok(requests)
}

/// The generated requests: `pairs` pairs in requests of `texts_per_query` passages.
fn generate(args: &Args) -> Vec<Request> {
    let mut generator = TextGenerator::new(args.seed);
    let mut requests = Vec::new();
    let mut left = args.pairs;
    while left > 0 {
        let n = left.min(args.texts_per_query);
        let query = generator.text(args.query_words);
        let texts = (0..n).map(|_| generator.text(args.text_words)).collect();
        requests.push(Request { query, texts });
        left -= n;
    }
    requests
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn print_point(point: &Point, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer(&mut out, point)?;
        writeln!(out)?;
    } else {
        let via = match point.via {
            Via::Worker => "worker",
            Via::Direct => "direct",
        };
        writeln!(
            out,
            "{via:>7} {:>8} {:>7} {:>8.1} {:>9.1} {:>9.2} {:>9.2} {:>7}",
            point.requests,
            point.pairs,
            point.tokens_per_pair,
            point.pairs_per_s,
            point.p50_ms,
            point.p99_ms,
            point.threads
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Common English words, most frequent first, drawn with Zipf weights: text whose word-piece
/// statistics resemble prose (mostly one token per word, some longer words split).
#[rustfmt::skip]
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by",
    "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an",
    "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there", "been",
    "if", "more", "when", "will", "would", "who", "so", "no", "she", "other", "its", "may", "these",
    "what", "them", "than", "some", "him", "time", "into", "only", "do", "could", "new", "about",
    "two", "then", "first", "also", "any", "like", "our", "over", "such", "people", "years", "way",
    "most", "where", "after", "made", "many", "well", "must", "before", "through", "back", "much",
    "good", "world", "should", "because", "each", "those", "between", "work", "life", "state",
    "while", "system", "government", "information", "school", "number", "during", "without",
    "water", "development", "important", "public", "however", "example", "against", "business",
    "family", "several", "program", "problem", "research", "service", "community", "question",
    "national", "history", "experience", "different", "company", "following", "economic",
    "political", "available", "particular", "interest", "university", "knowledge", "environment",
    "technology", "relationship", "management", "understanding", "performance", "international",
    "river", "mountain", "village", "garden", "kitchen", "window", "doctor", "teacher", "student",
    "engineer", "computer", "software", "network", "database", "search", "vector", "document",
    "passage", "quality", "answer", "retrieval", "embedding", "similarity", "neighbour", "quickly",
    "photosynthesis", "electromagnetic", "unprecedented", "cryptographic", "Amsterdam", "Tokyo",
    "Shakespeare", "Einstein", "2024", "3.5", "well-known",
];

/// Deterministic English-like text: words drawn with Zipf weights from [`WORDS`], with a full
/// stop every 8 to 20 words.
struct TextGenerator {
    rng: SmallRng,
    cumulative: Vec<f64>,
}

impl TextGenerator {
    fn new(seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..WORDS.len())
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        TextGenerator {
            rng: SmallRng::seed_from_u64(seed),
            cumulative,
        }
    }

    /// A text of exactly `words` words.
    fn text(&mut self, words: usize) -> String {
        let total = *self.cumulative.last().expect("WORDS is not empty");
        let mut text = String::new();
        let mut until_stop = self.rng.random_range(8..=20);
        for i in 0..words {
            let x = self.rng.random::<f64>() * total;
            let word = WORDS[self
                .cumulative
                .partition_point(|&c| c < x)
                .min(WORDS.len() - 1)];
            if i > 0 {
                text.push(' ');
            }
            text.push_str(word);
            until_stop -= 1;
            if until_stop == 0 || i + 1 == words {
                text.push('.');
                until_stop = self.rng.random_range(8..=20);
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_requests_are_deterministic_and_cover_the_pairs() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let args = Cli::parse_from(["x", "--pairs", "250", "--texts-per-query", "100"]).args;
        let a = generate(&args);
        let b = generate(&args);
        let sizes: Vec<usize> = a.iter().map(|r| r.texts.len()).collect();
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(a[0].query, b[0].query);
        assert_eq!(a[2].texts, b[2].texts);
        assert_eq!(a[0].query.split_whitespace().count(), 8);
        assert_eq!(a[0].texts[0].split_whitespace().count(), 100);
        assert_ne!(a[0].texts[0], a[0].texts[1]);
    }
}
