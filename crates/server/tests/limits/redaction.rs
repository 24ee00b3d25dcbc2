//! Redaction: secrets replaced before anything is written, by the default
//! patterns and by an app's own.

use super::*;

/// Every byte under `dir`, for a secret that must not be anywhere.
fn files_contain(dir: &std::path::Path, needle: &str) -> bool {
    let mut stack = vec![dir.to_owned()];
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            if bytes
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
            {
                return true;
            }
        }
    }
    false
}

#[tokio::test]
async fn default_redaction_replaces_secrets_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |_| {}).await;
    let aws = "AKIAIOSFODNN7EXAMPLE";
    let github = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
    let bearer = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlc2lnbmF0dXJl";
    // Made in order: times are kept to the nanosecond, so the order they
    // are made in is the order they read in.
    let first = record(0, &format!("boto3 uses {aws} for s3"));
    let mut with_fields = record(1, "calling the hub");
    with_fields["fields"] = json!({"env": {"GITHUB_TOKEN": github}, "attempt": 2});
    let records = vec![
        first,
        with_fields,
        record(
            2,
            &format!("request headers: Authorization: Bearer {bearer}"),
        ),
        record(3, "step 10 loss 0.25"),
    ];
    let (status, _, answer) = post(&server, &batch("secrets", "r1", records)).await;
    assert_eq!(status, 200, "{answer}");

    let logs = runner_logs(&client, "r1").await;
    let messages: Vec<&str> = logs.iter().map(|r| r.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "boto3 uses [REDACTED:aws_access_key] for s3",
            "calling the hub",
            "request headers: Authorization: Bearer [REDACTED:authorization]",
            "step 10 loss 0.25",
        ]
    );
    assert_eq!(
        logs[1].fields["env"]["GITHUB_TOKEN"],
        "[REDACTED:github_token]"
    );
    assert_eq!(logs[1].fields["attempt"], 2);
    // Not in the log files either: redaction happens before the write.
    for secret in [aws, github, bearer] {
        assert!(!files_contain(dir.path(), secret), "{secret} is on disk");
    }
    let samples = scrape(&server, Some(ADMIN)).await;
    for pattern in ["aws_access_key", "github_token", "authorization"] {
        let key = format!(
            r#"tailwater_redactions_total{{app="secrets",pattern="{pattern}",tenant="default"}}"#
        );
        assert_eq!(sample(&samples, &key), 1.0, "{key}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn custom_redaction_patterns_apply_and_defaults_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |config| {
        config.redact_defaults = false;
        config.redact = vec![r"(?P<keep>patient=)\w+".into()];
    })
    .await;
    let records = vec![record(0, "patient=alice98 key AKIAIOSFODNN7EXAMPLE")];
    let (status, _, _) = post(&server, &batch("custom", "r1", records)).await;
    assert_eq!(status, 200);
    let logs = runner_logs(&client, "r1").await;
    assert_eq!(
        logs[0].message,
        "patient=[REDACTED:custom_1] key AKIAIOSFODNN7EXAMPLE"
    );
    assert!(!files_contain(dir.path(), "alice98"));
    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        sample(
            &samples,
            r#"tailwater_redactions_total{app="custom",pattern="custom_1",tenant="default"}"#
        ),
        1.0
    );
    server.shutdown().await.unwrap();

    let error = start({
        let mut config = ServerConfig::new(dir.path().join("other"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.redact = vec!["([unclosed".into()];
        config
    })
    .await
    .err()
    .expect("a bad pattern stops the start");
    assert!(
        error
            .to_string()
            .contains("invalid --redact pattern custom_1"),
        "{error}"
    );
}
