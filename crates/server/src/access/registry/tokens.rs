//! Tokens: issued (a public id and a secret shown once, its SHA-256 at
//! rest), looked up by digest and compared in constant time, listed,
//! revoked; and the tokens of an earlier release imported once.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tailwater_model::tenancy::{Scope, TokenInfo};

use super::*;

impl Registry {
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
            Ok((Some(Change::Token(stored.clone())), ()))
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
}

pub(crate) fn no_such_token(id: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "no such token '{id}': see `tailwater token list` for the ids"
    ))
}

pub(super) fn import_legacy_tokens(path: &Path) -> anyhow::Result<Vec<Arc<StoredToken>>> {
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

pub(super) fn hash(secret: &str) -> [u8; 32] {
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
pub(super) fn generate_id() -> String {
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_ID_PREFIX}{}", hex::encode(bytes))
}
