//! Our own extractors, so that every malformed request gets our error shape: [`ApiJson`] for
//! bodies, [`ApiPath`] for path parameters.
//!
//! axum's own `Json` and `Path` answer a bad request with a plain-text body and their own choice
//! of status; these wrap the same machinery and turn each rejection into an [`ApiError`].

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::error::ApiError;
use super::state::AppState;

/// A JSON request body, deserialised into `T`.
///
/// * A body must be declared JSON: `application/json`, or any `application/*+json`,
///   parameters such as `charset` allowed. Anything else, a missing `Content-Type` included,
///   is 415 `unsupported_media_type`. This is what keeps web pages out: a browser sends a
///   cross-site request without asking the server first (no CORS preflight) only when its
///   body is untyped or of a form or `text/plain` type, so refusing those means no page a
///   user visits can write to, or delete from, a server without API keys. (`curl -d` without
///   `-H 'Content-Type: application/json'` sends a form type and is refused too.)
/// * An empty body (or only white space) reads as `{}`, so endpoints whose fields all have
///   defaults take no body, with or without a `Content-Type` (`curl -X PUT URL` works).
/// * A body over the server's limit is 413 `payload_too_large`.
/// * A syntax error is 400 `malformed_json`; a well-formed body that does not fit `T` (wrong
///   type, missing or unknown field) is 400 `invalid_request`, and the message names the field
///   by its path, such as `documents[2].vector[0]`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let declared = check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: state.settings().max_body_bytes,
                }
            } else {
                ApiError::bad_request("invalid_body", rejection.body_text())
            }
        })?;
        if !declared && !is_blank(&bytes) {
            return Err(ApiError::UnsupportedMediaType {
                content_type: "(none)".to_owned(),
            });
        }
        parse_json(&bytes).map(ApiJson)
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

/// Whether the request declares a JSON body (`true`) or declares nothing (`false`); any other
/// type is refused.
fn check_content_type(headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(false);
    };
    let refuse = || ApiError::UnsupportedMediaType {
        content_type: String::from_utf8_lossy(value.as_bytes()).into_owned(),
    };
    // `type/subtype; parameters`, case-insensitive.
    let essence = value
        .to_str()
        .map_err(|_| refuse())?
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = match essence.split_once('/') {
        Some(("application", subtype)) => subtype == "json" || subtype.ends_with("+json"),
        _ => false,
    };
    if json { Ok(true) } else { Err(refuse()) }
}

/// Deserialises a JSON body, naming the offending field in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if is_blank(bytes) { b"{}" } else { bytes };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Data => {
                let message = if path == "." {
                    inner.to_string()
                } else {
                    format!("{path}: {inner}")
                };
                ApiError::bad_request("invalid_request", message)
            }
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request("malformed_json", format!("malformed JSON: {inner}"))
            }
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request("malformed_json", format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// Path parameters, deserialised into `T`; a parameter that does not fit (say, invalid
/// percent-encoded UTF-8) is 400 `invalid_path`.
#[derive(Clone, Copy, Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::bad_request("invalid_path", rejection.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn code(r: Result<serde_json::Value, ApiError>) -> &'static str {
        r.unwrap_err().status_and_code().1
    }

    #[test]
    fn content_types() {
        let ok = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            check_content_type(&h).is_ok()
        };
        assert!(!check_content_type(&HeaderMap::new()).unwrap());
        assert!(ok("application/json"));
        assert!(ok("application/json; charset=utf-8"));
        assert!(ok("application/merge-patch+json"));
        assert!(!ok("text/plain"));
        assert!(!ok("application/x-www-form-urlencoded"));
        assert!(!ok("not a mime type"));
    }

    #[test]
    fn json_errors_are_classified() {
        assert_eq!(code(parse_json(b"{\"a\": ")), "malformed_json");
        assert_eq!(code(parse_json(b"{} {}")), "malformed_json");
        assert_eq!(code(parse_json(b"NaN")), "malformed_json");
        assert_eq!(
            parse_json::<serde_json::Value>(b" \n").unwrap(),
            serde_json::json!({})
        );

        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Inner {
            x: Vec<f32>,
        }
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            items: Vec<Inner>,
        }
        let e = parse_json::<Outer>(br#"{"items": [{"x": [1]}, {"x": [1, "a"]}]}"#).unwrap_err();
        assert_eq!(e.status_and_code().1, "invalid_request");
        assert!(e.to_string().starts_with("items[1].x[1]:"), "{e}");
        let e = parse_json::<Outer>(br#"{"items": [{"y": 1}]}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `y`"), "{e}");
    }
}
