//! `vicinity serve`: the HTTP service.
//!
//! Start-up binds the listener first and serves `/healthz` at once (and `/readyz` with 503),
//! while the model loads on a thread of its own (fetching it into the data directory when
//! missing) and the database opens; then the service restores the collections and the server
//! turns ready. On SIGTERM or Ctrl-C it stops accepting connections, finishes the requests in
//! flight (up to `--shutdown-timeout`), snapshots the indexes, stops the embedding worker and
//! exits 0. A second signal exits at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use vicinity::api::{self, AppState};
use vicinity::config::{ServeConfig, Settings};
use vicinity::embed::{Embedder, EmbeddingWorker};
use vicinity::service::Service;
use vicinity::shutdown;
use vicinity::store::Store;

use super::model::{ModelArgs, WorkerArgs};

/// How long the database may take to close (checkpointing its log) at exit.
const STORE_CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Arguments of `vicinity serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    model: ModelArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Threads the encoder runs the model on. Default: one per CPU.
    #[arg(long, env = "VICINITY_EMBED_THREADS")]
    threads: Option<usize>,

    #[command(flatten)]
    config: ServeConfig,
}

/// Runs the server until it is asked to stop.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut settings = args.config.validate(&args.model.data_dir)?;
    if settings.service.cluster.node_id.is_empty() {
        settings.service.cluster.node_id = kept_node_id(&args.model.data_dir)?;
    }
    settings.store.node_id = settings.service.cluster.node_id.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("vicinity-http")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args.model, args.worker, args.threads, settings));
    // A start-up cut short by a signal may leave blocking work behind: do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// The node id kept in the data directory, made (from the host name and a random suffix) at
/// the first start: a node keeps its id across restarts, so that the registry shows it as the
/// same node.
fn kept_node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(id) => {
            let id = id.trim().to_owned();
            anyhow::ensure!(
                vicinity::config::valid_node_id(&id),
                "{} holds '{id}', which is not a node id; fix or remove it",
                path.display()
            );
            return Ok(id);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
    let host: String = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(40)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let id = if host.is_empty() {
        format!("node-{suffix}")
    } else {
        format!("{host}-{suffix}")
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    // Written whole, then renamed: a crash cannot leave half an id.
    let tmp = data_dir.join("node-id.tmp");
    std::fs::write(&tmp, format!("{id}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

async fn serve(
    model: ModelArgs,
    worker: WorkerArgs,
    threads: Option<usize>,
    settings: Settings,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let listener = TcpListener::bind(&settings.addr)
        .await
        .with_context(|| format!("cannot listen on {}", settings.addr))?;
    let addr = listener
        .local_addr()
        .context("cannot read the listening address")?;
    let mut settings = settings;
    if settings.service.cluster.address.is_empty() {
        settings.service.cluster.address = addr.to_string();
    }
    tracing::info!(
        %addr,
        node = %settings.service.cluster.node_id,
        "listening; loading the model and the collections"
    );
    let keys = &settings.api.api_keys;
    if keys.enabled() {
        tracing::info!(
            read_write_keys = keys.read_write_count(),
            read_only_keys = keys.read_only_count(),
            "API keys required on every route but /healthz and /readyz"
        );
    } else if addr.ip().is_loopback() {
        tracing::info!("no API key configured: every route is open to processes on this machine");
    } else {
        // Reachable from other machines with no key: anyone on the network can read, write and
        // delete. An empty VICINITY_API_KEY also lands here (it is refused at start), so say it
        // loudly.
        tracing::warn!(
            %addr,
            "no API key configured and listening beyond loopback: every route is open to \
             anyone who can reach this address; set VICINITY_API_KEY, or listen on 127.0.0.1"
        );
    }

    let state = AppState::starting(settings.api.clone());
    // Stops the server when start-up fails.
    let (abort_tx, abort_rx) = oneshot::channel::<()>();
    let stop = async move {
        tokio::select! {
            () = shutdown::signal() => {
                tokio::spawn(async {
                    shutdown::signal().await;
                    tracing::warn!("second signal: exiting at once");
                    std::process::exit(130);
                });
            }
            _ = abort_rx => {}
        }
    };
    let mut server = tokio::spawn(api::serve(
        listener,
        state.clone(),
        stop,
        settings.shutdown_timeout,
    ));

    let startup = start(model, worker, threads, &settings);
    tokio::pin!(startup);
    let outcome = tokio::select! {
        outcome = &mut startup => outcome,
        served = &mut server => {
            served
                .context("the HTTP server task failed")?
                .context("the HTTP server failed")?;
            tracing::info!("stopped during start-up");
            return Ok(());
        }
    };
    let (service, worker, store) = match outcome {
        Ok(parts) => parts,
        Err(e) => {
            let _ = abort_tx.send(());
            let _ = server.await;
            return Err(e);
        }
    };
    state.set_ready(service.clone());
    tracing::info!(
        %addr,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "ready"
    );

    let served = server.await.context("the HTTP server task failed")?;
    // No request reaches the service any more: snapshot the indexes and let go of it.
    service.shutdown().await;
    drop(state);
    drop(service);
    if tokio::time::timeout(STORE_CLOSE_TIMEOUT, store.close())
        .await
        .is_err()
    {
        tracing::warn!("the database did not close in time");
    }
    // The worker joins its threads when dropped: not on an async worker thread.
    tokio::task::spawn_blocking(move || drop(worker))
        .await
        .context("stopping the embedding worker")?;
    served.context("the HTTP server failed")?;
    tracing::info!("stopped");
    Ok(())
}

/// Loads the model (on its own thread) while the database opens, then opens the service,
/// which restores the collections.
async fn start(
    model: ModelArgs,
    worker: WorkerArgs,
    threads: Option<usize>,
    settings: &Settings,
) -> anyhow::Result<(Arc<Service>, Arc<EmbeddingWorker>, Store)> {
    let (loaded_tx, loaded_rx) = oneshot::channel();
    // A thread rather than a blocking task: a shutdown during a long download must not wait
    // for it.
    std::thread::Builder::new()
        .name("model-load".into())
        .spawn(move || {
            let loaded = model
                .load(threads)
                .and_then(|encoder| worker.start(encoder))
                .and_then(|w| Ok((w, model.load_reranker(threads)?)));
            let _ = loaded_tx.send(loaded);
        })
        .context("cannot start the model loading thread")?;
    let store = Store::open(&settings.database_url, &settings.store)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                vicinity::store::redact_url(&settings.database_url)
            )
        })?;
    store.claim().await.context("cannot use the database")?;
    let (worker, reranker) = loaded_rx.await.context("the model loading thread died")??;
    let worker = Arc::new(worker);
    let reranker = reranker.map(|r| Arc::new(r) as Arc<dyn vicinity::embed::Reranker>);
    let max_tokens = worker.max_input_tokens();
    anyhow::ensure!(
        settings.service.default_overlap < max_tokens,
        "--chunk-overlap {} must be below the model's input length of {max_tokens} tokens",
        settings.service.default_overlap
    );
    let embedder: Arc<dyn Embedder> = worker.clone();
    let service =
        Service::open_with_reranker(settings.service.clone(), store.clone(), embedder, reranker)
            .await
            .context("cannot restore the collections")?;
    Ok((service, worker, store))
}
