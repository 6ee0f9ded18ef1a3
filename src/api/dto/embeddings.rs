//! Bodies of the OpenAI- and TEI-shaped embedding endpoints.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Type};

use crate::api::error::ApiError;

fn text_input_schema() -> OneOfBuilder {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String))
        .item(ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)))
}

fn openai_input_schema() -> OneOfBuilder {
    let tokens = || ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::Integer));
    text_input_schema()
        .item(tokens())
        .item(ArrayBuilder::new().items(tokens()))
        .description(Some(
            "A string or an array of strings. Arrays of token ids (what LangChain's \
             OpenAIEmbeddings sends by default) are refused with 400 token_input_unsupported: \
             send text (in LangChain, OpenAIEmbeddings(check_embedding_ctx_length=False)).",
        ))
}

fn tei_input_schema() -> OneOfBuilder {
    text_input_schema().description(Some("A string or an array of strings."))
}

/// The format of the returned embeddings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// Arrays of numbers.
    #[default]
    Float,
    /// Base64 of the little-endian `f32` bytes, as OpenAI sends them.
    Base64,
}

/// An embeddings request in OpenAI's shape.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAiEmbeddingsRequest {
    /// The text(s) to embed.
    #[schema(schema_with = openai_input_schema)]
    pub input: Value,
    /// Accepted and ignored: the server embeds with the model it has loaded, whose id the
    /// response's `model` reports (so clients written for another model work unchanged).
    #[serde(default)]
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: EncodingFormat,
    /// Must be the model's dimension if given (the model cannot shorten its embeddings).
    #[serde(default)]
    pub dimensions: Option<usize>,
    /// Accepted and ignored.
    #[serde(default)]
    pub user: Option<String>,
}

/// An embedding as floats or as base64.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum EmbeddingValue {
    /// With `encoding_format: float`.
    Float(Vec<f32>),
    /// With `encoding_format: base64`: the little-endian `f32` bytes.
    Base64(String),
}

/// One embedding.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiEmbedding {
    /// Always `embedding`.
    #[schema(example = "embedding")]
    pub object: &'static str,
    /// Position of its input.
    pub index: usize,
    /// The vector.
    pub embedding: EmbeddingValue,
}

/// Token counts.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiUsage {
    /// Tokens read from the inputs.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}

/// Embeddings in OpenAI's shape.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct OpenAiEmbeddingsResponse {
    /// Always `list`.
    #[schema(example = "list")]
    pub object: &'static str,
    /// One embedding per input, in order.
    pub data: Vec<OpenAiEmbedding>,
    /// The model that made them.
    #[schema(example = "sentence-transformers/all-MiniLM-L6-v2")]
    pub model: String,
    /// Token counts.
    pub usage: OpenAiUsage,
}

/// Which end of a long input `truncate` cuts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, ToSchema)]
pub enum TruncationDirection {
    /// Keep the beginning (the only direction supported).
    #[default]
    #[serde(alias = "right")]
    Right,
    /// Keep the end: not supported, refused with 400.
    #[serde(alias = "left")]
    Left,
}

fn default_true() -> bool {
    true
}

/// An embedding request in the shape of Hugging Face's text-embeddings-inference.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeiEmbedRequest {
    /// The text(s) to embed.
    #[schema(schema_with = tei_input_schema)]
    pub inputs: Value,
    /// Return unit-length vectors (default). With `false` the model's own output is returned,
    /// which for models that end in a Normalize module (all-MiniLM-L6-v2) is unit length
    /// anyway.
    #[serde(default = "default_true")]
    pub normalize: bool,
    /// Cut inputs longer than the model reads; without it (default: the server's
    /// `--auto-truncate`) they are refused with 400 `input_too_long`.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end `truncate` cuts: `Right` only.
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
}

/// Embeddings in TEI's shape: one array per input, even for a single string.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(example = json!([[0.01, -0.02, 0.03]]))]
pub struct TeiEmbedResponse(pub Vec<Vec<f32>>);

/// The texts of an embedding request's input: a string or an array of strings. Arrays of
/// token ids are refused with a message that says how to send text instead.
pub fn texts_from_input(field: &str, input: Value) -> Result<Vec<String>, ApiError> {
    let invalid = |message: String| ApiError::bad_request("invalid_request", message);
    match input {
        Value::String(s) => Ok(vec![s]),
        Value::Array(items) => {
            let tokens = items.iter().any(|v| {
                v.is_number() || v.as_array().is_some_and(|a| a.iter().all(Value::is_number))
            });
            if tokens {
                return Err(ApiError::bad_request(
                    "token_input_unsupported",
                    format!(
                        "\"{field}\" holds token ids, but this server tokenizes for its own model \
                         and takes text only: send the strings themselves (with LangChain's \
                         OpenAIEmbeddings, pass check_embedding_ctx_length=False)"
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(invalid(format!(
                        "{field}[{i}]: expected a string, got {}",
                        json_type(&other)
                    ))),
                })
                .collect()
        }
        other => Err(invalid(format!(
            "{field}: expected a string or an array of strings, got {}",
            json_type(&other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedding_inputs() {
        let texts = |v: Value| texts_from_input("input", v);
        assert_eq!(texts(json!("a")).unwrap(), vec!["a"]);
        assert_eq!(texts(json!(["a", "b"])).unwrap(), vec!["a", "b"]);
        assert!(texts(json!([])).unwrap().is_empty());
        let code = |v: Value| texts(v).unwrap_err().status_and_code().1;
        assert_eq!(code(json!([1, 2, 3])), "token_input_unsupported");
        assert_eq!(code(json!([[1, 2], [3]])), "token_input_unsupported");
        assert_eq!(code(json!(["a", null])), "invalid_request");
        assert_eq!(code(json!(5)), "invalid_request");
    }
}

/// A rerank request in the shape of text-embeddings-inference's `/rerank`: texts scored
/// against a query by the server's cross-encoder.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RerankTextsRequest {
    /// The query.
    #[schema(example = "How do lighthouses warn ships?")]
    pub query: String,
    /// The texts to score against it (at least one; at most the server's `--max-k`).
    pub texts: Vec<String>,
    /// Return each text beside its score.
    #[serde(default)]
    pub return_text: bool,
    /// Return the classification head's raw logits instead of `CrossEncoder.predict`'s
    /// scores (the model's activation applied, a probability for most rerankers).
    #[serde(default)]
    pub raw_scores: bool,
    /// Accepted for compatibility: a (query, text) pair longer than the model reads is always
    /// truncated, the longer of the two losing tokens first, as sentence-transformers does.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end truncation cuts: `Right` only.
    #[serde(default)]
    pub truncation_direction: TruncationDirection,
}

/// One text's score, in TEI's shape.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RerankedText {
    /// The text's position in the request.
    pub index: usize,
    /// Its relevance to the query: higher is more relevant.
    #[schema(example = 0.97)]
    pub score: f32,
    /// The text, with `return_text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}
