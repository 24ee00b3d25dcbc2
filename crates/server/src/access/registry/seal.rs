//! The key that seals record positions for tenants
//! ([`tailwater_model::positions`]): `seal.key` in the registry's folder,
//! made on first start, readable by the server's user alone.
//!
//! It is a secret like the tokens: with it, ids can be opened and so tell
//! one tenant how much others wrote. Losing it (or replacing it) does not
//! touch stored records, but every id, cursor and resume point handed out
//! before becomes invalid: clients start their reads again.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use anyhow::Context;
use rand::RngCore;
use tailwater_model::SealKey;

use super::journal::write_atomically;

pub const SEAL_KEY_FILE: &str = "seal.key";

/// The key in `dir`, made there if there is none.
pub fn load_or_create(dir: &Path) -> anyhow::Result<SealKey> {
    let path = dir.join(SEAL_KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; SealKey::LEN] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "{} holds {} bytes, not a key of {}: restore it from a backup, or delete \
                     it to make a new one (record ids and cursors handed out before become \
                     invalid)",
                    path.display(),
                    bytes.len(),
                    SealKey::LEN
                )
            })?;
            Ok(SealKey::new(key))
        }
        Err(error) if error.kind() == ErrorKind::NotFound => {
            let mut key = [0; SealKey::LEN];
            rand::rng().fill_bytes(&mut key);
            write_atomically(&path, &key)?;
            Ok(SealKey::new(key))
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The key file's bytes in `dir` (made by [`load_or_create`]), as
/// distributed mode offers them to the cluster.
pub fn read_bytes(dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = dir.join(SEAL_KEY_FILE);
    fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
}

/// Replaces the key in `dir` with `bytes` (the cluster's, in distributed
/// mode), refusing bytes that are no key.
pub fn replace(dir: &Path, bytes: &[u8]) -> anyhow::Result<SealKey> {
    let key: [u8; SealKey::LEN] = bytes.try_into().map_err(|_| {
        anyhow::anyhow!(
            "the cluster's seal key holds {} bytes, not a key of {}: restore it (key `seal` of the bucket TAILWATER_REGISTRY) from a node's {SEAL_KEY_FILE}",
            bytes.len(),
            SealKey::LEN
        )
    })?;
    write_atomically(&dir.join(SEAL_KEY_FILE), &key)?;
    Ok(SealKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_kept_private_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SEAL_KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        // The same key on every start: ids handed out stay valid.
        let again = load_or_create(dir.path()).unwrap();
        let id = first.tenant("acme").id(77);
        assert_eq!(again.tenant("acme").position(&id), Some(77));
        // Another folder, another key.
        let other = load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert_eq!(other.tenant("acme").position(&id), None);

        fs::write(&path, b"short").unwrap();
        let error = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(error.contains("restore it from a backup"), "{error}");
        assert_eq!(fs::read(&path).unwrap(), b"short", "never overwritten");
    }
}
