//! How fast an app and a runner may send: a pace per app and per runner
//! (a token bucket with a second's burst), what each runner had refused
//! since its last batch that got in, and the `system` record that tells
//! it, once a batch of it is taken again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use tailwater_model::lifecycle::Event;
use tailwater_model::wire::{IngestBatch, IngestRecord};

use super::*;

/// A batch held back by a rate limit.
#[derive(Debug)]
pub struct Throttled {
    pub reason: &'static str,
    /// When the batch would be taken: `Retry-After`.
    pub retry_after: Duration,
    /// The limit hit, in words: "100 lines/s for the app".
    pub limit: String,
}

impl Throttled {
    pub fn message(&self) -> String {
        format!(
            "rate limit of {} reached: retry in {} s; the agent keeps the lines and sends them again",
            self.limit,
            self.retry_after.as_secs_f64().ceil()
        )
    }
}

/// The rate limits' state: a pace per app and per runner, and what each
/// runner had refused since its last batch that got in.
///
/// Each pace is a GCRA ("theoretical arrival time") bucket with a second's
/// burst that lets a batch go into debt: a batch larger than a second's
/// allowance still gets in when the pace is current, and the next waits
/// until the debt is paid. (Rate limiter crates such as `governor` refuse
/// any request larger than the burst, which would refuse such a batch
/// forever.)
#[derive(Default)]
pub struct RateLimiter {
    state: Mutex<RateState>,
}

#[derive(Default)]
struct RateState {
    paces: HashMap<PaceKey, Pace>,
    refused: HashMap<(String, String, String), RefusedTally>,
}

#[derive(Clone, Hash, PartialEq, Eq)]
enum PaceKey {
    AppLines(String, String),
    AppBytes(String, String),
    RunnerLines(String, String, String),
    RunnerBytes(String, String, String),
}

/// When the pace is caught up: a batch is taken while this is at most a
/// second (the burst) ahead of now.
#[derive(Clone, Copy)]
struct Pace {
    caught_up: Instant,
}

const BURST: Duration = Duration::from_secs(1);
/// Past this many paces, caught-up ones (no different from new) are
/// forgotten.
const PACES_KEPT: usize = 4096;
/// Refusals of a runner that sends nothing that gets in for this long are
/// forgotten (still counted in `/metrics`).
const REFUSED_KEPT: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct RefusedTally {
    /// Each limit that refused batches, in the order first hit: a stretch
    /// may meet the app's limit and the runner's, and the report names
    /// each with what it refused, not only the last.
    limits: Vec<LimitTally>,
    since: jiff::Timestamp,
    until: jiff::Timestamp,
    last: Instant,
}

#[derive(Debug)]
struct LimitTally {
    reason: &'static str,
    limit: String,
    batches: u64,
    lines: u64,
}

impl RateLimiter {
    /// Takes the batch if every rate that applies has room, charging them
    /// all; otherwise refuses it and says when to come back.
    pub fn admit(
        &self,
        tenant: &str,
        batch: &IngestBatch,
        app_rate: Rate,
        runner_rate: Rate,
        now: Instant,
    ) -> Result<(), Throttled> {
        if app_rate == Rate::default() && runner_rate == Rate::default() {
            return Ok(());
        }
        let lines = batch.records.len() as u64;
        let bytes: u64 = batch.records.iter().map(|r| r.message.len() as u64).sum();
        let (app, runner) = (batch.app.clone(), batch.runner.clone());
        let t = tenant.to_owned();
        let checks = [
            (
                PaceKey::AppLines(t.clone(), app.clone()),
                app_rate.lines_per_sec,
                lines,
                "rate_limit_app_lines",
                "lines/s for the app (its rate_limit_lines_per_sec, else --app-rate-lines)",
            ),
            (
                PaceKey::AppBytes(t.clone(), app.clone()),
                app_rate.bytes_per_sec,
                bytes,
                "rate_limit_app_bytes",
                "bytes/s for the app (its rate_limit_bytes_per_sec, else --app-rate-bytes)",
            ),
            (
                PaceKey::RunnerLines(t.clone(), app.clone(), runner.clone()),
                runner_rate.lines_per_sec,
                lines,
                "rate_limit_runner_lines",
                "lines/s for each runner (--runner-rate-lines)",
            ),
            (
                PaceKey::RunnerBytes(t, app, runner),
                runner_rate.bytes_per_sec,
                bytes,
                "rate_limit_runner_bytes",
                "bytes/s for each runner (--runner-rate-bytes)",
            ),
        ];
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut refused: Option<Throttled> = None;
        for (key, rate, _, reason, unit) in &checks {
            let Some(rate) = rate else { continue };
            let Some(pace) = state.paces.get(key) else {
                continue;
            };
            let ahead = pace.caught_up.saturating_duration_since(now);
            if ahead > BURST {
                let retry_after = ahead - BURST;
                if refused.as_ref().is_none_or(|r| r.retry_after < retry_after) {
                    refused = Some(Throttled {
                        reason,
                        retry_after,
                        limit: format!("{rate} {unit}"),
                    });
                }
            }
        }
        if let Some(refused) = refused {
            state.note_refused(tenant, batch, &refused, lines, now);
            return Err(refused);
        }
        for (key, rate, cost, _, _) in checks {
            let Some(rate) = rate else { continue };
            let cost = Duration::from_secs_f64(cost as f64 / rate as f64);
            let pace = state.paces.entry(key).or_insert(Pace { caught_up: now });
            pace.caught_up = pace.caught_up.max(now) + cost;
        }
        if state.paces.len() > PACES_KEPT {
            state.paces.retain(|_, pace| pace.caught_up > now);
        }
        Ok(())
    }

    /// The report of what `batch`'s runner had refused since its last batch
    /// that got in, to store with this one; `restore` puts it back if the
    /// batch is not stored after all.
    pub fn take_report(&self, tenant: &str, batch: &IngestBatch) -> Option<PendingReport> {
        let first = batch.records.first()?;
        let key = (tenant.to_owned(), batch.app.clone(), batch.runner.clone());
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let tally = state.refused.remove(&key)?;
        let batches: u64 = tally.limits.iter().map(|limit| limit.batches).sum();
        let lines: u64 = tally.limits.iter().map(|limit| limit.lines).sum();
        let described: Vec<String> = tally
            .limits
            .iter()
            .map(|limit| {
                format!(
                    "{} batches ({} lines) by its limit of {}",
                    limit.batches, limit.lines, limit.limit
                )
            })
            .collect();
        // The limit that refused the most batches (the first on a tie).
        let main = tally
            .limits
            .iter()
            .rev()
            .max_by_key(|limit| limit.batches)
            .expect("a tally has a limit");
        let mut reasons = serde_json::Map::new();
        for limit in &tally.limits {
            reasons.insert(limit.reason.into(), limit.batches.into());
        }
        let record = server_record(
            server_seq(first.seq, ReportKind::RateLimited),
            first.ts,
            format!(
                "the server's rate limits refused {batches} batches ({lines} lines) of this runner between {} and {} with 429: {}; the agent kept them and sent them again",
                tally.since,
                tally.until,
                described.join(", ")
            ),
            json!({
                "event": Event::RateLimited,
                "reason": main.reason,
                "reasons": reasons,
                "limit": main.limit,
                "refused_batches": batches,
                "refused_lines": lines,
                "since": tally.since.to_string(),
                "until": tally.until.to_string(),
            }),
        );
        Some(PendingReport { key, tally, record })
    }

    pub fn restore(&self, pending: PendingReport) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.refused.entry(pending.key).or_insert(pending.tally);
    }
}

/// A rate-limit report taken to be stored with a batch.
pub struct PendingReport {
    key: (String, String, String),
    tally: RefusedTally,
    pub record: IngestRecord,
}

impl RateState {
    fn note_refused(
        &mut self,
        tenant: &str,
        batch: &IngestBatch,
        refused: &Throttled,
        lines: u64,
        now: Instant,
    ) {
        let wall = jiff::Timestamp::now();
        let limit = refused.limit.clone();
        let key = (tenant.to_owned(), batch.app.clone(), batch.runner.clone());
        let tally = self.refused.entry(key).or_insert_with(|| RefusedTally {
            limits: Vec::new(),
            since: wall,
            until: wall,
            last: now,
        });
        let index = match tally
            .limits
            .iter()
            .position(|seen| seen.reason == refused.reason)
        {
            Some(index) => index,
            None => {
                tally.limits.push(LimitTally {
                    reason: refused.reason,
                    limit: limit.clone(),
                    batches: 0,
                    lines: 0,
                });
                tally.limits.len() - 1
            }
        };
        let hit = &mut tally.limits[index];
        // The rate of a limit may change meanwhile: the latest is named.
        hit.limit = limit;
        hit.batches += 1;
        hit.lines += lines;
        tally.until = wall;
        tally.last = now;
        if self.refused.len() > PACES_KEPT {
            self.refused
                .retain(|_, tally| now.duration_since(tally.last) < REFUSED_KEPT);
        }
    }
}
