//! Readers for the vector file formats that ANN benchmarks use.
//!
//! * TEXMEX `.fvecs` / `.ivecs` (as in ann-benchmarks and FAISS): each row is a little-endian
//!   `i32` dimension followed by that many `f32` (or `i32`) values.
//! * NumPy `.npy`: a 2-D array of `f32` (vectors) or of `i32`/`i64`/`u32`/`u64` (ids), in
//!   C order.
//!
//! The format is chosen by the file extension.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What can go wrong reading a dataset file.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's contents do not follow its format.
    #[error("{path} is not a valid {format} file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The format expected from the extension.
        format: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The extension names no supported format.
    #[error("{0}: unsupported extension (expected .fvecs, .ivecs, .bvecs or .npy)")]
    Extension(PathBuf),
}

/// A row-major matrix read from a file.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns (the vector dimension, or ids per ground-truth row).
    pub cols: usize,
    /// `rows * cols` values, row-major.
    pub data: Vec<T>,
}

impl<T> Matrix<T> {
    /// The `i`-th row.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Keeps only the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        if n < self.rows {
            self.rows = n;
            self.data.truncate(n * self.cols);
        }
    }
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Reads vectors from `.fvecs`, `.bvecs` (bytes, widened to `f32`) or `.npy` (`f32` 2-D).
pub fn read_vectors(path: &Path) -> Result<Matrix<f32>, DatasetError> {
    match extension(path).as_str() {
        "fvecs" => read_xvecs(path, "fvecs", 4, |b| {
            f32::from_le_bytes(b.try_into().expect("4-byte chunk"))
        }),
        "bvecs" => read_xvecs(path, "bvecs", 1, |b| f32::from(b[0])),
        "npy" => {
            let arr: ndarray::Array2<f32> =
                ndarray_npy::read_npy(path).map_err(|e| DatasetError::Format {
                    path: path.into(),
                    format: "npy (2-D float32)",
                    reason: e.to_string(),
                })?;
            Ok(from_array(arr))
        }
        _ => Err(DatasetError::Extension(path.into())),
    }
}

/// Reads integer rows (ground-truth neighbour ids) from `.ivecs` or `.npy` (any 2-D integer
/// array of 32 or 64 bits).
pub fn read_ids(path: &Path) -> Result<Matrix<u64>, DatasetError> {
    match extension(path).as_str() {
        "ivecs" => read_xvecs(path, "ivecs", 4, |b| {
            i32::from_le_bytes(b.try_into().expect("4-byte chunk")) as u64
        }),
        "npy" => {
            let format_err = |e: &dyn std::fmt::Display| DatasetError::Format {
                path: path.into(),
                format: "npy (2-D integer)",
                reason: e.to_string(),
            };
            if let Ok(a) = ndarray_npy::read_npy::<_, ndarray::Array2<i64>>(path) {
                return Ok(from_array(a.mapv(|x| x as u64)));
            }
            if let Ok(a) = ndarray_npy::read_npy::<_, ndarray::Array2<u64>>(path) {
                return Ok(from_array(a));
            }
            if let Ok(a) = ndarray_npy::read_npy::<_, ndarray::Array2<u32>>(path) {
                return Ok(from_array(a.mapv(u64::from)));
            }
            let a: ndarray::Array2<i32> =
                ndarray_npy::read_npy(path).map_err(|e| format_err(&e))?;
            Ok(from_array(a.mapv(|x| x as u64)))
        }
        _ => Err(DatasetError::Extension(path.into())),
    }
}

fn from_array<T: Clone>(arr: ndarray::Array2<T>) -> Matrix<T> {
    let (rows, cols) = arr.dim();
    let data = if arr.is_standard_layout() {
        arr.into_raw_vec_and_offset().0
    } else {
        arr.iter().cloned().collect()
    };
    Matrix { rows, cols, data }
}

fn read_xvecs<T>(
    path: &Path,
    format: &'static str,
    width: usize,
    decode: impl Fn(&[u8]) -> T,
) -> Result<Matrix<T>, DatasetError> {
    let io = |source| DatasetError::Io {
        path: path.into(),
        source,
    };
    let bad = |reason: String| DatasetError::Format {
        path: path.into(),
        format,
        reason,
    };
    let file = File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len() as usize;
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut data = Vec::new();
    let mut cols = None;
    let mut rows = 0usize;
    let mut head = [0u8; 4];
    let mut row = Vec::new();
    loop {
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(io(e)),
        }
        let d = i32::from_le_bytes(head);
        let d = usize::try_from(d)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| bad(format!("row {rows} declares dimension {d}")))?;
        match cols {
            None => {
                cols = Some(d);
                data.reserve(size / (4 + d * width) * d);
                row.resize(d * width, 0);
            }
            Some(c) if c != d => {
                return Err(bad(format!("row {rows} has dimension {d}, row 0 has {c}")));
            }
            Some(_) => {}
        }
        r.read_exact(&mut row)
            .map_err(|_| bad(format!("row {rows} is truncated")))?;
        data.extend(row.chunks_exact(width).map(&decode));
        rows += 1;
    }
    Ok(Matrix {
        rows,
        cols: cols.unwrap_or(0),
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fvecs_ivecs_and_npy() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.fvecs");
        let mut bytes = Vec::new();
        for row in [[1.0f32, 2.0], [3.0, -4.5]] {
            bytes.extend_from_slice(&2i32.to_le_bytes());
            row.iter()
                .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        }
        std::fs::write(&f, &bytes).unwrap();
        let m = read_vectors(&f).unwrap();
        assert_eq!((m.rows, m.cols), (2, 2));
        assert_eq!(m.row(1), &[3.0, -4.5]);

        let g = dir.path().join("g.ivecs");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&3i32.to_le_bytes());
        [7i32, 8, 9]
            .iter()
            .for_each(|x| bytes.extend_from_slice(&x.to_le_bytes()));
        std::fs::write(&g, &bytes).unwrap();
        assert_eq!(read_ids(&g).unwrap().data, vec![7, 8, 9]);

        let n = dir.path().join("v.npy");
        let arr = ndarray::array![[1.0f32, 2.0, 3.0], [4.0, 5.0, 6.0]];
        ndarray_npy::write_npy(&n, &arr).unwrap();
        let m = read_vectors(&n).unwrap();
        assert_eq!((m.rows, m.cols), (2, 3));
        assert_eq!(m.row(1), &[4.0, 5.0, 6.0]);

        let n = dir.path().join("ids.npy");
        ndarray_npy::write_npy(&n, &ndarray::array![[1i64, 2], [3, 4]]).unwrap();
        assert_eq!(read_ids(&n).unwrap().data, vec![1, 2, 3, 4]);
    }

    #[test]
    fn rejects_malformed_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad.fvecs");
        let mut bytes = 2i32.to_le_bytes().to_vec();
        bytes.extend_from_slice(&1.0f32.to_le_bytes());
        std::fs::write(&f, &bytes).unwrap();
        assert!(matches!(read_vectors(&f), Err(DatasetError::Format { .. })));
        std::fs::write(&f, (-1i32).to_le_bytes()).unwrap();
        assert!(matches!(read_vectors(&f), Err(DatasetError::Format { .. })));
        assert!(matches!(
            read_vectors(&dir.path().join("x.csv")),
            Err(DatasetError::Extension(_))
        ));
        assert!(matches!(
            read_vectors(&dir.path().join("missing.fvecs")),
            Err(DatasetError::Io { .. })
        ));
    }
}
