//! Conversions between domain values and their stored form: vectors as little-endian `f32`
//! blobs, JSON as text, counts and offsets as SQLite's signed 64-bit integers. Every decoder
//! checks what it reads and reports malformed data as [`StoreError::Corrupt`].

use serde_json::Value;

use super::error::{StoreError, StoreResult};

/// Bytes of one stored vector component.
const F32_BYTES: usize = std::mem::size_of::<f32>();

/// The stored form of a vector: its components as little-endian `f32`.
pub(crate) fn encode_vector(v: &[f32]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice::<f32, u8>(v).to_vec()
    } else {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

/// Appends the vector stored in `blob` to `out`, checking that it has `dimension` components.
/// `passage` names the row in the error.
pub(crate) fn decode_vector_into(
    blob: &[u8],
    dimension: usize,
    passage: i64,
    out: &mut Vec<f32>,
) -> StoreResult<()> {
    if blob.len() != dimension * F32_BYTES {
        return Err(StoreError::Corrupt(format!(
            "passage {passage}: vector blob has {} bytes, expected {} (dimension {dimension})",
            blob.len(),
            dimension * F32_BYTES
        )));
    }
    let start = out.len();
    out.resize(start + dimension, 0.0);
    let dst = &mut out[start..];
    if cfg!(target_endian = "little") {
        // A plain copy: the blob is not necessarily aligned for `f32`, the destination is.
        bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(blob);
    } else {
        for (x, b) in dst.iter_mut().zip(blob.chunks_exact(F32_BYTES)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(())
}

/// Decodes one stored vector on its own.
pub(crate) fn decode_vector(blob: &[u8], dimension: usize, passage: i64) -> StoreResult<Vec<f32>> {
    let mut v = Vec::with_capacity(dimension);
    decode_vector_into(blob, dimension, passage, &mut v)?;
    Ok(v)
}

/// Reads an optional JSON object column; NULL becomes `Value::Null`.
pub(crate) fn decode_metadata(
    text: Option<&str>,
    what: impl FnOnce() -> String,
) -> StoreResult<Value> {
    match text {
        None => Ok(Value::Null),
        Some(text) => decode_object(text, what),
    }
}

/// Reads a JSON column that must hold an object.
pub(crate) fn decode_object(text: &str, what: impl FnOnce() -> String) -> StoreResult<Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(StoreError::Corrupt(format!(
            "{}: not a JSON object",
            what()
        ))),
        Err(e) => Err(StoreError::Corrupt(format!(
            "{}: invalid JSON: {e}",
            what()
        ))),
    }
}

/// The stored form of a metadata value: `NULL` for `Value::Null`, JSON text for an object.
/// Anything else is refused.
pub(crate) fn encode_metadata(doc_id: &str, metadata: &Value) -> StoreResult<Option<String>> {
    match metadata {
        Value::Null => Ok(None),
        Value::Object(_) => Ok(Some(metadata.to_string())),
        _ => Err(StoreError::Invalid(format!(
            "metadata of document '{doc_id}' must be a JSON object or null"
        ))),
    }
}

/// A stored non-negative integer as `u64`.
pub(crate) fn to_u64(v: i64, what: impl FnOnce() -> String) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{}: negative value {v}", what())))
}

/// A stored non-negative integer as `usize`.
pub(crate) fn to_usize(v: i64, what: impl FnOnce() -> String) -> StoreResult<usize> {
    usize::try_from(v)
        .map_err(|_| StoreError::Corrupt(format!("{}: value {v} out of range", what())))
}

/// A count or offset as SQLite's integer.
pub(crate) fn to_i64(v: usize, what: impl FnOnce() -> String) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{}: value {v} is too large", what())))
}

/// A list of values as a JSON array, for `IN (SELECT value FROM json_each(?))`: one cached
/// statement serves lists of every length.
pub(crate) fn json_array<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items)
        .expect("a slice of strings or integers always serialises. This is a bug.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_round_trip_is_exact() {
        let v = vec![0.0, -1.5, f32::MIN_POSITIVE, 3.25e7, -0.0];
        let blob = encode_vector(&v);
        assert_eq!(blob.len(), 20);
        assert_eq!(&blob[4..8], &(-1.5f32).to_le_bytes());
        let back = decode_vector(&blob, 5, 1).unwrap();
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn decoding_from_an_unaligned_blob_works() {
        let v = [1.0f32, 2.0, 3.0];
        let mut bytes = vec![0u8];
        bytes.extend(encode_vector(&v));
        assert_eq!(decode_vector(&bytes[1..], 3, 1).unwrap(), v);
    }

    #[test]
    fn wrong_blob_length_is_corrupt() {
        let blob = encode_vector(&[1.0, 2.0]);
        for (bytes, dim) in [(&blob[..7], 2), (&blob[..], 3), (&blob[..0], 1)] {
            let err = decode_vector(bytes, dim, 9).unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt(ref m) if m.contains("passage 9")),
                "{err}"
            );
        }
    }

    #[test]
    fn metadata_must_be_an_object_or_null() {
        assert_eq!(encode_metadata("d", &Value::Null).unwrap(), None);
        assert_eq!(
            encode_metadata("d", &serde_json::json!({"a": 1}))
                .unwrap()
                .as_deref(),
            Some(r#"{"a":1}"#)
        );
        for bad in [
            serde_json::json!([1]),
            serde_json::json!("x"),
            serde_json::json!(3),
        ] {
            assert!(matches!(
                encode_metadata("d", &bad),
                Err(StoreError::Invalid(_))
            ));
        }
        assert!(matches!(
            decode_metadata(Some("[1]"), || "doc".into()),
            Err(StoreError::Corrupt(_))
        ));
        assert!(matches!(
            decode_metadata(Some("{"), || "doc".into()),
            Err(StoreError::Corrupt(_))
        ));
        assert_eq!(decode_metadata(None, || "doc".into()).unwrap(), Value::Null);
    }
}
