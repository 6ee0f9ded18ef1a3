//! [`SentenceEncoder`]: a loaded sentence-transformers model, ready to embed text.

use std::path::Path;

use rayon::ThreadPool;
use tokenizers::Tokenizer;

use super::bert::{Bert, Output, Runner, Weights};
use super::config::{self, ModelConfig, Modules, SentenceBertConfig};
use super::pooling::{self, Pooling};
use super::precision::{CpuFeatures, Kernel, Precision};
use super::tokenize::{Encoded, TextTokenizer};
use super::{EmbedError, EmbedResult};

/// How to load a model. The defaults follow the model's own configuration.
#[derive(Clone, Debug, Default)]
pub struct EncoderOptions {
    /// Longest token sequence, special tokens included; longer texts are truncated. Defaults to
    /// `max_seq_length` of `sentence_bert_config.json`. Always clamped to what the model's
    /// position embeddings allow.
    pub max_seq_length: Option<usize>,
    /// Threads of the encoder's own pool. Defaults to the number of CPUs.
    pub threads: Option<usize>,
    /// Name reported by [`SentenceEncoder::model_id`]. Defaults to the directory's name.
    pub model_id: Option<String>,
    /// The number format of the dense layers. Defaults to `f32`; a precision this CPU cannot
    /// run falls back to `f32` (see [`SentenceEncoder::kernel`] and
    /// [`SentenceEncoder::fallback`]).
    pub precision: Precision,
}

/// A sentence-transformers model loaded for inference: tokenizer, transformer, pooling and
/// optional normalisation, run on a thread pool of its own.
///
/// `Send + Sync`; share it behind an `Arc`. Calls are synchronous and CPU-bound: run them on a
/// dedicated thread, not on an async runtime's workers. Concurrent calls are allowed; they
/// share the encoder's pool.
///
/// # Empty text
/// The empty string and whitespace-only text tokenize to the special tokens alone (`[CLS]
/// [SEP]` for BERT) and embed to what the model makes of those, exactly as sentence-transformers
/// does: a valid, finite vector, identical for all such texts.
pub struct SentenceEncoder {
    model_id: String,
    runner: Runner,
    tokenizer: TextTokenizer,
    pooling: Pooling,
    normalize: bool,
    max_seq_length: usize,
    kernel: Kernel,
    fallback: Option<&'static str>,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("model_id", &self.model_id)
            .field("config", self.config())
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_seq_length", &self.max_seq_length)
            .field("threads", &self.threads())
            .field("kernel", &self.kernel)
            .finish_non_exhaustive()
    }
}

impl SentenceEncoder {
    /// Loads the sentence-transformers model directory `dir`: `modules.json`, the transformer
    /// module's `config.json`, `model.safetensors`, `tokenizer.json` and
    /// `sentence_bert_config.json`, and the pooling module's `config.json`.
    pub fn load(dir: &Path, opts: &EncoderOptions) -> EmbedResult<Self> {
        if !dir.is_dir() {
            return Err(EmbedError::ModelNotFound {
                path: dir.to_owned(),
            });
        }
        let modules = Modules::load(dir)?;
        let tdir = &modules.transformer_dir;
        let model_config = ModelConfig::load(&tdir.join("config.json"))?;
        let pooling = config::load_pooling(&modules.pooling_dir, model_config.hidden_size)?;
        let sbert = SentenceBertConfig::load(tdir)?;

        let limit = model_config.max_position_tokens();
        let requested = opts
            .max_seq_length
            .or(sbert.max_seq_length)
            .or_else(|| config::tokenizer_model_max_length(tdir))
            .unwrap_or(limit);
        if requested == 0 {
            return Err(EmbedError::InvalidInput(
                "max_seq_length must be at least 1".into(),
            ));
        }
        let max_seq_length = requested.min(limit);
        let tokenizer = TextTokenizer::load(tdir, max_seq_length, sbert.do_lower_case)?;

        let (kernel, fallback) = CpuFeatures::detect().plan(opts.precision);
        let weights = Weights::open(&tdir.join("model.safetensors"))?;
        let precision = kernel.precision();
        let calibration = if precision == Precision::Int8 {
            // The f32 model, run over a few sentences, finds the outlier channels int8 keeps
            // in f32 (see `Calibration`); then the int8 model replaces it.
            let reference =
                Bert::from_weights(&weights, model_config.clone(), Precision::F32, None)?;
            let texts: Vec<Encoded> = CALIBRATION
                .iter()
                .map(|t| tokenizer.encode(t))
                .collect::<EmbedResult<_>>()?;
            Some(Runner::new(reference, opts.threads, "calibrate")?.calibrate(&texts))
        } else {
            None
        };
        let bert = Bert::from_weights(&weights, model_config, precision, calibration.as_ref())?;
        drop(weights);
        let runner = Runner::new(bert, opts.threads, "embed")?;
        let model_id = opts.model_id.clone().unwrap_or_else(|| directory_name(dir));
        Ok(SentenceEncoder {
            model_id,
            runner,
            tokenizer,
            pooling,
            normalize: modules.normalize,
            max_seq_length,
            kernel,
            fallback,
        })
    }

    /// The kernel the dense layers run on, and so the precision they compute in.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Why the dense layers run in `f32` although [`EncoderOptions::precision`] asked for
    /// another precision (this CPU lacks its instructions); `None` when they run as asked.
    pub fn fallback(&self) -> Option<&'static str> {
        self.fallback
    }

    /// The model's name (the directory name unless [`EncoderOptions::model_id`] set one).
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Width of the embeddings.
    pub fn dim(&self) -> usize {
        self.pooling.output_dim(self.config().hidden_size)
    }

    /// Longest token sequence embedded, special tokens included; longer texts are truncated.
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Whether embeddings are L2-normalised (the model has a Normalize module).
    pub fn normalizes(&self) -> bool {
        self.normalize
    }

    /// The pooling the model applies.
    pub fn pooling(&self) -> &Pooling {
        &self.pooling
    }

    /// The transformer's configuration.
    pub fn config(&self) -> &ModelConfig {
        self.runner.bert().config()
    }

    /// Threads of the encoder's pool.
    pub fn threads(&self) -> usize {
        self.runner.threads()
    }

    /// The model's tokenizer as shipped, with its padding and truncation switched off: for
    /// splitting long documents into passages that fit [`max_seq_length`](Self::max_seq_length).
    ///
    /// Where the model lower-cases text itself (`do_lower_case` in
    /// `sentence_bert_config.json`), this tokenizer does not; [`count_tokens`](Self::count_tokens)
    /// and [`tokenize`](Self::tokenize) do.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.tokenizer.plain()
    }

    /// Number of tokens of `text`, special tokens included, **before** truncation: a text
    /// fits the model whole when this is at most [`max_seq_length`](Self::max_seq_length).
    pub fn count_tokens(&self, text: &str) -> EmbedResult<usize> {
        self.tokenizer.count(text)
    }

    /// Tokenizes texts as [`embed`](Self::embed) does (truncated to `max_seq_length`), so that
    /// a batcher can budget tokens before embedding with [`embed_encoded`](Self::embed_encoded).
    pub fn tokenize(&self, texts: &[&str]) -> EmbedResult<Vec<Encoded>> {
        texts.iter().map(|t| self.tokenizer.encode(t)).collect()
    }

    /// Embeds tokenized texts; the result has one vector of [`dim`](Self::dim) values per
    /// input, in input order. Each input must be non-empty, at most `max_seq_length` long and
    /// hold ids of this model's vocabulary, as [`tokenize`](Self::tokenize)'s output does.
    ///
    /// A text's embedding does not depend on what else is in the batch (up to float rounding).
    pub fn embed_encoded(&self, batch: &[Encoded]) -> EmbedResult<Vec<Vec<f32>>> {
        self.embed_encoded_on(self.runner.pool(), batch)
    }

    /// [`embed_encoded`](Self::embed_encoded) on the threads of `pool` instead of the
    /// encoder's own: for a caller that runs some of its work on threads of another
    /// scheduling priority. The result is the same.
    pub fn embed_encoded_on(
        &self,
        pool: &ThreadPool,
        batch: &[Encoded],
    ) -> EmbedResult<Vec<Vec<f32>>> {
        self.runner.check(batch, self.max_seq_length)?;
        let hidden = self.config().hidden_size;
        let dim = self.dim();
        let mut out = Vec::with_capacity(batch.len());
        self.runner
            .run(pool, batch, Output::AllTokens, |seqs, states, _threads| {
                let mut row = 0;
                for seq in seqs {
                    let mut v = vec![0.0f32; dim];
                    self.pooling.pool(
                        &states[row * hidden..(row + seq.len()) * hidden],
                        hidden,
                        &mut v,
                    );
                    if self.normalize {
                        pooling::normalize(&mut v);
                    }
                    row += seq.len();
                    out.push(v);
                }
            });
        Ok(out)
    }

    /// Tokenizes and embeds texts: one vector of [`dim`](Self::dim) values per text, in input
    /// order. Texts longer than [`max_seq_length`](Self::max_seq_length) tokens are truncated;
    /// see the [type docs](Self) for empty text.
    pub fn embed(&self, texts: &[&str]) -> EmbedResult<Vec<Vec<f32>>> {
        let encoded = self.tokenize(texts)?;
        self.embed_encoded(&encoded)
    }
}

/// Sentences the int8 encoder is calibrated on at load: varied in length, register and
/// punctuation, so that every channel that runs large in ordinary text shows it.
const CALIBRATION: &[&str] = &[
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to the email address?",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "In 1969 two astronauts walked on the Moon while a third orbited above them.",
    "error: connection refused (os error 111) while connecting to 127.0.0.1:5432",
    "Paris is the capital of France.",
    "The committee meets on Tuesday to discuss the annual budget, hiring and the new office.",
    "Vector databases store embeddings so that similar passages can be found quickly.",
    "ok",
    "What is the difference between a list and a tuple in Python?",
    "Preheat the oven to 200 °C, then bake the bread for 35 minutes until golden.",
    "Shares fell 4.2% after the company cut its forecast for the third quarter.",
    "She said she would call back later, but she never did.",
    "Mitochondria are the organelles that produce most of a cell's supply of ATP.",
    "Click 'Save' to keep your changes, or 'Cancel' to discard them!",
    "Rust guarantees memory safety without a garbage collector, through ownership and \
     borrowing checked at compile time; data races are ruled out in the same way, and \
     unsafe code is confined to blocks the programmer marks.",
];

/// The name of directory `dir` (resolved, so that `.` has one): a local model's default id.
pub(crate) fn directory_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(dir)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
