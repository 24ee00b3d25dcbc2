//! One runner's entry in the table, and what changes it: a batch or a
//! stored record seen (a sighting), the lifecycle events its agent wrote,
//! and the notices the server writes into its logs when it goes lost and
//! returns.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tailwater_model::lifecycle::{self, field, Event as Kind};
use tailwater_model::time::format_rough;
use tailwater_model::wire::{
    IngestBatch, IngestRecord, Runner, RunnerExit, RunnerRequests, RunnerState,
};
use tailwater_model::{fields_of, Fields, Level, LogRecord, Stream};

use super::*;

impl Sighting {
    pub(super) fn of_batch(batch: &IngestBatch) -> Sighting {
        let events = batch
            .records
            .iter()
            .filter(|record| record.stream == Stream::System)
            .filter_map(|record| Event::new(record.seq, record.ts, &record.fields.to_map()))
            .collect();
        Sighting {
            app: batch.app.clone(),
            version: batch.version.clone(),
            runner: batch.runner.clone(),
            boot: batch.boot.clone(),
            source: batch.source,
            first_ts: batch.records.first().map(|record| record.ts),
            events,
        }
    }

    pub(super) fn of_record(record: &LogRecord) -> Sighting {
        Sighting {
            app: record.app.clone(),
            version: record.version.clone(),
            runner: record.runner.clone(),
            boot: record.boot.clone(),
            source: record.source,
            first_ts: Some(record.ts),
            events: Event::new(record.seq, record.ts, &record.fields)
                .into_iter()
                .collect(),
        }
    }
}

impl Event {
    /// The lifecycle event a `system` record holds, if it holds one (the
    /// server's own notices are not events of the runner).
    pub(super) fn new(seq: u64, ts: Timestamp, fields: &Fields) -> Option<Event> {
        let name = fields.get(lifecycle::EVENT)?.as_str()?;
        let kind = Kind::parse(name);
        // The table's own notices, not events of the runner.
        if matches!(kind, Some(Kind::Lost | Kind::Returned)) {
            return None;
        }
        Some(Event {
            seq,
            ts,
            kind,
            fields: fields.clone(),
        })
    }

    pub(super) fn int(&self, key: &str) -> Option<i64> {
        self.fields.get(key).and_then(serde_json::Value::as_i64)
    }

    pub(super) fn flag(&self, key: &str) -> bool {
        self.fields
            .get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
}

impl Entry {
    pub(super) fn new(tenant: &str, sighting: &Sighting, seen_at: Timestamp) -> Entry {
        Entry {
            runner: Runner {
                tenant: tenant.to_owned(),
                app: sighting.app.clone(),
                version: sighting.version.clone(),
                runner: sighting.runner.clone(),
                boot: sighting.boot.clone(),
                source: sighting.source,
                state: RunnerState::Initializing,
                started: sighting.first_ts.unwrap_or(seen_at),
                ready_at: None,
                last_seen: seen_at,
                exited_at: None,
                exit: None,
                requests: RunnerRequests::default(),
            },
            lives: Vec::new(),
            stop_signal: None,
            oom_seen: false,
            before_lost: None,
        }
    }

    /// Not ended, and not lost already.
    pub(super) fn may_go_lost(&self) -> bool {
        !self.runner.state.is_final() && self.runner.state != RunnerState::Lost
    }

    pub(super) fn key(&self) -> Key {
        (
            self.runner.tenant.clone(),
            self.runner.app.clone(),
            self.runner.runner.clone(),
        )
    }

    /// A new boot: the runner starts over.
    pub(super) fn begin_life(&mut self, sighting: &Sighting, seen_at: Timestamp) {
        if self.lives.len() == LIVES_KEPT {
            self.lives.remove(0);
        }
        self.lives.push(Life {
            boot: sighting.boot.clone(),
            applied_seq: None,
        });
        let runner = &mut self.runner;
        runner.boot = sighting.boot.clone();
        runner.state = RunnerState::Initializing;
        runner.started = sighting.first_ts.unwrap_or(seen_at);
        runner.ready_at = None;
        runner.exited_at = None;
        runner.exit = None;
        runner.requests = RunnerRequests::default();
        self.stop_signal = None;
        self.oom_seen = false;
        self.before_lost = None;
    }

    pub(super) fn apply(&mut self, event: &Event) {
        let runner = &mut self.runner;
        let ended = runner.state.is_final();
        let in_flight = event
            .int(field::IN_FLIGHT)
            .and_then(|count| u64::try_from(count).ok());
        let Some(kind) = event.kind else { return };
        match kind {
            // A new run of the worker. A `restart` record only announces
            // one (after a backoff the agent may never finish: a stop
            // signal cancels it), so until this `start` the runner keeps
            // its last run's end, and a cancelled restart leaves it there.
            Kind::Start => {
                runner.state = RunnerState::Initializing;
                runner.started = event.ts;
                runner.ready_at = None;
                runner.exited_at = None;
                runner.exit = None;
                runner.requests.in_flight = 0;
                self.stop_signal = None;
                self.oom_seen = false;
            }
            Kind::Ready => {
                runner.ready_at.get_or_insert(event.ts);
                if runner.state == RunnerState::Initializing {
                    runner.state = RunnerState::Ready;
                }
            }
            Kind::RequestStart => {
                runner.requests.in_flight =
                    in_flight.unwrap_or(runner.requests.in_flight.saturating_add(1));
                if !ended {
                    runner.state = RunnerState::Running;
                }
            }
            Kind::RequestEnd => {
                if lifecycle::request_served(&event.fields) {
                    runner.requests.served += 1;
                } else {
                    runner.requests.failed += 1;
                }
                runner.requests.in_flight =
                    in_flight.unwrap_or(runner.requests.in_flight.saturating_sub(1));
                if !ended {
                    runner.state = if runner.requests.in_flight > 0 {
                        RunnerState::Running
                    } else {
                        RunnerState::Ready
                    };
                }
            }
            Kind::Stop => {
                self.stop_signal = event.int(field::SIGNAL).and_then(|n| i32::try_from(n).ok());
            }
            Kind::OomKill => self.oom_seen = true,
            Kind::Exit | Kind::SpawnFailed => {
                let code = event
                    .int(field::EXIT_CODE)
                    .and_then(|n| i32::try_from(n).ok());
                let signal = event.int(field::SIGNAL).and_then(|n| i32::try_from(n).ok());
                let oom_killed =
                    event.flag(field::OOM_KILLED) || (self.oom_seen && signal == Some(SIGKILL));
                runner.state = if oom_killed {
                    RunnerState::OomKilled
                } else if code == Some(0) || (signal.is_some() && signal == self.stop_signal) {
                    RunnerState::Exited
                } else {
                    RunnerState::Crashed
                };
                runner.exited_at = Some(event.ts);
                runner.exit = Some(RunnerExit {
                    code,
                    signal,
                    core_dumped: event.flag("core_dumped"),
                    oom_killed,
                });
                runner.requests.in_flight = 0;
            }
            _ => {}
        }
    }

    pub(super) fn notice(
        &self,
        level: Level,
        message: String,
        fields: serde_json::Value,
    ) -> Notice {
        let now = Timestamp::now();
        // Unique per notice, and rising: the time in µs.
        let seq = u64::try_from(now.as_microsecond()).unwrap_or_default();
        Notice {
            tenant: self.runner.tenant.clone(),
            batch: IngestBatch {
                app: self.runner.app.clone(),
                version: self.runner.version.clone(),
                runner: self.runner.runner.clone(),
                boot: format!("{}{SERVER_BOOT_SUFFIX}", self.runner.boot),
                source: self.runner.source,
                records: vec![IngestRecord::system(
                    seq,
                    now,
                    level,
                    message,
                    fields_of(fields),
                )],
            },
        }
    }

    pub(super) fn lost_notice(&self, now: Timestamp, timeout: Duration) -> Notice {
        let silent = now.duration_since(self.runner.last_seen);
        self.notice(
            Level::Warn,
            format!(
                "runner {} is lost: nothing heard from its agent for {} (the server's --heartbeat-timeout is {}); it may have been killed, or cut off from the server",
                self.runner.runner,
                format_rough(silent),
                format_rough(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX)),
            ),
            json!({
                "event": Kind::Lost,
                "boot": self.runner.boot,
                "last_seen": self.runner.last_seen.to_string(),
                "heartbeat_timeout_ms": timeout.as_millis() as u64,
            }),
        )
    }

    pub(super) fn returned_notice(&self, last_seen: Timestamp, now: Timestamp) -> Notice {
        let silent = now.duration_since(last_seen);
        self.notice(
            Level::Info,
            format!(
                "runner {} is back after {} of silence",
                self.runner.runner,
                format_rough(silent)
            ),
            json!({
                "event": Kind::Returned,
                "boot": self.runner.boot,
                "silent_ms": silent.as_millis().max(0) as u64,
            }),
        )
    }
}

/// SIGKILL's number, the same on every Unix.
const SIGKILL: i32 = 9;
