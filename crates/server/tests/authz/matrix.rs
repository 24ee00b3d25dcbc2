//! The authorization matrix: each endpoint's answer for each kind of token,
//! own or other tenant, public or private app.

/// The expected answer of one cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Want {
    /// 200 (201 for creations) with at least one record (for log reads).
    Ok,
    /// 200 with no record at all (a caller, records of private apps).
    Empty,
    /// 401: not authenticated.
    Unauth,
    /// 403 `forbidden`: the scope does not allow it.
    Forbidden,
    /// 403 `private_logs`: a caller named a private app.
    Private,
    /// 404: another tenant (or one that does not exist).
    NotFound,
}
use Want::*;

/// Columns, in order.
pub(crate) const KINDS: [&str; 8] = [
    "admin", "owner", "ingest", "caller", "none", "bad", "expired", "revoked",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Ingest,
    /// `POST /v1/ingest` with the same batch in binary
    /// (`application/x-tailwater-batch`, as the agent sends it).
    IngestBinary,
    /// `POST /v1/logs`: OTLP/HTTP logs (JSON) of a resource naming the app;
    /// its errors are `google.rpc.Status` codes, read as the API's.
    Otlp,
    /// `POST /loki/api/v1/push`: a JSON push of a stream labelled with the app.
    Loki,
    /// `POST /_bulk`: an Elasticsearch bulk of one document naming the
    /// app; a refusal of the document is its item's error (in a 200),
    /// read as the API's.
    EsBulk,
    /// `POST /v1/ingest/json`: an array of one document naming the app.
    JsonDocs,
    /// `GET /v1/logs?request=R&app=A`.
    Logs,
    /// `GET /v1/logs?request=R` (no app named).
    LogsAnyApp,
    /// `GET /v1/logs?app=A` (no request).
    LogsNoRequest,
    Tail,
    TailAnyApp,
    TailNoRequest,
    CreateTenant,
    ListTenants,
    UpdateTenant,
    CreateToken,
    ListTokens,
    RevokeToken,
    CreateApp,
    ListApps,
    UpdateApp,
    /// `GET /v1/runners?app=A`.
    Runners,
    /// `GET /v1/runners/seed-A`.
    RunnerShow,
    /// `GET /v1/requests/r-A`.
    Request,
    /// `GET /v1/requests/r-A/logs`.
    RequestLogs,
    /// `GET /v1/requests/r-A/logs/tail?after=0`.
    RequestTail,
    /// `GET /v1/requests/mine-A`: the gateway recorded the caller token
    /// of the matrix as its caller.
    RequestMine,
    /// `GET /v1/requests/theirs-A`: recorded as another caller's.
    RequestTheirs,
    /// `GET /v1/requests/theirs-A/logs`.
    RequestTheirsLogs,
    /// `GET /v1/requests?app=A`: the list (`mine-A` and `theirs-A` have
    /// starts; the seed's `r-A` has none, so is not listed).
    RequestList,
    /// `GET /v1/requests` (no app named).
    RequestListAnyApp,
    /// `GET /v1/requests?runner=gw-theirs-A`: only another caller's.
    RequestListTheirs,
    /// `GET /v1/logs?request=theirs-A`.
    LogsTheirs,
    /// `GET /v1/logs/tail?request=theirs-A&after=0`.
    TailTheirs,
    /// `GET /v1/logs/tail?request=R&app=A&after=0` as a WebSocket.
    WsTail,
    /// `GET /v1/logs/tail?app=A&after=0` as a WebSocket (no request).
    WsTailNoRequest,
    /// `GET /v1/logs/tail?request=theirs-A&after=0` as a WebSocket.
    WsTailTheirs,
    /// `GET /v1/export?request=R&app=A`.
    Export,
    /// `GET /v1/export?app=A` (no request).
    ExportNoRequest,
    /// `GET /v1/export?request=theirs-A`.
    ExportTheirs,
    /// `GET /v1/histogram?request=R&app=A`.
    Histogram,
    /// `GET /v1/histogram?app=A` (no request).
    HistogramNoRequest,
    /// `GET /v1/histogram?request=theirs-A`.
    HistogramTheirs,
    /// `GET /v1/status`.
    Status,
    /// `GET /v1/logs/count?request=R&app=A`.
    Count,
    /// `GET /v1/logs/count?app=A` (no request).
    CountNoRequest,
    /// `GET /v1/logs/count?request=theirs-A`.
    CountTheirs,
    /// `GET /metrics` (the server runs without `--public-metrics`).
    Metrics,
    /// `GET /v1/cluster` (the matrix's server is embedded: `{"mode": "embedded"}`).
    Cluster,
    /// `GET /internal/v1/cluster/records?partition=0`: a peer's repair,
    /// node credential only (the embedded server has no peers: 404 to
    /// everyone; tests/cluster/repair.rs has the cluster's refusals).
    ClusterRecords,
    /// `GET /internal/v1/cluster/stream-records?from_sequence=1&to_sequence=1`:
    /// a peer filling a stretch of the stream, node credential only (404
    /// to everyone on the embedded server, as `ClusterRecords`).
    ClusterStreamRecords,
    /// `POST /v1/apps/A/drains` (to a URL that never answers).
    CreateDrain,
    /// `GET /v1/apps/A/drains`.
    ListDrains,
    /// `POST /v1/apps/A/drains/D/pause` of a drain the admin made.
    PauseDrain,
    /// `POST /v1/apps/A/drains/D/resume`.
    ResumeDrain,
    /// `DELETE /v1/apps/A/drains/D`.
    DeleteDrain,
    /// `GET /loki/api/v1/query_range?query={app="A"} | request_id="r-A"`.
    LokiQuery,
    /// `GET /loki/api/v1/query_range?query={app="A"}` (no request).
    LokiQueryNoRequest,
    /// `GET /loki/api/v1/query_range?query={app=~".+"} | request_id="theirs-A"`.
    LokiQueryTheirs,
    /// `GET /loki/api/v1/query_range?query=sum(count_over_time({app="A"} | request_id="r-A" [1h]))`.
    LokiMetric,
    /// `GET /loki/api/v1/tail?query={app="A"} | request_id="r-A"` as a WebSocket.
    LokiTail,
    /// `GET /loki/api/v1/tail?query={app=~".+"} | request_id="theirs-A"` as a WebSocket.
    LokiTailTheirs,
    /// `GET /loki/api/v1/label/app/values?query={app="A"}`.
    LokiLabelValues,
    /// `GET /loki/api/v1/series?match[]={app="A"}`.
    LokiSeries,
}
use Endpoint::*;

/// `(endpoint, tenant: own or other, app: pub or priv or "-")` and the answer
/// for each column of [`KINDS`]. The ingest token is for app `pub` of the
/// own tenant; the caller token is for the own tenant (any app).
#[rustfmt::skip]
pub(crate) const MATRIX: &[(Endpoint, &str, &str, [Want; 8])] = &[
    //                                   admin      owner      ingest     caller     none    bad     expired revoked
    (Ingest,        "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Ingest,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (IngestBinary,  "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (IngestBinary,  "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (IngestBinary,  "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (IngestBinary,  "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Otlp,          "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Otlp,          "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Otlp,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Otlp,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Loki,          "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Loki,          "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Loki,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Loki,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (EsBulk,        "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (EsBulk,        "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (EsBulk,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (EsBulk,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (JsonDocs,      "own",   "pub",  [Ok,       Ok,        Ok,        Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (JsonDocs,      "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (JsonDocs,      "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (JsonDocs,      "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Logs,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsAnyApp,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsNoRequest, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Tail,          "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailAnyApp,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailNoRequest, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateTenant,  "-",     "-",    [Ok,       Forbidden, Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListTenants,   "-",     "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateTenant,  "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateTenant,  "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateToken,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListTokens,    "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListTokens,    "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Revoking is by token id: ingest and caller tokens manage no token, so
    // any id is 403 for them (whichever tenant, even an unknown id).
    (RevokeToken,   "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "other", "pub",  [Ok,       NotFound,  Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RevokeToken,   "other", "priv", [Ok,       NotFound,  Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateApp,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListApps,      "own",   "-",    [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListApps,      "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (UpdateApp,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Runners,       "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RunnerShow,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // A caller names no app here: a private app's request is as missing.
    (Request,       "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Request,       "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Request,       "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Request,       "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestLogs,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTail,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestMine,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Another caller's request: 404 where a missing request is 404, no
    // record where a missing request has none.
    (RequestTheirs, "own",   "pub",  [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "own",   "priv", [Ok,       Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirs, "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "own", "pub", [Ok,      Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "own", "priv",[Ok,      Ok,        Forbidden, NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestTheirsLogs, "other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // A caller lists only the requests recorded with it: never another
    // caller's, never a private app's (403 when it names one).
    (RequestList,   "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestList,   "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (RequestList,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestList,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestListAnyApp, "own", "-",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (RequestListAnyApp, "other", "-",[Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestListTheirs, "own", "pub",[Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (RequestListTheirs, "own", "priv",[Ok,      Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (RequestListTheirs, "other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (RequestListTheirs, "other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LogsTheirs,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (TailTheirs,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // The WebSocket form of the tail answers as SSE does, refusing before
    // the upgrade.
    (WsTail,        "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTail,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"own",  "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"own",  "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailNoRequest,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (WsTailTheirs,  "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Export and the histogram read records as /v1/logs does.
    (Export,        "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Export,        "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Export,        "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Export,        "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"own",  "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"own",  "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportNoRequest,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ExportTheirs,  "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Histogram,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"own","pub", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"own","priv",[Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramNoRequest,"other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"own",  "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"own",  "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (HistogramTheirs,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Every token may ask who it is, of its own tenant only.
    (Status,        "own",   "-",    [Ok,       Ok,        Ok,        Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Status,        "other", "-",    [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // Metrics name every tenant: admin only (see limits.rs for --public-metrics).
    (Metrics,       "-",     "-",    [Ok,       Forbidden, Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    // The cluster's status covers every tenant: admin only.
    (Cluster,       "-",     "-",    [Ok,       Forbidden, Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    // A node's repair endpoint: no token opens it, and without --nats it is not there.
    (ClusterRecords,"-",     "-",    [NotFound, NotFound,  NotFound,  NotFound,  NotFound, NotFound, NotFound, NotFound]),
    (ClusterStreamRecords,"-",     "-",    [NotFound, NotFound,  NotFound,  NotFound,  NotFound, NotFound, NotFound, NotFound]),
    // A count reads records as /v1/logs does.
    (Count,         "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (Count,         "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (Count,         "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (Count,         "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CountNoRequest,"own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CountNoRequest,"own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CountNoRequest,"other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CountNoRequest,"other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CountTheirs,   "own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (CountTheirs,   "own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (CountTheirs,   "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CountTheirs,   "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // An app's drains are its tenant's owner's (a private app's too):
    // ingest and caller tokens are refused, other tenants are 404.
    (CreateDrain,  "own",    "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateDrain,  "own",    "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (CreateDrain,  "other",  "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (CreateDrain,  "other",  "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListDrains,   "own",    "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListDrains,   "own",    "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ListDrains,   "other",  "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ListDrains,   "other",  "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (PauseDrain,   "own",    "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (PauseDrain,   "own",    "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (PauseDrain,   "other",  "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (PauseDrain,   "other",  "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ResumeDrain,  "own",    "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ResumeDrain,  "own",    "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (ResumeDrain,  "other",  "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (ResumeDrain,  "other",  "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (DeleteDrain,  "own",    "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (DeleteDrain,  "own",    "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (DeleteDrain,  "other",  "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (DeleteDrain,  "other",  "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    // The Loki query API: a caller names its request in LogQL
    // (`| request_id="ID"`), and reads as through /v1/logs; label and
    // series reads are for owners and admins.
    (LokiQuery,     "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (LokiQuery,     "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (LokiQuery,     "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiQuery,     "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryNoRequest,"own","pub", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryNoRequest,"own","priv",[Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryNoRequest,"other","pub",[Ok,      NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryNoRequest,"other","priv",[Ok,     NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryTheirs,"own",  "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryTheirs,"own",  "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryTheirs,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiQueryTheirs,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiMetric,    "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (LokiMetric,    "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (LokiMetric,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiMetric,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiTail,      "own",   "pub",  [Ok,       Ok,        Forbidden, Ok,        Unauth, Unauth, Unauth, Unauth]),
    (LokiTail,      "own",   "priv", [Ok,       Ok,        Forbidden, Private,   Unauth, Unauth, Unauth, Unauth]),
    (LokiTail,      "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiTail,      "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiTailTheirs,"own",   "pub",  [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LokiTailTheirs,"own",   "priv", [Ok,       Ok,        Forbidden, Empty,     Unauth, Unauth, Unauth, Unauth]),
    (LokiTailTheirs,"other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiTailTheirs,"other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiLabelValues,"own",  "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiLabelValues,"own",  "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiLabelValues,"other","pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiLabelValues,"other","priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiSeries,    "own",   "pub",  [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiSeries,    "own",   "priv", [Ok,       Ok,        Forbidden, Forbidden, Unauth, Unauth, Unauth, Unauth]),
    (LokiSeries,    "other", "pub",  [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
    (LokiSeries,    "other", "priv", [Ok,       NotFound,  NotFound,  NotFound,  Unauth, Unauth, Unauth, Unauth]),
];
