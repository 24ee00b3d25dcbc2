//! Filling a gap ([`super::window`]) from a live peer: every node is a full
//! replica (it materializes every partition), so the records a node missed
//! when the stream dropped messages it had not read are in the store of any
//! node that read them.
//!
//! Serving: every cluster node answers `GET` [`ROUTE`] (`api::internal`)
//! with one page of a partition's records, every tenant's, in tenant then
//! time order, each with its identity (tenant, app, runner, boot, seq) and
//! everything stored of it ([`page`]). Only a node's credential opens it
//! ([`node_key`]): derived from the seal key every node of the cluster
//! shares, never a tenant's or an admin's token; a server without `--nats`
//! does not have the route at all.
//!
//! Repairing ([`Local::spawn_repairer`]): when a gap is found (and every
//! [`RETRY_EVERY`] while one is left) the node picks, for each partition
//! with a gap, a live peer (its heartbeat's `url`) that shows no gap of
//! that partition itself and whose consumer of it has read past the gap's
//! last sequence (so its store holds what the stream dropped), and reads
//! the whole partition from it: from the first record it holds, not from a
//! time near the gap, because a runner's new boot (an agent's spool sent
//! after days) may carry records of any age its app's retention keeps, and
//! a time bound would miss them. Each page is stored through the runner
//! table's repair path ([`Runners::append_repaired`]): deduplication by
//! `(tenant, app, runner, boot, seq)` keeps one copy of each record this
//! node already held, and the out-of-order window (which would refuse
//! records older than the stream's newest here, all of them) is not
//! applied. Only once every page is stored is the gap marked repaired
//! (kept in `cluster-gaps.json` with when and from whom, shown by
//! `GET /v1/cluster`, counted); a peer that fails midway (or whose store
//! skipped a damaged block) is left for the next, and with none left the
//! gap stays unrepaired, counted, and is tried again later.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use tailwater_model::wire::{
    ClusterGap, IngestBatch, IngestRecord, RepairBatch, RepairCursor, RepairPage,
};
use tailwater_model::{Cursor, Direction, FieldsJson, Filter, Query};
use tailwater_store::{Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::local::{Arrival, Local};
use super::{members, message, STREAM};
use crate::access::registry::Registry;

/// Where a node serves its records of a partition to a peer's repair.
pub const ROUTE: &str = "/internal/v1/cluster/records";
/// Records of the serving node's store one page visits (of every
/// partition: those of others are passed over). Bounds the time a page
/// holds the store's read lock and what it builds in memory.
pub const PAGE_RECORDS: usize = 2_000;
/// Bytes of message and fields text a page carries at most (about: the
/// record that passes it ends the page): 2 000 records of 2 KiB, while a
/// page of long lines stays a few MiB.
pub const PAGE_BYTES: usize = 4 * 1024 * 1024;
/// The most a repairing node reads of one page's body: [`PAGE_BYTES`] and
/// the JSON around [`PAGE_RECORDS`] records, escapes included, with room.
pub const MAX_PAGE_BODY: usize = 32 * 1024 * 1024;
/// How often gaps left unrepaired (no peer could serve them) are tried
/// again.
pub const RETRY_EVERY: Duration = Duration::from_secs(10);

/// The label a node credential is derived for: not a tenant name any
/// registry takes (names are letters, digits, '-' and '_'), so its tag is
/// no tenant's.
pub const NODE_LABEL: &str = "\0tailwater cluster node credential";

/// The credential of a node of this cluster: an AES block of a fixed label
/// under the seal key every node shares (`cluster::registry`), hex. No
/// tenant's or admin's token is one (tokens are random and hashed), and a
/// tenant's sealed ids are blocks of its own tag, never this label's.
pub fn node_key(registry: &Registry) -> String {
    node_key_of(&registry.seal(NODE_LABEL))
}

/// [`node_key`] from the seal of [`NODE_LABEL`].
pub fn node_key_of(seal: &tailwater_model::TenantSeal) -> String {
    hex::encode(seal.seal(u64::MAX))
}

/// Whether `offered` is this cluster's node credential, compared in
/// constant time.
pub fn is_node_key(registry: &Registry, offered: &str) -> bool {
    use subtle::ConstantTimeEq;
    let key = node_key(registry);
    offered.len() == key.len() && bool::from(key.as_bytes().ct_eq(offered.as_bytes()))
}

/// One page of `partition`'s records in `store` (of `partitions`), from
/// `from` (none: the first tenant's first record).
pub fn page(
    store: &Store,
    partitions: u32,
    partition: u32,
    from: Option<RepairCursor>,
) -> Result<RepairPage, StoreError> {
    let mut tenants: Vec<String> = store.stats().into_iter().map(|app| app.tenant).collect();
    tenants.dedup();
    let (tenant, after) = match from {
        Some(cursor) => {
            let after = match (cursor.after_ts_ns, cursor.after_position) {
                (Some(ts_ns), Some(position)) => Some(Cursor { ts_ns, position }),
                _ => None,
            };
            (cursor.tenant, after)
        }
        None => (String::new(), None),
    };
    // The tenant asked for, or the first after it (it may have no records
    // left); none: the page is the last.
    let Some(found) = tenants.iter().find(|name| **name >= tenant).cloned() else {
        return Ok(RepairPage::default());
    };
    // A position is the asked tenant's: another starts at its first record.
    let after = after.filter(|_| found == tenant);
    let tenant = found;
    let next_tenant = tenants.iter().find(|name| **name > tenant).cloned();
    let query = Query {
        filter: Filter::default(),
        direction: Direction::Forward,
        limit: PAGE_RECORDS,
        cursor: after,
    };
    let mut batches: Vec<RepairBatch> = Vec::new();
    // By stream (its labels' address: shared by its records while the
    // store's read lock is held): its partition and its batch, if any.
    let mut streams: HashMap<usize, (u32, Option<usize>)> = HashMap::new();
    let mut bytes = 0usize;
    let mut full_after: Option<Cursor> = None;
    let scanned = store.scan(&tenant, &query, |record| {
        if full_after.is_some() {
            return Ok(());
        }
        let labels = record.labels;
        let key = std::ptr::from_ref(labels) as usize;
        let (of, batch) = streams.entry(key).or_insert_with(|| {
            let of = message::partition_of(&tenant, &labels.app, &labels.runner, partitions);
            (of, None)
        });
        if *of == partition {
            let fields = match record.fields_json {
                b"" => FieldsJson::new(),
                json => serde_json::from_slice(json)
                    .map_err(|error| format!("block fields do not decode: {error}"))?,
            };
            let index = *batch.get_or_insert_with(|| {
                batches.push(RepairBatch {
                    tenant: tenant.clone(),
                    batch: IngestBatch {
                        app: labels.app.clone(),
                        version: labels.version.clone(),
                        runner: labels.runner.clone(),
                        boot: labels.boot.clone(),
                        source: labels.source,
                        records: Vec::new(),
                    },
                });
                batches.len() - 1
            });
            bytes += record.message.len() + record.fields_json.len() + 64;
            batches[index].batch.records.push(IngestRecord {
                seq: record.seq,
                ts: tailwater_model::time::timestamp_from_ns(record.ts_ns),
                stream: record.stream,
                level: record.level,
                request_id: record.request_id.map(str::to_owned),
                message: record.message.to_owned(),
                fields,
                invalid_utf8: record.invalid_utf8,
            });
        }
        if bytes >= PAGE_BYTES {
            full_after = Some(record.cursor());
        }
        Ok(())
    })?;
    let resume = |tenant: String, after: Cursor| RepairCursor {
        tenant,
        after_ts_ns: Some(after.ts_ns),
        after_position: Some(after.position),
    };
    let next = match full_after.or(scanned.next) {
        Some(after) => Some(resume(tenant, after)),
        None => next_tenant.map(|tenant| RepairCursor {
            tenant,
            after_ts_ns: None,
            after_position: None,
        }),
    };
    Ok(RepairPage {
        node: String::new(),
        batches,
        next,
        skipped_blocks: scanned.skipped.len() as u64,
    })
}

/// A page as a peer sent it; anything else is an error.
pub fn decode_page(body: &[u8]) -> Result<RepairPage, String> {
    decode_bounded(body)
}

/// A peer's page of records of any kind: at most [`MAX_PAGE_BODY`] bytes
/// of JSON.
pub(super) fn decode_bounded<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    if body.len() > MAX_PAGE_BODY {
        return Err(format!(
            "a page of {} bytes is over {MAX_PAGE_BODY}",
            body.len()
        ));
    }
    serde_json::from_slice(body).map_err(|error| format!("not a page of records: {error}"))
}

impl Local {
    /// Repairs this node's gaps until `stopping` turns true.
    pub fn spawn_repairer(self: Arc<Self>, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            // Made at start (`peer::client`): timeouts, `--nats-peer-ca`.
            let client = self.cluster.peers.clone();
            loop {
                let repairing = self.repair_all(&client);
                tokio::select! {
                    () = repairing => {}
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                }
                tokio::select! {
                    () = self.gaps.found.notified() => {}
                    () = tokio::time::sleep(RETRY_EVERY) => {}
                    _ = stopping.wait_for(|stopping| *stopping) => return,
                }
            }
        })
    }

    async fn repair_all(self: &Arc<Self>, client: &reqwest::Client) {
        let mut by_partition: BTreeMap<u32, Vec<ClusterGap>> = BTreeMap::new();
        for gap in self.gaps.unrepaired() {
            by_partition.entry(gap.partition).or_default().push(gap);
        }
        for (partition, gaps) in by_partition {
            match self.repair(client, partition, &gaps).await {
                Ok(()) => {}
                Err(error) => {
                    self.stats
                        .partition(partition)
                        .repair_failures
                        .fetch_add(1, Relaxed);
                    tracing::warn!(
                        partition,
                        error = %format!("{error:#}"),
                        "cannot repair this node's gap in a partition now; trying again in {RETRY_EVERY:?} (docs/cluster.md: a node back after the stream's replay window)"
                    );
                }
            }
        }
    }

    /// Fills `gaps` (all of `partition`) from the first live peer that
    /// holds them and serves the whole partition.
    async fn repair(
        self: &Arc<Self>,
        client: &reqwest::Client,
        partition: u32,
        gaps: &[ClusterGap],
    ) -> anyhow::Result<()> {
        let through = gaps.iter().map(|gap| gap.to_sequence).max().unwrap_or(0);
        let bucket = members::open(&self.cluster).await?;
        let live = members::live_in(&bucket).await?;
        let stream = self
            .cluster
            .jetstream
            .get_stream_no_info(STREAM)
            .await
            .map_err(|error| anyhow::anyhow!("cannot open the stream {STREAM}: {error}"))?;
        let mut tried = Vec::new();
        for (peer, _) in live {
            if peer.node == self.cluster.config.node {
                continue;
            }
            let peer_gap = peer
                .gaps
                .iter()
                .any(|gap| gap.partition == partition && gap.repaired_ms.is_none());
            if peer_gap {
                tried.push(format!("{} has a gap of its own there", peer.node));
                continue;
            }
            // Its consumer has stored everything up to the gap's end
            // (acknowledged only once durable).
            let consumer = super::materialize::consumer_name(&peer.node);
            let read_through = match stream.consumer_info(&consumer).await {
                Ok(info) if info.num_ack_pending > 0 => info.ack_floor.stream_sequence,
                Ok(info) => info.delivered.stream_sequence,
                Err(error) if error.kind() == ConsumerInfoErrorKind::NotFound => 0,
                Err(error) => {
                    tried.push(format!("{}: cannot read its consumer: {error}", peer.node));
                    continue;
                }
            };
            if read_through < through {
                tried.push(format!(
                    "{} has read the partition through sequence {read_through} only",
                    peer.node
                ));
                continue;
            }
            let started_ms = jiff::Timestamp::now().as_millisecond();
            let peer_at = Peer {
                node: &peer.node,
                client,
                url: &peer.url,
                key: &node_key(&self.registry),
            };
            let partitions = self.cluster.config.partitions;
            match copy(&peer_at, partitions, partition, |batch| {
                self.store_repaired(batch)
            })
            .await
            {
                Ok(records) => {
                    let stats = self.stats.partition(partition);
                    stats
                        .window_gaps_repaired
                        .fetch_add(gaps.len() as u64, Relaxed);
                    stats.repaired_records.fetch_add(records, Relaxed);
                    let now_ms = jiff::Timestamp::now().as_millisecond();
                    self.gaps.mark_repaired(gaps, &peer.node, now_ms);
                    tracing::info!(
                        partition,
                        peer = peer.node,
                        records,
                        took_ms = now_ms - started_ms,
                        "repaired this node's gap in a partition from a peer's store"
                    );
                    return Ok(());
                }
                Err(error) => tried.push(format!("{}: {error:#}", peer.node)),
            }
        }
        if tried.is_empty() {
            anyhow::bail!(
                "no other node is live to repair from: start one that holds the partition, or rebuild this node (docs/cluster.md)"
            );
        }
        anyhow::bail!("no live peer could serve it: {}", tried.join("; "))
    }

    /// Stores one batch of a peer's, as materializing one would; the
    /// records stored.
    async fn store_repaired(self: &Arc<Self>, repaired: RepairBatch) -> anyhow::Result<usize> {
        let RepairBatch { tenant, batch } = repaired;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let response = this.store(&tenant, batch, Arrival::Repair)?;
            anyhow::Ok(response.accepted)
        })
        .await
        .context("storing repaired records panicked")?
    }
}

/// A peer to copy from.
pub(super) struct Peer<'a> {
    /// Its name, which its pages must say.
    pub node: &'a str,
    pub client: &'a reqwest::Client,
    pub url: &'a str,
    /// This cluster's node credential.
    pub key: &'a str,
}

/// Reads every page of `partition` (of `partitions`) from `peer`, handing
/// each batch to `store`; the records it stored. An error as soon as a
/// page cannot be had or is not one of the whole partition's: what was
/// stored before stays (stored once, as any repair's), and the caller does
/// not take the partition for repaired.
async fn copy<F, Fut>(
    peer: &Peer<'_>,
    partitions: u32,
    partition: u32,
    mut store: F,
) -> anyhow::Result<u64>
where
    F: FnMut(RepairBatch) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>>,
{
    let mut cursor: Option<RepairCursor> = None;
    let mut stored = 0u64;
    loop {
        let mut params = vec![("partition", partition.to_string())];
        if let Some(cursor) = &cursor {
            params.push(("tenant", cursor.tenant.clone()));
            if let (Some(ts_ns), Some(position)) = (cursor.after_ts_ns, cursor.after_position) {
                params.push(("after_ts_ns", ts_ns.to_string()));
                params.push(("after_position", position.to_string()));
            }
        }
        let mut response = peer
            .client
            .get(format!("{}{ROUTE}", peer.url.trim_end_matches('/')))
            .query(&params)
            .bearer_auth(peer.key)
            .send()
            .await
            .map_err(super::peer::call_failed)?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.context("reading a page")? {
            anyhow::ensure!(
                body.len() + chunk.len() <= MAX_PAGE_BODY,
                "it sent a page over {MAX_PAGE_BODY} bytes"
            );
            body.extend_from_slice(&chunk);
        }
        anyhow::ensure!(
            status.is_success(),
            "it answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        );
        let page = decode_page(&body).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            page.node == peer.node,
            "{} answered as node {:?}: its heartbeat's URL reaches another node; give each node a --nats-advertise URL that reaches it",
            peer.url,
            page.node
        );
        anyhow::ensure!(
            page.skipped_blocks == 0,
            "its store skipped {} damaged blocks: it does not hold the whole partition",
            page.skipped_blocks
        );
        for batch in page.batches {
            // A peer sends its own partition's records only: one that sent
            // others' would be storing them here unasked.
            let of = message::partition_of(
                &batch.tenant,
                &batch.batch.app,
                &batch.batch.runner,
                partitions,
            );
            anyhow::ensure!(
                of == partition,
                "it sent records of partition {of}, not {partition}"
            );
            stored += store(batch).await? as u64;
        }
        match page.next {
            Some(next) => {
                anyhow::ensure!(
                    cursor.as_ref() != Some(&next),
                    "it sent the same page again"
                );
                cursor = Some(next);
            }
            None => return Ok(stored),
        }
    }
}

#[cfg(test)]
#[path = "repair_tests.rs"]
pub(super) mod tests;
