//! The `vicinity` command: parses the command line and dispatches to a subcommand.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vicinity::telemetry::LogFormat;

// The sentence encoder allocates and frees buffers of tens of megabytes per batch; glibc's
// allocator hands those back to the OS every time (up to ~40 % slower on long inputs), mimalloc
// keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Vector similarity search for retrieval-augmented generation.
#[derive(Debug, Parser)]
#[command(name = "vicinity", version, about, long_about = None)]
struct Cli {
    /// How log lines (on stderr, filtered by RUST_LOG) are written.
    #[arg(
        long,
        global = true,
        env = "VICINITY_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP service: collections, documents, queries, embeddings.
    Serve(Box<cli::serve::Args>),
    /// Embed texts with the sentence encoder: one JSON array per text, one per line.
    Embed(cli::embed::Args),
    /// Load a JSONL file or a folder of .txt/.md files into a collection of a running server.
    Import(cli::import::Args),
    /// Manage the sentence encoder's model.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Measure index and model performance.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Exit 0 if the server at VICINITY_ADDR answers 200 on /readyz (container health checks).
    Healthcheck(cli::healthcheck::Args),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Build an index over a dataset and sweep its search settings: recall, QPS, memory.
    Ann(cli::bench_ann::Args),
    /// Measure the sentence encoder: sentences per second and batch latency.
    Embed(cli::bench_embed::Args),
    /// Measure the cross-encoder reranker: pairs per second and request latency.
    Rerank(cli::bench_rerank::Args),
    /// Load a corpus and score queries with known answers per retrieval mode: MRR, nDCG,
    /// hit@1, recall and latency.
    Retrieval(Box<cli::bench_retrieval::Args>),
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Find the model, downloading it into the model cache if needed, and print its directory.
    Fetch(cli::model::FetchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vicinity::telemetry::init(cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => cli::serve::run(*args),
        Command::Embed(args) => cli::embed::run(args),
        Command::Import(args) => cli::import::run(args),
        Command::Model(ModelCommand::Fetch(args)) => cli::model::fetch(args),
        Command::Bench(BenchCommand::Ann(args)) => cli::bench_ann::run(args),
        Command::Bench(BenchCommand::Embed(args)) => cli::bench_embed::run(args),
        Command::Bench(BenchCommand::Rerank(args)) => cli::bench_rerank::run(args),
        Command::Bench(BenchCommand::Retrieval(args)) => cli::bench_retrieval::run(*args),
        Command::Healthcheck(args) => cli::healthcheck::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
