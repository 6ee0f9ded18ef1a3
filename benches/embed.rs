//! Sentence encoder throughput: batches of ~12-word and ~120-word sentences.
//!
//! Runs on all-MiniLM-L6-v2 when it is present (`VICINITY_MODEL`, else
//! `models/all-MiniLM-L6-v2`), on the tiny fixture model otherwise. Criterion reports the time
//! per batch and, through its throughput setting, sentences per second.
//!
//! `VICINITY_BENCH_BATCHES` (e.g. `1,32`) and `VICINITY_BENCH_WORDS` (e.g. `12`) narrow the grid.

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vicinity::embed::{EncoderOptions, SentenceEncoder};

// The binary runs the encoder under mimalloc; so does the benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WORDS: &[&str] = &[
    "the",
    "search",
    "engine",
    "returns",
    "nearest",
    "passages",
    "for",
    "every",
    "question",
    "that",
    "users",
    "ask",
    "about",
    "their",
    "documents",
    "while",
    "a",
    "language",
    "model",
    "writes",
    "answers",
    "from",
    "retrieved",
    "context",
    "vector",
    "index",
    "stores",
    "embeddings",
    "of",
    "short",
    "texts",
    "and",
    "long",
    "reports",
    "quickly",
    "with",
    "high",
    "recall",
    "in",
    "production",
    "systems",
    "running",
    "on",
    "small",
    "machines",
    "today",
];

/// `count` sentences of `words` words each, from a fixed linear congruential sequence (the
/// PyTorch comparison script draws the very same sentences).
fn sentences(count: usize, words: usize) -> Vec<String> {
    let mut state: u64 = 12345;
    (0..count)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    WORDS[((state >> 33) % WORDS.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
                + "."
        })
        .collect()
}

fn model_dir() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let real = std::env::var_os("VICINITY_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/all-MiniLM-L6-v2"));
    if real.join("model.safetensors").exists() {
        real
    } else {
        eprintln!(
            "all-MiniLM-L6-v2 not found at {}; benchmarking the tiny fixture model",
            real.display()
        );
        root.join("tests/fixtures/tiny-bert")
    }
}

fn grid(var: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(var)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn bench_embed(c: &mut Criterion) {
    let dir = model_dir();
    let encoder = SentenceEncoder::load(&dir, &EncoderOptions::default()).expect("model loads");
    let mut group = c.benchmark_group(format!("embed/{}", encoder.model_id()));
    group.sample_size(10);
    for words in grid("VICINITY_BENCH_WORDS", &[12, 120]) {
        for batch in grid("VICINITY_BENCH_BATCHES", &[1, 8, 32, 128]) {
            let texts = sentences(batch, words);
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(
                BenchmarkId::new(format!("words={words}"), format!("batch={batch}")),
                &texts,
                |b, texts| b.iter(|| encoder.embed(texts).expect("embedding succeeds")),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_embed);
criterion_main!(benches);
