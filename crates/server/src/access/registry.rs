//! The registry: tenants, their apps and settings, and API tokens (hashed),
//! and the limits on what an owner may keep in it.
//!
//! Readers act on an immutable snapshot of the state (an `Arc`, swapped in
//! whole once a change is durable), so a token lookup never waits for a
//! writer, let alone its disk. Writers take turns: each checks its change
//! against the newest state, appends it as one record to the journal
//! (fsync; see [`journal`] for the files and their compaction), and only
//! then swaps in the new state: what the server acts on is always on disk,
//! and a failed write changes nothing.
//!
//! Every name and free-text value kept here is bounded (tenant and app
//! names by their format, token names by [`RegistryLimits`]), and so are a
//! tenant's live tokens and apps: one owner cannot make the registry, and
//! with it every tenant's requests, slow.
//!
//! Who may do what is not decided here but in [`crate::access::scopes`].

mod journal;
pub mod replica;
pub mod seal;
mod tenants;
mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tailwater_model::tenancy::{AppInfo, AppSettings, Scope, TenantInfo, TokenInfo};
use tailwater_model::{SealKey, TenantSeal};

pub(crate) use journal::write_atomically;
use journal::Journal;
pub use journal::{COMPACT_FACTOR, COMPACT_MIN_BYTES};
pub use tenants::{validate_app_name, validate_tenant_name};
pub use tokens::generate_secret;
pub(crate) use tokens::no_such_token;
use tokens::{generate_id, hash, import_legacy_tokens};

/// The tenant that exists from the first start; admin tokens act on it
/// unless a request names another tenant.
pub const DEFAULT_TENANT: &str = "default";
/// The token file of earlier releases (admin tokens only), imported once.
const LEGACY_TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "tw_";
const TOKEN_ID_PREFIX: &str = "tok_";
const MAX_APP_NAME_BYTES: usize = 200;
/// Longest token name, in bytes, unless configured otherwise.
pub const DEFAULT_MAX_TOKEN_NAME_BYTES: usize = 200;
/// Live (neither revoked nor expired) tokens one tenant may have, unless
/// configured otherwise.
pub const DEFAULT_MAX_TOKENS_PER_TENANT: usize = 1_000;
/// Apps one tenant may have, unless configured otherwise.
pub const DEFAULT_MAX_APPS_PER_TENANT: usize = 10_000;

/// Reasons a change hits a limit, as errors and `/metrics` name them.
pub const NAME_TOO_LONG: &str = "name_too_long";
pub const TOO_MANY_TOKENS: &str = "too_many_tokens";
pub const TOO_MANY_APPS: &str = "too_many_apps";

/// What an owner may keep in the registry (`tailwater server` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryLimits {
    /// `--max-token-name-bytes`.
    pub max_token_name_bytes: usize,
    /// `--max-tokens-per-tenant`: live ones; revoked and expired tokens are
    /// kept (so they are refused as such) but do not count.
    pub max_tokens_per_tenant: usize,
    /// `--max-apps-per-tenant`.
    pub max_apps_per_tenant: usize,
}

impl Default for RegistryLimits {
    fn default() -> RegistryLimits {
        RegistryLimits {
            max_token_name_bytes: DEFAULT_MAX_TOKEN_NAME_BYTES,
            max_tokens_per_tenant: DEFAULT_MAX_TOKENS_PER_TENANT,
            max_apps_per_tenant: DEFAULT_MAX_APPS_PER_TENANT,
        }
    }
}

/// Why a registry change was refused.
#[derive(Debug)]
pub enum RegistryError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
    /// A limit of [`RegistryLimits`]: `reason` is one of [`NAME_TOO_LONG`],
    /// [`TOO_MANY_TOKENS`], [`TOO_MANY_APPS`].
    Limit {
        reason: &'static str,
        message: String,
    },
    /// Distributed mode: the cluster's shared registry cannot take the
    /// change now (NATS unreachable, no quorum); nothing changed here.
    Unavailable(String),
    Io(anyhow::Error),
}

impl From<anyhow::Error> for RegistryError {
    fn from(error: anyhow::Error) -> RegistryError {
        RegistryError::Io(error)
    }
}

/// Why a presented token does not authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRejected {
    Unknown,
    Expired,
    Revoked,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    /// The last journal change this state holds (0 in files of earlier
    /// releases, which had no journal).
    #[serde(default)]
    journal_seq: u64,
    // Behind `Arc`s, so a change copies pointers, not every token, to make
    // the next state.
    tenants: BTreeMap<String, Arc<Tenant>>,
    tokens: Vec<Arc<StoredToken>>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tenant {
    created: Timestamp,
    /// The `private_logs` new apps start with.
    #[serde(default)]
    private_logs: bool,
    #[serde(default)]
    apps: BTreeMap<String, App>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct App {
    created: Timestamp,
    #[serde(flatten)]
    settings: AppSettings,
}

/// A token at rest: its public id, the SHA-256 of its secret (never the
/// secret), and what it may do.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct StoredToken {
    id: String,
    /// Hex SHA-256 of the secret.
    sha256: String,
    scope: Scope,
    /// `None` for admin tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    created: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revoked: Option<Timestamp>,
}

impl StoredToken {
    fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            scope: self.scope,
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            name: self.name.clone(),
            created: self.created,
            expires: self.expires,
            revoked: self.revoked,
        }
    }

    fn is_live(&self, now: Timestamp) -> bool {
        self.revoked.is_none() && self.expires.is_none_or(|expires| expires > now)
    }
}

/// One journaled change: the new value of one tenant (its apps left as
/// they are), app or token. Applying one twice gives the same state.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Change {
    Tenant {
        name: String,
        created: Timestamp,
        private_logs: bool,
    },
    App {
        tenant: String,
        name: String,
        app: App,
    },
    Token(StoredToken),
}

/// The state and its indexes: tokens by digest and by id.
#[derive(Clone)]
struct Loaded {
    state: State,
    by_digest: HashMap<[u8; 32], usize>,
    by_id: HashMap<Arc<str>, usize>,
    /// Distributed mode: the revision in the cluster's bucket of each key
    /// this state holds as the bucket had it (see [`replica`]); changes
    /// are written by compare-and-set on it. Empty when embedded.
    revisions: HashMap<String, u64>,
}

impl Loaded {
    fn new(state: State) -> anyhow::Result<Loaded> {
        let mut loaded = Loaded {
            by_digest: HashMap::with_capacity(state.tokens.len()),
            by_id: HashMap::with_capacity(state.tokens.len()),
            revisions: HashMap::new(),
            state,
        };
        for index in 0..loaded.state.tokens.len() {
            loaded.index_token(index)?;
        }
        Ok(loaded)
    }

    fn index_token(&mut self, index: usize) -> anyhow::Result<()> {
        let token = &self.state.tokens[index];
        let digest: [u8; 32] = hex::decode(&token.sha256)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| format!("token {} has a malformed hash", token.id))?;
        self.by_digest.insert(digest, index);
        self.by_id.insert(Arc::from(token.id.as_str()), index);
        Ok(())
    }

    /// The token whose digest is `digest`. The lookup is by the digest of
    /// the presented secret, which tells a guesser nothing about any stored
    /// one; the final comparison is in constant time all the same.
    fn find(&self, digest: &[u8; 32]) -> Option<&StoredToken> {
        let (stored, &index) = self.by_digest.get_key_value(digest)?;
        bool::from(stored.ct_eq(digest)).then(|| &*self.state.tokens[index])
    }

    fn token(&self, id: &str) -> Option<&StoredToken> {
        self.by_id.get(id).map(|&index| &*self.state.tokens[index])
    }

    fn apply(&mut self, change: Change) -> anyhow::Result<()> {
        match change {
            Change::Tenant {
                name,
                created,
                private_logs,
            } => {
                let tenant = self.state.tenants.entry(name).or_insert_with(|| {
                    Arc::new(Tenant {
                        created,
                        private_logs,
                        apps: BTreeMap::new(),
                    })
                });
                let tenant = Arc::make_mut(tenant);
                tenant.created = created;
                tenant.private_logs = private_logs;
            }
            Change::App { tenant, name, app } => {
                let found =
                    self.state.tenants.get_mut(&tenant).with_context(|| {
                        format!("app '{name}' of a tenant '{tenant}' not there")
                    })?;
                Arc::make_mut(found).apps.insert(name, app);
            }
            Change::Token(token) => match self.by_id.get(token.id.as_str()) {
                Some(&index) => {
                    // A digest the token no longer has must not find it.
                    let old = &self.state.tokens[index].sha256;
                    if *old != token.sha256 {
                        if let Some(digest) = hex::decode(old)
                            .ok()
                            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                        {
                            if self.by_digest.get(&digest) == Some(&index) {
                                self.by_digest.remove(&digest);
                            }
                        }
                    }
                    self.state.tokens[index] = Arc::new(token);
                    self.index_token(index)?;
                }
                None => {
                    self.state.tokens.push(Arc::new(token));
                    self.index_token(self.state.tokens.len() - 1)?;
                }
            },
        }
        Ok(())
    }
}

/// Who a token stands for, once it checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenIdentity {
    pub id: String,
    pub scope: Scope,
    pub tenant: Option<String>,
    pub app: Option<String>,
}

pub struct Registry {
    /// What readers act on; replaced whole, never changed in place.
    current: RwLock<Arc<Loaded>>,
    /// Taken by writers only, for the whole of a change.
    journal: Mutex<Journal>,
    journal_shared: Arc<journal::Shared>,
    limits: RegistryLimits,
    /// Changes refused by a limit, by tenant and reason, for `/metrics`.
    refused: Mutex<BTreeMap<(String, &'static str), u64>>,
    /// Seals record positions for each tenant.
    seal_key: SealKey,
    /// Distributed mode: where changes are written (the cluster's shared
    /// registry), set once at start; unset, the registry is embedded.
    replication: OnceLock<Arc<dyn replica::Replication>>,
    /// Distributed mode: one change at a time from this node.
    writer: Mutex<()>,
    /// Distributed mode: the newest revision of the bucket applied here,
    /// and writers waiting for theirs.
    applied: Mutex<u64>,
    applied_changed: Condvar,
    replica_stats: replica::ReplicaStats,
}

impl Registry {
    /// Loads the registry from `dir` (creating it, and the default tenant,
    /// on first start). When there is no token at all, creates an admin
    /// token: the bootstrap token if given, else a random one, returned so
    /// the caller can show it once. A bootstrap token never seen before is
    /// added as admin; one that was revoked stays revoked.
    pub fn open(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<(Registry, Option<String>)> {
        Registry::open_with(dir, bootstrap, true)
    }

    /// Loads the registry from `dir` as [`Registry::open`] does but makes
    /// no admin token: distributed mode makes it in the cluster's shared
    /// registry once this node has caught up with it
    /// ([`Registry::ensure_admin`]).
    pub fn open_replica(dir: &Path) -> anyhow::Result<Registry> {
        Ok(Registry::open_with(dir, None, false)?.0)
    }

    fn open_with(
        dir: &Path,
        bootstrap: Option<&str>,
        make_admin: bool,
    ) -> anyhow::Result<(Registry, Option<String>)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let legacy = dir.join(LEGACY_TOKENS_FILE);
        let mut changed = false;
        let on_disk = journal::load(dir, || {
            changed = true;
            Ok(State {
                tokens: import_legacy_tokens(&legacy)?,
                ..State::default()
            })
        })?;
        let mut loaded = on_disk.loaded;
        if !loaded.state.tenants.contains_key(DEFAULT_TENANT) {
            loaded.apply(Change::Tenant {
                name: DEFAULT_TENANT.to_owned(),
                created: Timestamp::now(),
                private_logs: false,
            })?;
            changed = true;
        }

        let mut shown_once = None;
        let new_admin = match bootstrap {
            _ if !make_admin => None,
            Some(token) => loaded
                .find(&hash(token))
                .is_none()
                .then(|| token.to_owned()),
            None if loaded.state.tokens.is_empty() => {
                let token = generate_secret();
                shown_once = Some(token.clone());
                Some(token)
            }
            None => None,
        };
        if let Some(secret) = new_admin {
            loaded.apply(Change::Token(StoredToken {
                id: generate_id(),
                sha256: hex::encode(hash(&secret)),
                scope: Scope::Admin,
                tenant: None,
                app: None,
                name: Some("bootstrap".to_owned()),
                created: Timestamp::now(),
                expires: None,
                revoked: None,
            }))?;
            changed = true;
        }
        let seal_key = seal::load_or_create(dir)?;
        let journal = Journal::start(dir, &loaded, changed || on_disk.replayed)?;
        if changed && legacy.exists() {
            fs::remove_file(&legacy)
                .with_context(|| format!("cannot remove {}", legacy.display()))?;
        }
        let registry = Registry {
            current: RwLock::new(Arc::new(loaded)),
            journal_shared: journal.shared(),
            journal: Mutex::new(journal),
            limits: RegistryLimits::default(),
            refused: Mutex::default(),
            seal_key,
            replication: OnceLock::new(),
            writer: Mutex::new(()),
            applied: Mutex::new(0),
            applied_changed: Condvar::new(),
            replica_stats: replica::ReplicaStats::default(),
        };
        Ok((registry, shown_once))
    }

    /// How `tenant` is shown record positions: sealed for it alone.
    pub fn seal(&self, tenant: &str) -> TenantSeal {
        self.seal_key.tenant(tenant)
    }

    /// The same registry with these limits on what owners may add.
    pub fn with_limits(mut self, limits: RegistryLimits) -> Registry {
        self.limits = limits;
        self
    }

    /// The state now: held as long as the caller likes, without holding
    /// anyone up.
    fn read(&self) -> Arc<Loaded> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Decides a change on the newest state, journals it, then makes it
    /// current. `decide` gives the change (`None`: nothing to write) and
    /// what to answer.
    ///
    /// In distributed mode the change is written to the cluster's shared
    /// registry instead, and made current here when this node's watch of
    /// it applies it ([`replica`]); `decide` may then be asked again, on a
    /// newer state, when another node changed the same key first.
    fn change<R>(
        &self,
        decide: impl Fn(&Loaded) -> Result<(Option<Change>, R), RegistryError>,
    ) -> Result<R, RegistryError> {
        if let Some(replication) = self.replication.get() {
            return self.change_replicated(replication.as_ref(), decide);
        }
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let current = self.read();
        let (change, result) = decide(&current)?;
        let Some(change) = change else {
            return Ok(result);
        };
        let mut next = (*current).clone();
        drop(current);
        next.apply(change.clone())?;
        journal.append(&change)?;
        next.state.journal_seq = journal.next_seq() - 1;
        let next = Arc::new(next);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        journal.maybe_compact(next);
        Ok(result)
    }

    /// Counts a refusal by a limit and returns it as the error.
    fn refuse(&self, tenant: &str, reason: &'static str, message: String) -> RegistryError {
        *self
            .refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry((tenant.to_owned(), reason))
            .or_default() += 1;
        RegistryError::Limit { reason, message }
    }

    /// Changes refused by a limit so far: (tenant, reason, count).
    pub fn refused(&self) -> Vec<(String, &'static str, u64)> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|((tenant, reason), count)| (tenant.clone(), *reason, *count))
            .collect()
    }

    /// Bytes written for changes since the registry was opened (journal
    /// records and compacted snapshots).
    pub fn bytes_written(&self) -> u64 {
        self.journal_shared.written()
    }

    /// Waits until no compaction is under way.
    pub fn wait_for_compaction(&self) {
        while self.journal_shared.compacting() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    // --- tokens ---
}

/// A compaction under way finishes first, so the registry's files are whole
/// for whoever opens them next (a test, or the next start in this process).
impl Drop for Registry {
    fn drop(&mut self) {
        self.wait_for_compaction();
    }
}

impl Tenant {
    fn new(private_logs: bool) -> Tenant {
        Tenant {
            created: Timestamp::now(),
            private_logs,
            apps: BTreeMap::new(),
        }
    }

    fn info(&self, name: &str) -> TenantInfo {
        TenantInfo {
            name: name.to_owned(),
            created: self.created,
            private_logs: self.private_logs,
            apps: self.apps.len(),
        }
    }
}

impl App {
    fn info(&self, tenant: &str, name: &str) -> AppInfo {
        AppInfo {
            tenant: tenant.to_owned(),
            name: name.to_owned(),
            created: self.created,
            settings: self.settings.clone(),
        }
    }
}

pub(crate) fn no_such_tenant(name: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no such tenant '{name}': check the name (`tailwater tenant list`)"
    ))
}

#[cfg(test)]
mod tests;
