//! The shipper through its [`Transport`] seam: a transport that answers as
//! scripted, over a real recorder and spool in a temporary directory, and
//! the shipper doing what it does over HTTP for each answer.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tailwater_model::wire::{IngestBatch, IngestResponse};
use tailwater_model::Stream;

use super::*;
use crate::line::Line;

/// Answers each batch with the next scripted outcome (accepting once the
/// script is spent) and keeps what it was sent, and when.
#[derive(Clone, Default)]
struct Scripted {
    answers: Arc<Mutex<VecDeque<Outcome>>>,
    sent: Arc<Mutex<Vec<(Instant, IngestBatch)>>>,
}

impl Scripted {
    fn new(answers: impl IntoIterator<Item = Outcome>) -> Scripted {
        Scripted {
            answers: Arc::new(Mutex::new(answers.into_iter().collect())),
            sent: Arc::default(),
        }
    }

    fn sent(&self) -> Vec<(Instant, IngestBatch)> {
        self.sent.lock().unwrap().clone()
    }
}

impl Transport for Scripted {
    fn destination(&self) -> &str {
        "scripted"
    }

    async fn send(&self, batch: &IngestBatch) -> Outcome {
        self.sent
            .lock()
            .unwrap()
            .push((Instant::now(), batch.clone()));
        self.answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Outcome::Accepted(accepted(batch)))
    }
}

fn accepted(batch: &IngestBatch) -> IngestResponse {
    IngestResponse {
        accepted: batch.records.len(),
        duplicates: 0,
        refused: 0,
        refused_reason: None,
        refused_by_reason: Default::default(),
        retimed_by_reason: Default::default(),
    }
}

fn recorder(dir: &Path, lines: u64) -> Arc<Recorder> {
    let options = crate::recorder::Options::new("app", dir, 1 << 20);
    let recorder = Arc::new(Recorder::open(&options).unwrap());
    for n in 0..lines {
        let text = format!("line {n}");
        recorder.record_line(Line::new(Stream::Stdout, text.as_bytes()));
    }
    recorder
}

/// Ships until the recorder is closed and empty (the shipper's own end).
async fn ship_all(transport: impl Transport, recorder: Arc<Recorder>) {
    ship_all_into(transport, recorder, status()).await
}

/// A status of shipping to A, then B.
fn status() -> Arc<ShipStatus> {
    Arc::new(ShipStatus::new(vec!["a".into(), "b".into()]))
}

/// [`ship_all`], keeping `status`.
async fn ship_all_into(
    transport: impl Transport,
    recorder: Arc<Recorder>,
    status: Arc<ShipStatus>,
) {
    recorder.close();
    let options = ShipOptions {
        rate: RateLimit::default(),
        heartbeat: None,
        multiline: Some(super::group::Grouping::default()),
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        ship(transport, recorder, options, status),
    )
    .await
    .expect("the shipper ends once everything is shipped");
}

/// The worker's lines among a batch's records, by sequence number.
fn lines(batch: &IngestBatch) -> Vec<u64> {
    batch
        .records
        .iter()
        .filter(|r| r.stream != Stream::System)
        .map(|r| r.seq)
        .collect()
}

fn events(sent: &[(Instant, IngestBatch)]) -> Vec<serde_json::Map<String, serde_json::Value>> {
    sent.iter()
        .flat_map(|(_, batch)| &batch.records)
        .filter(|r| r.stream == Stream::System)
        .map(|r| r.fields.to_map())
        .collect()
}

fn event(fields: &serde_json::Map<String, serde_json::Value>) -> &str {
    fields.get("event").and_then(|e| e.as_str()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_out_with_the_lines_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 3);
    let asked = Duration::from_millis(300);
    let transport = Scripted::new([Outcome::RetryAfter {
        retry_after: Some(asked),
        reason: "app over its rate limit".into(),
    }]);
    ship_all(transport.clone(), recorder.clone()).await;

    let sent = transport.sent();
    let [(first_at, first), (again_at, again), ..] = &sent[..] else {
        panic!("sent again after the wait: {sent:?}")
    };
    assert_eq!(lines(first), [0, 1, 2]);
    assert_eq!(lines(again), [0, 1, 2], "the same lines, kept in the spool");
    let waited = again_at.duration_since(*first_at);
    assert!(
        waited >= asked && waited < asked.mul_f64(1.25) + Duration::from_millis(200),
        "waited {waited:?} when asked {asked:?}"
    );
    let limited: Vec<_> = events(&sent)
        .into_iter()
        .filter(|e| event(e) == "server_rate_limited")
        .collect();
    let [report] = &limited[..] else {
        panic!("one server_rate_limited record: {limited:?}")
    };
    assert_eq!(report["answers"], 1);
    assert!(report["waited_ms"].as_u64().unwrap() >= 300);
    assert_eq!(recorder.backlog().records, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_splits_the_batch_and_a_single_record_is_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 10);
    let too_large = || Outcome::TooLarge {
        reason: "batch too large".into(),
    };
    // Too large at 10 lines, then at 5, then at 2; then the single line 0
    // is too large on its own.
    let transport = Scripted::new([too_large(), too_large(), too_large(), too_large()]);
    ship_all(transport.clone(), recorder.clone()).await;

    let sent = transport.sent();
    let sizes: Vec<usize> = sent.iter().map(|(_, b)| lines(b).len()).collect();
    assert_eq!(&sizes[..4], [10, 5, 2, 1], "halved each time: {sizes:?}");
    assert!(sent[..4].iter().all(|(_, b)| lines(b)[0] == 0));
    // Line 0 is dropped; every other line is shipped once, in order.
    let shipped: Vec<u64> = sent[4..].iter().flat_map(|(_, b)| lines(b)).collect();
    assert_eq!(shipped, (1..10).collect::<Vec<_>>());
    let dropped: Vec<_> = events(&sent)
        .into_iter()
        .filter(|e| event(e) == "dropped")
        .collect();
    let [report] = &dropped[..] else {
        panic!("one drop report: {dropped:?}")
    };
    assert_eq!(report["reason"], "rejected_by_server");
    assert_eq!(report["dropped_lines"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_keeps_the_lines_in_the_spool_for_the_asked_time() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 3);
    let asked = Duration::from_millis(200);
    let full = || Outcome::Unavailable {
        retry_after: Some(asked),
        answered: true,
        elsewhere: false,
        reason: "507: the disk is full".into(),
    };
    let unreachable = Outcome::Unavailable {
        retry_after: None,
        answered: false,
        elsewhere: true,
        reason: "cannot reach the server".into(),
    };
    let transport = Scripted::new([full(), full(), unreachable]);
    ship_all(transport.clone(), recorder.clone()).await;

    let sent = transport.sent();
    assert_eq!(sent.len(), 4, "three failures, then shipped: {sent:?}");
    for (_, batch) in &sent {
        assert_eq!(lines(batch), [0, 1, 2], "the same lines each time");
    }
    for pair in sent[..3].windows(2) {
        let waited = pair[1].0.duration_since(pair[0].0);
        assert!(waited >= asked, "waited {waited:?} when asked {asked:?}");
    }
    // Unreachable: the backoff (100 ms doubled twice, jittered), no less.
    let backoff = sent[3].0.duration_since(sent[2].0);
    assert!(backoff >= Duration::from_millis(300), "{backoff:?}");
    assert_eq!(recorder.backlog().records, 0);
    assert!(events(&sent).iter().all(|e| event(e) != "dropped"));
}

#[tokio::test]
async fn a_traceback_over_the_cap_ships_in_pieces_counted_in_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 1);
    let mut traceback = vec!["Traceback (most recent call last):".to_owned()];
    traceback.extend((0..40).map(|n| format!("  File \"deep.py\", line {n}, in f")));
    traceback.push("RecursionError: too deep".to_owned());
    for line in &traceback {
        recorder.record_line(Line::new(Stream::Stderr, line.as_bytes()));
    }
    recorder.close();
    let transport = Scripted::default();
    let grouping = group::Grouping {
        max_bytes: 256,
        ..group::Grouping::default()
    };
    let options = ShipOptions {
        rate: RateLimit::default(),
        heartbeat: None,
        multiline: Some(grouping),
    };
    tokio::time::timeout(
        Duration::from_secs(20),
        ship(transport.clone(), recorder, options, status()),
    )
    .await
    .expect("shipped");
    let sent = transport.sent();
    let pieces: Vec<_> = sent
        .iter()
        .flat_map(|(_, batch)| &batch.records)
        .filter(|r| r.stream == Stream::Stderr)
        .collect();
    assert!(pieces.len() > 4, "{pieces:#?}");
    let joined: Vec<&str> = pieces.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(joined.join("\n"), traceback.join("\n"), "nothing lost");
    let cut = pieces.len() as u64 - 1;
    for piece in &pieces[..pieces.len() - 1] {
        assert_eq!(piece.fields.to_map()["continued"], true);
    }
    let reports: Vec<_> = events(&sent)
        .into_iter()
        .filter(|fields| event(fields) == "multiline_cut")
        .collect();
    let counted: u64 = reports.iter().map(|f| f["events"].as_u64().unwrap()).sum();
    assert_eq!(counted, cut, "every cut counted: {reports:#?}");
    assert_eq!(reports.last().unwrap()["total"], cut);
    assert_eq!(reports[0]["max_bytes"], 256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_over_to_the_next_with_the_same_lines() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 3);
    let away = Outcome::Unavailable {
        retry_after: None,
        answered: false,
        elsewhere: true,
        reason: "connection refused".into(),
    };
    let (a, b) = (Scripted::new([away]), Scripted::default());
    let status = status();
    let failover = Failover::new(vec![a.clone(), b.clone()], recorder.clone(), status.clone());
    ship_all_into(failover, recorder.clone(), status.clone()).await;

    // The status shows the move and what was shipped.
    let now = status.snapshot(&recorder);
    assert_eq!(now.failovers.count, 1);
    assert_eq!(
        now.failovers.last.as_ref().unwrap().reason,
        "connection refused"
    );
    assert_eq!(now.last_error.as_ref().unwrap().error, "connection refused");
    assert!(!now.failing);
    assert!(
        now.shipped.batches >= 1 && now.shipped.lines >= 3,
        "{now:?}"
    );
    assert_eq!(now.spool.lines, 0, "{now:?}");

    let (to_a, to_b) = (a.sent(), b.sent());
    assert_eq!(to_a.len(), 1, "A was tried once: {to_a:?}");
    assert_eq!(lines(&to_a[0].1), [0, 1, 2]);
    let shipped: Vec<u64> = to_b.iter().flat_map(|(_, batch)| lines(batch)).collect();
    assert_eq!(shipped, [0, 1, 2], "the unacknowledged lines went to B");
    let reports: Vec<_> = events(&to_b)
        .into_iter()
        .filter(|fields| fields["event"] == "server_failover")
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["failovers"], 1);
    assert_eq!(reports[0]["reason"], "connection refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_every_node_would_give_do_not_fail_over() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 2);
    let script = [
        Outcome::RetryAfter {
            retry_after: Some(Duration::from_millis(1)),
            reason: "429: slow down".into(),
        },
        Outcome::Rejected {
            reason: "401: unknown token".into(),
        },
        Outcome::Unavailable {
            retry_after: Some(Duration::from_millis(1)),
            answered: true,
            elsewhere: false,
            reason: "507: the disk is full".into(),
        },
    ];
    let (a, b) = (Scripted::new(script), Scripted::default());
    let status = status();
    let failover = Failover::new(vec![a.clone(), b.clone()], recorder.clone(), status.clone());
    ship_all_into(failover, recorder.clone(), status.clone()).await;
    assert_eq!(status.failovers(), 0);

    // Three refusals, then shipped (and the 429s reported after), all to A.
    let to_a = a.sent();
    assert!(to_a.len() >= 4, "{to_a:?}");
    for (_, batch) in &to_a[..4] {
        assert_eq!(lines(batch), [0, 1], "the same lines each time, to A");
    }
    assert!(b.sent().is_empty(), "nothing went to B: {:?}", b.sent());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_every_server_is_away_the_moves_are_counted_and_told_once() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = recorder(dir.path(), 1);
    let away = || Outcome::Unavailable {
        retry_after: None,
        answered: false,
        elsewhere: true,
        reason: "connection refused".into(),
    };
    let (a, b) = (Scripted::new([away(), away()]), Scripted::new([away()]));
    let status = status();
    let failover = Failover::new(vec![a.clone(), b.clone()], recorder.clone(), status.clone());
    ship_all_into(failover, recorder.clone(), status.clone()).await;
    assert_eq!(status.failovers(), 3, "every move counted, told or not");

    // A, B, A away, then B takes the line and the one report (each failed
    // try carried them too: they stay in the spool until taken).
    let to_b = b.sent();
    assert_eq!(to_b.len(), 2, "{to_b:?}");
    let taken = &to_b[1..];
    assert_eq!(lines(&taken[0].1), [0]);
    let reports: Vec<_> = events(taken)
        .into_iter()
        .filter(|fields| fields["event"] == "server_failover")
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0]["failovers"], 1, "{reports:?}");
    assert_eq!(a.sent().len(), 2, "{:?}", a.sent());
}
