//! Reading a part: its footer at open, its blocks on demand.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tailwater_model::LogRecord;

use super::block::DecodedBlock;
use super::writer::SETTLED_BLOCK_MAX_RECORDS;
use super::{Footer, MAGIC, MAGIC_03, MAGIC_04, TRAILER_LEN};

/// Bytes read from the end of a part at open, in the hope that the footer
/// fits (it is read again, whole, when it does not).
const TAIL_READ: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("cannot read part {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("part {path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// An open part: its footer in memory, its file for block reads.
pub struct Part {
    /// Unique among the parts this process opened: what the block cache
    /// knows its blocks by.
    id: u64,
    path: PathBuf,
    file: File,
    pub footer: Footer,
    pub file_len: u64,
}

impl Part {
    pub fn open(path: &Path) -> Result<Part, PartError> {
        let io_error = |source| PartError::Io {
            path: path.to_owned(),
            source,
        };
        let corrupt = |reason: &str| PartError::Corrupt {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let file = File::open(path).map_err(io_error)?;
        let file_len = file.metadata().map_err(io_error)?.len();
        if file_len < TRAILER_LEN as u64 {
            return Err(corrupt("shorter than its trailer"));
        }
        let tail_len = file_len.min(TAIL_READ);
        let mut tail = vec![0u8; tail_len as usize];
        file.read_exact_at(&mut tail, file_len - tail_len)
            .map_err(io_error)?;
        let trailer = &tail[tail.len() - TRAILER_LEN..];
        if ![MAGIC, MAGIC_04, MAGIC_03]
            .iter()
            .any(|magic| magic[..] == trailer[8..16])
        {
            if trailer[8..14] == MAGIC[..6] {
                // TWPARTnn of another version: kept in quarantine, not lost.
                return Err(corrupt(&format!(
                    "written in part format {} by another tailwater version; this one reads {}, {} and {}",
                    String::from_utf8_lossy(&trailer[8..16]),
                    String::from_utf8_lossy(MAGIC_03),
                    String::from_utf8_lossy(MAGIC_04),
                    String::from_utf8_lossy(MAGIC)
                )));
            }
            return Err(corrupt("no part trailer (magic) at its end"));
        }
        let footer_len = u32::from_le_bytes(trailer[0..4].try_into().unwrap()) as u64;
        let footer_crc = u32::from_le_bytes(trailer[4..8].try_into().unwrap());
        if footer_len + TRAILER_LEN as u64 > file_len {
            return Err(corrupt("footer length beyond the file"));
        }
        let footer_bytes = if footer_len + TRAILER_LEN as u64 <= tail_len {
            tail[tail.len() - TRAILER_LEN - footer_len as usize..tail.len() - TRAILER_LEN].to_vec()
        } else {
            let mut bytes = vec![0u8; footer_len as usize];
            file.read_exact_at(&mut bytes, file_len - TRAILER_LEN as u64 - footer_len)
                .map_err(io_error)?;
            bytes
        };
        if crc32fast::hash(&footer_bytes) != footer_crc {
            return Err(corrupt("footer checksum mismatch"));
        }
        let decoded = zstd::stream::decode_all(footer_bytes.as_slice())
            .map_err(|_| corrupt("footer does not decompress"))?;
        let footer: Footer =
            postcard::from_bytes(&decoded).map_err(|_| corrupt("footer does not decode"))?;
        let data_end = file_len - TRAILER_LEN as u64 - footer_len;
        for block in &footer.blocks {
            if block.offset + u64::from(block.len) > data_end
                || block.stream as usize >= footer.streams.len()
            {
                return Err(corrupt("a block lies outside the part"));
            }
        }
        // What a footer says of its blocks' records is believed before a
        // block is read (a count sums it to refuse a scan, a count without
        // a filter takes it as the answer), so it must be what a writer
        // could have written: 1 to SETTLED_BLOCK_MAX_RECORDS a block (a record
        // takes at least a byte of columns), and the part's total their
        // sum. Anything else is damage, whatever its checksum says.
        let mut records = 0u64;
        for block in &footer.blocks {
            if block.count == 0
                || block.count as usize > SETTLED_BLOCK_MAX_RECORDS
                || block.raw_len < block.count
                || block.min_ts > block.max_ts
                || block.min_id > block.max_id
            {
                return Err(corrupt(
                    "a block's index entry claims records it cannot hold",
                ));
            }
            records += u64::from(block.count);
        }
        if records != footer.records {
            return Err(corrupt(
                "the part's record count is not the sum of its blocks'",
            ));
        }
        // The request index points into the streams and blocks: a footer
        // that says otherwise is damaged, whatever its checksum says.
        for request in &footer.requests {
            if request.stream as usize >= footer.streams.len()
                || request
                    .blocks
                    .iter()
                    .any(|block| *block as usize >= footer.blocks.len())
            {
                return Err(corrupt(
                    "a request's index entry names a stream or block the part has not",
                ));
            }
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Ok(Part {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_owned(),
            file,
            footer,
            file_len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The records of block `index`, checksum verified.
    pub fn read_block(&self, index: usize) -> Result<Vec<LogRecord>, PartError> {
        let decoded = self.open_block(index)?;
        (0..decoded.len())
            .map(|position| decoded.record(position))
            .collect::<Result<_, _>>()
            .map_err(|reason| PartError::Corrupt {
                path: self.path.clone(),
                reason: format!("block {index}: {reason}"),
            })
    }

    /// Block `index`'s columns, checksum verified, to build records from
    /// one at a time.
    pub fn open_block(&self, index: usize) -> Result<DecodedBlock, PartError> {
        self.open_block_holding(index, None)
    }

    /// [`Part::open_block`] for a reader that needs only the records whose
    /// message holds `word` ([`DecodedBlock::holding`]).
    pub fn open_block_holding(
        &self,
        index: usize,
        word: Option<&[u8]>,
    ) -> Result<DecodedBlock, PartError> {
        let meta = &self.footer.blocks[index];
        let compressed = self.read_compressed(index)?;
        let labels = &self.footer.streams[meta.stream as usize].labels;
        DecodedBlock::holding(
            &compressed,
            meta.raw_len as usize,
            &self.footer.partition.tenant,
            labels,
            word,
        )
        .map_err(|reason| PartError::Corrupt {
            path: self.path.clone(),
            reason: format!("block {index}: {reason}"),
        })
    }

    /// Block `index` as stored (compressed), checksum verified: what a merge
    /// copies into a new part without decoding it.
    pub fn read_compressed(&self, index: usize) -> Result<Vec<u8>, PartError> {
        let mut compressed = Vec::new();
        self.read_compressed_into(index, &mut compressed)?;
        Ok(compressed)
    }

    /// The first byte of block `index` as stored, its format (see
    /// `layout.rs`), read without its checksum: a hint for choosing how to
    /// read it, which then checks it.
    pub fn block_format(&self, index: usize) -> Result<u8, PartError> {
        let mut byte = [0u8];
        self.file
            .read_exact_at(&mut byte, self.footer.blocks[index].offset)
            .map_err(|source| PartError::Io {
                path: self.path.clone(),
                source,
            })?;
        Ok(byte[0])
    }

    /// [`Part::read_compressed`] into `buffer` (replacing what it held),
    /// reusing its memory: a reader of many blocks keeps one.
    pub fn read_compressed_into(
        &self,
        index: usize,
        buffer: &mut Vec<u8>,
    ) -> Result<(), PartError> {
        let meta = &self.footer.blocks[index];
        buffer.clear();
        buffer.resize(meta.len as usize, 0);
        self.file
            .read_exact_at(buffer, meta.offset)
            .map_err(|source| PartError::Io {
                path: self.path.clone(),
                source,
            })?;
        if crc32fast::hash(buffer) != meta.crc32 {
            return Err(PartError::Corrupt {
                path: self.path.clone(),
                reason: format!("block {index} checksum mismatch"),
            });
        }
        Ok(())
    }
}
