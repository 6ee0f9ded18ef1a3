//! [`CrossEncoder`]: a loaded sentence-transformers cross-encoder, ready to score (query,
//! passage) pairs.
//!
//! A cross-encoder is the sentence encoder's transformer with a classification head in place of
//! pooling: the query and the passage go through the model together, as one pair sequence
//! (`[CLS] query [SEP] passage [SEP]`, token types 0 then 1), and the head turns the first
//! token's final hidden state into one logit, the pair's relevance. It runs on the same forward
//! pass as the encoder ([`Bert::forward`], its kernels and its kind of thread pool); only the
//! head is its own, and that is two small dense layers per pair.
//!
//! Scores are what sentence-transformers' `CrossEncoder.predict` returns for the same
//! directory: the logit through the activation the model's configuration names (sigmoid by
//! default for a one-output model), with the raw logit kept beside it.

use std::path::Path;
use std::sync::Arc;

use rayon::ThreadPool;

use super::bert::{Bert, Linear, Output, Runner, Weights};
use super::config::{self, Architecture, CrossEncoderConfig, ModelConfig, ScoreActivation};
use super::dense;
use super::lowp::Staging;
use super::model::directory_name;
use super::precision::Precision;
use super::tokenize::{Encoded, TextTokenizer};
use super::worker::BatchModel;
use super::{EmbedError, EmbedResult};

/// How to load a cross-encoder. The defaults follow the model's own configuration.
#[derive(Clone, Debug, Default)]
pub struct CrossEncoderOptions {
    /// Longest pair sequence, special tokens included; longer pairs are truncated, the longer
    /// of query and passage first. Defaults to what sentence-transformers uses: `max_seq_length`
    /// of `sentence_bert_config.json`, else the tokenizer's `model_max_length` (capped at the
    /// position table). Always clamped to what the model's position embeddings allow.
    pub max_length: Option<usize>,
    /// Threads of the cross-encoder's own pool. Defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// Name reported by [`CrossEncoder::model_id`]. Defaults to the directory's name.
    pub model_id: Option<String>,
}

/// The relevance of one passage to a query, as a cross-encoder sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RerankScore {
    /// The score `CrossEncoder.predict` returns: the logit through the model's
    /// [`ScoreActivation`] (a probability in (0, 1) for the usual sigmoid). Higher is more
    /// relevant.
    pub score: f32,
    /// The classification head's raw output, before the activation (text-embeddings-inference's
    /// `raw_scores`). Orders pairs exactly as `score` does for a monotone activation.
    pub logit: f32,
}

/// The activation between the head's two dense layers.
#[derive(Clone, Copy, Debug)]
enum HeadActivation {
    /// BERT's pooler and RoBERTa's classification head.
    Tanh,
    /// DistilBERT's `pre_classifier`.
    Relu,
}

/// The sequence-classification head of a `*ForSequenceClassification` model, restricted to one
/// output: a dense layer with its activation on the first token's hidden state (BERT's pooler,
/// RoBERTa's `classifier.dense`, DistilBERT's `pre_classifier`), then the projection to the
/// logit. Dropout, which sits between them in training, is the identity at inference.
struct ClassificationHead {
    dense: Linear,
    activation: HeadActivation,
    out: Linear,
}

impl ClassificationHead {
    /// Loads the head from `weights`, whose encoder tensors carry `prefix`.
    fn load(weights: &Weights, config: &CrossEncoderConfig, prefix: &str) -> EmbedResult<Self> {
        let h = config.model.hidden_size;
        let (dense, activation, out) = match config.model.architecture {
            Architecture::Bert => (
                format!("{prefix}pooler.dense"),
                HeadActivation::Tanh,
                "classifier".to_owned(),
            ),
            Architecture::Roberta => (
                "classifier.dense".to_owned(),
                HeadActivation::Tanh,
                "classifier.out_proj".to_owned(),
            ),
            Architecture::DistilBert => (
                "pre_classifier".to_owned(),
                HeadActivation::Relu,
                "classifier".to_owned(),
            ),
        };
        for name in [&out, &dense] {
            if !weights.contains(&format!("{name}.weight")) {
                return Err(EmbedError::UnsupportedReranker {
                    path: config.transformer_dir.join("model.safetensors"),
                    reason: format!(
                        "the weights have no classification head (no tensor `{name}.weight`); \
                         config.json lists architectures [{}]: a bare encoder, not a \
                         sequence-classification model",
                        config.architectures
                    ),
                });
            }
        }
        Ok(ClassificationHead {
            dense: weights.linear(&[dense], h, h, Precision::F32, &[])?,
            activation,
            out: weights.linear(&[out], h, 1, Precision::F32, &[])?,
        })
    }

    /// The logits of the `n` first-token hidden states in `cls` (`n × hidden`). Runs inside
    /// the rayon pool of `threads` threads.
    fn logits(&self, cls: &[f32], n: usize, threads: usize) -> Vec<f32> {
        let h = self.dense.weight.n_out();
        let mut hidden = vec![0.0f32; n * h];
        // The head is f32: nothing to convert, and an empty staging allocates nothing.
        let staging = &mut Staging::default();
        dense::matmul(cls, n, &self.dense.weight, &mut hidden, threads, staging);
        for row in hidden.chunks_exact_mut(h) {
            for (x, b) in row.iter_mut().zip(&self.dense.bias) {
                let v = *x + b;
                *x = match self.activation {
                    HeadActivation::Tanh => v.tanh(),
                    HeadActivation::Relu => v.max(0.0),
                };
            }
        }
        let mut logits = vec![0.0f32; n];
        dense::matmul(&hidden, n, &self.out.weight, &mut logits, threads, staging);
        logits.iter_mut().for_each(|l| *l += self.out.bias[0]);
        logits
    }
}

/// A sentence-transformers `CrossEncoder` loaded for inference: tokenizer, transformer and
/// classification head, run on a thread pool of its own.
///
/// Loads a sentence-transformers cross-encoder directory (what `CrossEncoder.save` writes, or a
/// plain `transformers` sequence-classification directory such as the published
/// `cross-encoder/ms-marco-*` models): `config.json` of a `BertForSequenceClassification`,
/// `RobertaForSequenceClassification`, `XLMRobertaForSequenceClassification` or
/// `DistilBertForSequenceClassification` with one label, `model.safetensors` (encoder tensors
/// bare or under `bert.` / `roberta.` / `distilbert.`), `tokenizer.json`.
///
/// `Send + Sync`; share it behind an `Arc`. Calls are synchronous and CPU-bound: run them on a
/// dedicated thread (the [`RerankWorker`](super::RerankWorker) does), not on an async
/// runtime's workers.
///
/// # Empty text
/// An empty query or passage tokenizes to nothing between its special tokens and is scored
/// as sentence-transformers scores it: a valid, finite score.
pub struct CrossEncoder {
    model_id: String,
    runner: Runner,
    head: ClassificationHead,
    tokenizer: TextTokenizer,
    activation: ScoreActivation,
    max_length: usize,
    /// Whether pairs carry their token types into the model (see
    /// [`CrossEncoderConfig::token_types`]).
    token_types: bool,
}

impl std::fmt::Debug for CrossEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossEncoder")
            .field("model_id", &self.model_id)
            .field("config", self.config())
            .field("activation", &self.activation)
            .field("max_length", &self.max_length)
            .field("threads", &self.threads())
            .finish_non_exhaustive()
    }
}

impl CrossEncoder {
    /// Loads the cross-encoder directory `dir`.
    ///
    /// # Errors
    /// [`EmbedError::RerankerNotFound`] when `dir` is not a directory;
    /// [`EmbedError::MissingFile`], [`EmbedError::InvalidConfig`],
    /// [`EmbedError::InvalidWeights`] and [`EmbedError::UnsupportedArchitecture`] as for a
    /// sentence encoder; [`EmbedError::UnsupportedReranker`] when the model is no one-output
    /// sequence classifier (a sentence embedding model, `num_labels` other than 1) or names a
    /// score activation we do not implement.
    pub fn load(dir: &Path, opts: &CrossEncoderOptions) -> EmbedResult<Self> {
        if !dir.is_dir() {
            return Err(EmbedError::RerankerNotFound {
                model: dir.display().to_string(),
                reason: "there is no directory of that name".into(),
            });
        }
        let ce = CrossEncoderConfig::load(dir)?;
        let tdir = &ce.transformer_dir;
        if !ce.architectures.is_empty()
            && !ce
                .architectures
                .split(", ")
                .any(|a| a.ends_with("ForSequenceClassification"))
        {
            return Err(EmbedError::UnsupportedReranker {
                path: tdir.join("config.json"),
                reason: format!(
                    "its architectures are [{}], not a sequence classifier \
                     (`*ForSequenceClassification`)",
                    ce.architectures
                ),
            });
        }
        if ce.num_labels != 1 {
            return Err(EmbedError::UnsupportedReranker {
                path: tdir.join("config.json"),
                reason: format!(
                    "it has {} labels; a reranker needs one relevance score per pair",
                    ce.num_labels
                ),
            });
        }

        let limit = ce.model.max_position_tokens();
        let requested = opts
            .max_length
            .or(ce.max_seq_length)
            .or_else(|| {
                config::tokenizer_model_max_length(tdir)
                    .map(|n| n.min(ce.model.max_position_embeddings))
            })
            .unwrap_or(limit);
        if requested == 0 {
            return Err(EmbedError::InvalidInput(
                "max_length must be at least 1".into(),
            ));
        }
        let max_length = requested.min(limit);
        let tokenizer = TextTokenizer::load(tdir, max_length, ce.do_lower_case)?;
        // A pair template with as many special tokens as fit would leave no room for text
        // (and the tokenizer cannot truncate to less than them).
        let special = tokenizer.pair_special_tokens()?;
        if special >= max_length {
            return Err(EmbedError::Tokenizer(format!(
                "{}: a pair has {special} special tokens, which leaves no room for text within \
                 max_length {max_length}",
                tdir.join("tokenizer.json").display(),
            )));
        }

        let weights = Weights::open(&tdir.join("model.safetensors"))?;
        let prefix = Bert::prefix(&weights, &ce.model)?;
        // The head first: a sentence encoder's directory fails here, with the clearer message.
        let head = ClassificationHead::load(&weights, &ce, prefix)?;
        let bert = Bert::from_weights(&weights, ce.model.clone(), Precision::F32, None)?;
        drop(weights);
        let runner = Runner::new(bert, opts.threads, "rerank")?;
        Ok(CrossEncoder {
            model_id: opts.model_id.clone().unwrap_or_else(|| directory_name(dir)),
            runner,
            head,
            tokenizer,
            activation: ce.activation,
            max_length,
            token_types: ce.token_types,
        })
    }

    /// The model's name (the directory name unless [`CrossEncoderOptions::model_id`] set one).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Longest pair sequence scored, special tokens included; longer pairs are truncated.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The activation that turns logits into scores.
    pub fn activation(&self) -> ScoreActivation {
        self.activation
    }

    /// The transformer's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.runner.bert().config()
    }

    /// Threads of the cross-encoder's pool.
    pub fn threads(&self) -> usize {
        self.runner.threads()
    }

    /// Tokenizes the pair (`query`, `text`) as sentence-transformers does: the tokenizer's
    /// pair template, truncated to [`max_length`](Self::max_length) by taking tokens off the
    /// longer of the two first (`longest_first`).
    pub fn tokenize_pair(&self, query: &str, text: &str) -> EmbedResult<Encoded> {
        self.tokenizer.encode_pair(query, text, self.token_types)
    }

    /// Scores tokenized pairs: one [`RerankScore`] per input, in input order. Each input must
    /// be non-empty, at most [`max_length`](Self::max_length) long and hold ids and token types
    /// of this model's vocabularies, as [`tokenize_pair`](Self::tokenize_pair)'s output does.
    ///
    /// A pair's score does not depend on what else is in the batch (up to float rounding).
    pub fn score_encoded(&self, batch: &[Encoded]) -> EmbedResult<Vec<RerankScore>> {
        self.score_encoded_on(self.runner.pool(), batch)
    }

    /// [`score_encoded`](Self::score_encoded) on the threads of `pool` instead of the
    /// cross-encoder's own. The result is the same.
    pub fn score_encoded_on(
        &self,
        pool: &ThreadPool,
        batch: &[Encoded],
    ) -> EmbedResult<Vec<RerankScore>> {
        self.runner.check(batch, self.max_length)?;
        let mut out = Vec::with_capacity(batch.len());
        // The head reads the first token of each pair alone, so the transformer's last layer
        // computes nothing else.
        self.runner
            .run(pool, batch, Output::FirstTokens, |seqs, cls, threads| {
                for logit in self.head.logits(cls, seqs.len(), threads) {
                    out.push(RerankScore {
                        score: self.activation.apply(logit),
                        logit,
                    });
                }
            });
        Ok(out)
    }

    /// Tokenizes and scores (query, text) pairs, as `CrossEncoder.predict(pairs)` does: one
    /// [`RerankScore`] per pair, in input order. This is the direct, synchronous path; the
    /// service goes through a [`RerankWorker`](super::RerankWorker).
    pub fn score_pairs(&self, pairs: &[(&str, &str)]) -> EmbedResult<Vec<RerankScore>> {
        let encoded = pairs
            .iter()
            .map(|(query, text)| self.tokenize_pair(query, text))
            .collect::<EmbedResult<Vec<_>>>()?;
        self.score_encoded(&encoded)
    }

    /// Scores `texts` against one `query`: [`score_pairs`](Self::score_pairs) with the same
    /// query in every pair.
    pub fn rerank(&self, query: &str, texts: &[&str]) -> EmbedResult<Vec<RerankScore>> {
        let pairs: Vec<(&str, &str)> = texts.iter().map(|text| (query, *text)).collect();
        self.score_pairs(&pairs)
    }
}

/// A pair as the rerank worker carries it: the request's query, shared by its pairs, and one
/// passage.
pub(crate) type Pair = (Arc<str>, String);

impl BatchModel for CrossEncoder {
    type Input = Pair;
    type Output = RerankScore;
    const NAME: &'static str = "cross-encoder";

    fn tokenize(&self, (query, text): &Pair) -> EmbedResult<Encoded> {
        self.tokenize_pair(query, text)
    }

    fn run(&self, pool: Option<&ThreadPool>, batch: &[Encoded]) -> EmbedResult<Vec<RerankScore>> {
        match pool {
            Some(pool) => self.score_encoded_on(pool, batch),
            None => self.score_encoded(batch),
        }
    }

    fn threads(&self) -> usize {
        CrossEncoder::threads(self)
    }
}
