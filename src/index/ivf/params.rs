//! Build parameters of an IVF index, their defaults, and the builder.

use serde::{Deserialize, Serialize};

use super::IvfIndex;
use crate::distance::Metric;
use crate::index::kmeans::KMeansInit;
use crate::index::{IndexError, IndexResult, VectorIndex};

/// Default number of vectors at which an untrained index trains itself.
pub const DEFAULT_TRAIN_AT: usize = 10_000;

/// Default cap on the k-means training sample, per list: at most `256 · nlist` vectors.
pub const DEFAULT_SAMPLE_PER_LIST: usize = 256;

/// Default number of Lloyd iterations. On 100k embedding-like vectors recall at a fixed
/// `nprobe` still gains a little from 10 to 15 iterations and nothing measurable beyond 20.
pub const DEFAULT_ITERATIONS: usize = 15;

/// The default number of lists for `n` vectors: 4·√n rounded, at least 1 and at most `n`.
pub fn default_nlist(n: usize) -> usize {
    ((4.0 * (n as f64).sqrt()).round() as usize).clamp(1, n.max(1))
}

/// The default number of lists probed per query for an index of `nlist` lists: ⌈√nlist⌉, but
/// at least [`MIN_DEFAULT_NPROBE`], and at most `nlist`.
///
/// Why √nlist: the k nearest neighbours of a query lie in the cells around it, and the number
/// of cells a fixed neighbourhood overlaps grows with `nlist`, but more slowly than `nlist`
/// (cells shrink in every direction at once). On 100k normalised embedding-like vectors
/// (384-d, spherical cells) the `nprobe` that first reaches recall@10 ≥ 0.95 was 16, 23, 28
/// and 45 for `nlist` = 316, 632, 1,265 and 2,530: 0.8–0.9·√nlist throughout, so ⌈√nlist⌉
/// clears 0.95 with a small margin while the probed fraction √nlist / nlist falls as the index
/// grows. With the default `nlist` = 4·√N a query then scans about N / √nlist = N^¾ / 2
/// vectors. Coarse indexes need relatively more (1.2·√nlist at `nlist` = 80), which the floor
/// covers at no real cost: such indexes are small.
pub fn default_nprobe(nlist: usize) -> usize {
    ((nlist as f64).sqrt().ceil() as usize)
        .max(MIN_DEFAULT_NPROBE)
        .min(nlist.max(1))
}

/// Smallest default `nprobe` (see [`default_nprobe`]).
pub const MIN_DEFAULT_NPROBE: usize = 16;

/// Build parameters of an [`IvfIndex`]. [`Default`] gives the documented defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IvfParams {
    /// Number of lists (k-means cells). `None`: [`default_nlist`] of the vectors held when
    /// training. Clamped to the number of vectors.
    pub nlist: Option<usize>,
    /// Lists probed per query when
    /// [`SearchParams::nprobe`](crate::index::SearchParams::nprobe) is not given. `None`:
    /// [`default_nprobe`]`(nlist)`.
    pub nprobe: Option<usize>,
    /// Maximum Lloyd iterations of the k-means training.
    pub iterations: usize,
    /// Seed of the training sample and of the k-means initialisation.
    pub seed: u64,
    /// The training sample holds at most this many vectors per list.
    pub sample_per_list: usize,
    /// How k-means chooses its first centroids.
    pub init: KMeansInit,
    /// An untrained index trains itself on the first `add` that brings it to this many
    /// vectors. `None`: only [`IvfIndex::train`] (or [`IvfBuilder::build_with`]) trains.
    pub train_at: Option<usize>,
    /// Store rows in a principal-component basis cut into a head and a tail, so that scans
    /// skip the tails of rows that cannot enter the top-k (see the module docs). Results are
    /// the same either way, up to float rounding; only speed differs.
    pub pca_split: bool,
}

impl Default for IvfParams {
    fn default() -> Self {
        IvfParams {
            nlist: None,
            nprobe: None,
            iterations: DEFAULT_ITERATIONS,
            seed: 0,
            sample_per_list: DEFAULT_SAMPLE_PER_LIST,
            init: KMeansInit::default(),
            train_at: Some(DEFAULT_TRAIN_AT),
            pca_split: true,
        }
    }
}

impl IvfParams {
    pub(super) fn validate(&self) -> IndexResult<()> {
        let bad = |what: &str| Err(IndexError::InvalidParameter(what.into()));
        if self.nlist == Some(0) {
            return bad("nlist must be at least 1");
        }
        if self.nprobe == Some(0) {
            return bad("nprobe must be at least 1");
        }
        if self.sample_per_list == 0 {
            return bad("sample_per_list must be at least 1");
        }
        Ok(())
    }
}

/// Fluent construction of an [`IvfIndex`].
///
/// ```
/// use vicinity::distance::Metric;
/// use vicinity::index::ivf::IvfBuilder;
/// use vicinity::index::{SearchParams, VectorIndex};
///
/// let vectors: Vec<f32> = (0..200).map(|i| ((i * 7919) % 101) as f32 + 1.0).collect();
/// let ids: Vec<u64> = (0..100).collect();
/// let index = IvfBuilder::new(Metric::L2, 2)
///     .nlist(8)
///     .seed(42)
///     .build_with(&ids, &vectors)
///     .unwrap();
/// let hits = index.search(&vectors[..2], 3, &SearchParams::default(), None).unwrap();
/// assert_eq!(hits[0].id, 0);
/// ```
#[derive(Clone, Debug)]
pub struct IvfBuilder {
    metric: Metric,
    dim: usize,
    params: IvfParams,
}

impl IvfBuilder {
    /// A builder with default [`IvfParams`].
    pub fn new(metric: Metric, dim: usize) -> Self {
        IvfBuilder {
            metric,
            dim,
            params: IvfParams::default(),
        }
    }

    /// Replaces all parameters.
    pub fn params(mut self, params: IvfParams) -> Self {
        self.params = params;
        self
    }

    /// Sets the number of lists (see [`IvfParams::nlist`]).
    pub fn nlist(mut self, nlist: usize) -> Self {
        self.params.nlist = Some(nlist);
        self
    }

    /// Sets the default number of lists probed per query (see [`IvfParams::nprobe`]).
    pub fn nprobe(mut self, nprobe: usize) -> Self {
        self.params.nprobe = Some(nprobe);
        self
    }

    /// Sets the maximum number of Lloyd iterations.
    pub fn iterations(mut self, iterations: usize) -> Self {
        self.params.iterations = iterations;
        self
    }

    /// Sets the seed of training.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }

    /// Sets the per-list cap of the training sample.
    pub fn sample_per_list(mut self, sample_per_list: usize) -> Self {
        self.params.sample_per_list = sample_per_list;
        self
    }

    /// Sets the k-means initialisation.
    pub fn init(mut self, init: KMeansInit) -> Self {
        self.params.init = init;
        self
    }

    /// Sets the size at which an untrained index trains itself (`None`: never on its own).
    pub fn train_at(mut self, train_at: Option<usize>) -> Self {
        self.params.train_at = train_at;
        self
    }

    /// Sets whether rows are split into head and tail (see [`IvfParams::pca_split`]).
    pub fn pca_split(mut self, split: bool) -> Self {
        self.params.pca_split = split;
        self
    }

    /// An empty, untrained index.
    pub fn build(self) -> IndexResult<IvfIndex> {
        IvfIndex::new(self.metric, self.dim, self.params)
    }

    /// An index holding `vectors` under `ids` (as
    /// [`IndexMut::add`](crate::index::IndexMut::add) takes them), trained on them once,
    /// whatever [`IvfParams::train_at`] says. With no vectors it stays untrained.
    pub fn build_with(self, ids: &[u64], vectors: &[f32]) -> IndexResult<IvfIndex> {
        let mut index = self.build()?;
        index.insert(ids, vectors, false)?;
        if !index.is_empty() {
            index.train()?;
        }
        Ok(index)
    }
}
