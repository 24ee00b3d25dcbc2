//! Live tail: following the store as records arrive, for every tail
//! transport (SSE, WebSocket) and every tail route.
//!
//! A follower does not receive records pushed by ingest; it reads them from
//! the store after the last id it delivered, woken by a watch on the newest
//! id. So ingest never waits for a tail client, and resuming after a
//! reconnect is the same read as following.
//!
//! A slow client: its follower hands records to the transport through a
//! small channel ([`CHANNEL_MESSAGES`]). When the channel is full the
//! follower waits and holds nothing back in memory. A client may fall
//! `tail_buffer` matching records behind the newest
//! ([`DEFAULT_TAIL_BUFFER`]): once it has drained half its channel, the
//! follower counts the records it is behind by (reading and dropping them);
//! within the buffer the client gets them all from the store, and past it a
//! [`MissedNotice`] instead (how many, and an [`IdRange`] cursor that
//! `GET /v1/logs` pages through to fetch exactly those), then the records
//! stored after them. Skipping is counted in [`TailStats`] and logged.
//!
//! A caller's record whose request's ownership is not settled yet
//! ([`crate::access::ownership`]) is held back: the follower stops just before it
//! and reads it again from the store (on each new record, and every
//! [`HOLD_POLL`]) until it settles, then sends it or passes it by. What
//! follows it waits too, so records leave in id order and a client that
//! resumes after the last id it got never skips a held one. Holding keeps
//! nothing in memory (the store is the buffer) and never delays ingest;
//! each time a tail starts holding is counted in [`TailStats`].

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tailwater_model::wire::MissedNotice;
use tailwater_model::{Filter, IdRange, LogRecord, TenantSeal};
use tailwater_store::Store;
use tokio::sync::{mpsc, watch};

use crate::access::ownership::Verdict;
use crate::AppState;

/// How many matching records a live tail client may fall behind the newest
/// before the ones it has not got are skipped (and reported), unless the
/// server is configured otherwise.
pub const DEFAULT_TAIL_BUFFER: u64 = 10_000;
/// Messages a follower hands its transport ahead of what the client took.
const CHANNEL_MESSAGES: usize = 256;
/// Records one store read hands a follower at most.
const READ_BATCH: usize = 512;
/// Records one store read counts at most while a client is behind.
const COUNT_BATCH: usize = 4096;
/// How often a follower holding a record back looks again whether its
/// request has settled, when nothing new is stored meanwhile.
pub const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// What a tail client gets, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum TailEvent {
    /// With its `id` filled in.
    Record(LogRecord),
    /// Records up to the one with `id` were skipped; resume after `id`.
    Missed { id: String, notice: MissedNotice },
}

/// What a client gets of a record (a caller's view: private apps, the
/// request's recorded caller, held while that is not settled). Called off
/// the async threads: it may read the store.
pub type Sees = Arc<dyn Fn(&LogRecord) -> Verdict + Send + Sync>;
/// Whether a client may still receive anything (its token is live).
pub type Allowed = Arc<dyn Fn() -> bool + Send + Sync>;

/// What one tail client follows.
pub struct Subscription {
    pub tenant: String,
    pub filter: Filter,
    /// Deliver records with positions above this one.
    pub after: u64,
    /// How the tenant is shown positions: the ids of the records sent, and
    /// of a missed notice, and its cursor.
    pub seal: TenantSeal,
    pub sees: Sees,
    pub allowed: Allowed,
}

/// Live tail clients and what slowness cost them, since the server started:
/// the one count of them, which `/metrics` reads at each scrape.
#[derive(Debug, Default)]
pub struct TailStats {
    /// Clients connected now, by tenant (a tenant once seen stays, at 0).
    clients: Mutex<BTreeMap<String, u64>>,
    missed_notices: AtomicU64,
    missed_records: AtomicU64,
    holds: AtomicU64,
}

impl TailStats {
    /// Times a caller's tail held a record back until its request settled.
    pub fn holds(&self) -> u64 {
        self.holds.load(Ordering::Relaxed)
    }

    /// Tail clients connected now.
    pub fn clients(&self) -> u64 {
        self.clients_by_tenant()
            .iter()
            .map(|(_, count)| count)
            .sum()
    }

    /// Tail clients connected now, by tenant.
    pub fn clients_by_tenant(&self) -> Vec<(String, u64)> {
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .iter()
            .map(|(tenant, count)| (tenant.clone(), *count))
            .collect()
    }

    /// Counts a client of `tenant` for as long as the guard lives.
    pub fn client(self: &Arc<Self>, tenant: &str) -> ClientGuard {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        *clients.entry(tenant.to_owned()).or_default() += 1;
        ClientGuard {
            stats: self.clone(),
            tenant: tenant.to_owned(),
        }
    }

    /// Missed notices sent to clients that fell too far behind.
    pub fn missed_notices(&self) -> u64 {
        self.missed_notices.load(Ordering::Relaxed)
    }

    /// Records those notices told of (the clients can fetch them by cursor).
    pub fn missed_records(&self) -> u64 {
        self.missed_records.load(Ordering::Relaxed)
    }
}

/// One tail client counted in [`TailStats`] while it lives: the one place
/// where a tail client starts and ends, whatever its transport.
#[must_use = "the client is counted only while the guard lives"]
pub struct ClientGuard {
    stats: Arc<TailStats>,
    tenant: String,
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut clients = self.stats.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = clients.get_mut(&self.tenant) {
            *count = count.saturating_sub(1);
        }
    }
}

/// The client's end of a follower: events in order until the server stops
/// or the client's token stops being live.
pub struct Tail {
    events: mpsc::Receiver<TailEvent>,
    allowed: Allowed,
}

impl Tail {
    /// The next event; `None` once the tail is over. Cancel-safe.
    pub async fn next(&mut self) -> Option<TailEvent> {
        let event = self.events.recv().await?;
        // Checked as each event leaves, so a revoked token gets nothing
        // more, not even what was already queued for it.
        (self.allowed)().then_some(event)
    }

    /// Whether the client's token is still live (why a tail ended).
    pub fn allowed(&self) -> bool {
        (self.allowed)()
    }
}

/// Starts following `subscription` in the background.
pub fn follow(state: &AppState, subscription: Subscription) -> Tail {
    let (sender, events) = mpsc::channel(CHANNEL_MESSAGES);
    let allowed = subscription.allowed.clone();
    let follower = Follower {
        store: state.store.clone(),
        sent: subscription.after,
        counted_to: subscription.after,
        behind: 0,
        subscription,
        buffer: state.tail_buffer,
        stats: state.tail_stats.clone(),
        newest: state.store.subscribe(),
        stopping: state.stopping.subscribe(),
        sender,
        holding: false,
    };
    tokio::spawn(follower.run());
    Tail { events, allowed }
}

const STOP: ControlFlow<()> = ControlFlow::Break(());
const GO_ON: ControlFlow<()> = ControlFlow::Continue(());

struct Follower {
    store: Arc<Store>,
    subscription: Subscription,
    /// The last id handed to the channel, skipped, or known not to match.
    sent: u64,
    /// While the client is behind: the records it would get in
    /// `(sent, counted_to]`, so each is counted once however many turns
    /// catching up takes.
    counted_to: u64,
    behind: u64,
    buffer: u64,
    stats: Arc<TailStats>,
    newest: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    sender: mpsc::Sender<TailEvent>,
    /// Whether the record after `sent` is held back now.
    holding: bool,
}

impl Follower {
    async fn run(mut self) {
        let _client = self.stats.client(&self.subscription.tenant);
        loop {
            // Each phase breaks when the client left, the server stops, or
            // the token is no longer live.
            if self.deliver().await.is_break() || self.catch_up_or_skip().await.is_break() {
                return;
            }
        }
    }

    /// Reads and hands over records until the channel is full.
    async fn deliver(&mut self) -> ControlFlow<()> {
        loop {
            if !(self.subscription.allowed)() {
                return STOP;
            }
            // Mark the current newest id as seen *before* reading, so an
            // append during the read wakes the wait below.
            let stored_up_to = *self.newest.borrow_and_update();
            let Some(records) = self.read(self.sent, READ_BATCH).await else {
                return STOP;
            };
            let read_everything = records.len() < READ_BATCH;
            let mut held = false;
            for (record, verdict) in records {
                let id = record.position;
                match verdict {
                    Verdict::Show => match self.sender.try_send(TailEvent::Record(record)) {
                        Ok(()) if id <= self.counted_to => {
                            self.behind = self.behind.saturating_sub(1)
                        }
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => return GO_ON,
                        Err(mpsc::error::TrySendError::Closed(_)) => return STOP,
                    },
                    Verdict::Hide => {}
                    // It and what follows wait, in the store.
                    Verdict::Hold => {
                        held = true;
                        break;
                    }
                }
                self.sent = id;
            }
            if held && !self.holding {
                self.stats.holds.fetch_add(1, Ordering::Relaxed);
            }
            self.holding = held;
            if !read_everything && !held {
                continue;
            }
            if !held {
                // Non-matching records up to here need no second look.
                self.sent = self.sent.max(stored_up_to);
            }
            // A held record settles with time as well as with new records.
            let poll = async {
                match held {
                    true => tokio::time::sleep(HOLD_POLL).await,
                    false => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.newest.changed() => if changed.is_err() { return STOP },
                _ = poll => {}
                _ = self.stopping.wait_for(|stopping| *stopping) => return STOP,
                _ = self.sender.closed() => return STOP,
            }
        }
    }

    /// The channel is full: waits, holding nothing, until the client has
    /// drained half of it. Then counts how far behind the newest record it
    /// is (each record counted once across turns); within the buffer it
    /// goes on from the store, past it it is told what it missed and moves
    /// on to what was stored after.
    async fn catch_up_or_skip(&mut self) -> ControlFlow<()> {
        let mut room = tokio::select! {
            room = self.sender.reserve_many(CHANNEL_MESSAGES / 2) => match room {
                Ok(room) => room,
                Err(_) => return STOP,
            },
            _ = self.stopping.wait_for(|stopping| *stopping) => return STOP,
        };
        if !(self.subscription.allowed)() {
            return STOP;
        }
        if self.counted_to <= self.sent {
            (self.counted_to, self.behind) = (self.sent, 0);
        }
        let stored_up_to = *self.newest.borrow();
        if stored_up_to > self.counted_to {
            let Some(count) = self.count(self.counted_to, stored_up_to).await else {
                return STOP;
            };
            (self.counted_to, self.behind) = (stored_up_to, self.behind + count);
        }
        if self.behind <= self.buffer {
            // Within the buffer: the store still has them all.
            return GO_ON;
        }
        tracing::info!(
            tenant = %self.subscription.tenant,
            missed = self.behind,
            buffer = self.buffer,
            "a live tail client fell behind past its buffer; it gets a missed notice with a cursor"
        );
        self.stats.missed_notices.fetch_add(1, Ordering::Relaxed);
        self.stats
            .missed_records
            .fetch_add(self.behind, Ordering::Relaxed);
        let skipped = IdRange {
            after: self.sent,
            through: self.counted_to,
        };
        let notice = MissedNotice {
            count: self.behind,
            cursor: skipped.encode(&self.subscription.seal),
        };
        let permit = room.next().expect("room for at least one message");
        permit.send(TailEvent::Missed {
            id: self.subscription.seal.id(self.counted_to),
            notice,
        });
        (self.sent, self.behind) = (self.counted_to, 0);
        GO_ON
    }

    /// Up to `limit` matching records with ids above `after`, each with
    /// what the client gets of it, judged as it is read: the check may
    /// read the store too (a request's recorded caller), so it runs off the
    /// async threads.
    async fn read(&self, after: u64, limit: usize) -> Option<Vec<(LogRecord, Verdict)>> {
        let store = self.store.clone();
        let (tenant, filter, sees, seal) = (
            self.subscription.tenant.clone(),
            self.subscription.filter.clone(),
            self.subscription.sees.clone(),
            self.subscription.seal.clone(),
        );
        let read = move || {
            let records = store.read_after(&tenant, &filter, after, limit);
            records
                .into_iter()
                .map(|mut record| {
                    let verdict = sees(&record);
                    seal.fill_id(&mut record);
                    (record, verdict)
                })
                .collect()
        };
        tokio::task::spawn_blocking(read).await.ok()
    }

    /// How many records in `(after, through]` the client would get; `None`
    /// when the client left or the server stops meanwhile. A store read at a
    /// time, so a long count stops as soon as no one waits for it.
    async fn count(&self, after: u64, through: u64) -> Option<u64> {
        let (mut position, mut count) = (after, 0);
        loop {
            if self.sender.is_closed() || *self.stopping.borrow() {
                return None;
            }
            let records = self.read(position, COUNT_BATCH).await?;
            let done = records.len() < COUNT_BATCH;
            for (record, verdict) in records
                .iter()
                .take_while(|(record, _)| record.position <= through)
            {
                // A held record is one the client may yet get.
                count += u64::from(*verdict != Verdict::Hide);
                position = record.position;
            }
            let past = records.last().is_some_and(|(r, _)| r.position > through);
            if done || position >= through || past {
                return Some(count);
            }
        }
    }
}
