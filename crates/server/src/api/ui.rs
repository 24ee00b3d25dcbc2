//! The web UI: plain ES modules, CSS and one HTML page from `crates/server/ui/`,
//! compiled into the binary, so `tailwater server` serves it with no network
//! and no build step. The page's own addresses (`/`, `/runners`,
//! `/runners/{runner}`, `/requests/{id}`) all answer with the same page,
//! which routes in the browser; its assets are under `/ui/`.
//!
//! Every answer carries a Content-Security-Policy that allows scripts,
//! styles and connections from this origin only: no inline script, no
//! other origin, no framing. The UI talks to the API with the token the
//! user signed in with, which stays in the tab's session storage.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::ApiError;

/// Scripts, styles, images and API calls from this origin only.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal) => {
        Asset {
            name: $name,
            bytes: include_bytes!(concat!("../../ui/", $name)),
        }
    };
}

/// Every file of the UI. A new file is added here too.
const ASSETS: &[Asset] = &[
    asset!("index.html"),
    asset!("style.css"),
    asset!("favicon.svg"),
    asset!("app.js"),
    asset!("api.js"),
    asset!("search.js"),
    asset!("format.js"),
    asset!("ansi.js"),
    asset!("dom.js"),
    asset!("logview.js"),
    asset!("histogram.js"),
    asset!("explorer.js"),
    asset!("runners.js"),
    asset!("request.js"),
    asset!("subject.js"),
];

/// Each asset's entity tag: a digest of its bytes, so a browser revalidates
/// cheaply and never keeps a stale UI after an upgrade.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.bytes);
            HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex is a valid header value")
        })
        .collect()
});

/// The page, for each of its own addresses.
pub async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers).expect("index.html is an asset")
}

/// `GET /ui/{file}`.
pub async fn asset(Path(name): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    serve(&name, &headers).ok_or_else(|| {
        ApiError::not_found(format!(
            "no such file of the web UI: '{name}'; open / to load the UI"
        ))
    })
}

fn serve(name: &str, request: &HeaderMap) -> Option<Response> {
    let index = ASSETS.iter().position(|asset| asset.name == name)?;
    let asset = &ASSETS[index];
    let etag = ETAGS[index].clone();
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .is_some_and(|tags| tags.as_bytes() == etag.as_bytes());
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(content_type(name)),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    Some(response)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map_or("", |(_, extension)| extension) {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        _ => "application/octet-stream",
    }
}
