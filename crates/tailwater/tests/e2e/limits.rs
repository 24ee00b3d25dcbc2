//! Ingest limits, redaction, metrics and TLS through the real binaries: a
//! `tailwater server` with limit and redaction flags, a `tailwater run`
//! agent whose worker trips them, and `tailwater logs` reading back over
//! HTTPS.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::*;

/// `tailwater server` on a free port over `data` with `flags`; killed when
/// dropped.
struct FlaggedServer {
    port: u16,
    child: Child,
}

impl FlaggedServer {
    fn start(data: &Path, flags: &[&str], scheme: &str) -> FlaggedServer {
        let mut child = Command::new(binary())
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{ANY_PORT}"),
                "--data",
            ])
            .arg(data)
            .args(flags)
            .env("TAILWATER_BOOTSTRAP_TOKEN", TOKEN)
            .env("TAILWATER_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let port = announced_port(child.stdout.take().expect("piped"));
        let server = FlaggedServer { port, child };
        // Over TLS the plain-HTTP probe gets no answer: wait for the port.
        wait_for("the server to listen", Duration::from_secs(20), || {
            if scheme == "https" {
                std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            } else {
                http("GET", port, "/readyz", None, None).0 == 200
            }
        });
        server
    }

    fn command(&self, scheme: &str, spool: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .args(args)
            .env(
                "TAILWATER_SERVER",
                format!("{scheme}://localhost:{}", self.port),
            )
            .env("TAILWATER_TOKEN", TOKEN)
            .env("TAILWATER_SPOOL", spool);
        command
    }
}

impl Drop for FlaggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` to success: its stdout.
fn succeed(command: &mut Command) -> Vec<u8> {
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{command:?} failed: {stderr}");
    output.stdout
}

fn logs(server: &FlaggedServer, scheme: &str, spool: &Path, extra: &[&str]) -> Vec<Value> {
    let args = [&["logs", "--json", "-n", "10000"], extra].concat();
    json_lines(&succeed(&mut server.command(scheme, spool, &args)))
}

#[test]
fn an_agent_over_the_limits_loses_nothing_and_its_owner_sees_why() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let server = FlaggedServer::start(
        &dir.path().join("data"),
        &[
            "--runner-rate-lines",
            "50",
            "--max-line-bytes",
            "300",
            "--redact",
            r"(?P<keep>patient=)\w+",
        ],
        "http",
    );
    // 400 lines at once (in, with a debt of about 7 s past the burst),
    // then more while the debt lasts: 429s that the agent rides out.
    let script = "for i in $(seq 1 400); do echo line $i; done; \
                  sleep 0.3; \
                  echo 'aws AKIAIOSFODNN7EXAMPLE patient=bob42'; \
                  head -c 1000 /dev/zero | tr '\\0' 'L'; echo; \
                  echo done";
    succeed(&mut server.command(
        "http",
        &spool,
        &[
            "run",
            "--app",
            "limited",
            "--runner",
            "limited-1",
            "--",
            "sh",
            "-c",
            script,
        ],
    ));

    let records = logs(&server, "http", &spool, &["--runner", "limited-1"]);
    let texts = messages(&records);
    for i in 1..=400 {
        assert!(
            texts.contains(&format!("line {i}").as_str()),
            "line {i} lost"
        );
    }
    assert!(texts.contains(&"done"));
    assert!(
        texts.contains(&"aws [REDACTED:aws_access_key] patient=[REDACTED:custom_1]"),
        "{texts:#?}"
    );
    for secret in ["AKIAIOSFODNN7EXAMPLE", "bob42"] {
        let stored: Vec<String> = records.iter().map(Value::to_string).collect();
        assert!(
            stored.iter().all(|record| !record.contains(secret)),
            "{secret} stored: {stored:#?}"
        );
    }
    let cut = records
        .iter()
        .find(|r| r["message"].as_str().unwrap().starts_with("LLL"))
        .unwrap();
    assert_eq!(cut["message"].as_str().unwrap().len(), 300);
    assert_eq!(cut["fields"]["limited"]["message_bytes"], 1000);
    let event = |name: &str| {
        records
            .iter()
            .filter(|r| r["fields"]["event"] == name)
            .collect::<Vec<_>>()
    };
    assert_eq!(event("ingest_cut").len(), 1, "{texts:#?}");
    let throttled = event("rate_limited");
    assert!(!throttled.is_empty(), "{texts:#?}");
    assert_eq!(throttled[0]["stream"], "system");
    assert_eq!(throttled[0]["fields"]["reason"], "rate_limit_runner_lines");

    let (status, metrics) = http("GET", server.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200);
    for expected in [
        r#"tailwater_ingest_refused_batches_total{tenant="default",app="limited",reason="rate_limit_runner_lines"}"#,
        r#"tailwater_ingest_cut_lines_total{tenant="default",app="limited",reason="line_too_long"} 1"#,
        // The line, and the agent's `start` record, whose command holds it.
        r#"tailwater_redactions_total{tenant="default",app="limited",pattern="aws_access_key"} "#,
        r#"tailwater_redactions_total{tenant="default",app="limited",pattern="custom_1"} "#,
    ] {
        assert!(metrics.contains(expected), "no {expected} in\n{metrics}");
    }
    assert_eq!(http("GET", server.port, "/metrics", None, None).0, 401);
}

#[test]
fn the_cli_reads_logs_over_https_with_the_servers_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = FlaggedServer::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        "https",
    );
    // Plain HTTP on the same port gets no answer.
    assert_eq!(http("GET", server.port, "/healthz", None, None).0, 0);

    // Sent by the client library, trusting the certificate.
    let batch: tailwater_model::wire::IngestBatch = serde_json::from_value(serde_json::json!({
        "app": "tls", "runner": "r1", "boot": "b1",
        "records": [{"seq": 0, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout",
                     "message": "sent over tls"}],
    }))
    .unwrap();
    let client =
        tailwater_client::Client::new(&format!("https://localhost:{}", server.port), TOKEN)
            .unwrap()
            .with_ca_certificate(certified.cert.pem().as_bytes())
            .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = runtime.block_on(client.ingest(&batch)).unwrap();
    assert_eq!(answer.accepted, 1);

    let mut command = server.command("https", &spool, &["logs", "--json", "--app", "tls"]);
    let stdout = succeed(command.arg("--ca-cert").arg(&cert));
    assert_eq!(messages(&json_lines(&stdout)), ["sent over tls"]);

    // Without the certificate the CLI refuses the server.
    let output = server
        .command("https", &spool, &["logs", "--app", "tls"])
        .output()
        .unwrap();
    assert!(!output.status.success());

    // The agent of `tailwater run` trusts it too, and ships over TLS.
    let run = [
        "run",
        "--app",
        "tls-run",
        "--runner",
        "tls-runner",
        "--ca-cert",
        cert.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "echo shipped over tls",
    ];
    succeed(&mut server.command("https", &spool, &run));
    let mut command = server.command("https", &spool, &["logs", "--json", "--app", "tls-run"]);
    let stdout = succeed(
        command
            .arg("--ca-cert")
            .arg(&cert)
            .args(["--stream", "stdout"]),
    );
    assert_eq!(messages(&json_lines(&stdout)), ["shipped over tls"]);
}
