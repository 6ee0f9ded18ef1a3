//! `GET /metrics`: the server's metrics in the Prometheus text format.
//!
//! Two kinds of series:
//!
//! * **Recorded as requests pass**, by the [`track`] middleware into [`Metrics`]: a counter
//!   and a latency histogram per method (from a fixed set, `other` for the rest), route
//!   template (`/collections/:name/query`, never the raw path; `unmatched` for paths no route
//!   has) and status, so that no client can make the number of series grow.
//! * **Read at scrape time** from what already keeps them, so that nothing is counted twice
//!   and no other layer depends on this one: the embedding worker's queue and batch
//!   statistics ([`Embedder::stats`](crate::embed::Embedder::stats)), each collection's
//!   documents, passages and index memory (the service's collection infos), and the process's
//!   resident memory (Linux only).
//!
//! Each [`AppState`] has its own registry, so that several routers in one process (tests)
//! do not mix their counts.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::embed::{BatchHistogram, WorkerStats};
use crate::service::{PassageCacheStats, Replication, SearchStats};

use super::error::ApiError;
use super::state::AppState;

/// Latency buckets, in seconds: from a cached exact query (about a millisecond) to a large
/// upsert that embeds for most of a minute.
const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Largest power of two with a bucket of its own in the texts-per-batch histogram (above it,
/// only `+Inf`). Fixed, so that the series keep one set of buckets whatever has been seen.
const MAX_BATCH_TEXTS_EXP: u32 = 10;

/// The same for tokens per batch.
const MAX_BATCH_TOKENS_EXP: u32 = 16;

/// Route label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The series recorded as requests pass.
#[derive(Clone, Debug)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry with the request series.
    pub fn new() -> Self {
        let labels = ["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "vicinity_http_requests_total",
                "HTTP requests answered, by method, route template and status.",
            ),
            &labels,
        )
        .expect("the request counter is well-formed. This is a bug.");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "vicinity_http_request_duration_seconds",
                "Time from a request's arrival to its response, by method, route template \
                 and status.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &labels,
        )
        .expect("the latency histogram is well-formed. This is a bug.");
        let registry = Registry::new();
        registry
            .register(Box::new(requests.clone()))
            .expect("the request counter registers once. This is a bug.");
        registry
            .register(Box::new(latency.clone()))
            .expect("the latency histogram registers once. This is a bug.");
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    fn observe(&self, method: &str, route: &str, status: StatusCode, elapsed: Duration) {
        let status = status.as_str();
        let labels = [method, route, status];
        self.requests.with_label_values(&labels).inc();
        self.latency
            .with_label_values(&labels)
            .observe(elapsed.as_secs_f64());
    }
}

/// Middleware: counts and times every request under its route template and status.
pub(crate) async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| route_label(p.as_str()));
    let response = next.run(req).await;
    state.metrics().observe(
        method_label(&method),
        route.as_deref().unwrap_or(UNMATCHED),
        response.status(),
        started.elapsed(),
    );
    response
}

/// A request method as a label value, from a fixed set: the method is whatever the client
/// sent (HTTP allows any token), and this layer runs before authentication, so labelling
/// series with it as sent would let any client create series without bound.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// A route template as a label value: `/collections/{name}/query` becomes
/// `/collections/:name/query`. Braces are valid in a label value, but some text-format parsers
/// (`prometheus-parse` among them) end the label set at the first `}`, and would drop the
/// series.
fn route_label(template: &str) -> String {
    let mut label = String::with_capacity(template.len());
    for c in template.chars() {
        match c {
            '{' => label.push(':'),
            '}' => {}
            c => label.push(c),
        }
    }
    label
}

/// The server's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Metrics in the Prometheus text format (version 0.0.4): \
            request counts and latencies per route and status, the embedding queue and its \
            batches, the search slots, documents, passages and index memory per collection, resident memory.",
            content_type = "text/plain"),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let mut families = state.metrics().registry.gather();
    if let Some(service) = state.service() {
        if let Some(stats) = service.embedder().stats() {
            families.extend(embedder_families(&stats));
        }
        families.extend(passage_cache_families(&service.passage_cache_stats()));
        families.extend(search_families(&service.search_stats()));
        let collections = service.list_collections().await?;
        let per_collection = |name: &str, help: &str, value: fn(&_) -> u64| {
            gauge_family(
                name,
                help,
                collections
                    .iter()
                    .map(|c| gauge(&[("collection", &c.name)], value(c) as f64))
                    .collect(),
            )
        };
        families.push(per_collection(
            "vicinity_collection_documents",
            "Documents in the collection.",
            |c| c.documents,
        ));
        families.push(per_collection(
            "vicinity_collection_passages",
            "Passages (embedded chunks of documents) in the collection.",
            |c| c.passages,
        ));
        families.push(per_collection(
            "vicinity_collection_index_memory_bytes",
            "Memory held by the collection's vectors and index.",
            |c| c.memory_bytes,
        ));
        families.extend(replication_families(&service.replication()));
    }
    if let Some(rss) = resident_memory_bytes() {
        families.push(gauge_family(
            "process_resident_memory_bytes",
            "Resident memory size of the process, in bytes.",
            vec![gauge(&[], rss as f64)],
        ));
    }
    // The encoder refuses a family without series (no collections yet).
    families.retain(|f| !f.get_metric().is_empty());
    let mut body = Vec::new();
    prometheus::TextEncoder::new()
        .encode(&families, &mut body)
        .map_err(|e| ApiError::Internal(format!("cannot encode the metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, TEXT_FORMAT)], body).into_response())
}

/// A family of one unlabelled counter or gauge.
fn one(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    let mut metric = Metric::default();
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
    family(name, help, kind, vec![metric])
}

/// The passage cache's series.
fn passage_cache_families(stats: &PassageCacheStats) -> Vec<MetricFamily> {
    vec![
        one(
            "vicinity_passage_cache_hits_total",
            "Search results whose passage was read from memory.",
            MetricType::COUNTER,
            stats.hits as f64,
        ),
        one(
            "vicinity_passage_cache_misses_total",
            "Search results whose passage was read from the database.",
            MetricType::COUNTER,
            stats.misses as f64,
        ),
        one(
            "vicinity_passage_cache_bytes",
            "Estimated memory held by cached passages.",
            MetricType::GAUGE,
            stats.bytes as f64,
        ),
    ]
}

/// Each collection's applied version and replication lag on this node. On a shared store the
/// lag is how many writes, made by other nodes and already committed, this node has yet to
/// apply; on SQLite it stays 0.
fn replication_families(replication: &[Replication]) -> Vec<MetricFamily> {
    let series = |value: fn(&Replication) -> u64| {
        replication
            .iter()
            .map(|r| gauge(&[("collection", &r.name)], value(r) as f64))
            .collect()
    };
    vec![
        gauge_family(
            "vicinity_collection_version_applied",
            "The collection version this node has applied (every write up to it).",
            series(|r| r.applied),
        ),
        gauge_family(
            "vicinity_replication_lag_versions",
            "Committed writes to the collection this node has not applied yet.",
            series(|r| r.latest - r.applied),
        ),
    ]
}

/// The search slots' series.
fn search_families(stats: &SearchStats) -> Vec<MetricFamily> {
    vec![
        one(
            "vicinity_search_slots",
            "Searches that may run at once (--search-concurrency).",
            MetricType::GAUGE,
            stats.slots as f64,
        ),
        one(
            "vicinity_search_slots_in_use",
            "Searches running now.",
            MetricType::GAUGE,
            stats.in_use as f64,
        ),
        one(
            "vicinity_searches_total",
            "Searches run.",
            MetricType::COUNTER,
            stats.searches as f64,
        ),
        one(
            "vicinity_searches_cancelled_total",
            "Searches skipped because their request had timed out or its client had gone \
             before they started.",
            MetricType::COUNTER,
            stats.cancelled as f64,
        ),
    ]
}

/// The embedding worker's series.
fn embedder_families(stats: &WorkerStats) -> Vec<MetricFamily> {
    vec![
        one(
            "vicinity_embed_queue_texts",
            "Texts admitted to the embedding queue and not yet taken into a batch.",
            MetricType::GAUGE,
            stats.queued_texts as f64,
        ),
        one(
            "vicinity_embed_queue_requests",
            "Requests with texts waiting in the embedding queue.",
            MetricType::GAUGE,
            stats.queued_requests as f64,
        ),
        one(
            "vicinity_embed_running_texts",
            "Texts in the batch the model is running now.",
            MetricType::GAUGE,
            stats.running_texts as f64,
        ),
        one(
            "vicinity_embed_texts_total",
            "Texts embedded.",
            MetricType::COUNTER,
            stats.texts as f64,
        ),
        one(
            "vicinity_embed_tokens_total",
            "Tokens embedded.",
            MetricType::COUNTER,
            stats.tokens as f64,
        ),
        one(
            "vicinity_embed_rejected_requests_total",
            "Embedding requests refused because the queue was full.",
            MetricType::COUNTER,
            stats.rejected_requests as f64,
        ),
        one(
            "vicinity_embed_failed_batches_total",
            "Batches the model failed on.",
            MetricType::COUNTER,
            stats.failed_batches as f64,
        ),
        one(
            "vicinity_embed_busy_seconds_total",
            "Time the model threads spent running batches, both lanes added up (so it can grow faster than wall time).",
            MetricType::COUNTER,
            stats.busy.as_secs_f64(),
        ),
        histogram_family(
            "vicinity_embed_batch_size",
            "Texts per embedding batch.",
            &stats.batch_texts,
            MAX_BATCH_TEXTS_EXP,
        ),
        histogram_family(
            "vicinity_embed_batch_tokens",
            "Tokens per embedding batch.",
            &stats.batch_tokens,
            MAX_BATCH_TOKENS_EXP,
        ),
    ]
}

fn label_pairs(labels: &[(&str, &str)]) -> Vec<LabelPair> {
    labels
        .iter()
        .map(|&(name, value)| {
            let mut pair = LabelPair::default();
            pair.set_name(name.to_owned());
            pair.set_value(value.to_owned());
            pair
        })
        .collect()
}

fn gauge(labels: &[(&str, &str)], value: f64) -> Metric {
    let mut gauge = Gauge::default();
    gauge.set_value(value);
    let mut metric = Metric::from_label(label_pairs(labels));
    metric.set_gauge(gauge);
    metric
}

fn gauge_family(name: &str, help: &str, metrics: Vec<Metric>) -> MetricFamily {
    family(name, help, MetricType::GAUGE, metrics)
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A worker's power-of-two histogram as a Prometheus histogram with the buckets
/// `1, 2, 4, …, 2^max_exp` (cumulative, as Prometheus counts them).
fn histogram_family(
    name: &str,
    help: &str,
    histogram: &BatchHistogram,
    max_exp: u32,
) -> MetricFamily {
    let counts: Vec<u64> = histogram.buckets().map(|(_, count)| count).collect();
    let mut cumulative = 0;
    let buckets = (0..=max_exp)
        .map(|exp| {
            cumulative += counts.get(exp as usize).copied().unwrap_or(0);
            let mut bucket = Bucket::default();
            bucket.set_upper_bound(f64::from(1u32 << exp));
            bucket.set_cumulative_count(cumulative);
            bucket
        })
        .collect();
    let mut proto = Histogram::default();
    proto.set_sample_count(histogram.count());
    proto.set_sample_sum(histogram.sum() as f64);
    proto.set_bucket(buckets);
    let mut metric = Metric::default();
    metric.set_histogram(proto);
    family(name, help, MetricType::HISTOGRAM, vec![metric])
}

/// The process's resident set size, from `VmRSS` in `/proc/self/status`. That line is in
/// kibibytes, so unlike `/proc/self/statm` (in pages) it needs no page size from the system.
#[cfg(target_os = "linux")]
fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(not(target_os = "linux"))]
fn resident_memory_bytes() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_histograms_keep_fixed_cumulative_buckets() {
        let mut h = BatchHistogram::default();
        for v in [1, 3, 4, 2000] {
            h.record(v);
        }
        let family = histogram_family("x", "x", &h, 4);
        let proto = family.get_metric()[0].get_histogram();
        let buckets: Vec<(f64, u64)> = proto
            .get_bucket()
            .iter()
            .map(|b| (b.upper_bound(), b.cumulative_count()))
            .collect();
        assert_eq!(
            buckets,
            vec![(1.0, 1), (2.0, 1), (4.0, 3), (8.0, 3), (16.0, 3)]
        );
        assert_eq!(proto.get_sample_count(), 4);
        assert_eq!(proto.get_sample_sum(), 2008.0);
    }

    #[test]
    fn route_labels_name_parameters_with_colons() {
        assert_eq!(
            route_label("/collections/{name}/documents/{id}"),
            "/collections/:name/documents/:id"
        );
        assert_eq!(route_label("/healthz"), "/healthz");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn resident_memory_is_read() {
        let rss = resident_memory_bytes().expect("Linux has /proc/self/status");
        assert!(rss > 1024 * 1024, "{rss}");
    }
}
