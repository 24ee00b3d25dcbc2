//! `GET /loki/api/v1/tail` over a WebSocket, as Grafana's live tail opens
//! it: first the newest `limit` lines since `start` (an hour ago by
//! default), oldest first, then every new line the query matches, one
//! frame `{"streams":[{"stream":…,"values":[["ns","line"]]}]}` each.
//! Served by the server's one live tail ([`crate::tail`]): the history
//! reads up to the newest record stored as it opens and the follower
//! starts right after it, so nothing is sent twice or missed. Lines a slow
//! client missed are told in `dropped_entries` with their count. The tail
//! ends when the token is revoked or expires, or the server stops.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde_json::json;
use tailwater_model::logql::{Expr, LogQuery};
use tailwater_model::{Direction, LogRecord};

use super::loki_read::{now_ns, ns_string, respond, view_for, LokiError, Params, Scan};
use super::read::Skipped;
use super::ApiError;
use crate::access::ownership::Verdict;
use crate::access::scopes::Principal;
use crate::tail::{self, Subscription, Tail, TailEvent};
use crate::AppState;

/// How often an idle tail pings its client.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// What the history reads back when `start` is not given: an hour.
const DEFAULT_HISTORY_NS: i64 = 3_600_000_000_000;

pub async fn tail(
    State(state): State<AppState>,
    principal: Result<Principal, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let result = open(&state, principal, upgrade, Params(pairs)).await;
    respond(&state, result)
}

async fn open(
    state: &AppState,
    principal: Result<Principal, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    mut params: Params,
) -> Result<Response, LokiError> {
    let principal = principal?;
    let tenant = params.tenant(state, &principal)?;
    let Expr::Log(query) = params.query(state)? else {
        return Err(LokiError::bad_query(
            "live tail takes a log query, not a metric query",
        ));
    };
    let limit = params.limit()?;
    let now = now_ns();
    let start = params.time("start", now.saturating_sub(DEFAULT_HISTORY_NS))?;
    params.done(&["delay_for"])?;
    let upgrade = upgrade.map_err(|rejection| {
        LokiError::bad_query(format!(
            "live tail is a websocket: {}",
            rejection.body_text().to_lowercase()
        ))
    })?;
    let view = view_for(state, &principal, &tenant, &query)?;
    let query = Arc::new(query);
    // The history reads up to here; the follower starts after it.
    let after = state.store.last_id();
    let history = {
        let (state, tenant, query, view) =
            (state.clone(), tenant.clone(), query.clone(), view.clone());
        tokio::task::spawn_blocking(move || {
            let scan = Scan {
                state: &state,
                tenant: &tenant,
                query: &query,
                view: view.as_ref(),
                since_ns: start,
                until_ns: i64::MAX,
                direction: Direction::Backward,
                first_page: limit,
            };
            let mut lines = Vec::new();
            scan.run(&mut 0, &mut Skipped::default(), |record, _| {
                if record.position <= after {
                    lines.push(record.clone());
                }
                lines.len() < limit
            })?;
            lines.reverse();
            Ok::<_, LokiError>(lines)
        })
        .await
        .map_err(LokiError::internal)??
    };
    let registry = state.registry.clone();
    let matcher = query.clone();
    let sees = move |record: &LogRecord| {
        let verdict = match &view {
            None => Verdict::Show,
            Some(view) => view.judge(record, &registry),
        };
        match verdict {
            Verdict::Show if matcher.run(record).is_none() => Verdict::Hide,
            verdict => verdict,
        }
    };
    let (registry, token_id) = (state.registry.clone(), principal.token_id.clone());
    let mut filter = query.store_filter(state.regex_size_limit);
    filter.request_id = query.request_id().map(str::to_owned);
    let subscription = Subscription {
        seal: state.registry.seal(&tenant),
        tenant,
        filter,
        after,
        sees: Arc::new(sees),
        allowed: Arc::new(move || registry.is_live(&token_id)),
    };
    let live = tail::follow(state, subscription);
    Ok(upgrade.on_upgrade(move |socket| serve(socket, query, history, live)))
}

/// One frame of lines, as Loki's tail sends them.
fn frame(query: &LogQuery, records: &[LogRecord]) -> String {
    let streams: Vec<_> = records
        .iter()
        .filter_map(|record| {
            let output = query.run(record)?;
            Some(json!({"stream": output.labels, "values": [[ns_string(record), output.line]]}))
        })
        .collect();
    json!({"streams": streams}).to_string()
}

async fn serve(
    mut socket: WebSocket,
    query: Arc<LogQuery>,
    history: Vec<LogRecord>,
    mut live: Tail,
) {
    if !history.is_empty()
        && socket
            .send(Message::Text(frame(&query, &history).into()))
            .await
            .is_err()
    {
        return;
    }
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        tokio::select! {
            event = live.next() => {
                let text = match event {
                    None => break,
                    Some(TailEvent::Record(record)) => frame(&query, std::slice::from_ref(&record)),
                    Some(TailEvent::Missed { notice, .. }) => json!({
                        "streams": [],
                        "dropped_entries": [{
                            "labels": {"tailwater_missed_lines": notice.count.to_string()},
                            "timestamp": now_ns().to_string(),
                        }],
                    })
                    .to_string(),
                };
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = keep_alive.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    return;
                }
            }
        }
    }
    let (code, reason) = if live.allowed() {
        (1001, "the server is stopping: reconnect")
    } else {
        (1008, "the token was revoked or expired: get a new one")
    };
    let close = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}
