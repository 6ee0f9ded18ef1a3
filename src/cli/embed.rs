//! `vicinity embed`: embeds texts through the embedding worker and prints one JSON array per
//! text, one per line, in input order.

use std::collections::VecDeque;
use std::io::{BufRead, BufWriter, Write};

use anyhow::Context;
use vicinity::embed::{EmbeddingWorker, PendingEmbeddings};

use super::model::{ModelArgs, WorkerArgs};

/// Texts per request when reading standard input.
const STDIN_REQUEST: usize = 64;
/// Requests in flight when reading standard input: enough for the worker to batch them,
/// few enough to stay far below its queue capacity.
const STDIN_IN_FLIGHT: usize = 8;

/// Arguments of `vicinity embed`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Threads the encoder runs the model on. Default: one per CPU.
    #[arg(long, env = "VICINITY_EMBED_THREADS")]
    threads: Option<usize>,

    /// Read the texts from standard input, one per line, instead of the arguments.
    #[arg(long, conflicts_with = "texts")]
    stdin: bool,

    /// The texts to embed.
    #[arg(required_unless_present = "stdin")]
    texts: Vec<String>,
}

/// Runs `vicinity embed`. Each vector is printed with every float's shortest representation
/// that reads back as the same `f32`.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let encoder = args.model.load(args.threads)?;
    let worker = args.worker.start(encoder)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .context("cannot start the async runtime")?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = runtime.block_on(async {
        if args.stdin {
            embed_lines(&worker, std::io::stdin().lock(), &mut out).await
        } else {
            let vectors = worker.submit(args.texts)?.await?;
            print_vectors(&mut out, &vectors)
        }
    });
    match result.and_then(|()| out.flush().map_err(anyhow::Error::from)) {
        // The reader went away (`| head`): not an error of ours.
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

/// Embeds `input` line by line, a few requests in flight at a time, printing in input order.
async fn embed_lines(
    worker: &EmbeddingWorker,
    input: impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut in_flight: VecDeque<PendingEmbeddings> = VecDeque::new();
    let mut chunk = Vec::with_capacity(STDIN_REQUEST);
    for (i, line) in input.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read line {} of stdin", i + 1))?;
        chunk.push(line.strip_suffix('\r').map(str::to_owned).unwrap_or(line));
        if chunk.len() == STDIN_REQUEST {
            if in_flight.len() == STDIN_IN_FLIGHT {
                let oldest = in_flight.pop_front().expect("in_flight is full");
                print_vectors(out, &oldest.await?)?;
            }
            in_flight.push_back(worker.submit(std::mem::take(&mut chunk))?);
        }
    }
    in_flight.push_back(worker.submit(chunk)?);
    for pending in in_flight {
        print_vectors(out, &pending.await?)?;
    }
    Ok(())
}

fn print_vectors(out: &mut impl Write, vectors: &[Vec<f32>]) -> anyhow::Result<()> {
    for v in vectors {
        serde_json::to_writer(&mut *out, v)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<serde_json::Error>()
                .and_then(serde_json::Error::io_error_kind)
                == Some(std::io::ErrorKind::BrokenPipe)
    })
}
