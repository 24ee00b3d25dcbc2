//! The stream's replay window (`--nats-max-age`, `--nats-max-bytes`,
//! discard old): JetStream drops the oldest messages whether or not every
//! node has read them, and a durable consumer whose next messages were
//! dropped moves on to the first one left without a word (nats-server 2.9,
//! checked against a real server: its pending count never held them, its
//! ack floor jumps past a delivered message that was dropped before it was
//! acknowledged). Left alone, a node away for longer than the window would
//! silently miss records.
//!
//! So each node checks, when it opens its consumer of a partition and every
//! [`CHECK_EVERY`] after, whether the stream's first sequence has passed
//! what this consumer had read: the consumer's delivered sequence (JetStream
//! moves it past other partitions' messages as it scans), or its ack floor
//! while messages are unacknowledged, or nothing for a consumer just made
//! (it starts at the first message left). Messages this node was given and
//! could not store yet (a full disk) that have since left the stream are
//! gaps too. Each gap is a stretch of stream sequences (of all partitions:
//! JetStream cannot say which of the dropped messages were this
//! partition's), logged, counted (`tailwater_cluster_window_gaps`,
//! `…_window_gap_sequences`), kept in `<data>/cluster-gaps.json` across
//! restarts and put in the node's heartbeat, so `GET /v1/cluster` shows it
//! from every node. [`super::repair`] then fills it from a live peer and
//! marks it repaired here (kept, with when and from whom).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::stream::Stream;
use tailwater_model::wire::ClusterGap;

use super::stats::PartitionStats;

/// How often a consumer's position is checked against the stream's first
/// sequence while it runs.
pub const CHECK_EVERY: Duration = Duration::from_secs(10);
/// Gaps kept (and put in the heartbeat), the newest; the counters keep the
/// totals.
const KEPT: usize = 64;

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
        if kept.len() > KEPT {
            // The oldest repaired one goes first: an unrepaired gap is
            // what the repair works from.
            let oldest = kept.iter().position(|gap| gap.repaired_ms.is_some());
            kept.remove(oldest.unwrap_or(0));
        }
        self.save(&kept);
        drop(kept);
        self.found.notify_one();
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

/// What one node's consumer of one partition has read, as the checks know.
pub struct Reader {
    pub partition: u32,
    pub consumer: String,
    /// Made by this life of the node: it began at the stream's first
    /// message then, so everything before is missing here.
    pub new: bool,
    /// Messages delivered and not stored yet (left for JetStream to deliver
    /// again).
    pub unstored: BTreeSet<u64>,
    /// Gaps are reported up to here already.
    reported_through: u64,
}

impl Reader {
    pub fn new(partition: u32, consumer: String, new: bool) -> Reader {
        Reader {
            partition,
            consumer,
            new,
            unstored: BTreeSet::new(),
            reported_through: 0,
        }
    }

    /// Compares this consumer's position with the stream's first sequence
    /// and records what was dropped unread.
    pub async fn check<I>(
        &mut self,
        stream: &Stream<I>,
        gaps: &Gaps,
        stats: &PartitionStats,
    ) -> anyhow::Result<()> {
        // The stream first: its first sequence only grows, so a consumer
        // read after it is never behind a newer one (no false gap).
        let first = stream
            .get_info()
            .await
            .context("cannot read the stream's first sequence")?
            .state
            .first_sequence;
        let read_through = if self.new {
            0
        } else {
            let info = stream
                .consumer_info(&self.consumer)
                .await
                .context("cannot read this node's consumer")?;
            if info.num_ack_pending > 0 {
                info.ack_floor.stream_sequence
            } else {
                info.delivered.stream_sequence
            }
        };
        self.new = false;
        let from = read_through.max(self.reported_through) + 1;
        let detected_ms = jiff::Timestamp::now().as_millisecond();
        if first > from {
            gaps.record(
                ClusterGap {
                    partition: self.partition,
                    from_sequence: from,
                    to_sequence: first - 1,
                    detected_ms,
                    repaired_ms: None,
                    repaired_from: None,
                },
                stats,
            );
        }
        let dropped: Vec<u64> = self.unstored.range(..first).copied().collect();
        for sequence in dropped {
            self.unstored.remove(&sequence);
            if sequence < from {
                gaps.record(
                    ClusterGap {
                        partition: self.partition,
                        from_sequence: sequence,
                        to_sequence: sequence,
                        detected_ms,
                        repaired_ms: None,
                        repaired_from: None,
                    },
                    stats,
                );
            }
        }
        self.reported_through = self.reported_through.max(first.saturating_sub(1));
        Ok(())
    }
}
