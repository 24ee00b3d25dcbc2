//! The spool target: what a restarted agent reads of the segments and
//! ledger a previous one left, whatever a crash or a flipped byte made of
//! them.

use std::fs;

use tailwater_agent::ship::decode::parse_captured;
use tailwater_agent::spool::{read_batch, BatchLimits, SegmentHeader, Spool, Stop};
use tailwater_model::wire::IngestBatch;

/// The spool's formats, as `crates/agent/src/spool.rs` documents them.
pub const SEGMENT_MAGIC: &[u8; 8] = b"TWSPOOL1";
pub const LEDGER_MAGIC: &[u8; 8] = b"TWLEDGR1";
/// The leftover segment the target writes.
pub const SEGMENT_FILE: &str = "000000000001.seg";

/// A leftover segment: raw bytes (mode bit 0 clear), or one frame per part
/// with a valid checksum, the first the header (set); with mode bit 1 set,
/// the last part is the ledger's body instead. The spool is opened, the
/// leftover recovered and adopted, and everything read, shipped as JSON
/// (which must read back as sent) and acknowledged, or discarded where
/// unreadable.
pub fn spool(data: &[u8]) {
    spool_records(data);
}

/// [`spool`], returning how many records were read for shipping: the
/// replay test checks that the seeds' frames reach the record decoder.
pub fn spool_records(data: &[u8]) -> usize {
    let Some((&mode, rest)) = data.split_first() else {
        return 0;
    };
    let dir = crate::scratch();
    let runner = dir.path().join("runner");
    fs::create_dir_all(&runner).unwrap();
    let segment = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let mut parts = crate::split(rest);
        if mode & 2 == 2 && parts.len() > 1 {
            let ledger = parts.pop().unwrap();
            fs::write(runner.join("ledger"), framed(LEDGER_MAGIC, &[ledger])).unwrap();
        }
        framed(SEGMENT_MAGIC, &parts)
    };
    fs::write(runner.join(SEGMENT_FILE), segment).unwrap();

    let header = SegmentHeader {
        app: "app".into(),
        version: "v2".into(),
        runner: "runner".into(),
        boot: "boot2".into(),
        source: Default::default(),
    };
    let Ok((mut spool, mut recovery)) = Spool::open(&runner, header, 1 << 20) else {
        return 0;
    };
    let mut shipped = 0;
    while let Some(leftover) = spool.next_leftover() {
        spool.adopt(leftover.recover(), &mut recovery);
    }
    let limits = BatchLimits {
        max_records: 5,
        max_bytes: 1 << 20,
        lines: None,
        line_bytes: None,
    };
    for _ in 0..10_000 {
        let Some(plan) = spool.plan_read() else {
            break;
        };
        let Ok(batch) = read_batch(&plan, &limits, &mut parse_captured) else {
            spool.release();
            break;
        };
        if let (Stop::Corrupt(at), true) = (batch.stop, batch.records.is_empty()) {
            spool.discard_corrupt(plan.segment(), at);
            continue;
        }
        let header = &batch.header;
        let body = IngestBatch {
            app: header.app.clone(),
            version: header.version.clone(),
            runner: header.runner.clone(),
            boot: header.boot.clone(),
            source: header.source,
            records: batch.records,
        };
        let json = serde_json::to_vec(&body).expect("a batch encodes");
        let sent: IngestBatch = serde_json::from_slice(&json).expect("the server reads a batch");
        assert_eq!(
            sent, body,
            "a batch reaches the server as read from the spool"
        );
        shipped += body.records.len();
        spool.acknowledge(&batch.receipt);
    }
    spool.shutdown();
    shipped
}

/// `magic`, then a `[len][crc32][body]` frame per body.
pub fn framed(magic: &[u8], bodies: &[&[u8]]) -> Vec<u8> {
    let mut bytes = magic.to_vec();
    for body in bodies {
        bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        bytes.extend_from_slice(body);
    }
    bytes
}
