//! What the store knows of a request without reading a block: which apps
//! hold it, its records' count and time span, from the part footers'
//! request index and one pass over the memtable.

use std::collections::HashMap;
use std::sync::Arc;

use crate::memtable::Memtable;
use crate::part::reader::Part;

/// What the store knows of one request (of one `app`, or of every app):
/// from the part footers' request index and a pass over the memtable,
/// without reading a block.
pub(crate) fn request_summary(
    tenant: &str,
    app: Option<&str>,
    request_id: &str,
    memtable: &Memtable,
    parts: &[Arc<Part>],
) -> Option<crate::RequestSummary> {
    let of_app = |candidate: &str| app.is_none_or(|app| app == candidate);
    let mut summary: Option<crate::RequestSummary> = None;
    for part in parts
        .iter()
        .filter(|part| part.footer.partition.tenant == tenant && of_app(&part.footer.partition.app))
    {
        add_from_part(&mut summary, part, request_id);
    }
    for entry in memtable.after_id(0) {
        let row = entry.record;
        if entry.stream.tenant == tenant
            && of_app(&entry.stream.labels.app)
            && row.request_id.as_deref() == Some(request_id)
        {
            add_row(&mut summary, request_id, &entry);
        }
    }
    summary
}

/// [`request_summary`] of many requests, each of one app (`(app, id)`),
/// in their order: the memtable is passed over once for them all.
pub(crate) fn request_summaries(
    tenant: &str,
    requests: &[(String, String)],
    memtable: &Memtable,
    parts: &[Arc<Part>],
) -> Vec<Option<crate::RequestSummary>> {
    let mut summaries: Vec<Option<crate::RequestSummary>> = vec![None; requests.len()];
    let mut index: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (at, (app, id)) in requests.iter().enumerate() {
        index.entry((app, id)).or_default().push(at);
    }
    for part in parts
        .iter()
        .filter(|part| part.footer.partition.tenant == tenant)
    {
        let app = part.footer.partition.app.as_str();
        for (at, (wanted_app, id)) in requests.iter().enumerate() {
            if wanted_app == app {
                add_from_part(&mut summaries[at], part, id);
            }
        }
    }
    for entry in memtable.after_id(0) {
        let Some(id) = entry.record.request_id.as_deref() else {
            continue;
        };
        if entry.stream.tenant != tenant {
            continue;
        }
        if let Some(places) = index.get(&(entry.stream.labels.app.as_str(), id)) {
            for &at in places {
                add_row(&mut summaries[at], id, &entry);
            }
        }
    }
    summaries
}

/// Adds what `part`'s request index holds of `request_id`.
fn add_from_part(summary: &mut Option<crate::RequestSummary>, part: &Part, request_id: &str) {
    let footer = &part.footer;
    if let Some(meta) = footer.request(request_id) {
        let runner = &footer.streams[meta.stream as usize].labels.runner;
        let (first, last) = footer.request_times(meta);
        add(
            summary,
            request_id,
            (&footer.partition.app, runner),
            meta.records,
            (first, last),
            meta.status,
        );
    }
}

/// Adds one memtable row of `request_id`.
fn add_row(
    summary: &mut Option<crate::RequestSummary>,
    request_id: &str,
    entry: &crate::memtable::Entry<'_>,
) {
    let row = entry.record;
    add(
        summary,
        request_id,
        (&entry.stream.labels.app, &entry.stream.labels.runner),
        1,
        (row.ts_ns, row.ts_ns),
        crate::part::block::BlockRecord::status(row),
    );
}

/// Adds `records` of a request, from `first` to `last`: its app and runner
/// are those of its earliest record.
fn add(
    summary: &mut Option<crate::RequestSummary>,
    request_id: &str,
    (app, runner): (&str, &str),
    records: u64,
    (first, last): (i64, i64),
    status: Option<i64>,
) {
    let entry = summary.get_or_insert_with(|| crate::RequestSummary {
        id: request_id.to_owned(),
        app: app.to_owned(),
        runner: runner.to_owned(),
        records: 0,
        first_ts: first,
        last_ts: last,
        status: None,
    });
    entry.records += records;
    if first < entry.first_ts {
        entry.first_ts = first;
        entry.app = app.to_owned();
        entry.runner = runner.to_owned();
    }
    entry.last_ts = entry.last_ts.max(last);
    if status.is_some() {
        entry.status = status;
    }
}

/// The apps of `tenant` holding records of one request, from the part
/// footers' request index and the memtable, in name order.
pub(crate) fn request_apps(
    tenant: &str,
    request_id: &str,
    memtable: &Memtable,
    parts: &[Arc<Part>],
) -> Vec<String> {
    let mut apps = std::collections::BTreeSet::new();
    for part in parts
        .iter()
        .filter(|part| part.footer.partition.tenant == tenant)
    {
        if part.footer.request(request_id).is_some() {
            apps.insert(part.footer.partition.app.clone());
        }
    }
    for entry in memtable.after_id(0) {
        if entry.stream.tenant == tenant && entry.record.request_id.as_deref() == Some(request_id) {
            apps.insert(entry.stream.labels.app.clone());
        }
    }
    apps.into_iter().collect()
}
