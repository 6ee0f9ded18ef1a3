//! `vicinity bench ann`: build an index over a TEXMEX/npy dataset and sweep search settings.

/// Arguments of `vicinity bench ann`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Runs the benchmark.
pub(crate) fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("bench ann is not built yet")
}
