//! The HTTP bodies of tenancy: tenants, apps and their settings, tokens and
//! their scopes. Shared by the server, the client and the CLI.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// What a token may do. The rules are the server's (`auth.rs`); in short:
///
/// - `admin`: everything, in every tenant; the only scope that creates
///   tenants and admin tokens.
/// - `owner`: everything of one tenant: all its logs, its apps, its tokens
///   (but no admin token).
/// - `ingest`: append records for one app of one tenant; reads nothing.
/// - `caller`: read one request's logs at a time (`request=` is required),
///   in one tenant (or one app of it), never of a private app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Admin,
    Owner,
    Ingest,
    Caller,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Admin, Scope::Owner, Scope::Ingest, Scope::Caller];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Owner => "owner",
            Scope::Ingest => "ingest",
            Scope::Caller => "caller",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(text: &str) -> Result<Scope, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == text)
            .ok_or_else(|| format!("unknown scope '{text}': use admin, owner, ingest or caller"))
    }
}

/// The settings of one app. `None` means "the server's default".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSettings {
    /// Callers see nothing of this app's logs.
    #[serde(default)]
    pub private_logs: bool,
    /// Whole days of logs older than this are deleted (else `--retention`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    /// The longest line kept whole, in bytes (else the server's
    /// `--max-line-bytes`); longer ones are cut and marked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<u64>,
    /// Ingest rate limit in lines per second (else the server's
    /// `--app-rate-lines`); past it, 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_lines_per_sec: Option<u64>,
    /// Ingest rate limit in bytes of message text per second (else the
    /// server's `--app-rate-bytes`); past it, 429.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_bytes_per_sec: Option<u64>,
}

/// A change to an app's settings: fields left out stay as they are; a
/// number set to `null` goes back to the server's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_logs: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub retention_days: Option<Option<u32>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub max_line_bytes: Option<Option<u64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub rate_limit_lines_per_sec: Option<Option<u64>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    pub rate_limit_bytes_per_sec: Option<Option<u64>>,
}

impl AppPatch {
    pub fn apply(&self, settings: &mut AppSettings) {
        if let Some(private) = self.private_logs {
            settings.private_logs = private;
        }
        if let Some(value) = self.retention_days {
            settings.retention_days = value;
        }
        if let Some(value) = self.max_line_bytes {
            settings.max_line_bytes = value;
        }
        if let Some(value) = self.rate_limit_lines_per_sec {
            settings.rate_limit_lines_per_sec = value;
        }
        if let Some(value) = self.rate_limit_bytes_per_sec {
            settings.rate_limit_bytes_per_sec = value;
        }
    }
}

/// `null` → `Some(None)`, absent → `None` (with `#[serde(default)]`).
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        value: &Option<Option<T>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(inner) => inner.serialize(serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

/// `POST /v1/apps` (`?tenant=`): a new app; `private_logs` not given is
/// the tenant's default, numbers not given are the server's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApp {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_logs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_line_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_lines_per_sec: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_bytes_per_sec: Option<u64>,
}

/// An app as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub tenant: String,
    pub name: String,
    pub created: Timestamp,
    #[serde(flatten)]
    pub settings: AppSettings,
}

/// `POST /v1/tenants`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    pub name: String,
    /// The `private_logs` new apps of this tenant start with.
    #[serde(default)]
    pub private_logs: bool,
}

/// `PATCH /v1/tenants/{name}`: the tenant's defaults for new apps (apps
/// that exist keep their settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_logs: Option<bool>,
}

/// A tenant as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantInfo {
    pub name: String,
    pub created: Timestamp,
    /// The `private_logs` new apps start with.
    pub private_logs: bool,
    pub apps: usize,
}

/// `POST /v1/tokens`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub scope: Scope,
    /// The token's tenant; the creator's own when left out (admin tokens
    /// have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Required for `ingest`, optional for `caller`, refused otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// How long the token is valid (`30d`, `12h`); forever when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
    /// A note for people, shown in listings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A token as listings show it: never the secret, never its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The public id (`tok_…`), for listing and revoking.
    pub id: String,
    pub scope: Scope,
    /// `None` for admin tokens.
    pub tenant: Option<String>,
    pub app: Option<String>,
    pub name: Option<String>,
    pub created: Timestamp,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
}

/// The answer to `POST /v1/tokens`: the secret, shown this once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}
