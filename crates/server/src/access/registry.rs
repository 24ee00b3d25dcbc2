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
pub mod seal;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tailwater_model::tenancy::{
    AppInfo, AppPatch, AppSettings, NewApp, Scope, TenantInfo, TenantPatch, TokenInfo,
};
use tailwater_model::{SealKey, TenantSeal};

pub(crate) use journal::write_atomically;
use journal::Journal;
pub use journal::{COMPACT_FACTOR, COMPACT_MIN_BYTES};

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
}

impl Loaded {
    fn new(state: State) -> anyhow::Result<Loaded> {
        let mut loaded = Loaded {
            by_digest: HashMap::with_capacity(state.tokens.len()),
            by_id: HashMap::with_capacity(state.tokens.len()),
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
}

impl Registry {
    /// Loads the registry from `dir` (creating it, and the default tenant,
    /// on first start). When there is no token at all, creates an admin
    /// token: the bootstrap token if given, else a random one, returned so
    /// the caller can show it once. A bootstrap token never seen before is
    /// added as admin; one that was revoked stays revoked.
    pub fn open(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<(Registry, Option<String>)> {
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
    fn change<R>(
        &self,
        decide: impl FnOnce(&Loaded) -> Result<(Option<Change>, R), RegistryError>,
    ) -> Result<R, RegistryError> {
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

    /// Who `secret` stands for, if it is a live token.
    pub fn authenticate(&self, secret: &str) -> Result<TokenIdentity, TokenRejected> {
        let digest = hash(secret);
        let loaded = self.read();
        let token = loaded.find(&digest).ok_or(TokenRejected::Unknown)?;
        if token.revoked.is_some() {
            return Err(TokenRejected::Revoked);
        }
        if token
            .expires
            .is_some_and(|expires| expires <= Timestamp::now())
        {
            return Err(TokenRejected::Expired);
        }
        Ok(TokenIdentity {
            id: token.id.clone(),
            scope: token.scope,
            tenant: token.tenant.clone(),
            app: token.app.clone(),
        })
    }

    /// Whether the token with this id is neither revoked nor expired: live
    /// tails check it before each record, so revocation ends them too.
    pub fn is_live(&self, id: &str) -> bool {
        self.read()
            .token(id)
            .is_some_and(|token| token.is_live(Timestamp::now()))
    }

    /// Creates a token and returns its secret (to show once) and its
    /// listing. The caller has checked the scope, tenant and app make
    /// sense; here, what depends on the registry: the tenant exists, a
    /// caller token's app is not private, the tenant's limits.
    pub fn create_token(
        &self,
        scope: Scope,
        tenant: Option<String>,
        app: Option<String>,
        expires: Option<Timestamp>,
        name: Option<String>,
    ) -> Result<(String, TokenInfo), RegistryError> {
        if let Some(name) = &name {
            let max = self.limits.max_token_name_bytes;
            if name.len() > max {
                return Err(self.refuse(
                    tenant.as_deref().unwrap_or(""),
                    NAME_TOO_LONG,
                    format!("token name is {} bytes, more than the {max} allowed (--max-token-name-bytes): use a shorter name", name.len()),
                ));
            }
            if name.chars().any(char::is_control) {
                return Err(RegistryError::Invalid(
                    "invalid token name: use no control characters".into(),
                ));
            }
        }
        let secret = generate_secret();
        let stored = StoredToken {
            id: generate_id(),
            sha256: hex::encode(hash(&secret)),
            scope,
            tenant,
            app,
            name,
            created: Timestamp::now(),
            expires,
            revoked: None,
        };
        let info = stored.info();
        self.change(|loaded| {
            if let Some(tenant) = &stored.tenant {
                let found = loaded.state.tenants.get(tenant).ok_or_else(|| {
                    RegistryError::NotFound(format!(
                        "no such tenant '{tenant}': see `tailwater tenant list`"
                    ))
                })?;
                if let (Scope::Caller, Some(app)) = (scope, &stored.app) {
                    let private = found
                        .apps
                        .get(app)
                        .map_or(found.private_logs, |app| app.settings.private_logs);
                    if private {
                        return Err(RegistryError::Conflict(format!(
                            "app '{app}' keeps its logs private, so a caller token for it could read nothing: make the app public first (`tailwater app set {app} --private-logs false`, PATCH /v1/apps/{app} {{\"private_logs\": false}}), or create the caller token for a public app"
                        )));
                    }
                }
                let now = Timestamp::now();
                let live = loaded
                    .state
                    .tokens
                    .iter()
                    .filter(|token| token.tenant.as_ref() == Some(tenant) && token.is_live(now))
                    .count();
                let max = self.limits.max_tokens_per_tenant;
                if live >= max {
                    return Err(self.refuse(
                        tenant,
                        TOO_MANY_TOKENS,
                        format!("tenant '{tenant}' has {live} live tokens, the most allowed (--max-tokens-per-tenant {max}): revoke tokens no longer used (`tailwater token revoke ID`) first"),
                    ));
                }
            }
            Ok((Some(Change::Token(stored)), ()))
        })?;
        Ok((secret, info))
    }

    /// Every token (revoked ones too), oldest first.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.read()
            .state
            .tokens
            .iter()
            .map(|token| token.info())
            .collect()
    }

    pub fn token(&self, id: &str) -> Option<TokenInfo> {
        self.read().token(id).map(StoredToken::info)
    }

    /// Revokes a token from now on (revoking twice changes nothing).
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, RegistryError> {
        self.change(|loaded| {
            let token = loaded.token(id).ok_or_else(|| no_such_token(id))?;
            if token.revoked.is_some() {
                return Ok((None, token.info()));
            }
            let mut token = StoredToken::clone(token);
            token.revoked = Some(Timestamp::now());
            let info = token.info();
            Ok((Some(Change::Token(token)), info))
        })
    }

    // --- tenants ---

    pub fn tenants(&self) -> Vec<TenantInfo> {
        self.read()
            .state
            .tenants
            .iter()
            .map(|(name, tenant)| tenant.info(name))
            .collect()
    }

    pub fn tenant(&self, name: &str) -> Option<TenantInfo> {
        self.read()
            .state
            .tenants
            .get(name)
            .map(|tenant| tenant.info(name))
    }

    pub fn create_tenant(
        &self,
        name: &str,
        private_logs: bool,
    ) -> Result<TenantInfo, RegistryError> {
        validate_tenant_name(name)?;
        self.change(|loaded| {
            if loaded.state.tenants.contains_key(name) {
                return Err(RegistryError::Conflict(format!(
                    "tenant '{name}' already exists: pick another name"
                )));
            }
            let tenant = Tenant::new(private_logs);
            let change = Change::Tenant {
                name: name.to_owned(),
                created: tenant.created,
                private_logs,
            };
            Ok((Some(change), tenant.info(name)))
        })
    }

    /// Changes the tenant's defaults for new apps; existing apps keep theirs.
    pub fn update_tenant(
        &self,
        name: &str,
        patch: &TenantPatch,
    ) -> Result<TenantInfo, RegistryError> {
        self.change(|loaded| {
            let tenant = loaded
                .state
                .tenants
                .get(name)
                .ok_or_else(|| no_such_tenant(name))?;
            let mut tenant = Tenant::clone(tenant);
            let Some(private) = patch.private_logs else {
                return Ok((None, tenant.info(name)));
            };
            tenant.private_logs = private;
            let change = Change::Tenant {
                name: name.to_owned(),
                created: tenant.created,
                private_logs: private,
            };
            Ok((Some(change), tenant.info(name)))
        })
    }

    // --- apps ---

    pub fn apps(&self, tenant: &str) -> Result<Vec<AppInfo>, RegistryError> {
        let loaded = self.read();
        let found = loaded
            .state
            .tenants
            .get(tenant)
            .ok_or_else(|| no_such_tenant(tenant))?;
        Ok(found
            .apps
            .iter()
            .map(|(name, app)| app.info(tenant, name))
            .collect())
    }

    pub fn app(&self, tenant: &str, name: &str) -> Option<AppInfo> {
        let loaded = self.read();
        let app = loaded.state.tenants.get(tenant)?.apps.get(name)?;
        Some(app.info(tenant, name))
    }

    /// Creates an app; what `new` leaves out comes from the tenant's
    /// defaults.
    pub fn create_app(&self, tenant: &str, new: &NewApp) -> Result<AppInfo, RegistryError> {
        validate_app_name(&new.name)?;
        self.change(|loaded| {
            let found = loaded
                .state
                .tenants
                .get(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?;
            if found.apps.contains_key(&new.name) {
                return Err(RegistryError::Conflict(format!(
                    "app '{}' already exists: change it with PATCH /v1/apps/{} (`tailwater app set`)",
                    new.name, new.name
                )));
            }
            let max = self.limits.max_apps_per_tenant;
            if found.apps.len() >= max {
                return Err(self.refuse(
                    tenant,
                    TOO_MANY_APPS,
                    format!("tenant '{tenant}' has {} apps, the most allowed (--max-apps-per-tenant {max}): send logs under an existing app name", found.apps.len()),
                ));
            }
            let app = App {
                created: Timestamp::now(),
                settings: AppSettings {
                    private_logs: new.private_logs.unwrap_or(found.private_logs),
                    retention_days: new.retention_days,
                    max_line_bytes: new.max_line_bytes,
                    rate_limit_lines_per_sec: new.rate_limit_lines_per_sec,
                    rate_limit_bytes_per_sec: new.rate_limit_bytes_per_sec,
                },
            };
            validate_settings(&app.settings)?;
            let info = app.info(tenant, &new.name);
            let change = Change::App {
                tenant: tenant.to_owned(),
                name: new.name.clone(),
                app,
            };
            Ok((Some(change), info))
        })
    }

    pub fn update_app(
        &self,
        tenant: &str,
        name: &str,
        patch: &AppPatch,
    ) -> Result<AppInfo, RegistryError> {
        self.change(|loaded| {
            let mut app = loaded
                .state
                .tenants
                .get(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?
                .apps
                .get(name)
                .ok_or_else(|| no_such_app(name))?
                .clone();
            patch.apply(&mut app.settings);
            validate_settings(&app.settings)?;
            let info = app.info(tenant, name);
            let change = Change::App {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
                app,
            };
            Ok((Some(change), info))
        })
    }

    /// Makes sure `app` exists in `tenant`, creating it with the tenant's
    /// defaults when it does not (ingest does this: agents need no prior
    /// step).
    pub fn ensure_app(&self, tenant: &str, app: &str) -> Result<(), RegistryError> {
        if self.app(tenant, app).is_some() {
            return Ok(());
        }
        let new = NewApp {
            name: app.to_owned(),
            ..NewApp::default()
        };
        match self.create_app(tenant, &new) {
            Ok(_) | Err(RegistryError::Conflict(_)) => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Whether callers are kept out of `app`'s logs. An app not registered
    /// (its records predate the registry) follows its tenant's default.
    pub fn is_private(&self, tenant: &str, app: &str) -> bool {
        let loaded = self.read();
        match loaded.state.tenants.get(tenant) {
            None => true,
            Some(found) => found
                .apps
                .get(app)
                .map_or(found.private_logs, |app| app.settings.private_logs),
        }
    }

    /// Apps with a retention of their own, for the store's retention.
    pub fn app_retention(&self) -> HashMap<(String, String), std::time::Duration> {
        let loaded = self.read();
        let mut ages = HashMap::new();
        for (tenant_name, tenant) in &loaded.state.tenants {
            for (app_name, app) in &tenant.apps {
                if let Some(days) = app.settings.retention_days {
                    ages.insert(
                        (tenant_name.clone(), app_name.clone()),
                        std::time::Duration::from_secs(u64::from(days) * 24 * 60 * 60),
                    );
                }
            }
        }
        ages
    }
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

fn no_such_app(name: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no such app '{name}': create it with POST /v1/apps (`tailwater app create`)"
    ))
}

pub(crate) fn no_such_token(id: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no such token '{id}': see `tailwater token list` for the ids"
    ))
}

/// Tenant names: 1 to 63 of `a-z 0-9 - _`, starting with a letter or digit.
pub fn validate_tenant_name(name: &str) -> Result<(), RegistryError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(RegistryError::Invalid(format!(
            "invalid tenant name '{name}': use 1 to 63 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )))
    }
}

/// App names: what agents send; not empty, at most 200 bytes, no control
/// characters.
pub fn validate_app_name(name: &str) -> Result<(), RegistryError> {
    if name.trim().is_empty()
        || name.len() > MAX_APP_NAME_BYTES
        || name.chars().any(char::is_control)
    {
        return Err(RegistryError::Invalid(format!(
            "invalid app name '{}': use 1 to {MAX_APP_NAME_BYTES} bytes without control characters",
            name.escape_debug()
        )));
    }
    Ok(())
}

fn validate_settings(settings: &AppSettings) -> Result<(), RegistryError> {
    for (name, value) in [
        ("retention_days", settings.retention_days.map(u64::from)),
        ("max_line_bytes", settings.max_line_bytes),
        (
            "rate_limit_lines_per_sec",
            settings.rate_limit_lines_per_sec,
        ),
        (
            "rate_limit_bytes_per_sec",
            settings.rate_limit_bytes_per_sec,
        ),
    ] {
        if value == Some(0) {
            return Err(RegistryError::Invalid(format!(
                "{name} must be at least 1: leave it out (or null) for the server's default"
            )));
        }
    }
    Ok(())
}

fn import_legacy_tokens(path: &Path) -> anyhow::Result<Vec<Arc<StoredToken>>> {
    #[derive(Deserialize)]
    struct Legacy {
        id: String,
        sha256: String,
        created: Timestamp,
    }
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).context(format!("cannot read {}", path.display())),
    };
    let legacy: Vec<Legacy> = serde_json::from_slice(&bytes).with_context(|| {
        format!("{} is not a valid token file: restore it from a backup, or move it away to start with a new admin token", path.display())
    })?;
    Ok(legacy
        .into_iter()
        .map(|token| {
            Arc::new(StoredToken {
                id: token.id,
                sha256: token.sha256,
                scope: Scope::Admin,
                tenant: None,
                app: None,
                name: None,
                created: token.created,
                expires: None,
                revoked: None,
            })
        })
        .collect())
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret: `tw_` and 256 random bits, base64url. Tokens are random,
/// so a fast hash is the right one at rest: there is no password to
/// stretch, only a secret not to keep in clear on disk.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A token's public id: `tok_` and 64 random bits in hex, unrelated to the
/// secret.
fn generate_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_ID_PREFIX}{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests;
