//! A typed client for the tailwater HTTP API, used by the CLI, the agent and
//! the tests.
//!
//! ```no_run
//! # async fn example() -> Result<(), tailwater_client::ClientError> {
//! use tailwater_client::Client;
//! use tailwater_model::wire::LogsParams;
//!
//! let client = Client::new("http://127.0.0.1:7070", "tw_...")?;
//! let page = client
//!     .logs(&LogsParams { app: Some("sdxl".into()), ..Default::default() })
//!     .await?;
//! for record in page.records {
//!     println!("{} {}", record.level, record.message);
//! }
//! # Ok(())
//! # }
//! ```

mod drains;

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use tailwater_model::tenancy::{
    AppInfo, AppPatch, CreatedToken, NewApp, NewTenant, NewToken, TenantInfo, TenantPatch,
    TokenInfo,
};
use tailwater_model::time::TimePrecision;
use tailwater_model::wire::{encode_binary_batch, percent_encode, BINARY_BATCH_MEDIA_TYPE};
use tailwater_model::wire::{
    ClusterStatus, ErrorBody, ExportFormat, IngestBatch, IngestResponse, LogsCount, LogsPage,
    LogsParams, MissedNotice, RequestInfo, RequestList, RequestsParams, RunnerDetail, RunnerList,
    RunnerState, StatusInfo, MAX_PAGE_LIMIT,
};
use tailwater_model::LogRecord;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid server url '{0}': use a full url such as http://127.0.0.1:7070")]
    InvalidUrl(String),
    /// The server could not be reached (or the connection broke): `reason`
    /// is what the system said, in a few words.
    #[error("cannot reach the tailwater server at {server} ({reason}): is it running? (set --server or TAILWATER_SERVER)")]
    Unreachable { server: String, reason: String },
    #[error("{message}")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// 429: the server asks the caller to slow down, for `retry_after` when
    /// it said how long (`Retry-After` in seconds).
    #[error("{message}")]
    RateLimited {
        retry_after: Option<Duration>,
        code: String,
        message: String,
    },
    /// 507 (the server's disk is full) or 503 (it cannot store for now):
    /// nothing is wrong with the request; send it again after
    /// `retry_after` when the server said how long.
    #[error("{message}")]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
        code: String,
        message: String,
    },
}

impl ClientError {
    /// Whether trying again later may succeed: the server was away, or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. }
            | ClientError::Protocol(_)
            | ClientError::RateLimited { .. }
            | ClientError::Unavailable { .. } => true,
            ClientError::Api { status, .. } => *status >= 500,
            ClientError::InvalidUrl(_) => false,
        }
    }
}

/// A `Retry-After` of delta-seconds (the form rate limiters send; an HTTP
/// date is left to the caller's own backoff).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A connection to one server with one token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Trusted beside the public roots (`--ca-cert`).
    certificates: Vec<reqwest::Certificate>,
    /// The longest wait for the server's next bytes ([`Client::with_read_timeout`]).
    read_timeout: Option<Duration>,
}

impl Client {
    pub fn new(server: &str, token: &str) -> Result<Client, ClientError> {
        let base = server.trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => return Err(ClientError::InvalidUrl(server.to_owned())),
        }
        let mut client = Client {
            http: reqwest::Client::new(),
            base,
            token: token.to_owned(),
            certificates: Vec::new(),
            read_timeout: None,
        };
        client.build()?;
        Ok(client)
    }

    /// Builds the HTTP client of these settings.
    fn build(&mut self) -> Result<(), ClientError> {
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        for certificate in &self.certificates {
            builder = builder.add_root_certificate(certificate.clone());
        }
        if let Some(timeout) = self.read_timeout {
            builder = builder.read_timeout(timeout);
        }
        self.http = builder
            .build()
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        Ok(())
    }

    /// Trusts the certificates in `pem` for `https://`, beside the public
    /// roots: for a server whose certificate is self-signed or from a
    /// private authority (`--ca-cert`, `TAILWATER_CA_CERT`).
    pub fn with_ca_certificate(mut self, pem: &[u8]) -> Result<Client, ClientError> {
        self.certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
            ClientError::Protocol(format!(
                "invalid CA certificate: {error}; give a PEM file with one or more certificates"
            ))
        })?;
        self.build()?;
        Ok(self)
    }

    /// Gives the server at most `timeout` for each of its answers' next
    /// bytes (its headers, then each read of the body): a server that
    /// takes the connection and then sends nothing, frozen or cut off
    /// without a reset, is then [`ClientError::Unreachable`] ("timed
    /// out") instead of awaited forever. For a live tail, keep it above
    /// the server's keep-alive (15 s), which it sends when there is
    /// nothing else.
    pub fn with_read_timeout(mut self, timeout: Duration) -> Result<Client, ClientError> {
        self.read_timeout = Some(timeout);
        self.build()?;
        Ok(self)
    }

    pub fn server(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        unreachable(&self.base, &source)
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|source| self.unreachable(source))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        let parsed = serde_json::from_slice::<ErrorBody>(&body);
        if status == 429 {
            let (code, message) = match parsed {
                Ok(error) => (error.error.code, error.error.message),
                Err(_) => (
                    "rate_limited".into(),
                    "the server answered 429 (too many requests)".into(),
                ),
            };
            return Err(ClientError::RateLimited {
                retry_after,
                code,
                message,
            });
        }
        if status == 503 || status == 507 {
            let (code, message) = match parsed {
                Ok(error) => (error.error.code, error.error.message),
                Err(_) => (
                    "unavailable".into(),
                    format!("the server answered {status}: it cannot store for now"),
                ),
            };
            return Err(ClientError::Unavailable {
                status,
                retry_after,
                code,
                message,
            });
        }
        Err(match parsed {
            Ok(error) => ClientError::Api {
                status,
                code: error.error.code,
                message: error.error.message,
            },
            Err(_) => ClientError::Api {
                status,
                code: "http".into(),
                message: format!(
                    "server answered {status}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            },
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let body = response
            .bytes()
            .await
            .map_err(|source| self.unreachable(source))?;
        serde_json::from_slice(&body).map_err(|error| ClientError::Protocol(error.to_string()))
    }

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<(), ClientError> {
        self.send(self.request(reqwest::Method::GET, "/healthz"))
            .await
            .map(drop)
    }

    /// `GET /v1/status`: the server's version, the token's tenant and scope,
    /// and the tenant's store size (owner and admin tokens).
    pub async fn status(&self) -> Result<StatusInfo, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/v1/status"))
            .await
    }

    /// `GET /v1/cluster` (admin tokens): this node, the live nodes, and
    /// each partition's last sequence and every node's consumer of it.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/v1/cluster"))
            .await
    }

    /// `POST /v1/ingest`.
    pub async fn ingest(&self, batch: &IngestBatch) -> Result<IngestResponse, ClientError> {
        self.json(
            self.request(reqwest::Method::POST, "/v1/ingest")
                .json(batch),
        )
        .await
    }

    /// `POST /v1/ingest` with the batch in binary
    /// ([`tailwater_model::wire::encode_binary_batch`]): what the server
    /// decodes fastest. A server that does not take it answers 415
    /// ([`ClientError::Api`] with that status): send JSON instead.
    pub async fn ingest_binary(&self, batch: &IngestBatch) -> Result<IngestResponse, ClientError> {
        let body = encode_binary_batch(batch);
        self.json(
            self.request(reqwest::Method::POST, "/v1/ingest")
                .header(reqwest::header::CONTENT_TYPE, BINARY_BATCH_MEDIA_TYPE)
                .body(body),
        )
        .await
    }

    /// `GET /v1/logs`: one page.
    pub async fn logs(&self, params: &LogsParams) -> Result<LogsPage, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/v1/logs").query(params))
            .await
    }

    /// `GET /v1/logs/count`: how many records match `params`' filters (its
    /// paging parameters are left out: a count answers at once).
    pub async fn count(&self, params: &LogsParams) -> Result<LogsCount, ClientError> {
        let filters = LogsParams {
            limit: None,
            direction: None,
            cursor: None,
            after: None,
            around: None,
            ..params.clone()
        };
        self.json(
            self.request(reqwest::Method::GET, "/v1/logs/count")
                .query(&filters),
        )
        .await
    }

    /// `GET /v1/logs/tail`: records as they are stored, after the record
    /// with id `after` (or from now on when `None`), in ingest order. When the server
    /// says this client fell too far behind, the records it skipped are
    /// fetched through `GET /v1/logs` and come first, so none is lost; an
    /// error ends nothing, and resuming after the last record's id goes on
    /// with no gap and no duplicate.
    pub async fn tail(
        &self,
        params: &LogsParams,
        after: Option<&str>,
    ) -> Result<impl Stream<Item = Result<LogRecord, ClientError>> + use<>, ClientError> {
        let events = Box::pin(self.tail_events(params, after).await?);
        let filling = GapFiller {
            client: self.clone(),
            params: params.clone(),
            events,
            fetched: std::collections::VecDeque::new(),
            cursor: None,
        };
        Ok(futures_util::stream::unfold(filling, GapFiller::next))
    }

    /// `GET /v1/logs/tail` as the server sends it: records, and a
    /// [`TailEvent::Missed`] where this client fell too far behind.
    pub async fn tail_events(
        &self,
        params: &LogsParams,
        after: Option<&str>,
    ) -> Result<impl Stream<Item = Result<TailEvent, ClientError>> + use<>, ClientError> {
        let mut request = self
            .request(reqwest::Method::GET, "/v1/logs/tail")
            .query(params)
            .header("accept", "text/event-stream");
        if let Some(after) = after {
            request = request.header("last-event-id", after);
        }
        let response = self.send(request).await?;
        let server = self.base.clone();
        let events = response.bytes_stream().eventsource();
        Ok(events.filter_map(move |event| {
            let server = server.clone();
            async move {
                let protocol = |error: String| ClientError::Protocol(error);
                match event {
                    Ok(event) if event.event == "record" => Some(
                        serde_json::from_str::<LogRecord>(&event.data)
                            .map(TailEvent::Record)
                            .map_err(|error| protocol(error.to_string())),
                    ),
                    Ok(event) if event.event == "missed" => Some(
                        serde_json::from_str::<MissedNotice>(&event.data)
                            .map_err(|error| protocol(error.to_string()))
                            .and_then(|notice| {
                                if event.id.is_empty() {
                                    return Err(protocol("a missed event without an id".into()));
                                }
                                Ok(TailEvent::Missed {
                                    id: event.id,
                                    notice,
                                })
                            }),
                    ),
                    Ok(_) => None,
                    Err(eventsource_stream::EventStreamError::Transport(source)) => {
                        Some(Err(unreachable(&server, &source)))
                    }
                    Err(error) => Some(Err(protocol(error.to_string()))),
                }
            }
        }))
    }

    /// `GET /v1/export`: every record `params`' filters match (no limit,
    /// cursor or after), as the server streams it.
    pub async fn export(
        &self,
        params: &LogsParams,
        format: ExportFormat,
    ) -> Result<Export, ClientError> {
        self.export_at(params, format, None).await
    }

    /// [`Client::export`], a text export's times shown to `precision`
    /// (`time_precision`; every digit they have without it).
    pub async fn export_at(
        &self,
        params: &LogsParams,
        format: ExportFormat,
        precision: Option<TimePrecision>,
    ) -> Result<Export, ClientError> {
        let mut request = self
            .request(reqwest::Method::GET, "/v1/export")
            .query(params)
            .query(&[("format", format.as_str())]);
        if let Some(precision) = precision {
            request = request.query(&[("time_precision", precision.as_str())]);
        }
        let response = self.send(request).await?;
        let as_of = response
            .headers()
            .get("x-tailwater-as-of")
            .and_then(|value| Some(value.to_str().ok()?.to_owned()))
            .ok_or_else(|| ClientError::Protocol("an export without x-tailwater-as-of".into()))?;
        let server = self.base.clone();
        let chunks = response
            .bytes_stream()
            .map(move |chunk| chunk.map_err(|source| unreachable(&server, &source)));
        Ok(Export {
            as_of,
            chunks: Box::pin(chunks),
        })
    }

    /// `POST /v1/tenants` (admin).
    pub async fn create_tenant(&self, new: &NewTenant) -> Result<TenantInfo, ClientError> {
        self.json(self.request(reqwest::Method::POST, "/v1/tenants").json(new))
            .await
    }

    /// `GET /v1/tenants`: every tenant for an admin, its own for an owner.
    pub async fn tenants(&self) -> Result<Vec<TenantInfo>, ClientError> {
        self.json(self.request(reqwest::Method::GET, "/v1/tenants"))
            .await
    }

    /// `PATCH /v1/tenants/{name}`: the defaults new apps start with.
    pub async fn update_tenant(
        &self,
        name: &str,
        patch: &TenantPatch,
    ) -> Result<TenantInfo, ClientError> {
        let path = format!("/v1/tenants/{}", percent_encode(name));
        self.json(self.request(reqwest::Method::PATCH, &path).json(patch))
            .await
    }

    /// `POST /v1/tokens`: the answer holds the secret, shown this once.
    pub async fn create_token(&self, new: &NewToken) -> Result<CreatedToken, ClientError> {
        self.json(self.request(reqwest::Method::POST, "/v1/tokens").json(new))
            .await
    }

    /// `GET /v1/tokens` (of `tenant`, or every one this token may see).
    pub async fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenInfo>, ClientError> {
        self.json(tenant_query(
            self.request(reqwest::Method::GET, "/v1/tokens"),
            tenant,
        ))
        .await
    }

    /// `DELETE /v1/tokens/{id}`: revokes it, from now on.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        let path = format!("/v1/tokens/{}", percent_encode(id));
        self.json(self.request(reqwest::Method::DELETE, &path))
            .await
    }

    /// `POST /v1/apps` in `tenant` (the token's own when `None`).
    pub async fn create_app(
        &self,
        tenant: Option<&str>,
        new: &NewApp,
    ) -> Result<AppInfo, ClientError> {
        self.json(tenant_query(self.request(reqwest::Method::POST, "/v1/apps"), tenant).json(new))
            .await
    }

    /// `GET /v1/apps` of `tenant` (the token's own when `None`).
    pub async fn apps(&self, tenant: Option<&str>) -> Result<Vec<AppInfo>, ClientError> {
        self.json(tenant_query(
            self.request(reqwest::Method::GET, "/v1/apps"),
            tenant,
        ))
        .await
    }

    /// `PATCH /v1/apps/{name}` in `tenant` (the token's own when `None`).
    pub async fn update_app(
        &self,
        tenant: Option<&str>,
        name: &str,
        patch: &AppPatch,
    ) -> Result<AppInfo, ClientError> {
        let path = format!("/v1/apps/{}", percent_encode(name));
        self.json(tenant_query(self.request(reqwest::Method::PATCH, &path), tenant).json(patch))
            .await
    }

    /// `GET /v1/runners`: the runners of `tenant` (the token's own when
    /// `None`), of one app and in one state if given, newest start first.
    pub async fn runners(
        &self,
        tenant: Option<&str>,
        app: Option<&str>,
        state: Option<RunnerState>,
    ) -> Result<RunnerList, ClientError> {
        let mut query: Vec<(&str, &str)> = Vec::new();
        query.extend(app.map(|app| ("app", app)));
        query.extend(state.map(|state| ("state", state.as_str())));
        self.json(tenant_query(
            self.request(reqwest::Method::GET, "/v1/runners")
                .query(&query),
            tenant,
        ))
        .await
    }

    /// `GET /v1/runners/{runner}`, in one app when the id is in several.
    pub async fn runner(
        &self,
        tenant: Option<&str>,
        runner: &str,
        app: Option<&str>,
    ) -> Result<RunnerDetail, ClientError> {
        let path = format!("/v1/runners/{}", percent_encode(runner));
        let query: Vec<(&str, &str)> = app.map(|app| ("app", app)).into_iter().collect();
        self.json(tenant_query(
            self.request(reqwest::Method::GET, &path).query(&query),
            tenant,
        ))
        .await
    }

    /// `GET /v1/requests`: a page of `tenant`'s requests (the token's own
    /// tenant when `None`), newest start first; `params.cursor` continues
    /// from the previous page's `next_cursor`.
    pub async fn requests(
        &self,
        tenant: Option<&str>,
        params: &RequestsParams,
    ) -> Result<RequestList, ClientError> {
        self.json(tenant_query(
            self.request(reqwest::Method::GET, "/v1/requests")
                .query(&params.to_pairs()),
            tenant,
        ))
        .await
    }

    /// `GET /v1/requests/{id}`: its state, status, timing and runner.
    pub async fn request_info(
        &self,
        tenant: Option<&str>,
        id: &str,
    ) -> Result<RequestInfo, ClientError> {
        let path = format!("/v1/requests/{}", percent_encode(id));
        self.json(tenant_query(
            self.request(reqwest::Method::GET, &path),
            tenant,
        ))
        .await
    }
}

/// One event of a live tail.
#[derive(Clone, Debug, PartialEq)]
pub enum TailEvent {
    Record(LogRecord),
    /// The client fell too far behind: `notice.count` records up to id `id`
    /// were skipped; `GET /v1/logs` with the tail's filters and
    /// `cursor=notice.cursor` returns them. The tail goes on after `id`.
    Missed {
        id: String,
        notice: MissedNotice,
    },
}

/// An export as it arrives.
pub struct Export {
    /// The id of the newest record it covers: a live tail after it
    /// continues it.
    pub as_of: String,
    /// The body, in the chunks it arrives in; an error means it was cut off.
    pub chunks: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, ClientError>> + Send>>,
}

/// [`Client::tail`]'s state: the server's events, and the skipped records
/// being fetched by cursor before the next event is read.
struct GapFiller<S> {
    client: Client,
    params: LogsParams,
    events: std::pin::Pin<Box<S>>,
    fetched: std::collections::VecDeque<LogRecord>,
    cursor: Option<String>,
}

impl<S: Stream<Item = Result<TailEvent, ClientError>>> GapFiller<S> {
    async fn next(mut self) -> Option<(Result<LogRecord, ClientError>, Self)> {
        loop {
            if let Some(record) = self.fetched.pop_front() {
                return Some((Ok(record), self));
            }
            if let Some(cursor) = self.cursor.take() {
                let params = LogsParams {
                    cursor: Some(cursor),
                    limit: Some(MAX_PAGE_LIMIT.to_string()),
                    direction: None,
                    after: None,
                    ..self.params.clone()
                };
                match self.client.logs(&params).await {
                    Ok(page) => {
                        self.fetched = page.records.into();
                        self.cursor = page.next_cursor;
                        continue;
                    }
                    Err(error) => return Some((Err(error), self)),
                }
            }
            match self.events.next().await? {
                Ok(TailEvent::Record(record)) => return Some((Ok(record), self)),
                Ok(TailEvent::Missed { notice, .. }) => self.cursor = Some(notice.cursor),
                Err(error) => return Some((Err(error), self)),
            }
        }
    }
}

/// [`ClientError::Unreachable`], with what the system said in a few words
/// ("connection refused", "timed out") rather than the error's whole chain.
fn unreachable(server: &str, error: &reqwest::Error) -> ClientError {
    let mut io = None;
    let mut innermost: &dyn std::error::Error = error;
    while let Some(next) = innermost.source() {
        innermost = next;
        io = io.or(next.downcast_ref::<std::io::Error>());
    }
    let reason = match io.map(std::io::Error::kind) {
        Some(std::io::ErrorKind::ConnectionRefused) => "connection refused".to_owned(),
        Some(std::io::ErrorKind::ConnectionReset) => "the connection was reset".to_owned(),
        Some(std::io::ErrorKind::TimedOut) => "timed out".to_owned(),
        _ if error.is_timeout() => "timed out".to_owned(),
        _ => innermost.to_string().to_lowercase(),
    };
    ClientError::Unreachable {
        server: server.to_owned(),
        reason,
    }
}

fn tenant_query(request: reqwest::RequestBuilder, tenant: Option<&str>) -> reqwest::RequestBuilder {
    match tenant {
        Some(tenant) => request.query(&[("tenant", tenant)]),
        None => request,
    }
}
