//! The transformer forward pass of BERT-family encoders, on unpadded sequences.
//!
//! Owns the weights (copied out of `model.safetensors` once, as `f32`) and the forward pass:
//!
//! * The dense layers (the fused Q/K/V projection, the attention output, the two feed-forward
//!   layers) run as one matrix multiplication over **all real tokens of the batch**, stacked
//!   without padding, on weights packed once at load for the AVX-512 kernel of
//!   [`dense`](super::dense) (the `gemm` crate where that cannot run), split over the encoder's
//!   threads.
//! * Attention runs **per sequence and head**, over that sequence's tokens only, so no
//!   attention mask is needed and no work is spent on padding; the (sequence, head) pairs are
//!   spread over the threads.
//! * Bias, activation, residual and LayerNorm work is fused into single vectorised passes
//!   ([`ops`](super::ops)), also spread over the threads by rows.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device};
use gemm::Parallelism;
use rayon::ThreadPool;
use rayon::prelude::*;

use super::config::{Architecture, ModelConfig};
use super::dense::{self, Matrix, SyncPtr};
use super::lowp::Staging;
use super::ops;
use super::precision::Precision;
use super::tokenize::Encoded;
use super::{EmbedError, EmbedResult};

/// Rows per task when element-wise work is spread over threads: enough to amortise the task
/// overhead, small enough to balance a few hundred rows over two or more threads.
const ROWS_PER_TASK: usize = 16;

/// A dense layer `y = x·Wᵀ + b`, with `Wᵀ` (`n_in × n_out`) in the layout the matrix
/// multiplication reads.
pub(crate) struct Linear {
    pub(crate) weight: Matrix,
    pub(crate) bias: Vec<f32>,
}

struct LayerNorm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value projections side by side: output columns `[q | k | v]`.
    qkv: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    ffn_norm: LayerNorm,
}

/// The weights of a BERT-family encoder and its forward pass.
pub(crate) struct Bert {
    config: ModelConfig,
    word_embeddings: Vec<f32>,
    /// Position embeddings from `config.position_offset` on, with the token type 0 embedding
    /// already added (single-segment input always has type 0).
    position_embeddings: Vec<f32>,
    /// For each token type `t`, `type_embedding[t] − type_embedding[0]` (`type_vocab_size ×
    /// hidden`): added to the tokens of a type other than 0 (the second segment of a pair), so
    /// that single texts pay nothing for token types.
    type_deltas: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
}

/// A `model.safetensors` file, memory-mapped while a model's tensors are copied out of it.
pub(crate) struct Weights {
    path: PathBuf,
    st: MmapedSafetensors,
    names: Vec<String>,
}

impl Weights {
    /// Maps the safetensors file `path`.
    pub(crate) fn open(path: &Path) -> EmbedResult<Self> {
        if !path.exists() {
            return Err(EmbedError::MissingFile {
                path: path.to_owned(),
            });
        }
        // SAFETY: the file stays mapped only while a model is being loaded from it (a
        // `Weights` lives no longer than a load), while the tensors are copied out; it must not
        // be truncated meanwhile, which is the usual contract for a model directory being
        // loaded.
        let st =
            unsafe { MmapedSafetensors::new(path) }.map_err(|e| EmbedError::InvalidWeights {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(Weights {
            path: path.to_owned(),
            st,
            names,
        })
    }

    /// Whether the file holds a tensor of that name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// An [`EmbedError::InvalidWeights`] about this file.
    pub(crate) fn invalid(&self, reason: String) -> EmbedError {
        EmbedError::InvalidWeights {
            path: self.path.clone(),
            reason,
        }
    }

    /// The tensor `name`, which must have shape `shape`, widened to `f32`, row-major.
    pub(crate) fn load(&self, name: &str, shape: &[usize]) -> EmbedResult<Vec<f32>> {
        let tensor = self
            .st
            .load(name, &Device::Cpu)
            .map_err(|_| self.invalid(format!("no tensor `{name}`")))?;
        if tensor.dims() != shape {
            return Err(self.invalid(format!(
                "tensor `{name}` has shape {:?}, config.json implies {shape:?}",
                tensor.dims()
            )));
        }
        tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| self.invalid(format!("tensor `{name}`: {e}")))
    }

    /// The dense layers `names` (each `{name}.weight`, `n_out_each × n_in`, and `{name}.bias`)
    /// side by side as one layer: output columns in the order of `names`, its weights in
    /// `precision` (or `f32` where this CPU cannot run it), the input channels `outliers` kept
    /// in `f32` in int8.
    pub(crate) fn linear(
        &self,
        names: &[String],
        n_in: usize,
        n_out_each: usize,
        precision: Precision,
        outliers: &[usize],
    ) -> EmbedResult<Linear> {
        let n_out = n_out_each * names.len();
        let mut weight_t = vec![0.0f32; n_in * n_out];
        let mut bias = Vec::with_capacity(n_out);
        for (part, name) in names.iter().enumerate() {
            let w = self.load(&format!("{name}.weight"), &[n_out_each, n_in])?;
            for (o, row) in w.chunks_exact(n_in).enumerate() {
                for (k, &v) in row.iter().enumerate() {
                    weight_t[k * n_out + part * n_out_each + o] = v;
                }
            }
            bias.extend(self.load(&format!("{name}.bias"), &[n_out_each])?);
        }
        Ok(Linear {
            weight: Matrix::new(weight_t, n_in, n_out, precision, outliers),
            bias,
        })
    }
}

impl Bert {
    /// The prefix of the encoder's tensor names in `weights`: none for a bare encoder (what
    /// sentence-transformers saves), the architecture's name for a model with a task head
    /// (`bert.` in `BertForSequenceClassification`).
    pub(crate) fn prefix(weights: &Weights, config: &ModelConfig) -> EmbedResult<&'static str> {
        let probe = "embeddings.word_embeddings.weight";
        let prefixes: &[&'static str] = match config.architecture {
            Architecture::Bert => &["", "bert."],
            Architecture::Roberta => &["", "roberta."],
            Architecture::DistilBert => &["", "distilbert."],
        };
        prefixes
            .iter()
            .copied()
            .find(|p| weights.contains(&format!("{p}{probe}")))
            .ok_or_else(|| weights.invalid(format!("no tensor `{probe}`")))
    }

    /// Loads the encoder's weights from an open safetensors file, the dense layers' in
    /// `precision` (where this CPU can run it). In int8, the input channels whose activations
    /// ran largest in `calibration` stay `f32` (see [`Calibration::outliers`]).
    pub(crate) fn from_weights(
        weights: &Weights,
        config: ModelConfig,
        precision: Precision,
        calibration: Option<&Calibration>,
    ) -> EmbedResult<Self> {
        let prefix = Self::prefix(weights, &config)?;
        let load = |name: &str, shape: &[usize]| weights.load(&format!("{prefix}{name}"), shape);
        let linear = |names: &[String], n_in: usize, n_out_each: usize, l: usize, d: Dense| {
            let full: Vec<String> = names.iter().map(|n| format!("{prefix}{n}")).collect();
            let outliers = calibration.map_or_else(Vec::new, |c| c.outliers(l, d));
            weights.linear(&full, n_in, n_out_each, precision, &outliers)
        };

        let h = config.hidden_size;
        let i = config.intermediate_size;
        let word_embeddings = load("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let positions = load(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let mut position_embeddings = positions[config.position_offset * h..].to_vec();
        let mut type_deltas = Vec::new();
        if config.type_vocab_size > 0 {
            let types = load(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab_size, h],
            )?;
            for row in position_embeddings.chunks_exact_mut(h) {
                row.iter_mut().zip(&types[..h]).for_each(|(p, t)| *p += t);
            }
            type_deltas = types
                .chunks_exact(h)
                .flat_map(|row| row.iter().zip(&types[..h]).map(|(t, t0)| t - t0))
                .collect();
        }
        let norm = |name: &str| -> EmbedResult<LayerNorm> {
            Ok(LayerNorm {
                gamma: load(&format!("{name}.weight"), &[h])?,
                beta: load(&format!("{name}.bias"), &[h])?,
            })
        };
        let distil = config.architecture == Architecture::DistilBert;
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let layer = if distil {
                let p = format!("transformer.layer.{l}");
                Layer {
                    qkv: linear(
                        &[
                            format!("{p}.attention.q_lin"),
                            format!("{p}.attention.k_lin"),
                            format!("{p}.attention.v_lin"),
                        ],
                        h,
                        h,
                        l,
                        Dense::Qkv,
                    )?,
                    attn_out: linear(&[format!("{p}.attention.out_lin")], h, h, l, Dense::AttnOut)?,
                    attn_norm: norm(&format!("{p}.sa_layer_norm"))?,
                    ffn_in: linear(&[format!("{p}.ffn.lin1")], h, i, l, Dense::FfnIn)?,
                    ffn_out: linear(&[format!("{p}.ffn.lin2")], i, h, l, Dense::FfnOut)?,
                    ffn_norm: norm(&format!("{p}.output_layer_norm"))?,
                }
            } else {
                let p = format!("encoder.layer.{l}");
                Layer {
                    qkv: linear(
                        &[
                            format!("{p}.attention.self.query"),
                            format!("{p}.attention.self.key"),
                            format!("{p}.attention.self.value"),
                        ],
                        h,
                        h,
                        l,
                        Dense::Qkv,
                    )?,
                    attn_out: linear(
                        &[format!("{p}.attention.output.dense")],
                        h,
                        h,
                        l,
                        Dense::AttnOut,
                    )?,
                    attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                    ffn_in: linear(&[format!("{p}.intermediate.dense")], h, i, l, Dense::FfnIn)?,
                    ffn_out: linear(&[format!("{p}.output.dense")], i, h, l, Dense::FfnOut)?,
                    ffn_norm: norm(&format!("{p}.output.LayerNorm"))?,
                }
            };
            layers.push(layer);
        }
        let embed_norm = norm("embeddings.LayerNorm")?;
        Ok(Bert {
            config,
            word_embeddings,
            position_embeddings,
            type_deltas,
            embed_norm,
            layers,
        })
    }

    /// The model's configuration.
    pub(crate) fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Runs the encoder over `seqs` (each non-empty, with ids below the vocabulary size, token
    /// types below the type vocabulary size, and no longer than the position table; the caller
    /// checks with [`Runner::check`]). Returns, inside `scratch`, the final hidden states
    /// `output` asks for, row-major: all tokens', sequence after sequence (`Σ len × hidden`),
    /// or each sequence's first token's (`seqs.len() × hidden`).
    ///
    /// Must run inside the rayon pool whose threads it should use; `threads` is that pool's size.
    pub(crate) fn forward<'s>(
        &self,
        seqs: &[&Encoded],
        output: Output,
        threads: usize,
        scratch: &'s mut Scratch,
    ) -> &'s [f32] {
        let h = self.config.hidden_size;
        let total: usize = seqs.iter().map(|s| s.len()).sum();
        let mut starts = Vec::with_capacity(seqs.len());
        let mut acc = 0;
        for s in seqs {
            starts.push(acc);
            acc += s.len();
        }
        let Scratch {
            x,
            qkv,
            ctx,
            tmp,
            inter,
            staging,
            calibration,
        } = scratch;
        // Every buffer is entirely overwritten before it is read; only its size matters.
        let x = grow(x, total * h);
        let qkv = grow(qkv, total * 3 * h);
        let ctx = grow(ctx, total * h);
        let tmp = grow(tmp, total * h);
        let inter = grow(inter, total * self.config.intermediate_size);

        // Embeddings: word + (position + type 0) [+ (type − type 0)], then LayerNorm.
        let tokens: Vec<(usize, u32, u32)> = seqs
            .iter()
            .flat_map(|s| {
                let types = s.type_ids();
                s.ids()
                    .iter()
                    .enumerate()
                    .map(move |(pos, &id)| (pos, id, types.map_or(0, |t| t[pos])))
            })
            .collect();
        x.par_chunks_mut(h)
            .zip(tokens.par_iter())
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(row, &(pos, id, kind))| {
                let word = &self.word_embeddings[id as usize * h..][..h];
                let position = &self.position_embeddings[pos * h..][..h];
                row.iter_mut()
                    .zip(word.iter().zip(position))
                    .for_each(|(r, (w, p))| *r = w + p);
                if kind != 0 {
                    let delta = &self.type_deltas[kind as usize * h..][..h];
                    row.iter_mut().zip(delta).for_each(|(r, d)| *r += d);
                }
            });
        par_rows(x, h, |rows| {
            ops::layer_norm(
                rows,
                &self.embed_norm.gamma,
                &self.embed_norm.beta,
                self.config.layer_norm_eps,
            )
        });

        let eps = self.config.layer_norm_eps;
        let last = self.layers.len() - 1;
        // Token rows the layers carry: all of them, until a last layer that only has to produce
        // first tokens.
        let mut rows = total;
        for (l, layer) in self.layers.iter().enumerate() {
            let first_only = output == Output::FirstTokens && l == last;
            // Keys and values are needed for every token even then; the queries of the other
            // tokens are computed too, since splitting the fused projection costs more than
            // they do.
            if let Some(c) = calibration.as_mut() {
                c.observe(l, Dense::Qkv, x, h);
            }
            dense::matmul(x, total, &layer.qkv.weight, qkv, threads, staging);
            par_rows(qkv, 3 * h, |rows| ops::add_bias(rows, &layer.qkv.bias));
            self.attention(qkv, seqs, &starts, ctx, first_only);
            if first_only {
                // The residual stream of the first tokens, packed to the front: row `s` comes
                // from row `starts[s] ≥ s`, so copying in order never overwrites a row to come.
                for (s, &start) in starts.iter().enumerate() {
                    x.copy_within(start * h..(start + 1) * h, s * h);
                }
                rows = seqs.len();
            }
            let (x, tmp, inter) = (
                &mut x[..rows * h],
                &mut tmp[..rows * h],
                &mut inter[..rows * self.config.intermediate_size],
            );

            if let Some(c) = calibration.as_mut() {
                c.observe(l, Dense::AttnOut, &ctx[..rows * h], h);
            }
            dense::matmul(ctx, rows, &layer.attn_out.weight, tmp, threads, staging);
            par_rows_with(x, tmp, h, |xr, yr| {
                ops::residual_layer_norm(
                    xr,
                    yr,
                    &layer.attn_out.bias,
                    &layer.attn_norm.gamma,
                    &layer.attn_norm.beta,
                    eps,
                )
            });

            if let Some(c) = calibration.as_mut() {
                c.observe(l, Dense::FfnIn, x, h);
            }
            dense::matmul(x, rows, &layer.ffn_in.weight, inter, threads, staging);
            par_rows(inter, layer.ffn_in.weight.n_out(), |rows| {
                ops::bias_activation(rows, &layer.ffn_in.bias, self.config.activation)
            });
            if let Some(c) = calibration.as_mut() {
                c.observe(l, Dense::FfnOut, inter, self.config.intermediate_size);
            }
            dense::matmul(inter, rows, &layer.ffn_out.weight, tmp, threads, staging);
            par_rows_with(x, tmp, h, |xr, yr| {
                ops::residual_layer_norm(
                    xr,
                    yr,
                    &layer.ffn_out.bias,
                    &layer.ffn_norm.gamma,
                    &layer.ffn_norm.beta,
                    eps,
                )
            });
        }
        &x[..rows * h]
    }

    /// Scaled dot-product attention of every sequence and head over its own tokens, writing
    /// each head's context into its columns of `ctx`: for every token (`total × hidden`), or
    /// with `first_only` for each sequence's first token alone (`seqs.len() × hidden`).
    fn attention(
        &self,
        qkv: &[f32],
        seqs: &[&Encoded],
        starts: &[usize],
        ctx: &mut [f32],
        first_only: bool,
    ) {
        let h = self.config.hidden_size;
        let heads = self.config.num_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let ctx_ptr = SyncPtr(ctx.as_mut_ptr());
        // Longest sequences first, so that the big tasks do not land last on one thread.
        let mut work: Vec<(usize, usize)> = (0..seqs.len())
            .flat_map(|s| (0..heads).map(move |head| (s, head)))
            .collect();
        work.sort_by_key(|&(s, _)| std::cmp::Reverse(seqs[s].len()));
        work.par_iter().for_each(|&(s, head)| {
            let len = seqs[s].len();
            let start = starts[s];
            // Query rows, and the `ctx` row the first one's context goes to.
            let (m, out_row) = if first_only { (1, s) } else { (len, start) };
            // A score matrix per task, reused: allocated afresh, a long sequence's (tens of
            // KB) came from pages the allocator had returned, and zeroing them in the kernel
            // took ~5 % of a batch of 140-token texts. Nothing below re-enters rayon, so the
            // borrow cannot be taken twice on a thread.
            ATTENTION_SCORES.with_borrow_mut(|scores| {
                let scores = grow(scores, m * len);
                let q = qkv[start * 3 * h + head * d..].as_ptr();
                let k = qkv[start * 3 * h + h + head * d..].as_ptr();
                let v = qkv[start * 3 * h + 2 * h + head * d..].as_ptr();
                let rs = (3 * h) as isize;
                // SAFETY: every pointer and stride stays inside its buffer: `q` addresses rows
                // `start..start + m` (m ≤ len), `k` and `v` rows `start..start + len` (row stride 3h),
                // each `d` columns of `qkv`, which is `total × 3h`; `scores` is `m × len`.
                unsafe {
                    gemm::gemm(
                        m,
                        len,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        len as isize,
                        false,
                        q,
                        1,
                        rs,
                        k,
                        rs,
                        1,
                        0.0,
                        scale,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
                ops::softmax_rows(scores, len);
                let out = ctx_ptr.get().wrapping_add(out_row * h + head * d);
                // SAFETY: `out` addresses rows `out_row..out_row + m` and columns
                // `head·d..(head+1)·d` of `ctx` (`total × h`; `out_row + m` is at most `total`, and
                // at most `seqs.len()` with `first_only`); no other task writes those, since each
                // (sequence, head) pair is one task and sequences' rows do not overlap. `v` as above.
                unsafe {
                    gemm::gemm(
                        m,
                        d,
                        len,
                        out,
                        1,
                        h as isize,
                        false,
                        scores.as_ptr(),
                        1,
                        len as isize,
                        v,
                        1,
                        rs,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            });
        });
    }
}

thread_local! {
    /// The attention scores of the (sequence, head) pair a thread is working on.
    static ATTENTION_SCORES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The dense layers of a transformer layer, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dense {
    /// The fused query, key and value projection (input: the residual stream).
    Qkv,
    /// The attention output (input: the heads' contexts).
    AttnOut,
    /// The feed-forward layer's first half (input: the residual stream).
    FfnIn,
    /// Its second half (input: the activation's output).
    FfnOut,
}

/// Per layer and dense layer, the largest magnitude each input channel reached over a
/// calibration run: what picks the channels int8 leaves in `f32`.
///
/// Transformer activations are not spread evenly over their channels: a few channels of the
/// residual stream run one to two orders of magnitude larger than the rest in every token (in
/// all-MiniLM-L6-v2, channel 99 reaches ~28 where the next reaches ~6), and so do a few of the
/// feed-forward activation's. Quantized per token with one scale, those few set the scale and
/// leave the rest a handful of levels, which cost the int8 embeddings a cosine of 0.98 to
/// f32's; left out of the quantization and multiplied in `f32` (an eighth of the int8 work at
/// most), the cosine stays above 0.995. Which channels they are is a property of the trained
/// weights, not of the text, so a few sentences of calibration at load find them.
pub(crate) struct Calibration {
    /// `[layer][dense]` → per input channel, max |x|.
    max: Vec<[Vec<f32>; 4]>,
}

impl Calibration {
    /// Input channels of every `OUTLIER_SHARE` kept in `f32`: 8 of 384, 32 of 1536.
    const OUTLIER_SHARE: usize = 48;

    fn new(config: &ModelConfig) -> Self {
        let (h, i) = (config.hidden_size, config.intermediate_size);
        Calibration {
            max: (0..config.num_layers)
                .map(|_| [vec![0.0; h], vec![0.0; h], vec![0.0; h], vec![0.0; i]])
                .collect(),
        }
    }

    /// Records the rows of `x` (each `width` wide) as inputs of layer `l`'s dense layer `d`.
    fn observe(&mut self, l: usize, d: Dense, x: &[f32], width: usize) {
        let max = &mut self.max[l][d as usize];
        for row in x.chunks_exact(width) {
            max.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m = m.max(v.abs()));
        }
    }

    /// The input channels of layer `l`'s dense layer `d` to keep in `f32`: the
    /// `width / OUTLIER_SHARE` whose inputs ran largest.
    pub(crate) fn outliers(&self, l: usize, d: Dense) -> Vec<usize> {
        let Some(max) = self.max.get(l).map(|m| &m[d as usize]) else {
            return Vec::new();
        };
        let mut order: Vec<usize> = (0..max.len()).collect();
        order.sort_by(|&a, &b| max[b].total_cmp(&max[a]).then(a.cmp(&b)));
        order.truncate(max.len() / Self::OUTLIER_SHARE);
        order
    }
}

/// Which final hidden states a forward pass produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// Every token's: pooling reads them all.
    AllTokens,
    /// Each sequence's first token's alone: a classification head reads nothing else. The
    /// last layer then runs attention for those rows only and its dense layers on one row per
    /// sequence, which saves most of that layer's work (about an eighth of a 6-layer model's).
    FirstTokens,
}

/// Tokens run through the transformer in one pass at most; a larger batch is split. This bounds
/// the working memory of a call (about 12 KB per token for a 384-wide model, the feed-forward
/// layer's 1536-wide rows the most of it), and keeps a pass's activations within the cores' L2
/// caches from one layer to the next, so that the element-wise passes between the matrix
/// products do not stream them from L3. On a 2-core Xeon (2 MB of L2 per core) a batch of 32
/// texts of 140 tokens ran 1.3× faster in int8 and 1.15× in f32 at 1024 tokens per pass than at
/// 4096; a pass of a thousand tokens still keeps the matrix kernels at full speed.
const MAX_TOKENS_PER_PASS: usize = 1024;

/// A loaded transformer with what every model built on it needs to run it: its own thread pool
/// and forward-pass working memory reused across calls. The sentence encoder and the
/// cross-encoder each own one and put their head (pooling, classification) on its output.
pub(crate) struct Runner {
    bert: Bert,
    pool: ThreadPool,
    threads: usize,
    /// Forward-pass working memory, one per call in flight, reused across calls.
    scratch: Mutex<Vec<Scratch>>,
}

impl Runner {
    /// Starts a pool of `threads` threads (default: one per CPU) named `{name}-{i}` for `bert`.
    pub(crate) fn new(bert: Bert, threads: Option<usize>, name: &'static str) -> EmbedResult<Self> {
        let threads = threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{name}-{i}"))
            .build()
            .map_err(|e| EmbedError::ThreadPool(e.to_string()))?;
        Ok(Runner {
            bert,
            pool,
            threads,
            scratch: Mutex::new(Vec::new()),
        })
    }

    /// Runs the checked `batch` through the transformer, recording the largest magnitude each
    /// input channel of each dense layer reaches (see [`Calibration`]).
    pub(crate) fn calibrate(&self, batch: &[Encoded]) -> Calibration {
        let mut scratch = Scratch {
            calibration: Some(Calibration::new(&self.bert.config)),
            ..Scratch::default()
        };
        for chunk in batch.chunks(16) {
            let seqs: Vec<&Encoded> = chunk.iter().collect();
            self.pool.install(|| {
                self.bert
                    .forward(&seqs, Output::AllTokens, self.threads, &mut scratch);
            });
        }
        scratch
            .calibration
            .expect("a calibration pass keeps its record in its scratch")
    }

    /// The transformer.
    pub(crate) fn bert(&self) -> &Bert {
        &self.bert
    }

    /// The model's own thread pool.
    pub(crate) fn pool(&self) -> &ThreadPool {
        &self.pool
    }

    /// Threads of the model's own pool.
    pub(crate) fn threads(&self) -> usize {
        self.threads
    }

    /// Checks that every sequence of `batch` can run through the model: non-empty, at most
    /// `max_len` tokens, ids inside the vocabulary, token types (where given) one per token
    /// and inside the model's type vocabulary.
    pub(crate) fn check(&self, batch: &[Encoded], max_len: usize) -> EmbedResult<()> {
        let config = self.bert.config();
        let vocab = config.vocab_size;
        let types = config.type_vocab_size;
        for (i, e) in batch.iter().enumerate() {
            if e.is_empty() {
                return Err(EmbedError::InvalidInput(format!(
                    "input {i} has no tokens; tokenized text always has its special tokens"
                )));
            }
            if e.len() > max_len {
                return Err(EmbedError::InvalidInput(format!(
                    "input {i} has {} tokens, more than the model's limit of {max_len}",
                    e.len(),
                )));
            }
            if let Some(&id) = e.ids().iter().find(|&&id| id as usize >= vocab) {
                return Err(EmbedError::InvalidInput(format!(
                    "input {i} has token id {id}, outside the vocabulary of {vocab}"
                )));
            }
            if let Some(type_ids) = e.type_ids() {
                if type_ids.len() != e.len() {
                    return Err(EmbedError::InvalidInput(format!(
                        "input {i} has {} token types for {} tokens",
                        type_ids.len(),
                        e.len()
                    )));
                }
                if let Some(&t) = type_ids.iter().find(|&&t| t as usize >= types.max(1)) {
                    return Err(EmbedError::InvalidInput(format!(
                        "input {i} has token type {t}; the model has {types} token types"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Runs the checked `batch` through the transformer on `pool`, in passes of at most
    /// [`MAX_TOKENS_PER_PASS`] tokens, in order; after each pass, still inside `pool`, calls
    /// `head` with the pass's sequences, their final hidden states as `output` asks (see
    /// [`Bert::forward`]) and the pool's size, so that a head may spread its own work over the
    /// same threads.
    pub(crate) fn run(
        &self,
        pool: &ThreadPool,
        batch: &[Encoded],
        output: Output,
        mut head: impl FnMut(&[&Encoded], &[f32], usize) + Send,
    ) {
        let mut scratch = self
            .scratch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .unwrap_or_default();
        let threads = pool.current_num_threads();
        let mut rest = batch;
        while !rest.is_empty() {
            let mut tokens = 0;
            let take = rest
                .iter()
                .take_while(|e| {
                    tokens += e.len();
                    tokens <= MAX_TOKENS_PER_PASS
                })
                .count()
                .max(1);
            let (chunk, tail) = rest.split_at(take);
            rest = tail;
            let seqs: Vec<&Encoded> = chunk.iter().collect();
            pool.install(|| {
                let states = self.bert.forward(&seqs, output, threads, &mut scratch);
                head(&seqs, states, threads);
            });
        }
        self.scratch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(scratch);
    }
}

/// Working memory of a forward pass, kept between calls: allocating these buffers afresh each
/// time costs more than the element-wise work on them, since the allocator returns buffers this
/// large to the OS and the kernel must zero new pages.
#[derive(Default)]
pub(crate) struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    inter: Vec<f32>,
    /// The activations of a lower-precision layer, converted.
    staging: Staging,
    /// Where a calibration pass records the dense layers' inputs.
    calibration: Option<Calibration>,
}

/// The first `len` elements of `buf`, growing it if needed.
fn grow(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// Applies `f` to groups of whole rows of `data` in parallel.
fn par_rows(data: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    data.par_chunks_mut(width * ROWS_PER_TASK).for_each(f);
}

/// Applies `f` to matching groups of whole rows of `x` and `y` in parallel.
fn par_rows_with(
    x: &mut [f32],
    y: &[f32],
    width: usize,
    f: impl Fn(&mut [f32], &[f32]) + Sync + Send,
) {
    x.par_chunks_mut(width * ROWS_PER_TASK)
        .zip(y.par_chunks(width * ROWS_PER_TASK))
        .for_each(|(xr, yr)| f(xr, yr));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outliers_are_the_channels_that_ran_largest() {
        let mut c = Calibration {
            max: vec![[vec![0.0; 96], vec![0.0; 96], vec![0.0; 96], vec![0.0; 200]]],
        };
        let mut rows = vec![0.5f32; 2 * 96];
        rows[7] = -30.0;
        rows[96 + 50] = 9.0;
        rows[96 + 7] = 1.0;
        c.observe(0, Dense::Qkv, &rows, 96);
        // 96 / 48 = 2 channels, largest first; a sign does not matter.
        assert_eq!(c.outliers(0, Dense::Qkv), vec![7, 50]);
        // Nothing observed: ties broken by channel, so the choice is deterministic.
        assert_eq!(c.outliers(0, Dense::FfnOut), vec![0, 1, 2, 3]);
        assert!(c.outliers(3, Dense::Qkv).is_empty(), "no such layer");
    }
}
