//! Snapshot I/O: writing an index through [`crate::index::io`]'s checksummed atomic snapshots
//! and loading one back, checking every array against the others.

use std::path::Path;

use super::IvfIndex;
use super::lists::{InvertedList, Slot};
use super::params::IvfParams;
use super::rotation::Rotation;
use crate::distance;
use crate::index::io::{SnapshotReader, SnapshotWriter};
use crate::index::kmeans::KMeans;
use crate::index::{IndexError, IndexKind, IndexResult, VectorIndex};

impl IvfIndex {
    /// Loads a snapshot written by [`save`](VectorIndex::save), verifying every array's checksum
    /// and the consistency of lists, ids, centroids and basis.
    pub fn load(dir: &Path) -> IndexResult<IvfIndex> {
        let r = SnapshotReader::open(dir)?;
        r.expect_kind(IndexKind::Ivf)?;
        let corrupt = |reason: String| IndexError::corrupt(dir, reason);
        let metric = r.manifest().metric;
        let dim = r.manifest().dim;
        let params: IvfParams = r.param("params")?;
        let trained_len: usize = r.param("trained_len")?;
        let head: usize = r.param("head")?;
        let mut index = IvfIndex::new(metric, dim, params)
            .map_err(|e| corrupt(format!("unusable parameters: {e}")))?;
        let centroids = r.read_f32s("centroids")?;
        let sizes = r.read_u64s("list_sizes")?;
        let ids = r.read_u64s("ids")?;
        let heads = r.read_f32s("heads")?;
        let tails = r.read_f32s("tails")?;
        if head != dim {
            let reflectors = r.read_f32s("reflectors")?;
            let mean = if r.has("mean") {
                Some(r.read_f32s("mean")?)
            } else {
                None
            };
            let rotation = Rotation::from_parts(dim, reflectors, mean)
                .filter(|rot| rot.head() == head)
                .ok_or_else(|| corrupt("the stored basis does not fit the dimension".into()))?;
            index.rotation = Some(rotation);
            index.head = head;
        }
        if centroids.is_empty() {
            if sizes.len() != 1 || head != dim {
                return Err(corrupt(format!(
                    "an untrained index has one unsplit list, found {} lists with head {head}",
                    sizes.len()
                )));
            }
        } else {
            if centroids.len() != sizes.len() * dim {
                return Err(corrupt(format!(
                    "{} centroid values for {} lists of dimension {dim}",
                    centroids.len(),
                    sizes.len()
                )));
            }
            let quantizer = KMeans::from_centroids(metric, dim, centroids)
                .map_err(|e| corrupt(format!("unusable centroids: {e}")))?
                .with_head(head);
            index.quantizer = Some(quantizer);
            index.trained_len = trained_len;
        }
        let layout = index.layout();
        let total = sizes
            .iter()
            .try_fold(0u64, |a, &s| a.checked_add(s))
            .and_then(|t| usize::try_from(t).ok());
        if total != Some(ids.len())
            || Some(heads.len()) != ids.len().checked_mul(layout.head)
            || Some(tails.len()) != ids.len().checked_mul(layout.tail())
        {
            return Err(corrupt(format!(
                "list sizes, {} ids, {} head and {} tail values disagree",
                ids.len(),
                heads.len(),
                tails.len()
            )));
        }
        index.lists.clear();
        index.slots.reserve(ids.len());
        let mut start = 0;
        for (l, &size) in sizes.iter().enumerate() {
            let size = size as usize;
            let (h, t) = (layout.head, layout.tail());
            let list_ids = &ids[start..start + size];
            for (pos, &id) in list_ids.iter().enumerate() {
                let slot = Slot {
                    list: l as u32,
                    pos: pos as u32,
                };
                if index.slots.insert(id, slot).is_some() {
                    return Err(corrupt(format!("id {id} is stored twice")));
                }
            }
            let list_tails = tails[start * t..(start + size) * t].to_vec();
            let tail_norms = if t > 0 {
                list_tails
                    .chunks_exact(t)
                    .map(|x| distance::dot(x, x).sqrt())
                    .collect()
            } else {
                Vec::new()
            };
            index.lists.push(InvertedList {
                ids: list_ids.to_vec(),
                heads: heads[start * h..(start + size) * h].to_vec(),
                tails: list_tails,
                tail_norms,
            });
            start += size;
        }
        Ok(index)
    }

    /// Writes the snapshot [`VectorIndex::save`] promises: centroids, list sizes, ids, heads and
    /// tails (streamed list by list, without copying), the basis, and the parameters.
    pub(super) fn write_snapshot(&self, dir: &Path) -> IndexResult<()> {
        let mut w = SnapshotWriter::create(dir)?;
        w.write_f32s(
            "centroids",
            self.quantizer.as_ref().map_or(&[][..], KMeans::centroids),
        )?;
        let sizes: Vec<u64> = self.lists.iter().map(|l| l.len() as u64).collect();
        w.write_u64s("list_sizes", &sizes)?;
        w.write_u64_parts("ids", self.lists.iter().map(|l| &l.ids[..]))?;
        w.write_f32_parts("heads", self.lists.iter().map(|l| &l.heads[..]))?;
        w.write_f32_parts("tails", self.lists.iter().map(|l| &l.tails[..]))?;
        if let Some(r) = &self.rotation {
            w.write_f32s("reflectors", r.reflectors())?;
            if let Some(mean) = r.mean() {
                w.write_f32s("mean", mean)?;
            }
        }
        let params = serde_json::json!({
            "params": self.params,
            "trained_len": self.trained_len,
            "head": self.head,
            "nlist": self.nlist(),
            "count": self.len(),
        });
        w.commit(IndexKind::Ivf, self.metric, self.dim, params)
    }
}
