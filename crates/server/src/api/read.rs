//! What every read of records (history, tail, export, histogram) shares once
//! `logs::params` has read its query string: the one place parameters
//! become a query under the server's own limits (`--regex-size-limit`), and
//! the note of what a read had to skip, which its answer carries.

use std::collections::HashSet;
use std::path::PathBuf;

use jiff::Timestamp;
use tailwater_model::wire::{Incomplete, LogsParams};
use tailwater_model::{Filter, Query, TenantSeal};
use tailwater_store::SkippedBlock;

use super::ApiError;
use crate::access::registry::Registry;
use crate::access::scopes::CallerView;
use crate::AppState;

/// `params` as a page query, under the server's limits: a bad or too
/// large value is a 400.
pub(crate) fn query(
    state: &AppState,
    params: &LogsParams,
    now: Timestamp,
    seal: &TenantSeal,
) -> Result<Query, ApiError> {
    refuse_around(params)?;
    params
        .to_query_within(now, state.regex_size_limit, seal)
        .map_err(ApiError::bad_request)
}

/// `params`' filters alone (for a tail or a histogram), under the server's
/// limits.
pub(crate) fn filter(
    state: &AppState,
    params: &LogsParams,
    now: Timestamp,
) -> Result<Filter, ApiError> {
    refuse_around(params)?;
    params
        .to_filter_within(now, state.regex_size_limit)
        .map_err(ApiError::bad_request)
}

/// Parameters of `/v1/logs` that page or follow.
const PAGING: [&str; 4] = ["limit", "direction", "cursor", "after"];

/// Refuses the parameters that page or follow, for a read that answers at
/// once (a count, a histogram); `takes` says what it takes instead.
pub(crate) fn refuse_paging(pairs: &[(String, String)], takes: &str) -> Result<(), ApiError> {
    match pairs
        .iter()
        .find(|(name, _)| PAGING.contains(&name.as_str()))
    {
        Some((name, _)) => Err(ApiError::bad_request(format!(
            "unknown parameter '{name}': {takes}"
        ))),
        None => Ok(()),
    }
}

/// `around` pages history by itself: `GET /v1/logs` takes it out of the
/// parameters before they become a query, and every other read refuses it.
fn refuse_around(params: &LogsParams) -> Result<(), ApiError> {
    match params.around.as_deref() {
        Some(around) if !around.is_empty() => Err(ApiError::bad_request(
            "around reads history only (GET /v1/logs): leave it out here",
        )),
        _ => Ok(()),
    }
}

/// The unreadable blocks a read of several pages skipped, each once: a
/// block that spans two pages is tried, and skipped, by both.
#[derive(Default)]
pub(crate) struct Skipped {
    blocks: HashSet<(PathBuf, usize)>,
    records: u64,
}

impl Skipped {
    /// Notes the blocks of apps `view` may read (all, for owners): a caller
    /// is not told of damage in apps it cannot see, nor so that they exist.
    pub fn add(
        &mut self,
        skipped: &[SkippedBlock],
        view: Option<&CallerView>,
        registry: &Registry,
    ) {
        let visible = skipped
            .iter()
            .filter(|block| view.is_none_or(|view| view.sees_app(&block.partition.app, registry)));
        for block in visible {
            if self.blocks.insert((block.part.clone(), block.block)) {
                self.records += block.records;
            }
        }
    }

    /// What the answer says it lacks, if anything.
    pub fn incomplete(&self) -> Option<Incomplete> {
        (!self.blocks.is_empty())
            .then(|| Incomplete::damaged_blocks(self.blocks.len() as u64, self.records))
    }

    /// [`Skipped::incomplete`] of one page's skipped blocks.
    pub fn of(
        skipped: &[SkippedBlock],
        view: Option<&CallerView>,
        registry: &Registry,
    ) -> Option<Incomplete> {
        let mut once = Skipped::default();
        once.add(skipped, view, registry);
        once.incomplete()
    }
}
