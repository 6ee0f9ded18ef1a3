//! Training: k-means over a seeded sample, the optional head/tail basis fitted to the same
//! sample, and the redistribution of every row into the new lists.

use rand::prelude::*;
use rayon::prelude::*;

use super::IvfIndex;
use super::lists::{InvertedList, Layout, Slot, fill_lists, reserve_lists};
use super::params::default_nlist;
use super::rotation::Rotation;
use crate::index::kmeans::{KMeans, KMeansParams};
use crate::index::{IndexError, IndexResult, VectorIndex};

/// Seed offset of the training sample's draw, so that it is independent of the k-means seed's
/// own stream.
const SAMPLE_STREAM: u64 = 0x5a3c_9e17_d2b4_0f61;

impl IvfIndex {
    /// Brings rows (as the metric stores them) into the stored basis, in parallel.
    pub(super) fn rotate_rows(rotation: Option<&Rotation>, dim: usize, rows: &mut [f32]) {
        if let Some(r) = rotation {
            rows.par_chunks_mut(dim).for_each(|row| r.apply(row));
        }
    }

    /// The rows of `list` as the metric stores them (undoing the index's rotation).
    pub(super) fn original_rows(&self, list: &InvertedList) -> Vec<f32> {
        let mut rows = Vec::new();
        list.rows_into(self.layout(), &mut rows);
        if let Some(r) = &self.rotation {
            rows.par_chunks_mut(self.dim).for_each(|row| r.unapply(row));
        }
        rows
    }

    /// (Re)trains the quantiser on the vectors held and redistributes them into the new lists.
    ///
    /// Uses `nlist` = [`IvfParams::nlist`] or [`default_nlist`] of the vectors held (clamped to
    /// their number) and k-means on a seeded sample of at most `sample_per_list · nlist` of
    /// them; with [`IvfParams::pca_split`] the stored basis is refitted to the same sample.
    /// The old and new lists coexist while vectors move, so memory peaks at about twice the
    /// vectors' size. Retraining a split index takes the vectors back out of the old basis
    /// into the new one, which rounds each coordinate in its last bits. Errors when the index
    /// is empty; on error the index is unchanged.
    pub fn train(&mut self) -> IndexResult<()> {
        let n = self.len();
        if n == 0 {
            return Err(IndexError::InvalidParameter(
                "cannot train an IVF index that holds no vectors".into(),
            ));
        }
        let dim = self.dim;
        let nlist = self.params.nlist.unwrap_or_else(|| default_nlist(n)).min(n);
        let sample_len = n.min(self.params.sample_per_list.saturating_mul(nlist));
        let mut rng = SmallRng::seed_from_u64(self.params.seed ^ SAMPLE_STREAM);
        let mut picks = rand::seq::index::sample(&mut rng, n, sample_len).into_vec();
        picks.sort_unstable();
        // Row r of the index is the r-th row in list order; the sample is taken as the metric
        // stores the vectors, before any rotation.
        let mut sample = Vec::with_capacity(sample_len * dim);
        let mut picks = picks.into_iter().peekable();
        let mut first_row = 0;
        let layout = self.layout();
        for list in &self.lists {
            while let Some(&r) = picks.peek() {
                if r >= first_row + list.len() {
                    break;
                }
                let pos = r - first_row;
                sample.extend_from_slice(&list.heads[pos * layout.head..(pos + 1) * layout.head]);
                sample
                    .extend_from_slice(&list.tails[pos * layout.tail()..(pos + 1) * layout.tail()]);
                picks.next();
            }
            first_row += list.len();
        }
        if let Some(r) = &self.rotation {
            sample.par_chunks_mut(dim).for_each(|row| r.unapply(row));
        }
        let rotation = if self.params.pca_split {
            Rotation::fit(self.metric, dim, &sample, self.params.seed)
        } else {
            None
        };
        Self::rotate_rows(rotation.as_ref(), dim, &mut sample);
        let layout = Layout {
            dim,
            head: rotation.as_ref().map_or(dim, Rotation::head),
        };
        let (quantizer, sample_labels) = KMeans::fit(
            self.metric,
            dim,
            &sample,
            &KMeansParams {
                k: nlist,
                iterations: self.params.iterations,
                seed: self.params.seed,
                init: self.params.init,
                head: Some(layout.head),
            },
        )?;
        let mut lists = vec![InvertedList::default(); nlist];
        let old = std::mem::take(&mut self.lists);
        let ids: Vec<u64> = old.iter().flat_map(|l| l.ids.iter().copied()).collect();
        if sample_len == n {
            // The sample is every vector, in list order, already rotated and assigned.
            drop(old);
            reserve_lists(&mut lists, layout, &sample_labels);
            fill_lists(&mut lists, layout, &ids, &sample, &sample_labels);
        } else {
            drop(sample);
            // Two passes over the old lists: labels first, so the new lists are allocated at
            // their exact size, then the rows themselves.
            let to_new = |list: &InvertedList| {
                let mut rows = self.original_rows(list);
                Self::rotate_rows(rotation.as_ref(), dim, &mut rows);
                rows
            };
            let labels: Vec<u32> = old
                .iter()
                .flat_map(|l| quantizer.assign(&to_new(l)))
                .collect();
            reserve_lists(&mut lists, layout, &labels);
            let mut start = 0;
            for list in old {
                let rows = to_new(&list);
                let end = start + list.len();
                fill_lists(&mut lists, layout, &list.ids, &rows, &labels[start..end]);
                start = end;
            }
        }
        self.slots.clear();
        self.slots.reserve(n);
        for (l, list) in lists.iter().enumerate() {
            for (pos, &id) in list.ids.iter().enumerate() {
                self.slots.insert(
                    id,
                    Slot {
                        list: l as u32,
                        pos: pos as u32,
                    },
                );
            }
        }
        self.lists = lists;
        self.head = layout.head;
        self.rotation = rotation;
        self.quantizer = Some(quantizer);
        self.trained_len = n;
        Ok(())
    }
}
