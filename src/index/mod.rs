//! Approximate and exact nearest-neighbour indexes behind one interface.
//!
//! * [`VectorIndex`] is the read side (search, size, persistence); [`IndexMut`] adds and removes
//!   vectors. Every index stores vectors under caller-chosen `u64` ids; adding an id that is
//!   present replaces its vector.
//! * Scores follow the convention of [`crate::distance`]: **higher is closer**, hits come sorted
//!   best first, and [`Hit::distance`] converts a score to the metric's distance.
//! * All of this module is synchronous and CPU-bound: callers on an async runtime run it on a
//!   blocking thread. Batched searches parallelise across queries with rayon.
//!
//! Inputs are checked here, once, by the helpers in [`validate`]: wrong dimensions, NaN or
//! infinite components, zero vectors under cosine, `k = 0` and duplicate ids in one batch are
//! typed [`IndexError`]s, never panics. A `k` larger than the index returns every vector; an
//! empty index returns no hits.

use std::path::{Path, PathBuf};

use crate::distance::Metric;

pub mod ann;
pub mod flat;
pub mod hnsw;
pub mod io;
pub mod ivf;
pub mod kmeans;
pub mod topk;
pub mod validate;

/// A search result: the caller's id and its similarity score (higher is closer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// The id the vector was added under.
    pub id: u64,
    /// Similarity to the query under the index's metric; higher is closer.
    pub score: f32,
}

impl Hit {
    /// The metric's distance for this hit (lower is closer); see [`Metric::distance`].
    pub fn distance(&self, metric: Metric) -> f32 {
        metric.distance(self.score)
    }
}

/// Per-query search settings. `None` leaves the index's default in place; indexes ignore the
/// settings that do not apply to them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SearchParams {
    /// HNSW: size of the dynamic candidate list (raised to `k` when smaller).
    pub ef: Option<usize>,
    /// IVF: number of inverted lists to scan.
    pub nprobe: Option<usize>,
    /// Quantized HNSW: candidates rescored on the full-precision vectors, as a multiple of `k`
    /// (the candidate list is raised to that many); between 1 and
    /// [`hnsw::MAX_OVERSAMPLING`], default [`hnsw::DEFAULT_OVERSAMPLING`].
    pub oversampling: Option<f32>,
}

/// An id predicate: only vectors whose id it accepts may be returned. It must be cheap and
/// thread-safe: searches call it from several threads and many times per query.
pub type Filter<'a> = &'a (dyn Fn(u64) -> bool + Sync);

/// Which index structure is in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// Exact scan over contiguous vectors.
    Flat,
    /// Inverted file over k-means cells, scanning `nprobe` cells per query.
    Ivf,
    /// Hierarchical navigable small-world graph.
    Hnsw,
}

impl IndexKind {
    /// Lowercase name as used on the command line and in files.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Flat => "flat",
            IndexKind::Ivf => "ivf",
            IndexKind::Hnsw => "hnsw",
        }
    }
}

impl std::fmt::Display for IndexKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IndexKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "flat" => Ok(IndexKind::Flat),
            "ivf" => Ok(IndexKind::Ivf),
            "hnsw" => Ok(IndexKind::Hnsw),
            other => Err(format!(
                "unknown index type '{other}', expected one of flat, ivf, hnsw"
            )),
        }
    }
}

/// What can go wrong in an index operation. Variants other than [`IndexError::Io`] and
/// [`IndexError::Corrupt`] describe a mistake in the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// A vector's length differs from the index's dimension.
    #[error("vector has dimension {got}, the index expects {expected}")]
    DimensionMismatch {
        /// The index's dimension.
        expected: usize,
        /// The offending vector's length.
        got: usize,
    },
    /// A batch's flat vector buffer does not hold exactly one vector per id.
    #[error("{ids} ids but {values} vector components (dimension {dim})")]
    BatchShape {
        /// Number of ids in the batch.
        ids: usize,
        /// Number of `f32` values supplied.
        values: usize,
        /// The index's dimension.
        dim: usize,
    },
    /// A component is NaN or infinite.
    #[error("vector {row} has a non-finite component at position {position}")]
    NonFinite {
        /// Row within the batch (0 for a single query).
        row: usize,
        /// Component index.
        position: usize,
    },
    /// A zero vector was given under a metric that needs a direction (cosine).
    #[error("vector {row} has zero length, which has no cosine similarity")]
    ZeroVector {
        /// Row within the batch (0 for a single query).
        row: usize,
    },
    /// The same id appears twice in one batch.
    #[error("id {id} appears more than once in the batch")]
    DuplicateId {
        /// The repeated id.
        id: u64,
    },
    /// `k` must be at least 1.
    #[error("k must be at least 1")]
    ZeroK,
    /// A build or search parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
    /// Reading or writing a snapshot failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A snapshot is damaged, truncated, from another format version or fails its checksum.
    #[error("index snapshot at {path} is unusable: {reason}")]
    Corrupt {
        /// The snapshot directory or file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl IndexError {
    /// Whether the error comes from the caller's input rather than from the machine or a bug.
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, IndexError::Io { .. } | IndexError::Corrupt { .. })
    }

    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        IndexError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl AsRef<Path>, reason: impl Into<String>) -> Self {
        IndexError::Corrupt {
            path: path.as_ref().to_path_buf(),
            reason: reason.into(),
        }
    }
}

/// Result alias for index operations.
pub type IndexResult<T> = Result<T, IndexError>;

/// The read side of an index.
pub trait VectorIndex: Send + Sync {
    /// Which structure this is.
    fn kind(&self) -> IndexKind;

    /// The metric scores are computed with.
    fn metric(&self) -> Metric;

    /// The dimension every vector has.
    fn dim(&self) -> usize;

    /// Number of live (searchable) vectors.
    fn len(&self) -> usize;

    /// Whether the index holds no live vector.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a live vector is stored under `id`.
    fn contains(&self, id: u64) -> bool;

    /// The ids of every live vector, in no particular order.
    fn live_ids(&self) -> Vec<u64>;

    /// Heap memory held by the index, in bytes: vectors, graph or lists, id maps.
    fn memory_bytes(&self) -> usize;

    /// The part of [`memory_bytes`](VectorIndex::memory_bytes) held only to rescore candidates
    /// at full precision (the `f32` vectors of a quantized index); the rest is the structure a
    /// search walks. 0 for indexes that search the full-precision vectors themselves.
    fn rescoring_bytes(&self) -> usize {
        0
    }

    /// The `k` best hits for `query`, sorted best first (ties by ascending id). Fewer when the
    /// index (or the filter) admits fewer. With a filter, only ids it accepts are returned.
    fn search(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Hit>>;

    /// [`search`](Self::search) for a row-major batch of queries, in parallel across queries.
    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Vec<Hit>>> {
        use rayon::prelude::*;
        let dim = self.dim();
        validate::check_batch_shape(dim, None, queries)?;
        queries
            .par_chunks(dim.max(1))
            .map(|q| self.search(q, k, params, filter))
            .collect()
    }

    /// Writes a snapshot of the index into `dir` (created if missing), replacing any snapshot
    /// there. The write is atomic: a crash leaves either the old snapshot or the new one.
    fn save(&self, dir: &Path) -> IndexResult<()>;
}

/// The write side of an index.
pub trait IndexMut: VectorIndex {
    /// Adds a batch: `vectors` holds `ids.len()` rows of [`dim`](VectorIndex::dim) values,
    /// row-major. An id already present is replaced. The batch is checked as a whole first; on
    /// error nothing is added.
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> IndexResult<()>;

    /// Removes the given ids; ids not present are ignored. Returns how many were removed.
    fn remove(&mut self, ids: &[u64]) -> IndexResult<usize>;
}
