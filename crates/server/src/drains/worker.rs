//! One drain's task: follow the store after the drain's cursor, gather a
//! batch (by records, bytes and time), write its end down as pending, send
//! it until a receiver takes it, then move the cursor past it.
//!
//! Failures (a connection that fails or times out, any answer but 2xx)
//! are retried after a backoff with jitter, or the receiver's
//! `Retry-After` when that is longer. After `max_failures` in a row the
//! drain pauses: its file says so (it stays paused across restarts), a
//! `system` record in the app's logs says why, and `/metrics` counts it.
//! Resuming sends the pending batch again, from the same cursor.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tailwater_model::lifecycle::Event;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{fields_of, Filter, Level, LogRecord, Matcher};
use tokio::sync::watch;
use tokio::time::Instant;

use super::config::Cursor;
use super::{format, set_paused, Control, Drain, Shared, BATCH_ID_HEADER, DRAIN_ID_HEADER};
use crate::runners::SERVER_BOOT_SUFFIX;

/// The shortest time between two of a drain's reads of the store while it
/// gathers a batch: however fast records arrive (any tenant's wake every
/// drain), a drain reads the store at most this often.
const MIN_READ_INTERVAL: Duration = Duration::from_millis(50);

/// Why a worker stopped what it was doing.
enum Stop {
    /// Paused or deleted by its owner, or paused by its failures.
    Control,
    /// The server stops.
    Server,
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    stopping: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let worker = Worker {
        control: drain.control.subscribe(),
        newest: shared.store.subscribe(),
        shared,
        drain,
        stopping,
    };
    tokio::spawn(worker.run())
}

struct Worker {
    shared: Arc<Shared>,
    drain: Arc<Drain>,
    control: watch::Receiver<Control>,
    newest: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
}

impl Worker {
    async fn run(mut self) {
        let id = self.drain.config().id;
        loop {
            // Wait while paused; end when deleted or the server stops.
            let control = tokio::select! {
                control = self.control.wait_for(|c| *c != Control::Paused) => match control {
                    Ok(control) => *control,
                    Err(_) => return,
                },
                _ = self.stopping.wait_for(|stopping| *stopping) => return,
            };
            if control == Control::Deleted {
                return;
            }
            match self.deliver_from_cursor().await {
                Ok(()) | Err(Stop::Control) => {}
                Err(Stop::Server) => return,
            }
            if *self.control.borrow() == Control::Deleted {
                tracing::debug!(drain = %id, "drain worker ends: deleted");
                return;
            }
        }
    }

    /// Delivers batches until paused, deleted or stopped.
    async fn deliver_from_cursor(&mut self) -> Result<(), Stop> {
        let id = self.drain.config().id;
        let files = self.shared.files.clone();
        let mut cursor = match blocking(move || files.cursor(&id)).await {
            Some(Ok(cursor)) => cursor,
            Some(Err(error)) => {
                tracing::error!(?error, "a drain cannot read its cursor; it tries again");
                self.wait(self.shared.settings.backoff_max).await?;
                return Err(Stop::Control);
            }
            None => return Err(Stop::Server),
        };
        loop {
            let records = match cursor.pending {
                Some(through) => self.read_range(cursor.delivered, through).await?,
                None => self.gather(cursor.delivered).await?,
            };
            let Some(last) = records.last().map(|record| record.position) else {
                // A pending batch whose records retention removed.
                cursor = Cursor {
                    delivered: cursor.pending.unwrap_or(cursor.delivered),
                    pending: None,
                };
                self.save(cursor).await?;
                continue;
            };
            if cursor.pending.is_none() {
                cursor.pending = Some(last);
                self.save(cursor).await?;
            }
            let through = cursor.pending.unwrap_or(last);
            self.send(&records, through).await?;
            cursor = Cursor {
                delivered: through,
                pending: None,
            };
            self.save(cursor).await?;
            let stats = &self.drain.stats;
            stats
                .delivered_records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            stats.delivered_batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn save(&self, cursor: Cursor) -> Result<(), Stop> {
        if *self.control.borrow() == Control::Deleted {
            // Its files are gone: write none back.
            return Err(Stop::Control);
        }
        let (files, id) = (self.shared.files.clone(), self.drain.config().id);
        match blocking(move || files.save_cursor(&id, cursor)).await {
            Some(Ok(())) => {
                self.drain.stats.delivered_through(cursor.delivered);
                Ok(())
            }
            Some(Err(error)) => {
                // Not moving on is safe: the batch is sent again.
                tracing::error!(%error, "a drain cannot write its cursor; it retries");
                self.wait(self.shared.settings.backoff_max).await?;
                Err(Stop::Control)
            }
            None => Err(Stop::Server),
        }
    }

    /// The app's records in `(after, through]`: a batch written down as
    /// pending, read again as it was (whole, even if the batch settings
    /// shrank since: it was one batch under the settings it was made by).
    async fn read_range(&self, after: u64, through: u64) -> Result<Vec<LogRecord>, Stop> {
        let limit = self.shared.settings.batch_records;
        let (mut records, mut from) = (Vec::new(), after);
        loop {
            let read = self.read(from, limit).await?;
            let done = read.len() < limit;
            for record in read {
                if record.position > through {
                    return Ok(records);
                }
                from = record.position;
                records.push(record);
            }
            if done || from >= through {
                return Ok(records);
            }
        }
    }

    /// The next batch after `after`: as soon as it is full (records or
    /// bytes), or `batch_wait` after its first record was read.
    async fn gather(&mut self, after: u64) -> Result<Vec<LogRecord>, Stop> {
        let settings = self.shared.settings.clone();
        let (mut records, mut bytes, mut scanned) = (Vec::new(), 0usize, after);
        let mut deadline = None;
        let mut next_read = Instant::now();
        loop {
            tokio::time::sleep_until(next_read).await;
            next_read = Instant::now() + MIN_READ_INTERVAL;
            let stored_up_to = *self.newest.borrow_and_update();
            let want = settings.batch_records - records.len();
            let read = self.read(scanned, want).await?;
            let read_everything = read.len() < want;
            for record in read {
                scanned = record.position;
                bytes += format::weight(&record);
                records.push(record);
                if bytes >= settings.batch_bytes {
                    break;
                }
            }
            if records.len() >= settings.batch_records || bytes >= settings.batch_bytes {
                return Ok(records);
            }
            if read_everything {
                scanned = scanned.max(stored_up_to);
            }
            if !records.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + settings.batch_wait);
            }
            let until = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.newest.changed() => if changed.is_err() { return Err(Stop::Server) },
                _ = until => return Ok(records),
                _ = self.control.changed() => return Err(Stop::Control),
                _ = self.stopping.wait_for(|stopping| *stopping) => return Err(Stop::Server),
            }
        }
    }

    /// Up to `limit` of the app's records after `after`, with their ids as
    /// the tenant is shown them.
    async fn read(&self, after: u64, limit: usize) -> Result<Vec<LogRecord>, Stop> {
        let config = self.drain.config();
        let store = self.shared.store.clone();
        let seal = self.shared.registry.seal(&config.tenant);
        let filter = Filter {
            app: Some(Matcher::Eq(config.app.clone())),
            ..Filter::default()
        };
        let read = move || {
            let mut records = store.read_after(&config.tenant, &filter, after, limit);
            for record in &mut records {
                seal.fill_id(record);
            }
            records
        };
        blocking(read).await.ok_or(Stop::Server)
    }

    /// Sends one batch, which ends at position `through`, until a receiver
    /// takes it; `Err` when paused (by its failures or its owner), deleted,
    /// or the server stops.
    async fn send(&self, records: &[LogRecord], through: u64) -> Result<(), Stop> {
        let config = self.drain.config();
        let body = format::encode(config.format, records);
        let seal = self.shared.registry.seal(&config.tenant);
        let batch_id = format!("{}.{}", config.id, seal.id(through));
        let settings = &self.shared.settings;
        let stats = &self.drain.stats;
        loop {
            let now = jiff::Timestamp::now().as_second();
            let signature = super::sign::signature(&config.secret, now, &body);
            let attempt = async {
                let url = reqwest::Url::parse(&config.url).map_err(|e| e.to_string())?;
                super::destination::check_host(&url, settings.allow_private)?;
                let mut request = self.shared.client.post(url);
                if let Some(token) = &config.token {
                    request = request.bearer_auth(token);
                }
                request
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        format::content_type(config.format),
                    )
                    .header(BATCH_ID_HEADER, &batch_id)
                    .header(DRAIN_ID_HEADER, &config.id)
                    .header(super::SIGNATURE_HEADER, signature)
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|error| describe(&error))
            };
            let mut stopping = self.stopping.clone();
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = stopping.wait_for(|stopping| *stopping) => return Err(Stop::Server),
            };
            let (error, retry_after) = match outcome {
                Ok(response) if response.status().is_success() => {
                    stats.failures.store(0, Ordering::Relaxed);
                    return Ok(());
                }
                Ok(response) => {
                    let retry_after = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|value| value.to_str().ok())
                        .and_then(parse_retry_after);
                    (
                        format!("the receiver answered {}", response.status()),
                        retry_after,
                    )
                }
                Err(error) => (error, None),
            };
            stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let failures = stats.failures.fetch_add(1, Ordering::Relaxed) + 1;
            *stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.clone());
            tracing::info!(drain = %config.id, failures, %error, "a drain delivery failed");
            if failures >= settings.max_failures {
                self.pause_after_failures(failures, &error).await;
                return Err(Stop::Control);
            }
            let delay = backoff(settings, failures, retry_after);
            self.wait(delay).await?;
        }
    }

    /// Waits `delay`, unless the owner pauses or deletes the drain or the
    /// server stops meanwhile.
    async fn wait(&self, delay: Duration) -> Result<(), Stop> {
        let mut control = self.control.clone();
        let mut stopping = self.stopping.clone();
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = control.wait_for(|c| *c != Control::Active) => Err(Stop::Control),
            _ = stopping.wait_for(|stopping| *stopping) => Err(Stop::Server),
        }
    }

    /// Pauses the drain after `failures` in a row: its file, a `system`
    /// record in the app's logs, the metric.
    async fn pause_after_failures(&self, failures: u32, error: &str) {
        let config = self.drain.config();
        let reason =
            format!("paused after {failures} failed deliveries in a row; the last: {error}");
        let now = jiff::Timestamp::now();
        let message = format!(
            "drain {} to {} {reason}: nothing is lost, it goes on from where it stopped once resumed (`tailwater drain resume {} --app {}`)",
            config.id, config.url, config.id, config.app
        );
        let fields = fields_of(json!({
            "event": Event::DrainPaused.as_str(),
            "drain": config.id,
            "failures": failures,
            "error": error,
        }));
        let batch = IngestBatch {
            app: config.app.clone(),
            version: String::new(),
            runner: "tailwater".into(),
            boot: format!(
                "drain-{}-{}{SERVER_BOOT_SUFFIX}",
                config.id,
                now.as_nanosecond()
            ),
            source: Default::default(),
            records: vec![IngestRecord::system(0, now, Level::Error, message, fields)],
        };
        let store = self.shared.store.clone();
        let tenant = config.tenant.clone();
        if let Some(Err(error)) = blocking(move || store.append(&tenant, batch)).await {
            tracing::error!(%error, "cannot write a drain's pause notice in its app's logs");
        }
        // Told in the app's logs and counted first: whoever sees it paused
        // finds why.
        self.drain.stats.pauses.fetch_add(1, Ordering::Relaxed);
        let (shared, drain) = (self.shared.clone(), self.drain.clone());
        let paused = reason.clone();
        let written = blocking(move || set_paused(&shared, &drain, Some(paused))).await;
        if let Some(Err(error)) = written {
            tracing::error!(?error, drain = %config.id, "cannot write a drain's pause; it pauses until the server restarts");
        }
        self.drain.control.send_replace(Control::Paused);
        tracing::warn!(drain = %config.id, tenant = %config.tenant, app = %config.app, %reason, "drain paused");
    }
}

/// A transport error in a few words (no URL: it is the owner's already).
fn describe(error: &reqwest::Error) -> String {
    use std::error::Error;
    if let Some(problem) = super::destination::certificate_problem(error) {
        return problem;
    }
    let mut text = if error.is_timeout() {
        "the delivery timed out".to_owned()
    } else if error.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the delivery failed".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After`: seconds, or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    let left = when.duration_since(jiff::Timestamp::now());
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO))
}

/// The delay before attempt `failures + 1`: the backoff doubled per
/// failure up to its most, a random part of it (between half and all),
/// and never shorter than the receiver's `Retry-After` (itself at most
/// `retry_after_max`).
fn backoff(
    settings: &super::DrainSettings,
    failures: u32,
    retry_after: Option<Duration>,
) -> Duration {
    let doubled = settings
        .backoff
        .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
        .min(settings.backoff_max);
    let half = doubled / 2;
    let jittered = half + half.mul_f64(rand::rng().random::<f64>());
    match retry_after {
        Some(asked) => jittered.max(asked.min(settings.retry_after_max)),
        None => jittered,
    }
}

/// Runs `work` off the async threads; `None` if it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_honours_retry_after() {
        let settings = super::super::DrainSettings::default();
        for failures in 1..30 {
            let delay = backoff(&settings, failures, None);
            let full = settings
                .backoff
                .saturating_mul(1 << (failures - 1).min(20))
                .min(settings.backoff_max);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
        let asked = Duration::from_secs(7);
        assert!(backoff(&settings, 1, Some(asked)) >= asked);
        let huge = Duration::from_secs(86_400);
        assert_eq!(backoff(&settings, 1, Some(huge)), settings.retry_after_max);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
