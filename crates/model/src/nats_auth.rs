//! NATS credentials beyond the URL, for the nodes (`tailwater server
//! --nats-nkey FILE | --nats-creds FILE`) and the agent's NATS transport
//! (`tailwater run --nats-nkey FILE | --nats-creds FILE`): an nkey user's
//! seed (`SU…`, as `nk -gen user -pubout` writes it), or a creds file
//! (a user JWT and its seed, as `nsc generate creds` writes it). Read from
//! files only, never from a flag's value, and only from files no one but
//! their owner may read; each is checked at start, so a wrong one is
//! refused there with what to do, never found out at the first publish.
//! The seed never reaches a message: [`NatsAuth`]'s `Debug` hides it.
//!
//! No NATS client here: the server's `cluster::Cluster::connect` and the
//! agent's `ship::nats::Nats::connect` hand what [`load`] returns to
//! async-nats (`nkey`, `credentials`).

use std::fmt;
use std::io::Read as _;
use std::path::Path;

use base64::Engine as _;
use nkeys::{KeyPair, KeyPairType};

/// The largest credential file read: a seed is 58 bytes and a creds file
/// a few KiB; anything larger is not one (and is not read whole).
pub const MAX_FILE_BYTES: u64 = 64 * 1024;

/// How a client proves who it is to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    /// Nothing beyond the URL (`nats://user:password@host`, or no user).
    Url,
    /// An nkey user: its seed (`SU…`).
    Nkey { seed: String, public_key: String },
    /// A creds file: the user JWT and its seed, re-assembled as
    /// async-nats' `ConnectOptions::credentials` reads them.
    Creds { text: String, public_key: String },
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsAuth::Url => f.write_str("Url"),
            NatsAuth::Nkey { public_key, .. } => write!(f, "Nkey({public_key})"),
            NatsAuth::Creds { public_key, .. } => write!(f, "Creds({public_key})"),
        }
    }
}

impl NatsAuth {
    /// The user's public key (`U…`), which the nats-server configuration
    /// names; none for [`NatsAuth::Url`].
    pub fn public_key(&self) -> Option<&str> {
        match self {
            NatsAuth::Url => None,
            NatsAuth::Nkey { public_key, .. } | NatsAuth::Creds { public_key, .. } => {
                Some(public_key)
            }
        }
    }
}

/// The credentials given: `creds` (`--nats-creds`) or `nkey`
/// (`--nats-nkey`), at most one, and not both with a user in the URLs
/// (`url_has_user`). Errors say what to do.
pub fn load(
    creds: Option<&Path>,
    nkey: Option<&Path>,
    url_has_user: bool,
) -> Result<NatsAuth, String> {
    let (path, flag) = match (creds, nkey) {
        (None, None) => return Ok(NatsAuth::Url),
        (Some(_), Some(_)) => {
            return Err("both --nats-creds and --nats-nkey are given: give one (a creds file holds its own seed)".into())
        }
        (Some(path), None) => (path, "--nats-creds"),
        (None, Some(path)) => (path, "--nats-nkey"),
    };
    if url_has_user {
        return Err(format!(
            "the --nats URLs carry a user and {flag} is given as well: give the credentials one way (take user:password@ out of the URLs)"
        ));
    }
    let text = read_secret(path, flag)?;
    if creds.is_some() {
        parse_creds(&text).map_err(|why| {
            format!(
                "{flag} {}: {why}; give the user's .creds file as `nsc generate creds` writes it",
                path.display()
            )
        })
    } else {
        parse_nkey(&text).map_err(|why| {
            format!(
                "{flag} {}: {why}; give a file holding a user's seed (SU…) and nothing else but its public key, as `nk -gen user -pubout` writes them",
                path.display()
            )
        })
    }
}

/// A seed's file: the seed, and maybe its public key on the next line (as
/// `nk -gen user -pubout` writes them).
fn parse_nkey(text: &str) -> Result<NatsAuth, String> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    let seed = lines.next().unwrap_or_default();
    let key_pair = user_seed(seed)?;
    let public_key = key_pair.public_key();
    match (lines.next(), lines.next()) {
        (None, _) => {}
        (Some(line), None) if line == public_key => {}
        (Some(_), None) => {
            return Err("its second line is not the seed's public key".to_owned());
        }
        (Some(_), Some(_)) => return Err("it holds more than a seed and its public key".to_owned()),
    }
    Ok(NatsAuth::Nkey {
        seed: seed.to_owned(),
        public_key,
    })
}

/// The text of a secret file, refused when others may read it, when it is
/// no file, too large or not text.
fn read_secret(path: &Path, flag: &str) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    // Asked before opening: a pipe would hold the start until written to.
    let is_file = std::fs::metadata(path).is_ok_and(|meta| meta.is_file());
    if !is_file && path.exists() {
        return Err(format!(
            "{flag} {shown} is not a file: give the path of the credential file"
        ));
    }
    let file = std::fs::File::open(path).map_err(|error| {
        format!("cannot read {flag} {shown}: {error}; give the path of a file this user may read")
    })?;
    let meta = file
        .metadata()
        .map_err(|error| format!("cannot read {flag} {shown}: {error}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{flag} {shown} is not a file: give the path of the credential file"
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{flag} {shown} holds a NATS secret but others may read it (mode {mode:o}): run `chmod 600 {shown}`"
        ));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "{flag} {shown} is {} bytes, more than a credential file ever is (at most {MAX_FILE_BYTES}): is it the right file?",
            meta.len()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| format!("cannot read {flag} {shown}: {error}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{flag} {shown} is more than {MAX_FILE_BYTES} bytes, more than a credential file ever is: is it the right file?"
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| format!("{flag} {shown} is not text: is it the right file?"))
}

/// `seed` as a user's key pair; the error says what it is instead (never
/// the seed itself).
fn user_seed(seed: &str) -> Result<KeyPair, String> {
    let key_pair = KeyPair::from_seed(seed).map_err(|_| {
        "it holds no nkey seed (58 characters, SU…, with a valid checksum)".to_owned()
    })?;
    match key_pair.key_pair_type() {
        KeyPairType::User => Ok(key_pair),
        other => Err(format!(
            "it holds the seed of an nkey of type {other:?}, not of a user (SU…)"
        )),
    }
}

/// Whether an error NATS reported (async-nats' `Event::ServerError` or
/// `Event::ClientError`, as text) is the server refusing the client's
/// credentials: a client keeps trying to connect then, and the one it
/// belongs to says so instead of waiting on the silence.
pub fn refused(error: &str) -> bool {
    let error = error.to_ascii_lowercase();
    error.contains("authorization violation") || error.contains("authentication expired")
}

const JWT_BEGIN: &str = "-----BEGIN NATS USER JWT-----";
const JWT_END: &str = "------END NATS USER JWT------";
const SEED_BEGIN: &str = "-----BEGIN USER NKEY SEED-----";
const SEED_END: &str = "------END USER NKEY SEED------";

/// A creds file: its user JWT (whose subject must be the seed's public
/// key) and its user seed.
fn parse_creds(text: &str) -> Result<NatsAuth, String> {
    let jwt = block(text, "BEGIN NATS USER JWT")
        .ok_or("it holds no user JWT (-----BEGIN NATS USER JWT-----)")?;
    let seed = block(text, "BEGIN USER NKEY SEED")
        .ok_or("it holds no user seed (-----BEGIN USER NKEY SEED-----)")?;
    let key_pair = user_seed(seed)?;
    let subject = jwt_subject(jwt)?;
    let public_key = key_pair.public_key();
    if subject != public_key {
        return Err(format!(
            "its JWT is of the user {subject} but its seed of the user {public_key}"
        ));
    }
    Ok(NatsAuth::Creds {
        text: format!("{JWT_BEGIN}\n{jwt}\n{JWT_END}\n\n{SEED_BEGIN}\n{seed}\n{SEED_END}\n"),
        public_key,
    })
}

/// The first non-empty line after the line holding `begin`, up to its
/// `-----END` line.
fn block<'a>(text: &'a str, begin: &str) -> Option<&'a str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|line| line.starts_with("---") && line.contains(begin))?;
    let value = lines.find(|line| !line.is_empty())?;
    let end = lines.next()?;
    (!value.starts_with("---") && end.starts_with("---") && end.contains("END")).then_some(value)
}

/// The subject (`sub`) of a user JWT, checked to be one: three base64url
/// parts, claims of `"type": "user"`.
fn jwt_subject(jwt: &str) -> Result<String, String> {
    let garbled =
        || "its user JWT is garbled (not three base64url parts of a NATS user's claims)".to_owned();
    let parts: Vec<&str> = jwt.split('.').collect();
    let [_, claims, _] = parts[..] else {
        return Err(garbled());
    };
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .map_err(|_| garbled())?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).map_err(|_| garbled())?;
    let kind = claims["nats"]["type"].as_str().unwrap_or("user");
    if kind != "user" {
        return Err(format!("its JWT is of the kind {kind:?}, not of a user"));
    }
    claims["sub"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(garbled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// `text` in a file of `mode` in `dir`.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn jwt(claims: serde_json::Value) -> String {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
        // The signature is the account's business; nats-server checks it.
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn creds(jwt: &str, seed: &str) -> String {
        format!(
            "{JWT_BEGIN}\n{jwt}\n{JWT_END}\n\n************************* IMPORTANT *************************\nNKEY Seed printed below can be used to sign and prove identity.\n\n{SEED_BEGIN}\n{seed}\n{SEED_END}\n\n*************************************************************\n"
        )
    }

    #[test]
    fn a_user_seed_is_read_from_a_private_file_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let user = KeyPair::new_user();
        let seed = user.seed().unwrap();
        let path = file(&dir, "node.nk", &format!("{seed}\n"), 0o600);
        let auth = load(None, Some(&path), false).unwrap();
        assert_eq!(
            auth,
            NatsAuth::Nkey {
                seed: seed.clone(),
                public_key: user.public_key()
            }
        );
        assert_eq!(auth.public_key(), Some(user.public_key().as_str()));
        assert!(!format!("{auth:?}").contains(&seed));
        assert_eq!(load(None, None, true).unwrap(), NatsAuth::Url);
        // As `nk -gen user -pubout` writes it: the seed, then its public key.
        let pubout = file(
            &dir,
            "pubout.nk",
            &format!("{seed}\n{}\n", user.public_key()),
            0o600,
        );
        assert_eq!(load(None, Some(&pubout), false).unwrap(), auth);
    }

    #[test]
    fn a_secret_file_others_may_read_is_refused_with_the_chmod_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let seed = KeyPair::new_user().seed().unwrap();
        for mode in [0o644, 0o640, 0o604] {
            let path = file(&dir, "node.nk", &seed, mode);
            let error = load(None, Some(&path), false).unwrap_err();
            assert!(
                error.contains(&format!("run `chmod 600 {}`", path.display())),
                "{error}"
            );
            assert!(!error.contains(&seed), "{error}");
        }
    }

    #[test]
    fn wrong_credentials_are_refused_at_start_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let seed = KeyPair::new_user().seed().unwrap();
        let nkey = file(&dir, "node.nk", &seed, 0o600);
        let missing = dir.path().join("nowhere.nk");
        let account = KeyPair::new_account().seed().unwrap();
        let account = file(&dir, "account.nk", &account, 0o600);
        let mut broken = seed.clone();
        broken.replace_range(10..11, if &seed[10..11] == "A" { "B" } else { "A" });
        let broken = file(&dir, "broken.nk", &broken, 0o600);
        let public = file(&dir, "public.nk", &KeyPair::new_user().public_key(), 0o600);
        let binary = dir.path().join("binary.nk");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o600)).unwrap();
        let other_public = format!("{seed}\n{}\n", KeyPair::new_user().public_key());
        let other_public = file(&dir, "other.nk", &other_public, 0o600);
        let more = format!("{seed}\n{seed}\n{seed}\n");
        let more = file(&dir, "more.nk", &more, 0o600);
        let fifo = dir.path().join("fifo.nk");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let huge = file(
            &dir,
            "huge.nk",
            &"S".repeat(MAX_FILE_BYTES as usize + 1),
            0o600,
        );
        let cases: Vec<(Result<NatsAuth, String>, &str)> = vec![
            (
                load(Some(&nkey), Some(&nkey), false),
                "both --nats-creds and --nats-nkey",
            ),
            (
                load(None, Some(&nkey), true),
                "take user:password@ out of the URLs",
            ),
            (
                load(Some(&nkey), None, true),
                "take user:password@ out of the URLs",
            ),
            (load(None, Some(&missing), false), "cannot read --nats-nkey"),
            (load(None, Some(dir.path()), false), "is not a file"),
            (load(None, Some(&fifo), false), "is not a file"),
            (
                load(None, Some(&account), false),
                "of type Account, not of a user",
            ),
            (load(None, Some(&broken), false), "holds no nkey seed"),
            (load(None, Some(&public), false), "holds no nkey seed"),
            (load(None, Some(&binary), false), "is not text"),
            (
                load(None, Some(&other_public), false),
                "its second line is not the seed's public key",
            ),
            (
                load(None, Some(&more), false),
                "more than a seed and its public key",
            ),
            (
                load(None, Some(&huge), false),
                "more than a credential file ever is",
            ),
            (load(Some(&nkey), None, false), "holds no user JWT"),
        ];
        for (result, expected) in cases {
            let error = result.unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
            assert!(!error.contains(&seed), "{error}");
            assert!(!error.starts_with(char::is_uppercase), "lowercase: {error}");
        }
    }

    #[test]
    fn a_refusal_of_the_credentials_is_told_from_other_errors() {
        // As async-nats 0.46 tells them against nats-server 2.9.
        assert!(refused("nats: authorization violation"));
        assert!(refused(
            "nats: authorization violation: nats: authorization violation"
        ));
        assert!(refused("nats: user authentication expired"));
        assert!(!refused("nats: permissions violation for publish to \"x\""));
        assert!(!refused("nats: timed out"));
    }

    #[test]
    fn a_creds_file_is_its_users_jwt_and_seed() {
        let dir = tempfile::tempdir().unwrap();
        let user = KeyPair::new_user();
        let seed = user.seed().unwrap();
        let claims =
            serde_json::json!({"sub": user.public_key(), "nats": {"type": "user", "version": 2}});
        let token = jwt(claims);
        let path = file(&dir, "agent.creds", &creds(&token, &seed), 0o600);
        match load(Some(&path), None, false).unwrap() {
            NatsAuth::Creds { text, public_key } => {
                assert_eq!(public_key, user.public_key());
                assert_eq!(block(&text, "BEGIN NATS USER JWT"), Some(token.as_str()));
                assert_eq!(block(&text, "BEGIN USER NKEY SEED"), Some(seed.as_str()));
            }
            other => panic!("{other:?}"),
        }

        let other = KeyPair::new_user();
        let theirs = jwt(serde_json::json!({"sub": other.public_key(), "nats": {"type": "user"}}));
        let account =
            jwt(serde_json::json!({"sub": user.public_key(), "nats": {"type": "account"}}));
        let cases = [
            (creds(&theirs, &seed), "its JWT is of the user"),
            (creds(&account, &seed), "its JWT is of the kind \"account\""),
            (creds("not-a-jwt", &seed), "its user JWT is garbled"),
            (creds("a.!!!.c", &seed), "its user JWT is garbled"),
            (
                creds(&token, &KeyPair::new_account().seed().unwrap()),
                "not of a user",
            ),
            (
                format!("{JWT_BEGIN}\n{token}\n{JWT_END}\n"),
                "holds no user seed",
            ),
        ];
        for (text, expected) in cases {
            let path = file(&dir, "bad.creds", &text, 0o600);
            let error = load(Some(&path), None, false).unwrap_err();
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
            assert!(error.contains("nsc generate creds"), "{error}");
            assert!(!error.contains(&seed), "{error}");
        }
    }
}
