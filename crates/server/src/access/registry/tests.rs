//! The registry's own tests: limits, the journal and its compaction,
//! crashes, and files of earlier releases.

use super::*;
use tailwater_model::tenancy::{NewApp, TenantPatch};

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

    let file = dir.path().join(journal::SNAPSHOT_FILE);
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
    fs::write(dir.path().join(journal::SNAPSHOT_FILE), b"{not json").unwrap();
    let error = Registry::open(dir.path(), None).err().unwrap().to_string();
    assert!(error.contains("not a valid registry file"), "{error}");
}

fn small_limits() -> RegistryLimits {
    RegistryLimits {
        max_token_name_bytes: 16,
        max_tokens_per_tenant: 2,
        max_apps_per_tenant: 2,
    }
}

#[test]
fn names_over_the_limit_and_too_many_tokens_or_apps_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    let registry = registry.with_limits(small_limits());
    let tenant = Some(DEFAULT_TENANT.to_owned());
    let long = Some("n".repeat(17));
    let refused = registry.create_token(Scope::Owner, tenant.clone(), None, None, long);
    assert!(
        matches!(&refused, Err(RegistryError::Limit { reason: NAME_TOO_LONG, message }) if message.contains("--max-token-name-bytes")),
        "{refused:?}"
    );
    registry
        .create_token(
            Scope::Owner,
            tenant.clone(),
            None,
            None,
            Some("n".repeat(16)),
        )
        .unwrap();
    let (_, second) = registry
        .create_token(Scope::Owner, tenant.clone(), None, None, None)
        .unwrap();
    let third = registry.create_token(Scope::Owner, tenant.clone(), None, None, None);
    assert!(matches!(
        third,
        Err(RegistryError::Limit {
            reason: TOO_MANY_TOKENS,
            ..
        })
    ));
    // Revoked tokens do not count.
    registry.revoke_token(&second.id).unwrap();
    registry
        .create_token(Scope::Owner, tenant.clone(), None, None, None)
        .unwrap();

    registry.ensure_app(DEFAULT_TENANT, "a").unwrap();
    registry.ensure_app(DEFAULT_TENANT, "b").unwrap();
    let app = registry.ensure_app(DEFAULT_TENANT, "c");
    assert!(matches!(
        app,
        Err(RegistryError::Limit {
            reason: TOO_MANY_APPS,
            ..
        })
    ));
    let mut refused = registry.refused();
    refused.sort();
    assert_eq!(
        refused,
        vec![
            (DEFAULT_TENANT.to_owned(), NAME_TOO_LONG, 1),
            (DEFAULT_TENANT.to_owned(), TOO_MANY_APPS, 1),
            (DEFAULT_TENANT.to_owned(), TOO_MANY_TOKENS, 1),
        ]
    );
}

#[test]
fn a_caller_token_for_a_private_app_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    let tenant = Some(DEFAULT_TENANT.to_owned());
    registry
        .create_app(
            DEFAULT_TENANT,
            &NewApp {
                name: "secret".into(),
                private_logs: Some(true),
                ..NewApp::default()
            },
        )
        .unwrap();
    registry.ensure_app(DEFAULT_TENANT, "open").unwrap();
    let refused = registry.create_token(
        Scope::Caller,
        tenant.clone(),
        Some("secret".into()),
        None,
        None,
    );
    match refused {
        Err(RegistryError::Conflict(message)) => {
            assert!(message.contains("private"), "{message}");
            assert!(message.contains("private_logs"), "{message}");
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    registry
        .create_token(
            Scope::Caller,
            tenant.clone(),
            Some("open".into()),
            None,
            None,
        )
        .unwrap();
    // An ingest token for the private app is still fine: it reads nothing.
    registry
        .create_token(Scope::Ingest, tenant, Some("secret".into()), None, None)
        .unwrap();
}

/// Bytes written by `changes` token creations on a registry that holds
/// `existing` tokens already.
fn bytes_per_change(existing: usize, changes: usize) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    registry.create_tenant("t0", false).unwrap();
    for index in 0..existing {
        let tenant = format!("t{}", index / 500);
        if index % 500 == 0 && index > 0 {
            registry.create_tenant(&tenant, false).unwrap();
        }
        registry
            .create_token(
                Scope::Owner,
                Some(tenant),
                None,
                None,
                Some("x".repeat(200)),
            )
            .unwrap();
    }
    registry.wait_for_compaction();
    let before = registry.bytes_written();
    for _ in 0..changes {
        registry
            .create_token(
                Scope::Owner,
                Some("t0".into()),
                None,
                None,
                Some("y".repeat(200)),
            )
            .unwrap();
    }
    registry.wait_for_compaction();
    (registry.bytes_written() - before) as f64 / changes as f64
}

#[test]
fn a_change_costs_the_same_bytes_however_large_the_registry_grows() {
    let small = bytes_per_change(0, 400);
    let large = bytes_per_change(3_000, 400);
    // A change is one journal record; compaction rewrites the snapshot
    // only once the journal is COMPACT_FACTOR times its size, so it adds
    // at most 1/COMPACT_FACTOR per change. Rewriting the whole file per
    // change would be about 3000 times larger.
    assert!(
        large < small * 3.0 && large < 2_000.0,
        "{small} bytes per change on a small registry, {large} on a large one"
    );
}

#[test]
fn compaction_keeps_every_change_and_the_journal_small() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    let mut secrets = Vec::new();
    for index in 0..600 {
        let (secret, info) = registry
            .create_token(
                Scope::Owner,
                Some(DEFAULT_TENANT.into()),
                None,
                None,
                Some(format!("n{index}")),
            )
            .unwrap();
        if index % 3 == 0 {
            registry.revoke_token(&info.id).unwrap();
        }
        secrets.push((secret, index % 3 == 0));
    }
    registry.wait_for_compaction();
    let journal = fs::metadata(dir.path().join("registry.journal"))
        .unwrap()
        .len();
    let snapshot = fs::metadata(dir.path().join(journal::SNAPSHOT_FILE))
        .unwrap()
        .len();
    assert!(
        journal <= (snapshot * COMPACT_FACTOR).max(COMPACT_MIN_BYTES) + 1024,
        "journal {journal}, snapshot {snapshot}"
    );
    for name in ["registry.journal", journal::SNAPSHOT_FILE] {
        let mode = fs::metadata(dir.path().join(name)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600,
            "{name}"
        );
    }
    drop(registry);
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    for (secret, revoked) in &secrets {
        let expected = if *revoked {
            Err(TokenRejected::Revoked)
        } else {
            Ok(Scope::Owner)
        };
        assert_eq!(
            registry.authenticate(secret).map(|identity| identity.scope),
            expected
        );
    }
}

#[test]
fn a_torn_last_journal_line_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    let (first, _) = registry
        .create_token(Scope::Owner, Some(DEFAULT_TENANT.into()), None, None, None)
        .unwrap();
    registry.create_tenant("acme", true).unwrap();
    drop(registry);
    // A crash in the middle of appending the next change.
    let journal = dir.path().join("registry.journal");
    let mut file = fs::OpenOptions::new().append(true).open(&journal).unwrap();
    std::io::Write::write_all(&mut file, br#"{"seq":99,"change":{"tenant":{"name":"hal"#).unwrap();
    drop(file);

    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    assert!(registry.authenticate(&first).is_ok());
    assert!(registry.tenant("acme").is_some());
    assert!(registry.tenant("hal").is_none());
    // Changes after it are kept too.
    let (second, _) = registry
        .create_token(Scope::Owner, Some("acme".into()), None, None, None)
        .unwrap();
    drop(registry);
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    assert!(registry.authenticate(&first).is_ok());
    assert!(registry.authenticate(&second).is_ok());
}

#[test]
fn a_damaged_journal_line_before_the_last_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    registry.create_tenant("acme", false).unwrap();
    registry.create_tenant("beta", false).unwrap();
    drop(registry);
    let journal = dir.path().join("registry.journal");
    let text = fs::read_to_string(&journal).unwrap();
    fs::write(&journal, text.replacen("acme", "ac\"me", 1)).unwrap();
    let error = Registry::open(dir.path(), None).err().unwrap().to_string();
    assert!(error.contains("line 1 is damaged"), "{error}");
}

#[test]
fn a_registry_file_of_earlier_releases_loads_and_takes_changes() {
    let dir = tempfile::tempdir().unwrap();
    let digest = hex::encode(hash("tw_owner"));
    let admin = hex::encode(hash("tw_admin"));
    fs::write(
        dir.path().join(journal::SNAPSHOT_FILE),
        format!(
            r#"{{
  "tenants": {{
"default": {{"created": "2026-01-01T00:00:00Z", "private_logs": false, "apps": {{}}}},
"acme": {{"created": "2026-01-01T00:00:00Z", "private_logs": true,
          "apps": {{"sdxl": {{"created": "2026-01-02T00:00:00Z", "private_logs": false, "retention_days": 7}}}}}}
  }},
  "tokens": [
{{"id": "tok_admin", "sha256": "{admin}", "scope": "admin", "name": "bootstrap", "created": "2026-01-01T00:00:00Z"}},
{{"id": "tok_owner", "sha256": "{digest}", "scope": "owner", "tenant": "acme", "created": "2026-01-01T00:00:00Z"}}
  ]
}}"#
        ),
    )
    .unwrap();
    let (registry, shown) = Registry::open(dir.path(), None).unwrap();
    assert!(shown.is_none());
    assert_eq!(
        registry.authenticate("tw_owner").unwrap().tenant.as_deref(),
        Some("acme")
    );
    assert_eq!(
        registry.authenticate("tw_admin").unwrap().scope,
        Scope::Admin
    );
    let app = registry.app("acme", "sdxl").unwrap();
    assert_eq!(app.settings.retention_days, Some(7));
    registry.revoke_token("tok_owner").unwrap();
    drop(registry);
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    assert_eq!(
        registry.authenticate("tw_owner"),
        Err(TokenRejected::Revoked)
    );
    assert!(registry.authenticate("tw_admin").is_ok());
}

const CHILD_DIR: &str = "TAILWATER_REGISTRY_CHILD_DIR";

/// Run by the next test as a child process: creates tokens until it is
/// killed, printing each secret once its creation returned.
#[test]
#[ignore = "run as a child process by kill_9_while_changing_loses_nothing_acknowledged"]
fn child_creates_tokens_until_killed() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let (registry, _) = Registry::open(Path::new(&dir), None).unwrap();
    let registry = registry.with_limits(RegistryLimits {
        max_tokens_per_tenant: usize::MAX,
        ..RegistryLimits::default()
    });
    let mut out = std::io::stdout().lock();
    for index in 0.. {
        let (secret, _) = registry
            .create_token(
                Scope::Owner,
                Some(DEFAULT_TENANT.into()),
                None,
                None,
                Some(format!("{index:0>150}")),
            )
            .unwrap();
        std::io::Write::write_all(&mut out, format!("{secret}\n").as_bytes()).unwrap();
        std::io::Write::flush(&mut out).unwrap();
    }
}

#[test]
fn kill_9_while_changing_loses_nothing_acknowledged() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = Vec::new();
    // Two rounds: the second starts from what the first left, compaction
    // (every few hundred changes here) included.
    for round in 0..2 {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                // The test's name as the harness has it: its path less the
                // crate's name.
                &format!(
                    "{}::child_creates_tokens_until_killed",
                    module_path!().split_once("::").unwrap().1
                ),
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DIR, dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        while seen < 700 + round * 300 {
            let line = lines.next().expect("the child runs until killed").unwrap();
            if line.starts_with(TOKEN_PREFIX) {
                acknowledged.push(line);
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // What the child printed before it died was acknowledged too.
        for line in lines.map_while(Result::ok) {
            if line.starts_with(TOKEN_PREFIX) {
                acknowledged.push(line);
            }
        }
    }
    let (registry, _) = Registry::open(dir.path(), None).unwrap();
    for secret in &acknowledged {
        assert!(
            registry.authenticate(secret).is_ok(),
            "an acknowledged token was lost"
        );
    }
    assert!(acknowledged.len() >= 1700);
}
