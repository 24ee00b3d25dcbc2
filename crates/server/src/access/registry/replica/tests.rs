//! A replica applying what the cluster's bucket delivers, on real files:
//! in any order the bucket delivers it, skipping what is no change, and
//! kept across a restart.

use super::*;

fn entry(key: &str, revision: u64, value: serde_json::Value) -> Entry {
    Entry {
        key: key.to_owned(),
        revision,
        value: Some(serde_json::to_vec(&value).unwrap()),
        pending: 0,
    }
}

#[test]
fn a_replica_applies_the_buckets_values_in_any_order_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open_replica(dir.path()).unwrap();
    assert!(registry.tokens().is_empty(), "no admin token made locally");
    let secret = "tw_replicated";
    let created = "2026-01-01T00:00:00Z";
    // The app's newest value comes before its tenant's (the tenant was
    // changed later), as a last-value-per-key watch delivers them.
    let app = entry(
        &app_key("acme", "api v2"),
        3,
        serde_json::json!({"app": {"tenant": "acme", "name": "api v2",
            "app": {"created": created, "private_logs": true}}}),
    );
    let tenant = entry(
        "tenant.acme",
        5,
        serde_json::json!({"tenant": {"name": "acme", "created": created, "private_logs": true}}),
    );
    let token = entry(
        "token.tok_0123456789abcdef",
        6,
        serde_json::json!({"token": {"id": "tok_0123456789abcdef",
            "sha256": hex::encode(hash(secret)), "scope": "owner", "tenant": "acme",
            "created": created}}),
    );
    // Hostile or damaged values: skipped, counted, never applied.
    let elsewhere = entry(
        "tenant.other",
        7,
        serde_json::json!({"tenant": {"name": "acme", "created": created, "private_logs": false}}),
    );
    let mut garbage = entry("token.tok_1", 8, serde_json::json!(null));
    garbage.value = Some(b"{not json".to_vec());
    let seal = Entry {
        key: SEAL_KEY.to_owned(),
        revision: 1,
        value: Some(vec![7; 16]),
        pending: 0,
    };
    registry
        .apply_replicated(&[seal, app, tenant, token, elsewhere, garbage])
        .unwrap();
    assert_eq!(registry.applied_revision(), 8);
    assert_eq!(registry.replica_stats().undecodable.load(Relaxed), 2);
    assert_eq!(registry.replica_stats().applied.load(Relaxed), 4); // placeholder tenant too
    let check = |registry: &Registry| {
        let acme = registry.tenant("acme").expect("the tenant");
        assert!(
            acme.private_logs,
            "the tenant's own value, not the placeholder"
        );
        assert_eq!(acme.apps, 1);
        assert!(registry.is_private("acme", "api v2"));
        let identity = registry.authenticate(secret).unwrap();
        assert_eq!(identity.tenant.as_deref(), Some("acme"));
        assert!(registry.tenant("other").is_none());
    };
    check(&registry);
    // The same values again (a watch made again): nothing written.
    let written = registry.bytes_written();
    let again = entry(
        "tenant.acme",
        9,
        serde_json::json!({"tenant": {"created": created, "private_logs": true, "name": "acme"}}),
    );
    registry.apply_replicated(&[again]).unwrap();
    assert_eq!(registry.bytes_written(), written);
    assert_eq!(registry.applied_revision(), 9);

    // A token whose hash changed: its old secret no longer finds it.
    let rehashed = entry(
        "token.tok_0123456789abcdef",
        10,
        serde_json::json!({"token": {"id": "tok_0123456789abcdef",
            "sha256": hex::encode(hash("tw_other")), "scope": "owner", "tenant": "acme",
            "created": created}}),
    );
    registry.apply_replicated(&[rehashed]).unwrap();
    assert_eq!(registry.authenticate(secret), Err(TokenRejected::Unknown));
    assert!(registry.authenticate("tw_other").is_ok());
    drop(registry);

    // What the replica applied is in its own files.
    let registry = Registry::open_replica(dir.path()).unwrap();
    assert!(registry.tenant("acme").unwrap().private_logs);
    assert!(registry.authenticate("tw_other").is_ok());
    assert_eq!(
        registry.applied_revision(),
        0,
        "revisions come from the watch"
    );
}

#[test]
fn the_bootstrap_tokens_id_is_the_same_for_the_same_secret_and_tells_nothing_of_it() {
    let one = bootstrap_id(&hash("tw_bootstrap"));
    assert_eq!(one, bootstrap_id(&hash("tw_bootstrap")));
    assert_ne!(one, bootstrap_id(&hash("tw_other")));
    assert!(one.starts_with(TOKEN_ID_PREFIX) && one.len() == TOKEN_ID_PREFIX.len() + 16);
    assert!(!hex::encode(hash("tw_bootstrap")).contains(&one[TOKEN_ID_PREFIX.len()..]));
}
