//! API keys: who may call which route.
//!
//! Authentication is off until a key is configured. Once any key is, every route but `/healthz`
//! and `/readyz` (which orchestrators probe without credentials) and the playground's page and
//! assets ([`ui::ROUTES`]: static files that hold no data, and the page must load to ask for
//! the key) needs one, sent as
//! `Authorization: Bearer <key>` or as `api-key: <key>`. A read-write key opens every route; a
//! read-only key opens the routes that change nothing and gets 403 `forbidden` on the others.
//! A missing or unknown key gets 401 `unauthorized` with `WWW-Authenticate: Bearer`.
//!
//! Keys are compared in constant time, and every configured key is compared on every request,
//! so neither the time to refuse a key nor the time to accept one tells how much of it matched
//! or which key it was. Only a key's length can show. Keys never reach a log: [`ApiKey`] and
//! [`ApiKeys`] print as redacted, and the errors never quote the key sent.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::{Choice, ConstantTimeEq};

use super::error::ApiError;
use super::ui;

/// Routes open without a key, for liveness and readiness probes.
const OPEN_ROUTES: [&str; 2] = ["/healthz", "/readyz"];

/// POST routes that read and change nothing, so a read-only key may call them. Every other
/// route with a method beyond GET and HEAD counts as a write: a new route is closed to
/// read-only keys until it is listed here.
const READ_ONLY_POSTS: [&str; 6] = [
    "/collections/{name}/documents/get",
    "/collections/{name}/query",
    "/collections/{name}/query/batch",
    "/v1/embeddings",
    "/embed",
    "/rerank",
];

/// The header of the `api-key: <key>` style.
const API_KEY_HEADER: &str = "api-key";

/// One API key. Its `Debug` output is redacted, so that settings can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// A key from its text, with surrounding whitespace removed; `None` when nothing is left.
    pub fn new(key: &str) -> Option<ApiKey> {
        let key = key.trim();
        (!key.is_empty()).then(|| ApiKey(Arc::from(key)))
    }

    fn matches(&self, presented: &[u8]) -> Choice {
        self.0.as_bytes().ct_eq(presented)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Parses one key, for the command line; an empty or all-whitespace key is refused rather than
/// silently turning authentication off.
impl FromStr for ApiKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiKey::new(s).ok_or_else(|| {
            "an API key cannot be empty (leave the variable unset to run without keys)".to_owned()
        })
    }
}

/// The keys the server accepts. Empty (the default): authentication is off.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys {
    read_write: Vec<ApiKey>,
    read_only: Vec<ApiKey>,
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("read_write", &self.read_write.len())
            .field("read_only", &self.read_only.len())
            .finish()
    }
}

/// What a request's credentials allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Every route.
    ReadWrite,
    /// Routes that change nothing.
    ReadOnly,
}

/// Why a request's credentials were not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No key was sent.
    Missing,
    /// The key sent is not one of the server's.
    Invalid,
}

impl ApiKeys {
    /// Keys that grant full access, and keys that grant read access only.
    pub fn new(read_write: Vec<ApiKey>, read_only: Vec<ApiKey>) -> ApiKeys {
        ApiKeys {
            read_write,
            read_only,
        }
    }

    /// Whether any key is configured, i.e. whether requests must authenticate.
    pub fn enabled(&self) -> bool {
        !self.read_write.is_empty() || !self.read_only.is_empty()
    }

    /// Number of read-write keys.
    pub fn read_write_count(&self) -> usize {
        self.read_write.len()
    }

    /// Number of read-only keys.
    pub fn read_only_count(&self) -> usize {
        self.read_only.len()
    }

    /// What the key sent in `headers` allows. Every configured key is compared, whichever
    /// matches, so the time taken does not depend on which one does.
    pub fn check(&self, headers: &HeaderMap) -> Result<Access, Denied> {
        let presented = presented_key(headers).ok_or(Denied::Missing)?;
        let any = |keys: &[ApiKey]| {
            keys.iter()
                .fold(Choice::from(0), |found, key| found | key.matches(presented))
        };
        let read_write = any(&self.read_write);
        let read_only = any(&self.read_only);
        if bool::from(read_write) {
            Ok(Access::ReadWrite)
        } else if bool::from(read_only) {
            Ok(Access::ReadOnly)
        } else {
            Err(Denied::Invalid)
        }
    }
}

/// The key a request carries: the token of `Authorization: Bearer` (the scheme in any case),
/// else the `api-key` header.
fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| {
            let value = value.as_bytes();
            let (scheme, token) = value.split_at_checked(7)?;
            scheme.eq_ignore_ascii_case(b"bearer ").then_some(token)
        })
        .map(<[u8]>::trim_ascii)
        .filter(|token| !token.is_empty());
    bearer.or_else(|| {
        headers
            .get(API_KEY_HEADER)
            .map(|value| value.as_bytes().trim_ascii())
            .filter(|key| !key.is_empty())
    })
}

/// Whether a route (its template, or `None` for a path no route has) changes data, and so
/// needs a read-write key.
pub fn is_write(method: &Method, route: Option<&str>) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return false;
    }
    match route {
        Some(route) => !(method == Method::POST && READ_ONLY_POSTS.contains(&route)),
        // No route: the answer is a 404 or 405 whatever the key, so reading suffices.
        None => false,
    }
}

/// Middleware: lets a request through when the server has no keys, when its route is open, or
/// when its key allows it; refuses it otherwise with 401 or 403.
pub(crate) async fn require_key(State(keys): State<ApiKeys>, req: Request, next: Next) -> Response {
    if !keys.enabled() {
        return next.run(req).await;
    }
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    if route.is_some_and(|r| OPEN_ROUTES.contains(&r) || ui::ROUTES.contains(&r)) {
        return next.run(req).await;
    }
    match keys.check(req.headers()) {
        Ok(Access::ReadWrite) => next.run(req).await,
        Ok(Access::ReadOnly) if !is_write(req.method(), route) => next.run(req).await,
        Ok(Access::ReadOnly) => ApiError::Forbidden {
            method: req.method().to_string(),
            route: route.unwrap_or_else(|| req.uri().path()).to_owned(),
        }
        .into_response(),
        Err(Denied::Missing) => ApiError::Unauthorized {
            reason: "this server requires an API key: send 'Authorization: Bearer <key>' or \
                     'api-key: <key>'",
        }
        .into_response(),
        Err(Denied::Invalid) => ApiError::Unauthorized {
            reason: "the API key is not valid",
        }
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::new(
            vec![ApiKey::new("rw-1").unwrap(), ApiKey::new("rw-2").unwrap()],
            vec![ApiKey::new("ro").unwrap()],
        )
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
        h
    }

    #[test]
    fn keys_are_recognised_in_both_header_styles() {
        let k = keys();
        assert_eq!(
            k.check(&headers("authorization", "Bearer rw-2")),
            Ok(Access::ReadWrite)
        );
        assert_eq!(
            k.check(&headers("authorization", "bearer  ro ")),
            Ok(Access::ReadOnly)
        );
        assert_eq!(k.check(&headers("api-key", "rw-1")), Ok(Access::ReadWrite));
        assert_eq!(k.check(&headers("api-key", "rw-")), Err(Denied::Invalid));
        assert_eq!(
            k.check(&headers("authorization", "Basic cnctMQ==")),
            Err(Denied::Missing)
        );
        assert_eq!(k.check(&HeaderMap::new()), Err(Denied::Missing));
        assert_eq!(
            k.check(&headers("authorization", "Bearer ")),
            Err(Denied::Missing)
        );
    }

    #[test]
    fn debug_output_never_shows_a_key() {
        let printed = format!("{:?} {:?}", keys(), ApiKey::new("rw-1").unwrap());
        assert!(!printed.contains("rw-"), "{printed}");
        assert!(!printed.contains("ro\""), "{printed}");
    }

    #[test]
    fn writes_are_every_mutating_route_but_the_listed_reads() {
        let post = Method::POST;
        assert!(!is_write(&Method::GET, Some("/collections/{name}")));
        assert!(is_write(&Method::PUT, Some("/collections/{name}")));
        assert!(is_write(&Method::DELETE, Some("/collections/{name}")));
        assert!(is_write(&post, Some("/collections/{name}/documents")));
        assert!(is_write(
            &Method::PUT,
            Some("/collections/{name}/documents")
        ));
        assert!(is_write(
            &post,
            Some("/collections/{name}/documents/delete")
        ));
        assert!(!is_write(&post, Some("/collections/{name}/documents/get")));
        assert!(!is_write(&post, Some("/collections/{name}/query")));
        assert!(!is_write(&post, Some("/collections/{name}/query/batch")));
        assert!(!is_write(&post, Some("/v1/embeddings")));
        assert!(!is_write(&post, Some("/embed")));
        assert!(!is_write(&post, None));
    }
}
