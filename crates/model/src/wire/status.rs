//! `GET /v1/status`: the server, the store, each app's stored logs and
//! damaged parts.

use serde::{Deserialize, Serialize};

/// `GET /v1/status`: the server's version, who the token is, and (for
/// tokens that may see it) the size of the tenant's stored logs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    /// The server's version (`tailwater --version` of the server binary).
    pub version: String,
    /// The tenant the token acts on.
    pub tenant: String,
    /// The token's scope: `admin`, `owner`, `ingest` or `caller`.
    pub scope: crate::tenancy::Scope,
    /// The token's public id (`tok_…`).
    pub token_id: String,
    /// The tenant's stored logs; `None` for scopes that may not manage the
    /// tenant's apps (ingest and caller tokens).
    pub store: Option<StoreStatus>,
}

/// The size of one tenant's stored logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub records: u64,
    /// Bytes of message text, as captured.
    pub raw_bytes: u64,
    /// Bytes on disk of its compressed parts (recent records still in
    /// memory count in `records` and `raw_bytes` only).
    pub stored_bytes: u64,
    pub apps: Vec<AppStatus>,
    /// Parts the server found damaged: quarantined when it started, or
    /// with blocks it could not read since. Their unreadable records are
    /// not in `records`. Absent when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_parts: Vec<DamagedPartStatus>,
}

/// One damaged part of [`StoreStatus::damaged_parts`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedPartStatus {
    /// Its file, relative to the server's data directory.
    pub path: String,
    /// Its app, when its footer could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `true`: it could not be opened and was moved to `quarantine/`, and
    /// none of its records is served. `false`: the blocks in `blocks`
    /// could not be read; its other blocks are served.
    pub quarantined: bool,
    /// Why, from the first failure found.
    pub reason: String,
    /// The unreadable blocks found so far (by index).
    #[serde(default)]
    pub blocks: Vec<u64>,
    /// Records those blocks hold; absent for a quarantined part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<u64>,
}

/// The size of one app's stored logs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AppStatus {
    pub app: String,
    pub records: u64,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
}
