//! `vicinity bench embed`: sentences per second and batch latency of the sentence encoder, over
//! a grid of batch sizes and sentence lengths, on generated English-like text.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::prelude::*;
use serde::Serialize;
use vicinity::embed::{EmbeddingWorker, SentenceEncoder};

use super::model::{ModelArgs, WorkerArgs};

/// What the benchmark sends its batches through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Via {
    /// The embedding worker, as the service uses it: each batch of N is sent as N concurrent
    /// one-text requests, which the worker tokenizes on its tokenizer thread and batches
    /// itself (the first request may start alone while the others queue).
    Worker,
    /// `SentenceEncoder::embed` called on the whole batch on this thread: the model alone,
    /// tokenization included, with no queueing.
    Encoder,
}

/// Arguments of `vicinity bench embed`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Each point runs one warm-up batch, then batches one after another until both \
                  --runs and --duration are reached. sentences_per_s is sentences over the summed \
                  batch times; p50_ms and p99_ms are batch latencies. Sentences are drawn from a \
                  fixed English word list by a seeded generator, so every run measures the same \
                  text."
)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Threads the encoder runs the model on. Default: one per CPU.
    #[arg(long, env = "VICINITY_EMBED_THREADS")]
    threads: Option<usize>,

    /// Batch sizes (sentences per batch), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
    batch: Vec<usize>,

    /// Words per sentence, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "12,120")]
    words: Vec<usize>,

    /// Least number of timed batches per point.
    #[arg(long, default_value_t = 5)]
    runs: usize,

    /// Least number of seconds of timed batches per point.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,

    /// Measure through the embedding worker (what the service gets) or the encoder directly
    /// (the model alone).
    #[arg(long, value_enum, default_value_t = Via::Worker)]
    via: Via,

    /// Seed of the sentence generator.
    #[arg(long, default_value_t = 42)]
    seed: u64,

    /// Print one JSON object per line instead of a table.
    #[arg(long)]
    json: bool,

    /// Load no model: print each point's sentence pool as one JSON object per line
    /// (`{"words","batch","texts"}`), so that another implementation can be measured on exactly
    /// the same text (`scripts/bench_embed_pytorch.py` reads it).
    #[arg(long)]
    print_texts: bool,
}

/// One measured point.
#[derive(Debug, Serialize)]
struct Point {
    batch: usize,
    words: usize,
    sentences_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    threads: usize,
    via: Via,
    /// The number format the dense layers ran in, and their kernel.
    precision: &'static str,
    kernel: &'static str,
    /// Mean tokens per sentence, special tokens included, after truncation.
    tokens_per_sentence: f64,
    runs: usize,
}

/// Runs the benchmark grid.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.batch.iter().chain(&args.words).all(|&n| n > 0),
        "batch sizes and word counts must be at least 1"
    );
    anyhow::ensure!(
        args.duration.is_finite() && args.duration >= 0.0,
        "--duration must be a number of seconds"
    );
    if args.print_texts {
        return print_texts(&args);
    }
    let encoder = args.model.load(args.threads)?;
    let threads = encoder.threads();
    let kernel = encoder.kernel();
    let max_seq = encoder.max_seq_length();
    let mut runner = match args.via {
        Via::Encoder => Runner::Encoder(Arc::new(encoder)),
        Via::Worker => {
            anyhow::ensure!(
                args.batch.iter().all(|&b| b <= args.worker.queue_capacity),
                "a batch larger than --queue-capacity would be refused"
            );
            let worker = args.worker.start(encoder)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .context("cannot start the async runtime")?;
            Runner::Worker(Box::new(worker), runtime)
        }
    };
    if !args.json {
        println!(
            "{:>8} {:>6} {:>6} {:>8} {:>12} {:>9} {:>9} {:>7} {:>9} {:>12}",
            "via",
            "batch",
            "words",
            "tokens",
            "sentences/s",
            "p50 ms",
            "p99 ms",
            "threads",
            "precision",
            "kernel"
        );
    }
    let min_time = Duration::from_secs_f64(args.duration);
    for &words in &args.words {
        let mut generator = SentenceGenerator::new(args.seed ^ words as u64);
        for &batch in &args.batch {
            let pool = generator.pool(words, batch);
            let tokens = runner.mean_tokens(&pool[..batch.min(pool.len())], max_seq)?;
            let mut next = 0;
            let mut take = || {
                let texts: Vec<String> = (0..batch)
                    .map(|i| pool[(next + i) % pool.len()].clone())
                    .collect();
                next = (next + batch) % pool.len();
                texts
            };
            runner.batch(take())?;
            let mut latencies = Vec::new();
            let mut total = Duration::ZERO;
            while latencies.len() < args.runs || total < min_time {
                let elapsed = runner.batch(take())?;
                total += elapsed;
                latencies.push(elapsed);
            }
            latencies.sort();
            let point = Point {
                batch,
                words,
                sentences_per_s: (batch * latencies.len()) as f64 / total.as_secs_f64(),
                p50_ms: percentile(&latencies, 0.50),
                p99_ms: percentile(&latencies, 0.99),
                threads,
                via: args.via,
                precision: kernel.precision().as_str(),
                kernel: kernel.as_str(),
                tokens_per_sentence: tokens,
                runs: latencies.len(),
            };
            print_point(&point, args.json)?;
        }
    }
    Ok(())
}

/// The `--print-texts` mode: the same pools, in the same order, as the measurement uses.
fn print_texts(args: &Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for &words in &args.words {
        let mut generator = SentenceGenerator::new(args.seed ^ words as u64);
        for &batch in &args.batch {
            let texts = generator.pool(words, batch);
            let line = serde_json::json!({ "words": words, "batch": batch, "texts": texts });
            writeln!(out, "{line}")?;
        }
    }
    Ok(())
}

enum Runner {
    Encoder(Arc<SentenceEncoder>),
    Worker(Box<EmbeddingWorker>, tokio::runtime::Runtime),
}

impl Runner {
    fn encoder(&self) -> &SentenceEncoder {
        match self {
            Runner::Encoder(encoder) => encoder,
            Runner::Worker(worker, _) => worker.encoder(),
        }
    }

    fn mean_tokens(&self, texts: &[String], max_seq: usize) -> anyhow::Result<f64> {
        let mut sum = 0;
        for text in texts {
            sum += self.encoder().count_tokens(text)?.min(max_seq);
        }
        Ok(sum as f64 / texts.len() as f64)
    }

    /// Embeds one batch and returns how long it took.
    fn batch(&mut self, texts: Vec<String>) -> anyhow::Result<Duration> {
        let n = texts.len();
        let started = Instant::now();
        let vectors = match self {
            Runner::Encoder(encoder) => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                encoder.embed(&refs)?
            }
            Runner::Worker(worker, runtime) => {
                let pending = texts
                    .into_iter()
                    .map(|text| worker.submit(vec![text]))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut vectors = Vec::with_capacity(n);
                for p in pending {
                    vectors.extend(runtime.block_on(p)?);
                }
                vectors
            }
        };
        let elapsed = started.elapsed();
        anyhow::ensure!(
            vectors.len() == n,
            "{} vectors for {n} texts",
            vectors.len()
        );
        Ok(elapsed)
    }
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
            Via::Encoder => "encoder",
        };
        writeln!(
            out,
            "{via:>8} {:>6} {:>6} {:>8.1} {:>12.1} {:>9.2} {:>9.2} {:>7} {:>9} {:>12}",
            point.batch,
            point.words,
            point.tokens_per_sentence,
            point.sentences_per_s,
            point.p50_ms,
            point.p99_ms,
            point.threads,
            point.precision,
            point.kernel
        )?;
    }
    out.flush()?;
    Ok(())
}

/// Common English words, most frequent first; drawn with Zipf weights they give text whose
/// word-piece statistics resemble prose (mostly whole-word tokens, some longer words split).
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
    "significant", "material", "language", "education", "production", "individual", "structure",
    "analysis", "population", "character", "treatment", "evidence", "president", "committee",
    "practice", "security", "financial", "military", "industry", "department", "building",
    "children", "country", "position", "together", "already", "morning", "evening", "river",
    "mountain", "village", "garden", "kitchen", "window", "doctor", "teacher", "student",
    "engineer", "computer", "software", "network", "database", "search", "vector", "document",
    "passage", "quality", "answer", "retrieval", "embedding", "similarity", "neighbour", "quickly",
    "carefully", "recently", "probably", "certainly", "beautiful", "difficult", "possible",
    "necessary", "traditional", "approximately", "nevertheless", "straightforward",
    "photosynthesis", "electromagnetic", "unprecedented", "microorganisms", "cryptographic",
    "thermodynamics", "infrastructure", "misunderstanding", "Amsterdam", "Tokyo", "Nairobi",
    "Shakespeare", "Einstein", "COVID-19", "2024", "3.5", "e-mail", "well-known",
];

/// Deterministic English-like sentences: words drawn with Zipf weights from [`WORDS`],
/// capitalised, with an occasional comma and a full stop every 8 to 20 words.
struct SentenceGenerator {
    rng: SmallRng,
    cumulative: Vec<f64>,
}

impl SentenceGenerator {
    fn new(seed: u64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..WORDS.len())
            .map(|rank| {
                total += 1.0 / (rank as f64 + 1.0);
                total
            })
            .collect();
        SentenceGenerator {
            rng: SmallRng::seed_from_u64(seed),
            cumulative,
        }
    }

    fn word(&mut self) -> &'static str {
        let total = *self.cumulative.last().expect("WORDS is not empty");
        let x = self.rng.random::<f64>() * total;
        let i = self.cumulative.partition_point(|&c| c < x);
        WORDS[i.min(WORDS.len() - 1)]
    }

    /// A text of exactly `words` words.
    /// The sentences one point cycles through: different sentences for each batch, at least
    /// 256 of them.
    fn pool(&mut self, words: usize, batch: usize) -> Vec<String> {
        (0..batch.max(256)).map(|_| self.sentence(words)).collect()
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut text = String::new();
        let mut until_stop = self.rng.random_range(8..=20);
        let mut capitalise = true;
        for i in 0..words {
            let word = self.word();
            if i > 0 {
                text.push(' ');
            }
            if capitalise {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
                capitalise = false;
            } else {
                text.push_str(word);
            }
            until_stop -= 1;
            if i + 1 == words || until_stop == 0 {
                text.push('.');
                capitalise = true;
                until_stop = self.rng.random_range(8..=20);
            } else if self.rng.random_bool(0.06) {
                text.push(',');
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_deterministic_and_have_the_asked_length() {
        let a: Vec<String> = {
            let mut g = SentenceGenerator::new(7);
            (0..5).map(|_| g.sentence(12)).collect()
        };
        let mut g = SentenceGenerator::new(7);
        let b: Vec<String> = (0..5).map(|_| g.sentence(12)).collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        for s in &a {
            assert_eq!(s.split_whitespace().count(), 12, "{s}");
            assert!(s.ends_with('.'), "{s}");
            assert!(s.chars().next().unwrap().is_uppercase(), "{s}");
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&d, 0.5), 50.0);
        assert_eq!(percentile(&d, 0.99), 99.0);
        assert_eq!(percentile(&d[..1], 0.99), 1.0);
    }
}
