//! The alternative builder: constructs the graph with the `hnsw_rs` crate, then freezes its
//! neighbour lists into the compact [`Graph`] and drops the `hnsw_rs` structure. Searches then
//! run on our layout whichever builder made it.
//!
//! `hnsw_rs` has sharp edges that this module keeps away from the index:
//! * it wants a distance (lower is closer) that is never negative and never NaN (it asserts on
//!   the first and panics on the second): [`SimilarityDistance`] turns our similarity into such a
//!   distance, shifting inner products by the largest squared norm and clamping rounding
//!   residue;
//! * it does not check ids for uniqueness: it only ever sees our internal node numbers, which
//!   are unique by construction;
//! * it records, for a node, neighbours on levels above the node's own (left over from its
//!   descent), and a few of its lists name the node itself or nodes absent from that level;
//!   those are dropped.

use hnsw_rs::anndists::dist::Distance;
use hnsw_rs::hnsw::Hnsw;

use super::graph::{Entry, Graph, MAX_LEVEL};
use super::search::Scorer;
use super::store::VectorStore;
use crate::distance::Metric;

/// Our similarity as an `hnsw_rs` distance: `1 − cos` for cosine, `‖v‖²max − a·b` for inner
/// products, the squared distance for L2; clamped to `[0, f32::MAX]`, NaN mapped to `f32::MAX`.
/// Every mapping is a decreasing function of the score, so neighbour order is unchanged.
pub(super) struct SimilarityDistance {
    scorer: Scorer,
    metric: Metric,
    offset: f32,
}

impl SimilarityDistance {
    /// The adapter for `metric` over the rows of `vectors`.
    pub(super) fn new(metric: Metric, vectors: &VectorStore) -> Self {
        let offset = match metric {
            Metric::Cosine => 1.0,
            Metric::Dot => (0..vectors.len() as u32)
                .map(|i| {
                    let v = vectors.row(i);
                    crate::distance::dot(v, v)
                })
                .fold(0.0f32, f32::max),
            Metric::L2 => 0.0,
        };
        SimilarityDistance {
            scorer: Scorer::new(metric),
            metric,
            offset,
        }
    }
}

impl Distance<f32> for SimilarityDistance {
    fn eval(&self, va: &[f32], vb: &[f32]) -> f32 {
        let s = self.scorer.score(va, vb);
        let d = match self.metric {
            // score = −‖a − b‖², so the distance is −score.
            Metric::L2 => -s,
            Metric::Cosine | Metric::Dot => self.offset - s,
        };
        if d.is_nan() {
            f32::MAX
        } else {
            d.clamp(0.0, f32::MAX)
        }
    }
}

/// Builds a graph over every row of `vectors` (node `i` is row `i`) with `hnsw_rs`, inserting in
/// parallel on the current rayon pool, and returns it in the compact layout.
pub(super) fn build(
    metric: Metric,
    vectors: &VectorStore,
    m: usize,
    ef_construction: usize,
) -> Graph {
    let n = vectors.len();
    let graph = Graph::new(m);
    if n == 0 {
        return graph;
    }
    let rows = vectors.to_vec();
    let dim = rows.len() / n;
    let hnsw: Hnsw<'_, f32, SimilarityDistance> = Hnsw::new(
        m,
        n,
        MAX_LEVEL,
        ef_construction,
        SimilarityDistance::new(metric, vectors),
    );
    let data: Vec<(&[f32], usize)> = rows
        .chunks_exact(dim)
        .enumerate()
        .map(|(i, v)| (v, i))
        .collect();
    hnsw.parallel_insert_slice(&data);
    drop(data);

    // Freeze: levels first (they size the lists), then every list.
    let points = hnsw.get_point_indexation();
    let mut levels = vec![0u8; n];
    let mut lists: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
    for point in points {
        let node = point.get_origin_id();
        let level = usize::from(point.get_point_id().0).min(MAX_LEVEL);
        levels[node] = level as u8;
        lists[node] = point
            .get_neighborhood_id()
            .into_iter()
            .take(level + 1)
            .map(|layer| layer.iter().map(|nb| nb.get_origin_id() as u32).collect())
            .collect();
    }
    let top = usize::from(hnsw.get_max_level_observed()).min(MAX_LEVEL);
    let entry = points
        .get_layer_iterator(top)
        .next()
        .map(|p| p.get_origin_id() as u32)
        .or_else(|| {
            levels
                .iter()
                .position(|&l| usize::from(l) == top)
                .map(|i| i as u32)
        })
        .expect("a non-empty hnsw_rs graph has a point on its top layer");
    drop(hnsw);

    graph.push_nodes(&levels);
    for (node, per_level) in lists.iter_mut().enumerate() {
        for (level, list) in per_level.iter_mut().enumerate() {
            // hnsw_rs's lists occasionally name the node itself or a node that does not live on
            // that level; searching through the latter would leave the level.
            list.retain(|&n| usize::from(levels[n as usize]) >= level && n as usize != node);
            graph.set_neighbours(node as u32, level, list);
        }
    }
    graph.set_entry(Some(Entry {
        node: entry,
        level: usize::from(levels[entry as usize]),
    }));
    graph
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_distances_are_ordered_and_never_negative_or_nan() {
        let rows = [1.0f32, 0.0, 0.6, 0.8, -1.0, 0.0];
        let store = VectorStore::from_rows(2, &rows);
        for metric in [Metric::Cosine, Metric::Dot, Metric::L2] {
            let d = SimilarityDistance::new(metric, &store);
            let a = &rows[0..2];
            let near = d.eval(a, &rows[2..4]);
            let far = d.eval(a, &rows[4..6]);
            assert!(d.eval(a, a) >= 0.0 && near >= 0.0 && far >= 0.0, "{metric}");
            assert!(d.eval(a, a) <= near && near < far, "{metric}");
        }
        // Rounding can push 1 − cos of a vector with itself below zero; it is clamped.
        let v = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7];
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let u: Vec<f32> = v.iter().map(|x| x / n).collect();
        let store = VectorStore::from_rows(7, &u);
        assert!(SimilarityDistance::new(Metric::Cosine, &store).eval(&u, &u) >= 0.0);
        let huge = [f32::MAX, f32::MAX];
        let neg = [f32::MAX, -f32::MAX];
        let d = SimilarityDistance::new(Metric::Dot, &VectorStore::from_rows(2, &huge));
        assert!(!d.eval(&huge, &neg).is_nan());
    }
}
