//! `vicinity import`: loads a JSONL file or a folder of text files into a collection of a
//! running server, with a progress bar on a terminal and periodic log lines elsewhere.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use vicinity::import::{self, Counts, ImportOptions, MAX_BATCH, OnError, Problem, Progress};

/// How often the progress is logged when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// What to do with a bad line or a refused batch.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum OnErrorArg {
    /// Report it and go on.
    Skip,
    /// Report it and stop: nothing after it is sent.
    Stop,
}

/// Arguments of `vicinity import`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The server's base URL.
    #[arg(long, env = "VICINITY_URL", default_value = "http://127.0.0.1:8080")]
    url: String,

    /// The collection to import into.
    #[arg(long)]
    collection: String,

    /// Create the collection (default settings) if it does not exist.
    #[arg(long)]
    create: bool,

    /// Documents per request (at most 1000).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=MAX_BATCH as i64))]
    batch: u16,

    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// The server's API key, sent as a bearer token.
    #[arg(long, env = "VICINITY_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// A bad input line, or a batch the server refuses: skip it (and report it), or stop.
    #[arg(long, value_enum, default_value = "skip")]
    on_error: OnErrorArg,

    /// Per-request timeout, e.g. `5m`.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,

    /// A JSONL file (one {"id", "text", "vector", "metadata"} object per line), or a folder
    /// whose .txt and .md files are imported with their relative path as id. A line without an
    /// id gets one derived from its content (a SHA-256 digest of its text, vector and
    /// metadata), so that importing the file again never adds it twice.
    path: PathBuf,
}

/// Runs `vicinity import`: prints the summary, and fails when anything was not imported.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut options = ImportOptions::new(args.url, args.collection, args.path);
    options.create = args.create;
    options.batch = args.batch.into();
    options.concurrency = args.concurrency.into();
    options.api_key = args.api_key.filter(|k| !k.is_empty());
    options.on_error = match args.on_error {
        OnErrorArg::Skip => OnError::Skip,
        OnErrorArg::Stop => OnError::Stop,
    };
    options.timeout = args.timeout;

    let progress: Box<dyn Progress> = if std::io::stderr().is_terminal() {
        Box::new(Bar::new())
    } else {
        Box::new(LogLines::new())
    };
    let summary = import::import(&options, progress.as_ref())
        .with_context(|| format!("cannot import {}", options.path.display()))?;
    println!("{summary}");
    if summary.is_success() {
        Ok(())
    } else {
        let c = &summary.counts;
        anyhow::bail!(
            "{} documents failed, {} bad input records{}",
            c.failed,
            c.bad,
            if summary.stopped.is_some() {
                "; the import stopped early"
            } else {
                ""
            }
        )
    }
}

fn counts_message(c: &Counts) -> String {
    format!(
        "imported {}, present {}, failed {}, bad {}",
        c.imported, c.skipped, c.failed, c.bad
    )
}

/// The progress bar on a terminal: position = input records dealt with.
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} ({rate}, ETA {eta}) {msg}",
            )
            .expect("the template is valid")
            // indicatif's own `per_sec` prints four decimals.
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                },
            ),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        self.0.set_length(total);
        // Redraws while the first batch is on its way.
        self.0.enable_steady_tick(Duration::from_millis(200));
    }

    fn update(&self, counts: &Counts) {
        self.0.set_position(counts.done());
        self.0.set_message(counts_message(counts));
    }

    fn problem(&self, problem: &Problem) {
        self.0.println(format!("warning: {problem}"));
    }

    fn finish(&self, counts: &Counts) {
        self.update(counts);
        self.0.finish();
    }
}

/// Progress as log lines, for a log file or a pipe, where a bar would be noise.
struct LogLines {
    started: Instant,
    total: Mutex<(u64, Instant)>,
}

impl LogLines {
    fn new() -> LogLines {
        let now = Instant::now();
        LogLines {
            started: now,
            total: Mutex::new((0, now)),
        }
    }
}

impl Progress for LogLines {
    fn start(&self, total: u64) {
        self.total.lock().expect("progress lock").0 = total;
        tracing::info!(total, "import started");
    }

    fn update(&self, counts: &Counts) {
        let mut state = self.total.lock().expect("progress lock");
        if state.1.elapsed() < LOG_EVERY {
            return;
        }
        state.1 = Instant::now();
        let done = counts.done();
        let secs = self.started.elapsed().as_secs_f64();
        let rate = done as f64 / secs.max(1e-9);
        let eta = if rate > 0.0 {
            format!("{:.0}s", state.0.saturating_sub(done) as f64 / rate)
        } else {
            "?".to_owned()
        };
        tracing::info!(
            "import: {done}/{} ({rate:.1}/s, ETA {eta}) {}",
            state.0,
            counts_message(counts)
        );
    }

    fn problem(&self, problem: &Problem) {
        tracing::warn!("{problem}");
    }
}
