//! The registry: tenants, their apps and settings, and API tokens (hashed).
//!
//! One small JSON file, `<data>/auth/registry.json` (mode 600), loaded at
//! start and held in memory behind a lock. Every change is made on a copy,
//! written atomically (temporary file, fsync, rename, fsync the directory),
//! and only then swapped in: what the server acts on is always what is on
//! disk, and a failed write changes nothing.
//!
//! Who may do what is not decided here but in [`crate::auth`].

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

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

/// The tenant that exists from the first start; admin tokens act on it
/// unless a request names another tenant.
pub const DEFAULT_TENANT: &str = "default";
const REGISTRY_FILE: &str = "registry.json";
/// The token file of earlier releases (admin tokens only), imported once.
const LEGACY_TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "tw_";
const TOKEN_ID_PREFIX: &str = "tok_";
const MAX_APP_NAME_BYTES: usize = 200;

/// Why a registry change was refused.
#[derive(Debug)]
pub enum RegistryError {
    NotFound(String),
    Conflict(String),
    Invalid(String),
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
    tenants: BTreeMap<String, Tenant>,
    tokens: Vec<StoredToken>,
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
}

/// The state and each token's digest, decoded once.
struct Loaded {
    state: State,
    digests: Vec<[u8; 32]>,
}

impl Loaded {
    fn new(state: State) -> anyhow::Result<Loaded> {
        let digests = state
            .tokens
            .iter()
            .map(|token| {
                hex::decode(&token.sha256)
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .with_context(|| format!("token {} has a malformed hash", token.id))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Loaded { state, digests })
    }

    /// The index of the token whose digest is `digest`. Every stored digest
    /// is compared, in constant time, whatever matches.
    fn find(&self, digest: &[u8; 32]) -> Option<usize> {
        let mut found = None;
        for (index, stored) in self.digests.iter().enumerate() {
            if bool::from(stored.ct_eq(digest)) {
                found = Some(index);
            }
        }
        found
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
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl Registry {
    /// Loads the registry from `dir` (creating it, and the default tenant,
    /// on first start). When there is no token at all, creates an admin
    /// token: the bootstrap token if given, else a random one, returned so
    /// the caller can show it once. A bootstrap token never seen before is
    /// added as admin; one that was revoked stays revoked.
    pub fn open(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<(Registry, Option<String>)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(REGISTRY_FILE);
        let legacy = dir.join(LEGACY_TOKENS_FILE);
        let mut changed = false;
        let mut state: State = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a valid registry file: restore it from a backup, or move it away to start over with a new admin token", path.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                changed = true;
                State {
                    tokens: import_legacy_tokens(&legacy)?,
                    ..State::default()
                }
            }
            Err(error) => return Err(error).context(format!("cannot read {}", path.display())),
        };
        if !state.tenants.contains_key(DEFAULT_TENANT) {
            state
                .tenants
                .insert(DEFAULT_TENANT.to_owned(), Tenant::new(false));
            changed = true;
        }

        let mut shown_once = None;
        let new_admin = match bootstrap {
            Some(token) => {
                let digest = hex::encode(hash(token));
                let known = state.tokens.iter().any(|stored| stored.sha256 == digest);
                (!known).then(|| token.to_owned())
            }
            None if state.tokens.is_empty() => {
                let token = generate_secret();
                shown_once = Some(token.clone());
                Some(token)
            }
            None => None,
        };
        if let Some(secret) = new_admin {
            state.tokens.push(StoredToken {
                id: generate_id(),
                sha256: hex::encode(hash(&secret)),
                scope: Scope::Admin,
                tenant: None,
                app: None,
                name: Some("bootstrap".to_owned()),
                created: Timestamp::now(),
                expires: None,
                revoked: None,
            });
            changed = true;
        }
        let loaded = Loaded::new(state)?;
        if changed {
            write_atomically(&path, &serde_json::to_vec_pretty(&loaded.state)?)?;
            if legacy.exists() {
                fs::remove_file(&legacy)
                    .with_context(|| format!("cannot remove {}", legacy.display()))?;
            }
        }
        let registry = Registry {
            path,
            loaded: RwLock::new(loaded),
        };
        Ok((registry, shown_once))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to a copy, writes it, then makes it current.
    fn change<R>(
        &self,
        change: impl FnOnce(&mut State) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let mut loaded = self
            .loaded
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut state = loaded.state.clone();
        let result = change(&mut state)?;
        let next = Loaded::new(state)?;
        write_atomically(
            &self.path,
            &serde_json::to_vec_pretty(&next.state).map_err(anyhow::Error::from)?,
        )?;
        *loaded = next;
        Ok(result)
    }

    // --- tokens ---

    /// Who `secret` stands for, if it is a live token.
    pub fn authenticate(&self, secret: &str) -> Result<TokenIdentity, TokenRejected> {
        let digest = hash(secret);
        let loaded = self.read();
        let token = loaded
            .find(&digest)
            .map(|index| &loaded.state.tokens[index])
            .ok_or(TokenRejected::Unknown)?;
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
        self.read().state.tokens.iter().any(|token| {
            token.id == id
                && token.revoked.is_none()
                && token
                    .expires
                    .is_none_or(|expires| expires > Timestamp::now())
        })
    }

    /// Creates a token and returns its secret (to show once) and its
    /// listing. The caller has checked the scope, tenant and app make sense.
    pub fn create_token(
        &self,
        scope: Scope,
        tenant: Option<String>,
        app: Option<String>,
        expires: Option<Timestamp>,
        name: Option<String>,
    ) -> Result<(String, TokenInfo), RegistryError> {
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
        self.change(|state| {
            if let Some(tenant) = &stored.tenant {
                if !state.tenants.contains_key(tenant) {
                    return Err(RegistryError::NotFound(format!(
                        "no such tenant '{tenant}': see `tailwater tenant list`"
                    )));
                }
            }
            state.tokens.push(stored);
            Ok(())
        })?;
        Ok((secret, info))
    }

    /// Every token (revoked ones too), oldest first.
    pub fn tokens(&self) -> Vec<TokenInfo> {
        self.read()
            .state
            .tokens
            .iter()
            .map(StoredToken::info)
            .collect()
    }

    pub fn token(&self, id: &str) -> Option<TokenInfo> {
        self.read()
            .state
            .tokens
            .iter()
            .find(|token| token.id == id)
            .map(StoredToken::info)
    }

    /// Revokes a token from now on (revoking twice changes nothing).
    pub fn revoke_token(&self, id: &str) -> Result<TokenInfo, RegistryError> {
        self.change(|state| {
            let token = state
                .tokens
                .iter_mut()
                .find(|token| token.id == id)
                .ok_or_else(|| no_such_token(id))?;
            token.revoked.get_or_insert_with(Timestamp::now);
            Ok(token.info())
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
        self.change(|state| {
            if state.tenants.contains_key(name) {
                return Err(RegistryError::Conflict(format!(
                    "tenant '{name}' already exists: pick another name"
                )));
            }
            let tenant = Tenant::new(private_logs);
            let info = tenant.info(name);
            state.tenants.insert(name.to_owned(), tenant);
            Ok(info)
        })
    }

    /// Changes the tenant's defaults for new apps; existing apps keep theirs.
    pub fn update_tenant(
        &self,
        name: &str,
        patch: &TenantPatch,
    ) -> Result<TenantInfo, RegistryError> {
        self.change(|state| {
            let tenant = state
                .tenants
                .get_mut(name)
                .ok_or_else(|| no_such_tenant(name))?;
            if let Some(private) = patch.private_logs {
                tenant.private_logs = private;
            }
            Ok(tenant.info(name))
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
        self.change(|state| {
            let found = state
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?;
            if found.apps.contains_key(&new.name) {
                return Err(RegistryError::Conflict(format!(
                    "app '{}' already exists: change it with PATCH /v1/apps/{} (`tailwater app set`)",
                    new.name, new.name
                )));
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
            found.apps.insert(new.name.clone(), app);
            Ok(info)
        })
    }

    pub fn update_app(
        &self,
        tenant: &str,
        name: &str,
        patch: &AppPatch,
    ) -> Result<AppInfo, RegistryError> {
        self.change(|state| {
            let app = state
                .tenants
                .get_mut(tenant)
                .ok_or_else(|| no_such_tenant(tenant))?
                .apps
                .get_mut(name)
                .ok_or_else(|| no_such_app(name))?;
            patch.apply(&mut app.settings);
            validate_settings(&app.settings)?;
            Ok(app.info(tenant, name))
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

fn import_legacy_tokens(path: &Path) -> anyhow::Result<Vec<StoredToken>> {
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
        .map(|token| StoredToken {
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

/// Write to a temporary file (mode 600), fsync, rename over, fsync the
/// directory: readers see the old file or the new one, never half of one.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let temporary: PathBuf = path.with_extension("json.tmp");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_one_admin_token_stored_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, token) = Registry::open(dir.path(), None).unwrap();
        let token = token.expect("a new token is shown on first start");
        assert!(token.starts_with("tw_") && token.len() > 40);
        let identity = registry.authenticate(&token).unwrap();
        assert_eq!(identity.scope, Scope::Admin);
        assert_eq!(identity.tenant, None);
        assert!(!token.contains(&identity.id["tok_".len()..]));
        assert_eq!(
            registry.authenticate("tw_wrong"),
            Err(TokenRejected::Unknown)
        );

        let file = dir.path().join(REGISTRY_FILE);
        let on_disk = fs::read_to_string(&file).unwrap();
        assert!(!on_disk.contains(&token), "the secret is never stored");
        assert!(on_disk.contains(&hex::encode(hash(&token))));
        let mode = fs::metadata(&file).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // Later starts keep the token and show nothing.
        let (registry, again) = Registry::open(dir.path(), None).unwrap();
        assert!(again.is_none());
        assert!(registry.authenticate(&token).is_ok());
        assert!(registry.tenant(DEFAULT_TENANT).is_some());
    }

    #[test]
    fn bootstrap_token_is_added_once_and_stays_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, shown) = Registry::open(dir.path(), Some("tw_from_automation")).unwrap();
        assert!(shown.is_none());
        let id = registry.authenticate("tw_from_automation").unwrap().id;
        drop(registry);
        let (registry, _) = Registry::open(dir.path(), Some("tw_from_automation")).unwrap();
        assert_eq!(registry.tokens().len(), 1, "not added twice");
        registry.revoke_token(&id).unwrap();
        drop(registry);
        let (registry, _) = Registry::open(dir.path(), Some("tw_from_automation")).unwrap();
        assert_eq!(
            registry.authenticate("tw_from_automation"),
            Err(TokenRejected::Revoked)
        );
    }

    #[test]
    fn legacy_token_file_is_imported_as_admin() {
        let dir = tempfile::tempdir().unwrap();
        let digest = hex::encode(hash("tw_old"));
        fs::write(
            dir.path().join(LEGACY_TOKENS_FILE),
            format!(r#"[{{"id":"tok_old","sha256":"{digest}","scope":"admin","tenant":"default","created":"2026-01-01T00:00:00Z"}}]"#),
        )
        .unwrap();
        let (registry, shown) = Registry::open(dir.path(), None).unwrap();
        assert!(shown.is_none());
        assert_eq!(registry.authenticate("tw_old").unwrap().id, "tok_old");
        assert!(!dir.path().join(LEGACY_TOKENS_FILE).exists());
    }

    #[test]
    fn expired_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(dir.path(), None).unwrap();
        let past = Timestamp::now() - jiff::SignedDuration::from_secs(1);
        let (secret, _) = registry
            .create_token(
                Scope::Owner,
                Some(DEFAULT_TENANT.into()),
                None,
                Some(past),
                None,
            )
            .unwrap();
        assert_eq!(registry.authenticate(&secret), Err(TokenRejected::Expired));
    }

    #[test]
    fn new_apps_inherit_the_tenant_default_and_existing_ones_keep_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(dir.path(), None).unwrap();
        registry.create_tenant("acme", false).unwrap();
        registry.ensure_app("acme", "before").unwrap();
        registry
            .update_tenant(
                "acme",
                &TenantPatch {
                    private_logs: Some(true),
                },
            )
            .unwrap();
        registry.ensure_app("acme", "after").unwrap();
        assert!(!registry.is_private("acme", "before"));
        assert!(registry.is_private("acme", "after"));
        assert!(registry.is_private("acme", "never-registered"));
        drop(registry);
        let (registry, _) = Registry::open(dir.path(), None).unwrap();
        assert!(registry.app("acme", "after").unwrap().settings.private_logs);
    }

    #[test]
    fn bad_names_and_duplicates_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (registry, _) = Registry::open(dir.path(), None).unwrap();
        assert!(matches!(
            registry.create_tenant("Acme Corp", false),
            Err(RegistryError::Invalid(_))
        ));
        registry.create_tenant("acme", false).unwrap();
        assert!(matches!(
            registry.create_tenant("acme", false),
            Err(RegistryError::Conflict(_))
        ));
    }

    #[test]
    fn a_damaged_registry_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REGISTRY_FILE), b"{not json").unwrap();
        let error = Registry::open(dir.path(), None).err().unwrap().to_string();
        assert!(error.contains("not a valid registry file"), "{error}");
    }
}
