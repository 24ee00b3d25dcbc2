//! Drains: an app's records sent on to a URL its owner chose
//! (`/v1/apps/{app}/drains`). The server's `drains` module delivers them.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// How a drain writes its batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainFormat {
    /// One record a line, in the API's record shape
    /// (`application/x-ndjson`).
    #[default]
    Ndjson,
    /// OTLP/HTTP logs, protobuf (`application/x-protobuf`, to `/v1/logs`).
    Otlp,
    /// Loki push, snappy-compressed protobuf (to `/loki/api/v1/push`).
    Loki,
}

impl DrainFormat {
    pub const ALL: [DrainFormat; 3] = [DrainFormat::Ndjson, DrainFormat::Otlp, DrainFormat::Loki];

    pub fn as_str(self) -> &'static str {
        match self {
            DrainFormat::Ndjson => "ndjson",
            DrainFormat::Otlp => "otlp",
            DrainFormat::Loki => "loki",
        }
    }
}

impl std::fmt::Display for DrainFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DrainFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<DrainFormat, String> {
        DrainFormat::ALL
            .into_iter()
            .find(|format| format.as_str() == text)
            .ok_or_else(|| format!("unknown drain format '{text}': use ndjson, otlp or loki"))
    }
}

/// `POST /v1/apps/{app}/drains`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewDrain {
    /// Where batches are POSTed: an `http://` or `https://` URL.
    pub url: String,
    #[serde(default)]
    pub format: DrainFormat,
    /// A name to tell drains apart by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A bearer token the receiver asks for (another tailwater's ingest
    /// token, say), sent as `Authorization: Bearer …`. Kept as the secret
    /// is, never shown again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// Whether a drain delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainState {
    Active,
    /// By its owner, or after too many failed attempts in a row
    /// (`paused_reason` says which); resuming goes on from its cursor.
    Paused,
}

/// A drain as the API shows it (never its secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainInfo {
    /// `drn_` and 64 random bits in hex.
    pub id: String,
    pub tenant: String,
    pub app: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub url: String,
    pub format: DrainFormat,
    pub state: DrainState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_reason: Option<String>,
    pub created: Timestamp,
    /// Failed attempts in a row at its current batch.
    #[serde(default)]
    pub failures: u32,
    /// The last failure, as the drain saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Records delivered since the server started.
    #[serde(default)]
    pub delivered: u64,
}

/// The answer to a creation: the secret signing its deliveries, shown this
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedDrain {
    pub secret: String,
    #[serde(flatten)]
    pub info: DrainInfo,
}
