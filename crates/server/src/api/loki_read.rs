//! What the routes of the Loki query API (`/loki/api/v1/...`) share: the
//! error shape Grafana reads (`{"status":"error","message":…}`, every
//! refusal counted), the parameters (times as Loki reads them, the tenant),
//! who reads (a caller names its request with `| request_id="ID"`), and
//! the one scan of the store a LogQL log query becomes: the store's own
//! filter narrows, the pipeline decides, every record the store returned
//! counts toward `--logql-max-records`, past which the query is refused.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tailwater_model::logql::pipeline::Output;
use tailwater_model::logql::{self, Expr, LogQuery};
use tailwater_model::time::{timestamp_from_ns, timestamp_ns};
use tailwater_model::wire::MAX_PAGE_LIMIT;
use tailwater_model::{Direction, LogRecord, Query};

use super::read::Skipped;
use super::{take_param, take_tenant, ApiError};
use crate::access::scopes::{CallerView, Principal};
use crate::AppState;

/// An error as Loki answers it; Grafana shows `message`.
#[derive(Debug)]
pub(crate) struct LokiError {
    status: StatusCode,
    /// Why, for the refusal count; `None` for what is not a refusal of the
    /// query (the token, the tenant, an internal error).
    reason: Option<&'static str>,
    /// `errorType`: `bad_data` for a query, else the API's error code
    /// (`unauthorized`, `forbidden`, `private_logs`, `not_found`, …).
    code: &'static str,
    message: String,
}

impl LokiError {
    /// A query or parameter that cannot be read: 400.
    pub fn bad_query(message: impl Into<String>) -> LokiError {
        LokiError {
            status: StatusCode::BAD_REQUEST,
            reason: Some("bad_query"),
            code: "bad_data",
            message: message.into(),
        }
    }

    /// A query past a limit: 400 naming it, as Loki answers its own limits.
    pub fn limit(reason: &'static str, message: impl Into<String>) -> LokiError {
        LokiError {
            status: StatusCode::BAD_REQUEST,
            reason: Some(reason),
            code: "bad_data",
            message: message.into(),
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> LokiError {
        ApiError::internal(error).into()
    }
}

impl From<ApiError> for LokiError {
    fn from(error: ApiError) -> LokiError {
        LokiError {
            status: error.status,
            reason: None,
            code: error.code,
            message: error.message,
        }
    }
}

impl From<crate::access::scopes::Denied> for LokiError {
    fn from(denied: crate::access::scopes::Denied) -> LokiError {
        ApiError::from(denied).into()
    }
}

/// The answer of a Loki route: its JSON, or its error counted (when a
/// refusal of the query) and shaped as Loki's.
pub(crate) fn respond(state: &AppState, result: Result<Response, LokiError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => {
            if let Some(reason) = error.reason {
                state.metrics.loki_query_refused(reason);
            }
            let body = serde_json::json!({
                "status": "error",
                "errorType": error.code,
                "error": error.message,
                "message": error.message,
            });
            (error.status, Json(body)).into_response()
        }
    }
}

/// `{"status":"success","data":…}`, with Loki's `warnings` when the read
/// skipped damaged blocks (Grafana shows them above the answer).
pub(crate) fn success(data: serde_json::Value, skipped: &Skipped) -> Response {
    let mut body = serde_json::json!({ "status": "success", "data": data });
    if let Some(incomplete) = skipped.incomplete() {
        body["warnings"] = serde_json::json!([incomplete.message]);
    }
    Json(body).into_response()
}

/// A query string's parameters, taken one by one.
pub(crate) struct Params(pub Vec<(String, String)>);

impl Params {
    /// Parameter `name`: `None` when absent or empty; given twice is 400.
    pub fn take(&mut self, name: &str) -> Result<Option<String>, LokiError> {
        Ok(take_param(&mut self.0, name)?)
    }

    /// The tenant the read acts on, as for every read (`?tenant=`).
    pub fn tenant(&mut self, state: &AppState, principal: &Principal) -> Result<String, LokiError> {
        let asked = take_tenant(&mut self.0)?;
        Ok(principal.tenant_for(asked.as_deref(), &state.registry)?)
    }

    /// A time as Loki reads it: nanoseconds (seconds when of 10 digits or
    /// fewer), seconds with a fraction, or RFC 3339; `default` when absent.
    pub fn time(&mut self, name: &str, default: i64) -> Result<i64, LokiError> {
        let Some(text) = self.take(name)? else {
            return Ok(default);
        };
        parse_time(&text).ok_or_else(|| {
            LokiError::bad_query(format!(
                "invalid {name} '{text}': give nanoseconds since the epoch, seconds (1700000000.5) or an RFC 3339 time"
            ))
        })
    }

    /// The query, parsed under the server's regex limit.
    pub fn query(&mut self, state: &AppState) -> Result<Expr, LokiError> {
        let text = self
            .take("query")?
            .ok_or_else(|| LokiError::bad_query("missing query: give query={app=\"name\"}"))?;
        logql::parse(&text, state.regex_size_limit).map_err(LokiError::bad_query)
    }

    /// `limit` of lines (Loki's default 100), at most [`MAX_PAGE_LIMIT`].
    pub fn limit(&mut self) -> Result<usize, LokiError> {
        match self.take("limit")? {
            None => Ok(100),
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => Ok(limit),
                Ok(limit) if limit > MAX_PAGE_LIMIT => Err(LokiError::limit(
                    "max_entries",
                    format!("max entries limit per query exceeded, limit > max_entries_limit ({limit} > {MAX_PAGE_LIMIT}): ask for fewer lines"),
                )),
                _ => Err(LokiError::bad_query(format!(
                    "invalid limit '{text}': use a whole number from 1 to {MAX_PAGE_LIMIT}"
                ))),
            },
        }
    }

    /// `direction`: `backward` (newest first, Loki's default) or `forward`.
    pub fn direction(&mut self) -> Result<Direction, LokiError> {
        match self.take("direction")?.as_deref() {
            None | Some("backward" | "BACKWARD") => Ok(Direction::Backward),
            Some("forward" | "FORWARD") => Ok(Direction::Forward),
            Some(other) => Err(LokiError::bad_query(format!(
                "invalid direction '{other}': use forward or backward"
            ))),
        }
    }

    /// Refuses what is left, but the parameters Loki takes that change
    /// nothing here (`names`).
    pub fn done(mut self, ignored: &[&str]) -> Result<(), LokiError> {
        self.0.retain(|(name, _)| !ignored.contains(&name.as_str()));
        match self.0.first() {
            Some((name, _)) => Err(LokiError::bad_query(format!(
                "unknown parameter '{name}': see the Loki API in the README"
            ))),
            None => Ok(()),
        }
    }
}

/// A Loki time parameter in nanoseconds since the epoch.
pub(crate) fn parse_time(text: &str) -> Option<i64> {
    if text.contains('.') {
        if let Ok(seconds) = text.parse::<f64>() {
            let ns = seconds * 1e9;
            return (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64);
        }
    }
    match text.parse::<i64>() {
        Ok(number) if text.trim_start_matches('-').len() <= 10 => number.checked_mul(1_000_000_000),
        Ok(number) => Some(number),
        Err(_) => text.parse::<jiff::Timestamp>().ok().map(timestamp_ns),
    }
}

/// Nanoseconds now.
pub(crate) fn now_ns() -> i64 {
    timestamp_ns(jiff::Timestamp::now())
}

/// What of `tenant`'s records this principal may read with `query`: all
/// (owners, admins), or a caller's view of the one request the query
/// names with `| request_id="ID"`.
pub(crate) fn view_for(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    query: &LogQuery,
) -> Result<Option<CallerView>, LokiError> {
    let view = principal.log_view(
        tenant,
        query.request_id(),
        query.selector_value("app"),
        &state.registry,
        &state.settling,
    );
    match view {
        Err(crate::access::scopes::Denied::Forbidden(message))
            if principal.scope == tailwater_model::tenancy::Scope::Caller
                && query.request_id().is_none() =>
        {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{message}; in LogQL: {{app=\"name\"}} | request_id=\"ID\""),
            )
            .into())
        }
        other => Ok(other?),
    }
}

/// One scan of the store for a log query, in a blocking task's thread.
pub(crate) struct Scan<'a> {
    pub state: &'a AppState,
    pub tenant: &'a str,
    pub query: &'a LogQuery,
    pub view: Option<&'a CallerView>,
    /// Inclusive, in nanoseconds.
    pub since_ns: i64,
    /// Exclusive, in nanoseconds.
    pub until_ns: i64,
    pub direction: Direction,
    /// Records the first page asks the store for (the lines wanted, when
    /// few); each later page asks twice as many, up to a full page.
    pub first_page: usize,
}

impl Scan<'_> {
    /// Calls `each` with every record the query matches and the principal
    /// sees, in `direction`, until it answers `false`. Counts every record
    /// the store returns into `scanned`; past `--logql-max-records` the
    /// scan stops with an error naming the limit.
    pub fn run(
        &self,
        scanned: &mut usize,
        skipped: &mut Skipped,
        mut each: impl FnMut(&LogRecord, Output) -> bool,
    ) -> Result<(), LokiError> {
        let max = self.state.logql_max_records;
        let mut filter = self.query.store_filter(self.state.regex_size_limit);
        filter.since = Some(timestamp_from_ns(self.since_ns));
        filter.until = Some(timestamp_from_ns(self.until_ns));
        filter.request_id = self.query.request_id().map(str::to_owned);
        let mut page = Query {
            filter,
            direction: self.direction,
            limit: self.first_page,
            cursor: None,
        };
        let mut size = self.first_page.clamp(1, MAX_PAGE_LIMIT);
        loop {
            page.limit = size.min(max.saturating_sub(*scanned) + 1);
            size = size.saturating_mul(2).min(MAX_PAGE_LIMIT);
            let found = self
                .state
                .store
                .query(self.tenant, &page)
                .map_err(LokiError::internal)?;
            skipped.add(&found.skipped, self.view, &self.state.registry);
            for record in &found.records {
                *scanned += 1;
                if *scanned > max {
                    return Err(LokiError::limit(
                        "max_records",
                        format!(
                            "the query would read more than {max} records (the server's --logql-max-records): narrow the time range, the stream selector or the line filters"
                        ),
                    ));
                }
                if self
                    .view
                    .is_some_and(|view| !view.sees(record, &self.state.registry))
                {
                    continue;
                }
                if let Some(output) = self.query.run(record) {
                    if !each(record, output) {
                        return Ok(());
                    }
                }
            }
            match found.next {
                Some(next) => page.cursor = Some(next),
                None => return Ok(()),
            }
        }
    }
}

/// A record's time as Loki writes it: nanoseconds, as a string.
pub(crate) fn ns_string(record: &LogRecord) -> String {
    timestamp_ns(record.ts).to_string()
}
