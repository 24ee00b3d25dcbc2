//! Counting matches: how many of a tenant's records a filter takes, by app,
//! and if asked by time bucket and level (a histogram), without building a
//! record.
//!
//! The blocks to read are chosen as a page chooses them (`query::Prune`).
//! Then each is judged on its columns alone:
//! - a block wholly inside the time window whose filter asks nothing of
//!   single records (labels and time only) is counted from its footer entry
//!   when no histogram is asked, once its bytes pass their checksum (read,
//!   not decompressed: a damaged block is skipped and said so, as a page
//!   skips it);
//! - a filter that requires a word (a phrase's, a substring's or a regex's
//!   inner words) searches the block's whole message column at once, ASCII
//!   lowercased, for its longest such word with a vectorized substring
//!   search (`memchr::memmem`), checks word bounds only at hits, and judges
//!   only the records holding a hit;
//! - when what a record holding that word must still pass is its time
//!   alone (a one-word phrase, with or without labels and a window: the
//!   count and the histogram of a word), the block is read lean
//!   ([`LeanReader`]): its numbers and messages decompressed into buffers
//!   kept from block to block, never its fields, the message column
//!   lowercased where it was decompressed and searched as bytes (neither
//!   copied into a `String` nor checked as UTF-8: `part/lean.rs` says why
//!   that is safe), each record's time worked out only when a bucket or a
//!   window cutting the block asks for it; so is a block whose filter asks
//!   nothing of single records but a histogram or a window cutting it (its
//!   numbers alone); of a settled block of format 3, the templates are
//!   searched in place of the messages for a word holding no digit, the
//!   numbers not joined back (`part/lean.rs`);
//! - any other is judged record by record, on borrowed columns
//!   ([`DecodedBlock::parts`]).
//!
//! Every record a count takes passes the same `Filter::matches_parts` a page
//! applies, so a count is the number of records paging would return. One
//! difference, on bytes the store never writes: a block that passes its
//! checksum and decodes, but whose fields of some record are not JSON, is
//! counted by what it holds (fields are read only when a filter asks for
//! them), where a page skips it. Blocks
//! are shared among up to `StoreOptions::query_threads` threads (the
//! caller's, and helpers free in the store's pool: `scan_threads`), and a
//! count whose blocks hold more than `StoreOptions::count_scan_limit`
//! records is refused before it reads one; the
//! memtable is counted under the read lock, the parts after it is let go
//! (a part's file stays open while it is read, even once merged away).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use memchr::memmem::Finder;
use tailwater_model::words::is_word_byte;
use tailwater_model::{Filter, Level, Query};

use crate::damage::SkippedBlock;
use crate::memtable::Memtable;
use crate::part::block::DecodedBlock;
use crate::part::layout;
use crate::part::lean::{LeanBlock, LeanReader};
use crate::part::reader::Part;
use crate::part::BlockMeta;
use crate::query::{asks_of_records, candidate_blocks, Bounds, Prune};
use crate::scan_threads::ScanThreads;
use crate::StoreError;

/// Levels a histogram counts apart, by [`Level::code`].
pub const LEVELS: usize = 6;

/// The time buckets of a histogram: `count` of them, `step_ns` long, the
/// first from `since_ns`. A record past the last is counted in the last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buckets {
    pub since_ns: i64,
    pub step_ns: u64,
    pub count: usize,
}

impl Buckets {
    fn index(&self, ts_ns: i64) -> usize {
        let offset = ts_ns.saturating_sub(self.since_ns).max(0) as u64;
        ((offset / self.step_ns.max(1)) as usize).min(self.count.saturating_sub(1))
    }
}

/// One app's matches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppCount {
    pub total: u64,
    /// Per bucket, matches by [`Level::code`]; empty when no buckets were
    /// asked.
    pub buckets: Vec<[u64; LEVELS]>,
}

impl AppCount {
    fn add(&mut self, other: &AppCount) {
        self.total += other.total;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), [0; LEVELS]);
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            for (count, more) in mine.iter_mut().zip(theirs) {
                *count += more;
            }
        }
    }
}

/// The answer of [`crate::Store::count`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Matches by app (apps without any are left out).
    pub apps: BTreeMap<String, AppCount>,
    /// The newest record id readable when the count began.
    pub as_of: u64,
    /// Blocks that may hold matches but could not be read, skipped: their
    /// matches are not counted.
    pub skipped: Vec<SkippedBlock>,
}

impl Counts {
    /// Matches in every app.
    pub fn total(&self) -> u64 {
        self.apps.values().map(|app| app.total).sum()
    }
}

/// A count's plan, made once: what each record must still pass once its
/// block is chosen.
struct Scan<'f> {
    bounds: Bounds,
    /// The filter without what choosing blocks settled for whole streams
    /// (labels) or what `bounds` checks (time).
    rest: Filter,
    /// Whether `rest` asks anything of single records.
    per_record: bool,
    /// The longest word every match holds, to search for.
    word: Option<Finder<'f>>,
    /// Whether that word has ASCII letters (else the column is searched as
    /// it is, not lowercased).
    word_has_letters: bool,
    /// Whether that word has ASCII digits (else a format 3 block's
    /// templates are searched, not its messages joined again).
    word_has_digits: bool,
    /// What a record holding the word whole must still pass: `rest`, or
    /// without its phrase when the phrase is that one word (the hit proves
    /// it), and whether that asks anything.
    at_hit: Filter,
    at_hit_per_record: bool,
    buckets: Option<Buckets>,
}

impl<'f> Scan<'f> {
    fn new(filter: &Filter, bounds: Bounds, word: &'f str, buckets: Option<Buckets>) -> Scan<'f> {
        let rest = Filter {
            app: None,
            version: None,
            runner: None,
            boot: None,
            since: None,
            until: None,
            ..filter.clone()
        };
        let per_record = asks_of_records(&rest);
        let hit_proves_phrase = rest.contains.is_none()
            && rest.regex.is_none()
            && rest
                .text
                .as_ref()
                .is_some_and(|phrase| phrase.words.len() == 1 && phrase.words[0] == word);
        let at_hit = if hit_proves_phrase {
            Filter {
                text: None,
                ..rest.clone()
            }
        } else {
            rest.clone()
        };
        Scan {
            bounds,
            per_record,
            at_hit_per_record: asks_of_records(&at_hit),
            at_hit,
            rest,
            word: (!word.is_empty()).then(|| Finder::new(word.as_bytes())),
            word_has_letters: word.bytes().any(|byte| byte.is_ascii_alphabetic()),
            word_has_digits: word.bytes().any(|byte| byte.is_ascii_digit()),
            buckets,
        }
    }

    fn tally(&self) -> AppCount {
        AppCount {
            total: 0,
            buckets: vec![[0; LEVELS]; self.buckets.map_or(0, |buckets| buckets.count)],
        }
    }

    fn take(&self, count: &mut AppCount, ts_ns: i64, level: Level) {
        count.total += 1;
        if let Some(buckets) = &self.buckets {
            count.buckets[buckets.index(ts_ns)][level.code() as usize] += 1;
        }
    }

    /// Counts block `index` of `part` from its footer alone, if it can be.
    fn by_footer(&self, part: &Part, index: usize) -> Option<u64> {
        let meta = &part.footer.blocks[index];
        (!self.per_record && self.buckets.is_none() && self.bounds.holds(meta.min_ts, meta.max_ts))
            .then_some(u64::from(meta.count))
    }

    /// Adds the matches of `block` to `count`; `lowered` is a buffer to
    /// reuse. An error when a record's fields do not decode: the block is
    /// then skipped whole.
    fn block(
        &self,
        block: &DecodedBlock,
        lowered: &mut Vec<u8>,
        count: &mut AppCount,
    ) -> Result<(), String> {
        let judge = |index: usize,
                     count: &mut AppCount,
                     (rest, per_record): (&Filter, bool)|
         -> Result<(), String> {
            let position = tailwater_model::Cursor {
                ts_ns: block.ts(index),
                position: block.id(index),
            };
            if !self.bounds.contains(&position) {
                return Ok(());
            }
            if per_record {
                let mut fields_error = None;
                let parts = block.parts(index);
                let matched = rest.matches_parts(parts, || {
                    block.fields(index).unwrap_or_else(|error| {
                        fields_error = Some(error);
                        Default::default()
                    })
                });
                if let Some(error) = fields_error {
                    return Err(error);
                }
                if !matched {
                    return Ok(());
                }
            }
            self.take(count, position.ts_ns, block.level(index));
            Ok(())
        };
        let Some(word) = &self.word else {
            for index in 0..block.len() {
                judge(index, count, (&self.rest, self.per_record))?;
            }
            return Ok(());
        };
        let (text, places) = block.message_column();
        let lowered: &[u8] = if self.word_has_letters {
            lowered.clear();
            lowered.extend_from_slice(text.as_bytes());
            lowered.make_ascii_lowercase();
            lowered
        } else {
            text.as_bytes()
        };
        each_hit(word, lowered, places, |record| {
            judge(record, count, (&self.at_hit, self.at_hit_per_record))
        })
    }

    /// Whether a block can be counted from a [`LeanBlock`]: when what a
    /// record must pass, beyond holding the word, is its time alone.
    fn lean(&self) -> bool {
        match self.word {
            Some(_) => !self.at_hit_per_record,
            None => !self.per_record,
        }
    }

    /// Adds the matches of `block` (`meta` its index entry) to `count`:
    /// [`Scan::block`] on the columns a count needs alone, the message
    /// column searched where it was decompressed (lowercased in place).
    fn lean_block(
        &self,
        meta: &BlockMeta,
        block: LeanBlock,
        count: &mut AppCount,
    ) -> Result<(), String> {
        if self.word.is_some() && self.word_has_letters {
            block.messages.make_ascii_lowercase();
        }
        let whole = self.bounds.holds(meta.min_ts, meta.max_ts);
        let mut take = |index: usize| -> Result<(), String> {
            if self.buckets.is_none() && whole {
                count.total += 1;
                return Ok(());
            }
            let position = tailwater_model::Cursor {
                ts_ns: block.ts[index],
                position: block.ids[index],
            };
            if self.bounds.contains(&position) {
                self.take(count, position.ts_ns, block.level(index)?);
            }
            Ok(())
        };
        let Some(word) = &self.word else {
            for index in 0..block.len() {
                take(index)?;
            }
            return Ok(());
        };
        match block.places {
            Some(places) => each_hit(word, block.messages, places, take),
            None => each_line_hit(
                word,
                block.messages,
                (block.len(), block.templates),
                self.buckets.is_some() || !whole,
                take,
            ),
        }
    }
}

/// Calls `hit` with each record (by its place in `places`) whose message
/// in `text` holds `word` whole: searched at once over the column (a
/// vectorized substring search), word bounds checked at hits alone, each
/// record once.
fn each_hit(
    word: &Finder,
    text: &[u8],
    places: &[Range<u32>],
    mut hit: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    let len = word.needle().len();
    let (mut from, mut record) = (0usize, 0usize);
    while let Some(found) = word.find(&text[from..]) {
        let at = from + found;
        while record < places.len() && places[record].end as usize <= at {
            record += 1;
        }
        let Some(place) = places.get(record) else {
            break;
        };
        let (start, end) = (place.start as usize, place.end as usize);
        let whole = at >= start
            && at + len <= end
            && (at == start || !is_word_byte(text[at - 1]))
            && (at + len == end || !is_word_byte(text[at + len]));
        if whole {
            hit(record)?;
            from = end.max(at + 1);
        } else {
            from = at + 1;
        }
    }
    Ok(())
}

/// [`each_hit`] over a column of one message a line (no message holds a
/// newline), or of a format 3 block's templates when `templates` (a mark
/// beside a hit is a word byte: `layout::template_word_before`): no
/// record's place is worked out but at a hit, by counting the newlines
/// before it, and only when `indexed` (else `hit` is given 0: the caller
/// needs no record, only how many); after a hit the search goes on from
/// the next line.
fn each_line_hit(
    word: &Finder,
    text: &[u8],
    (records, templates): (usize, bool),
    indexed: bool,
    mut hit: impl FnMut(usize) -> Result<(), String>,
) -> Result<(), String> {
    let len = word.needle().len();
    // `record` is the record of the line starting at `counted` or after.
    let (mut from, mut record, mut counted) = (0usize, 0usize, 0usize);
    while let Some(found) = word.find(&text[from..]) {
        let at = from + found;
        // A newline is no word byte: a line's ends are word bounds.
        let whole = if templates {
            !layout::template_word_before(text, at) && !layout::template_word_after(text, at + len)
        } else {
            (at == 0 || !is_word_byte(text[at - 1]))
                && (at + len == text.len() || !is_word_byte(text[at + len]))
        };
        if !whole {
            from = at + 1;
            continue;
        }
        if indexed {
            record += memchr::memchr_iter(b'\n', &text[counted..at]).count();
            counted = at;
            if record >= records {
                return Err("block columns disagree in length".into());
            }
        }
        hit(record)?;
        let Some(newline) = memchr::memchr(b'\n', &text[at + len..]) else {
            break;
        };
        from = at + len + newline + 1;
        if indexed {
            (record, counted) = (record + 1, from);
        }
    }
    Ok(())
}

/// Counts `tenant`'s records matching `filter` (its time window included),
/// in the memtable (read now, under the caller's lock) and in `parts`
/// (returned to be scanned once the lock is let go).
pub(crate) fn in_memtable(
    tenant: &str,
    filter: &Filter,
    buckets: Option<Buckets>,
    memtable: &Memtable,
) -> BTreeMap<String, AppCount> {
    let query = Query {
        filter: filter.clone(),
        ..Query::default()
    };
    let bounds = Bounds::of(&query);
    let mut apps: BTreeMap<String, AppCount> = BTreeMap::new();
    if bounds.is_empty() {
        return apps;
    }
    let scan = Scan::new(filter, bounds, "", buckets);
    for entry in memtable.in_time_range(bounds.lower, bounds.upper, false) {
        if !entry.matches(tenant, filter) {
            continue;
        }
        let app = &entry.stream.labels.app;
        if !apps.contains_key(app) {
            apps.insert(app.clone(), scan.tally());
        }
        let count = apps.get_mut(app).expect("inserted");
        scan.take(count, entry.record.ts_ns, entry.record.level);
    }
    apps
}

/// What one count may spend: up to `threads` threads (its caller's, and
/// helpers `pool` has free), and `scan_limit` stored records read.
pub(crate) struct Budget<'a> {
    pub threads: usize,
    pub pool: &'a ScanThreads,
    pub scan_limit: u64,
}

/// Counts `tenant`'s records matching `filter` in `parts`, within
/// `budget`: refused before reading when its blocks hold more records
/// than the budget's scan limit.
pub(crate) fn in_parts(
    tenant: &str,
    filter: &Filter,
    buckets: Option<Buckets>,
    parts: &[Arc<Part>],
    budget: &Budget,
) -> Result<(BTreeMap<String, AppCount>, Vec<SkippedBlock>), StoreError> {
    let query = Query {
        filter: filter.clone(),
        ..Query::default()
    };
    let bounds = Bounds::of(&query);
    if bounds.is_empty() {
        return Ok(Default::default());
    }
    let prune = Prune::new(filter);
    let mut words = filter.required_words();
    words.sort_by_key(|word| std::cmp::Reverse(word.len()));
    let word = words.first().map_or("", String::as_str);
    let scan = Scan::new(filter, bounds, word, buckets);
    let blocks: Vec<(&Part, usize)> = parts
        .iter()
        .filter(|part| bounds.overlaps(part.footer.min_ts, part.footer.max_ts))
        .flat_map(|part| {
            candidate_blocks(part, tenant, &prune)
                .filter(|index| {
                    let meta = &part.footer.blocks[*index];
                    bounds.overlaps(meta.min_ts, meta.max_ts)
                })
                .map(move |index| (&**part, index))
        })
        .collect();
    // Every block chosen is read (checksummed, if not decompressed): its
    // records, matching or not, are the cost the limit bounds.
    let records: u64 = blocks
        .iter()
        .map(|(part, index)| u64::from(part.footer.blocks[*index].count))
        .sum();
    if records > budget.scan_limit {
        return Err(StoreError::CountTooLarge {
            records,
            limit: budget.scan_limit,
        });
    }
    let next = AtomicUsize::new(0);
    let found = Mutex::new((BTreeMap::<String, AppCount>::new(), Vec::new()));
    let work = || {
        let mut apps: BTreeMap<String, AppCount> = BTreeMap::new();
        let mut skipped = Vec::new();
        let mut lowered = Vec::new();
        // Without a zstd context (memory refused) blocks are decoded whole.
        let mut lean = LeanReader::new().ok();
        while let Some(&(part, index)) = blocks.get(next.fetch_add(1, Ordering::Relaxed)) {
            let app = &part.footer.partition.app;
            if !apps.contains_key(app) {
                apps.insert(app.clone(), scan.tally());
            }
            let count = apps.get_mut(app).expect("inserted");
            if let Some(records) = scan.by_footer(part, index) {
                // Read and checksummed, not decompressed: a damaged block
                // is skipped and said so, as a page would.
                match part.read_compressed(index) {
                    Ok(_) => count.total += records,
                    Err(error) => skipped.push(SkippedBlock::of(part, index, error)),
                }
                continue;
            }
            if let Some(reader) = lean.as_mut().filter(|_| scan.lean()) {
                let meta = &part.footer.blocks[index];
                let times = scan.buckets.is_some() || !scan.bounds.holds(meta.min_ts, meta.max_ts);
                let templates = !scan.word_has_digits;
                match reader.read(part, index, scan.word.is_some(), times, templates) {
                    Ok(Some(block)) => {
                        let mut mine = scan.tally();
                        match scan.lean_block(meta, block, &mut mine) {
                            Ok(()) => count.add(&mine),
                            Err(reason) => skipped.push(corrupt(part, index, reason)),
                        }
                        continue;
                    }
                    // Format 1: decoded whole below.
                    Ok(None) => {}
                    Err(error) => {
                        skipped.push(SkippedBlock::of(part, index, error));
                        continue;
                    }
                }
            }
            // Of a format 3 block, only the messages holding a word
            // without digits are joined with their numbers: no other
            // record can match.
            let word = scan
                .word
                .as_ref()
                .filter(|_| !scan.word_has_digits)
                .map(Finder::needle);
            let block = match part.open_block_holding(index, word) {
                Ok(block) => block,
                Err(error) => {
                    skipped.push(SkippedBlock::of(part, index, error));
                    continue;
                }
            };
            let mut mine = scan.tally();
            match scan.block(&block, &mut lowered, &mut mine) {
                Ok(()) => count.add(&mine),
                Err(reason) => skipped.push(corrupt(part, index, reason)),
            }
        }
        let mut found = found.lock().unwrap_or_else(|error| error.into_inner());
        merge(&mut found.0, apps);
        found.1.append(&mut skipped);
    };
    let wanted = budget.threads.clamp(1, blocks.len().max(1)) - 1;
    let lease = budget.pool.lend(tenant, wanted);
    if lease.helpers == 0 {
        work();
    } else {
        std::thread::scope(|scope| {
            for _ in 0..lease.helpers {
                // A thread the system will not give is no failure: the
                // threads that run take its blocks (they share one index).
                let _ = std::thread::Builder::new()
                    .name("tailwater-count".into())
                    .spawn_scoped(scope, work);
            }
            work();
        });
    }
    let (mut apps, skipped) = found
        .into_inner()
        .unwrap_or_else(|error| error.into_inner());
    apps.retain(|_, count| count.total > 0);
    Ok((apps, skipped))
}

/// Adds the counts of `more` to `apps`.
pub(crate) fn merge(apps: &mut BTreeMap<String, AppCount>, more: BTreeMap<String, AppCount>) {
    for (app, count) in more {
        apps.entry(app).or_default().add(&count);
    }
}

/// A block whose contents do not hold together, passed over and reported.
fn corrupt(part: &Part, index: usize, reason: String) -> SkippedBlock {
    SkippedBlock::of(
        part,
        index,
        format!(
            "part {} is corrupt: block {index}: {reason}",
            part.path().display()
        ),
    )
}
