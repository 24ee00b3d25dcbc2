//! Tenants, apps and tokens through the CLI against the real server.

use serde_json::Value;

use crate::common::*;

fn run(server: &TestServer, args: &[&str]) -> (String, String) {
    let output = server.command(args).output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        output.status.success(),
        "tailwater {args:?} failed: {stderr}"
    );
    (stdout, stderr)
}

#[test]
fn token_create_prints_only_the_token_and_the_cli_manages_tenants_and_apps() {
    let server = TestServer::start();
    run(&server, &["tenant", "create", "acme"]);
    let (stdout, _) = run(
        &server,
        &[
            "app",
            "create",
            "sdxl",
            "--tenant",
            "acme",
            "--retention-days",
            "14",
        ],
    );
    assert!(stdout.contains("created app sdxl"), "{stdout}");

    let (stdout, stderr) = run(
        &server,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--scope",
            "ingest",
            "--app",
            "sdxl",
            "--expires",
            "30d",
        ],
    );
    let token = stdout.trim_end_matches('\n');
    assert!(
        token.starts_with("tw_")
            && !token.contains(char::is_whitespace)
            && stdout.lines().count() == 1,
        "stdout holds only the token: {stdout:?}"
    );
    assert!(stderr.contains("shown only this once"), "{stderr}");

    // The new token ingests for its app, and nothing else.
    let batch = r#"{"app":"sdxl","version":"v1","runner":"r","boot":"b","records":[{"seq":0,"ts":"2026-11-20T10:00:00Z","stream":"stdout","level":"info","message":"hi"}]}"#;
    assert_eq!(
        http("POST", server.port, "/v1/ingest", Some(token), Some(batch)).0,
        200
    );
    assert_eq!(
        http("GET", server.port, "/v1/logs", Some(token), None).0,
        403
    );

    // An owner token for acme, made and used through the CLI.
    let (owner, _) = run(
        &server,
        &["token", "create", "--tenant", "acme", "--scope", "owner"],
    );
    let owner = owner.trim();
    let as_owner = |args: &[&str]| {
        let output = server
            .command(args)
            .env("TAILWATER_TOKEN", owner)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    as_owner(&["app", "set", "sdxl", "--private-logs", "true"]);
    let apps: Value = serde_json::from_str(&as_owner(&["app", "list", "--json"])).unwrap();
    assert_eq!(apps[0]["name"], "sdxl");
    assert_eq!(apps[0]["private_logs"], true);
    assert_eq!(apps[0]["retention_days"], 14);

    // The tables line up: each column starts where its header does.
    for listing in [&["token", "list"][..], &["app", "list"]] {
        let text = as_owner(listing);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 2, "{text}");
        let starts = |line: &str| -> Vec<usize> {
            let bytes = line.as_bytes();
            (0..bytes.len())
                .filter(|&at| bytes[at] != b' ' && (at == 0 || bytes[at - 1] == b' '))
                .filter(|&at| at == 0 || at >= 2 && bytes[at - 2] == b' ')
                .collect()
        };
        let header = starts(lines[0]);
        for line in &lines[1..] {
            let cells = starts(line);
            assert!(
                cells.iter().all(|at| header.contains(at)),
                "{listing:?} misaligned:\n{text}"
            );
        }
    }

    let tokens: Value = serde_json::from_str(&as_owner(&["token", "list", "--json"])).unwrap();
    let tokens = tokens.as_array().unwrap();
    assert_eq!(tokens.len(), 2, "the owner's tenant's tokens, no admin one");
    let ingest_id = tokens.iter().find(|t| t["scope"] == "ingest").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!serde_json::to_string(&tokens).unwrap().contains(token));
    as_owner(&["token", "revoke", &ingest_id]);
    assert_eq!(
        http("POST", server.port, "/v1/ingest", Some(token), Some(batch)).0,
        401
    );

    // An owner cannot create tenants: a clear error, exit code 1.
    let output = server
        .command(&["tenant", "create", "globex"])
        .env("TAILWATER_TOKEN", owner)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot create tenants"));
    let (list, _) = run(&server, &["tenant", "list"]);
    assert!(
        list.contains("acme") && list.contains("default") && !list.contains("globex"),
        "{list}"
    );
}
