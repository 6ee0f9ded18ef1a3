//! The search playground: a page at `GET /ui` where a person picks a collection, runs queries
//! with every search option, and reads the hits in their documents.
//!
//! The page is static: HTML, one script and one style sheet, compiled into the binary from
//! `src/api/ui/`, with no build step and nothing fetched from elsewhere. Everything it shows
//! it asks of the API from the browser, with the API key the person types in (kept in the
//! page's memory only), so the page and its assets hold no data and are open without a key
//! (see [`auth`](super::auth)); the API routes they call stay behind it.
//!
//! The page is not part of the API: its routes are not in the OpenAPI document. They pass
//! through the same middleware as the API (request ids, tracing, metrics under their fixed
//! route templates), and every response carries a strict Content-Security-Policy: scripts,
//! styles and connections from this origin only, no inline script or style, no framing.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::state::AppState;

/// The page's routes, each a fixed path: [`auth`](super::auth) opens exactly these, and the
/// metrics label requests with them, so the set of labels stays fixed.
pub const ROUTES: [&str; 4] = [PAGE, SCRIPT, STYLE, ICON];

const PAGE: &str = "/ui";
const SCRIPT: &str = "/ui/app.js";
const STYLE: &str = "/ui/style.css";
const ICON: &str = "/ui/icon.svg";

/// Where the page may load from and connect to. `'self'` everywhere, no `'unsafe-inline'`:
/// server data that slipped into the DOM as markup still could not run. `frame-ancestors`
/// stops other sites from framing the page (clickjacking the key prompt); `form-action` and
/// `base-uri` close the ways around `default-src` that it does not cover.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file and its media type.
struct Asset {
    content_type: &'static str,
    body: &'static str,
}

const PAGE_ASSET: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("ui/index.html"),
};

const SCRIPT_ASSET: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("ui/app.js"),
};

const STYLE_ASSET: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("ui/style.css"),
};

const ICON_ASSET: Asset = Asset {
    content_type: "image/svg+xml",
    body: include_str!("ui/icon.svg"),
};

/// The page's routes, for [`router`](super::router) to merge before its middleware.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(PAGE, get(|| async { serve(&PAGE_ASSET) }))
        .route(SCRIPT, get(|| async { serve(&SCRIPT_ASSET) }))
        .route(STYLE, get(|| async { serve(&STYLE_ASSET) }))
        .route(ICON, get(|| async { serve(&ICON_ASSET) }))
}

fn serve(asset: &'static Asset) -> Response {
    let headers = [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
        // Browsers must not second-guess the types above (a script served as something else
        // is not run).
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        // For browsers that predate `frame-ancestors`.
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        // The files change with the binary, not with a URL: revalidate on every load, so that
        // an upgraded server never pairs a new page with a cached old script.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    (headers, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let page = PAGE_ASSET.body;
        // Every script element loads a file; no style element or attribute, no handler
        // attribute: the policy would block them, and the page would break silently.
        assert_eq!(
            page.matches("<script").count(),
            page.matches("<script src=").count()
        );
        for inline in ["<style", " style=", " onclick=", " onload=", "javascript:"] {
            assert!(!page.contains(inline), "the page contains {inline:?}");
        }
        for asset in ROUTES.iter().filter(|r| **r != PAGE) {
            // Relative references, so that the page also works behind a path prefix.
            let relative = asset.trim_start_matches('/');
            assert!(page.contains(relative), "the page does not load {asset}");
        }
    }

    #[test]
    fn the_script_never_parses_server_data_as_markup() {
        let script = SCRIPT_ASSET.body;
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
            "new Function",
            "localStorage",
            "sessionStorage",
            "document.cookie",
        ] {
            assert!(!script.contains(sink), "app.js uses {sink}");
        }
    }
}
