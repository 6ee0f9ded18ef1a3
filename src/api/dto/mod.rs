//! The API's request and response bodies (serde + OpenAPI schemas) and their conversions to and
//! from the service's domain types, one module per resource; the pieces they share live here.
//!
//! Request types deny unknown fields, so that a typo (`"filtr"`, `"metdata"`) is a 400 naming
//! the field rather than an option silently ignored. Document ids may be sent as JSON strings
//! or non-negative integers; an integer is stored, and returned, as its decimal string
//! (`7` and `"7"` are the same document).

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::{PartialSchema, ToSchema};

use crate::service::{Chunking, IndexConfig, IndexType, Metric, Quantization};

mod collections;
mod documents;
mod embeddings;
mod info;
mod query;

pub use collections::*;
pub use documents::*;
pub use embeddings::*;
pub use info::*;
pub use query::*;

/// A document id: a JSON string, or a non-negative integer taken as its decimal string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DocId(pub String);

impl<'de> Deserialize<'de> for DocId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = DocId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a document id: a string or a non-negative integer")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<DocId, E> {
                Ok(DocId(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<DocId, E> {
                Ok(DocId(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<DocId, E> {
                Ok(DocId(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<DocId, E> {
                u64::try_from(v)
                    .map(|v| DocId(v.to_string()))
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

impl PartialSchema for DocId {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .min_length(Some(1))
                    .max_length(Some(crate::service::MAX_ID_BYTES))
                    // No control characters (C0, DEL, C1), as the server checks.
                    .pattern(Some("^[^\\u0000-\\u001F\\u007F-\\u009F]+$")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .description(Some(
                "A document id: a string, or a non-negative integer, which is stored and \
                 returned as its decimal string (7 and \"7\" name the same document).",
            ))
            .examples([Value::from("doc-7"), Value::from(7)])
            .into()
    }
}

impl ToSchema for DocId {}

/// The similarity measure of a collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    /// Cosine similarity (vectors are normalised); `distance` = 1 − `score`.
    #[default]
    Cosine,
    /// Inner product; `distance` = −`score`.
    Dot,
    /// Euclidean; `score` is the negated squared distance, `distance` the squared distance.
    L2,
}

impl From<Distance> for Metric {
    fn from(d: Distance) -> Metric {
        match d {
            Distance::Cosine => Metric::Cosine,
            Distance::Dot => Metric::Dot,
            Distance::L2 => Metric::L2,
        }
    }
}

impl From<Metric> for Distance {
    fn from(m: Metric) -> Distance {
        match m {
            Metric::Cosine => Distance::Cosine,
            Metric::Dot => Distance::Dot,
            Metric::L2 => Distance::L2,
        }
    }
}

/// Which index a collection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum IndexTypeName {
    /// Exact scans while the collection is small, an HNSW graph once it grows past the
    /// server's exact-search threshold.
    #[default]
    Auto,
    /// Always an HNSW graph.
    Hnsw,
    /// Always IVF-Flat (k-means cells).
    Ivf,
    /// Always an exact scan.
    Flat,
}

impl From<IndexTypeName> for IndexType {
    fn from(t: IndexTypeName) -> IndexType {
        match t {
            IndexTypeName::Auto => IndexType::Auto,
            IndexTypeName::Hnsw => IndexType::Hnsw,
            IndexTypeName::Ivf => IndexType::Ivf,
            IndexTypeName::Flat => IndexType::Flat,
        }
    }
}

impl From<IndexType> for IndexTypeName {
    fn from(t: IndexType) -> IndexTypeName {
        match t {
            IndexType::Auto => IndexTypeName::Auto,
            IndexType::Hnsw => IndexTypeName::Hnsw,
            IndexType::Ivf => IndexTypeName::Ivf,
            IndexType::Flat => IndexTypeName::Flat,
        }
    }
}

/// Index settings. HNSW parameters (`m`, `ef_construction`, `ef`) apply to `auto` and `hnsw`,
/// IVF ones (`nlist`, `nprobe`) to `ivf`; unset ones take defaults, which responses show.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexSettings {
    /// Which index.
    #[serde(rename = "type", default)]
    pub kind: IndexTypeName,
    /// HNSW: links per node (2..=128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// HNSW: candidate list size while building (1..=4096).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef_construction: Option<usize>,
    /// HNSW: default candidate list size while searching. Unset, it grows with the collection
    /// (64 up to 1,000 passages, 16 more per doubling, at most 256) to keep recall at 0.99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ef: Option<usize>,
    /// IVF: number of cells (default about 4·√N when trained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nlist: Option<usize>,
    /// IVF: default number of cells scanned per query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nprobe: Option<usize>,
    /// HNSW: `int8` (the default for new collections) walks the graph on one byte per
    /// component (a quarter of the memory the search reads) and rescores the best
    /// `k·oversampling` candidates on the full-precision vectors; `none` searches the
    /// full-precision vectors throughout, for a quarter less vector memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationName>,
}

/// What an HNSW search's traversal scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum QuantizationName {
    /// Full-precision vectors.
    None,
    /// One byte per component, rescored at full precision.
    Int8,
}

impl From<QuantizationName> for Quantization {
    fn from(q: QuantizationName) -> Quantization {
        match q {
            QuantizationName::None => Quantization::None,
            QuantizationName::Int8 => Quantization::Int8,
        }
    }
}

impl From<Quantization> for QuantizationName {
    fn from(q: Quantization) -> QuantizationName {
        match q {
            Quantization::None => QuantizationName::None,
            Quantization::Int8 => QuantizationName::Int8,
        }
    }
}

impl From<IndexSettings> for IndexConfig {
    fn from(s: IndexSettings) -> IndexConfig {
        IndexConfig {
            kind: s.kind.into(),
            m: s.m,
            ef_construction: s.ef_construction,
            ef: s.ef,
            nlist: s.nlist,
            nprobe: s.nprobe,
            quantization: s.quantization.map(Into::into),
        }
    }
}

impl From<IndexConfig> for IndexSettings {
    fn from(c: IndexConfig) -> IndexSettings {
        IndexSettings {
            kind: c.kind.into(),
            m: c.m,
            ef_construction: c.ef_construction,
            ef: c.ef,
            nlist: c.nlist,
            nprobe: c.nprobe,
            quantization: c.quantization.map(Into::into),
        }
    }
}

/// How texts are split into passages, in the model's tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChunkingSettings {
    /// Largest passage, special tokens included (at most what the model reads).
    #[schema(example = 256)]
    pub max_tokens: usize,
    /// Tokens neighbouring passages share.
    #[schema(example = 32)]
    pub overlap: usize,
}

impl From<ChunkingSettings> for Chunking {
    fn from(c: ChunkingSettings) -> Chunking {
        Chunking {
            max_tokens: c.max_tokens,
            overlap: c.overlap,
        }
    }
}

impl From<Chunking> for ChunkingSettings {
    fn from(c: Chunking) -> ChunkingSettings {
        ChunkingSettings {
            max_tokens: c.max_tokens,
            overlap: c.overlap,
        }
    }
}

/// A metadata object, or a filter: free-form JSON objects in the schema.
fn object_schema(description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(
            utoipa::openapi::schema::AdditionalProperties::FreeForm(true),
        ))
        .description(Some(description))
}

pub(super) fn metadata_schema() -> ObjectBuilder {
    // `null` stands for no metadata, in requests and in responses.
    object_schema(
        "A JSON object of metadata, or null for none; queries filter on its fields (dotted \
         paths reach nested objects).",
    )
    .schema_type(SchemaType::Array(vec![Type::Object, Type::Null]))
}

pub(super) fn filter_schema() -> ObjectBuilder {
    object_schema(
        "A metadata filter, Mongo/Chroma style: {\"field\": value} (equality), \
         {\"field\": {\"$eq\"|\"$ne\"|\"$gt\"|\"$gte\"|\"$lt\"|\"$lte\": value}}, \
         {\"field\": {\"$in\"|\"$nin\": [values]}}, {\"$and\": [filters]}, \
         {\"$or\": [filters]}. Dotted paths reach nested fields; numbers compare numerically, \
         strings lexicographically, and values of different types never satisfy an ordering \
         operator.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn doc_ids_are_strings_or_non_negative_integers() {
        let id = |v: Value| serde_json::from_value::<DocId>(v).map(|d| d.0);
        assert_eq!(id(json!("a")).unwrap(), "a");
        assert_eq!(id(json!(7)).unwrap(), "7");
        assert_eq!(id(json!(u64::MAX)).unwrap(), u64::MAX.to_string());
        assert!(id(json!(-1)).is_err());
        assert!(id(json!(1.5)).is_err());
        assert!(id(json!(null)).is_err());
        assert!(id(json!({"a": 1})).is_err());
    }
}
