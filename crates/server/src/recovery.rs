//! Telling who lost what when the store's open found its write-ahead log
//! damaged ([`tailwater_store::RecoveryReport`]).
//!
//! Each stretch that held acknowledged records becomes a `system` record at
//! level `error`, written as the server starts:
//!
//! - always in the operator's view: tenant `default`, app [`NOTICE_APP`],
//!   runner [`NOTICE_RUNNER`], with where the damaged bytes were kept and
//!   whose records they were, when known;
//! - and in the logs of the runner that lost them, when the store can tell
//!   whose they were (the damaged frame's own labels still read and an
//!   intact frame beside it names the same tenant, app, runner and boot):
//!   its tenant, app, runner, and boot `<boot>+server`, like the runner
//!   table's notices. Nothing of the server's files is in that one.
//!
//! A log that ends in one whole frame failing its checksum (a damaged
//! byte, not a write cut short: see [`tailwater_store::DamageKind`]) is
//! told the same way, its records said to MAYBE have been acknowledged
//! (`event` `wal_possible_loss`). A torn tail (most likely a write a crash
//! cut short, never acknowledged) is logged and counted by the store
//! (`/metrics`), not written here. A
//! crash before these records are stored loses them (the log was already
//! rewritten); the store's log line and the kept bytes remain.

use jiff::Timestamp;
use serde_json::json;
use tailwater_model::lifecycle::Event;
use tailwater_model::wire::{IngestBatch, IngestRecord};
use tailwater_model::{fields_of, Level, Source};
use tailwater_store::{DamageKind, Store, WalDamage};

use crate::access::registry::{Registry, DEFAULT_TENANT};
use crate::runners::SERVER_BOOT_SUFFIX;

/// The app of the server's own records about itself, in tenant `default`.
pub const NOTICE_APP: &str = "tailwater";
/// The runner of those records.
pub const NOTICE_RUNNER: &str = "server";

/// Writes a `system` record for each stretch of lost records the store's
/// open found (blocking: it appends). The operator's, in tenant `default`,
/// gives the store's positions as they are; the runner's own tenant is told
/// them sealed, as every id it sees ([`tailwater_model::positions`]).
pub fn write_loss_notices(store: &Store, registry: &Registry) {
    let now = Timestamp::now();
    // Unique and rising across starts, as the runner table's notices.
    let first_seq = u64::try_from(now.as_microsecond()).unwrap_or_default();
    for (index, loss) in store.recovery_report().lost_or_possibly().enumerate() {
        let seq = first_seq + index as u64;
        let lost = describe(loss, true);
        let possibly = loss.kind == DamageKind::PossiblyLost;
        let (event, were) = if possibly {
            (
                Event::WalPossibleLoss,
                "MAY have been acknowledged and were lost: the log's last frame was damaged (a damaged byte, not a write a crash cut short)",
            )
        } else {
            (
                Event::WalLoss,
                "were lost: the server's write-ahead log was damaged (the records stored after them were kept)",
            )
        };
        let mut fields = json!({
            "event": event,
            "segment": loss.segment,
            "offset": loss.offset,
            "bytes": loss.bytes,
            "records": loss.records,
            "after_id": loss.after_id,
            "before_id": loss.before_id,
        });
        if let Some((tenant, labels)) = &loss.owner {
            let seal = registry.seal(tenant);
            let mut theirs = fields.clone();
            theirs["after_id"] = json!(loss.after_id.map(|position| seal.id(position)));
            theirs["before_id"] = json!(loss.before_id.map(|position| seal.id(position)));
            let batch = IngestBatch {
                app: labels.app.clone(),
                version: labels.version.clone(),
                runner: labels.runner.clone(),
                boot: format!("{}{SERVER_BOOT_SUFFIX}", labels.boot),
                source: labels.source,
                records: vec![notice(
                    seq,
                    now,
                    format!("{} of this runner {were}", describe(loss, false)),
                    &theirs,
                )],
            };
            append(store, tenant, batch);
            fields["tenant"] = json!(tenant);
            fields["app"] = json!(labels.app);
            fields["runner"] = json!(labels.runner);
            fields["boot"] = json!(labels.boot);
        }
        let copy = loss.copy.as_ref().map(|copy| copy.display().to_string());
        fields["copy"] = json!(copy);
        let whose = match &loss.owner {
            Some((tenant, labels)) => format!(
                "of tenant {tenant}, app {}, runner {} (told in its logs)",
                labels.app, labels.runner
            ),
            None => "whose owner cannot be told".to_owned(),
        };
        let batch = IngestBatch {
            app: NOTICE_APP.into(),
            version: String::new(),
            runner: NOTICE_RUNNER.into(),
            boot: format!("store-recovery{SERVER_BOOT_SUFFIX}"),
            source: Source::default(),
            records: vec![notice(
                seq,
                now,
                format!(
                    "the write-ahead log was damaged: {lost}, {whose}, {} ({} bytes at offset {} of segment {}); the damaged bytes are in {}",
                    if possibly {
                        "MAY have been acknowledged and were lost (the log's last frame, whole but failing its checksum)"
                    } else {
                        "were lost; the records after them were kept"
                    },
                    loss.bytes,
                    loss.offset,
                    loss.segment,
                    copy.as_deref().unwrap_or("no copy")
                ),
                &fields,
            )],
        };
        append(store, DEFAULT_TENANT, batch);
    }
}

/// "10 acknowledged records (ids 21 to 30)", as closely as is known; the
/// positions only `with_positions`.
fn describe(loss: &WalDamage, with_positions: bool) -> String {
    let range = match (loss.after_id, loss.before_id) {
        _ if !with_positions => String::new(),
        (Some(after), Some(before)) if before > after + 1 => {
            format!(" (ids {} to {})", after + 1, before - 1)
        }
        (Some(after), None) if loss.records.is_some_and(|count| count > 0) => {
            let count = loss.records.unwrap_or_default();
            format!(" (ids {} to {})", after + 1, after + count)
        }
        (Some(after), _) => format!(" (ids above {after})"),
        (None, Some(before)) => format!(" (ids below {before})"),
        _ => String::new(),
    };
    let what = if loss.kind == DamageKind::PossiblyLost {
        "records"
    } else {
        "acknowledged records"
    };
    match loss.records {
        Some(count) => format!("{count} {what}{range}"),
        None => format!("{what}{range}"),
    }
}

fn notice(seq: u64, ts: Timestamp, message: String, fields: &serde_json::Value) -> IngestRecord {
    IngestRecord::system(seq, ts, Level::Error, message, fields_of(fields.clone()))
}

fn append(store: &Store, tenant: &str, batch: IngestBatch) {
    if let Err(error) = store.append(tenant, batch) {
        tracing::error!(%error, tenant, "cannot store the notice of records the write-ahead log lost");
    }
}
