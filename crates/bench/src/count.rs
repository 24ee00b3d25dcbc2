//! Counts and full reads: what must look at every match, beside `rg` over
//! the raw text and ClickHouse with one thread over the same records, each
//! the median of several runs taken in turns with its baseline.
//!
//! - a count of the lines holding a common word (`Store::count`, one
//!   thread; and again on every core), beside `rg -c -i -w` and
//!   ClickHouse's `hasTokenCaseInsensitive`;
//! - a histogram of that word over the whole range (60 buckets by level),
//!   beside the same `rg` count and ClickHouse's `GROUP BY` of time bucket
//!   and level;
//! - a rare term and one request id, counted, beside ClickHouse (`LIKE`
//!   through its token index, `request_id =` through its bloom filter);
//! - every record read: `Store::query` page after page (records built),
//!   and `Store::scan` (borrowed rows), beside ClickHouse reading every row
//!   (`FORMAT Null`);
//! - every record exported as NDJSON (`Store::scan` and
//!   `RecordRef::write_json`, as the server's export) into `/dev/null`,
//!   beside ClickHouse's `INTO OUTFILE '/dev/null' FORMAT JSONEachRow`.
//!
//! The store runs without its block cache, as in the query rows, but for
//! the full read, which pages as the server does, with its cache.

use std::path::Path;
use std::process::Command;

use anyhow::Context;
use tailwater_model::time::timestamp_ns;
use tailwater_model::{Direction, Filter, Phrase, Query};
use tailwater_store::{Buckets, Store, StoreOptions};

use crate::clickhouse::ClickHouse;
use crate::corpus::RARE_TERM;
use crate::ingest::{Ingested, TENANT};
use crate::measure::{Row, Unit};
use crate::query::{compare, rg_count, Grep};

/// Buckets of the histogram row, as the console draws.
const BUCKETS: usize = 60;
/// Records a page of the full read holds (the API's most).
const FULL_READ_PAGE: usize = 10_000;

const CLICKHOUSE_BASELINE: &str = "ClickHouse in process (chdb, one thread: max_threads = 1) over the same records, MergeTree ORDER BY (app, runner, ts), LowCardinality labels, Delta+ZSTD times, ZSTD(3) messages, tokenbf_v1 on messages, bloom filter on request ids";
const NO_CLICKHOUSE: &str = "n/a: ";

pub fn run(
    ingested: &Ingested,
    grep: &Grep,
    runs: usize,
    common_term: &str,
    clickhouse: &mut anyhow::Result<ClickHouse>,
) -> anyhow::Result<Vec<Row>> {
    let open = |threads: usize, block_cache_bytes: usize| {
        let options = StoreOptions {
            block_cache_bytes,
            query_threads: threads,
            ..StoreOptions::default()
        };
        Store::open(&ingested.store_dir, options).with_context(|| {
            format!(
                "cannot reopen the store in {}",
                ingested.store_dir.display()
            )
        })
    };
    let raw = &ingested.raw_path;
    let word = Filter {
        text: Some(Phrase::new(common_term)),
        ..Filter::default()
    };
    let mut rows = Vec::new();
    let rg_word = |raw: &Path| -> anyhow::Result<usize> {
        match rg_words(grep, raw, common_term) {
            Some(command) => rg_count(command),
            None => anyhow::bail!("rg is not installed"),
        }
    };
    let rg_is = match grep {
        Grep::Rg(version) => format!(
            "{version} -c -i -w -F over the raw text, every match counted, one process per search (its start-up included)"
        ),
        Grep::Memmem => String::new(),
    };
    let word_sql = format!(
        "SELECT count() FROM logs WHERE hasTokenCaseInsensitive(message, '{}')",
        sql_text(common_term)
    );

    {
        let store = open(1, 0)?;
        let count = |filter: Filter, buckets: Option<Buckets>| {
            let store = &store;
            move || -> anyhow::Result<usize> {
                Ok(store.count(TENANT, &filter, buckets)?.total() as usize)
            }
        };
        let figure = format!("count, common word '{common_term}'");
        if let Grep::Rg(_) = grep {
            rows.push(
                compare(runs, count(word.clone(), None), || rg_word(raw))?
                    .row(&figure, &rg_is)
                    .target("no slower than rg (ratio ≤ 1)", at_most_one),
            );
        }
        rows.push(against_clickhouse(
            clickhouse,
            runs,
            &format!("{figure}, vs ClickHouse"),
            count(word.clone(), None),
            &word_sql,
        )?);
        // Before Store::count: paging through every match, records built,
        // as the histogram did.
        if let Grep::Rg(_) = grep {
            let by_pages = || -> anyhow::Result<usize> {
                let mut query = Query {
                    filter: word.clone(),
                    direction: Direction::Backward,
                    limit: FULL_READ_PAGE,
                    cursor: None,
                };
                let mut read = 0;
                loop {
                    let page = store.query(TENANT, &query)?;
                    read += page.records.len();
                    match page.next {
                        Some(next) => query.cursor = Some(next),
                        None => return Ok(read),
                    }
                }
            };
            rows.push(
                compare(runs.min(3), by_pages, || rg_word(raw))?
                    .row(&format!("{figure}, by paging (before)"), &rg_is)
                    .note_more("; the store pages through every match (pages of 10,000, records built), as counts were taken before Store::count"),
            );
        }

        // The whole range, in the console's buckets.
        let (first, last) = whole_range(&store)?;
        let step_ns = ((last - first) as u64).div_ceil(BUCKETS as u64).max(1);
        let buckets = Buckets {
            since_ns: first,
            step_ns,
            count: BUCKETS,
        };
        let figure = format!("histogram, common word '{common_term}', whole range");
        if let Grep::Rg(_) = grep {
            rows.push(
                compare(runs, count(word.clone(), Some(buckets)), || rg_word(raw))?
                    .row(&figure, &rg_is)
                    .target("no slower than rg (ratio ≤ 1)", at_most_one)
                    .note_more(&format!(
                        "; {BUCKETS} buckets by level (rg: the count alone)"
                    )),
            );
        }
        let seconds = (step_ns / 1_000_000_000).max(1);
        rows.push(
            against_clickhouse(
                clickhouse,
                runs,
                &format!("{figure}, vs ClickHouse"),
                count(word.clone(), Some(buckets)),
                &format!(
                    "SELECT count() FROM (SELECT toStartOfInterval(ts, INTERVAL {seconds} SECOND) AS bucket, level, count() FROM logs WHERE hasTokenCaseInsensitive(message, '{}') GROUP BY bucket, level)",
                    sql_text(common_term)
                ),
            )?
            .note_more("; found: the store's matches, ClickHouse's (bucket, level) groups"),
        );

        rows.push(against_clickhouse(
            clickhouse,
            runs,
            &format!("count, rare term '{RARE_TERM}'"),
            count(
                Filter {
                    text: Some(Phrase::new(RARE_TERM)),
                    ..Filter::default()
                },
                None,
            ),
            &format!("SELECT count() FROM logs WHERE message LIKE '%{RARE_TERM}%'"),
        )?);
        if let Some(id) = &ingested.probe.request {
            rows.push(against_clickhouse(
                clickhouse,
                runs,
                "count, one request id",
                count(
                    Filter {
                        request_id: Some(id.clone()),
                        ..Filter::default()
                    },
                    None,
                ),
                &format!(
                    "SELECT count() FROM logs WHERE request_id = '{}'",
                    sql_text(id)
                ),
            )?);
        }
    }

    {
        // As the server reads: a page stops inside blocks the next page
        // needs, which the block cache keeps (without it every page would
        // decode again the blocks it shares with the one before).
        let store = open(1, tailwater_store::DEFAULT_BLOCK_CACHE_BYTES)?;
        let every_record = |cursor| Query {
            filter: Filter::default(),
            direction: Direction::Forward,
            limit: FULL_READ_PAGE,
            cursor,
        };
        let read_all = || -> anyhow::Result<usize> {
            let mut query = every_record(None);
            let mut read = 0;
            loop {
                let page = store.query(TENANT, &query)?;
                read += page.records.len();
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => return Ok(read),
                }
            }
        };
        rows.push(
            against_clickhouse(
                clickhouse,
                runs.min(3),
                "read every record, records built",
                read_all,
                "SELECT * FROM logs FORMAT Null",
            )?
            .note_more(&format!(
                "; store: Store::query, pages of {FULL_READ_PAGE} records in time order, every record built; ClickHouse: every row read, in no order"
            )),
        );
        // Borrowed rows, each looked at (its message's bytes summed).
        let scan_all = || -> anyhow::Result<usize> {
            let mut query = every_record(None);
            let (mut read, mut bytes) = (0, 0usize);
            loop {
                let page = store.scan(TENANT, &query, |row| {
                    read += 1;
                    bytes += row.message.len() + row.fields_json.len();
                    Ok(())
                })?;
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            std::hint::black_box(bytes);
            Ok(read)
        };
        rows.push(
            against_clickhouse(
                clickhouse,
                runs,
                "read every record",
                scan_all,
                "SELECT * FROM logs FORMAT Null",
            )?
            .note_more(&format!(
                "; store: Store::scan, pages of {FULL_READ_PAGE} borrowed records in time order, each looked at; ClickHouse: every row read, in no order"
            )),
        );
        // The same, beside ClickHouse asked for the store's order.
        rows.push(
            against_clickhouse(
                clickhouse,
                runs,
                "read every record, vs ClickHouse in time order",
                scan_all,
                "SELECT * FROM logs ORDER BY ts FORMAT Null",
            )?
            .note_more("; store: as the row above; ClickHouse: every row read and sorted by time, as the store returns them"),
        );
        // What an export does: every record written out as NDJSON, ids
        // sealed as the server seals them, into /dev/null.
        let seal = tailwater_model::SealKey::new([7; tailwater_model::SealKey::LEN]).tenant(TENANT);
        let export_all = || -> anyhow::Result<usize> {
            let mut sink = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
            let mut query = every_record(None);
            let (mut read, mut text) = (0, Vec::with_capacity(8 << 20));
            loop {
                let page = store.scan(TENANT, &query, |row| {
                    row.write_json(&seal.id(row.position), &mut text)?;
                    text.push(b'\n');
                    read += 1;
                    Ok(())
                })?;
                std::io::Write::write_all(&mut sink, &text)?;
                text.clear();
                match page.next {
                    Some(next) => query.cursor = Some(next),
                    None => break,
                }
            }
            Ok(read)
        };
        rows.push(
            against_clickhouse(
                clickhouse,
                runs,
                "export every record as NDJSON",
                export_all,
                "SELECT * FROM logs INTO OUTFILE '/dev/null' APPEND FORMAT JSONEachRow",
            )?
            .note_more(&format!(
                "; store: Store::scan, pages of {FULL_READ_PAGE}, each record written as the server's export writes it (RecordRef::write_json, every label, fields, a sealed id) into /dev/null; ClickHouse: its six columns as JSON lines into /dev/null"
            )),
        );
    }

    let threads = tailwater_store::default_query_threads();
    if let (Grep::Rg(_), true) = (grep, threads > 1) {
        let store = open(threads, 0)?;
        let count =
            || -> anyhow::Result<usize> { Ok(store.count(TENANT, &word, None)?.total() as usize) };
        rows.push(
            compare(runs, count, || rg_word(raw))?
                .row(
                    &format!("count, common word '{common_term}', {threads} query threads"),
                    &rg_is,
                )
                .note_more("; the store on every core (query_threads), rg on one file"),
        );
    }
    Ok(rows)
}

/// Whether a ratio (store ÷ baseline) is at most 1.
fn at_most_one(_: f64, ratio: Option<f64>) -> Option<bool> {
    ratio.map(|ratio| ratio <= 1.0)
}

/// A row of `store` beside ClickHouse's `sql`, or one saying why there is
/// no ClickHouse.
fn against_clickhouse(
    clickhouse: &mut anyhow::Result<ClickHouse>,
    runs: usize,
    figure: &str,
    store: impl FnMut() -> anyhow::Result<usize>,
    sql: &str,
) -> anyhow::Result<Row> {
    match clickhouse {
        Ok(clickhouse) => Ok(compare(runs, store, || clickhouse.count(sql))?
            .row(figure, CLICKHOUSE_BASELINE)
            .target(
                "no slower than ClickHouse, 1 thread (ratio ≤ 1)",
                at_most_one,
            )
            .note_more(&format!("; ClickHouse: {sql}"))),
        Err(error) => Ok(Row::new(figure, Unit::Milliseconds, None, None)
            .baseline_is("—")
            .note(format!("{NO_CLICKHOUSE}{error:#}"))),
    }
}

/// The times of the store's oldest and newest records.
fn whole_range(store: &Store) -> anyhow::Result<(i64, i64)> {
    let edge = |direction| -> anyhow::Result<i64> {
        let page = store.query(
            TENANT,
            &Query {
                filter: Filter::default(),
                direction,
                limit: 1,
                cursor: None,
            },
        )?;
        Ok(page
            .records
            .first()
            .map_or(0, |record| timestamp_ns(record.ts)))
    };
    Ok((edge(Direction::Forward)?, edge(Direction::Backward)? + 1))
}

/// `rg` counting the lines that hold `word` as a word, ignoring case; `None`
/// without `rg`.
fn rg_words(grep: &Grep, file: &Path, word: &str) -> Option<Command> {
    let Grep::Rg(_) = grep else { return None };
    let mut command = Command::new("rg");
    command
        .env_remove("RIPGREP_CONFIG_PATH")
        .args([
            "--mmap",
            "--fixed-strings",
            "--count",
            "--text",
            "--ignore-case",
            "--word-regexp",
            "--regexp",
        ])
        .arg(word)
        .arg(file);
    Some(command)
}

/// `text` inside a single-quoted SQL string.
fn sql_text(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\'', "\\'")
}
