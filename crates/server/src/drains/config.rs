//! Drains on disk, in `<data>/drains/` (mode 700): for each drain
//! `<id>.json` (mode 600: its settings and its secret, which only the
//! server's user may read) and `<id>.cursor` (where its delivery stands).
//! Both are replaced whole (temporary file, fsync, rename, fsync of the
//! folder), so a crash leaves the old file or the new one.
//!
//! The cursor: `delivered`, the position of the last record a receiver
//! acknowledged; and `pending`, the last position of the batch being sent
//! now, written *before* its first attempt. After a crash the drain sends
//! that same batch again, the same records under the same batch id, so a
//! receiver that keeps the ids it has seen stores each record once.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tailwater_model::wire::{DrainFormat, DrainInfo, DrainState};

use crate::access::registry::write_atomically;

/// A drain's settings as kept on disk.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrainConfig {
    pub id: String,
    pub tenant: String,
    pub app: String,
    #[serde(default)]
    pub name: Option<String>,
    pub url: String,
    pub format: DrainFormat,
    pub created: Timestamp,
    /// Signs each delivery; shown once, at creation.
    pub secret: String,
    /// Sent as `Authorization: Bearer …`, when the receiver wants one.
    #[serde(default)]
    pub token: Option<String>,
    /// Why it is paused, if it is.
    #[serde(default)]
    pub paused: Option<String>,
}

impl DrainConfig {
    /// As the API shows it: no secret.
    pub fn info(&self) -> DrainInfo {
        DrainInfo {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            app: self.app.clone(),
            name: self.name.clone(),
            url: self.url.clone(),
            format: self.format,
            state: match self.paused {
                Some(_) => DrainState::Paused,
                None => DrainState::Active,
            },
            paused_reason: self.paused.clone(),
            created: self.created,
            failures: 0,
            last_error: None,
            delivered: 0,
        }
    }
}

/// Where a drain's delivery stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub delivered: u64,
    #[serde(default)]
    pub pending: Option<u64>,
}

/// The folder of every drain's files.
#[derive(Clone, Debug)]
pub struct DrainFiles {
    dir: PathBuf,
}

impl DrainFiles {
    /// Opens (making it, mode 700) the folder.
    pub fn open(dir: &Path) -> anyhow::Result<DrainFiles> {
        std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
            .recursive(true)
            .create(dir)
            .with_context(|| format!("cannot make {}", dir.display()))?;
        Ok(DrainFiles {
            dir: dir.to_owned(),
        })
    }

    fn config_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn cursor_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.cursor"))
    }

    /// Every drain kept, in id order. A file that does not read is an
    /// error that names it.
    pub fn load(&self) -> anyhow::Result<Vec<(DrainConfig, Cursor)>> {
        let mut drains = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let bad = || {
                format!(
                    "cannot read drain {}: restore it from a backup, or delete it and the drain's .cursor file (the drain is then gone)",
                    path.display()
                )
            };
            let config: DrainConfig =
                serde_json::from_slice(&fs::read(&path).with_context(bad)?).with_context(bad)?;
            let cursor_path = self.cursor_path(&config.id);
            let cursor: Cursor = serde_json::from_slice(
                &fs::read(&cursor_path)
                    .with_context(|| format!("cannot read {}", cursor_path.display()))?,
            )
            .with_context(|| format!("cannot read {}", cursor_path.display()))?;
            drains.push((config, cursor));
        }
        drains.sort_by(|a, b| a.0.id.cmp(&b.0.id));
        Ok(drains)
    }

    /// Where drain `id`'s delivery stands.
    pub fn cursor(&self, id: &str) -> anyhow::Result<Cursor> {
        let path = self.cursor_path(id);
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&bytes).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Writes a new drain: its cursor first, so a drain on disk always has
    /// one.
    pub fn create(&self, config: &DrainConfig, cursor: Cursor) -> anyhow::Result<()> {
        self.save_cursor(&config.id, cursor)?;
        self.save_config(config)
    }

    pub fn save_config(&self, config: &DrainConfig) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(config)?;
        write_atomically(&self.config_path(&config.id), &bytes)
    }

    pub fn save_cursor(&self, id: &str, cursor: Cursor) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(&cursor)?;
        write_atomically(&self.cursor_path(id), &bytes)
    }

    /// Removes a drain's files: its settings first, so a crash between
    /// leaves no drain, only a cursor that nothing reads.
    pub fn delete(&self, id: &str) -> anyhow::Result<()> {
        fs::remove_file(self.config_path(id))?;
        let _ = fs::remove_file(self.cursor_path(id));
        Ok(())
    }
}
