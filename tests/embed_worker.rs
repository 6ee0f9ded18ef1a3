//! Embedding worker tests on the tiny fixture model: results equal the encoder's, order is
//! kept under many concurrent callers, token budgets split work without refusing or
//! truncating it, a full queue refuses at once, withdrawn requests are skipped, shutdown
//! finishes what was admitted, and queries go before bulk ingest: a query never waits for a
//! running bulk batch nor for the ingest backlog, bulk work runs on threads of lowered
//! priority, bulk work larger than the queue is admitted in chunks without taking the queue
//! from queries, and the ingest backlog is bounded.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::prelude::*;
use vicinity::embed::{
    EmbedError, Embedder, EmbeddingWorker, EncoderOptions, SentenceEncoder, WorkerOptions,
    WorkerStats,
};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn encoder() -> SentenceEncoder {
    SentenceEncoder::load(&tiny_dir(), &EncoderOptions::default()).expect("fixture model loads")
}

fn worker(options: WorkerOptions) -> EmbeddingWorker {
    EmbeddingWorker::new(encoder(), options).expect("worker starts")
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Same embedding up to float rounding (batch composition changes the summation order).
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: dimension");
    let cos = cosine(got, want);
    let diff = got
        .iter()
        .zip(want)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(
        cos >= 0.99999 && diff < 1e-5,
        "{what}: cosine {cos}, max difference {diff}"
    );
}

const WORDS: &[&str] = &[
    "the", "search", "vector", "index", "query", "text", "document", "passage", "model", "cat",
    "dog", "house", "tree", "river", "mountain", "city", "music", "book", "water", "fire", "light",
    "night", "day", "time", "people", "world", "small", "large", "fast", "slow", "quick", "brown",
    "fox", "zebra", "café", "🔥", "東京", "42", "fn()", "!",
];

fn random_text(rng: &mut SmallRng) -> String {
    let n = rng.random_range(0..40);
    (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_results_equal_the_encoders() {
    let texts = [
        "the quick brown fox jumps over the lazy dog",
        "",
        "   ",
        "search",
        "café naïve résumé 東京 🔥",
        "fn main() { println!(\"hi\"); }",
        &"the long document about search and the index of every word ".repeat(6),
    ];
    let direct = encoder().embed(&texts).unwrap();
    let worker = worker(WorkerOptions::default());
    let got = worker.embed(strings(&texts)).await.unwrap();
    assert_eq!(got.len(), texts.len());
    for ((g, w), t) in got.iter().zip(&direct).zip(texts) {
        assert_same(g, w, t);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_is_preserved_under_many_concurrent_callers() {
    let seed = 0x5eed_u64;
    println!("seed {seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let requests: Vec<Vec<String>> = (0..64)
        .map(|_| {
            let n = rng.random_range(1..9);
            (0..n).map(|_| random_text(&mut rng)).collect()
        })
        .collect();
    let enc = encoder();
    let expected: Vec<Vec<Vec<f32>>> = requests
        .iter()
        .map(|texts| {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            enc.embed(&refs).unwrap()
        })
        .collect();

    // Small budgets, so that requests are mixed into shared batches and split across them.
    let worker: Arc<dyn Embedder> = Arc::new(worker(WorkerOptions {
        max_batch_size: 8,
        max_batch_tokens: 96,
        queue_capacity: 1024,
        tokenizer_threads: 2,
        ..WorkerOptions::default()
    }));
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|texts| {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move { worker.embed(texts).await })
        })
        .collect();
    for (i, (task, want)) in tasks.into_iter().zip(&expected).enumerate() {
        let got = task.await.unwrap().unwrap();
        assert_eq!(got.len(), want.len(), "request {i}");
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            assert_same(g, w, &format!("request {i} text {j}: {:?}", requests[i][j]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_beyond_the_budgets_is_split_not_refused_or_truncated() {
    let enc = encoder();
    let long = "the long document about search and the index of every word ".repeat(5);
    assert!(enc.count_tokens(&long).unwrap() > 32);
    let worker = worker(WorkerOptions {
        max_batch_size: 3,
        max_batch_tokens: 20,
        ..WorkerOptions::default()
    });
    // One text longer than the token budget runs alone, truncated only to max_seq_length.
    let got = worker.embed(vec![long.clone()]).await.unwrap();
    assert_same(&got[0], &enc.embed(&[&long]).unwrap()[0], "long text");
    let stats = worker.stats();
    assert_eq!(stats.batches, 1);
    assert_eq!(stats.tokens, 32, "truncated to max_seq_length, no further");

    // A request with more texts than a batch holds is spread over several batches: ten texts
    // of 4 tokens ([CLS] fire N [SEP]) make batches of 3, 3, 3 and 1.
    let texts: Vec<String> = (0..10).map(|i| format!("fire {i}")).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert!(enc.tokenize(&refs).unwrap().iter().all(|e| e.len() == 4));
    let want = enc.embed(&refs).unwrap();
    let got = worker.embed(texts.clone()).await.unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_same(g, w, &texts[i]);
    }
    let stats = worker.stats();
    assert_eq!((stats.batches, stats.texts, stats.tokens), (5, 11, 72));
    let by_size: Vec<(u64, u64)> = stats.batch_texts.buckets().collect();
    assert_eq!(by_size, vec![(1, 2), (2, 0), (4, 3)], "{stats:?}");
    assert_eq!(stats.batch_tokens.sum(), stats.tokens);
    assert_eq!((stats.queued_texts, stats.queued_requests), (0, 0));

    // A token budget below the texts' length: every text runs alone.
    let tight = worker_with_budget(5);
    let got = tight.embed(texts.clone()).await.unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_same(g, w, &texts[i]);
    }
    assert_eq!(tight.stats().batches, 10);
}

fn worker_with_budget(max_batch_tokens: usize) -> EmbeddingWorker {
    worker(WorkerOptions {
        max_batch_tokens,
        ..WorkerOptions::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_input_gives_empty_output() {
    let worker = worker(WorkerOptions::default());
    assert!(worker.embed(Vec::new()).await.unwrap().is_empty());
    assert_eq!(worker.stats().batches, 0);
}

/// Texts at the tiny model's max_seq_length, enough to keep the model thread busy for a
/// while in one batch.
fn busy_request(texts: usize) -> Vec<String> {
    let text = "the long document about search and the index of every word ".repeat(4);
    vec![text; texts]
}

/// Waits until the model thread has taken the whole of `texts` texts into one running batch.
fn wait_until_running(worker: &EmbeddingWorker, texts: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = worker.stats();
        if stats.running_texts == texts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the busy batch never started: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The queue refuses a request at once when it would exceed its capacity: the model thread
/// is held busy by one large batch while the queue behind it fills up.
#[test]
fn a_full_queue_refuses_at_once_and_withdrawn_requests_are_skipped() {
    const CAPACITY: usize = 8;
    let busy = 1_000;
    // The model is busy for far longer than the few microseconds this test needs between
    // filling the queue and being refused; should a stalled machine let the busy batch end
    // first, the stats show it and the attempt is repeated with a larger one.
    for attempt in 0..3 {
        let busy = busy << attempt;
        let worker = worker(WorkerOptions {
            max_batch_size: busy,
            max_batch_tokens: usize::MAX,
            queue_capacity: CAPACITY,
            tokenizer_threads: 1,
            ..WorkerOptions::default()
        });
        // Larger than the capacity: admitted because nothing else is waiting.
        let first = worker.submit(busy_request(busy)).unwrap();
        wait_until_running(&worker, busy);

        let filling = worker.submit(strings(&["river"; CAPACITY - 1])).unwrap();
        let withdrawn = worker.submit(strings(&["fire"])).unwrap();
        let refused = worker.submit(strings(&["water"]));
        let stats = worker.stats();
        if stats.batches > 0 {
            eprintln!("attempt {attempt}: the busy batch ended early; retrying");
            continue;
        }
        match refused {
            Err(EmbedError::Overloaded { queued, capacity }) => {
                assert_eq!((queued, capacity), (CAPACITY, CAPACITY));
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(stats.queued_texts, CAPACITY);
        assert_eq!(stats.rejected_requests, 1);

        // Withdraw one request; the others complete, and the withdrawn text never runs.
        drop(withdrawn);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let first = runtime.block_on(first).unwrap();
        assert_eq!(first.len(), busy);
        let filling = runtime.block_on(filling).unwrap();
        assert_eq!(filling.len(), CAPACITY - 1);
        // Room again.
        let again = runtime
            .block_on(worker.submit(strings(&["water"])).unwrap())
            .unwrap();
        assert_eq!(again.len(), 1);
        let stats = worker.stats();
        assert_eq!(stats.cancelled_texts, 1, "{stats:?}");
        assert_eq!(stats.texts, (busy + CAPACITY - 1 + 1) as u64, "{stats:?}");
        assert_eq!((stats.queued_texts, stats.queued_requests), (0, 0));
        return;
    }
    panic!("the model thread never stayed busy long enough to fill the queue");
}

#[test]
fn shutdown_finishes_admitted_requests() {
    let worker = worker(WorkerOptions {
        max_batch_size: 4,
        ..WorkerOptions::default()
    });
    let pending: Vec<_> = (0..20)
        .map(|i| {
            worker
                .submit(vec![format!("house {i} by the river"); 3])
                .unwrap()
        })
        .collect();
    worker.shutdown();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for p in pending {
        let got = runtime.block_on(p).unwrap();
        assert_eq!(got.len(), 3);
    }
}

#[test]
fn the_trait_describes_the_model() {
    let worker: Arc<dyn Embedder> = Arc::new(worker(WorkerOptions::default()));
    assert_eq!(worker.model_id(), "tiny-bert");
    assert_eq!(worker.dim(), 32);
    assert_eq!(worker.max_input_tokens(), 32);
    let text = "the quick brown fox";
    let tokenizer = worker.tokenizer().expect("the worker has a tokenizer");
    let plain = tokenizer.encode(text, true).unwrap().get_ids().len();
    assert_eq!(worker.count_tokens(text).unwrap(), plain);
}

#[test]
fn unusable_options_are_refused() {
    for options in [
        WorkerOptions {
            max_batch_size: 0,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            queue_capacity: 0,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            max_bulk_queue: 0,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            bulk_chunk: 0,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            bulk_min_share: 1.5,
            ..WorkerOptions::default()
        },
        WorkerOptions {
            bulk_min_share: f64::NAN,
            ..WorkerOptions::default()
        },
    ] {
        let err = EmbeddingWorker::new(encoder(), options).unwrap_err();
        assert!(matches!(err, EmbedError::InvalidOptions(_)), "{err}");
    }
}

fn vicinity() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vicinity"));
    command
        .env_remove("VICINITY_MODEL")
        .env("HF_HUB_OFFLINE", "1");
    command
}

fn parse_vectors(stdout: &[u8]) -> Vec<Vec<f32>> {
    std::str::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[test]
fn embed_command_prints_the_workers_vectors_exactly() {
    let texts = ["a small house by the river", "", "fire 🔥 and water"];
    // One encoder thread on both sides, so that the arithmetic is the same to the bit.
    let output = vicinity()
        .args(["embed", "--threads", "1", "--model"])
        .arg(tiny_dir())
        .args(texts)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = parse_vectors(&output.stdout);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let one_thread = EncoderOptions {
        threads: Some(1),
        ..EncoderOptions::default()
    };
    let encoder = SentenceEncoder::load(&tiny_dir(), &one_thread).unwrap();
    let worker = EmbeddingWorker::new(encoder, WorkerOptions::default()).unwrap();
    let want = runtime.block_on(worker.embed(strings(&texts))).unwrap();
    // Bit for bit: every float is printed with enough digits to read back the same f32.
    assert_eq!(printed, want);

    // The same texts from stdin, one per line, with a Windows line ending thrown in.
    let mut child = vicinity()
        .args(["embed", "--stdin", "--model"])
        .arg(tiny_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        write!(stdin, "{}\r\n{}\n{}\n", texts[0], texts[1], texts[2]).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let from_stdin = parse_vectors(&output.stdout);
    assert_eq!(from_stdin.len(), 3);
    for (i, (g, w)) in from_stdin.iter().zip(&want).enumerate() {
        assert_same(g, w, texts[i]);
    }
}

#[test]
fn bench_embed_prints_one_json_object_per_point() {
    for via in ["worker", "encoder"] {
        let output = vicinity()
            .args(["bench", "embed", "--model"])
            .arg(tiny_dir())
            .args(["--batch", "1,4", "--words", "3,20", "--runs", "2"])
            .args(["--duration", "0", "--threads", "1", "--json", "--via", via])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let points: Vec<serde_json::Value> = std::str::from_utf8(&output.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let grid: Vec<(u64, u64)> = points
            .iter()
            .map(|p| (p["words"].as_u64().unwrap(), p["batch"].as_u64().unwrap()))
            .collect();
        assert_eq!(grid, [(3, 1), (3, 4), (20, 1), (20, 4)]);
        for p in &points {
            assert!(p["sentences_per_s"].as_f64().unwrap() > 0.0, "{p}");
            assert!(p["p50_ms"].as_f64().unwrap() <= p["p99_ms"].as_f64().unwrap());
            assert_eq!(p["threads"], 1);
            assert_eq!(p["via"], via);
            assert!(p["runs"].as_u64().unwrap() >= 2);
        }
        // 20 words exceed the tiny model's 32 tokens: counted after truncation.
        assert_eq!(points[2]["tokens_per_sentence"], 32.0);
    }
}

/// Polls the worker's stats until `ready` holds (the worker's threads run on their own).
fn wait_for(worker: &EmbeddingWorker, what: &str, ready: impl Fn(&WorkerStats) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let stats = worker.stats();
        if ready(&stats) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {stats:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Passages for bulk work, each different, a few tokens long.
fn passages(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("passage {i} about the {}", WORDS[i % WORDS.len()]))
        .collect()
}

/// Checks a few of `got` against the encoder's embeddings of `texts`.
fn assert_some_equal(enc: &SentenceEncoder, texts: &[String], got: &[Vec<f32>]) {
    assert_eq!(got.len(), texts.len());
    for i in [0, texts.len() / 2, texts.len() - 1] {
        let want = enc.embed(&[texts[i].as_str()]).unwrap();
        assert_same(&got[i], &want[0], &texts[i]);
    }
}

/// The queue-jumping guarantee, by batch accounting: with thousands of passages queued in the
/// bulk lane ahead of it, a query goes into the first interactive batch that starts after it
/// was queued; the bulk work queued before it needs thousands of batches more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_waits_for_at_most_the_running_batch_behind_a_long_bulk_backlog() {
    const BULK: usize = 8_000;
    let worker = Arc::new(worker(WorkerOptions {
        max_batch_size: 2,
        // The whole backlog enters the lane at once, ahead of the query.
        bulk_chunk: BULK,
        ..WorkerOptions::default()
    }));
    let texts = passages(BULK);
    let bulk = tokio::spawn({
        let worker = Arc::clone(&worker);
        let texts = texts.clone();
        async move { worker.embed_bulk(texts).await }
    });
    wait_for(&worker, "the bulk backlog queued and running", |s| {
        s.batches > 0 && s.bulk_queued_texts > 0
    });

    let query = "the quick brown fox".to_owned();
    let before = worker.stats();
    let got = worker.embed(vec![query.clone()]).await.unwrap();
    assert_same(&got[0], &encoder().embed(&[&query]).unwrap()[0], &query);
    let after = worker.stats();
    assert!(
        before.bulk_queued_texts > 0,
        "bulk work was queued ahead of the query: {before:?}"
    );
    // One interactive request, which waited for one batch: its own.
    assert_eq!(after.interactive_waits.count(), 1, "{after:?}");
    assert_eq!(after.interactive_waits.sum(), 1, "{after:?}");

    let vectors = bulk.await.unwrap().unwrap();
    assert_some_equal(&encoder(), &texts, &vectors);
    let stats = worker.stats();
    assert_eq!(stats.bulk_texts, BULK as u64);
    assert_eq!(stats.texts, BULK as u64 + 1);
    // Two texts a batch: the bulk work ahead of the query took thousands of batches.
    assert!(stats.batches >= (BULK / 2) as u64, "{stats:?}");
    assert_eq!((stats.bulk_backlog, stats.bulk_queued_texts), (0, 0));
    assert_eq!((stats.queued_texts, stats.queued_requests), (0, 0));
}

/// Bulk work larger than the queue and than the backlog limit is admitted (alone), enters the
/// bulk lane a chunk at a time, and leaves the whole interactive queue to queries: full-size
/// query requests during it are all admitted. Other bulk work meanwhile is refused with an
/// error that names the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_work_larger_than_the_queue_enters_in_chunks_and_leaves_the_queue_to_queries() {
    const CAPACITY: usize = 8;
    const CHUNK: usize = 32;
    const BACKLOG: usize = 1_000;
    const BULK: usize = 6_000;
    let worker = Arc::new(worker(WorkerOptions {
        max_batch_size: 4,
        queue_capacity: CAPACITY,
        bulk_chunk: CHUNK,
        max_bulk_queue: BACKLOG,
        ..WorkerOptions::default()
    }));
    let texts = passages(BULK);
    let bulk = tokio::spawn({
        let worker = Arc::clone(&worker);
        let texts = texts.clone();
        async move { worker.embed_bulk(texts).await }
    });
    wait_for(&worker, "the bulk work running", |s| {
        s.bulk_backlog > 0 && s.batches > 0
    });

    match worker.embed_bulk(strings(&["one more passage"])).await {
        Err(e @ EmbedError::BulkOverloaded { backlog, limit }) => {
            assert!(backlog > 0 && backlog <= BULK, "{e}");
            assert_eq!(limit, BACKLOG);
            assert!(e.to_string().contains("max_bulk_queue"), "{e}");
        }
        other => panic!("expected BulkOverloaded, got {other:?}"),
    }

    let mut during = 0;
    let mut queries = 0;
    while !bulk.is_finished() && during < 50 {
        let stats = worker.stats();
        assert!(
            stats.bulk_queued_texts <= 2 * CHUNK,
            "more than two chunks of one request in the lane: {stats:?}"
        );
        let got = worker
            .embed(vec![format!("river {queries}"); CAPACITY])
            .await
            .expect("a query is admitted while bulk work is queued");
        assert_eq!(got.len(), CAPACITY);
        queries += 1;
        if stats.bulk_backlog > 0 {
            during += 1;
        }
    }
    assert!(during > 0, "no query ran during the bulk work");

    let vectors = bulk.await.unwrap().unwrap();
    assert_some_equal(&encoder(), &texts, &vectors);
    let stats = worker.stats();
    assert_eq!(stats.rejected_requests, 1, "{stats:?}");
    assert_eq!(stats.bulk_texts, BULK as u64);
    assert_eq!(stats.texts, (BULK + queries * CAPACITY) as u64);
    assert_eq!((stats.bulk_backlog, stats.bulk_queued_texts), (0, 0));
    // Room again for bulk work.
    let again = worker.embed_bulk(strings(&["one more passage"])).await;
    assert_eq!(again.unwrap().len(), 1);
}

/// Bulk work whose caller goes away gives its place in the backlog back, and its queued
/// chunks are skipped.
#[test]
fn dropped_bulk_work_gives_the_backlog_back() {
    const BULK: usize = 5_000;
    let worker = worker(WorkerOptions {
        max_batch_size: 2,
        bulk_chunk: 2_000,
        max_bulk_queue: 100,
        ..WorkerOptions::default()
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let texts = passages(BULK);
    runtime.block_on(async {
        let mut bulk = Box::pin(worker.embed_bulk(texts.clone()));
        // The first poll admits the request and queues its first chunks.
        assert!(futures_util::FutureExt::now_or_never(&mut bulk).is_none());
        assert!(worker.stats().bulk_backlog > 0);
        drop(bulk);
    });
    wait_for(&worker, "the backlog released", |s| {
        s.bulk_backlog == 0 && s.bulk_queued_texts == 0 && s.running_texts == 0
    });
    let stats = worker.stats();
    assert!(stats.cancelled_texts > 0, "{stats:?}");
    assert!(stats.bulk_texts < BULK as u64, "{stats:?}");
    // The limit is free again: other bulk work is admitted.
    let got = runtime.block_on(worker.embed_bulk(texts[..10].to_vec()));
    assert_eq!(got.unwrap().len(), 10);
}

/// A query does not wait for a bulk batch: with one bulk batch of thousands of long texts
/// running, a query is embedded and answered before that batch ends (with one model thread
/// for both lanes, it would wait for the whole batch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_is_answered_while_a_long_bulk_batch_runs() {
    const BULK: usize = 6_000;
    let worker = Arc::new(worker(WorkerOptions {
        max_batch_size: BULK,
        max_batch_tokens: usize::MAX,
        bulk_chunk: BULK,
        ..WorkerOptions::default()
    }));
    let texts = busy_request(BULK);
    let bulk = tokio::spawn({
        let worker = Arc::clone(&worker);
        let texts = texts.clone();
        async move { worker.embed_bulk(texts).await }
    });
    wait_until_running(&worker, BULK);

    let query = "the quick brown fox".to_owned();
    let got = worker.embed(vec![query.clone()]).await.unwrap();
    let after = worker.stats();
    assert_same(&got[0], &encoder().embed(&[&query]).unwrap()[0], &query);
    assert_eq!(
        (after.bulk_texts, after.running_texts),
        (0, BULK),
        "the query waited for the bulk batch: {after:?}"
    );

    let vectors = bulk.await.unwrap().unwrap();
    assert_some_equal(&encoder(), &texts, &vectors);
    let stats = worker.stats();
    assert_eq!(
        (stats.bulk_texts, stats.texts),
        (BULK as u64, BULK as u64 + 1)
    );
}

/// The bulk lane runs on threads whose nice value follows `bulk_min_share`; the interactive
/// lane keeps the process's priority.
#[cfg(target_os = "linux")]
#[test]
fn bulk_threads_run_at_the_priority_of_their_share() {
    let base = vicinity::priority::current_nice().unwrap();
    let worker = worker(WorkerOptions {
        bulk_min_share: 0.0,
        ..WorkerOptions::default()
    });
    // Rayon starts its threads (and runs their start handler) in the background.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bulk = vicinity::testing::thread_nice_values("embed-bulk");
        // The model thread and at least one pool thread, every one lowered (other tests'
        // workers in this process have shares of their own, so only the lowest is checked).
        if bulk.len() >= 2
            && bulk.iter().filter(|&&n| n == 19).count() >= 2
            && bulk.iter().all(|&n| n > base || n == 19)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bulk threads not lowered: {bulk:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let model = vicinity::testing::thread_nice_values("embed-model");
    assert!(
        !model.is_empty() && model.iter().all(|&n| n == base),
        "{model:?}"
    );
    drop(worker);
    assert_eq!(vicinity::priority::current_nice().unwrap(), base);
}
