//! The stream's replay window (`--nats-max-age`, `--nats-max-bytes`,
//! discard old): JetStream drops the oldest messages whether or not every
//! node has read them, and a durable consumer whose next messages were
//! dropped moves on to the first one left without a word (nats-server 2.9,
//! checked against a real server: its pending count never held them, its
//! ack floor jumps past a delivered message that was dropped before it was
//! acknowledged). Left alone, a node away for longer than the window would
//! silently miss records.
//!
//! A node reads the whole stream in order ([`super::materialize`]), so it
//! knows the next sequence it should get: a message delivered past it, or
//! a stream whose first sequence has passed it (checked between pulls,
//! every [`CHECK_EVERY`], while nothing is in hand), means the stream
//! dropped what lies between before this node read it. A message this
//! node could not store yet is held, never dropped. Each gap is a stretch
//! of stream sequences, recorded for every partition (JetStream cannot say
//! which partitions the dropped messages were of), logged, counted
//! (`tailwater_cluster_window_gaps`, `…_window_gap_sequences`), kept in
//! `<data>/cluster-gaps.json` across restarts and put in the node's
//! heartbeat, so `GET /v1/cluster` shows it from every node.
//! [`super::repair`] then fills it from a live peer and marks it repaired
//! here (kept, with when and from whom).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use tailwater_model::wire::ClusterGap;

use super::stats::{PartitionStats, Stats};

/// How often the next sequence this node expects is checked against the
/// stream's first while no message comes.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Gaps kept (and put in the heartbeat), the newest, repaired ones
/// dropped first; the counters keep the totals. One stretch dropped is a
/// gap of each partition: 16 stretches of the default 16 partitions.
const KEPT: usize = 256;

/// The gaps this node found, kept on disk.
pub struct Gaps {
    path: PathBuf,
    kept: Mutex<Vec<ClusterGap>>,
    /// Woken when a gap is found, so its repair starts at once.
    pub found: tokio::sync::Notify,
}

impl Gaps {
    /// Reads what an earlier life of this node found (none if the file is
    /// not there).
    pub fn open(path: PathBuf) -> anyhow::Result<Gaps> {
        let kept = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "cannot read {}: it lists the stream's messages this node missed; fix or remove it",
                    path.display()
                )
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        Ok(Gaps {
            path,
            kept: Mutex::new(kept),
            found: tokio::sync::Notify::new(),
        })
    }

    /// The gaps found, oldest first.
    pub fn list(&self) -> Vec<ClusterGap> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn record(&self, gap: ClusterGap, stats: &PartitionStats) {
        tracing::error!(
            partition = gap.partition,
            from_sequence = gap.from_sequence,
            to_sequence = gap.to_sequence,
            "the cluster's stream dropped messages this node had not read (past --nats-max-age or --nats-max-bytes): this partition's records among them are missing from this node's store until it repairs the gap from a live peer"
        );
        stats.window_gaps.fetch_add(1, Relaxed);
        stats
            .window_gap_sequences
            .fetch_add(gap.to_sequence - gap.from_sequence + 1, Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.push(gap);
        Self::bound(&mut kept);
        self.save(&kept);
        drop(kept);
        self.found.notify_one();
    }

    /// Records that the stream dropped sequences `from..=to` before this
    /// node read them: a gap of each of the `partitions`.
    pub fn record_missed(&self, from: u64, to: u64, partitions: u32, stats: &Stats) {
        let detected_ms = jiff::Timestamp::now().as_millisecond();
        for partition in 0..partitions {
            self.record(
                ClusterGap {
                    partition,
                    from_sequence: from,
                    to_sequence: to,
                    detected_ms,
                    repaired_ms: None,
                    repaired_from: None,
                },
                stats.partition(partition),
            );
        }
    }

    /// Records that the stream dropped sequences `from..=to` before this
    /// node read them and that it filled them from `peer` already
    /// ([`super::stretch`]): a gap of each partition, repaired.
    pub fn record_filled(&self, from: u64, to: u64, partitions: u32, stats: &Stats, peer: &str) {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for partition in 0..partitions {
            let stats = stats.partition(partition);
            stats.window_gaps.fetch_add(1, Relaxed);
            stats.window_gap_sequences.fetch_add(to - from + 1, Relaxed);
            stats.window_gaps_repaired.fetch_add(1, Relaxed);
            kept.push(ClusterGap {
                partition,
                from_sequence: from,
                to_sequence: to,
                detected_ms: now_ms,
                repaired_ms: Some(now_ms),
                repaired_from: Some(peer.to_owned()),
            });
        }
        Self::bound(&mut kept);
        self.save(&kept);
    }

    /// The gaps not repaired yet.
    pub fn unrepaired(&self) -> Vec<ClusterGap> {
        self.list()
            .into_iter()
            .filter(|gap| gap.repaired_ms.is_none())
            .collect()
    }

    /// Marks `repaired` (as [`Gaps::unrepaired`] gave them) filled from
    /// `peer` at `at_ms`; gaps found since are left as they are.
    pub fn mark_repaired(&self, repaired: &[ClusterGap], peer: &str, at_ms: i64) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        for gap in kept.iter_mut() {
            if gap.repaired_ms.is_none() && repaired.contains(gap) {
                gap.repaired_ms = Some(at_ms);
                gap.repaired_from = Some(peer.to_owned());
            }
        }
        self.save(&kept);
    }

    /// Keeps the newest [`KEPT`]: the oldest repaired one goes first (an
    /// unrepaired gap is what the repair works from).
    fn bound(kept: &mut Vec<ClusterGap>) {
        while kept.len() > KEPT {
            let oldest = kept.iter().position(|gap| gap.repaired_ms.is_some());
            let dropped = kept.remove(oldest.unwrap_or(0));
            if dropped.repaired_ms.is_none() {
                tracing::error!(
                    partition = dropped.partition,
                    from_sequence = dropped.from_sequence,
                    to_sequence = dropped.to_sequence,
                    "more unrepaired gaps than this node keeps: the oldest is forgotten unrepaired (rebuild this node from a peer, docs/cluster.md)"
                );
            }
        }
    }

    fn save(&self, kept: &[ClusterGap]) {
        let written = serde_json::to_vec(kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let temporary = self.path.with_extension("json.tmp");
                std::fs::write(&temporary, bytes)?;
                std::fs::rename(&temporary, &self.path)
            });
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), %error, "cannot keep the gaps found on disk; they are shown until this node stops");
        }
    }
}
