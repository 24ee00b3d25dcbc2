//! `GET /v1/logs` (history, paged) and `GET /v1/logs/tail` (live: SSE, or a
//! WebSocket when the request asks to upgrade). [`serve_tail`] serves every
//! tail route, whatever its scope.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::Timestamp;
use tailwater_model::wire::{parse_after, LogsPage, LogsParams, TailMessage};
use tailwater_model::{Filter, IdRange, LogRecord};

use super::read::Skipped;
use super::{take_tenant, ApiError};
use crate::access::ownership::Verdict;
use crate::access::scopes::{CallerView, Principal};
use crate::tail::{self, Subscription, Tail, TailEvent};
use crate::AppState;

/// How often an idle tail shows the client (and proxies) it is alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The WebSocket subprotocol of live tail; the server selects it.
pub const WEBSOCKET_PROTOCOL: &str = "tailwater.v1";
/// The prefix of the subprotocol that carries a browser's token.
const WEBSOCKET_BEARER: &str = "tailwater.bearer.";

/// The query string as [`LogsParams`], the tenant it reads, and what of it
/// the token may see (a caller: checked per record, see
/// [`CallerView::sees`]). Read as plain pairs first, so an unknown or repeated
/// parameter gets the same clear JSON error as a bad value, rather than
/// axum's text rejection. Every read of records (history, tail, export,
/// histogram) starts here.
pub(crate) async fn params(
    state: &AppState,
    principal: &Principal,
    Query(mut pairs): Query<Vec<(String, String)>>,
) -> Result<(LogsParams, String, Option<CallerView>), ApiError> {
    let tenant = principal.tenant_for(take_tenant(&mut pairs)?.as_deref(), &state.registry)?;
    let params = LogsParams::from_pairs(pairs).map_err(ApiError::bad_request)?;
    let view = principal.log_view(
        &tenant,
        params.request.as_deref(),
        params.app.as_deref(),
        &state.registry,
        &state.settling,
    )?;
    Ok((params, tenant, view))
}

pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    pairs: Query<Vec<(String, String)>>,
) -> Result<Json<LogsPage>, ApiError> {
    let (mut params, tenant, view) = params(&state, &principal, pairs).await?;
    let seal = state.registry.seal(&tenant);
    let around = params
        .around_position(&seal)
        .map_err(ApiError::bad_request)?;
    params.around = None;
    // A live tail's missed notice hands out a range of positions as the
    // cursor.
    let missed = params
        .cursor
        .as_deref()
        .and_then(|cursor| IdRange::decode(cursor, &seal));
    if missed.is_some() {
        params.cursor = None;
    }
    let query = super::read::query(&state, &params, Timestamp::now(), &seal)?;
    let store = state.store.clone();
    let mut page = match (around, missed) {
        (Some(position), _) => {
            let (view, registry) = (view.clone(), state.registry.clone());
            tokio::task::spawn_blocking(move || {
                around_record(&store, &tenant, query, position, view.as_ref(), &registry)
            })
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?
            .ok_or_else(|| {
                ApiError::not_found(
                    "no record has this id here: use the id of a record one of this tenant's reads returned",
                )
            })?
        }
        (None, None) => {
            let page = tokio::task::spawn_blocking(move || store.query(&tenant, &query))
                .await
                .map_err(ApiError::internal)?
                .map_err(ApiError::internal)?;
            History {
                records: page.records,
                next_cursor: page.next.map(|cursor| cursor.encode(&seal)),
                as_of: page.as_of,
                incomplete: Skipped::of(&page.skipped, view.as_ref(), &state.registry),
            }
        }
        (None, Some(range)) => {
            if params.direction.as_deref() == Some("backward") {
                return Err(ApiError::bad_request(
                    "a missed-records cursor reads forward, in ingest order: leave direction out",
                ));
            }
            let (view, registry, seal) = (view.clone(), state.registry.clone(), seal.clone());
            tokio::task::spawn_blocking(move || {
                let as_of = store.last_id();
                let (mut records, skipped) =
                    store.read_after_reporting(&tenant, &query.filter, range.after, query.limit);
                // More may follow only a full page that stopped inside the range.
                let next = records
                    .last()
                    .filter(|last| records.len() == query.limit && last.position < range.through)
                    .map(|last| IdRange {
                        after: last.position,
                        through: range.through,
                    });
                records.retain(|record| record.position <= range.through);
                History {
                    records,
                    next_cursor: next.map(|range| range.encode(&seal)),
                    as_of,
                    incomplete: Skipped::of(&skipped, view.as_ref(), &registry),
                }
            })
            .await
            .map_err(ApiError::internal)?
        }
    };
    // A caller's page may hold fewer than `limit` records; its cursor still
    // continues exactly where the store stopped. Its `as_of` never passes a
    // record held back because its request's owner is not settled yet: a
    // live tail following from it sends that record once it settles to
    // this caller, as it would have had it been open from the start.
    if let Some(view) = view {
        let registry = state.registry.clone();
        let mut records = std::mem::take(&mut page.records);
        let (records, first_held) = tokio::task::spawn_blocking(move || {
            let mut first_held: Option<u64> = None;
            records.retain(|record| match view.judge(record, &registry) {
                Verdict::Show => true,
                Verdict::Hide => false,
                Verdict::Hold => {
                    let position = record.position;
                    first_held = Some(first_held.map_or(position, |held| held.min(position)));
                    false
                }
            });
            (records, first_held)
        })
        .await
        .map_err(ApiError::internal)?;
        page.records = records;
        if let Some(held) = first_held {
            page.as_of = page.as_of.min(held - 1);
        }
    }
    let mut records = page.records;
    for record in &mut records {
        seal.fill_id(record);
    }
    Ok(Json(LogsPage {
        records,
        next_cursor: page.next_cursor,
        as_of: seal.id(page.as_of),
        incomplete: page.incomplete,
    }))
}

/// `around`: the record at `position`, if it is the tenant's and the
/// principal sees it, between up to `query.limit` records matching the
/// query before it and as many after it, oldest first; `None` if not. The
/// record itself is on the page only when the query matches it too, so
/// `around=ID&level=error` shows the errors around any record.
fn around_record(
    store: &tailwater_store::Store,
    tenant: &str,
    query: tailwater_model::Query,
    position: u64,
    view: Option<&CallerView>,
    registry: &crate::access::registry::Registry,
) -> Result<Option<History>, tailwater_store::StoreError> {
    let Some(before_it) = position.checked_sub(1) else {
        return Ok(None);
    };
    let (found, mut skipped) = store.read_after_reporting(tenant, &Filter::default(), before_it, 1);
    let Some(record) = found.into_iter().find(|record| record.position == position) else {
        return Ok(None);
    };
    if view.is_some_and(|view| view.judge(&record, registry) != Verdict::Show) {
        return Ok(None);
    }
    let from = |direction| tailwater_model::Query {
        direction,
        cursor: Some(tailwater_model::Cursor::of(&record)),
        ..query.clone()
    };
    let before = store.query(tenant, &from(tailwater_model::Direction::Backward))?;
    let after = store.query(tenant, &from(tailwater_model::Direction::Forward))?;
    skipped.extend(before.skipped);
    skipped.extend(after.skipped);
    let mut records = before.records;
    records.reverse();
    let as_of = after.as_of.max(before.as_of);
    if query.filter.matches(&record) {
        records.push(record);
    }
    records.extend(after.records);
    Ok(Some(History {
        records,
        next_cursor: None,
        as_of,
        incomplete: Skipped::of(&skipped, view, registry),
    }))
}

/// A page of history before its positions are sealed.
struct History {
    records: Vec<LogRecord>,
    next_cursor: Option<String>,
    as_of: u64,
    incomplete: Option<tailwater_model::wire::Incomplete>,
}

/// `GET /v1/logs/tail`: a live tail of the records the query string's
/// filters match.
pub async fn tail(
    State(state): State<AppState>,
    principal: Principal,
    transport: TailTransport,
    pairs: Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let (params, tenant, view) = params(&state, &principal, pairs).await?;
    let filter = super::read::filter(&state, &params, Timestamp::now())?;
    serve_tail(
        &state,
        &principal,
        tenant,
        filter,
        view,
        params.after.as_deref(),
        transport,
    )
}

/// How a live tail reaches its client: a WebSocket when the request asks to
/// upgrade, else server-sent events (resuming after `Last-Event-ID`).
pub enum TailTransport {
    WebSocket(WebSocketUpgrade),
    /// `Last-Event-ID`, as sent: opened with the tenant's seal once known.
    Sse {
        last_event_id: Option<String>,
    },
}

impl FromRequestParts<AppState> for TailTransport {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let upgrade = parts.headers.get(header::UPGRADE);
        if upgrade.is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"websocket")) {
            let upgrade = WebSocketUpgrade::from_request_parts(parts, state)
                .await
                .map_err(|rejection| {
                    ApiError::bad_request(format!(
                        "cannot open a websocket: {}",
                        rejection.body_text().to_lowercase()
                    ))
                })?;
            return Ok(TailTransport::WebSocket(upgrade));
        }
        let last_event_id = match parts.headers.get("last-event-id") {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map(|text| text.trim().to_owned())
                    .map_err(|_| invalid_last_event_id())?,
            ),
        };
        Ok(TailTransport::Sse { last_event_id })
    }
}

/// A live tail of `tenant`'s records matching `filter`, as `view` may see
/// them, for as long as the principal's token is live: the one function
/// every tail route ends in. Starts after `Last-Event-ID`, else after the
/// id `after`, else with the next record stored; either must be an id this
/// tenant was given.
pub(crate) fn serve_tail(
    state: &AppState,
    principal: &Principal,
    tenant: String,
    filter: Filter,
    view: Option<CallerView>,
    after: Option<&str>,
    transport: TailTransport,
) -> Result<Response, ApiError> {
    let seal = state.registry.seal(&tenant);
    let after = match &transport {
        TailTransport::Sse {
            last_event_id: Some(id),
        } => Some(parse_after(id, &seal).map_err(|_| invalid_last_event_id())?),
        _ => after
            .filter(|after| !after.is_empty())
            .map(|after| parse_after(after, &seal))
            .transpose()
            .map_err(ApiError::bad_request)?,
    };
    let after = after.unwrap_or_else(|| state.store.last_id());
    let registry = state.registry.clone();
    let sees = move |record: &LogRecord| match &view {
        None => Verdict::Show,
        Some(view) => view.judge(record, &registry),
    };
    let (registry, token_id) = (state.registry.clone(), principal.token_id.clone());
    let subscription = Subscription {
        tenant,
        filter,
        after,
        seal,
        sees: Arc::new(sees),
        allowed: Arc::new(move || registry.is_live(&token_id)),
    };
    Ok(match transport {
        TailTransport::Sse { .. } => sse(tail::follow(state, subscription)).into_response(),
        TailTransport::WebSocket(upgrade) => {
            let state = state.clone();
            upgrade
                .protocols([WEBSOCKET_PROTOCOL])
                .on_upgrade(move |socket| websocket(socket, tail::follow(&state, subscription)))
        }
    })
}

fn invalid_last_event_id() -> ApiError {
    ApiError::bad_request(
        "invalid Last-Event-ID: send the id of the last event you received, unchanged",
    )
}

/// Server-sent events: `event: record` with the record as data and its id
/// as the event id; `event: missed` with a [`tailwater_model::wire::MissedNotice`]
/// and the last skipped id as the event id, so `Last-Event-ID` resumes after
/// the skipped records.
fn sse(tail: Tail) -> impl IntoResponse {
    let events = futures_util::stream::unfold(tail, |mut tail| async move {
        let event = match tail.next().await? {
            TailEvent::Record(record) => Event::default()
                .id(record.id.clone())
                .event("record")
                .data(serde_json::to_string(&record).expect("records serialize to json")),
            TailEvent::Missed { id, notice } => Event::default()
                .id(id)
                .event("missed")
                .data(serde_json::to_string(&notice).expect("notices serialize to json")),
        };
        Some((Ok::<_, Infallible>(event), tail))
    });
    // A comment at once: Firefox's fetch() answers only with the first
    // bytes of the body, so without it a browser would wait for the first
    // keep-alive to learn that the tail is open.
    let opened = futures_util::stream::once(async {
        Ok::<_, Infallible>(Event::default().comment("tail open"))
    });
    Sse::new(futures_util::StreamExt::chain(opened, events))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}

/// A WebSocket tail: one [`TailMessage`] per text frame; pings while idle;
/// a close frame saying why when the tail ends (1001 when the server stops,
/// 1008 when the token is revoked or expires). The follower ends with the
/// server, so this does too.
async fn websocket(mut socket: WebSocket, mut tail: Tail) {
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    loop {
        tokio::select! {
            event = tail.next() => {
                let Some(event) = event else { break };
                let message = match event {
                    TailEvent::Record(record) => TailMessage::Record { id: record.id.clone(), record: Box::new(record) },
                    TailEvent::Missed { id, notice } => TailMessage::Missed { id, notice },
                };
                let text = serde_json::to_string(&message).expect("tail messages serialize to json");
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            incoming = socket.recv() => match incoming {
                // Pings are answered by the protocol layer; other frames
                // from the client mean nothing to a tail.
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
    let (code, reason) = if tail.allowed() {
        (
            1001,
            "the server is stopping: reconnect with after=<last id>",
        )
    } else {
        (1008, "the token was revoked or expired: get a new one")
    };
    let close = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(close))).await;
}

/// The token a browser's WebSocket carries as a subprotocol
/// (`tailwater.bearer.<token>`, offered with `tailwater.v1`), on an upgrade
/// request only.
pub(crate) fn websocket_bearer(headers: &HeaderMap) -> Option<&str> {
    let upgrade = headers.get(header::UPGRADE)?;
    if !upgrade.as_bytes().eq_ignore_ascii_case(b"websocket") {
        return None;
    }
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value: &HeaderValue| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|protocol| protocol.trim().strip_prefix(WEBSOCKET_BEARER))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    header::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn a_websocket_token_is_read_from_the_subprotocols_of_an_upgrade_only() {
        let upgrade = headers(&[
            ("upgrade", "WebSocket"),
            ("sec-websocket-protocol", "tailwater.v1"),
            (
                "sec-websocket-protocol",
                "other, tailwater.bearer.tw_abc-_1",
            ),
        ]);
        assert_eq!(websocket_bearer(&upgrade), Some("tw_abc-_1"));
        let plain = headers(&[("sec-websocket-protocol", "tailwater.bearer.tw_abc")]);
        assert_eq!(websocket_bearer(&plain), None);
        let no_token = headers(&[
            ("upgrade", "websocket"),
            ("sec-websocket-protocol", "tailwater.v1"),
        ]);
        assert_eq!(websocket_bearer(&no_token), None);
    }
}
