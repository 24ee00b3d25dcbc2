//! The registry as a replica of the cluster's shared one (distributed
//! mode, `--nats`): every tenant, app and token is a key of the cluster's
//! key-value bucket (`cluster::registry`), its value the journal's change
//! for it (the new value of one tenant, app or token, so applying it twice
//! changes nothing):
//!
//! - `tenant.<name>`: [`Change::Tenant`] (its apps are keys of their own);
//! - `app.<tenant>.<base64url of the name>`: [`Change::App`] (app names may
//!   hold any character but control ones; keys may not);
//! - `token.<id>`: [`Change::Token`] (its SHA-256, never its secret);
//! - [`SEAL_KEY`]: the key sealing record ids, adopted at start.
//!
//! A change is decided on this node's replica, then written by
//! compare-and-set: `create` when the replica has no revision of the key,
//! else an update expecting the revision it has. When another node wrote
//! the key first, this node catches up with the key and decides again (so
//! two nodes creating one tenant or app end with one, the other told it
//! exists). The answer waits until this node's watch has applied the
//! change (read-your-writes on the node a client talks to). NATS
//! unreachable, the write is refused ([`RegistryError::Unavailable`],
//! counted), nothing changed; reads go on from the replica.
//!
//! The watch ([`Registry::apply_replicated`]) journals what it applies in
//! the node's own files, so a restarted node starts from what it had and
//! catches up from the bucket.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::tenants::validate_settings;
use super::*;

/// The bucket's key for the seal key.
pub const SEAL_KEY: &str = "seal";
/// Times a change is decided again after another node changed its key
/// first, before the writer is told to try later.
const CONFLICT_RETRIES: usize = 8;
/// Longest token id (and so key) a replica takes.
const MAX_TOKEN_ID_BYTES: usize = 64;
/// Longest token name a replica takes from the bucket, whatever this
/// node's `--max-token-name-bytes` (which writers are held to).
const MAX_REPLICATED_NAME_BYTES: usize = 4096;

/// Where a replica's changes are written: the cluster's bucket. Blocking
/// (called off the async threads, as every registry change is).
pub trait Replication: Send + Sync {
    /// Writes `value` under `key` if the key's newest revision is still
    /// `expected` (`None`: only if the key does not exist); the new
    /// revision.
    fn write(&self, key: &str, value: Vec<u8>, expected: Option<u64>) -> Result<u64, WriteFailed>;
    /// The newest revision of `key` in the bucket (`None`: no such key).
    fn revision(&self, key: &str) -> Result<Option<u64>, WriteFailed>;
    /// How long a writer waits for the bucket, and for this node's watch
    /// to apply its change.
    fn timeout(&self) -> Duration;
}

/// Why a write to the bucket did not happen.
#[derive(Debug)]
pub enum WriteFailed {
    /// Another node wrote the key since the revision expected.
    Conflict,
    /// NATS did not answer (unreachable, no quorum, timed out).
    Unavailable(String),
}

/// One value of the bucket, as the watch delivers it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub revision: u64,
    /// `None`: the key was deleted or purged (the registry never deletes;
    /// left as it is here).
    pub value: Option<Vec<u8>>,
    /// Values newer than this one not yet delivered (the watch's lag).
    pub pending: u64,
}

/// What a replica did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ReplicaStats {
    /// Changes applied from the bucket (ones this node already had are not
    /// counted).
    pub applied: AtomicU64,
    /// Values of the bucket that are no change of the registry (skipped).
    pub undecodable: AtomicU64,
    /// Writes refused with 503 `cluster_unavailable`.
    pub unavailable: AtomicU64,
    /// Writes that met another node's change of their key first.
    pub conflicts: AtomicU64,
    /// The watch's lag when it last delivered: values not yet delivered.
    pub pending: AtomicU64,
}

/// A change as the bucket holds it: its key, its JSON value.
#[derive(Clone, Debug)]
pub struct ReplicatedChange(Change);

impl ReplicatedChange {
    /// Reads a value of the bucket, refusing one that is no change of the
    /// registry, names what it may not (an invalid tenant or app name, a
    /// malformed token hash) or does not belong under `key`.
    pub fn decode(key: &str, value: &[u8]) -> Result<ReplicatedChange, String> {
        let change = ReplicatedChange::read(value)?;
        let expected = change.key();
        if expected != key {
            return Err(format!("a change of {expected} under the key {key}"));
        }
        Ok(change)
    }

    /// [`ReplicatedChange::decode`] of a value whose key is not known yet
    /// (a journal line's change, say).
    pub fn read(value: &[u8]) -> Result<ReplicatedChange, String> {
        let change: Change =
            serde_json::from_slice(value).map_err(|error| format!("not a change: {error}"))?;
        check(&change)?;
        Ok(ReplicatedChange(change))
    }

    /// The key it is kept under.
    pub fn key(&self) -> String {
        change_key(&self.0)
    }

    /// Its value in the bucket.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(&self.0).expect("a change serializes")
    }
}

fn check(change: &Change) -> Result<(), String> {
    let text = |error: RegistryError| match error {
        RegistryError::Invalid(message) => message,
        other => format!("{other:?}"),
    };
    match change {
        Change::Tenant { name, .. } => validate_tenant_name(name).map_err(text),
        Change::App { tenant, name, app } => {
            validate_tenant_name(tenant).map_err(text)?;
            validate_app_name(name).map_err(text)?;
            validate_settings(&app.settings).map_err(text)
        }
        Change::Token(token) => {
            let id_ok = !token.id.is_empty()
                && token.id.len() <= MAX_TOKEN_ID_BYTES
                && token
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !id_ok {
                return Err(format!("invalid token id {:?}", token.id));
            }
            let hash_ok =
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hash_ok {
                return Err(format!("token {} has a malformed hash", token.id));
            }
            if let Some(tenant) = &token.tenant {
                validate_tenant_name(tenant).map_err(text)?;
            }
            if let Some(app) = &token.app {
                validate_app_name(app).map_err(text)?;
            }
            if let Some(name) = &token.name {
                if name.len() > MAX_REPLICATED_NAME_BYTES || name.chars().any(char::is_control) {
                    return Err(format!("token {} has an invalid name", token.id));
                }
            }
            Ok(())
        }
    }
}

fn change_key(change: &Change) -> String {
    match change {
        Change::Tenant { name, .. } => format!("tenant.{name}"),
        Change::App { tenant, name, .. } => app_key(tenant, name),
        Change::Token(token) => format!("token.{}", token.id),
    }
}

fn app_key(tenant: &str, app: &str) -> String {
    format!("app.{tenant}.{}", URL_SAFE_NO_PAD.encode(app))
}

impl Loaded {
    /// Every key this state holds, with its value.
    fn entries(&self) -> Vec<(String, Change)> {
        let mut entries = Vec::new();
        for (name, tenant) in &self.state.tenants {
            entries.push(Change::Tenant {
                name: name.clone(),
                created: tenant.created,
                private_logs: tenant.private_logs,
            });
            for (app_name, app) in &tenant.apps {
                entries.push(Change::App {
                    tenant: name.clone(),
                    name: app_name.clone(),
                    app: app.clone(),
                });
            }
        }
        for token in &self.state.tokens {
            entries.push(Change::Token(StoredToken::clone(token)));
        }
        entries
            .into_iter()
            .map(|change| (change_key(&change), change))
            .collect()
    }

    /// The value this state holds under `key`, as the bucket would.
    fn value_of(&self, change: &Change) -> Option<Vec<u8>> {
        let held = match change {
            Change::Tenant { name, .. } => {
                let tenant = self.state.tenants.get(name)?;
                Change::Tenant {
                    name: name.clone(),
                    created: tenant.created,
                    private_logs: tenant.private_logs,
                }
            }
            Change::App { tenant, name, .. } => Change::App {
                tenant: tenant.clone(),
                name: name.clone(),
                app: self.state.tenants.get(tenant)?.apps.get(name)?.clone(),
            },
            Change::Token(token) => Change::Token(self.token(&token.id)?.clone()),
        };
        serde_json::to_vec(&held).ok()
    }
}

/// The id of the admin token made from a `--bootstrap-token` in
/// distributed mode: the same on every node given that token, so the
/// nodes' creations of it meet on one key and one wins. A hash of the
/// secret's hash (which the bucket holds anyway), never of the secret.
fn bootstrap_id(digest: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"tailwater bootstrap token id\0");
    hasher.update(digest);
    let id: [u8; 32] = hasher.finalize().into();
    format!("{TOKEN_ID_PREFIX}{}", hex::encode(&id[..8]))
}

impl Registry {
    /// Makes this registry a replica of the cluster's: from now on every
    /// change is written to `replication`, and made current here by
    /// [`Registry::apply_replicated`]. Set once; false if it was already.
    pub fn replicate_to(&self, replication: Arc<dyn Replication>) -> bool {
        self.replication.set(replication).is_ok()
    }

    /// Whether this registry is a replica of a cluster's.
    pub fn is_replica(&self) -> bool {
        self.replication.get().is_some()
    }

    /// The newest revision of the cluster's bucket applied here (0 before
    /// the first).
    pub fn applied_revision(&self) -> u64 {
        *self
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What the replica did, for `/metrics`.
    pub fn replica_stats(&self) -> &ReplicaStats {
        &self.replica_stats
    }

    /// Waits until revision `revision` of the bucket is applied here, up
    /// to `timeout`; whether it is.
    pub fn wait_applied(&self, revision: u64, timeout: Duration) -> bool {
        let applied = self
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (applied, _) = self
            .applied_changed
            .wait_timeout_while(applied, timeout, |applied| *applied < revision)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *applied >= revision
    }

    /// Applies values delivered by the watch of the cluster's bucket, in
    /// its order: each change new here is journaled (one fsync for all)
    /// and made current, then the revisions are marked applied (waking the
    /// writers waiting on them). A value that is no change is skipped,
    /// counted. An error (the journal cannot be written) applies nothing:
    /// the watch delivers the same values again.
    pub fn apply_replicated(&self, entries: &[Entry]) -> anyhow::Result<()> {
        let Some(newest) = entries.iter().map(|entry| entry.revision).max() else {
            return Ok(());
        };
        let mut journal = self
            .journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next = Loaded::clone(&self.read());
        let mut changes = Vec::new();
        for entry in entries {
            let Some(value) = &entry.value else {
                tracing::warn!(key = entry.key, "a key of the cluster's registry was deleted; the registry never deletes, so this node keeps what it had");
                continue;
            };
            if entry.key == SEAL_KEY {
                continue; // adopted at start (`cluster::registry`)
            }
            let change = match ReplicatedChange::decode(&entry.key, value) {
                Ok(ReplicatedChange(change)) => change,
                Err(error) => {
                    self.replica_stats.undecodable.fetch_add(1, Relaxed);
                    tracing::error!(key = entry.key, revision = entry.revision, %error, "a value of the cluster's registry is no change this node reads; skipped");
                    continue;
                }
            };
            // Compared as this node encodes both: a value written by
            // another version (fields in another order) that says the same
            // is the same.
            let canonical = serde_json::to_vec(&change).map_err(anyhow::Error::from)?;
            if next.value_of(&change) != Some(canonical) {
                // Apps may arrive before their tenant (its newest value
                // came later): a tenant with defaults holds them until then.
                if let Change::App { tenant, app, .. } = &change {
                    if !next.state.tenants.contains_key(tenant) {
                        let placeholder = Change::Tenant {
                            name: tenant.clone(),
                            created: app.created,
                            private_logs: false,
                        };
                        next.apply(placeholder.clone())?;
                        changes.push(placeholder);
                    }
                }
                next.apply(change.clone())?;
                changes.push(change);
            }
            next.revisions.insert(entry.key.clone(), entry.revision);
        }
        if !changes.is_empty() {
            journal.append_all(&changes)?;
            next.state.journal_seq = journal.next_seq() - 1;
        }
        let next = Arc::new(next);
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = next.clone();
        if !changes.is_empty() {
            journal.maybe_compact(next);
        }
        drop(journal);
        self.replica_stats
            .applied
            .fetch_add(changes.len() as u64, Relaxed);
        if let Some(last) = entries.last() {
            self.replica_stats.pending.store(last.pending, Relaxed);
        }
        let mut applied = self
            .applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *applied = (*applied).max(newest);
        self.applied_changed.notify_all();
        Ok(())
    }

    /// [`Registry::change`] in distributed mode.
    pub(super) fn change_replicated<R>(
        &self,
        replication: &dyn Replication,
        decide: impl Fn(&Loaded) -> Result<(Option<Change>, R), RegistryError>,
    ) -> Result<R, RegistryError> {
        let _writer = self
            .writer
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let timeout = replication.timeout();
        for _ in 0..CONFLICT_RETRIES {
            let current = self.read();
            let (change, result) = decide(&current)?;
            let Some(change) = change else {
                return Ok(result);
            };
            let key = change_key(&change);
            let expected = current.revisions.get(&key).copied();
            drop(current);
            let value = serde_json::to_vec(&change).map_err(anyhow::Error::from)?;
            match replication.write(&key, value, expected) {
                Ok(revision) => {
                    if self.wait_applied(revision, timeout) {
                        return Ok(result);
                    }
                    return Err(self.unavailable(format!(
                        "the change is stored in the cluster, but this node has not applied it within {timeout:?} (its watch of the cluster's registry is behind): it shows here shortly; check this node's log and `tailwater cluster status`"
                    )));
                }
                Err(WriteFailed::Conflict) => {
                    // Another node changed the key first: catch up with it
                    // and decide again on what it made.
                    self.replica_stats.conflicts.fetch_add(1, Relaxed);
                    let newest = replication
                        .revision(&key)
                        .map_err(|failed| self.write_failed(failed))?;
                    if let Some(newest) = newest {
                        if !self.wait_applied(newest, timeout) {
                            return Err(self.unavailable(format!(
                                "another node changed this at once and this node has not caught up with it within {timeout:?}: try again"
                            )));
                        }
                    }
                }
                Err(failed) => return Err(self.write_failed(failed)),
            }
        }
        Err(self
            .unavailable("other nodes kept changing this at the same time: try again".to_owned()))
    }

    fn write_failed(&self, failed: WriteFailed) -> RegistryError {
        match failed {
            WriteFailed::Unavailable(why) => self.unavailable(format!(
                "the cluster's shared registry cannot be written now ({why}): nothing changed; check that a quorum of the NATS servers is up, then try again"
            )),
            WriteFailed::Conflict => {
                self.unavailable("another node changed this at once: try again".to_owned())
            }
        }
    }

    fn unavailable(&self, message: String) -> RegistryError {
        self.replica_stats.unavailable.fetch_add(1, Relaxed);
        RegistryError::Unavailable(message)
    }

    /// Writes to the cluster's registry every tenant, app and token this
    /// node has that it does not (made here before this node joined, or
    /// while it was embedded), each by `create`, so what the cluster
    /// already has wins. Call once caught up with the bucket. The number
    /// written.
    pub fn push_local(&self) -> Result<usize, RegistryError> {
        let Some(replication) = self.replication.get() else {
            return Ok(0);
        };
        let current = self.read();
        let mut written = 0;
        let mut newest = 0;
        for (key, change) in current.entries() {
            if current.revisions.contains_key(&key) {
                continue;
            }
            if let Change::Token(token) = &change {
                if ReplicatedChange::decode(&key, &serde_json::to_vec(&change).unwrap_or_default())
                    .is_err()
                {
                    tracing::warn!(id = token.id, "a token of this node's registry cannot be shared with the cluster (its id is not a key): it stays this node's alone");
                    continue;
                }
            }
            let value = serde_json::to_vec(&change).map_err(anyhow::Error::from)?;
            match replication.write(&key, value, None) {
                Ok(revision) => {
                    written += 1;
                    newest = newest.max(revision);
                }
                Err(WriteFailed::Conflict) => {} // the cluster's wins
                Err(failed) => return Err(self.write_failed(failed)),
            }
        }
        if !self.wait_applied(newest, replication.timeout()) {
            return Err(self.unavailable(
                "this node's tenants, apps and tokens are written to the cluster, but its watch has not applied them yet".to_owned(),
            ));
        }
        Ok(written)
    }

    /// Distributed mode's admin token, made once this node has caught up
    /// with the cluster's registry: `bootstrap` (every node given the same
    /// one makes the same token, under one key: one admin token), else a
    /// random one when the cluster has no token at all, returned to show
    /// once.
    pub fn ensure_admin(&self, bootstrap: Option<&str>) -> Result<Option<String>, RegistryError> {
        let (secret, shown_once, id) = match bootstrap {
            Some(secret) => {
                let digest = hash(secret);
                (secret.to_owned(), false, bootstrap_id(&digest))
            }
            None => (generate_secret(), true, generate_id()),
        };
        let digest = hash(&secret);
        let stored = StoredToken {
            id,
            sha256: hex::encode(digest),
            scope: Scope::Admin,
            tenant: None,
            app: None,
            name: Some("bootstrap".to_owned()),
            created: Timestamp::now(),
            expires: None,
            revoked: None,
        };
        let made = self.change(|loaded| {
            // A bootstrap token already there (revoked too: it stays so),
            // or, without one, any token at all: nothing to make.
            let needed = match bootstrap {
                Some(_) => loaded.find(&digest).is_none(),
                None => loaded.state.tokens.is_empty(),
            };
            Ok(if needed {
                (Some(Change::Token(stored.clone())), true)
            } else {
                (None, false)
            })
        })?;
        Ok((made && shown_once).then_some(secret))
    }

    /// Replaces the key sealing record ids with the cluster's (`bytes`, as
    /// `seal.key` holds it), in `dir` and here. Ids and cursors this node
    /// handed out under its old key no longer open.
    pub fn adopt_seal_key(&mut self, dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        self.seal_key = seal::replace(dir, bytes)?;
        Ok(())
    }
}

/// Waits up to `timeout` for `registry` to apply revision `revision`;
/// an error that says so if it does not.
pub fn caught_up(registry: &Registry, revision: u64, timeout: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    anyhow::ensure!(
        registry.wait_applied(revision, timeout),
        "this node's registry did not catch up with the cluster's (revision {revision}, applied {}) within {:?}: check this node's log",
        registry.applied_revision(),
        started.elapsed()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
