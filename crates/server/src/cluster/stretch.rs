//! A stretch of the stream the stream dropped before this node read it,
//! filled in order, with its ids, from a peer that stored it.
//!
//! A node reads the stream in order ([`super::materialize`]); when it
//! finds that the stream dropped sequences `from..=to` before it read them
//! (past the replay window), it stops there and asks the live peers for
//! the records of that stretch, each with the id the stream gave it
//! (`GET` [`ROUTE`], node credential only, pages in id order). A peer
//! answers only for a stretch it stored whole at the stream's ids
//! ([`super::applied`]); it reads only the stretch's ids, every tenant's.
//! Stored in order before anything after the stretch, the records have
//! the same ids here as on every node, so a live tail or a cursor still
//! moves between nodes. The gap is kept as found and repaired (from whom),
//! as any.
//!
//! When every live peer says it does not hold the stretch, or none is
//! reachable for `--nats-fill-wait` ([`DEFAULT_FILL_WAIT`]), the node
//! goes on reading, and the gap is left to [`super::repair`] (a
//! partition's records copied whole, given this node's own ids): the
//! node's records of that stretch are then no copy of the stream's ids,
//! and it serves no peer that stretch. Peers are called at their
//! heartbeat's URL with the client of [`super::peer`].

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tailwater_model::wire::{IngestBatch, IngestRecord, StreamPage, StreamRun};
use tailwater_model::{FieldsJson, Filter, LogRecord};
use tailwater_store::Store;
use tokio::sync::watch;

use super::local::{Arrival, Local};
use super::materialize::position;
use super::pull::stopped;
use super::repair::{self, Peer, MAX_PAGE_BODY, PAGE_BYTES, PAGE_RECORDS};
use super::{members, message};

/// Where a node serves the records of a stretch of the stream.
pub const ROUTE: &str = "/internal/v1/cluster/stream-records";
/// How long a node waits at a stretch the stream dropped for a live peer
/// that can be asked, before it goes on and leaves the gap to the repair
/// of partitions, unless configured otherwise (`--nats-fill-wait`).
pub const DEFAULT_FILL_WAIT: Duration = Duration::from_secs(30);
/// The fewest records a page reads of each tenant of the serving store.
const TENANT_READ_MIN: usize = 64;
/// How often the live peers are asked again meanwhile.
const ASK_EVERY: Duration = Duration::from_secs(2);

/// Why a stretch could not be had from a peer.
#[derive(Debug)]
enum Unfilled {
    /// The peer does not hold it at the stream's ids (it says so): asking
    /// again will not help.
    NotHeld(String),
    /// Anything else: it may work later.
    Failed(anyhow::Error),
}

/// One page of the records of sequences `from..=to` in `store`, after id
/// `after` (none: from the stretch's first), every tenant's, in id order.
pub fn page(store: &Store, from: u64, to: u64, after: Option<u64>) -> StreamPage {
    let end = position(to.saturating_add(1));
    let after = after.unwrap_or(0).max(position(from).saturating_sub(1));
    let mut tenants: Vec<String> = store.stats().into_iter().map(|app| app.tenant).collect();
    tenants.dedup();
    // What a page builds stays near a page whatever the tenants: each is
    // read for its share (at least a few dozen records).
    let share = (PAGE_RECORDS / tenants.len().max(1)).clamp(TENANT_READ_MIN, PAGE_RECORDS);
    let mut found: Vec<(String, LogRecord)> = Vec::new();
    let mut skipped_blocks = 0u64;
    // A tenant whose read was cut by its share may hold more past its last
    // record: the page ends there.
    let mut cut_at: Option<u64> = None;
    for tenant in tenants {
        let (records, skipped) =
            store.read_after_reporting(&tenant, &Filter::default(), after, share);
        skipped_blocks += skipped.len() as u64;
        let last = records.last().map_or(u64::MAX, |record| record.position);
        if records.len() == share && last < end {
            cut_at = Some(cut_at.map_or(last, |cut| cut.min(last)));
        }
        found.extend(
            records
                .into_iter()
                .take_while(|record| record.position < end)
                .map(|record| (tenant.clone(), record)),
        );
    }
    found.sort_by_key(|(_, record)| record.position);
    let mut runs: Vec<StreamRun> = Vec::new();
    let (mut taken, mut bytes, mut last) = (0usize, 0usize, None);
    let mut full = false;
    for (tenant, record) in found {
        if cut_at.is_some_and(|cut| record.position > cut) {
            break;
        }
        if taken == PAGE_RECORDS || bytes >= PAGE_BYTES {
            full = true;
            break;
        }
        taken += 1;
        let fields = FieldsJson::from_map(&record.fields);
        bytes += record.message.len() + fields.as_str().len() + 64;
        let position = record.position;
        let follows = runs.last().is_some_and(|run: &StreamRun| {
            let batch = &run.batch;
            run.tenant == tenant
                && run.first + batch.records.len() as u64 == position
                && batch.app == record.app
                && batch.version == record.version
                && batch.runner == record.runner
                && batch.boot == record.boot
                && batch.source == record.source
        });
        if !follows {
            runs.push(StreamRun {
                tenant,
                first: position,
                batch: IngestBatch {
                    app: record.app.clone(),
                    version: record.version.clone(),
                    runner: record.runner.clone(),
                    boot: record.boot.clone(),
                    source: record.source,
                    records: Vec::new(),
                },
            });
        }
        let run = runs.last_mut().expect("pushed above");
        run.batch.records.push(IngestRecord {
            seq: record.seq,
            ts: record.ts,
            stream: record.stream,
            level: record.level,
            request_id: record.request_id,
            message: record.message,
            fields,
            invalid_utf8: record.invalid_utf8,
        });
        last = Some(position);
    }
    let more = full || cut_at.is_some();
    StreamPage {
        node: String::new(),
        runs,
        next_after: if more { last.or(Some(after)) } else { None },
        skipped_blocks,
    }
}

/// A page as a peer sent it; anything else is an error.
pub fn decode_page(body: &[u8]) -> Result<StreamPage, String> {
    repair::decode_bounded(body)
}

/// Checks a page of sequences `from..=to` asked for after `after`: its
/// runs in rising ids, inside the stretch and past `after`, none empty, and
/// a next page that moves on. The id after which the page's records end.
pub fn check_page(page: &StreamPage, from: u64, to: u64, after: u64) -> Result<u64, String> {
    let end = position(to.saturating_add(1));
    let mut past = after.max(position(from).saturating_sub(1));
    for run in &page.runs {
        let count = run.batch.records.len() as u64;
        if count == 0 {
            return Err("it sent an empty run".into());
        }
        let last = run
            .first
            .checked_add(count - 1)
            .ok_or("it sent ids past the largest")?;
        if run.first <= past || last >= end {
            return Err(format!(
                "it sent ids {}..={last}, not in rising order within the stretch",
                run.first
            ));
        }
        past = last;
    }
    if let Some(next) = page.next_after {
        if next <= after || next < past {
            return Err("its next page does not move on".into());
        }
    }
    Ok(past)
}

/// Reads every page of sequences `from..=to` from `peer`, handing each
/// page's runs to `store`; the records it stored. What a failure midway
/// stored stays (its ids are the stream's).
async fn copy<F, Fut>(peer: &Peer<'_>, from: u64, to: u64, mut store: F) -> Result<u64, Unfilled>
where
    F: FnMut(Vec<StreamRun>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let failed = |error: anyhow::Error| Unfilled::Failed(error);
    let mut after = position(from).saturating_sub(1);
    let mut stored = 0u64;
    loop {
        let params = [
            ("from_sequence", from.to_string()),
            ("to_sequence", to.to_string()),
            ("after", after.to_string()),
        ];
        let mut response = peer
            .client
            .get(format!("{}{ROUTE}", peer.url.trim_end_matches('/')))
            .query(&params)
            .bearer_auth(peer.key)
            .send()
            .await
            .map_err(|error| failed(super::peer::call_failed(error)))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("reading a page")
            .map_err(failed)?
        {
            if body.len() + chunk.len() > MAX_PAGE_BODY {
                return Err(failed(anyhow::anyhow!(
                    "it sent a page over {MAX_PAGE_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        let text = || String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
        if status == reqwest::StatusCode::CONFLICT {
            return Err(Unfilled::NotHeld(text()));
        }
        if !status.is_success() {
            return Err(failed(anyhow::anyhow!("it answered {status}: {}", text())));
        }
        let page = decode_page(&body).map_err(|error| failed(anyhow::Error::msg(error)))?;
        if page.node != peer.node {
            return Err(failed(anyhow::anyhow!(
                "{} answered as node {:?}: its heartbeat's URL reaches another node; give each node a --nats-advertise URL that reaches it",
                peer.url,
                page.node
            )));
        }
        if page.skipped_blocks > 0 {
            return Err(Unfilled::NotHeld(format!(
                "its store skipped {} damaged blocks",
                page.skipped_blocks
            )));
        }
        check_page(&page, from, to, after).map_err(|error| failed(anyhow::Error::msg(error)))?;
        let next = page.next_after;
        stored += store(page.runs).await.map_err(failed)?;
        match next {
            Some(next) => after = next,
            None => return Ok(stored),
        }
    }
}

impl Local {
    /// Fills sequences `from..=to` (dropped by the stream before this node
    /// read them) from a live peer, in order, before anything after them
    /// is stored; records the gap, repaired or left to the repair of
    /// partitions. False when the node stops first.
    pub(super) async fn fill(
        self: &Arc<Self>,
        from: u64,
        to: u64,
        stopping: &mut watch::Receiver<bool>,
    ) -> bool {
        let partitions = self.cluster.config.partitions;
        let fill_wait = self.cluster.config.fill_wait;
        let waited = tokio::time::Instant::now();
        let why = loop {
            match self.fill_from_a_peer(from, to).await {
                Ok((peer, records)) => {
                    let this = self.clone();
                    let recorded = tokio::task::spawn_blocking(move || {
                        this.gaps
                            .record_filled(from, to, partitions, &this.stats, &peer);
                        this.applied.stored_through(to);
                        tracing::info!(from_sequence = from, to_sequence = to, peer, records, "filled a stretch the stream dropped before this node read it from a peer, in order, with the stream's ids");
                    })
                    .await;
                    if let Err(error) = recorded {
                        tracing::error!(%error, "noting a filled stretch panicked");
                    }
                    return true;
                }
                Err(Unfilled::NotHeld(why)) => break why,
                Err(Unfilled::Failed(error)) if waited.elapsed() >= fill_wait => {
                    break format!("{error:#}")
                }
                Err(Unfilled::Failed(error)) => {
                    tracing::debug!(error = %format!("{error:#}"), "cannot fill a stretch of the stream yet; asking again");
                    tokio::select! {
                        _ = tokio::time::sleep(ASK_EVERY) => {}
                        _ = stopped(stopping) => return false,
                    }
                }
            }
        };
        tracing::warn!(
            from_sequence = from,
            to_sequence = to,
            why,
            "no live peer can give this stretch of the stream in order with its ids; going on, and repairing the gap from a peer's partitions instead (its records get this node's own ids)"
        );
        let this = self.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            this.applied.inexact_through(to);
            this.gaps.record_missed(from, to, partitions, &this.stats);
        })
        .await;
        if let Err(error) = recorded {
            tracing::error!(%error, "noting a gap panicked");
        }
        true
    }

    /// The first live peer that gives the whole stretch; its name and the
    /// records stored here.
    async fn fill_from_a_peer(
        self: &Arc<Self>,
        from: u64,
        to: u64,
    ) -> Result<(String, u64), Unfilled> {
        let failed = |error: anyhow::Error| Unfilled::Failed(error);
        let bucket = members::open(&self.cluster).await.map_err(failed)?;
        let live = members::live_in(&bucket).await.map_err(failed)?;
        // Made at start (`peer::client`): timeouts, `--nats-peer-ca`.
        let client = &self.cluster.peers;
        let key = repair::node_key(&self.registry);
        let (mut not_held, mut failures) = (Vec::new(), Vec::new());
        for (peer, _) in live {
            if peer.node == self.cluster.config.node {
                continue;
            }
            let at = Peer {
                node: &peer.node,
                client,
                url: &peer.url,
                key: &key,
            };
            let stored = copy(&at, from, to, |runs| {
                let this = self.clone();
                async move {
                    tokio::task::spawn_blocking(move || this.store_runs(runs))
                        .await
                        .context("storing a stretch's records panicked")?
                }
            })
            .await;
            match stored {
                Ok(records) => return Ok((peer.node, records)),
                Err(Unfilled::NotHeld(why)) => not_held.push(format!("{}: {why}", peer.node)),
                Err(Unfilled::Failed(error)) => failures.push(format!("{}: {error:#}", peer.node)),
            }
        }
        match (failures.is_empty(), not_held.is_empty()) {
            (true, true) => Err(failed(anyhow::anyhow!("no other node is live"))),
            (true, false) => Err(Unfilled::NotHeld(not_held.join("; "))),
            _ => Err(failed(anyhow::anyhow!(
                "{}",
                failures
                    .into_iter()
                    .chain(not_held)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }

    /// Stores a page's runs at their ids, then syncs the store; the
    /// records stored.
    fn store_runs(&self, runs: Vec<StreamRun>) -> anyhow::Result<u64> {
        let partitions = self.cluster.config.partitions;
        let mut stored = 0u64;
        for StreamRun {
            tenant,
            first,
            batch,
        } in runs
        {
            let partition = message::partition_of(&tenant, &batch.app, &batch.runner, partitions);
            // Stored on the peer, so within its app's retention there.
            let response = self.store(
                &tenant,
                batch,
                Arrival::Stream {
                    retention: Duration::MAX,
                    first,
                },
            )?;
            self.stats
                .partition(partition)
                .repaired_records
                .fetch_add(response.accepted as u64, Relaxed);
            stored += response.accepted as u64;
        }
        self.runners.store().sync()?;
        Ok(stored)
    }
}

#[cfg(test)]
#[path = "stretch_tests.rs"]
mod tests;
