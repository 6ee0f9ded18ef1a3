//! The embedding endpoints: `POST /v1/embeddings` in OpenAI's shape and `POST /embed` in the
//! shape of Hugging Face's text-embeddings-inference (TEI).
//!
//! Both refuse an input longer than the model reads (400 `input_too_long`), as OpenAI and TEI
//! do, unless truncation is asked for: per request with TEI's `truncate`, or for both
//! endpoints with the server's `--auto-truncate`. Passages for collections are never
//! truncated; they are split instead.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;

use crate::api::dto::{
    EmbeddingValue, EncodingFormat, OpenAiEmbedding, OpenAiEmbeddingsRequest,
    OpenAiEmbeddingsResponse, OpenAiUsage, RerankTextsRequest, RerankedText, TeiEmbedRequest,
    TeiEmbedResponse, TruncationDirection, texts_from_input,
};
use crate::api::error::{ApiError, ApiResult, responses};
use crate::api::extract::ApiJson;
use crate::api::state::{AppState, Ready};

/// Create embeddings, in OpenAI's request and response shape.
///
/// `model` is accepted and ignored (the response names the loaded model); `dimensions`, if
/// given, must be the model's. Token-id arrays are refused: send text.
#[utoipa::path(
    post,
    path = "/v1/embeddings",
    tag = "embeddings",
    request_body = OpenAiEmbeddingsRequest,
    responses(
        (status = 200, description = "One embedding per input, in order.", body = OpenAiEmbeddingsResponse),
        responses::Common,
    )
)]
pub async fn openai_embeddings(
    Ready(service): Ready,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<OpenAiEmbeddingsRequest>,
) -> ApiResult<Json<OpenAiEmbeddingsResponse>> {
    let texts = texts_from_input("input", body.input)?;
    let model = service.info();
    if let Some(d) = body.dimensions
        && d != model.dimension
    {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            format!(
                "dimensions: the model {} produces {}-dimensional embeddings and cannot shorten \
                 them; omit \"dimensions\" or pass {}",
                model.model, model.dimension, model.dimension
            ),
        ));
    }
    let embeddings = service
        .embed(texts, "input", state.settings().auto_truncate)
        .await?;
    let data = embeddings
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| OpenAiEmbedding {
            object: "embedding",
            index,
            embedding: match body.encoding_format {
                EncodingFormat::Float => EmbeddingValue::Float(v),
                EncodingFormat::Base64 => EmbeddingValue::Base64(base64_le(&v)),
            },
        })
        .collect();
    Ok(Json(OpenAiEmbeddingsResponse {
        object: "list",
        data,
        model: model.model,
        usage: OpenAiUsage {
            prompt_tokens: embeddings.tokens,
            total_tokens: embeddings.tokens,
        },
    }))
}

/// Embed texts, in the shape of text-embeddings-inference's `/embed`: an array of vectors,
/// one per input (also for a single string).
#[utoipa::path(
    post,
    path = "/embed",
    tag = "embeddings",
    request_body = TeiEmbedRequest,
    responses(
        (status = 200, description = "One vector per input, in order.", body = TeiEmbedResponse),
        responses::Common,
    )
)]
pub async fn tei_embed(
    Ready(service): Ready,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TeiEmbedRequest>,
) -> ApiResult<Json<TeiEmbedResponse>> {
    if body.truncation_direction == TruncationDirection::Left {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "truncation_direction: only \"Right\" (keep the beginning) is supported",
        ));
    }
    let texts = texts_from_input("inputs", body.inputs)?;
    let truncate = body.truncate.unwrap_or(state.settings().auto_truncate);
    let mut vectors = service.embed(texts, "inputs", truncate).await?.vectors;
    if body.normalize {
        vectors.iter_mut().for_each(|v| normalize(v));
    }
    Ok(Json(TeiEmbedResponse(vectors)))
}

/// Score texts against a query with the server's cross-encoder (`--reranker`), in the shape of
/// text-embeddings-inference's `/rerank`: the texts by index, most relevant first. Scores are
/// what sentence-transformers' `CrossEncoder.predict` gives; `raw_scores` returns the logits.
/// 400 `reranker_unavailable` when the server runs no reranker.
#[utoipa::path(
    post,
    path = "/rerank",
    tag = "embeddings",
    request_body = RerankTextsRequest,
    responses(
        (status = 200, description = "Every text by index, most relevant first.", body = Vec<RerankedText>),
        responses::Common,
    )
)]
pub async fn rerank(
    Ready(service): Ready,
    ApiJson(body): ApiJson<RerankTextsRequest>,
) -> ApiResult<Json<Vec<RerankedText>>> {
    if body.truncation_direction == TruncationDirection::Left {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "truncation_direction: only \"Right\" is supported",
        ));
    }
    let texts = body.return_text.then(|| body.texts.clone());
    let scores = service.rerank(body.query, body.texts).await?;
    let mut out: Vec<RerankedText> = scores
        .iter()
        .enumerate()
        .map(|(index, s)| RerankedText {
            index,
            score: if body.raw_scores { s.logit } else { s.score },
            text: None,
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    if let Some(mut texts) = texts {
        for r in &mut out {
            r.text = Some(std::mem::take(&mut texts[r.index]));
        }
    }
    Ok(Json(out))
}

/// Scales `v` to unit length, unless it already is (or is zero).
fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 && (norm - 1.0).abs() > 1e-6 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Base64 of the vector's little-endian `f32` bytes, as OpenAI encodes embeddings.
fn base64_le(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        assert_eq!(base64_le(&[1.0]), "AACAPw==");
    }

    #[test]
    fn normalize_leaves_unit_and_zero_vectors() {
        let mut v = vec![3.0, 4.0];
        normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
