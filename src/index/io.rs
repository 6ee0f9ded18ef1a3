//! Index snapshots on disk: a directory of little-endian binary arrays and one `manifest.json`
//! that names them with their sizes and CRC-32 checksums.
//!
//! A snapshot is replaced atomically without ever removing the directory: data files carry a
//! generation number in their names, the new generation's files are written and synced first,
//! then the manifest is swapped in by rename, and only then are the previous generation's files
//! deleted. A crash at any point leaves a manifest that names complete files, and a torn or
//! truncated file is caught by its checksum on load.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{IndexError, IndexKind, IndexResult};
use crate::distance::Metric;

/// Version of the snapshot layout; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;

const MANIFEST: &str = "manifest.json";

/// One data file of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// File name inside the snapshot directory.
    pub file: String,
    /// Exact size in bytes.
    pub bytes: u64,
    /// CRC-32 (IEEE) of the contents.
    pub crc32: u32,
}

/// The manifest of a snapshot: what it holds and how to check it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version, [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// Generation number; the data files of this snapshot carry it in their names.
    pub generation: u64,
    /// Which index wrote the snapshot.
    pub kind: IndexKind,
    /// The index's metric.
    pub metric: Metric,
    /// The index's dimension.
    pub dim: usize,
    /// Index-specific parameters and scalars (build parameters, counts, entry points).
    pub params: serde_json::Value,
    /// Logical array name → file.
    pub files: BTreeMap<String, FileEntry>,
}

/// Writes a new generation of a snapshot into a directory. Nothing is visible to readers until
/// [`commit`](Self::commit).
#[derive(Debug)]
pub struct SnapshotWriter {
    dir: PathBuf,
    generation: u64,
    files: BTreeMap<String, FileEntry>,
}

impl SnapshotWriter {
    /// Starts a snapshot in `dir`, creating the directory if needed.
    pub fn create(dir: &Path) -> IndexResult<Self> {
        fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let generation = match read_manifest(dir) {
            Ok(m) => m.generation + 1,
            Err(_) => 1,
        };
        Ok(SnapshotWriter {
            dir: dir.to_path_buf(),
            generation,
            files: BTreeMap::new(),
        })
    }

    /// Writes raw bytes as the array `name`.
    pub fn write_bytes(&mut self, name: &str, bytes: &[u8]) -> IndexResult<()> {
        self.write_with(name, |w| w.write_all(bytes))
    }

    /// Writes `f32` values as the array `name`.
    pub fn write_f32s(&mut self, name: &str, values: &[f32]) -> IndexResult<()> {
        self.write_with(name, |w| write_le(w, values, |x| x.to_le_bytes()))
    }

    /// Writes `u64` values as the array `name`.
    pub fn write_u64s(&mut self, name: &str, values: &[u64]) -> IndexResult<()> {
        self.write_with(name, |w| write_le(w, values, |x| x.to_le_bytes()))
    }

    /// Writes `u32` values as the array `name`.
    pub fn write_u32s(&mut self, name: &str, values: &[u32]) -> IndexResult<()> {
        self.write_with(name, |w| write_le(w, values, |x| x.to_le_bytes()))
    }

    /// Writes the concatenation of `parts` as the single `f32` array `name`, without first
    /// gathering the parts in one buffer.
    pub fn write_f32_parts<'p>(
        &mut self,
        name: &str,
        parts: impl IntoIterator<Item = &'p [f32]>,
    ) -> IndexResult<()> {
        self.write_with(name, |w| {
            parts
                .into_iter()
                .try_for_each(|p| write_le(w, p, |x| x.to_le_bytes()))
        })
    }

    /// Writes the concatenation of `parts` as the single `u64` array `name`, without first
    /// gathering the parts in one buffer.
    pub fn write_u64_parts<'p>(
        &mut self,
        name: &str,
        parts: impl IntoIterator<Item = &'p [u64]>,
    ) -> IndexResult<()> {
        self.write_with(name, |w| {
            parts
                .into_iter()
                .try_for_each(|p| write_le(w, p, |x| x.to_le_bytes()))
        })
    }

    fn write_with(
        &mut self,
        name: &str,
        body: impl FnOnce(&mut HashingWriter<BufWriter<File>>) -> std::io::Result<()>,
    ) -> IndexResult<()> {
        let file = format!("{name}.{}.bin", self.generation);
        let path = self.dir.join(&file);
        let result = (|| {
            let f = File::create(&path)?;
            let mut w = HashingWriter {
                inner: BufWriter::with_capacity(1 << 20, f),
                hasher: crc32fast::Hasher::new(),
                bytes: 0,
            };
            body(&mut w)?;
            let HashingWriter {
                inner,
                hasher,
                bytes,
            } = w;
            let f = inner.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok((bytes, hasher.finalize()))
        })();
        let (bytes, crc32) = result.map_err(|e| IndexError::io(&path, e))?;
        self.files
            .insert(name.to_string(), FileEntry { file, bytes, crc32 });
        Ok(())
    }

    /// Publishes the snapshot: writes the manifest atomically, then deletes files of earlier
    /// generations.
    pub fn commit(
        self,
        kind: IndexKind,
        metric: Metric,
        dim: usize,
        params: serde_json::Value,
    ) -> IndexResult<()> {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            generation: self.generation,
            kind,
            metric,
            dim,
            params,
            files: self.files,
        };
        let tmp = self.dir.join(format!("{MANIFEST}.tmp"));
        let json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            fs::rename(&tmp, self.dir.join(MANIFEST))?;
            sync_dir(&self.dir)
        };
        write().map_err(|e| IndexError::io(&tmp, e))?;
        remove_stale_files(&self.dir, &manifest);
        Ok(())
    }
}

/// Deletes data files that the manifest does not name. Failures only leave garbage behind, so
/// they are ignored.
fn remove_stale_files(dir: &Path, manifest: &Manifest) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let live: std::collections::HashSet<&str> =
        manifest.files.values().map(|f| f.file.as_str()).collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".bin") && !live.contains(name) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

struct HashingWriter<W> {
    inner: W,
    hasher: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_le<T: Copy, const N: usize>(
    w: &mut impl Write,
    values: &[T],
    to_bytes: impl Fn(T) -> [u8; N],
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(N * 8192);
    for chunk in values.chunks(8192) {
        buf.clear();
        for &v in chunk {
            buf.extend_from_slice(&to_bytes(v));
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

fn read_manifest(dir: &Path) -> IndexResult<Manifest> {
    let path = dir.join(MANIFEST);
    let bytes = fs::read(&path).map_err(|e| IndexError::io(&path, e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| IndexError::corrupt(&path, format!("unreadable manifest: {e}")))?;
    if manifest.format_version != FORMAT_VERSION {
        return Err(IndexError::corrupt(
            &path,
            format!(
                "format version {} is not supported (this build reads {FORMAT_VERSION})",
                manifest.format_version
            ),
        ));
    }
    Ok(manifest)
}

/// Reads a committed snapshot, verifying each array's size and checksum as it is read.
#[derive(Debug)]
pub struct SnapshotReader {
    dir: PathBuf,
    manifest: Manifest,
}

impl SnapshotReader {
    /// Opens the snapshot in `dir`.
    pub fn open(dir: &Path) -> IndexResult<Self> {
        Ok(SnapshotReader {
            dir: dir.to_path_buf(),
            manifest: read_manifest(dir)?,
        })
    }

    /// Whether `dir` holds a snapshot manifest at all.
    pub fn exists(dir: &Path) -> bool {
        dir.join(MANIFEST).is_file()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Checks that the snapshot was written by an index of `kind` with the given metric.
    pub fn expect_kind(&self, kind: IndexKind) -> IndexResult<()> {
        if self.manifest.kind != kind {
            return Err(IndexError::corrupt(
                &self.dir,
                format!("snapshot holds a {} index, not {kind}", self.manifest.kind),
            ));
        }
        Ok(())
    }

    /// A parameter from the manifest, deserialised.
    pub fn param<T: serde::de::DeserializeOwned>(&self, key: &str) -> IndexResult<T> {
        let v =
            self.manifest.params.get(key).ok_or_else(|| {
                IndexError::corrupt(&self.dir, format!("parameter '{key}' missing"))
            })?;
        serde_json::from_value(v.clone()).map_err(|e| {
            IndexError::corrupt(&self.dir, format!("parameter '{key}' unreadable: {e}"))
        })
    }

    /// Whether the snapshot has an array called `name`.
    pub fn has(&self, name: &str) -> bool {
        self.manifest.files.contains_key(name)
    }

    /// Reads the array `name` as raw bytes.
    pub fn read_bytes(&self, name: &str) -> IndexResult<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(name, 1, |n| {
            out = vec![0u8; n];
            out.as_mut_slice()
        })?;
        Ok(out)
    }

    /// Reads the array `name` as `f32` values.
    pub fn read_f32s(&self, name: &str) -> IndexResult<Vec<f32>> {
        let mut out: Vec<f32> = Vec::new();
        self.read_into(name, 4, |n| {
            out = vec![0.0; n / 4];
            bytemuck::cast_slice_mut(out.as_mut_slice())
        })?;
        out.iter_mut()
            .for_each(|x| *x = f32::from_bits(u32::from_le(x.to_bits())));
        Ok(out)
    }

    /// Reads the array `name` as `u64` values.
    pub fn read_u64s(&self, name: &str) -> IndexResult<Vec<u64>> {
        let mut out: Vec<u64> = Vec::new();
        self.read_into(name, 8, |n| {
            out = vec![0; n / 8];
            bytemuck::cast_slice_mut(out.as_mut_slice())
        })?;
        out.iter_mut().for_each(|x| *x = u64::from_le(*x));
        Ok(out)
    }

    /// Reads the array `name` as `u32` values.
    pub fn read_u32s(&self, name: &str) -> IndexResult<Vec<u32>> {
        let mut out: Vec<u32> = Vec::new();
        self.read_into(name, 4, |n| {
            out = vec![0; n / 4];
            bytemuck::cast_slice_mut(out.as_mut_slice())
        })?;
        out.iter_mut().for_each(|x| *x = u32::from_le(*x));
        Ok(out)
    }

    /// Reads a file into the buffer `alloc` returns for its size, checking size and checksum.
    fn read_into<'b>(
        &self,
        name: &str,
        elem: usize,
        alloc: impl FnOnce(usize) -> &'b mut [u8],
    ) -> IndexResult<()> {
        let entry = self.manifest.files.get(name).ok_or_else(|| {
            IndexError::corrupt(&self.dir, format!("array '{name}' missing from manifest"))
        })?;
        let path = self.dir.join(&entry.file);
        let len = usize::try_from(entry.bytes)
            .ok()
            .filter(|n| n % elem == 0)
            .ok_or_else(|| IndexError::corrupt(&path, "size is not a whole number of values"))?;
        let file = File::open(&path).map_err(|e| IndexError::io(&path, e))?;
        let actual = file.metadata().map_err(|e| IndexError::io(&path, e))?.len();
        if actual != entry.bytes {
            return Err(IndexError::corrupt(
                &path,
                format!("{actual} bytes on disk, manifest says {}", entry.bytes),
            ));
        }
        let buf = alloc(len);
        BufReader::with_capacity(1 << 20, file)
            .read_exact(buf)
            .map_err(|e| IndexError::io(&path, e))?;
        let crc = crc32fast::hash(buf);
        if crc != entry.crc32 {
            return Err(IndexError::corrupt(
                &path,
                format!("checksum {crc:08x} does not match {:08x}", entry.crc32),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_gen(dir: &Path, v: &[f32]) {
        let mut w = SnapshotWriter::create(dir).unwrap();
        w.write_f32s("vectors", v).unwrap();
        w.write_u64s("ids", &[1, u64::MAX]).unwrap();
        w.commit(
            IndexKind::Flat,
            Metric::L2,
            2,
            serde_json::json!({"count": 2}),
        )
        .unwrap();
    }

    #[test]
    fn round_trip_and_generations() {
        let dir = tempfile::tempdir().unwrap();
        write_gen(dir.path(), &[1.0, -2.5, f32::MAX, 0.0]);
        write_gen(dir.path(), &[3.0, 4.0, 5.0, 6.0]);
        let r = SnapshotReader::open(dir.path()).unwrap();
        assert_eq!(r.manifest().generation, 2);
        assert_eq!(r.read_f32s("vectors").unwrap(), vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(r.read_u64s("ids").unwrap(), vec![1, u64::MAX]);
        assert_eq!(r.param::<usize>("count").unwrap(), 2);
        r.expect_kind(IndexKind::Flat).unwrap();
        assert!(r.expect_kind(IndexKind::Hnsw).is_err());
        // The first generation's files are gone.
        let bins = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".bin")
            })
            .count();
        assert_eq!(bins, 2);
    }

    #[test]
    fn detects_torn_and_truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        write_gen(dir.path(), &[1.0, 2.0, 3.0, 4.0]);
        let r = SnapshotReader::open(dir.path()).unwrap();
        let path = dir.path().join(&r.manifest().files["vectors"].file);
        let mut bytes = fs::read(&path).unwrap();
        bytes[3] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            r.read_f32s("vectors"),
            Err(IndexError::Corrupt { .. })
        ));
        fs::write(&path, &bytes[..8]).unwrap();
        assert!(matches!(
            r.read_f32s("vectors"),
            Err(IndexError::Corrupt { .. })
        ));
        fs::write(dir.path().join(MANIFEST), b"{not json").unwrap();
        assert!(matches!(
            SnapshotReader::open(dir.path()),
            Err(IndexError::Corrupt { .. })
        ));
    }
}
