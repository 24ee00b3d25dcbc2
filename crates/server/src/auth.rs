//! API tokens: random, shown once, stored as SHA-256 hashes, compared in
//! constant time.
//!
//! Tokens are 256 random bits, so a fast hash is the right one: there is no
//! password to stretch, only a secret not to keep in clear on disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jiff::Timestamp;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The tenant the admin token's own reads and writes go to.
pub const DEFAULT_TENANT: &str = "default";
const TOKENS_FILE: &str = "tokens.json";
const TOKEN_PREFIX: &str = "tw_";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
}

/// Who a request acts as, once its token checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub tenant: String,
    pub scope: Scope,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredToken {
    id: String,
    /// Hex SHA-256 of the token.
    sha256: String,
    scope: Scope,
    tenant: String,
    created: Timestamp,
}

/// The token table, loaded from `<data>/auth/tokens.json`.
pub struct Auth {
    tokens: Vec<(StoredToken, [u8; 32])>,
}

impl Auth {
    /// Loads the tokens. When there are none, creates an admin token: the
    /// bootstrap token if given, else a random one, returned so the caller can
    /// show it once. A bootstrap token not yet known is added as admin.
    pub fn open(dir: &Path, bootstrap: Option<&str>) -> anyhow::Result<(Auth, Option<String>)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(TOKENS_FILE);
        let mut stored: Vec<StoredToken> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a valid token file: restore it from a backup, or move it away to start with a new admin token", path.display())
            })?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => return Err(error).context(format!("cannot read {}", path.display())),
        };
        let mut auth = Auth::from_stored(stored.clone())?;

        let mut shown_once = None;
        let new_token = match bootstrap {
            Some(token) if auth.authenticate(token).is_none() => Some(token.to_owned()),
            Some(_) => None,
            None if stored.is_empty() => {
                let token = generate_token();
                shown_once = Some(token.clone());
                Some(token)
            }
            None => None,
        };
        if let Some(token) = new_token {
            stored.push(StoredToken {
                id: format!("tok_{}", &hex::encode(hash(&token))[..12]),
                sha256: hex::encode(hash(&token)),
                scope: Scope::Admin,
                tenant: DEFAULT_TENANT.to_owned(),
                created: Timestamp::now(),
            });
            write_atomically(&path, &serde_json::to_vec_pretty(&stored)?)?;
            auth = Auth::from_stored(stored)?;
        }
        Ok((auth, shown_once))
    }

    fn from_stored(stored: Vec<StoredToken>) -> anyhow::Result<Auth> {
        let tokens = stored
            .into_iter()
            .map(|token| {
                let digest: [u8; 32] = hex::decode(&token.sha256)
                    .ok()
                    .and_then(|bytes| bytes.try_into().ok())
                    .with_context(|| format!("token {} has a malformed hash", token.id))?;
                Ok((token, digest))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Auth { tokens })
    }

    /// The principal a presented token stands for, or `None`. Every stored
    /// hash is compared, in constant time, whatever matches.
    pub fn authenticate(&self, presented: &str) -> Option<Principal> {
        let digest = hash(presented);
        let mut found = None;
        for (token, stored_digest) in &self.tokens {
            if bool::from(stored_digest.ct_eq(&digest)) {
                found = Some(token);
            }
        }
        found.map(|token| Principal {
            token_id: token.id.clone(),
            tenant: token.tenant.clone(),
            scope: token.scope,
        })
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token: `tw_` and 256 bits, base64url.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Write to a temporary file (mode 600), fsync, rename over, fsync the
/// directory: readers see the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
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
    fs::rename(&temporary, path)?;
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
        let (auth, token) = Auth::open(dir.path(), None).unwrap();
        let token = token.expect("a new token is shown on first start");
        assert!(token.starts_with("tw_") && token.len() > 40);
        let principal = auth.authenticate(&token).unwrap();
        assert_eq!(principal.scope, Scope::Admin);
        assert!(auth.authenticate("tw_wrong").is_none());

        let on_disk = fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(
            !on_disk.contains(&token),
            "the token itself is never stored"
        );
        let mode = fs::metadata(dir.path().join(TOKENS_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        // Later starts keep the token and show nothing.
        let (auth, again) = Auth::open(dir.path(), None).unwrap();
        assert!(again.is_none());
        assert!(auth.authenticate(&token).is_some());
    }

    #[test]
    fn bootstrap_token_is_used_instead_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let (auth, shown) = Auth::open(dir.path(), Some("tw_from_automation")).unwrap();
        assert!(shown.is_none());
        assert!(auth.authenticate("tw_from_automation").is_some());
        let (auth, _) = Auth::open(dir.path(), Some("tw_from_automation")).unwrap();
        assert_eq!(
            auth.tokens.len(),
            1,
            "the same bootstrap token is not added twice"
        );
    }

    #[test]
    fn a_damaged_token_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(TOKENS_FILE), b"{not json").unwrap();
        let error = Auth::open(dir.path(), None).err().unwrap().to_string();
        assert!(error.contains("not a valid token file"), "{error}");
    }
}
