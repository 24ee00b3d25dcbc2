//! The agent ships binary batches (`application/x-tailwater-batch`) to a
//! server that takes them, and JSON to one that does not
//! (`--ingest-binary=false`, as an older server answers 415): every line
//! arrives either way, and the server's `/metrics` says how it came.

use crate::common::*;

/// A worker printing `lines` numbered lines.
fn numbered(lines: usize) -> String {
    format!("i=1; while [ $i -le {lines} ]; do echo \"line $i\"; i=$((i+1)); done")
}

/// The sum of the samples of `/metrics` whose line starts with `prefix`.
fn metric(server: &TestServer, prefix: &str) -> f64 {
    let (status, text) = http("GET", server.port, "/metrics", Some(TOKEN), None);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every numbered line of the run, once, in order.
fn assert_every_line(server: &TestServer, app: &str, lines: usize) {
    let records = server.logs(&["--app", app, "--stream", "stdout"]);
    let want: Vec<String> = (1..=lines).map(|i| format!("line {i}")).collect();
    assert_eq!(messages(&records), want);
}

#[test]
fn the_agent_ships_binary_batches_to_a_server_that_takes_them() {
    let server = TestServer::start();
    let output = run_worker(&server, "bin-ship", &numbered(500));
    assert!(output.status.success(), "{output:?}");
    assert_every_line(&server, "bin-ship", 500);
    let binary = metric(&server, r#"tailwater_ingest_bodies_total{format="binary"}"#);
    assert!(binary >= 1.0, "the agent's batches came in binary");
    assert_eq!(
        metric(&server, r#"tailwater_ingest_bodies_total{format="json"}"#),
        0.0,
        "none came as JSON"
    );
}

#[test]
fn the_agent_falls_back_to_json_once_a_server_refuses_binary() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on_with(
        ANY_PORT,
        &dir.path().join("data"),
        &["--ingest-binary=false"],
    );
    let output = run_worker(&server, "bin-off", &numbered(500));
    assert!(output.status.success(), "{output:?}");
    assert_every_line(&server, "bin-off", 500);
    assert!(metric(&server, r#"tailwater_ingest_bodies_total{format="json"}"#) >= 1.0);
    assert_eq!(
        metric(&server, r#"tailwater_ingest_bodies_total{format="binary"}"#),
        0.0
    );
    // Refused once: the agent remembers, and sends JSON from then on.
    let refused = metric(&server, "tailwater_ingest_refused_batches_total{")
        - metric(
            &server,
            "tailwater_ingest_refused_batches_total{tenant=\"default\",app=\"\",reason=\"unsupported_media_type\"}",
        );
    assert_eq!(refused, 0.0, "no other refusal");
    assert_eq!(
        metric(
            &server,
            "tailwater_ingest_refused_batches_total{tenant=\"default\",app=\"\",reason=\"unsupported_media_type\"}"
        ),
        1.0,
        "one binary batch refused, then JSON"
    );
}
