//! The memtable: records appended since they were last flushed into parts,
//! in memory, readable by id (for live tail) and by time (for history).
//! Everything in it is also in the write-ahead log.
//!
//! It is made of tables: the active one, which appends go to, and frozen
//! ones, full tables a background thread is writing into parts. A table
//! keeps its records in id order (ids are consecutive, so finding one is
//! arithmetic) and, per stream, the order of those records by time: agents
//! send each stream in time order, so that order is almost always appended
//! to, and a time-range read merges the streams.
//!
//! Records are kept as [`Row`]s, their labels once by their stream. Readers
//! get an [`Entry`]: the row and its stream.
//!
//! A frozen table a flush could not write whole is replaced by a held one:
//! the rows of the partitions it could not write, kept (readable, in the
//! log) and retried, while the next tables flush as usual. Its ids are not
//! consecutive and lie below those of parts written after it.
//!
//! Readers see only records whose id is at most the visibility watermark:
//! the store raises it once records are durable (see `Store::append`), so a
//! reader never sees a record that could still be lost, nor a later one
//! before an earlier one.

use std::cmp::Ordering as CmpOrdering;
use std::collections::{BinaryHeap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use tailwater_model::{Cursor, Filter, LogRecord};

use crate::part::StreamLabels;
use crate::row::Row;
use crate::visibility::Visibility;

/// What one heap allocation costs beyond the bytes asked for (size-class
/// rounding and the allocator's own bookkeeping), roughly.
const ALLOCATION_OVERHEAD_BYTES: usize = 16;

/// Rows a table reserves room for at most.
const MAX_RESERVED_ROWS: usize = 4 << 20;

/// Records not yet in parts: the active table and the frozen ones.
pub(crate) struct Memtable {
    active: Table,
    frozen: Vec<Arc<Table>>,
    visible: Arc<Visibility>,
    /// Rows a table has room for.
    max_rows: usize,
    /// The row vectors of the last table flushed, emptied, for the next
    /// table: their pages are already the process's, so filling them again
    /// costs no page faults (fresh memory is zeroed by the kernel page by
    /// page as it is first touched).
    spare: Option<(Vec<Row>, Vec<u32>)>,
}

/// One table: records in ascending id order.
pub(crate) struct Table {
    first_id: u64,
    records: Vec<Row>,
    /// Each record's index in `streams`.
    stream_of: Vec<u32>,
    streams: Vec<TableStream>,
    by_key: HashMap<StreamKey, usize>,
    bytes: usize,
    created: std::time::Instant,
    /// The last write-ahead log segment holding this table's records.
    pub last_segment: u64,
    /// Rows a flush could not write (see the module's notes).
    pub held: bool,
}

/// A stream's records in a table.
pub(crate) struct TableStream {
    pub tenant: String,
    pub labels: StreamLabels,
    /// Positions in `records`, in time order (then id).
    order: Vec<u32>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct StreamKey {
    tenant: String,
    labels: StreamLabels,
}

impl Memtable {
    /// An empty memtable whose tables are frozen at about `max_bytes`.
    pub fn new(visible: Arc<Visibility>, next_id: u64, segment: u64, max_bytes: usize) -> Memtable {
        // Room for the most rows a table can hold (were their strings
        // empty), reserved once: growing the vector copied all of it each
        // time. Pages are only resident once rows are written to them.
        // (Capped: past that, a huge memtable's vector grows as usual.)
        let max_rows = (max_bytes / std::mem::size_of::<Row>()).clamp(1, MAX_RESERVED_ROWS);
        Memtable {
            active: Table::new(next_id, segment, max_rows, None),
            frozen: Vec::new(),
            visible,
            max_rows,
            spare: None,
        }
    }

    /// Adds rows of one stream, with ids above every id in the memtable.
    pub fn insert_stream(
        &mut self,
        tenant: &str,
        labels: &StreamLabels,
        records: Vec<Row>,
        segment: u64,
    ) {
        self.active.insert_stream(tenant, labels, records, segment);
    }

    /// Estimated memory of the active table: its rows (the vectors' room
    /// beyond them is reserved, not resident), what each row holds on the
    /// heap, and the streams' time-order index.
    pub fn active_bytes(&self) -> usize {
        let table = &self.active;
        let index: usize = table.streams.iter().map(|s| s.order.capacity()).sum();
        table.records.len() * (std::mem::size_of::<Row>() + std::mem::size_of::<u32>())
            + table.bytes
            + index * std::mem::size_of::<u32>()
    }

    pub fn active_is_empty(&self) -> bool {
        self.active.records.is_empty()
    }

    /// Time since the active table's first record.
    pub fn active_age(&self) -> std::time::Duration {
        self.active.created.elapsed()
    }

    /// The lowest sequence number of `(tenant, app, runner, boot)` in any
    /// table (what dedup compaction must keep answering from memory).
    pub fn lowest_seq(&self, key: &crate::dedup::Key) -> Option<u64> {
        let (tenant, app, runner, boot) = key;
        std::iter::once(&self.active)
            .chain(self.frozen.iter().map(|table| &**table))
            .flat_map(|table| table.streams())
            .filter(|(stream, _)| {
                stream.tenant == *tenant
                    && stream.labels.app == *app
                    && stream.labels.runner == *runner
                    && stream.labels.boot == *boot
            })
            .flat_map(|(_, rows)| rows.map(|row| row.seq))
            .min()
    }

    /// Frozen tables waiting for their first flush (held ones are not).
    pub fn frozen_count(&self) -> usize {
        self.frozen.iter().filter(|table| !table.held).count()
    }

    /// Estimated memory of the held tables.
    pub fn held_bytes(&self) -> usize {
        let held = self.frozen.iter().filter(|table| table.held);
        held.map(|table| table.records.len() * std::mem::size_of::<Row>() + table.bytes)
            .sum()
    }

    /// The last log segment holding rows of a held table: no segment up to
    /// it may be deleted yet.
    pub fn held_through_segment(&self) -> Option<u64> {
        let held = self.frozen.iter().filter(|table| table.held);
        held.map(|table| table.last_segment).max()
    }

    /// Every frozen table, oldest first.
    pub fn frozen_tables(&self) -> Vec<Arc<Table>> {
        self.frozen.clone()
    }

    /// Puts a held table in the place of the frozen one it keeps rows of.
    pub fn replace(&mut self, table: &Arc<Table>, held: Table) {
        if let Some(slot) = self.frozen.iter_mut().find(|f| Arc::ptr_eq(f, table)) {
            *slot = Arc::new(held);
        }
    }

    /// Makes the active table a frozen one and starts a new one for ids from
    /// `next_id`. Returns the frozen table, for its flush.
    pub fn freeze(&mut self, next_id: u64, segment: u64) -> Arc<Table> {
        let room = self.spare.take();
        let next = Table::new(next_id, segment, self.max_rows, room);
        let table = Arc::new(std::mem::replace(&mut self.active, next));
        self.frozen.push(table.clone());
        table
    }

    /// Drops a frozen table whose records are now in parts.
    pub fn forget(&mut self, table: &Arc<Table>) {
        self.frozen.retain(|frozen| !Arc::ptr_eq(frozen, table));
    }

    /// Keeps a forgotten table's emptied row vectors for the next table.
    pub fn recycle(&mut self, spare: (Vec<Row>, Vec<u32>)) {
        self.spare = Some(spare);
    }

    /// The lowest id from which the memtable holds every record (a held
    /// table's rows are a few, among ids in parts).
    pub fn min_id(&self) -> Option<u64> {
        self.tables()
            .find(|table| !table.records.is_empty() && !table.held)
            .map(|table| table.first_id)
    }

    /// Records and message bytes per tenant and app.
    pub fn app_totals(&self) -> Vec<(String, String, u64, u64)> {
        let mut totals: HashMap<(&str, &str), (u64, u64)> = HashMap::new();
        for table in self.tables() {
            for (stream, records) in table.streams() {
                let entry = totals
                    .entry((&stream.tenant, &stream.labels.app))
                    .or_default();
                for record in records {
                    entry.0 += 1;
                    entry.1 += record.message.len() as u64;
                }
            }
        }
        totals
            .into_iter()
            .map(|((tenant, app), (records, bytes))| {
                (tenant.to_owned(), app.to_owned(), records, bytes)
            })
            .collect()
    }

    fn tables(&self) -> impl Iterator<Item = &Table> {
        self.frozen
            .iter()
            .map(|table| &**table)
            .chain(std::iter::once(&self.active))
    }

    /// Visible records with ids above `after`, in id order.
    pub fn after_id(&self, after: u64) -> impl Iterator<Item = Entry<'_>> {
        let visible = self.visible.load();
        self.tables()
            .flat_map(move |table| {
                let skip = table.records.partition_point(|record| record.id <= after);
                table.records[skip..]
                    .iter()
                    .zip(&table.stream_of[skip..])
                    .map(|(record, stream)| Entry {
                        record,
                        stream: &table.streams[*stream as usize],
                    })
            })
            .take_while(move |entry| entry.record.id <= visible)
    }

    /// Visible records within the bounds, in time order (or reversed).
    pub fn in_time_range(
        &self,
        lower: Bound<Cursor>,
        upper: Bound<Cursor>,
        backward: bool,
    ) -> Box<dyn Iterator<Item = Entry<'_>> + '_> {
        let visible = self.visible.load();
        let mut runs = Vec::new();
        for table in self.tables() {
            for stream in &table.streams {
                let position = |index: &u32| {
                    let row = &table.records[*index as usize];
                    Cursor {
                        ts_ns: row.ts_ns,
                        position: row.id,
                    }
                };
                let start = match &lower {
                    Bound::Unbounded => 0,
                    Bound::Included(cursor) => {
                        stream.order.partition_point(|i| position(i) < *cursor)
                    }
                    Bound::Excluded(cursor) => {
                        stream.order.partition_point(|i| position(i) <= *cursor)
                    }
                };
                let end = match &upper {
                    Bound::Unbounded => stream.order.len(),
                    Bound::Included(cursor) => {
                        stream.order.partition_point(|i| position(i) <= *cursor)
                    }
                    Bound::Excluded(cursor) => {
                        stream.order.partition_point(|i| position(i) < *cursor)
                    }
                };
                if start < end {
                    runs.push(Run {
                        records: &table.records,
                        stream,
                        order: &stream.order[start..end],
                    });
                }
            }
        }
        let merged = Merge::new(runs, backward);
        Box::new(merged.filter(move |entry| entry.record.id <= visible))
    }
}

impl Table {
    /// An empty table in `room` (a flushed table's emptied vectors), or in
    /// new vectors with room for `max_rows`.
    fn new(
        first_id: u64,
        segment: u64,
        max_rows: usize,
        room: Option<(Vec<Row>, Vec<u32>)>,
    ) -> Table {
        let (records, stream_of) =
            room.unwrap_or_else(|| (Vec::with_capacity(max_rows), Vec::with_capacity(max_rows)));
        Table {
            first_id,
            records,
            stream_of,
            streams: Vec::new(),
            by_key: HashMap::new(),
            bytes: 0,
            created: std::time::Instant::now(),
            last_segment: segment,
            held: false,
        }
    }

    /// A held table with this table's rows that `keep` takes (by tenant,
    /// labels and row), in their id order, whose log segments are this
    /// table's.
    pub fn held_rows(&self, keep: impl Fn(&str, &StreamLabels, &Row) -> bool) -> Table {
        let mut held = Table::new(self.first_id, self.last_segment, 0, None);
        for (row, stream) in self.records.iter().zip(&self.stream_of) {
            let stream = &self.streams[*stream as usize];
            if keep(&stream.tenant, &stream.labels, row) {
                held.insert_stream(&stream.tenant, &stream.labels, vec![row.clone()], 0);
            }
        }
        held.last_segment = self.last_segment;
        held.held = true;
        held
    }

    fn insert_stream(
        &mut self,
        tenant: &str,
        labels: &StreamLabels,
        records: Vec<Row>,
        segment: u64,
    ) {
        let Some(first) = records.first() else { return };
        if self.records.is_empty() {
            self.first_id = first.id;
            self.created = std::time::Instant::now();
        }
        // Replayed streams come segment by segment, after the table was
        // made for the newest: its last segment is the newest of them all.
        self.last_segment = self.last_segment.max(segment);
        let key = StreamKey {
            tenant: tenant.to_owned(),
            labels: labels.clone(),
        };
        let stream = match self.by_key.get(&key) {
            Some(&stream) => stream,
            None => {
                self.streams.push(TableStream {
                    tenant: key.tenant.clone(),
                    labels: key.labels.clone(),
                    order: Vec::new(),
                });
                self.by_key.insert(key, self.streams.len() - 1);
                self.streams.len() - 1
            }
        };
        for record in records {
            self.bytes += estimated_bytes(&record);
            let position = self.records.len() as u32;
            let order = &mut self.streams[stream].order;
            let cursor = (record.ts_ns, record.id);
            let in_order = order.last().is_none_or(|last| {
                let last = &self.records[*last as usize];
                (last.ts_ns, last.id) <= cursor
            });
            if in_order {
                order.push(position);
            } else {
                let records = &self.records;
                let at = order.partition_point(|i| {
                    let other = &records[*i as usize];
                    (other.ts_ns, other.id) <= cursor
                });
                order.insert(at, position);
            }
            self.records.push(record);
            self.stream_of.push(stream as u32);
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Its row vectors, emptied (the rows dropped), for
    /// [`Memtable::recycle`].
    pub fn into_spare(self) -> (Vec<Row>, Vec<u32>) {
        let (mut records, mut stream_of) = (self.records, self.stream_of);
        records.clear();
        stream_of.clear();
        (records, stream_of)
    }

    /// The streams, each with its records (without labels) in time order.
    pub fn streams(&self) -> impl Iterator<Item = (&TableStream, impl Iterator<Item = &Row>)> {
        self.streams.iter().map(|stream| {
            (
                stream,
                stream
                    .order
                    .iter()
                    .map(|index| &self.records[*index as usize]),
            )
        })
    }
}

/// A stream's records within bounds.
struct Run<'a> {
    records: &'a [Row],
    stream: &'a TableStream,
    order: &'a [u32],
}

/// A record in the memtable and the stream it belongs to.
#[derive(Clone, Copy)]
pub(crate) struct Entry<'a> {
    pub record: &'a Row,
    pub stream: &'a TableStream,
}

impl Entry<'_> {
    /// Whether the record is `tenant`'s and `filter` takes it.
    pub fn matches(&self, tenant: &str, filter: &Filter) -> bool {
        self.stream.tenant == tenant && self.record.matches(filter, &self.stream.labels)
    }

    /// The whole record, labels included.
    pub fn to_record(self) -> LogRecord {
        self.record
            .to_record(&self.stream.tenant, &self.stream.labels)
    }
}

/// Streams merged into one time order through a heap of their heads.
struct Merge<'a> {
    runs: Vec<Run<'a>>,
    heap: BinaryHeap<Head>,
    backward: bool,
}

struct Head {
    position: (i64, u64),
    run: usize,
    backward: bool,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.position == other.position
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// The heap pops its greatest: the next record in the merge's order.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        let order = self.position.cmp(&other.position);
        if self.backward {
            order
        } else {
            order.reverse()
        }
    }
}

impl<'a> Merge<'a> {
    fn new(runs: Vec<Run<'a>>, backward: bool) -> Merge<'a> {
        let mut merge = Merge {
            runs,
            heap: BinaryHeap::new(),
            backward,
        };
        for run in 0..merge.runs.len() {
            merge.push_head(run);
        }
        merge
    }

    fn push_head(&mut self, run: usize) {
        let Run { records, order, .. } = &self.runs[run];
        let next = if self.backward {
            order.last()
        } else {
            order.first()
        };
        if let Some(index) = next {
            let record = &records[*index as usize];
            self.heap.push(Head {
                position: (record.ts_ns, record.id),
                run,
                backward: self.backward,
            });
        }
    }
}

impl<'a> Iterator for Merge<'a> {
    type Item = Entry<'a>;

    fn next(&mut self) -> Option<Entry<'a>> {
        let head = self.heap.pop()?;
        let run = &mut self.runs[head.run];
        let records = run.records;
        let index = if self.backward {
            let (last, rest) = run
                .order
                .split_last()
                .expect("a run in the heap has records");
            run.order = rest;
            *last
        } else {
            let (first, rest) = run
                .order
                .split_first()
                .expect("a run in the heap has records");
            run.order = rest;
            *first
        };
        let stream = run.stream;
        self.push_head(head.run);
        Some(Entry {
            record: &records[index as usize],
            stream,
        })
    }
}

/// Estimated heap memory a row holds: its strings.
pub(crate) fn estimated_bytes(row: &Row) -> usize {
    fn string(text: &str) -> usize {
        if text.is_empty() {
            0
        } else {
            text.len() + ALLOCATION_OVERHEAD_BYTES
        }
    }
    string(&row.message) + string(&row.fields) + row.request_id.as_deref().map_or(0, string)
}
