//! `GET /v1/requests`: a tenant's requests, newest start first, filtered by
//! app, runner, how they stand and when they started, a page at a time.
//! Its query string is [`RequestsParams`] (text, so every bad value gets a
//! clear error) and a page is a [`RequestList`].

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::filter::Cursor;
use crate::positions::TenantSeal;
use crate::time::parse_time;

use super::{Incomplete, RequestInfo, RequestState};

/// Requests one page holds when the query names no limit.
pub const DEFAULT_REQUESTS_LIMIT: usize = 50;
/// The most requests one page may hold: each costs a few reads of the
/// store's request index.
pub const MAX_REQUESTS_LIMIT: usize = 500;

/// `GET /v1/requests`: one page of requests, newest start first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestList {
    pub requests: Vec<RequestInfo>,
    /// Pass as `cursor` to get the next page; absent on the last page. A
    /// page may hold fewer than `limit` requests and still have one (the
    /// server reads a bounded number of starts for one page): follow it
    /// until it is absent.
    pub next_cursor: Option<String>,
    /// Present when damaged blocks were skipped: requests may be missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<Incomplete>,
}

/// Which requests a list keeps, by how they stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestFilter {
    /// Ended with an answer: completed, no 5xx status (counted as served).
    Ok,
    /// Ended otherwise: an error or a 5xx answer, a client that went away,
    /// or a worker that exited first (counted as failed).
    Error,
    /// Started, not ended yet.
    InFlight,
}

impl RequestFilter {
    pub const ALL: [RequestFilter; 3] = [
        RequestFilter::Ok,
        RequestFilter::Error,
        RequestFilter::InFlight,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestFilter::Ok => "ok",
            RequestFilter::Error => "error",
            RequestFilter::InFlight => "in_flight",
        }
    }

    /// Whether a request standing so is kept: the same split as a runner's
    /// served and failed counts ([`crate::lifecycle::request_served`]).
    pub fn matches(self, state: RequestState, status: Option<i64>) -> bool {
        let served = state == RequestState::Completed && status.is_none_or(|status| status < 500);
        match self {
            RequestFilter::Ok => served,
            RequestFilter::Error => state != RequestState::InFlight && !served,
            RequestFilter::InFlight => state == RequestState::InFlight,
        }
    }
}

impl std::fmt::Display for RequestFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for RequestFilter {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RequestFilter::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| {
                let shown: String = text.chars().take(40).collect();
                format!("unknown state '{shown}': use ok, error or in_flight")
            })
    }
}

/// The query string of `GET /v1/requests`, as text:
///
/// | parameter | keeps |
/// |---|---|
/// | `app`, `runner` | requests of this app, started on this runner |
/// | `state` | `ok`, `error` or `in_flight` ([`RequestFilter`]) |
/// | `since`, `until` | started in this window (as `/v1/logs`: RFC 3339, `now`, or a duration ago) |
///
/// plus paging (`limit`, `cursor`). An empty value counts as absent; each
/// parameter may be given once; unknown ones are refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestsParams {
    pub app: Option<String>,
    pub runner: Option<String>,
    pub state: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
    pub cursor: Option<String>,
}

/// What [`RequestsParams`] ask for, checked.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestsQuery {
    pub app: Option<String>,
    pub runner: Option<String>,
    pub state: Option<RequestFilter>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
    pub limit: usize,
    /// Continue after this request's start (exclusive), newest first.
    pub cursor: Option<Cursor>,
}

impl RequestsParams {
    fn slots(&mut self) -> [(&'static str, &mut Option<String>); 7] {
        [
            ("app", &mut self.app),
            ("runner", &mut self.runner),
            ("state", &mut self.state),
            ("since", &mut self.since),
            ("until", &mut self.until),
            ("limit", &mut self.limit),
            ("cursor", &mut self.cursor),
        ]
    }

    /// Parameters from a decoded query string's name/value pairs. Refuses an
    /// unknown name and a repeated one.
    pub fn from_pairs<K, V>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<RequestsParams, String>
    where
        K: AsRef<str>,
        V: Into<String>,
    {
        let mut params = RequestsParams::default();
        for (name, value) in pairs {
            let name = name.as_ref();
            let mut slots = params.slots();
            let Some((_, slot)) = slots.iter_mut().find(|(known, _)| *known == name) else {
                let shown: String = name.chars().take(40).collect();
                return Err(format!(
                    "unknown parameter '{shown}': use app, runner, state, since, until, limit or cursor"
                ));
            };
            if slot.replace(value.into()).is_some() {
                return Err(format!("parameter '{name}' is given twice: give it once"));
            }
        }
        Ok(params)
    }

    /// The parameters as name/value pairs; absent and empty ones left out.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        let mut params = self.clone();
        params
            .slots()
            .into_iter()
            .filter_map(|(name, value)| {
                value
                    .take()
                    .filter(|value| !value.is_empty())
                    .map(|value| (name.to_owned(), value))
            })
            .collect()
    }

    /// What these parameters ask for; relative times count back from `now`,
    /// and the cursor is one `seal`'s tenant was given.
    pub fn to_query(&self, now: Timestamp, seal: &TenantSeal) -> Result<RequestsQuery, String> {
        let given = |value: &Option<String>| value.clone().filter(|value| !value.is_empty());
        let time = |value: &Option<String>| given(value).map(|v| parse_time(&v, now)).transpose();
        let limit = match given(&self.limit) {
            None => DEFAULT_REQUESTS_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if (1..=MAX_REQUESTS_LIMIT).contains(&limit) => limit,
                _ => {
                    let shown: String = text.chars().take(40).collect();
                    return Err(format!(
                        "invalid limit '{shown}': use a whole number from 1 to {MAX_REQUESTS_LIMIT}"
                    ));
                }
            },
        };
        Ok(RequestsQuery {
            app: given(&self.app),
            runner: given(&self.runner),
            state: given(&self.state).map(|text| text.parse()).transpose()?,
            since: time(&self.since)?,
            until: time(&self.until)?,
            limit,
            cursor: given(&self.cursor)
                .map(|text| Cursor::decode(&text, seal))
                .transpose()?,
        })
    }
}

impl RequestsQuery {
    /// Whether no request can match: the window ends before it starts.
    pub fn is_empty_range(&self) -> bool {
        matches!((self.since, self.until), (Some(since), Some(until)) if until <= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::positions::SealKey;

    #[test]
    fn parameters_parse_check_and_round_trip() {
        let seal = SealKey::new([7; 16]).tenant("acme");
        let now: Timestamp = "2026-12-01T12:00:00Z".parse().unwrap();
        let params = RequestsParams::from_pairs([
            ("app", "sdxl"),
            ("runner", "r1"),
            ("state", "in_flight"),
            ("since", "15m"),
            ("limit", "7"),
        ])
        .unwrap();
        assert_eq!(
            RequestsParams::from_pairs(params.to_pairs()),
            Ok(params.clone())
        );
        let query = params.to_query(now, &seal).unwrap();
        assert_eq!(query.state, Some(RequestFilter::InFlight));
        assert_eq!(query.limit, 7);
        assert_eq!(query.since, Some("2026-12-01T11:45:00Z".parse().unwrap()));
        assert_eq!(
            RequestsParams::default()
                .to_query(now, &seal)
                .unwrap()
                .limit,
            DEFAULT_REQUESTS_LIMIT
        );

        let cursor = Cursor {
            ts_ns: 5,
            position: 9,
        };
        let with = |name: &str, value: &str| RequestsParams::from_pairs([(name, value)]).unwrap();
        let sealed = cursor.encode(&seal);
        assert_eq!(
            with("cursor", &sealed).to_query(now, &seal).unwrap().cursor,
            Some(cursor)
        );
        let other = SealKey::new([7; 16]).tenant("other");
        let error = |params: RequestsParams| params.to_query(now, &other).unwrap_err();
        assert!(error(with("cursor", &sealed)).starts_with("invalid cursor"));
        assert!(error(with("state", "done")).contains("use ok, error or in_flight"));
        assert!(error(with("limit", "0")).contains("from 1 to 500"));
        assert!(error(with("limit", "501")).contains("from 1 to 500"));
        assert!(error(with("since", "yesterday")).starts_with("invalid time"));
        assert!(RequestsParams::from_pairs([("level", "x")])
            .unwrap_err()
            .starts_with("unknown parameter 'level'"));
        assert!(RequestsParams::from_pairs([("app", "a"), ("app", "b")])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn states_split_as_runners_count_served_and_failed() {
        use RequestState::*;
        let ok = |state, status| RequestFilter::Ok.matches(state, status);
        let error = |state, status| RequestFilter::Error.matches(state, status);
        assert!(ok(Completed, Some(200)) && ok(Completed, None));
        assert!(!ok(Completed, Some(503)) && error(Completed, Some(503)));
        assert!(error(Error, None) && error(Unfinished, None));
        assert!(!error(InFlight, None) && !ok(InFlight, None));
        assert!(RequestFilter::InFlight.matches(InFlight, None));
    }
}
