//! Where client commands find their server and token: flags, then the
//! environment (`TAILWATER_SERVER`, `TAILWATER_TOKEN`), then a profile of the
//! config file, then the default server. The one home of that order, and of
//! the config file (`tailwater login` writes it).
//!
//! The file is TOML, at `$TAILWATER_CONFIG`, else
//! `$XDG_CONFIG_HOME/tailwater/config.toml`, else
//! `~/.config/tailwater/config.toml`, with mode 600 since it holds tokens:
//!
//! ```toml
//! default_profile = "prod"
//!
//! [profiles.prod]
//! server = "https://logs.example.com"
//! token = "tw_…"
//! ```
//!
//! A profile's `server` may list several, comma-separated (the nodes of a
//! cluster; `Connection::servers` in main.rs splits and checks them).
//!
//! A profile's token is only ever sent to that profile's server: with
//! `--server` pointing elsewhere, the token must come from a flag or the
//! environment too.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// The server clients talk to when nothing says otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";
/// The profile used when none is named and the file names no default.
pub const DEFAULT_PROFILE: &str = "default";

/// The config file's contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when `--profile` and `TAILWATER_PROFILE` are not
    /// given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_profile: Option<String>,
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One server and the token to use with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The config file's place: `$TAILWATER_CONFIG`, else the XDG config dir.
pub fn config_path() -> anyhow::Result<PathBuf> {
    let non_empty = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(path) = non_empty("TAILWATER_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = match non_empty("XDG_CONFIG_HOME") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(non_empty("HOME").context(
            "cannot find the config file: set HOME, XDG_CONFIG_HOME or TAILWATER_CONFIG",
        )?)
        .join(".config"),
    };
    Ok(base.join("tailwater").join("config.toml"))
}

impl ConfigFile {
    /// The file at `path`; an empty one when it does not exist.
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ConfigFile::default())
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()))
            }
        };
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                // As ssh does for keys, but a warning: the tokens still work.
                eprintln!(
                    "tailwater: warning: {} holds tokens but others may read it (mode {mode:o}): run `chmod 600 {}`",
                    path.display(),
                    path.display()
                );
            }
        }
        toml::from_str(&text).with_context(|| {
            format!(
                "invalid config file {}: fix it, or delete it and run `tailwater login` again",
                path.display()
            )
        })
    }

    /// Writes the file atomically with mode 600 (a temporary file beside it,
    /// fsync, rename), making its directory (mode 700) if needed.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let text = toml::to_string_pretty(self)?;
        let temporary = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?;
            // An existing temporary file keeps its mode through `open`.
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().with_context(|| format!("cannot write {}", path.display()))
    }

    /// The name of the profile to use: `named` (`--profile` or
    /// `TAILWATER_PROFILE`), else the file's default, else `default`.
    pub fn profile_name(&self, named: Option<&str>) -> String {
        named
            .or(self.default_profile.as_deref())
            .unwrap_or(DEFAULT_PROFILE)
            .to_owned()
    }
}

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A flag or its environment variable.
    FlagOrEnvironment,
    /// A profile of the config file.
    Profile { name: String, path: PathBuf },
    /// The built-in default.
    Default,
}

/// A server and token, resolved.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub server: String,
    pub token: Option<String>,
    pub token_origin: Origin,
}

/// Applies the order: flag or environment (`server`, `token`, already merged
/// by clap), then the profile, then the default server.
pub fn resolve(
    server: Option<&str>,
    token: Option<&str>,
    profile: Option<&str>,
) -> anyhow::Result<Resolved> {
    let non_empty = |value: Option<&str>| value.filter(|v| !v.is_empty()).map(str::to_owned);
    let (server, token) = (non_empty(server), non_empty(token));
    if let (Some(server), Some(token)) = (&server, &token) {
        // Both given: the file is not needed, and not read.
        return Ok(Resolved {
            server: server.clone(),
            token: Some(token.clone()),
            token_origin: Origin::FlagOrEnvironment,
        });
    }
    let path = config_path()?;
    let file = ConfigFile::load(&path)?;
    let name = file.profile_name(profile);
    let found = file.profiles.get(&name);
    if profile.is_some() && found.is_none() {
        anyhow::bail!(
            "no profile '{name}' in {}: create it with `tailwater login --profile {name}`",
            path.display()
        );
    }
    let server = server
        .or_else(|| found.map(|p| p.server.clone()))
        .unwrap_or_else(|| DEFAULT_SERVER.to_owned());
    if let Some(token) = token {
        return Ok(Resolved {
            server,
            token: Some(token),
            token_origin: Origin::FlagOrEnvironment,
        });
    }
    // A profile's token goes to its own server only.
    let token = found
        .filter(|p| same_server(&p.server, &server))
        .and_then(|p| p.token.clone());
    let token_origin = match token {
        Some(_) => Origin::Profile { name, path },
        None => Origin::Default,
    };
    Ok(Resolved {
        server,
        token,
        token_origin,
    })
}

fn same_server(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_round_trips_and_names_its_default() {
        let mut file = ConfigFile::default();
        file.profiles.insert(
            "prod".into(),
            Profile {
                server: "https://logs.example.com".into(),
                token: Some("tw_x".into()),
            },
        );
        file.default_profile = Some("prod".into());
        let text = toml::to_string_pretty(&file).unwrap();
        assert_eq!(toml::from_str::<ConfigFile>(&text).unwrap(), file);
        assert_eq!(file.profile_name(None), "prod");
        assert_eq!(file.profile_name(Some("dev")), "dev");
        assert_eq!(ConfigFile::default().profile_name(None), "default");
    }

    #[test]
    fn a_misspelt_key_is_refused() {
        let error = toml::from_str::<ConfigFile>("[profiles.a]\nserver = \"x\"\ntokn = \"y\"\n")
            .unwrap_err();
        assert!(error.to_string().contains("tokn"), "{error}");
    }

    #[test]
    fn saving_writes_mode_600_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("config.toml");
        let file = ConfigFile {
            default_profile: None,
            profiles: [("default".into(), Profile::default())].into(),
        };
        file.save(&path).unwrap();
        file.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.toml"], "no temporary file left behind");
    }
}
