//! The approximate indexes behind one type: [`AnnIndex`] is an HNSW graph or an IVF index,
//! built from [`AnnParams`], loaded from a snapshot of either kind, and used through
//! [`VectorIndex`]/[`IndexMut`] like any index.

use std::path::Path;

use super::hnsw::{HnswBuilder, HnswIndex, HnswParams, Quantization};
use super::io::SnapshotReader;
use super::ivf::{IvfIndex, IvfParams};
use super::{Filter, Hit, IndexError, IndexKind, IndexMut, IndexResult, SearchParams, VectorIndex};
use crate::distance::Metric;

/// Tombstones, as a fraction of an HNSW graph's nodes, above which it is worth rebuilding.
const COMPACT_TOMBSTONE_RATIO: f64 = 0.25;

/// Which approximate index to build, with its parameters; `None` takes the index's default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnParams {
    /// [`IndexKind::Hnsw`] or [`IndexKind::Ivf`].
    pub kind: IndexKind,
    /// HNSW: links per node.
    pub m: Option<usize>,
    /// HNSW: build breadth.
    pub ef_construction: Option<usize>,
    /// HNSW: default search breadth; `None` grows it with the graph's size
    /// ([`default_ef`](super::hnsw::default_ef)).
    pub ef: Option<usize>,
    /// IVF: number of cells.
    pub nlist: Option<usize>,
    /// IVF: default cells scanned per query.
    pub nprobe: Option<usize>,
    /// HNSW: what the traversal scores (full-precision vectors or int8 codes).
    pub quantization: Quantization,
}

impl AnnParams {
    /// HNSW with its default parameters filled in (`ef` stays `None`: it depends on the size).
    pub fn defaults() -> AnnParams {
        let h = HnswParams::default();
        AnnParams {
            kind: IndexKind::Hnsw,
            m: Some(h.m),
            ef_construction: Some(h.ef_construction),
            ef: h.ef_search,
            nlist: None,
            nprobe: None,
            quantization: h.quantization,
        }
    }

    fn hnsw(&self) -> HnswParams {
        let d = HnswParams::default();
        HnswParams {
            m: self.m.unwrap_or(d.m),
            ef_construction: self.ef_construction.unwrap_or(d.ef_construction),
            ef_search: self.ef.or(d.ef_search),
            // Compaction is the owner's decision (see `wants_compaction`): an automatic rebuild
            // inside `remove` would stall whoever holds the index for the whole build.
            max_tombstone_ratio: 1.0,
            quantization: self.quantization,
            ..d
        }
    }

    fn ivf(&self) -> IvfParams {
        IvfParams {
            nlist: self.nlist,
            nprobe: self.nprobe,
            ..IvfParams::default()
        }
    }
}

/// An approximate index of either kind.
#[derive(Debug)]
pub enum AnnIndex {
    /// A hierarchical navigable small-world graph.
    Hnsw(Box<HnswIndex>),
    /// An inverted file over k-means cells.
    Ivf(Box<IvfIndex>),
}

impl AnnIndex {
    /// Builds an index over `vectors` (row-major, one row per id), in parallel on the current
    /// rayon pool.
    pub fn build(
        params: &AnnParams,
        metric: Metric,
        dim: usize,
        ids: &[u64],
        vectors: &[f32],
    ) -> IndexResult<AnnIndex> {
        match params.kind {
            IndexKind::Hnsw => Ok(AnnIndex::Hnsw(Box::new(
                HnswBuilder::new()
                    .params(params.hnsw())
                    .build_with(metric, dim, ids, vectors)?,
            ))),
            IndexKind::Ivf => Ok(AnnIndex::Ivf(Box::new(
                IvfIndex::builder(metric, dim)
                    .params(params.ivf())
                    .build_with(ids, vectors)?,
            ))),
            IndexKind::Flat => Err(IndexError::InvalidParameter(
                "a flat index is not an approximate index".into(),
            )),
        }
    }

    /// Loads a snapshot of either kind.
    pub fn load(dir: &Path) -> IndexResult<AnnIndex> {
        let reader = SnapshotReader::open(dir)?;
        match reader.manifest().kind {
            IndexKind::Hnsw => Ok(AnnIndex::Hnsw(Box::new(HnswIndex::load(dir)?))),
            IndexKind::Ivf => Ok(AnnIndex::Ivf(Box::new(IvfIndex::load(dir)?))),
            IndexKind::Flat => Err(IndexError::corrupt(
                dir,
                "holds a flat index, not an approximate one",
            )),
        }
    }

    /// Whether rebuilding from the live vectors would pay off: an HNSW graph carrying many
    /// tombstones, or an IVF index that has outgrown the data it was trained on.
    pub fn wants_compaction(&self) -> bool {
        match self {
            AnnIndex::Hnsw(h) => {
                let total = h.len() + h.tombstones();
                total > 0 && h.tombstones() as f64 > COMPACT_TOMBSTONE_RATIO * total as f64
            }
            AnnIndex::Ivf(i) => i.needs_retrain(),
        }
    }

    /// Whether the index takes insertions and removals while it is searched
    /// ([`insert_shared`](Self::insert_shared), [`remove_shared`](Self::remove_shared)).
    pub fn changes_while_searched(&self) -> bool {
        matches!(self, AnnIndex::Hnsw(_))
    }

    /// Adds vectors while searches of this same index run, when its kind can (HNSW, see
    /// [`HnswIndex::insert`]); `None` when the change needs exclusive access ([`IndexMut::add`]).
    pub fn insert_shared(&self, ids: &[u64], vectors: &[f32]) -> Option<IndexResult<()>> {
        match self {
            AnnIndex::Hnsw(h) => Some(h.insert(ids, vectors)),
            AnnIndex::Ivf(_) => None,
        }
    }

    /// Removes ids while searches of this same index run, when its kind can (HNSW, see
    /// [`HnswIndex::delete`]); `None` when the change needs exclusive access
    /// ([`IndexMut::remove`]). Returns how many were live.
    pub fn remove_shared(&self, ids: &[u64]) -> Option<usize> {
        match self {
            AnnIndex::Hnsw(h) => Some(h.delete(ids)),
            AnnIndex::Ivf(_) => None,
        }
    }

    /// The stored vectors of those of `ids` the index holds (see [`HnswIndex::stored_rows`]),
    /// when its kind keeps them as given: an HNSW graph does; an IVF index (`None`) keeps them
    /// rotated and in list order.
    pub fn stored_vectors(&self, ids: &[u64]) -> Option<(Vec<u64>, Vec<f32>)> {
        match self {
            AnnIndex::Hnsw(h) => Some(h.stored_rows(ids)),
            AnnIndex::Ivf(_) => None,
        }
    }

    /// Sets the default HNSW search breadth of an index loaded from a snapshot to its owner's
    /// current setting (`None`: grows with the size), since the snapshot carries the value it
    /// was saved with. An IVF index has no `ef` and is left as it is.
    pub fn set_default_ef(&mut self, ef: Option<usize>) -> IndexResult<()> {
        match self {
            AnnIndex::Hnsw(h) => h.set_ef_search(ef),
            AnnIndex::Ivf(_) => Ok(()),
        }
    }

    fn inner(&self) -> &dyn IndexMut {
        match self {
            AnnIndex::Hnsw(h) => h.as_ref(),
            AnnIndex::Ivf(i) => i.as_ref(),
        }
    }

    fn inner_mut(&mut self) -> &mut dyn IndexMut {
        match self {
            AnnIndex::Hnsw(h) => h.as_mut(),
            AnnIndex::Ivf(i) => i.as_mut(),
        }
    }
}

impl VectorIndex for AnnIndex {
    fn kind(&self) -> IndexKind {
        self.inner().kind()
    }

    fn metric(&self) -> Metric {
        self.inner().metric()
    }

    fn dim(&self) -> usize {
        self.inner().dim()
    }

    fn len(&self) -> usize {
        self.inner().len()
    }

    fn contains(&self, id: u64) -> bool {
        self.inner().contains(id)
    }

    fn live_ids(&self) -> Vec<u64> {
        self.inner().live_ids()
    }

    fn memory_bytes(&self) -> usize {
        self.inner().memory_bytes()
    }

    fn rescoring_bytes(&self) -> usize {
        self.inner().rescoring_bytes()
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Hit>> {
        self.inner().search(query, k, params, filter)
    }

    fn search_batch(
        &self,
        queries: &[f32],
        k: usize,
        params: &SearchParams,
        filter: Option<Filter<'_>>,
    ) -> IndexResult<Vec<Vec<Hit>>> {
        self.inner().search_batch(queries, k, params, filter)
    }

    fn save(&self, dir: &Path) -> IndexResult<()> {
        self.inner().save(dir)
    }
}

impl IndexMut for AnnIndex {
    fn add(&mut self, ids: &[u64], vectors: &[f32]) -> IndexResult<()> {
        self.inner_mut().add(ids, vectors)
    }

    fn remove(&mut self, ids: &[u64]) -> IndexResult<usize> {
        self.inner_mut().remove(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::clustered_vectors;

    #[test]
    fn an_hnsw_snapshot_gives_back_its_live_vectors_as_stored() {
        let dim = 16;
        let data = clustered_vectors(300, dim, 6, 0.4, 3);
        let ids: Vec<u64> = (0..300u64).map(|i| i * 2 + 5).collect();
        let params = AnnParams::defaults();
        let mut idx = AnnIndex::build(&params, Metric::Cosine, dim, &ids, &data).unwrap();
        idx.remove(&[ids[7]]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        idx.save(dir.path()).unwrap();
        let loaded = AnnIndex::load(dir.path()).unwrap();
        // Asked in any order, with a removed id and one never held: those two are skipped.
        let asked = [ids[9], 4, ids[7], ids[0], ids[299]];
        let (found, rows) = loaded
            .stored_vectors(&asked)
            .expect("HNSW keeps its vectors");
        assert_eq!(found, vec![ids[9], ids[0], ids[299]]);
        for (k, &row) in [9usize, 0, 299].iter().enumerate() {
            let mut want = data[row * dim..(row + 1) * dim].to_vec();
            assert!(Metric::Cosine.preprocess(&mut want));
            let got = &rows[k * dim..(k + 1) * dim];
            assert!(want.iter().zip(got).all(|(a, b)| (a - b).abs() < 1e-6));
        }
        let ivf = AnnParams {
            kind: IndexKind::Ivf,
            m: None,
            ef_construction: None,
            ef: None,
            ..params
        };
        let idx = AnnIndex::build(&ivf, Metric::Cosine, dim, &ids, &data).unwrap();
        assert!(idx.stored_vectors(&ids).is_none(), "IVF keeps them rotated");
    }

    #[test]
    fn builds_saves_and_loads_both_kinds() {
        let dim = 16;
        let n = 600;
        let data = clustered_vectors(n, dim, 8, 0.4, 7);
        let ids: Vec<u64> = (0..n as u64).map(|i| i * 3 + 1).collect();
        for kind in [IndexKind::Hnsw, IndexKind::Ivf] {
            let params = AnnParams {
                kind,
                ..AnnParams::defaults()
            };
            let params = if kind == IndexKind::Ivf {
                AnnParams {
                    m: None,
                    ef_construction: None,
                    ef: None,
                    ..params
                }
            } else {
                params
            };
            let mut idx = AnnIndex::build(&params, Metric::Cosine, dim, &ids, &data).unwrap();
            assert_eq!(idx.kind(), kind);
            assert_eq!(idx.len(), n);
            let mut live = idx.live_ids();
            live.sort_unstable();
            assert_eq!(live, ids);
            let q = &data[dim * 5..dim * 6];
            let hits = idx.search(q, 5, &SearchParams::default(), None).unwrap();
            assert_eq!(hits[0].id, ids[5], "{kind}: a stored vector finds itself");
            idx.remove(&[ids[5]]).unwrap();
            let dir = tempfile::tempdir().unwrap();
            idx.save(dir.path()).unwrap();
            let loaded = AnnIndex::load(dir.path()).unwrap();
            assert_eq!(loaded.kind(), kind);
            assert_eq!(
                loaded.search(q, 5, &SearchParams::default(), None).unwrap(),
                idx.search(q, 5, &SearchParams::default(), None).unwrap()
            );
            assert!(!loaded.contains(ids[5]));
        }
        assert!(
            AnnIndex::build(
                &AnnParams {
                    kind: IndexKind::Flat,
                    ..AnnParams::defaults()
                },
                Metric::Dot,
                dim,
                &[],
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn hnsw_compaction_is_wanted_after_many_deletes() {
        let dim = 8;
        let n = 200;
        let data = clustered_vectors(n, dim, 4, 0.4, 3);
        let ids: Vec<u64> = (0..n as u64).collect();
        let mut idx =
            AnnIndex::build(&AnnParams::defaults(), Metric::L2, dim, &ids, &data).unwrap();
        assert!(!idx.wants_compaction());
        idx.remove(&ids[..n / 2]).unwrap();
        assert!(idx.wants_compaction());
        assert_eq!(
            idx.len(),
            n / 2,
            "no automatic rebuild dropped the tombstones mid-remove"
        );
    }
}
