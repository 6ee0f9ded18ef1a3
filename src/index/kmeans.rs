//! k-means clustering: the coarse quantiser of the IVF index, usable on its own.
//!
//! * **Initialisation**: k-means++ (D² sampling, the default) or `k` distinct random rows.
//! * **Lloyd iterations**: every row goes to its best centroid, then each centroid moves to the
//!   mean of its rows. Assignment runs in parallel (rayon) over blocks of rows, each block
//!   scored against every centroid with the crate's SIMD [`distance::dot`] kernel; the block
//!   keeps a centroid in L1 while it is reused by the block's rows.
//! * **Metrics**: under [`Metric::Cosine`] and [`Metric::Dot`] the clustering is *spherical*:
//!   a row goes to the centroid of highest inner product and centroids are renormalised after
//!   every update, so cells are cones around unit centroids. (Assigning by raw inner product to
//!   mean centroids, as a plain k-means under dot would, lets the centroids of largest norm
//!   capture most rows: the cells come out neither compact nor balanced, and an IVF index over
//!   them scans more vectors for the same recall.) Under cosine rows must be unit vectors, as
//!   [`Metric::preprocess`] leaves them; under dot they are used as given, so a row's cell
//!   depends on its direction only and centroids are norm-weighted means of their rows'
//!   directions. Under [`Metric::L2`] a row goes to the nearest centroid in Euclidean distance.
//! * **Head-first scoring** ([`KMeansParams::head`]): when rows hold most of their energy in
//!   their leading coordinates (the IVF index stores them in a principal-component basis), a
//!   row is scored against every centroid's head first; each head score brackets the full
//!   score (Cauchy–Schwarz on the tails), and only centroids whose upper bound reaches the
//!   best lower bound get their tail scored. The winner is the one whole-row scoring picks.
//! * **Empty clusters** are re-seeded after each update with the row of the currently largest
//!   cluster that lies farthest from its centre, splitting that cluster, so that no centroid is
//!   wasted.
//! * **Reproducible**: the same data, parameters and seed give the same centroids whatever the
//!   number of threads, because parallel work is split per row or per centroid and every sum is
//!   taken in row order.
//!
//! Scores inside this module follow the crate's convention (higher is closer). Euclidean
//! assignment is computed as `x·c − ‖c‖²/2`, which ranks centroids exactly as `−‖x − c‖²/2`
//! does, with one inner product per pair; spherical assignment is `x·c`.

use rand::prelude::*;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{IndexError, IndexResult};
use crate::distance::{self, Metric};

/// Rows scored together during assignment, and centroids per group they are scored against:
/// at 384 dimensions a block fills 12 KiB and a group 24 KiB, so both stay in L1 while the
/// block's rows run through the group.
const ASSIGN_BLOCK: usize = 8;
const CENTROID_GROUP: usize = 16;

/// `out[i] = dot(query, row i)` for the `out.len()` rows of `query.len()` values in `rows`:
/// one vector against contiguous rows, on the crate's SIMD inner product.
///
/// # Panics
/// If `rows` holds fewer than `out.len()` rows.
#[inline]
pub(crate) fn dot_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    assert!(
        rows.len() >= out.len() * query.len(),
        "dot_rows: too few rows"
    );
    let dot = distance::kernels().dot;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(query.len())) {
        *o = dot(query, row);
    }
}

/// How the first centroids are chosen.
///
/// Measured on 100k embedding-like vectors with 1,265 clusters, both reach the same IVF recall
/// after 15–20 iterations; k-means++ then only adds its cost, hence the default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KMeansInit {
    /// k-means++: each new centroid is a row drawn with probability proportional to its squared
    /// distance from the nearest centroid chosen so far. Costs about one Lloyd iteration's
    /// worth of distance computations, but in `k` sequential steps; guards against poor local
    /// optima when clusters are few and well separated.
    KMeansPlusPlus,
    /// `k` distinct rows drawn uniformly at random. Free; relies on the Lloyd iterations and on
    /// empty-cluster re-seeding to spread the centroids.
    #[default]
    Random,
}

/// Parameters of a k-means run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KMeansParams {
    /// Number of clusters; at least 1 and at most the number of rows.
    pub k: usize,
    /// Maximum number of Lloyd iterations, each an update of the centroids followed by an
    /// assignment of the rows (0 keeps the initial centroids). Iterations stop early once an
    /// assignment changes no row's cluster.
    pub iterations: usize,
    /// Seed of the random choices of the initialisation.
    pub seed: u64,
    /// How the first centroids are chosen.
    pub init: KMeansInit,
    /// Rows hold most of their energy in this many leading coordinates (as after a
    /// principal-component rotation): assignment then scores these first and completes a
    /// score only where a bound says the centroid could still win. Same clusters, up to float
    /// rounding; `None` (or the full dimension) scores whole rows.
    pub head: Option<usize>,
}

impl KMeansParams {
    /// `k` clusters with 15 iterations, random initialisation, seed 0 and whole-row scoring.
    pub fn new(k: usize) -> Self {
        KMeansParams {
            k,
            iterations: 15,
            seed: 0,
            init: KMeansInit::default(),
            head: None,
        }
    }
}

/// A set of trained centroids and the rule that assigns rows to them.
#[derive(Clone, Debug)]
pub struct KMeans {
    metric: Metric,
    dim: usize,
    /// `k × dim` row-major centroids; unit length under cosine and dot.
    centroids: Vec<f32>,
    /// Per-centroid term added to `x·c` to rank centroids: `−‖c‖²/2` for Euclidean
    /// assignment (L2), 0 for spherical assignment (cosine and dot).
    bias: Vec<f32>,
    /// Lloyd iterations run before stopping (at most the requested number).
    iterations_run: usize,
    /// Leading coordinates scored first (`dim`: whole rows).
    head: usize,
    /// With a head shorter than `dim`: the centroids' heads (`k × head`), tails
    /// (`k × (dim − head)`) and tail norms, each contiguous.
    heads: Vec<f32>,
    tails: Vec<f32>,
    tail_norms: Vec<f32>,
}

/// Relative slack on head-first bounds, far above the rounding of an inner product over a
/// tail, so that a bound never rules out a centroid (or row) whose computed score would win.
pub(crate) const BOUND_SLACK: f32 = 1e-4;

/// How much rounding can move a score near `score` when it is summed from parts.
#[inline]
pub(crate) fn rounding(score: f32) -> f32 {
    f32::EPSILON * 4.0 * score.abs()
}

impl KMeans {
    /// Clusters `data` (row-major, `dim` columns) into `params.k` clusters.
    ///
    /// Under [`Metric::Cosine`] the rows must be unit vectors. Errors when `dim` is 0, `data`
    /// is not a whole number of rows, or `k` is 0 or exceeds the number of rows.
    pub fn train(
        metric: Metric,
        dim: usize,
        data: &[f32],
        params: &KMeansParams,
    ) -> IndexResult<KMeans> {
        Ok(KMeans::fit(metric, dim, data, params)?.0)
    }

    /// [`train`](Self::train), also returning each row's cluster under the final centroids (as
    /// [`assign`](Self::assign) would compute it), which the last iteration computes anyway.
    pub fn fit(
        metric: Metric,
        dim: usize,
        data: &[f32],
        params: &KMeansParams,
    ) -> IndexResult<(KMeans, Vec<u32>)> {
        super::validate::check_batch_shape(dim, None, data)?;
        let n = data.len() / dim;
        if params.k == 0 || params.k > n {
            return Err(IndexError::InvalidParameter(format!(
                "k-means needs 1 <= k <= rows, got k = {} for {n} rows",
                params.k
            )));
        }
        let mut rng = SmallRng::seed_from_u64(params.seed);
        let centroids = match params.init {
            KMeansInit::KMeansPlusPlus => init_plus_plus(metric, dim, data, params.k, &mut rng),
            KMeansInit::Random => init_random(dim, data, params.k, &mut rng),
        };
        let mut km = KMeans::from_centroids_unchecked(metric, dim, centroids);
        km.head = params.head.map_or(dim, |h| h.clamp(1, dim));
        km.normalise_if_spherical();
        km.refresh_derived();
        let mut labels = vec![u32::MAX; n];
        km.assign_into(data, &mut labels);
        // Each iteration is an update then an assignment, so the labels always belong to the
        // current centroids.
        for it in 0..params.iterations {
            km.update(data, &labels);
            km.iterations_run = it + 1;
            if km.assign_into(data, &mut labels) == 0 {
                break;
            }
        }
        Ok((km, labels))
    }

    /// Wraps centroids computed elsewhere (for instance read back from a snapshot). Errors when
    /// they are not a whole, non-empty number of rows of `dim`, or hold a non-finite value.
    pub fn from_centroids(metric: Metric, dim: usize, centroids: Vec<f32>) -> IndexResult<KMeans> {
        super::validate::check_batch_shape(dim, None, &centroids)?;
        if centroids.is_empty() {
            return Err(IndexError::InvalidParameter(
                "k-means needs at least one centroid".into(),
            ));
        }
        if centroids.iter().any(|x| !x.is_finite()) {
            return Err(IndexError::InvalidParameter(
                "centroids must be finite".into(),
            ));
        }
        Ok(KMeans::from_centroids_unchecked(metric, dim, centroids))
    }

    fn from_centroids_unchecked(metric: Metric, dim: usize, centroids: Vec<f32>) -> KMeans {
        let mut km = KMeans {
            metric,
            dim,
            bias: Vec::new(),
            centroids,
            iterations_run: 0,
            head: dim,
            heads: Vec::new(),
            tails: Vec::new(),
            tail_norms: Vec::new(),
        };
        km.refresh_derived();
        km
    }

    /// The same centroids, scored head-first over `head` leading coordinates (see
    /// [`KMeansParams::head`]); `head` is clamped to `1..=dim`.
    pub fn with_head(mut self, head: usize) -> KMeans {
        self.head = head.clamp(1, self.dim);
        self.refresh_derived();
        self
    }

    /// Leading coordinates scored first (the dimension when whole rows are scored).
    pub fn head(&self) -> usize {
        self.head
    }

    /// With a head shorter than the dimension: the centroids' heads (`k × head`), tails
    /// (`k × (dim − head)`) and tail norms.
    pub(crate) fn split_parts(&self) -> Option<(&[f32], &[f32], &[f32])> {
        (self.head < self.dim).then_some((&self.heads, &self.tails, &self.tail_norms))
    }

    /// Number of centroids.
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim
    }

    /// Dimension of the centroids.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The metric the clustering was trained for.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// The centroids, `k × dim` row-major.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// Centroid `i`.
    pub fn centroid(&self, i: usize) -> &[f32] {
        &self.centroids[i * self.dim..(i + 1) * self.dim]
    }

    /// The term added to `x·c` to rank centroid `c` for assignment: `−‖c‖²/2` for L2, 0 for
    /// cosine and dot.
    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Lloyd iterations that ran (fewer than requested when the assignment converged).
    pub fn iterations_run(&self) -> usize {
        self.iterations_run
    }

    /// Heap bytes held.
    pub fn memory_bytes(&self) -> usize {
        (self.centroids.capacity()
            + self.bias.capacity()
            + self.heads.capacity()
            + self.tails.capacity()
            + self.tail_norms.capacity())
            * size_of::<f32>()
    }

    /// The cluster `v` belongs to (ties go to the lower index). `v` must have length
    /// [`dim`](Self::dim) and, under cosine, unit length.
    ///
    /// # Panics
    /// If `v` has the wrong length.
    pub fn nearest(&self, v: &[f32]) -> usize {
        assert_eq!(v.len(), self.dim, "k-means nearest: wrong dimension");
        if self.head < self.dim {
            return self.nearest_split(v, &mut vec![0.0; self.k()]) as usize;
        }
        let mut best = [(0u32, f32::NEG_INFINITY)];
        self.assign_block(v, &mut best);
        best[0].0 as usize
    }

    /// The cluster of every row of `data`, computed in parallel.
    ///
    /// # Panics
    /// If `data` is not a whole number of rows.
    pub fn assign(&self, data: &[f32]) -> Vec<u32> {
        assert!(
            data.len().is_multiple_of(self.dim),
            "k-means assign: data is not a whole number of rows"
        );
        let mut labels = vec![u32::MAX; data.len() / self.dim];
        self.assign_into(data, &mut labels);
        labels
    }

    /// Assigns every row, writing `labels`; returns how many labels changed.
    fn assign_into(&self, data: &[f32], labels: &mut [u32]) -> usize {
        if self.head < self.dim {
            return data
                .par_chunks(self.dim)
                .zip(labels.par_iter_mut())
                .map_init(
                    || vec![0.0f32; self.k()],
                    |scores, (row, label)| {
                        let c = self.nearest_split(row, scores);
                        let changed = usize::from(*label != c);
                        *label = c;
                        changed
                    },
                )
                .sum();
        }
        data.par_chunks(self.dim * ASSIGN_BLOCK)
            .zip(labels.par_chunks_mut(ASSIGN_BLOCK))
            .map(|(rows, labels)| {
                let mut best = [(0u32, f32::NEG_INFINITY); ASSIGN_BLOCK];
                let best = &mut best[..labels.len()];
                self.assign_block(rows, best);
                let mut changed = 0;
                for (l, &(c, _)) in labels.iter_mut().zip(best.iter()) {
                    changed += usize::from(*l != c);
                    *l = c;
                }
                changed
            })
            .sum()
    }

    /// Best centroid and score for each row of `rows`; `best` must start at `(0, −∞)`.
    /// Centroids are taken in groups small enough to stay in L1 while every row of the block
    /// is scored against them.
    fn assign_block(&self, rows: &[f32], best: &mut [(u32, f32)]) {
        let mut scores = [0.0f32; CENTROID_GROUP];
        for (g, (group, bias)) in self
            .centroids
            .chunks(self.dim * CENTROID_GROUP)
            .zip(self.bias.chunks(CENTROID_GROUP))
            .enumerate()
        {
            let scores = &mut scores[..bias.len()];
            for (row, slot) in rows.chunks_exact(self.dim).zip(best.iter_mut()) {
                dot_rows(row, group, scores);
                for (j, (&s, &b)) in scores.iter().zip(bias).enumerate() {
                    let s = s + b;
                    // Strict comparison: ties keep the lower index, and a NaN score (only from
                    // overflowing inputs) never wins.
                    if s > slot.1 {
                        *slot = ((g * CENTROID_GROUP + j) as u32, s);
                    }
                }
            }
        }
    }

    /// The best centroid for `row` (ties to the lower index), head-first: every centroid's
    /// head score gives a lower and an upper bound on its full score (Cauchy–Schwarz on the
    /// tails), and full scores are completed only for centroids whose upper bound reaches the
    /// best lower bound. `scores` is scratch space of `k` values.
    fn nearest_split(&self, row: &[f32], scores: &mut [f32]) -> u32 {
        let (head, tail) = row.split_at(self.head);
        let t = tail.len();
        dot_rows(head, &self.heads, scores);
        let tail_norm = distance::dot(tail, tail).sqrt() * (1.0 + BOUND_SLACK);
        let mut floor = f32::NEG_INFINITY;
        for ((s, &b), &n) in scores.iter_mut().zip(&self.bias).zip(&self.tail_norms) {
            *s += b;
            floor = floor.max(*s - tail_norm * n - rounding(*s));
        }
        let mut best = (0u32, f32::NEG_INFINITY);
        for (c, (&s, &n)) in scores.iter().zip(&self.tail_norms).enumerate() {
            if s + tail_norm * n + rounding(s) < floor {
                continue;
            }
            let full = s + distance::dot(tail, &self.tails[c * t..(c + 1) * t]);
            // Strict comparison: ties keep the lower index, and NaN never wins.
            if full > best.1 {
                best = (c as u32, full);
            }
        }
        best.0
    }

    /// Moves each centroid to the mean of its rows and re-seeds empty clusters.
    fn update(&mut self, data: &[f32], labels: &[u32]) {
        let dim = self.dim;
        let k = self.k();
        // Counting sort of the rows by cluster, so that each centroid's sum can be computed
        // independently (in parallel) and always in row order (reproducible).
        let mut offsets = vec![0usize; k + 1];
        for &l in labels {
            offsets[l as usize + 1] += 1;
        }
        for c in 0..k {
            offsets[c + 1] += offsets[c];
        }
        let mut members = vec![0u32; labels.len()];
        let mut next = offsets.clone();
        for (i, &l) in labels.iter().enumerate() {
            members[next[l as usize]] = i as u32;
            next[l as usize] += 1;
        }
        let spherical = self.is_spherical();
        self.centroids
            .par_chunks_mut(dim)
            .enumerate()
            .for_each(|(c, centroid)| {
                let rows = &members[offsets[c]..offsets[c + 1]];
                if rows.is_empty() {
                    return;
                }
                let mut acc = vec![0.0f64; dim];
                for &r in rows {
                    let row = &data[r as usize * dim..(r as usize + 1) * dim];
                    acc.iter_mut()
                        .zip(row)
                        .for_each(|(a, &x)| *a += f64::from(x));
                }
                let inv = 1.0 / rows.len() as f64;
                centroid
                    .iter_mut()
                    .zip(&acc)
                    .for_each(|(x, &a)| *x = (a * inv) as f32);
                if spherical && !Metric::Cosine.preprocess(centroid) {
                    // The members cancel out (say x and −x): any member is a fair centre.
                    let first = rows[0] as usize;
                    centroid.copy_from_slice(&data[first * dim..(first + 1) * dim]);
                    Metric::Cosine.preprocess(centroid);
                }
            });
        let mut sizes: Vec<usize> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let mut reseeded: Vec<usize> = Vec::new();
        for c in 0..k {
            if sizes[c] != 0 {
                continue;
            }
            let (big, &big_size) = sizes
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
                .expect("k >= 1. This is a bug.");
            if big_size < 2 {
                // Fewer distinct groups than clusters: nothing left to split.
                break;
            }
            // The member farthest from the large cluster's centre splits it along its widest
            // extent; rows already used as seeds this round are skipped.
            let centre = &self.centroids[big * dim..(big + 1) * dim];
            let far = members[offsets[big]..offsets[big + 1]]
                .iter()
                .map(|&r| r as usize)
                .filter(|r| !reseeded.contains(r))
                .map(|r| (r, self.remoteness(&data[r * dim..(r + 1) * dim], centre)))
                .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
            let Some((r, _)) = far else { break };
            reseeded.push(r);
            let seed = &mut self.centroids[c * dim..(c + 1) * dim];
            seed.copy_from_slice(&data[r * dim..(r + 1) * dim]);
            if spherical {
                Metric::Cosine.preprocess(seed);
            }
            // Book-keeping only, so that successive empty clusters split different large ones.
            sizes[c] = big_size / 2;
            sizes[big] = big_size - big_size / 2;
        }
        self.refresh_derived();
    }

    /// Whether cells are cones around unit centroids (cosine and dot) rather than Euclidean.
    fn is_spherical(&self) -> bool {
        matches!(self.metric, Metric::Cosine | Metric::Dot)
    }

    /// How far `row` lies from `centre` (higher is farther): squared distance for Euclidean
    /// cells, `1 − cos` for spherical ones.
    fn remoteness(&self, row: &[f32], centre: &[f32]) -> f32 {
        remoteness(self.metric, row, centre)
    }

    fn normalise_if_spherical(&mut self) {
        if self.is_spherical() {
            for c in self.centroids.chunks_exact_mut(self.dim) {
                // A zero row (possible under dot) stays zero: it scores 0 against every row
                // until the first update moves it.
                Metric::Cosine.preprocess(c);
            }
            self.refresh_derived();
        }
    }

    /// Recomputes what is derived from the centroids: biases and the head/tail split.
    fn refresh_derived(&mut self) {
        if self.head < self.dim {
            let (h, k) = (self.head, self.k());
            self.heads.clear();
            self.tails.clear();
            self.heads.reserve_exact(k * h);
            self.tails.reserve_exact(k * (self.dim - h));
            for c in self.centroids.chunks_exact(self.dim) {
                self.heads.extend_from_slice(&c[..h]);
                self.tails.extend_from_slice(&c[h..]);
            }
            self.tail_norms = self
                .tails
                .chunks_exact(self.dim - h)
                .map(|t| distance::dot(t, t).sqrt())
                .collect();
        } else {
            self.heads = Vec::new();
            self.tails = Vec::new();
            self.tail_norms = Vec::new();
        }
        let spherical = self.is_spherical();
        self.bias = self
            .centroids
            .chunks_exact(self.dim)
            .map(|c| {
                if spherical {
                    0.0
                } else {
                    -0.5 * distance::dot(c, c)
                }
            })
            .collect();
    }
}

/// `k` distinct rows chosen uniformly.
fn init_random(dim: usize, data: &[f32], k: usize, rng: &mut SmallRng) -> Vec<f32> {
    let n = data.len() / dim;
    let mut picks = rand::seq::index::sample(rng, n, k).into_vec();
    picks.sort_unstable();
    let mut centroids = Vec::with_capacity(k * dim);
    for r in picks {
        centroids.extend_from_slice(&data[r * dim..(r + 1) * dim]);
    }
    centroids
}

/// How far `row` lies from `centre` (higher is farther): squared Euclidean distance under L2,
/// `1 − cos` under cosine (rows and centres are unit: one inner product) and dot.
fn remoteness(metric: Metric, row: &[f32], centre: &[f32]) -> f32 {
    match metric {
        Metric::L2 => distance::l2_squared(row, centre),
        Metric::Cosine => 1.0 - distance::dot(row, centre),
        Metric::Dot => 1.0 - distance::cosine(row, centre),
    }
}

/// k-means++ seeding: D² sampling over all rows, with the remoteness from the nearest chosen
/// centroid kept per row and refreshed in parallel after each pick. Under dot, rows are
/// compared by direction (`1 − cos`, with the rows' norms computed once).
fn init_plus_plus(
    metric: Metric,
    dim: usize,
    data: &[f32],
    k: usize,
    rng: &mut SmallRng,
) -> Vec<f32> {
    let n = data.len() / dim;
    let inv_norms: Vec<f32> = match metric {
        Metric::Dot => data
            .par_chunks(dim)
            .map(|r| {
                let norm = distance::dot(r, r).sqrt();
                if norm > 0.0 { 1.0 / norm } else { 0.0 }
            })
            .collect(),
        Metric::Cosine | Metric::L2 => Vec::new(),
    };
    let mut centroids = Vec::with_capacity(k * dim);
    let mut last_row = rng.random_range(0..n);
    centroids.extend_from_slice(&data[last_row * dim..(last_row + 1) * dim]);
    let mut nearest = vec![f32::INFINITY; n];
    for j in 1..=k {
        let last = &centroids[(j - 1) * dim..j * dim];
        let last_inv = inv_norms.get(last_row).copied().unwrap_or(0.0);
        nearest
            .par_iter_mut()
            .zip(data.par_chunks(dim))
            .enumerate()
            .for_each(|(i, (d, row))| {
                let r = match metric {
                    Metric::L2 => distance::l2_squared(row, last),
                    Metric::Cosine => 1.0 - distance::dot(row, last),
                    Metric::Dot => 1.0 - distance::dot(row, last) * inv_norms[i] * last_inv,
                };
                // max(0): rounding can make 1 − cos slightly negative for a row and itself.
                *d = d.min(r.max(0.0));
            });
        if j == k {
            break;
        }
        // Sequential sums keep the draw independent of the thread count.
        let total: f64 = nearest.iter().map(|&d| f64::from(d)).sum();
        let pick = if total > 0.0 && total.is_finite() {
            let mut target = rng.random::<f64>() * total;
            let mut pick = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                target -= f64::from(d);
                if target < 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        } else {
            // Every row coincides with a chosen centroid (or distances overflowed): any row
            // will do, and the update step re-seeds the duplicates it creates.
            rng.random_range(0..n)
        };
        last_row = pick;
        centroids.extend_from_slice(&data[pick * dim..(pick + 1) * dim]);
    }
    centroids
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three blobs in 2-d, 30 rows each, separated both in distance and in direction.
    fn blobs() -> Vec<f32> {
        let centres = [(10.0f32, 0.0f32), (-5.0, 8.66), (-5.0, -8.66)];
        let mut rng = SmallRng::seed_from_u64(5);
        let mut out = Vec::new();
        for _ in 0..30 {
            for &(x, y) in &centres {
                out.push(x + rng.random_range(-1.0..1.0));
                out.push(y + rng.random_range(-1.0..1.0));
            }
        }
        out
    }

    #[test]
    fn finds_separated_blobs_with_either_init() {
        for init in [KMeansInit::KMeansPlusPlus, KMeansInit::Random] {
            for metric in [Metric::L2, Metric::Dot, Metric::Cosine] {
                let mut data = blobs();
                data.chunks_exact_mut(2).for_each(|r| {
                    metric.preprocess(r);
                });
                let params = KMeansParams {
                    init,
                    seed: 3,
                    ..KMeansParams::new(3)
                };
                let km = KMeans::train(metric, 2, &data, &params).unwrap();
                let labels = km.assign(&data);
                // Rows cycle through the three blobs: every blob must map to one cluster and
                // the three clusters must differ.
                let blob_labels: Vec<u32> = (0..3).map(|b| labels[b]).collect();
                for (i, &l) in labels.iter().enumerate() {
                    assert_eq!(l, blob_labels[i % 3], "{init:?} {metric}: row {i}");
                }
                assert_ne!(blob_labels[0], blob_labels[1]);
                assert_ne!(blob_labels[1], blob_labels[2]);
                assert_ne!(blob_labels[0], blob_labels[2]);
            }
        }
    }

    #[test]
    fn spherical_centroids_are_unit_and_reproducible() {
        let mut data = crate::testing::clustered_vectors(600, 16, 6, 0.3, 11);
        for row in data.chunks_exact_mut(16) {
            assert!(Metric::Cosine.preprocess(row));
        }
        let params = KMeansParams {
            seed: 9,
            ..KMeansParams::new(6)
        };
        let a = KMeans::train(Metric::Cosine, 16, &data, &params).unwrap();
        for c in a.centroids().chunks_exact(16) {
            let norm = distance::dot(c, c).sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
        }
        let b = KMeans::train(Metric::Cosine, 16, &data, &params).unwrap();
        assert_eq!(a.centroids(), b.centroids());
        // Every row is at its nearest centroid after convergence-bound training.
        let labels = a.assign(&data);
        for (row, &l) in data.chunks_exact(16).zip(&labels) {
            assert_eq!(a.nearest(row), l as usize);
        }
    }

    #[test]
    fn reseeds_empty_clusters() {
        // Two distinct points, each repeated: random initialisation often picks the first point
        // twice, leaving one cluster empty; re-seeding must still separate the two points.
        let mut data = Vec::new();
        for _ in 0..20 {
            data.extend_from_slice(&[0.0, 0.0]);
        }
        for _ in 0..5 {
            data.extend_from_slice(&[5.0, 5.0]);
        }
        for seed in 0..20 {
            let params = KMeansParams {
                seed,
                init: KMeansInit::Random,
                ..KMeansParams::new(2)
            };
            let km = KMeans::train(Metric::L2, 2, &data, &params).unwrap();
            let labels = km.assign(&data);
            assert_ne!(labels[0], labels[24], "seed {seed}");
        }
    }

    /// Head-first assignment picks the centroid whole-row assignment picks, except where two
    /// centroids tie to within rounding.
    #[test]
    fn head_first_assignment_matches_whole_rows() {
        let dim = 48;
        let mut data = crate::testing::random_vectors(3000, dim, 21);
        // Most energy in the first 8 coordinates, as after a principal-component rotation.
        data.chunks_exact_mut(dim)
            .for_each(|r| r[8..].iter_mut().for_each(|x| *x *= 0.1));
        for metric in [Metric::L2, Metric::Dot] {
            let whole = KMeans::train(metric, dim, &data, &KMeansParams::new(40)).unwrap();
            let split = whole.clone().with_head(8);
            assert_eq!(split.head(), 8);
            let (a, b) = (whole.assign(&data), split.assign(&data));
            for (row, (&x, &y)) in data.chunks_exact(dim).zip(a.iter().zip(&b)) {
                if x != y {
                    let score = |c: u32| {
                        distance::dot(row, whole.centroid(c as usize)) + whole.bias()[c as usize]
                    };
                    assert!((score(x) - score(y)).abs() < 1e-5, "{metric}: {x} vs {y}");
                }
                assert_eq!(split.nearest(row) as u32, y);
            }
            let params = KMeansParams {
                head: Some(8),
                ..KMeansParams::new(40)
            };
            let trained = KMeans::train(metric, dim, &data, &params).unwrap();
            assert_eq!(trained.head(), 8);
            assert!(trained.split_parts().is_some());
        }
    }

    #[test]
    fn rejects_bad_parameters_and_handles_k_equal_n() {
        let data = [1.0f32, 0.0, 0.0, 1.0];
        assert!(KMeans::train(Metric::L2, 2, &data, &KMeansParams::new(0)).is_err());
        assert!(KMeans::train(Metric::L2, 2, &data, &KMeansParams::new(3)).is_err());
        assert!(KMeans::train(Metric::L2, 0, &data, &KMeansParams::new(1)).is_err());
        assert!(KMeans::train(Metric::L2, 3, &data, &KMeansParams::new(1)).is_err());
        let km = KMeans::train(Metric::L2, 2, &data, &KMeansParams::new(2)).unwrap();
        let mut labels = km.assign(&data);
        labels.sort_unstable();
        assert_eq!(labels, vec![0, 1]);
        assert!(KMeans::from_centroids(Metric::L2, 2, vec![f32::NAN, 0.0]).is_err());
        assert!(KMeans::from_centroids(Metric::L2, 2, vec![]).is_err());
    }
}
