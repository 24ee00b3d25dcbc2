//! NATS's operator mode for the tests (`crates/server/tests/cluster/auth.rs`
//! and the binary's `e2e/agent_nats.rs`): accounts and users as JWTs,
//! signed here with the `nkeys` crate as `nsc` would sign them. Apart from
//! `nats.rs`, which the benchmarks share and which needs neither `nkeys`
//! nor `base64`.

/// Operator mode, for `NatsCluster::start_with` (nats.rs): an operator, a system
/// account and the account `TAILWATER` (JetStream on, no limits) as JWTs
/// signed here with the `nkeys` crate, preloaded into a memory resolver
/// (`resolver: MEMORY`); users are creds files of `TAILWATER`'s
/// ([`OperatorMode::creds`]), as `nsc generate creds` writes them.
pub struct OperatorMode {
    operator: nkeys::KeyPair,
    system: nkeys::KeyPair,
    pub account: nkeys::KeyPair,
}

impl OperatorMode {
    pub fn new() -> OperatorMode {
        OperatorMode {
            operator: nkeys::KeyPair::new_operator(),
            system: nkeys::KeyPair::new_account(),
            account: nkeys::KeyPair::new_account(),
        }
    }

    /// The servers' configuration lines.
    pub fn config(&self) -> String {
        let operator = jwt(
            &self.operator,
            &self.operator,
            "tailwater-test",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        let system = jwt(
            &self.operator,
            &self.system,
            "SYS",
            serde_json::json!({"type": "account", "version": 2}),
        );
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1
        });
        let account = jwt(
            &self.operator,
            &self.account,
            "TAILWATER",
            serde_json::json!({"type": "account", "version": 2, "limits": unlimited}),
        );
        format!(
            "operator: {operator}\n\
             system_account: {system_key}\n\
             resolver: MEMORY\n\
             resolver_preload: {{\n  {system_key}: {system}\n  {account_key}: {account}\n}}\n",
            system_key = self.system.public_key(),
            account_key = self.account.public_key(),
        )
    }

    /// A creds file of a new user of `account` (this mode's, or one the
    /// servers do not know), allowed `publish` and `subscribe` (subjects;
    /// none: all).
    pub fn creds(account: &nkeys::KeyPair, publish: &[&str], subscribe: &[&str]) -> String {
        let user = nkeys::KeyPair::new_user();
        let allow = |subjects: &[&str]| match subjects {
            [] => serde_json::json!({}),
            subjects => serde_json::json!({ "allow": subjects }),
        };
        let token = jwt(
            account,
            &user,
            "user",
            serde_json::json!({
                "type": "user", "version": 2, "subs": -1, "data": -1, "payload": -1,
                "pub": allow(publish), "sub": allow(subscribe),
            }),
        );
        format!(
            "-----BEGIN NATS USER JWT-----\n{token}\n------END NATS USER JWT------\n\n\
             ************************* IMPORTANT *************************\n\
             NKEY Seed printed below can be used to sign and prove identity.\n\
             NKEYs are sensitive and should be treated as secrets.\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
             *************************************************************\n",
            user.seed().unwrap()
        )
    }
}

/// A JWT of `subject` with `nats` claims, signed by `issuer` (nats-server's
/// `ed25519-nkey`).
fn jwt(
    issuer: &nkeys::KeyPair,
    subject: &nkeys::KeyPair,
    name: &str,
    nats: serde_json::Value,
) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "jti": format!("{}{now}", &subject.public_key()[..20]),
        "iat": now,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject.public_key(),
        "nats": nats,
    });
    let header = serde_json::json!({"typ": "JWT", "alg": "ed25519-nkey"});
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let signature = issuer.sign(signed.as_bytes()).unwrap();
    format!("{signed}.{}", b64(&signature))
}
