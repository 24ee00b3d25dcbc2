//! What the store knows to be damaged: parts quarantined at open (they did
//! not open; none of their records is served) and blocks of served parts
//! found unreadable since, by a query or a merge (a checksum mismatch, bad
//! compression, bad columns). A query skips what it cannot read and hands
//! the skipped blocks to its caller ([`crate::Page::skipped`]); they are
//! also noted here, so `Store::damaged_parts` can list them, the store's
//! record counts leave their records out, and damaged block reads are
//! counted ([`crate::Counters::damaged_block_reads`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::part::reader::Part;
use crate::part::Partition;

/// A block a read skipped because it could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedBlock {
    /// The part's file.
    pub part: PathBuf,
    /// Its tenant, app and day.
    pub partition: Partition,
    /// The block's index in its part.
    pub block: usize,
    /// Records the block holds, by its part's footer (not all need match
    /// the read's filter).
    pub records: u64,
    /// Why it could not be read.
    pub reason: String,
}

impl SkippedBlock {
    pub(crate) fn of(part: &Part, block: usize, reason: impl ToString) -> SkippedBlock {
        SkippedBlock {
            part: part.path().to_owned(),
            partition: part.footer.partition.clone(),
            block,
            records: u64::from(part.footer.blocks[block].count),
            reason: reason.to_string(),
        }
    }
}

/// One damaged part, as [`crate::Store::damaged_parts`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedPart {
    /// The part's file, relative to the data directory: under `parts/`
    /// while it is served, under `quarantine/` (the same folders below)
    /// once quarantined.
    pub path: PathBuf,
    /// Its tenant, app and day, when its footer could be read.
    pub partition: Option<Partition>,
    /// Whether it could not be opened and was moved aside: none of its
    /// records is served.
    pub quarantined: bool,
    /// Why, from the first failure found.
    pub reason: String,
    /// The blocks found unreadable so far (a served part's other blocks are
    /// read as usual).
    pub blocks: Vec<usize>,
    /// Records in those blocks; unknown for a quarantined part.
    pub records: Option<u64>,
}

/// The damaged parts known since the store opened.
#[derive(Debug, Default)]
pub(crate) struct Damage {
    parts: BTreeMap<PathBuf, Known>,
}

#[derive(Debug)]
struct Known {
    partition: Option<Partition>,
    quarantined: bool,
    reason: String,
    /// Unreadable blocks and the records each holds.
    blocks: BTreeMap<usize, u64>,
}

impl Damage {
    /// A part that did not open and now lies at `path` (under
    /// `quarantine/`), or one found there from an earlier start.
    pub fn quarantined(&mut self, path: PathBuf, reason: String) {
        self.parts.insert(
            path,
            Known {
                partition: None,
                quarantined: true,
                reason,
                blocks: BTreeMap::new(),
            },
        );
    }

    /// A block a read skipped. Returns whether it was not known before.
    pub fn skipped(&mut self, skipped: &SkippedBlock) -> bool {
        let known = self
            .parts
            .entry(skipped.part.clone())
            .or_insert_with(|| Known {
                partition: Some(skipped.partition.clone()),
                quarantined: false,
                reason: skipped.reason.clone(),
                blocks: BTreeMap::new(),
            });
        known
            .blocks
            .insert(skipped.block, skipped.records)
            .is_none()
    }

    /// A part a merge could not read a block of (which one is found by
    /// the next read of it).
    pub fn unmergeable(&mut self, part: &Part, reason: String) {
        self.parts
            .entry(part.path().to_owned())
            .or_insert_with(|| Known {
                partition: Some(part.footer.partition.clone()),
                quarantined: false,
                reason,
                blocks: BTreeMap::new(),
            });
    }

    /// Records in `part`'s blocks known to be unreadable.
    pub fn unreadable_records(&self, part: &Path) -> u64 {
        self.parts
            .get(part)
            .map_or(0, |known| known.blocks.values().sum())
    }

    /// The known damaged parts that are quarantined or still `served`
    /// (not merged away or deleted since), paths made relative to `dir`.
    pub fn list(&self, dir: &Path, served: impl Fn(&Path) -> bool) -> Vec<DamagedPart> {
        self.parts
            .iter()
            .filter(|(path, known)| known.quarantined || served(path))
            .map(|(path, known)| DamagedPart {
                path: path.strip_prefix(dir).unwrap_or(path).to_owned(),
                partition: known.partition.clone(),
                quarantined: known.quarantined,
                reason: known.reason.clone(),
                blocks: known.blocks.keys().copied().collect(),
                records: (!known.quarantined).then(|| known.blocks.values().sum()),
            })
            .collect()
    }
}
