//! Headers and answers: the upgrade asked for, the request id taken or
//! made, hop-by-hop headers removed, `X-Forwarded-For`, and the JSON error
//! the proxy answers with itself.

use std::net::SocketAddr;
use std::str::FromStr;
use tailwater_model::wire::ErrorBody;

use bytes::Bytes;

use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::{ProxyBody, MAX_CLIENT_REQUEST_ID, REQUEST_ID};

/// The protocol a request asks to switch to (`Connection: upgrade` and an
/// `Upgrade` header), if it asks.
pub(super) fn upgrade_asked(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(hyper::header::UPGRADE).cloned())
        .flatten()
}

/// The client's `X-Request-Id`, when it is a usable one: 1 to 200 visible
/// ASCII characters.
pub(super) fn client_request_id(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&REQUEST_ID)?.to_str().ok()?.trim();
    let usable = !value.is_empty()
        && value.len() <= MAX_CLIENT_REQUEST_ID
        && value.bytes().all(|byte| byte.is_ascii_graphic());
    usable.then(|| value.to_owned())
}

pub(super) fn new_request_id() -> String {
    format!("req-{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// Headers that are about one connection, not the message (RFC 9110 7.6.1),
/// and those the `Connection` header names.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_str(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

pub(super) fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|value| value.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

pub(super) fn json_error(status: StatusCode, code: &str, message: &str) -> Response<ProxyBody> {
    let body =
        serde_json::to_string(&ErrorBody::new(code, message)).expect("an error body serializes");
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("a status and a JSON body make a response")
}

/// An error and its causes, `a: b: c` (hyper's own message is terse).
pub(super) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
