//! Subcommand implementations. Each file owns one subcommand; anyhow is used only here.

pub(crate) mod bench_ann;
pub(crate) mod bench_embed;
pub(crate) mod embed;
pub(crate) mod model;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), so that stdout stays clean for the
/// machine-readable output that several subcommands print.
pub(crate) fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
