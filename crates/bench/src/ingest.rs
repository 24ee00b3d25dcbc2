//! Ingest: the corpus into a store with an fsync per batch, beside the same
//! raw bytes appended to a plain file with a `sync_data` per batch.
//!
//! Batches are ~1000 lines from one runner, made as the agent makes them
//! (`parse_line`, invalid UTF-8 replaced and marked), then encoded to their
//! JSON body and decoded again as the server's ingest decodes them (not
//! cloned: a clone lays its strings out as no decoder does, and appends
//! ran 1.3–1.5× faster from clones), a chunk at a time and outside the
//! timing, so only `Store::append` and the plain-file writes are timed. Store and baseline take turns chunk by chunk, so both see the same
//! noise. Every other figure reads what this leaves behind: the store, the
//! raw text file, and one runner's own timestamped file.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, ensure, Context};
use jiff::Timestamp;
use tailwater_model::parse_line;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_store::{Durability, Store, StoreOptions};

use crate::corpus::{Corpus, CorpusLine, RunnerLabels};
use crate::measure::{named_threads_cpu_time, thread_span, Row, Span, Unit};

/// The tenant every benchmark record belongs to.
pub const TENANT: &str = "bench";
const BATCH_LINES: usize = 1000;
/// Batches built ahead of each timed stretch: bounds memory at any size.
const CHUNK_BATCHES: usize = 64;

/// The store's ingest per core: the row the server's rows stand beside.
pub const STORE_ROW: &str = "ingest, fsync per batch";

/// What ingest leaves for the other figures.
pub struct Ingested {
    pub store_dir: PathBuf,
    /// Bytes of every file under the store directory while the store was
    /// still open, once they stopped changing after the final flush and
    /// merge: what a server keeps at rest (log segments and the spare
    /// included; a closed store removes its spare).
    pub stored_bytes: u64,
    /// Every line's raw bytes and a newline, in batch order.
    pub raw_path: PathBuf,
    /// Every record as ingested, one JSON object a line (`app`, `runner`,
    /// `ts` in ns, `level`, `request_id`, `message`): what the ClickHouse
    /// baseline loads.
    pub records_path: PathBuf,
    pub raw_bytes: u64,
    pub lines: u64,
    pub probe: Probe,
    pub rows: Vec<Row>,
}

/// What the query figures look for.
pub struct Probe {
    /// The first runner of the fleet.
    pub runner: String,
    /// That runner's lines alone, each after its RFC 3339 time (fixed
    /// width), as a container runtime keeps one file per container.
    pub runner_file: PathBuf,
    /// The middle half of that runner's time span.
    pub since: Timestamp,
    pub until: Timestamp,
    /// A request id the first runner logged after the corpus's midpoint.
    pub request: Option<String>,
}

struct Pending {
    records: Vec<IngestRecord>,
    raw: Vec<u8>,
    next_seq: u64,
}

struct Ready {
    batch: IngestBatch,
    raw: Vec<u8>,
}

pub fn run(
    corpus: Corpus,
    work: &Path,
    merge_zstd_level: Option<i32>,
    numbers_apart: bool,
) -> anyhow::Result<Ingested> {
    let store_dir = work.join("store");
    let raw_path = work.join("raw.log");
    let records_path = work.join("records.jsonl");
    let runner_path = work.join("runner.log");
    let options = StoreOptions {
        durability: Durability::SyncEachBatch,
        merge_zstd_level: merge_zstd_level.unwrap_or(tailwater_store::DEFAULT_MERGE_ZSTD_LEVEL),
        settle_numbers_apart: numbers_apart,
        ..StoreOptions::default()
    };
    let store = Store::open(&store_dir, options)
        .with_context(|| format!("cannot open a store in {}", store_dir.display()))?;
    let create = |path: &Path| {
        File::create(path).map_err(|error| {
            anyhow!(
                "cannot create {}: {error}; pass a writable --dir",
                path.display()
            )
        })
    };
    let mut raw = create(&raw_path)?;
    let mut runner_file = BufWriter::new(create(&runner_path)?);
    let mut records_file = BufWriter::new(create(&records_path)?);

    let runners: Vec<RunnerLabels> = corpus.runners().to_vec();
    let total = corpus.len();
    let mut pending: Vec<Pending> = runners
        .iter()
        .map(|_| Pending {
            records: Vec::with_capacity(BATCH_LINES),
            raw: Vec::new(),
            next_seq: 0,
        })
        .collect();
    let mut ready = Vec::with_capacity(CHUNK_BATCHES);
    let mut timing = Timing::default();
    let mut lines = 0u64;
    let mut runner_span: Option<(Timestamp, Timestamp)> = None;
    let mut request = None;
    let mut reported_tenth = 0;

    for line in corpus {
        let line = line.context("cannot read the corpus")?;
        if line.runner == 0 {
            write!(runner_file, "{:.9} ", line.ts)?;
            runner_file.write_all(&line.bytes)?;
            runner_file.write_all(b"\n")?;
            runner_span = Some((runner_span.map_or(line.ts, |(first, _)| first), line.ts));
        }
        let at = &mut pending[line.runner];
        let record = record(&line, at.next_seq);
        write_record(&mut records_file, &runners[line.runner], &record)?;
        if request.is_none() && line.runner == 0 && lines >= total / 2 {
            request = record.request_id.clone();
        }
        at.next_seq += 1;
        at.records.push(record);
        at.raw.extend_from_slice(&line.bytes);
        at.raw.push(b'\n');
        lines += 1;
        if at.records.len() == BATCH_LINES {
            ready.push(take_batch(&runners[line.runner], at));
        }
        if ready.len() == CHUNK_BATCHES {
            timing.chunk(&store, &mut raw, &ready)?;
            ready.clear();
            let tenth = lines * 10 / total.max(1);
            if tenth > reported_tenth {
                reported_tenth = tenth;
                eprintln!("  ingested {lines} of {total} lines");
            }
        }
    }
    for (labels, at) in runners.iter().zip(&mut pending) {
        if !at.records.is_empty() {
            ready.push(take_batch(labels, at));
        }
    }
    timing.chunk(&store, &mut raw, &ready)?;
    // What is still in the memtable is ingest work not yet done: flush it,
    // and merge what the store would merge in the background, inside the
    // timing, so sizes and queries see the store at rest.
    timing.appending_cpu = timing.store.cpu;
    let (flushed, took) = thread_span(|| store.flush().and_then(|()| store.merge()));
    timing.store += took;
    timing.final_flush_cpu = took.cpu;
    flushed.context("cannot flush and merge the store")?;
    // The flushes and merges the store's own thread did, whenever they ran
    // (also while this thread built batches, outside the spans).
    timing.background_cpu = named_threads_cpu_time(tailwater_store::THREAD_NAME)?;
    timing.store.cpu += timing.background_cpu;
    // Merges compress harder than flushes (`merge_zstd_level`): their CPU,
    // on whichever thread, is reported apart from ingest, as is settling,
    // which a server does once ingest pauses (each flushed part written
    // again at the merge level), done here at once.
    timing.merge_cpu = Duration::from_nanos(store.counters().merge_cpu_ns);
    // Settling's memory: the peak above what the process held before it.
    let pid = std::process::id();
    crate::http::reset_peak_rss(pid)?;
    let before_settle = crate::http::process_peak_rss(pid)?;
    let (settled, took) = thread_span(|| store.settle());
    settled.context("cannot settle the store")?;
    timing.settle_cpu = took.cpu;
    timing.settle_rss = crate::http::process_peak_rss(pid)?.saturating_sub(before_settle);
    timing.settle_flush_wait = Duration::from_nanos(store.counters().settle_longest_flush_wait_ns);
    runner_file.flush()?;
    records_file.flush()?;
    let stored_bytes = crate::size::at_rest_bytes(&store_dir)
        .with_context(|| format!("cannot measure {}", store_dir.display()))?;
    drop(store);

    let (since, until) = runner_span.map_or((Timestamp::MIN, Timestamp::MAX), |(first, last)| {
        let quarter = first.duration_until(last) / 4;
        (first + quarter, last - quarter)
    });
    let raw_bytes = raw.metadata()?.len();
    Ok(Ingested {
        store_dir,
        stored_bytes,
        raw_path,
        records_path,
        raw_bytes,
        lines,
        probe: Probe {
            runner: runners[0].runner.clone(),
            runner_file: runner_path,
            since,
            until,
            request,
        },
        rows: timing.rows(lines),
    })
}

/// A captured line as the agent's outbox records it.
pub fn record(line: &CorpusLine, seq: u64) -> IngestRecord {
    let text = String::from_utf8_lossy(&line.bytes);
    let invalid_utf8 = matches!(text, Cow::Owned(_));
    let parsed = parse_line(&text);
    IngestRecord {
        seq,
        ts: parsed.ts.unwrap_or(line.ts),
        stream: line.stream,
        level: parsed.level.unwrap_or_default(),
        request_id: parsed.request_id,
        message: parsed.message,
        fields: parsed.fields,
        invalid_utf8,
    }
}

/// One line of the records file ([`Ingested::records_path`]).
fn write_record(
    out: &mut impl Write,
    labels: &RunnerLabels,
    record: &IngestRecord,
) -> anyhow::Result<()> {
    let line = serde_json::json!({
        "app": labels.app,
        "runner": labels.runner,
        "ts": tailwater_model::time::timestamp_ns(record.ts),
        "level": record.level,
        "request_id": record.request_id.as_deref().unwrap_or(""),
        "message": record.message,
    });
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// `batch` as the server's ingest decodes it from its JSON body.
fn as_decoded(batch: &IngestBatch) -> anyhow::Result<IngestBatch> {
    let body = serde_json::to_vec(batch).context("cannot encode a batch")?;
    serde_json::from_slice(&body).context("cannot decode a batch")
}

fn take_batch(labels: &RunnerLabels, pending: &mut Pending) -> Ready {
    Ready {
        batch: IngestBatch {
            app: labels.app.clone(),
            version: labels.version.clone(),
            runner: labels.runner.clone(),
            boot: labels.boot.clone(),
            source: Default::default(),
            records: std::mem::replace(&mut pending.records, Vec::with_capacity(BATCH_LINES)),
        },
        raw: std::mem::take(&mut pending.raw),
    }
}

#[derive(Default)]
struct Timing {
    store: Span,
    plain: Span,
    /// The parts of `store.cpu`.
    appending_cpu: Duration,
    final_flush_cpu: Duration,
    background_cpu: Duration,
    /// Of `store.cpu`: merges during ingest and the final merge.
    merge_cpu: Duration,
    /// Settling every flushed part after ingest (not in `store.cpu`).
    settle_cpu: Duration,
    /// Peak resident bytes while settling, above those before it.
    settle_rss: u64,
    /// The longest a settling step went without looking for a due flush.
    settle_flush_wait: Duration,
    chunks: u64,
    batches: u64,
}

impl Timing {
    /// Appends a chunk of batches to the store and to the plain file, in
    /// turns: the store first on even chunks, the plain file on odd ones.
    fn chunk(&mut self, store: &Store, raw: &mut File, ready: &[Ready]) -> anyhow::Result<()> {
        let mut to_store = || -> anyhow::Result<()> {
            // Made before the timing as the server gets them: each batch
            // encoded as its JSON body and decoded again (fields as the
            // wire's compact JSON text, strings freshly allocated one by
            // one), not cloned, whose one allocation per string packs
            // them as no decoder does.
            let batches = ready
                .iter()
                .map(|ready| as_decoded(&ready.batch))
                .collect::<anyhow::Result<Vec<IngestBatch>>>()?;
            let (result, took) = thread_span(|| {
                for batch in batches {
                    let records = batch.records.len();
                    let response = store.append(TENANT, batch)?;
                    ensure!(
                        response.accepted == records,
                        "the store took {} of {records} records of a fresh batch: a benchmark bug",
                        response.accepted,
                    );
                }
                Ok(())
            });
            self.store += took;
            result
        };
        let mut to_plain = |timing: &mut Span| -> anyhow::Result<()> {
            let (result, took) = thread_span(|| {
                for ready in ready {
                    raw.write_all(&ready.raw)?;
                    raw.sync_data()?;
                }
                std::io::Result::Ok(())
            });
            *timing += took;
            result.context("cannot write the plain-file baseline")
        };
        let mut plain = Span::default();
        if self.chunks.is_multiple_of(2) {
            to_store()?;
            to_plain(&mut plain)?;
        } else {
            to_plain(&mut plain)?;
            to_store()?;
        }
        self.plain += plain;
        self.chunks += 1;
        self.batches += ready.len() as u64;
        Ok(())
    }

    fn rows(&self, lines: u64) -> Vec<Row> {
        let rate = |time: std::time::Duration| {
            (time.as_secs_f64() > 0.0).then(|| lines as f64 / time.as_secs_f64())
        };
        let baseline =
            "the same raw bytes appended to a plain file, same batches, sync_data per batch";
        let ingest_cpu = self.store.cpu.saturating_sub(self.merge_cpu);
        let merge_cpu = self.merge_cpu + self.settle_cpu;
        vec![
            Row::new(
                STORE_ROW,
                Unit::LinesPerCpuSecond,
                rate(ingest_cpu),
                rate(self.plain.cpu),
            )
            .baseline_is(baseline)
            .target("≥ 1,000,000 lines/s/core", |value, _| Some(value >= 1e6))
            .note(format!(
                "per core = lines ÷ the store's CPU time (user + system) less its merges' (the next row): this thread's during the appends and the final flush and merge, plus all of the store's background thread's (its flushes and merges, whenever they ran); the baseline's is this thread's during its writes; {} batches of ≤ {BATCH_LINES} lines from one runner, built (parse_line, as the agent does) outside the timing; the store's CPU: {:.2} s appending, {:.2} s in the final flush and merge, {:.2} s in the background thread, of which {:.2} s merging; with merges, {:.0} lines/s/core",
                self.batches,
                self.appending_cpu.as_secs_f64(),
                self.final_flush_cpu.as_secs_f64(),
                self.background_cpu.as_secs_f64(),
                self.merge_cpu.as_secs_f64(),
                rate(self.store.cpu).unwrap_or(0.0),
            )),
            Row::new(
                "merge and settle CPU",
                Unit::LinesPerCpuSecond,
                rate(merge_cpu),
                None,
            )
            .note(format!(
                "lines ÷ the CPU time of merges during ingest and the final merge ({:.2} s) and of settling every flushed part afterwards ({:.2} s): what compressing at rest at the merge level (`merge_zstd_level`) costs, {:.2} µs a line, apart from ingest; settling's peak memory above the process's before it (VmHWM, reset): {:.1} MiB; the longest a settling step went without looking for a due flush (the most a flush waits behind it): {:.0} ms",
                self.merge_cpu.as_secs_f64(),
                self.settle_cpu.as_secs_f64(),
                merge_cpu.as_secs_f64() * 1e6 / lines.max(1) as f64,
                self.settle_rss as f64 / (1024.0 * 1024.0),
                self.settle_flush_wait.as_secs_f64() * 1e3,
            )),
            Row::new(
                "ingest, fsync per batch, wall",
                Unit::LinesPerSecond,
                rate(self.store.wall),
                rate(self.plain.wall),
            )
            .baseline_is(baseline)
            .note("wall clock of the appends (fsync waits included) and the final flush and merge; background flushes and merges overlap it"),
        ]
    }
}
