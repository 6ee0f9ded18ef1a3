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

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use serde::Serialize;
use vicinity::dataset::{self, Matrix};
use vicinity::distance::Metric;
use vicinity::index::flat::FlatIndex;
use vicinity::index::hnsw::{Engine, HnswBuilder};
use vicinity::index::ivf::{self, IvfBuilder};
use vicinity::index::{Hit, IndexKind, IndexMut, SearchParams, VectorIndex};

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
    /// first; recall@k is measured against the first k.
    #[arg(long)]
    groundtruth: PathBuf,
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
    /// IVF: number of inverted lists (default: the index's own choice, about 4·√N).
    #[arg(long)]
    nlist: Option<usize>,
    /// HNSW: search candidate list sizes to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16,32,48,64,128")]
    ef: Vec<usize>,
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
    /// Seed for index builds that sample or randomise.
    #[arg(long, default_value_t = 42)]
    seed: u64,
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
                .seed(spec.seed)
                .build_with(spec.metric, spec.dim, &ids, &base.data)
                .context("building the HNSW index")?,
        ),
    })
}

/// The search settings to sweep for this kind: a label map for the report and the params.
fn sweep(args: &Args) -> Vec<(serde_json::Map<String, serde_json::Value>, SearchParams)> {
    let one = |key: &str, v: usize, p: SearchParams| {
        let mut m = serde_json::Map::new();
        m.insert(key.into(), v.into());
        (m, p)
    };
    match args.index {
        IndexKind::Flat => vec![(serde_json::Map::new(), SearchParams::default())],
        IndexKind::Hnsw => args
            .ef
            .iter()
            .map(|&ef| {
                one(
                    "ef",
                    ef,
                    SearchParams {
                        ef: Some(ef),
                        nprobe: None,
                        oversampling: None,
                    },
                )
            })
            .collect(),
        IndexKind::Ivf => args
            .nprobe
            .iter()
            .map(|&nprobe| {
                one(
                    "nprobe",
                    nprobe,
                    SearchParams {
                        ef: None,
                        nprobe: Some(nprobe),
                        oversampling: None,
                    },
                )
            })
            .collect(),
    }
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
                .search(queries.row(i), k, params, None)
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

fn load(args: &Args) -> anyhow::Result<(Matrix<f32>, Matrix<f32>, Matrix<u64>)> {
    let base = dataset::read_vectors(&args.base).context("reading the base vectors")?;
    let mut queries = dataset::read_vectors(&args.query).context("reading the queries")?;
    let truth = dataset::read_ids(&args.groundtruth).context("reading the ground truth")?;
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
    Ok((base, queries, truth))
}

/// Runs the benchmark, printing each setting's result as it completes.
pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    if !args.json {
        println!(
            "{:<6} {:<40} {:>8} {:>10} {:>10} {:>10} {:>9} {:>9} {:>7}",
            "index",
            "params",
            "build s",
            "memory MB",
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
    ensure!(args.k >= 1, "--k must be at least 1");
    ensure!(args.threads >= 1, "--threads must be at least 1");
    ensure!(args.runs >= 1, "--runs must be at least 1");
    let (base, queries, truth) = load(args)?;
    tracing::info!(
        base = base.rows,
        queries = queries.rows,
        dim = base.cols,
        "dataset loaded"
    );
    let spec = BuildSpec {
        kind: args.index,
        metric: args.metric,
        dim: base.cols,
        m: args.m,
        ef_construction: args.ef_construction,
        engine: args.engine,
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
    tracing::info!(
        index = %spec.kind,
        build_s,
        memory_mb = memory_bytes as f64 / 1e6,
        "index built"
    );

    for (search_params, params) in sweep(args) {
        // One untimed pass over a few queries brings code and data into cache.
        let warm = Matrix {
            rows: queries.rows.min(50),
            cols: queries.cols,
            data: queries.data[..queries.rows.min(50) * queries.cols].to_vec(),
        };
        run_pass(&*index, &warm, args.k, &params, args.threads)?;

        let mut qps = Vec::with_capacity(args.runs);
        let mut latencies = Vec::with_capacity(args.runs * queries.rows);
        let mut recall = None;
        for _ in 0..args.runs {
            let pass = run_pass(&*index, &queries, args.k, &params, args.threads)?;
            qps.push(queries.rows as f64 / pass.wall.as_secs_f64());
            latencies.extend(pass.latencies);
            recall.get_or_insert_with(|| recall_at(args.k, &pass.hits, &truth));
        }
        latencies.sort_unstable();
        let mut all_params = spec.params();
        all_params.extend(search_params);
        let record = Record {
            index: spec.kind,
            metric: spec.metric,
            params: all_params,
            k: args.k,
            build_s,
            memory_bytes,
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
        };
        emit(&record)?;
    }
    Ok(())
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
        "{:<6} {:<40} {:>8.2} {:>10.1} {:>10.4} {:>10.1} {:>9.3} {:>9.3} {:>7}",
        r.index.as_str(),
        if params.is_empty() { "-" } else { &params },
        r.build_s,
        r.memory_bytes as f64 / 1e6,
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
            groundtruth: dir.join("gt.ivecs"),
            index,
            metric: Metric::Cosine,
            m: 16,
            ef_construction: 200,
            engine: Engine::Native,
            nlist: None,
            ef: vec![16],
            nprobe: vec![1],
            k,
            threads: 2,
            runs: 2,
            seed: 1,
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
        assert!(r["params"].as_object().unwrap().is_empty());
        // A ground truth with fewer neighbours than k is refused up front.
        let args = Args { k: 4, ..args };
        let e = bench(&args, |_| Ok(())).unwrap_err();
        assert!(e.to_string().contains("fewer than k"), "{e}");
    }

    #[test]
    fn ivf_and_hnsw_sweep_their_settings_on_clustered_data() {
        use vicinity::testing::{clustered_vectors, exact_top_k};
        let (n, nq, dim, k) = (3000, 40, 16, 10);
        // Queries come from the same draw as the base, so they share its clusters.
        let all = clustered_vectors(n + nq, dim, 24, 0.5, 11);
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
            }
            let r = recalls(&hnsw);
            assert!(r[1] >= 0.95, "{engine:?}: recall at ef 128 is {r:?}");
            assert!(r[0] <= r[1] + 0.01, "{engine:?}: {r:?}");
        }
    }
}
