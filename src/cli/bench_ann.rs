//! `vicinity bench ann`: build an index over a TEXMEX/npy dataset and sweep its search
//! settings, reporting recall against the dataset's ground truth, throughput, latency, build
//! time and memory.
//!
//! Base vectors get the ids `0, 1, 2, …` in file order, which is what TEXMEX ground-truth files
//! refer to. Every query is a separate [`VectorIndex::search`] call, as a service issues them:
//! with `--threads 1` one after another on one thread; with `--threads N` from N threads at once,
//! each taking the next query as it finishes the last. An index may still use several cores
//! inside one call (the flat index splits a large scan across rayon's threads), as it would in
//! the service. The index is built once per invocation, in parallel on rayon's global pool (all
//! cores unless `RAYON_NUM_THREADS` says otherwise), so `build_s` is wall time on that many cores;
//! then every search setting is measured against the same index. Results go to stdout (a table,
//! or one JSON object per line with `--json`); logs go to stderr.
//!
//! # Quantization
//! `--quantization int8` builds an HNSW index whose walk scores one-byte codes and rescores the
//! best `k·oversampling` candidates on the full-precision vectors; `--oversampling` sweeps that
//! factor next to `--ef`. Memory is reported whole (`memory_bytes`) and split into the part a
//! search walks (`search_memory_bytes`) and the part held only for rescoring
//! (`rescoring_bytes`, the `f32` vectors of a quantized index).
//!
//! # Filtered search
//! With `--filter-selectivity P` every base vector gets a label that a query's filter accepts
//! with probability `P`, drawn from `--seed` and the vector's id alone (a SplitMix64 stream, so
//! reruns with the same seed accept the same vectors), and every query runs with that filter.
//! The dataset's ground truth knows nothing of the labels, so recall is measured against the
//! exact filtered answer instead, which the benchmark computes before building the index: a
//! [`FlatIndex`] (the recall oracle of the approximate indexes) over the accepted base vectors,
//! searched a batch of queries at a time. `filter_accepted` reports the fraction accepted.
//! Several selectivities share one build; with `--groundtruth` as well, the sweep runs without
//! a filter first, so that one build (minutes at a million vectors) answers all three
//! questions: unfiltered, and at each selectivity.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::Serialize;
use vicinity::dataset::{self, Matrix};
use vicinity::distance::Metric;
use vicinity::index::flat::FlatIndex;
use vicinity::index::hnsw::{
    DEFAULT_OVERSAMPLING, Engine, HnswBuilder, MAX_OVERSAMPLING, Quantization,
};
use vicinity::index::ivf::{self, IvfBuilder};
use vicinity::index::{Filter, Hit, IndexKind, IndexMut, SearchParams, VectorIndex};

/// Arguments of `vicinity bench ann`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Base vectors (.fvecs, .bvecs or .npy), indexed under ids 0, 1, 2, … in file order.
    #[arg(long)]
    base: PathBuf,
    /// Query vectors (.fvecs, .bvecs or .npy).
    #[arg(long)]
    query: PathBuf,
    /// Ground truth (.ivecs or .npy): for each query, the ids of its nearest base vectors, best
    /// first; recall@k of the unfiltered queries is measured against the first k. Required
    /// unless --filter-selectivity is given, whose recall is measured against the exact
    /// filtered answer instead; given with it, the sweep also runs unfiltered, first.
    #[arg(long, required_unless_present = "filter_selectivity")]
    groundtruth: Option<PathBuf>,
    /// Index structure: flat, ivf or hnsw.
    #[arg(long, default_value = "flat")]
    index: IndexKind,
    /// Similarity: cosine, dot or l2. Cosine by default, as for sentence embeddings; on
    /// unit-length data (the shared benchmark set, most encoders' output) it ranks exactly as
    /// the inner product that such ground truth is computed with.
    #[arg(long, default_value = "cosine")]
    metric: Metric,
    /// HNSW: links per node.
    #[arg(long, default_value_t = 16)]
    m: usize,
    /// HNSW: candidate list size while building.
    #[arg(long, default_value_t = 200)]
    ef_construction: usize,
    /// HNSW: graph builder, `native` (ours) or `hnsw-rs` (the hnsw_rs crate, frozen into the
    /// same layout, so searches run the same code either way).
    #[arg(long, default_value = "native")]
    engine: Engine,
    /// HNSW: how the graph walk sees the vectors, `none` (full-precision f32) or `int8` (one
    /// byte per component, the best k·oversampling candidates rescored at full precision).
    /// Other index kinds refuse int8.
    #[arg(long, default_value = "none")]
    quantization: Quantization,
    /// IVF: number of inverted lists (default: the index's own choice, about 4·√N).
    #[arg(long)]
    nlist: Option<usize>,
    /// HNSW: search candidate list sizes to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,48,64,128")]
    ef: Vec<usize>,
    /// HNSW: candidates rescored at full precision, as a multiple of k, to sweep, comma-separated;
    /// every value is tried at every --ef. At least 1. Default: the index's own (2 for int8). It
    /// changes nothing without --quantization int8; other index kinds refuse it.
    #[arg(long, value_delimiter = ',')]
    oversampling: Vec<f64>,
    /// IVF: numbers of lists probed per query to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,32,64")]
    nprobe: Vec<usize>,
    /// Neighbours per query.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Threads issuing queries concurrently, each one query per call (1: one at a time).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Times each setting is measured; the median QPS is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seed for index builds that sample or randomise, and for the labels of
    /// --filter-selectivity.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run every query with a filter that accepts each base vector with this probability
    /// (0 < P ≤ 1), drawn once per vector from --seed and its id. Recall is then measured
    /// against the exact filtered answer, which the benchmark computes itself by a scan over the
    /// accepted vectors. Comma-separated to sweep several on one build. Default: no filter.
    #[arg(long, value_delimiter = ',')]
    filter_selectivity: Vec<f64>,
    /// Use only the first N queries.
    #[arg(long)]
    max_queries: Option<usize>,
    /// Print one JSON object per line and setting instead of a table.
    #[arg(long)]
    json: bool,
}

/// What an index is built with: the structure, its metric and its build parameters.
#[derive(Clone, Debug)]
struct BuildSpec {
    kind: IndexKind,
    metric: Metric,
    dim: usize,
    m: usize,
    ef_construction: usize,
    engine: Engine,
    quantization: Quantization,
    /// Resolved: the index's default for the base size when not given.
    nlist: usize,
    seed: u64,
}

impl BuildSpec {
    /// The build parameters that apply to this kind, for the report.
    fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut p = serde_json::Map::new();
        match self.kind {
            IndexKind::Flat => {}
            IndexKind::Ivf => {
                p.insert("nlist".into(), self.nlist.into());
                p.insert("seed".into(), self.seed.into());
            }
            IndexKind::Hnsw => {
                p.insert("m".into(), self.m.into());
                p.insert("ef_construction".into(), self.ef_construction.into());
                p.insert("engine".into(), serde_json::json!(self.engine));
                p.insert("quantization".into(), self.quantization.as_str().into());
                p.insert("seed".into(), self.seed.into());
            }
        }
        p
    }
}

/// Builds the index over `base`, whose rows get the ids 0, 1, 2, … This is the one place that
/// knows every index type the benchmark can run. Each is given all the data in one call, so
/// the approximate indexes are built (IVF trained) over the whole base, not grown batch by batch.
fn build_index(spec: &BuildSpec, base: &Matrix<f32>) -> anyhow::Result<Box<dyn VectorIndex>> {
    let ids: Vec<u64> = (0..base.rows as u64).collect();
    Ok(match spec.kind {
        IndexKind::Flat => {
            let mut flat =
                FlatIndex::new(spec.metric, spec.dim).context("creating the flat index")?;
            flat.add(&ids, &base.data)
                .context("adding the base vectors")?;
            Box::new(flat)
        }
        IndexKind::Ivf => Box::new(
            IvfBuilder::new(spec.metric, spec.dim)
                .nlist(spec.nlist)
                .seed(spec.seed)
                .build_with(&ids, &base.data)
                .context("building the IVF index")?,
        ),
        IndexKind::Hnsw => Box::new(
            HnswBuilder::new()
                .m(spec.m)
                .ef_construction(spec.ef_construction)
                .engine(spec.engine)
                .quantization(spec.quantization)
                .seed(spec.seed)
                .build_with(spec.metric, spec.dim, &ids, &base.data)
                .context("building the HNSW index")?,
        ),
    })
}

/// The search settings to sweep for this kind: a label map for the report and the params.
/// HNSW sweeps every `ef` at every oversampling factor; the factor is reported when it was
/// given or when the index is quantized (and so uses its default).
fn sweep(args: &Args) -> Vec<(serde_json::Map<String, serde_json::Value>, SearchParams)> {
    let mut settings = Vec::new();
    let mut add = |labels: &[(&str, serde_json::Value)], params: SearchParams| {
        let map = labels
            .iter()
            .map(|(key, v)| ((*key).to_owned(), v.clone()))
            .collect();
        settings.push((map, params));
    };
    match args.index {
        IndexKind::Flat => add(&[], SearchParams::default()),
        IndexKind::Hnsw => {
            let given: Vec<Option<f64>> = if args.oversampling.is_empty() {
                vec![None]
            } else {
                args.oversampling.iter().copied().map(Some).collect()
            };
            for &ef in &args.ef {
                for &oversampling in &given {
                    let params = SearchParams {
                        ef: Some(ef),
                        nprobe: None,
                        oversampling: oversampling.map(|o| o as f32),
                    };
                    let reported = match (oversampling, args.quantization) {
                        (Some(o), _) => Some(o),
                        (None, Quantization::Int8) => Some(f64::from(DEFAULT_OVERSAMPLING)),
                        (None, Quantization::None) => None,
                    };
                    match reported {
                        Some(o) => add(&[("ef", ef.into()), ("oversampling", o.into())], params),
                        None => add(&[("ef", ef.into())], params),
                    }
                }
            }
        }
        IndexKind::Ivf => {
            for &nprobe in &args.nprobe {
                let params = SearchParams {
                    ef: None,
                    nprobe: Some(nprobe),
                    oversampling: None,
                };
                add(&[("nprobe", nprobe.into())], params);
            }
        }
    }
    settings
}

/// The labels of `--filter-selectivity`: which base vectors the queries' filter accepts, one
/// bit per base id. A bitset rather than the hash itself so that the filter, called for every
/// vector a search looks at, costs one load.
#[derive(Debug)]
struct Labels {
    bits: Vec<u64>,
    accepted: usize,
    rows: usize,
}

impl Labels {
    /// Accepts each of the ids `0..rows` with probability `p`: id `i` is accepted when the
    /// `i`-th output of a SplitMix64 stream seeded from `seed` falls below `p·2⁶⁴`, so the
    /// labels depend on the seed and the id alone.
    fn new(rows: usize, p: f64, seed: u64) -> Self {
        // The largest output is 2⁶⁴ − 1, so p = 1 accepts every id.
        let threshold = (p * 2f64.powi(64)) as u128;
        let start = splitmix64(seed ^ LABEL_STREAM);
        Labels::from_fn(rows, |id| {
            let h = splitmix64(start.wrapping_add(id.wrapping_mul(SPLITMIX_GAMMA)));
            u128::from(h) < threshold
        })
    }

    /// Accepts the ids in `0..rows` that `accept` accepts.
    fn from_fn(rows: usize, accept: impl Fn(u64) -> bool) -> Self {
        let mut bits = vec![0u64; rows.div_ceil(64)];
        let mut accepted = 0;
        for id in 0..rows as u64 {
            if accept(id) {
                bits[(id / 64) as usize] |= 1 << (id % 64);
                accepted += 1;
            }
        }
        Labels {
            bits,
            accepted,
            rows,
        }
    }

    /// Whether the filter accepts `id`; ids beyond the base are rejected.
    #[inline]
    fn accepts(&self, id: u64) -> bool {
        self.bits
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    /// The accepted ids, ascending.
    fn accepted_ids(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.rows as u64).filter(|&id| self.accepts(id))
    }

    /// The fraction of the base accepted.
    fn fraction(&self) -> f64 {
        self.accepted as f64 / self.rows.max(1) as f64
    }
}

/// SplitMix64's increment (2⁶⁴/φ).
const SPLITMIX_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// Mixed into `--seed` for the label stream, so that it shares nothing with index builds that
/// might draw from a SplitMix64 stream of the same seed.
const LABEL_STREAM: u64 = 0x6c61_6265_6c73_0001;

/// SplitMix64's output function: a bijection of `u64` whose outputs on consecutive multiples of
/// [`SPLITMIX_GAMMA`] pass as independent uniform draws.
fn splitmix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Base rows copied into the oracle per call, to bound the transient copy.
const TRUTH_CHUNK_ROWS: usize = 16_384;

/// The exact `k` nearest accepted base vectors of each query under `metric`, best first, ties
/// by ascending id: a flat index over the accepted rows (in chunks, so the only large copy is
/// the index's own), searched as one batch, which scans the rows once per group of queries on
/// all of rayon's threads. Needs at least `k` accepted vectors.
fn filtered_truth(
    metric: Metric,
    base: &Matrix<f32>,
    queries: &Matrix<f32>,
    k: usize,
    labels: &Labels,
) -> anyhow::Result<Matrix<u64>> {
    let mut oracle = FlatIndex::new(metric, base.cols).context("creating the exact index")?;
    oracle.reserve(labels.accepted);
    let ids: Vec<u64> = labels.accepted_ids().collect();
    let mut rows = Vec::with_capacity(TRUTH_CHUNK_ROWS.min(ids.len()) * base.cols);
    for chunk in ids.chunks(TRUTH_CHUNK_ROWS) {
        rows.clear();
        chunk
            .iter()
            .for_each(|&id| rows.extend_from_slice(base.row(id as usize)));
        oracle
            .add(chunk, &rows)
            .context("adding the accepted base vectors to the exact index")?;
    }
    let hits = oracle
        .search_batch(&queries.data, k, &SearchParams::default(), None)
        .context("computing the exact filtered neighbours")?;
    let mut data = Vec::with_capacity(queries.rows * k);
    for (q, found) in hits.iter().enumerate() {
        ensure!(
            found.len() == k,
            "the exact search found {} of {k} neighbours for query {q}",
            found.len()
        );
        data.extend(found.iter().map(|h| h.id));
    }
    Ok(Matrix {
        rows: queries.rows,
        cols: k,
        data,
    })
}

/// One line of the report.
#[derive(Debug, Serialize)]
struct Record {
    index: IndexKind,
    metric: Metric,
    params: serde_json::Map<String, serde_json::Value>,
    k: usize,
    build_s: f64,
    memory_bytes: usize,
    /// The part of `memory_bytes` a search walks: all of it but `rescoring_bytes`.
    search_memory_bytes: usize,
    /// The part of `memory_bytes` held only to rescore candidates (a quantized index's `f32`
    /// vectors).
    rescoring_bytes: usize,
    /// With a filter: the fraction of the base vectors it accepts.
    #[serde(skip_serializing_if = "Option::is_none")]
    filter_accepted: Option<f64>,
    /// `recall_at_{k}`.
    #[serde(flatten)]
    recall: std::collections::BTreeMap<String, f64>,
    qps: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    threads: usize,
    runs: usize,
    queries: usize,
}

/// One timed pass over the queries.
struct Pass {
    hits: Vec<Vec<Hit>>,
    wall: Duration,
    latencies: Vec<Duration>,
}

/// Runs every query once, from `threads` threads, each query its own `search` call.
fn run_pass(
    index: &dyn VectorIndex,
    queries: &Matrix<f32>,
    k: usize,
    params: &SearchParams,
    filter: Option<Filter<'_>>,
    threads: usize,
) -> anyhow::Result<Pass> {
    let n = queries.rows;
    let next = AtomicUsize::new(0);
    let worker = || -> anyhow::Result<Vec<(usize, Vec<Hit>, Duration)>> {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return Ok(out);
            }
            let t = Instant::now();
            let hits = index
                .search(queries.row(i), k, params, filter)
                .with_context(|| format!("searching query {i}"))?;
            out.push((i, hits, t.elapsed()));
        }
    };
    let start = Instant::now();
    let parts: Vec<_> = if threads <= 1 {
        vec![worker()?]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    std::thread::Builder::new()
                        .name(format!("bench-query-{t}"))
                        .spawn_scoped(s, worker)
                        .context("starting a query thread")
                })
                .collect::<anyhow::Result<_>>()?;
            handles
                .into_iter()
                .map(|h| h.join().expect("a query thread panicked. This is a bug."))
                .collect::<anyhow::Result<Vec<_>>>()
        })?
    };
    let wall = start.elapsed();
    let mut hits = vec![Vec::new(); n];
    let mut latencies = Vec::with_capacity(n);
    for (i, h, l) in parts.into_iter().flatten() {
        hits[i] = h;
        latencies.push(l);
    }
    Ok(Pass {
        hits,
        wall,
        latencies,
    })
}

/// Mean over queries of the share of the first `k` ground-truth ids that were found.
fn recall_at(k: usize, hits: &[Vec<Hit>], truth: &Matrix<u64>) -> f64 {
    if hits.is_empty() {
        return 0.0;
    }
    let total: usize = hits
        .iter()
        .enumerate()
        .map(|(q, found)| {
            let want = &truth.row(q)[..k];
            found
                .iter()
                .take(k)
                .filter(|h| want.contains(&h.id))
                .count()
        })
        .sum();
    total as f64 / (hits.len() * k) as f64
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The `p`-quantile (nearest rank) of sorted durations, in milliseconds.
fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// What the benchmark reads from disk.
struct Dataset {
    base: Matrix<f32>,
    queries: Matrix<f32>,
    /// `None` when only filtered queries run: their recall is measured against the exact
    /// filtered answer.
    truth: Option<Matrix<u64>>,
}

/// Reads the base vectors, the queries and, unless a filter replaces it, the ground truth.
fn load(args: &Args) -> anyhow::Result<Dataset> {
    let base = dataset::read_vectors(&args.base).context("reading the base vectors")?;
    let mut queries = dataset::read_vectors(&args.query).context("reading the queries")?;
    if let Some(n) = args.max_queries {
        queries.truncate(n);
    }
    ensure!(base.rows > 0, "{} holds no vectors", args.base.display());
    ensure!(
        queries.rows > 0,
        "{} holds no queries",
        args.query.display()
    );
    ensure!(
        base.cols == queries.cols,
        "base vectors have dimension {} but queries have {}",
        base.cols,
        queries.cols
    );
    let truth = match &args.groundtruth {
        Some(path) => {
            let truth = dataset::read_ids(path).context("reading the ground truth")?;
            ensure!(
                truth.rows >= queries.rows,
                "the ground truth has {} rows for {} queries",
                truth.rows,
                queries.rows
            );
            ensure!(
                truth.cols >= args.k,
                "the ground truth lists {} neighbours per query, fewer than k = {}",
                truth.cols,
                args.k
            );
            Some(truth)
        }
        None if args.filter_selectivity.is_empty() => {
            anyhow::bail!("--groundtruth is required without --filter-selectivity")
        }
        None => None,
    };
    Ok(Dataset {
        base,
        queries,
        truth,
    })
}

/// Checks the flags that do not depend on the data, before anything is read.
fn validate(args: &Args) -> anyhow::Result<()> {
    ensure!(args.k >= 1, "--k must be at least 1");
    ensure!(args.threads >= 1, "--threads must be at least 1");
    ensure!(args.runs >= 1, "--runs must be at least 1");
    ensure!(
        args.quantization == Quantization::None || args.index == IndexKind::Hnsw,
        "--quantization {} applies to the HNSW index only, not {}",
        args.quantization,
        args.index
    );
    ensure!(
        args.oversampling.is_empty() || args.index == IndexKind::Hnsw,
        "--oversampling applies to the HNSW index only, not {}",
        args.index
    );
    for &o in &args.oversampling {
        ensure!(
            (1.0..=f64::from(MAX_OVERSAMPLING)).contains(&o),
            "--oversampling must be between 1 and {MAX_OVERSAMPLING}, got {o}"
        );
    }
    for &p in &args.filter_selectivity {
        ensure!(
            p > 0.0 && p <= 1.0,
            "--filter-selectivity must be in (0, 1], got {p}"
        );
    }
    Ok(())
}

/// Runs the benchmark, printing each setting's result as it completes.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    // Refuse bad flags before the table's header goes out.
    validate(&args)?;
    if !args.json {
        println!(
            "{:<6} {:<40} {:>8} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7}",
            "index",
            "params",
            "build s",
            "memory MB",
            "search MB",
            format!("recall@{}", args.k),
            "QPS",
            "p50 ms",
            "p99 ms",
            "threads"
        );
    }
    bench(&args, |r| print_record(r, args.json))
}

/// Builds the index and measures every setting of the sweep, handing each result to `emit`.
fn bench(args: &Args, mut emit: impl FnMut(&Record) -> anyhow::Result<()>) -> anyhow::Result<()> {
    validate(args)?;
    if !args.oversampling.is_empty() && args.quantization == Quantization::None {
        tracing::warn!("--oversampling changes nothing without --quantization int8");
    }
    let Dataset {
        base,
        queries,
        truth,
    } = load(args)?;
    tracing::info!(
        base = base.rows,
        queries = queries.rows,
        dim = base.cols,
        "dataset loaded"
    );
    let mut cases: Vec<Case> = truth
        .map(|truth| Case {
            filter: None,
            truth,
        })
        .into_iter()
        .collect();
    for &p in &args.filter_selectivity {
        let labels = Labels::new(base.rows, p, args.seed);
        ensure!(
            labels.accepted >= args.k,
            "the filter of selectivity {p} accepts {} base vectors, fewer than k = {}",
            labels.accepted,
            args.k
        );
        // Computed before the index is built, so that the oracle's copy of the accepted
        // vectors is gone by the time the index holds its own.
        let started = Instant::now();
        let truth = filtered_truth(args.metric, &base, &queries, args.k, &labels)?;
        tracing::info!(
            selectivity = p,
            accepted = labels.accepted,
            seconds = started.elapsed().as_secs_f64(),
            "exact filtered neighbours computed"
        );
        cases.push(Case {
            filter: Some((p, labels)),
            truth,
        });
    }
    let spec = BuildSpec {
        kind: args.index,
        metric: args.metric,
        dim: base.cols,
        m: args.m,
        ef_construction: args.ef_construction,
        engine: args.engine,
        quantization: args.quantization,
        // The index clamps a larger nlist to the number of vectors; report what it uses.
        nlist: args
            .nlist
            .unwrap_or_else(|| ivf::default_nlist(base.rows))
            .min(base.rows),
        seed: args.seed,
    };

    let started = Instant::now();
    let index = build_index(&spec, &base)?;
    drop(base);
    let build_s = started.elapsed().as_secs_f64();
    let memory_bytes = index.memory_bytes();
    let rescoring_bytes = index.rescoring_bytes();
    tracing::info!(
        index = %spec.kind,
        build_s,
        memory_mb = memory_bytes as f64 / 1e6,
        rescoring_mb = rescoring_bytes as f64 / 1e6,
        "index built"
    );

    let settings = sweep(args);
    for case in &cases {
        for (search_params, params) in &settings {
            let record = measure(
                args,
                &*index,
                &queries,
                params,
                case,
                Report {
                    spec: &spec,
                    search_params,
                    build_s,
                    memory_bytes,
                    rescoring_bytes,
                },
            )?;
            emit(&record)?;
        }
    }
    Ok(())
}

/// One way the queries run: unfiltered against the dataset's ground truth, or with the filter
/// of one selectivity (and its labels) against the exact filtered answer.
struct Case {
    filter: Option<(f64, Labels)>,
    truth: Matrix<u64>,
}

/// What a record states beside its measurements and its case.
struct Report<'a> {
    spec: &'a BuildSpec,
    search_params: &'a serde_json::Map<String, serde_json::Value>,
    build_s: f64,
    memory_bytes: usize,
    rescoring_bytes: usize,
}

/// Measures one search setting in one case: a warm-up, then `args.runs` timed passes over the
/// queries.
fn measure(
    args: &Args,
    index: &dyn VectorIndex,
    queries: &Matrix<f32>,
    params: &SearchParams,
    case: &Case,
    report: Report<'_>,
) -> anyhow::Result<Record> {
    let labels = case.filter.as_ref().map(|(_, labels)| labels);
    let accepts = |id: u64| labels.is_some_and(|l| l.accepts(id));
    let filter: Option<Filter<'_>> = labels.is_some().then_some(&accepts);
    // One untimed pass over a few queries brings code and data into cache.
    let warm = Matrix {
        rows: queries.rows.min(50),
        cols: queries.cols,
        data: queries.data[..queries.rows.min(50) * queries.cols].to_vec(),
    };
    run_pass(index, &warm, args.k, params, filter, args.threads)?;

    let mut qps = Vec::with_capacity(args.runs);
    let mut latencies = Vec::with_capacity(args.runs * queries.rows);
    let mut recall = None;
    for _ in 0..args.runs {
        let pass = run_pass(index, queries, args.k, params, filter, args.threads)?;
        qps.push(queries.rows as f64 / pass.wall.as_secs_f64());
        latencies.extend(pass.latencies);
        recall.get_or_insert_with(|| recall_at(args.k, &pass.hits, &case.truth));
    }
    latencies.sort_unstable();
    let mut all_params = report.spec.params();
    all_params.extend(report.search_params.clone());
    if let Some((p, _)) = case.filter {
        all_params.insert("filter_selectivity".into(), p.into());
        // The labels depend on it, whichever index runs.
        all_params.insert("seed".into(), args.seed.into());
    }
    Ok(Record {
        index: report.spec.kind,
        metric: report.spec.metric,
        params: all_params,
        k: args.k,
        build_s: report.build_s,
        memory_bytes: report.memory_bytes,
        search_memory_bytes: report.memory_bytes - report.rescoring_bytes,
        rescoring_bytes: report.rescoring_bytes,
        filter_accepted: labels.map(Labels::fraction),
        recall: [(
            format!("recall_at_{}", args.k),
            recall.expect("at least one run"),
        )]
        .into(),
        qps: median(&mut qps),
        latency_p50_ms: percentile_ms(&latencies, 0.50),
        latency_p99_ms: percentile_ms(&latencies, 0.99),
        threads: args.threads,
        runs: args.runs,
        queries: queries.rows,
    })
}

fn print_record(r: &Record, json: bool) -> anyhow::Result<()> {
    if json {
        println!(
            "{}",
            serde_json::to_string(r).context("serialising a result")?
        );
        return Ok(());
    }
    let params = r
        .params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let recall = r.recall.values().next().copied().unwrap_or(f64::NAN);
    println!(
        "{:<6} {:<40} {:>8.2} {:>10.1} {:>10.1} {:>10.4} {:>10.1} {:>9.3} {:>9.3} {:>7}",
        r.index.as_str(),
        if params.is_empty() { "-" } else { &params },
        r.build_s,
        r.memory_bytes as f64 / 1e6,
        r.search_memory_bytes as f64 / 1e6,
        recall,
        r.qps,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.threads
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(id: u64) -> Hit {
        Hit { id, score: 0.0 }
    }

    #[test]
    fn recall_counts_the_first_k_truth_ids() {
        let truth = Matrix {
            rows: 2,
            cols: 3,
            data: vec![1, 2, 3, 7, 8, 9],
        };
        let hits = vec![vec![hit(2), hit(1)], vec![hit(8), hit(5)]];
        assert_eq!(recall_at(2, &hits, &truth), 0.75);
        // Only the first k hits count, against the first k truth ids.
        assert_eq!(recall_at(1, &hits, &truth), 0.0);
    }

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&d, 0.5), 50.0);
        assert_eq!(percentile_ms(&d, 0.99), 99.0);
        assert_eq!(percentile_ms(&d[..1], 0.99), 1.0);
    }

    /// Writes row-major 4-byte values in the TEXMEX layout: each row prefixed by its length.
    fn write_texmex(path: &std::path::Path, dim: usize, values: impl IntoIterator<Item = u32>) {
        let values: Vec<u32> = values.into_iter().collect();
        let mut bytes = Vec::new();
        for row in values.chunks(dim) {
            bytes.extend((dim as u32).to_le_bytes());
            row.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
        }
        std::fs::write(path, bytes).unwrap();
    }

    fn fvecs(path: &std::path::Path, dim: usize, values: &[f32]) {
        write_texmex(path, dim, values.iter().map(|x| x.to_bits()));
    }

    /// Arguments over `base.fvecs`, `query.fvecs` and `gt.ivecs` in `dir`, two runs of every
    /// setting from two threads.
    fn test_args(dir: &std::path::Path, index: IndexKind, k: usize) -> Args {
        Args {
            base: dir.join("base.fvecs"),
            query: dir.join("query.fvecs"),
            groundtruth: Some(dir.join("gt.ivecs")),
            index,
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 200,
            engine: Engine::Native,
            quantization: Quantization::None,
            nlist: None,
            ef: vec![16],
            oversampling: Vec::new(),
            nprobe: vec![1],
            k,
            threads: 2,
            runs: 2,
            seed: 1,
            filter_selectivity: Vec::new(),
            max_queries: None,
            json: true,
        }
    }

    fn records(args: &Args) -> Vec<serde_json::Value> {
        let mut records = Vec::new();
        bench(args, |r| {
            records.push(serde_json::to_value(r).unwrap());
            Ok(())
        })
        .unwrap();
        records
    }

    #[test]
    fn flat_end_to_end_on_a_tiny_dataset() {
        let dir = tempfile::tempdir().unwrap();
        fvecs(
            &dir.path().join("base.fvecs"),
            2,
            &[1.0, 0.0, 0.0, 1.0, 0.7, 0.7],
        );
        fvecs(&dir.path().join("query.fvecs"), 2, &[1.0, 0.1, 0.1, 1.0]);
        write_texmex(&dir.path().join("gt.ivecs"), 3, [0, 2, 1, 1, 2, 0]);
        let args = test_args(dir.path(), IndexKind::Flat, 2);
        let records = records(&args);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r["index"], "flat");
        assert_eq!(r["recall_at_2"], 1.0);
        assert_eq!(r["queries"], 2);
        assert_eq!(r["threads"], 2);
        assert!(r["qps"].as_f64().unwrap() > 0.0);
        assert!(r["memory_bytes"].as_u64().unwrap() >= 24);
        assert_eq!(r["search_memory_bytes"], r["memory_bytes"]);
        assert_eq!(r["rescoring_bytes"], 0);
        assert!(r.get("filter_accepted").is_none());
        assert!(r["params"].as_object().unwrap().is_empty());
        // A ground truth with fewer neighbours than k is refused up front.
        let args = Args { k: 4, ..args };
        let e = bench(&args, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("fewer than k"), "{e}");
    }

    /// Writes `n` clustered base vectors, `nq` queries from the same draw (so they share its
    /// clusters) and their exact cosine top-`k` as `base.fvecs`, `query.fvecs` and `gt.ivecs`.
    fn clustered_dataset(
        n: usize,
        nq: usize,
        dim: usize,
        k: usize,
        clusters: usize,
        seed: u64,
    ) -> tempfile::TempDir {
        use vicinity::testing::{clustered_vectors, exact_top_k};
        let all = clustered_vectors(n + nq, dim, clusters, 0.5, seed);
        let (base, queries) = all.split_at(n * dim);
        let ids: Vec<u64> = (0..n as u64).collect();
        let truth = queries.chunks_exact(dim).flat_map(|q| {
            exact_top_k(Metric::Cosine, dim, &ids, base, q, k, None)
                .into_iter()
                .map(|h| h.id as u32)
        });
        let dir = tempfile::tempdir().unwrap();
        fvecs(&dir.path().join("base.fvecs"), dim, base);
        fvecs(&dir.path().join("query.fvecs"), dim, queries);
        write_texmex(&dir.path().join("gt.ivecs"), k, truth);
        dir
    }

    #[test]
    fn ivf_and_hnsw_sweep_their_settings_on_clustered_data() {
        let (n, nq, dim, k) = (3000, 40, 16, 10);
        let dir = clustered_dataset(n, nq, dim, k, 24, 11);

        let recalls = |records: &[serde_json::Value]| -> Vec<f64> {
            records
                .iter()
                .map(|r| r["recall_at_10"].as_f64().unwrap())
                .collect()
        };

        let ivf = records(&Args {
            nprobe: vec![1, 8, 10_000],
            ..test_args(dir.path(), IndexKind::Ivf, k)
        });
        assert_eq!(ivf.len(), 3);
        let nlist = ivf::default_nlist(n) as u64;
        for (r, nprobe) in ivf.iter().zip([1, 8, 10_000]) {
            assert_eq!(r["index"], "ivf");
            assert_eq!(r["params"]["nlist"], nlist);
            assert_eq!(r["params"]["nprobe"], nprobe);
            assert!(r["memory_bytes"].as_u64().unwrap() >= (n * dim * 4) as u64);
        }
        let r = recalls(&ivf);
        assert!(
            r[0] <= r[1] && r[1] <= r[2],
            "recall falls as nprobe grows: {r:?}"
        );
        assert!(r[2] >= 0.99, "probing every list is exact: {r:?}");

        for engine in [Engine::Native, Engine::HnswRs] {
            let hnsw = records(&Args {
                m: 8,
                ef_construction: 64,
                engine,
                ef: vec![10, 128],
                ..test_args(dir.path(), IndexKind::Hnsw, k)
            });
            assert_eq!(hnsw.len(), 2);
            for (r, ef) in hnsw.iter().zip([10, 128]) {
                assert_eq!(r["index"], "hnsw");
                assert_eq!(r["params"]["m"], 8);
                assert_eq!(r["params"]["ef_construction"], 64);
                assert_eq!(r["params"]["ef"], ef);
                assert_eq!(r["params"]["engine"], serde_json::json!(engine));
                assert_eq!(r["params"]["quantization"], "none");
                assert!(r["params"].get("oversampling").is_none());
                assert_eq!(r["rescoring_bytes"], 0);
            }
            let r = recalls(&hnsw);
            assert!(r[1] >= 0.95, "{engine:?}: recall at ef 128 is {r:?}");
            assert!(r[0] <= r[1] + 0.01, "{engine:?}: {r:?}");
        }
    }

    #[test]
    fn hnsw_int8_sweeps_oversampling_and_splits_memory() {
        let (n, nq, dim, k) = (2000, 30, 16, 10);
        let dir = clustered_dataset(n, nq, dim, k, 16, 5);
        let args = Args {
            m: 8,
            ef_construction: 64,
            quantization: Quantization::Int8,
            ef: vec![16, 64],
            oversampling: vec![1.0, 4.0],
            ..test_args(dir.path(), IndexKind::Hnsw, k)
        };
        let records = records(&args);
        assert_eq!(records.len(), 4);
        for (r, (ef, o)) in records
            .iter()
            .zip([(16, 1.0), (16, 4.0), (64, 1.0), (64, 4.0)])
        {
            assert_eq!(r["params"]["quantization"], "int8");
            assert_eq!(r["params"]["ef"], ef);
            assert_eq!(r["params"]["oversampling"], o);
            let (total, search, rescoring) = (
                r["memory_bytes"].as_u64().unwrap(),
                r["search_memory_bytes"].as_u64().unwrap(),
                r["rescoring_bytes"].as_u64().unwrap(),
            );
            // The f32 vectors are kept for rescoring only; the walk reads the codes.
            assert!(rescoring >= (n * dim * 4) as u64, "{r}");
            assert_eq!(search + rescoring, total);
        }
        let recall = records[3]["recall_at_10"].as_f64().unwrap();
        assert!(recall >= 0.95, "int8 at ef 64, oversampling 4: {recall}");

        // Unset, the index's default factor is used and reported.
        let records = self::records(&Args {
            ef: vec![32],
            oversampling: Vec::new(),
            ..args
        });
        assert_eq!(
            records[0]["params"]["oversampling"],
            f64::from(vicinity::index::hnsw::DEFAULT_OVERSAMPLING)
        );
    }

    #[test]
    fn flags_are_checked_before_any_work() {
        // No files exist: each error must come from the flags, not from reading.
        let dir = std::path::Path::new("/nonexistent");
        let refused = |args: Args, want: &str| {
            let e = bench(&args, |_| Ok(())).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        };
        refused(
            Args {
                quantization: Quantization::Int8,
                ..test_args(dir, IndexKind::Ivf, 1)
            },
            "HNSW index only",
        );
        refused(
            Args {
                oversampling: vec![2.0],
                ..test_args(dir, IndexKind::Flat, 1)
            },
            "HNSW index only",
        );
        refused(
            Args {
                oversampling: vec![2.0, 0.5],
                ..test_args(dir, IndexKind::Hnsw, 1)
            },
            "between 1 and",
        );
        for p in [0.0, -0.5, 1.5, f64::NAN] {
            refused(
                Args {
                    filter_selectivity: vec![0.1, p],
                    ..test_args(dir, IndexKind::Hnsw, 1)
                },
                "--filter-selectivity must be in (0, 1]",
            );
        }
    }

    #[test]
    fn labels_accept_about_p_reproducibly_from_the_seed() {
        let n = 100_000;
        for p in [0.01, 0.1, 0.5, 0.9] {
            let labels = Labels::new(n, p, 42);
            // Four standard deviations of a binomial share.
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (labels.fraction() - p).abs() <= 4.0 * sd,
                "p = {p}: accepted {}",
                labels.fraction()
            );
            assert_eq!(labels.accepted_ids().count(), labels.accepted);
            assert_eq!(
                Labels::new(n, p, 42).bits,
                labels.bits,
                "same seed, same labels"
            );
            let other = Labels::new(n, p, 43);
            let same = (0..n as u64)
                .filter(|&id| other.accepts(id) == labels.accepts(id))
                .count();
            // Independent draws agree on p² + (1 − p)² of the ids.
            let expect = p * p + (1.0 - p) * (1.0 - p);
            assert!(
                (same as f64 / n as f64 - expect).abs() < 0.01,
                "p = {p}: seeds 42 and 43 agree on {same} ids"
            );
        }
        let all = Labels::new(1000, 1.0, 7);
        assert_eq!(all.accepted, 1000);
        assert!(!all.accepts(1000), "ids beyond the base are rejected");
        // A smaller p accepts a subset: the same draws against a lower threshold.
        let (wide, narrow) = (Labels::new(n, 0.5, 9), Labels::new(n, 0.2, 9));
        assert!((0..n as u64).all(|id| !narrow.accepts(id) || wide.accepts(id)));
    }

    #[test]
    fn filtered_truth_is_the_exact_answer_with_ties_by_id() {
        // Row i has id i. Under dot, query (1, 0) scores each row by its first component.
        let base = Matrix {
            rows: 7,
            cols: 2,
            data: vec![
                5.0, 0.0, // 0: best, rejected
                1.0, 0.0, // 1: tie at 1, rejected
                1.0, 0.5, // 2: tie at 1
                0.5, 0.0, // 3
                1.0, -1.0, // 4: tie at 1
                1.0, 0.0, // 5: tie at 1
                2.0, 9.0, // 6: second best
            ],
        };
        let queries = Matrix {
            rows: 2,
            cols: 2,
            data: vec![1.0, 0.0, 0.0, 1.0],
        };
        let labels = Labels::from_fn(7, |id| id >= 2);
        let truth = filtered_truth(Metric::Dot, &base, &queries, 3, &labels).unwrap();
        assert_eq!((truth.rows, truth.cols), (2, 3));
        // Query (1, 0): 6, then the tie at 1 among accepted rows (2, 4, 5) in id order.
        assert_eq!(truth.row(0), &[6, 2, 4]);
        // Query (0, 1): 6 (9), 2 (0.5), then the tie at 0 between 3 and 5.
        assert_eq!(truth.row(1), &[6, 2, 3]);

        // Under L2 the nearest to (1, 0) are the rows at distance 0 (5; 1 is rejected), then
        // the tie at 0.25 between 2 and 3.
        let truth = filtered_truth(Metric::L2, &base, &queries, 3, &labels).unwrap();
        assert_eq!(truth.row(0), &[5, 2, 3]);
        // A filter that leaves fewer than k is refused.
        let few = Labels::from_fn(7, |id| id == 3);
        assert!(filtered_truth(Metric::Dot, &base, &queries, 2, &few).is_err());
    }

    #[test]
    fn filtered_end_to_end_measures_recall_against_the_filtered_answer() {
        use vicinity::testing::{exact_top_k, random_vectors};
        let (n, nq, dim, k) = (300, 20, 8, 5);
        let mut all = random_vectors(n + nq, dim, 3);
        all.chunks_exact_mut(dim).for_each(|v| {
            Metric::Cosine.preprocess(v);
        });
        let (base, queries) = all.split_at(n * dim);
        let dir = tempfile::tempdir().unwrap();
        fvecs(&dir.path().join("base.fvecs"), dim, base);
        fvecs(&dir.path().join("query.fvecs"), dim, queries);
        let args = Args {
            groundtruth: None,
            quantization: Quantization::Int8,
            ef: vec![n],
            oversampling: vec![1.0, 4.0],
            filter_selectivity: vec![0.5],
            ..test_args(dir.path(), IndexKind::Hnsw, k)
        };
        let labels = Labels::new(n, 0.5, args.seed);
        let ids: Vec<u64> = (0..n as u64).collect();
        let accept = |id: u64| labels.accepts(id);
        let mut rejected_nearest = 0;
        for q in queries.chunks_exact(dim) {
            let unfiltered = exact_top_k(Metric::Cosine, dim, &ids, base, q, k, None);
            rejected_nearest += unfiltered.iter().filter(|h| !accept(h.id)).count();
        }
        // The unfiltered truth names rejected vectors, which a filtered search cannot return:
        // recall 1 below is only possible against the filtered truth.
        assert!(rejected_nearest > nq, "{rejected_nearest}");

        let records = records(&args);
        assert_eq!(records.len(), 2);
        for (r, o) in records.iter().zip([1.0, 4.0]) {
            let p = &r["params"];
            assert_eq!(p["quantization"], "int8");
            assert_eq!(p["ef"], n);
            assert_eq!(p["oversampling"], o);
            assert_eq!(p["filter_selectivity"], 0.5);
            assert_eq!(p["seed"], args.seed);
            assert_eq!(r["filter_accepted"], labels.fraction());
            assert!((0.4..=0.6).contains(&labels.fraction()));
            assert_eq!(r["recall_at_5"], 1.0, "{r}");
        }

        // With a ground truth too, one build runs unfiltered first, then each selectivity.
        let truth: Vec<u32> = queries
            .chunks_exact(dim)
            .flat_map(|q| exact_top_k(Metric::Cosine, dim, &ids, base, q, k, None))
            .map(|h| h.id as u32)
            .collect();
        write_texmex(&dir.path().join("gt.ivecs"), k, truth);
        let records = self::records(&Args {
            groundtruth: Some(dir.path().join("gt.ivecs")),
            oversampling: vec![4.0],
            filter_selectivity: vec![0.5, 0.2],
            ..args
        });
        assert_eq!(records.len(), 3);
        assert!(records[0]["params"].get("filter_selectivity").is_none());
        assert!(records[0].get("filter_accepted").is_none());
        assert_eq!(records[1]["params"]["filter_selectivity"], 0.5);
        assert_eq!(records[2]["params"]["filter_selectivity"], 0.2);
        let narrow = Labels::new(n, 0.2, args.seed).fraction();
        assert!(narrow < labels.fraction());
        assert_eq!(records[2]["filter_accepted"], narrow);
        let build_s = &records[0]["build_s"];
        for r in &records {
            assert_eq!(&r["build_s"], build_s, "one build serves every case");
            assert_eq!(r["recall_at_5"], 1.0, "{r}");
        }

        // Without a filter the ground truth is required.
        let e = bench(
            &Args {
                groundtruth: None,
                ..test_args(dir.path(), IndexKind::Flat, k)
            },
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--groundtruth is required"), "{e}");
    }
}
