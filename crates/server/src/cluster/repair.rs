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
//! Repairing ([`Repairer`]): when a gap is found (and every
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

use super::stats::Stats;
use super::window::Gaps;
use super::{members, message, Cluster, STREAM};
use crate::access::ownership::Settling;
use crate::access::registry::Registry;
use crate::runners::Runners;

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
/// How long a repairing node waits to connect to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one page may take, request to last byte.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);
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
        batches,
        next,
        skipped_blocks: scanned.skipped.len() as u64,
    })
}

/// A page as a peer sent it; anything else is an error.
pub fn decode_page(body: &[u8]) -> Result<RepairPage, String> {
    if body.len() > MAX_PAGE_BODY {
        return Err(format!(
            "a page of {} bytes is over {MAX_PAGE_BODY}",
            body.len()
        ));
    }
    serde_json::from_slice(body).map_err(|error| format!("not a page of records: {error}"))
}

/// What repairs this node's gaps.
pub struct Repairer {
    pub cluster: Cluster,
    pub registry: Arc<Registry>,
    pub runners: Arc<Runners>,
    pub settling: Arc<Settling>,
    pub stats: Arc<Stats>,
    pub gaps: Arc<Gaps>,
}

impl Repairer {
    /// Repairs until `stopping` turns true.
    pub fn spawn(self: Arc<Self>, mut stopping: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            let client = match reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(PAGE_TIMEOUT)
                .build()
            {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, "cannot make the HTTP client that repairs gaps from peers; gaps stay unrepaired");
                    return;
                }
            };
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

    async fn repair_all(&self, client: &reqwest::Client) {
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
        &self,
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
            // Its consumer has stored everything of the partition up to
            // the gap's end (acknowledged only once durable).
            let consumer = super::status::consumer_name(&peer.node, partition);
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
                client,
                url: &peer.url,
                key: &node_key(&self.registry),
            };
            let partitions = self.cluster.config.partitions;
            match copy(&peer_at, partitions, partition, |batch| self.store(batch)).await {
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
    async fn store(&self, repaired: RepairBatch) -> anyhow::Result<usize> {
        let RepairBatch { tenant, batch } = repaired;
        if let Err(error) = self.registry.ensure_app(&tenant, &batch.app) {
            tracing::warn!(tenant, app = %batch.app, ?error, "this node's registry does not take an app a peer holds; its records are repaired all the same");
        }
        let runners = self.runners.clone();
        let settling = self.settling.clone();
        tokio::task::spawn_blocking(move || {
            let response = runners.append_repaired(&tenant, batch)?;
            if response.accepted > 0 {
                settling.stamp(runners.store().last_id());
            }
            anyhow::Ok(response.accepted)
        })
        .await
        .context("storing repaired records panicked")?
    }
}

/// A peer to copy from.
struct Peer<'a> {
    client: &'a reqwest::Client,
    url: &'a str,
    /// This cluster's node credential.
    key: &'a str,
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
            .context("cannot ask it for records")?;
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
mod tests {
    use std::collections::BTreeMap;

    use tailwater_model::wire::{IngestBatch, IngestRecord};
    use tailwater_model::{Level, Stream};
    use tailwater_store::{Store, StoreOptions};

    use super::*;

    const PARTITIONS: u32 = 2;

    fn batch(runner: &str, seqs: std::ops::Range<u64>, message_bytes: usize) -> IngestBatch {
        IngestBatch {
            app: "api".into(),
            version: "v1".into(),
            runner: runner.into(),
            boot: "b".into(),
            source: Default::default(),
            records: seqs
                .map(|seq| IngestRecord {
                    seq,
                    ts: jiff::Timestamp::now(),
                    stream: Stream::Stdout,
                    level: Level::Info,
                    request_id: None,
                    message: format!("{runner} {seq} {}", "x".repeat(message_bytes)),
                    fields: Default::default(),
                    invalid_utf8: false,
                })
                .collect(),
        }
    }

    /// Every page of `partition` from `from`: the records' identities,
    /// counted, and the pages read.
    fn read_all(
        store: &Store,
        partition: u32,
        mut from: Option<RepairCursor>,
    ) -> (BTreeMap<(String, String, u64), usize>, usize) {
        let mut seen = BTreeMap::new();
        let mut pages = 0;
        loop {
            let page = page(store, PARTITIONS, partition, from.clone()).unwrap();
            pages += 1;
            assert!(pages < 1_000, "the pages never end");
            assert_eq!(page.skipped_blocks, 0);
            for repaired in page.batches {
                let batch = repaired.batch;
                assert_eq!(
                    message::partition_of(&repaired.tenant, &batch.app, &batch.runner, PARTITIONS),
                    partition
                );
                for record in batch.records {
                    let identity = (repaired.tenant.clone(), batch.runner.clone(), record.seq);
                    *seen.entry(identity).or_insert(0) += 1;
                }
            }
            match page.next {
                Some(next) => from = Some(next),
                None => return (seen, pages),
            }
        }
    }

    #[test]
    fn pages_hold_every_tenants_records_of_the_partition_once_within_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions {
            background: false,
            ..StoreOptions::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let runners = ["r0", "r1", "r2", "r3", "r4", "r5"];
        // Many small records (more than a page visits) and a few long ones
        // (more bytes than a page carries), in two tenants.
        for tenant in ["acme", "zeta"] {
            for runner in runners {
                store.append(tenant, batch(runner, 0..900, 10)).unwrap();
            }
            store
                .append(tenant, batch("long", 0..12, 1024 * 1024))
                .unwrap();
        }
        store.flush().unwrap();
        for partition in 0..PARTITIONS {
            let (seen, pages) = read_all(&store, partition, None);
            let mut wanted = BTreeMap::new();
            for tenant in ["acme", "zeta"] {
                for (runner, count) in runners.iter().map(|r| (*r, 900)).chain([("long", 12)]) {
                    if message::partition_of(tenant, "api", runner, PARTITIONS) == partition {
                        for seq in 0..count {
                            wanted.insert((tenant.to_owned(), runner.to_owned(), seq), 1);
                        }
                    }
                }
            }
            assert_eq!(seen, wanted, "partition {partition}");
            // 2 × (5 400 + 12) records visited, PAGE_RECORDS a page.
            assert!(pages >= 2 * 5_412 / PAGE_RECORDS, "{pages} pages");
        }
        let long = message::partition_of("acme", "api", "long", PARTITIONS);
        let first = page(&store, PARTITIONS, long, None).unwrap();
        let carried: usize = first
            .batches
            .iter()
            .flat_map(|repaired| &repaired.batch.records)
            .map(|record| record.message.len())
            .sum();
        assert!(carried < PAGE_BYTES + 2 * 1024 * 1024, "{carried} bytes");

        // A position in a tenant that is gone is not applied to the next
        // one: it is read from its first record.
        let gone = RepairCursor {
            tenant: "mid".into(),
            after_ts_ns: Some(i64::MAX),
            after_position: Some(u64::MAX),
        };
        let zeta_long = message::partition_of("zeta", "api", "long", PARTITIONS);
        let (from_gone, _) = read_all(&store, zeta_long, Some(gone));
        assert!(from_gone.keys().all(|(tenant, _, _)| tenant == "zeta"));
        assert!(from_gone.contains_key(&("zeta".to_owned(), "long".to_owned(), 0)));
    }

    #[test]
    fn a_page_over_its_bound_or_not_a_page_is_refused() {
        assert!(decode_page(&vec![b' '; MAX_PAGE_BODY + 1]).is_err());
        assert!(decode_page(b"{\"batches\": 7}").is_err());
        assert_eq!(
            decode_page(b"{\"batches\": []}").unwrap(),
            RepairPage::default()
        );
    }

    /// A peer on loopback answering the pages of `script` in turn (status
    /// and body; past its end, 500), and how many it was asked.
    async fn scripted(script: Vec<(u16, String)>) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use axum::http::StatusCode;
        let asked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().route(
            ROUTE,
            axum::routing::get(move |headers: axum::http::HeaderMap| {
                let counter = counter.clone();
                let script = script.clone();
                async move {
                    assert_eq!(headers["authorization"], "Bearer k");
                    let n = counter.fetch_add(1, Relaxed);
                    let (status, body) = script.get(n).cloned().unwrap_or((500, "{}".into()));
                    (StatusCode::from_u16(status).unwrap(), body)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, asked)
    }

    fn page_json(runner: &str, seqs: std::ops::Range<u64>, next: Option<&str>) -> String {
        let page = RepairPage {
            batches: vec![RepairBatch {
                tenant: "acme".into(),
                batch: batch(runner, seqs, 1),
            }],
            next: next.map(|tenant| RepairCursor {
                tenant: tenant.into(),
                after_ts_ns: Some(1),
                after_position: Some(1),
            }),
            skipped_blocks: 0,
        };
        serde_json::to_string(&page).unwrap()
    }

    /// What [`copy`] gets from a peer answering `script`: its result and
    /// the records handed to the store.
    async fn copy_from(script: Vec<(u16, String)>, partition: u32) -> (anyhow::Result<u64>, usize) {
        let (url, _) = scripted(script).await;
        let client = reqwest::Client::new();
        let peer = Peer {
            client: &client,
            url: &url,
            key: "k",
        };
        let handed = std::sync::Mutex::new(0usize);
        let copied = copy(&peer, PARTITIONS, partition, |repaired| {
            let records = repaired.batch.records.len();
            *handed.lock().unwrap() += records;
            async move { anyhow::Ok(records) }
        })
        .await;
        let handed = *handed.lock().unwrap();
        (copied, handed)
    }

    #[tokio::test]
    async fn a_copy_is_whole_or_an_error_whatever_the_peer_answers() {
        let runner = (0..)
            .map(|n| format!("w{n}"))
            .find(|runner| message::partition_of("acme", "api", runner, PARTITIONS) == 0)
            .unwrap();
        let other = (0..)
            .map(|n| format!("w{n}"))
            .find(|runner| message::partition_of("acme", "api", runner, PARTITIONS) == 1)
            .unwrap();
        let first = page_json(&runner, 0..5, Some("acme"));
        let last = page_json(&runner, 5..8, None);

        // Every page: whole.
        let (copied, handed) = copy_from(vec![(200, first.clone()), (200, last)], 0).await;
        assert_eq!(copied.unwrap(), 8);
        assert_eq!(handed, 8);

        // A peer failing midway, sending another partition's records, the
        // same page again, something not a page, or a page over its bound:
        // an error, whatever was stored before.
        let damaged = {
            let mut page: RepairPage = serde_json::from_str(&first).unwrap();
            page.skipped_blocks = 1;
            serde_json::to_string(&page).unwrap()
        };
        let huge = format!(
            "{{\"batches\": [], \"pad\": \"{}\"}}",
            "x".repeat(MAX_PAGE_BODY)
        );
        for (what, script) in [
            (
                "failing midway",
                vec![(200, first.clone()), (500, "{}".to_owned())],
            ),
            (
                "another partition's",
                vec![(200, page_json(&other, 0..2, None))],
            ),
            (
                "the same page again",
                vec![(200, first.clone()), (200, first.clone())],
            ),
            (
                "not a page",
                vec![(200, first.clone()), (200, "[1, 2]".to_owned())],
            ),
            ("a damaged store", vec![(200, damaged)]),
            ("a page too large", vec![(200, huge)]),
        ] {
            let (copied, _) = copy_from(script, 0).await;
            assert!(copied.is_err(), "{what}: {copied:?}");
        }
    }
}
