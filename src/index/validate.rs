//! Input checks shared by every index, so that each kind rejects bad input the same way.

use std::borrow::Cow;
use std::collections::HashSet;

use super::{IndexError, IndexResult};
use crate::distance::Metric;

/// Checks that `values` holds exactly `ids` rows of `dim` components (any whole number of rows
/// when `ids` is `None`).
pub fn check_batch_shape(dim: usize, ids: Option<usize>, values: &[f32]) -> IndexResult<()> {
    let shape_error = || IndexError::BatchShape {
        ids: ids.unwrap_or(values.len() / dim.max(1)),
        values: values.len(),
        dim,
    };
    if dim == 0 {
        return Err(IndexError::InvalidParameter(
            "dimension must be at least 1".into(),
        ));
    }
    match ids {
        Some(n) if n.checked_mul(dim) != Some(values.len()) => {
            if n == 1 {
                return Err(IndexError::DimensionMismatch {
                    expected: dim,
                    got: values.len(),
                });
            }
            Err(shape_error())
        }
        None if !values.len().is_multiple_of(dim) => Err(shape_error()),
        _ => Ok(()),
    }
}

/// Checks one vector's components and, for cosine, normalises it. `row` is reported in errors.
fn prepare_row(metric: Metric, row: usize, v: &mut [f32]) -> IndexResult<()> {
    if let Some(position) = v.iter().position(|x| !x.is_finite()) {
        return Err(IndexError::NonFinite { row, position });
    }
    if !metric.preprocess(v) {
        return Err(IndexError::ZeroVector { row });
    }
    Ok(())
}

fn check_finite_rows(dim: usize, values: &[f32]) -> IndexResult<()> {
    for (row, v) in values.chunks_exact(dim).enumerate() {
        if let Some(position) = v.iter().position(|x| !x.is_finite()) {
            return Err(IndexError::NonFinite { row, position });
        }
    }
    Ok(())
}

/// Validates a batch for [`IndexMut::add`](super::IndexMut::add): shape, finite components,
/// no zero vector under cosine, no id twice. Returns the vectors as the metric stores them
/// (normalised for cosine; borrowed unchanged otherwise).
pub fn prepare_batch<'a>(
    metric: Metric,
    dim: usize,
    ids: &[u64],
    values: &'a [f32],
) -> IndexResult<Cow<'a, [f32]>> {
    check_batch_shape(dim, Some(ids.len()), values)?;
    let mut seen = HashSet::with_capacity(ids.len());
    for &id in ids {
        if !seen.insert(id) {
            return Err(IndexError::DuplicateId { id });
        }
    }
    if !metric.normalizes() {
        check_finite_rows(dim, values)?;
        return Ok(Cow::Borrowed(values));
    }
    let mut owned = values.to_vec();
    for (row, v) in owned.chunks_exact_mut(dim).enumerate() {
        prepare_row(metric, row, v)?;
    }
    Ok(Cow::Owned(owned))
}

/// Validates a query and `k`, returning the query as the metric scores it (normalised for
/// cosine).
pub fn prepare_query<'a>(
    metric: Metric,
    dim: usize,
    query: &'a [f32],
    k: usize,
) -> IndexResult<Cow<'a, [f32]>> {
    if k == 0 {
        return Err(IndexError::ZeroK);
    }
    if query.len() != dim {
        return Err(IndexError::DimensionMismatch {
            expected: dim,
            got: query.len(),
        });
    }
    if !metric.normalizes() {
        check_finite_rows(dim, query)?;
        return Ok(Cow::Borrowed(query));
    }
    let mut owned = query.to_vec();
    prepare_row(metric, 0, &mut owned)?;
    Ok(Cow::Owned(owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_batches() {
        let m = Metric::Cosine;
        assert!(matches!(
            prepare_batch(m, 2, &[1, 2], &[1.0, 0.0, 0.0]),
            Err(IndexError::BatchShape { .. })
        ));
        assert!(matches!(
            prepare_batch(m, 2, &[1], &[1.0, 0.0, 0.0]),
            Err(IndexError::DimensionMismatch {
                expected: 2,
                got: 3
            })
        ));
        assert!(matches!(
            prepare_batch(m, 2, &[1, 1], &[1.0, 0.0, 0.0, 1.0]),
            Err(IndexError::DuplicateId { id: 1 })
        ));
        assert!(matches!(
            prepare_batch(m, 2, &[1, 2], &[1.0, 0.0, 0.0, 0.0]),
            Err(IndexError::ZeroVector { row: 1 })
        ));
        assert!(matches!(
            prepare_batch(Metric::L2, 2, &[1, 2], &[1.0, 0.0, f32::NAN, 0.0]),
            Err(IndexError::NonFinite {
                row: 1,
                position: 0
            })
        ));
        assert!(matches!(
            prepare_batch(Metric::Dot, 2, &[1], &[f32::INFINITY, 0.0]),
            Err(IndexError::NonFinite { .. })
        ));
        // Zero vectors are fine where no direction is needed.
        assert!(prepare_batch(Metric::L2, 2, &[1], &[0.0, 0.0]).is_ok());
    }

    #[test]
    fn normalises_cosine_only() {
        let v = prepare_batch(Metric::Cosine, 2, &[7], &[3.0, 4.0]).unwrap();
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        let v = prepare_batch(Metric::Dot, 2, &[7], &[3.0, 4.0]).unwrap();
        assert_eq!(&*v, &[3.0, 4.0]);
        assert!(matches!(v, Cow::Borrowed(_)));
    }

    #[test]
    fn rejects_bad_queries() {
        assert!(matches!(
            prepare_query(Metric::Dot, 2, &[1.0, 2.0], 0),
            Err(IndexError::ZeroK)
        ));
        assert!(matches!(
            prepare_query(Metric::Dot, 2, &[1.0], 1),
            Err(IndexError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            prepare_query(Metric::Cosine, 2, &[0.0, 0.0], 1),
            Err(IndexError::ZeroVector { row: 0 })
        ));
        assert!(matches!(
            prepare_query(Metric::Dot, 2, &[f32::NEG_INFINITY, 0.0], 1),
            Err(IndexError::NonFinite { .. })
        ));
    }
}
