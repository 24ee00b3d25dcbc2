//! `--proxy LISTEN=TARGET`: the agent as a reverse proxy in front of the
//! worker's HTTP port, marking every request; and `--health URL`, the check
//! that tells when the worker is ready.
//!
//! Each request gets an id: the client's `X-Request-Id` when it sends a
//! usable one, else a new `req-` + 16 hex digits. The worker receives it as
//! `X-Request-Id` (so its own JSON lines can name it), and so does the
//! client, on the response. The request starts when it arrives and ends when
//! the response body has been sent whole (or failed, or the client left);
//! both are system records with the request's id, the end with status and
//! duration. Bodies stream both ways; nothing is buffered.
//!
//! A request asking to switch protocols (`Connection: upgrade`, such as a
//! WebSocket) is passed to the worker with its `Upgrade` header; when the
//! worker answers `101`, the client's and the worker's connections are
//! joined both ways, and the request ends (status 101) when the joined
//! connection closes.
//!
//! `GET /healthz` (and `HEAD`) is not a request: it is answered from the
//! worker's health check (`--health`, else the worker's own `/healthz`),
//! and leaves no record, so a load balancer's polling does not fill the logs.
//!
//! The files: this one (the flags, the server, the health check),
//! `tracked` (the body that ends a request), `headers`.

mod headers;
mod tracked;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::net::TcpListener;

use crate::recorder::fields;
use crate::requests::{Outcome, Ready, Requests, Ticket, Via, Which};
use headers::*;
use tracked::{End, Tracked};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(super) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// How often the health check is tried until the worker is ready.
pub const HEALTH_INTERVAL: Duration = Duration::from_millis(250);
/// How long one health check may take.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `X-Request-Id` taken from a client; a longer one is replaced.
pub(super) const MAX_CLIENT_REQUEST_ID: usize = 200;

pub(super) static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `LISTEN=TARGET`: where the agent listens, and the worker's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// `host:port`, as an authority.
    pub target: String,
}

impl FromStr for ProxyConfig {
    type Err = String;

    /// `0.0.0.0:8080=127.0.0.1:8000`; a bare port listens on all addresses
    /// (`8080=8000`) or targets loopback; `http://` before the target is
    /// allowed.
    fn from_str(text: &str) -> Result<ProxyConfig, String> {
        let invalid = |why: &str| {
            format!("invalid --proxy '{text}': {why}; write LISTEN=TARGET, such as 0.0.0.0:8080=127.0.0.1:8000")
        };
        let (listen, target) = text.split_once('=').ok_or_else(|| invalid("no '='"))?;
        let listen = match listen.parse::<u16>() {
            Ok(port) => SocketAddr::from(([0, 0, 0, 0], port)),
            Err(_) => listen
                .parse::<SocketAddr>()
                .map_err(|_| invalid("LISTEN is not an address:port or a port"))?,
        };
        let target = target
            .strip_prefix("http://")
            .unwrap_or(target)
            .trim_end_matches('/');
        let target = match target.parse::<u16>() {
            Ok(port) => format!("127.0.0.1:{port}"),
            Err(_) => target.to_owned(),
        };
        let authority = target
            .parse::<hyper::http::uri::Authority>()
            .map_err(|_| invalid("TARGET is not host:port"))?;
        if authority.port_u16().is_none() {
            return Err(invalid("TARGET has no port"));
        }
        Ok(ProxyConfig { listen, target })
    }
}

/// A health check URL: `http://` only.
pub fn parse_health_url(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|_| format!("invalid --health '{text}': not a URL"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!(
            "invalid --health '{text}': write an http:// URL, such as http://127.0.0.1:8000/health"
        ));
    }
    Ok(uri)
}

/// Binds the proxy's address (before the worker starts, so a port in use
/// is a clear error at once).
pub async fn bind(config: &ProxyConfig) -> std::io::Result<TcpListener> {
    TcpListener::bind(config.listen).await
}

/// What the agent says on stderr once the proxy is bound:
/// `tailwater: proxy listening on http://ADDR (to the worker at TARGET)`,
/// ADDR the address bound. With port 0 in LISTEN the kernel picks a free
/// port as the proxy binds it, and this line says which: whoever starts the
/// agent (`tailwater dev`, tests) reads it ([`announced`]) instead of
/// picking a port that looks free beforehand, which another process may
/// take before the proxy binds it.
pub fn announcement(bound: SocketAddr, config: &ProxyConfig) -> String {
    format!("{ANNOUNCEMENT}{bound} (to the worker at {})", config.target)
}

const ANNOUNCEMENT: &str = "tailwater: proxy listening on http://";

/// The address a line of the agent's stderr announces the proxy bound, if
/// it is that line ([`announcement`]).
pub fn announced(line: &str) -> Option<SocketAddr> {
    let (_, rest) = line.split_once(ANNOUNCEMENT)?;
    rest.split_whitespace().next()?.parse().ok()
}

struct Proxy {
    target: String,
    health: Uri,
    client: Client<HttpConnector, Incoming>,
    health_client: Client<HttpConnector, Empty<Bytes>>,
    requests: Arc<Requests>,
}

/// Serves the proxy until the task is aborted.
pub fn serve(
    listener: TcpListener,
    config: &ProxyConfig,
    health: Option<Uri>,
    requests: Arc<Requests>,
) -> tokio::task::JoinHandle<()> {
    let health = health.unwrap_or_else(|| {
        format!("http://{}/healthz", config.target)
            .parse()
            .expect("a checked authority makes a URL")
    });
    let proxy = Arc::new(Proxy {
        target: config.target.clone(),
        health,
        client: Client::builder(TokioExecutor::new()).build_http(),
        health_client: Client::builder(TokioExecutor::new()).build_http(),
        requests,
    });
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of descriptors, most likely: wait, do not spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let proxy = proxy.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, Infallible>(proxy.handle(request, peer).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    })
}

impl Proxy {
    async fn handle(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        if request.uri().path() == "/healthz"
            && (request.method() == Method::GET || request.method() == Method::HEAD)
        {
            return self.health_check(request.method() == Method::HEAD).await;
        }
        let received = Instant::now();
        let id = client_request_id(request.headers()).unwrap_or_else(new_request_id);
        let id_header =
            HeaderValue::from_str(&id).expect("a checked or generated id is a header value");
        let detail = fields(json!({
            "method": request.method().as_str(),
            "path": request.uri().path(),
        }));
        let ticket = self.requests.start(&id, Via::Proxy, received, detail).await;

        // Taken before the hop-by-hop headers go: a protocol switch asked
        // for, and the client's side of it once hyper has sent our 101.
        let upgrade = upgrade_asked(request.headers())
            .map(|protocol| (protocol, hyper::upgrade::on(&mut request)));
        let (mut parts, body) = request.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        if let Some((protocol, _)) = &upgrade {
            parts.headers.insert(
                hyper::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            parts
                .headers
                .insert(hyper::header::UPGRADE, protocol.clone());
        }
        parts.headers.insert(REQUEST_ID.clone(), id_header.clone());
        append_forwarded_for(&mut parts.headers, peer);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(self.target.as_str())
            .path_and_query(path)
            .build()
            .expect("a checked authority and a request's path make a URI");
        parts.version = hyper::Version::HTTP_11;

        match self.client.request(Request::from_parts(parts, body)).await {
            Ok(response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => match upgrade {
                Some((_, client_side)) => self.join(response, client_side, ticket, id_header),
                None => {
                    let message = "the worker switched protocols without being asked to";
                    self.requests
                        .end(
                            Which::Ticket(ticket),
                            Instant::now(),
                            Some(502),
                            Outcome::Error(message.into()),
                        )
                        .await;
                    json_error(StatusCode::BAD_GATEWAY, "bad_gateway", message)
                }
            },
            Ok(response) => {
                let status = response.status().as_u16();
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                parts.headers.entry(REQUEST_ID.clone()).or_insert(id_header);
                let body = Tracked {
                    inner: body,
                    end: Some(End {
                        requests: self.requests.clone(),
                        ticket,
                        status,
                    }),
                };
                Response::from_parts(parts, body.boxed_unsync())
            }
            Err(error) => {
                let message = format!("the worker did not answer: {}", error_chain(&error));
                self.requests
                    .end(
                        Which::Ticket(ticket),
                        Instant::now(),
                        Some(502),
                        Outcome::Error(message.clone()),
                    )
                    .await;
                let mut response = json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
                response.headers_mut().insert(REQUEST_ID.clone(), id_header);
                response
            }
        }
    }

    /// The worker agreed to switch protocols: answers the client's 101 with
    /// the worker's headers, and once both sides are upgraded copies bytes
    /// both ways until either closes; the request ends then.
    fn join(
        &self,
        mut response: Response<Incoming>,
        client_side: hyper::upgrade::OnUpgrade,
        ticket: Ticket,
        id_header: HeaderValue,
    ) -> Response<ProxyBody> {
        let worker_side = hyper::upgrade::on(&mut response);
        let (mut parts, _) = response.into_parts();
        let protocol = parts.headers.get(hyper::header::UPGRADE).cloned();
        remove_hop_by_hop(&mut parts.headers);
        parts.headers.insert(
            hyper::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        if let Some(protocol) = protocol {
            parts.headers.insert(hyper::header::UPGRADE, protocol);
        }
        parts.headers.entry(REQUEST_ID.clone()).or_insert(id_header);
        let requests = self.requests.clone();
        tokio::spawn(async move {
            let joined = async {
                let (client, worker) = tokio::try_join!(client_side, worker_side)?;
                let (mut client, mut worker) = (TokioIo::new(client), TokioIo::new(worker));
                let copied = tokio::io::copy_bidirectional(&mut client, &mut worker).await?;
                Ok::<_, BoxError>(copied)
            };
            let outcome = match joined.await {
                Ok(_) => Outcome::Completed,
                Err(error) => Outcome::Error(format!(
                    "the upgraded connection broke off: {}",
                    error_chain(&*error)
                )),
            };
            requests
                .end(Which::Ticket(ticket), Instant::now(), Some(101), outcome)
                .await;
        });
        Response::from_parts(
            parts,
            Empty::new().map_err(|never| match never {}).boxed_unsync(),
        )
    }

    /// The worker's health, as it answers it.
    async fn health_check(&self, head: bool) -> Response<ProxyBody> {
        let request = Request::get(self.health.clone())
            .body(Empty::new())
            .expect("a GET of a checked URL");
        let answer =
            tokio::time::timeout(HEALTH_TIMEOUT, self.health_client.request(request)).await;
        match answer {
            Ok(Ok(response)) => {
                let (mut parts, body) = response.into_parts();
                remove_hop_by_hop(&mut parts.headers);
                let body = if head {
                    Empty::new().map_err(|never| match never {}).boxed_unsync()
                } else {
                    body.map_err(BoxError::from).boxed_unsync()
                };
                Response::from_parts(parts, body)
            }
            Ok(Err(error)) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_unavailable",
                &format!(
                    "the worker's health check {} did not answer: {}",
                    self.health,
                    error_chain(&error)
                ),
            ),
            Err(_) => json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_unavailable",
                &format!(
                    "the worker's health check {} did not answer within {}s",
                    self.health,
                    HEALTH_TIMEOUT.as_secs()
                ),
            ),
        }
    }
}

/// Tries `url` every [`HEALTH_INTERVAL`] while the worker is not ready (it
/// may be again after a restart), and records it as ready when the check
/// answers with a success; runs until aborted.
pub async fn wait_until_healthy(url: Uri, requests: Arc<Requests>) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    loop {
        if !requests.is_ready() {
            let request = Request::get(url.clone())
                .body(Empty::new())
                .expect("a GET of a checked URL");
            if let Ok(Ok(response)) =
                tokio::time::timeout(HEALTH_TIMEOUT, client.request(request)).await
            {
                if response.status().is_success() {
                    requests.ready(Ready::Health {
                        url: url.to_string(),
                        status: response.status().as_u16(),
                    });
                }
            }
        }
        tokio::time::sleep(HEALTH_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderMap;

    use super::*;

    #[test]
    fn the_bound_address_is_announced_and_read_back() {
        let config: ProxyConfig = "127.0.0.1:0=127.0.0.1:8000".parse().unwrap();
        for bound in ["127.0.0.1:43017", "[::1]:8080", "0.0.0.0:1"] {
            let bound: SocketAddr = bound.parse().unwrap();
            let line = announcement(bound, &config);
            assert!(
                line.ends_with("(to the worker at 127.0.0.1:8000)"),
                "{line}"
            );
            assert_eq!(announced(&line), Some(bound), "{line}");
        }
        assert_eq!(
            announced("tailwater: shipping logs to http://x:1 again"),
            None
        );
        assert_eq!(
            announced("tailwater: proxy listening on http://nowhere"),
            None
        );
    }

    #[test]
    fn proxy_flags() {
        assert_eq!(
            "0.0.0.0:8080=127.0.0.1:8000"
                .parse::<ProxyConfig>()
                .unwrap(),
            ProxyConfig {
                listen: "0.0.0.0:8080".parse().unwrap(),
                target: "127.0.0.1:8000".into()
            }
        );
        assert_eq!(
            "8080=8000".parse::<ProxyConfig>().unwrap(),
            ProxyConfig {
                listen: "0.0.0.0:8080".parse().unwrap(),
                target: "127.0.0.1:8000".into()
            }
        );
        assert_eq!(
            "127.0.0.1:9000=http://worker:8000/"
                .parse::<ProxyConfig>()
                .unwrap()
                .target,
            "worker:8000"
        );
        for bad in ["8080", "x=8000", "8080=worker", "8080=", "8080=a b:1"] {
            let error = bad.parse::<ProxyConfig>().unwrap_err();
            assert!(error.starts_with("invalid --proxy"), "{bad}: {error}");
        }
    }

    #[test]
    fn health_urls_are_http() {
        assert!(parse_health_url("http://127.0.0.1:8000/health").is_ok());
        assert!(parse_health_url("https://x/health").is_err());
        assert!(parse_health_url("/health").is_err());
    }

    #[test]
    fn request_ids_from_clients_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(client_request_id(&headers), None);
        headers.insert(&REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(client_request_id(&headers).as_deref(), Some("abc-123"));
        headers.insert(&REQUEST_ID, HeaderValue::from_static("has space"));
        assert_eq!(client_request_id(&headers), None);
        headers.insert(
            &REQUEST_ID,
            HeaderValue::from_str(&"x".repeat(201)).unwrap(),
        );
        assert_eq!(client_request_id(&headers), None);
        let id = new_request_id();
        assert!(id.starts_with("req-") && id.len() == 20, "{id}");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("content-type"));
    }
}
