//! Reading a sentence-transformers model directory's configuration files.
//!
//! Owns the parsing and validation of `config.json` (the transformer's hyper-parameters),
//! `modules.json` (the module pipeline), the pooling module's `config.json` and
//! `sentence_bert_config.json`. Everything is checked here, once, so the forward pass can trust
//! the numbers it is given.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::pooling::{Pooling, PoolingMode};
use super::{EmbedError, EmbedResult};

/// The encoder families whose weights the forward pass knows how to read.
///
/// All are post-LayerNorm transformer encoders with learned absolute position embeddings; they
/// differ in tensor names, in where positions start and in whether token types exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// BERT (`model_type` `bert`), as in all-MiniLM-L6-v2.
    Bert,
    /// RoBERTa and XLM-RoBERTa (`roberta`, `xlm-roberta`): BERT's layout, but positions start
    /// after the padding id.
    Roberta,
    /// DistilBERT (`distilbert`): its own tensor names, no token types.
    DistilBert,
}

/// The feed-forward activation function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Activation {
    /// `gelu`: the exact, erf-based GELU.
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation of GELU.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu` / `swish`: `x · sigmoid(x)`.
    Silu,
}

/// The transformer's hyper-parameters, from the model's `config.json`.
#[derive(Clone, Debug)]
pub struct ModelConfig {
    /// The encoder family.
    pub architecture: Architecture,
    /// `model_type` as written in `config.json`.
    pub model_type: String,
    /// Number of rows of the word embedding table.
    pub vocab_size: usize,
    /// Width of every token's hidden state, and of the token embeddings that are pooled.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of attention heads per layer.
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the position embedding table.
    pub max_position_embeddings: usize,
    /// Rows of the token type embedding table (0 when the model has none).
    pub type_vocab_size: usize,
    /// Epsilon of every LayerNorm.
    pub layer_norm_eps: f32,
    pub(crate) activation: Activation,
    /// Position id of the first token: 0 for BERT, `pad_token_id + 1` for RoBERTa.
    pub(crate) position_offset: usize,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub(crate) fn load(path: &Path) -> EmbedResult<Self> {
        let json = read_json_object(path)?;
        let model_type = json
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let architectures = json
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let unsupported = |detail: String| EmbedError::UnsupportedArchitecture {
            model_type: model_type.clone(),
            detail,
        };
        let architecture = match model_type.as_str() {
            "bert" => Architecture::Bert,
            "roberta" | "xlm-roberta" => Architecture::Roberta,
            "distilbert" => Architecture::DistilBert,
            "" => {
                return Err(EmbedError::InvalidConfig {
                    path: path.to_owned(),
                    reason: "no `model_type` field".into(),
                });
            }
            _ => {
                return Err(unsupported(format!(
                    "architectures [{architectures}] in {}",
                    path.display()
                )));
            }
        };
        let field = |names: &[&str]| -> EmbedResult<usize> {
            names
                .iter()
                .find_map(|n| json.get(*n))
                .and_then(Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| EmbedError::InvalidConfig {
                    path: path.to_owned(),
                    reason: format!("missing or invalid integer field `{}`", names[0]),
                })
        };
        let distil = architecture == Architecture::DistilBert;
        let (hidden_size, num_layers, num_heads, intermediate_size) = if distil {
            (
                field(&["dim"])?,
                field(&["n_layers"])?,
                field(&["n_heads"])?,
                field(&["hidden_dim"])?,
            )
        } else {
            (
                field(&["hidden_size"])?,
                field(&["num_hidden_layers"])?,
                field(&["num_attention_heads"])?,
                field(&["intermediate_size"])?,
            )
        };
        let vocab_size = field(&["vocab_size"])?;
        let max_position_embeddings = field(&["max_position_embeddings"])?;
        let type_vocab_size = if distil {
            0
        } else {
            field(&["type_vocab_size"])?
        };
        let act_name = json
            .get(if distil { "activation" } else { "hidden_act" })
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let activation = match act_name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => return Err(unsupported(format!("activation `{other}`"))),
        };
        if let Some(kind) = json.get("position_embedding_type").and_then(Value::as_str)
            && kind != "absolute"
        {
            return Err(unsupported(format!("position_embedding_type `{kind}`")));
        }
        if json.get("is_decoder").and_then(Value::as_bool) == Some(true) {
            return Err(unsupported("a decoder (`is_decoder: true`)".into()));
        }
        let layer_norm_eps = if distil {
            1e-12
        } else {
            json.get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12) as f32
        };
        let position_offset = match architecture {
            Architecture::Roberta => {
                json.get("pad_token_id")
                    .and_then(Value::as_u64)
                    .unwrap_or(1) as usize
                    + 1
            }
            Architecture::Bert | Architecture::DistilBert => 0,
        };
        let config = ModelConfig {
            architecture,
            model_type,
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size,
            max_position_embeddings,
            type_vocab_size,
            layer_norm_eps,
            activation,
            position_offset,
        };
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> EmbedResult<()> {
        let invalid = |reason: String| EmbedError::InvalidConfig {
            path: path.to_owned(),
            reason,
        };
        if self.hidden_size == 0
            || self.num_heads == 0
            || self.num_layers == 0
            || self.intermediate_size == 0
            || self.vocab_size == 0
        {
            return Err(invalid(
                "hidden size, layers, heads, intermediate size and vocabulary must be > 0".into(),
            ));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(invalid(format!(
                "hidden size {} is not a multiple of the {} attention heads",
                self.hidden_size, self.num_heads
            )));
        }
        if self.max_position_tokens() < 2 {
            return Err(invalid(format!(
                "max_position_embeddings {} leaves no room for a sequence",
                self.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// The longest token sequence the position embeddings can describe.
    pub fn max_position_tokens(&self) -> usize {
        self.max_position_embeddings
            .saturating_sub(self.position_offset)
    }
}

/// The sentence-transformers module pipeline: transformer, pooling, optional normalisation.
#[derive(Clone, Debug)]
pub(crate) struct Modules {
    /// Directory of the transformer module (the model directory itself in most models).
    pub(crate) transformer_dir: PathBuf,
    /// Directory of the pooling module.
    pub(crate) pooling_dir: PathBuf,
    /// Whether a Normalize module follows pooling.
    pub(crate) normalize: bool,
}

impl Modules {
    /// Reads `modules.json` in `dir`.
    pub(crate) fn load(dir: &Path) -> EmbedResult<Self> {
        let path = dir.join("modules.json");
        let json = read_json(&path)?;
        let invalid = |reason: &str| EmbedError::InvalidConfig {
            path: path.clone(),
            reason: reason.to_owned(),
        };
        let list = json
            .as_array()
            .ok_or_else(|| invalid("expected a list of modules"))?;
        let mut transformer_dir = None;
        let mut pooling_dir = None;
        let mut normalize = false;
        for module in list {
            let kind = module
                .get("type")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("a module has no `type`"))?;
            let sub = module.get("path").and_then(Value::as_str).unwrap_or("");
            // The type is a Python class path; its module moved between releases
            // (`sentence_transformers.models.Pooling`, `…modules.pooling.Pooling`).
            let class = kind.rsplit('.').next().unwrap_or(kind);
            match (class, transformer_dir.is_some(), pooling_dir.is_some()) {
                ("Transformer", false, false) => transformer_dir = Some(dir.join(sub)),
                ("Pooling", true, false) => pooling_dir = Some(dir.join(sub)),
                ("Normalize", true, true) if !normalize => normalize = true,
                ("Transformer" | "Pooling" | "Normalize", ..) => {
                    return Err(invalid(&format!(
                        "module `{kind}` out of order: expected Transformer, Pooling, then an \
                         optional Normalize"
                    )));
                }
                _ => {
                    return Err(EmbedError::UnsupportedModule {
                        path: path.clone(),
                        module_type: kind.to_owned(),
                    });
                }
            }
        }
        match (transformer_dir, pooling_dir) {
            (Some(transformer_dir), Some(pooling_dir)) => Ok(Modules {
                transformer_dir,
                pooling_dir,
                normalize,
            }),
            _ => Err(invalid(
                "a sentence encoder needs a Transformer and a Pooling module",
            )),
        }
    }
}

/// Reads the pooling module's `config.json`, in the classic `pooling_mode_*_tokens` flag layout
/// or the newer `pooling_mode` string (or list) layout.
pub(crate) fn load_pooling(dir: &Path, hidden_size: usize) -> EmbedResult<Pooling> {
    let path = dir.join("config.json");
    let json = read_json_object(&path)?;
    let unsupported = |reason: String| EmbedError::UnsupportedPooling {
        path: path.clone(),
        reason,
    };
    let mut modes = Vec::new();
    if let Some(value) = json.get("pooling_mode") {
        let names: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => return Err(unsupported(format!("`pooling_mode` {value}"))),
        };
        for name in names {
            let mode = match name {
                "cls" => PoolingMode::Cls,
                "mean" => PoolingMode::Mean,
                "max" => PoolingMode::Max,
                "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
                "weightedmean" => PoolingMode::WeightedMean,
                "lasttoken" => PoolingMode::LastToken,
                other => return Err(unsupported(format!("mode `{other}`"))),
            };
            modes.push(mode);
        }
    } else {
        for (key, value) in &json {
            let Some(name) = key.strip_prefix("pooling_mode_") else {
                continue;
            };
            if value.as_bool() != Some(true) {
                continue;
            }
            let mode = match name {
                "cls_token" => PoolingMode::Cls,
                "mean_tokens" => PoolingMode::Mean,
                "max_tokens" => PoolingMode::Max,
                "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
                "weightedmean_tokens" => PoolingMode::WeightedMean,
                "lasttoken" => PoolingMode::LastToken,
                _ => return Err(unsupported(format!("`{key}`"))),
            };
            modes.push(mode);
        }
    }
    if modes.is_empty() {
        return Err(unsupported("no pooling mode is enabled".into()));
    }
    let dim = json
        .get("word_embedding_dimension")
        .or_else(|| json.get("embedding_dimension"))
        .and_then(Value::as_u64);
    if let Some(dim) = dim
        && dim as usize != hidden_size
    {
        return Err(EmbedError::InvalidConfig {
            path: path.clone(),
            reason: format!(
                "pooling expects token embeddings of width {dim}, the model's hidden size is \
                 {hidden_size}"
            ),
        });
    }
    Ok(Pooling::new(modes))
}

/// The settings of `sentence_bert_config.json` the encoder uses.
#[derive(Clone, Debug, Default)]
pub(crate) struct SentenceBertConfig {
    /// Longest token sequence, special tokens included; longer inputs are truncated.
    pub(crate) max_seq_length: Option<usize>,
    /// Whether text is lower-cased before tokenization.
    pub(crate) do_lower_case: bool,
}

impl SentenceBertConfig {
    /// Reads `sentence_bert_config.json` in the transformer module's directory; a missing file
    /// means defaults, as in sentence-transformers.
    pub(crate) fn load(dir: &Path) -> EmbedResult<Self> {
        let path = dir.join("sentence_bert_config.json");
        if !path.exists() {
            return Ok(Self::default());
        }
        let json = read_json_object(&path)?;
        let max_seq_length = match json.get("max_seq_length") {
            None | Some(Value::Null) => None,
            Some(v) => {
                Some(
                    v.as_u64()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| EmbedError::InvalidConfig {
                            path: path.clone(),
                            reason: format!("`max_seq_length` {v} is not a positive integer"),
                        })? as usize,
                )
            }
        };
        let do_lower_case = json
            .get("do_lower_case")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(SentenceBertConfig {
            max_seq_length,
            do_lower_case,
        })
    }
}

/// The `model_max_length` of `tokenizer_config.json`, where present and sensible; the fallback
/// sequence limit for models without `sentence_bert_config.json`.
pub(crate) fn tokenizer_model_max_length(dir: &Path) -> Option<usize> {
    let path = dir.join("tokenizer_config.json");
    let json = read_json_object(&path).ok()?;
    json.get("model_max_length")
        .and_then(Value::as_u64)
        // Tokenizers without a limit store a huge sentinel (1e30) here.
        .filter(|&n| n > 0 && n < 1 << 20)
        .map(|n| n as usize)
}

/// The `model_input_names` of `tokenizer_config.json`, where the file lists them.
fn tokenizer_model_input_names(dir: &Path) -> Option<Vec<String>> {
    let json = read_json_object(&dir.join("tokenizer_config.json")).ok()?;
    let names = json.get("model_input_names")?.as_array()?;
    Some(
        names
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    )
}

/// Reads a file that must exist, mapping a missing file to [`EmbedError::MissingFile`].
pub(crate) fn read_file(path: &Path) -> EmbedResult<Vec<u8>> {
    fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            EmbedError::MissingFile {
                path: path.to_owned(),
            }
        } else {
            EmbedError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

fn read_json(path: &Path) -> EmbedResult<Value> {
    let bytes = read_file(path)?;
    serde_json::from_slice(&bytes).map_err(|e| EmbedError::InvalidConfig {
        path: path.to_owned(),
        reason: format!("not valid JSON: {e}"),
    })
}

fn read_json_object(path: &Path) -> EmbedResult<Map<String, Value>> {
    match read_json(path)? {
        Value::Object(map) => Ok(map),
        _ => Err(EmbedError::InvalidConfig {
            path: path.to_owned(),
            reason: "expected a JSON object".into(),
        }),
    }
}

/// The function `CrossEncoder.predict` applies to a cross-encoder's logit to give its score.
///
/// sentence-transformers takes it from the model's configuration (`activation_fn` in
/// `config_sentence_transformers.json`, else `sentence_transformers.activation_fn` in
/// `config.json`, else the pre-v4 `sbert_ce_default_activation_function` there) and defaults to
/// [`Sigmoid`](Self::Sigmoid) for a one-label model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreActivation {
    /// `torch.nn.Sigmoid`: scores in (0, 1); the default for one-label models.
    Sigmoid,
    /// `torch.nn.Identity`: the score is the logit.
    Identity,
    /// `torch.nn.Tanh`: scores in (−1, 1).
    Tanh,
    /// `torch.nn.ReLU`.
    Relu,
}

impl ScoreActivation {
    /// The score of `logit`.
    pub fn apply(self, logit: f32) -> f32 {
        match self {
            ScoreActivation::Sigmoid => 1.0 / (1.0 + (-logit).exp()),
            ScoreActivation::Identity => logit,
            ScoreActivation::Tanh => logit.tanh(),
            ScoreActivation::Relu => logit.max(0.0),
        }
    }

    /// The activation named by a dotted class path (`torch.nn.modules.activation.Sigmoid`);
    /// `None` for one we do not implement.
    fn from_class_path(path: &str) -> Option<Self> {
        match path.rsplit('.').next().unwrap_or(path) {
            "Sigmoid" => Some(ScoreActivation::Sigmoid),
            "Identity" => Some(ScoreActivation::Identity),
            "Tanh" => Some(ScoreActivation::Tanh),
            "ReLU" => Some(ScoreActivation::Relu),
            _ => None,
        }
    }
}

/// What a sentence-transformers `CrossEncoder` directory says beyond the transformer's
/// hyper-parameters: where the transformer is, its task head's outputs, the score activation
/// and the sequence limit.
#[derive(Clone, Debug)]
pub(crate) struct CrossEncoderConfig {
    /// Directory of the transformer (the model directory itself, unless `modules.json` says
    /// otherwise).
    pub(crate) transformer_dir: PathBuf,
    /// The transformer's hyper-parameters.
    pub(crate) model: ModelConfig,
    /// The `architectures` of `config.json`, for error messages.
    pub(crate) architectures: String,
    /// Outputs of the classification head: `id2label`'s size, else `num_labels`, else 2 (the
    /// default of `transformers`).
    pub(crate) num_labels: usize,
    /// The activation `CrossEncoder.predict` applies.
    pub(crate) activation: ScoreActivation,
    /// `max_seq_length` of `sentence_bert_config.json`, which sentence-transformers gives the
    /// tokenizer as its `model_max_length`.
    pub(crate) max_seq_length: Option<usize>,
    /// Whether text is lower-cased before tokenization (`sentence_bert_config.json`).
    pub(crate) do_lower_case: bool,
    /// Whether the model is given the tokenizer's token type ids. `transformers` passes them
    /// where the tokenizer lists them among its `model_input_names` (BERT's does; RoBERTa's,
    /// whose pair template still marks the second segment 1, and DistilBERT's do not); without
    /// that list in `tokenizer_config.json`, where the model has more than one token type.
    pub(crate) token_types: bool,
}

impl CrossEncoderConfig {
    /// Reads the configuration of the cross-encoder directory `dir`.
    pub(crate) fn load(dir: &Path) -> EmbedResult<Self> {
        let transformer_dir = cross_encoder_transformer_dir(dir)?;
        let config_path = transformer_dir.join("config.json");
        let model = ModelConfig::load(&config_path)?;
        let json = read_json_object(&config_path)?;
        let architectures = json
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let num_labels = match (json.get("id2label"), json.get("num_labels")) {
            (Some(Value::Object(labels)), _) => labels.len(),
            (_, Some(n)) => n.as_u64().ok_or_else(|| EmbedError::InvalidConfig {
                path: config_path.clone(),
                reason: format!("`num_labels` {n} is not an integer"),
            })? as usize,
            _ => 2,
        };

        // sentence-transformers' own order: its module configuration first, then the keys
        // older versions wrote into config.json (`sentence_transformers.activation_fn` where
        // that key exists, even as null, else `sbert_ce_default_activation_function`).
        let st_config = dir.join("config_sentence_transformers.json");
        let mut candidates = Vec::new();
        if st_config.is_file()
            && let Some(p) = read_json_object(&st_config)?
                .get("activation_fn")
                .and_then(Value::as_str)
        {
            candidates.push((p.to_owned(), st_config.clone()));
        }
        let from_config = match json.get("sentence_transformers") {
            Some(st) if st.get("activation_fn").is_some() => st.get("activation_fn"),
            _ => json.get("sbert_ce_default_activation_function"),
        };
        if let Some(p) = from_config.and_then(Value::as_str) {
            candidates.push((p.to_owned(), config_path.clone()));
        }
        let mut activation = if num_labels == 1 {
            ScoreActivation::Sigmoid
        } else {
            ScoreActivation::Identity
        };
        for (path, file) in candidates {
            // sentence-transformers instantiates only `torch.` classes unless told to trust
            // the model's code, and moves on to the next source for any other.
            if !path.starts_with("torch.") {
                tracing::warn!(
                    activation_fn = %path,
                    file = %file.display(),
                    "ignoring an activation function outside torch, as sentence-transformers \
                     does without trust_remote_code"
                );
                continue;
            }
            activation = ScoreActivation::from_class_path(&path).ok_or_else(|| {
                EmbedError::UnsupportedReranker {
                    path: file,
                    reason: format!(
                        "activation function `{path}` (supported: Sigmoid, Identity, Tanh, ReLU)"
                    ),
                }
            })?;
            break;
        }
        let sbert = SentenceBertConfig::load(&transformer_dir)?;
        let token_types = model.type_vocab_size > 1
            && tokenizer_model_input_names(&transformer_dir)
                .is_none_or(|names| names.iter().any(|n| n == "token_type_ids"));
        Ok(CrossEncoderConfig {
            transformer_dir,
            model,
            architectures,
            num_labels,
            activation,
            max_seq_length: sbert.max_seq_length,
            do_lower_case: sbert.do_lower_case,
            token_types,
        })
    }
}

/// The transformer's directory in a cross-encoder directory: where `modules.json` (which
/// sentence-transformers ≥ 5 writes, with a single Transformer module) puts it, else `dir`
/// itself (a plain `transformers` sequence-classification directory, as older cross-encoders
/// are published).
fn cross_encoder_transformer_dir(dir: &Path) -> EmbedResult<PathBuf> {
    let path = dir.join("modules.json");
    if !path.is_file() {
        return Ok(dir.to_owned());
    }
    let json = read_json(&path)?;
    let list = json.as_array().ok_or_else(|| EmbedError::InvalidConfig {
        path: path.clone(),
        reason: "expected a list of modules".into(),
    })?;
    let classes: Vec<&str> = list
        .iter()
        .map(|m| {
            let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
            kind.rsplit('.').next().unwrap_or(kind)
        })
        .collect();
    match (classes.as_slice(), list.first()) {
        (["Transformer"], Some(module)) => {
            Ok(dir.join(module.get("path").and_then(Value::as_str).unwrap_or("")))
        }
        _ => Err(EmbedError::UnsupportedReranker {
            path,
            reason: format!(
                "its modules are [{}], where a cross-encoder has a single Transformer (a \
                 Pooling module means a sentence embedding model)",
                classes.join(", ")
            ),
        }),
    }
}
