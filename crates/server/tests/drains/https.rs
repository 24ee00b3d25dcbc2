//! HTTPS receivers (a second tailwater server with a certificate of its
//! own CA, receiving through its OTLP endpoint), and the lag of a paused
//! drain.

use std::time::Duration;

use serde_json::{json, Value};
use tailwater_server::tls::TlsFiles;
use tailwater_server::RunningServer;

use super::common::{call, scrape, server_in, TOKEN};
use super::{fast, ingest, ok, tenants, until};

/// A tailwater server over HTTPS with a certificate its own (test) CA
/// signed for 127.0.0.1; the CA's PEM.
async fn https_receiver(dir: &std::path::Path) -> (RunningServer, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let files = TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    let (server, _) = server_in(&dir.join("data"), TOKEN, |config| {
        config.tls = Some(files);
    })
    .await;
    assert!(server.url().starts_with("https://127.0.0.1:"));
    (server, ca.pem())
}

/// `GET path` of the HTTPS receiver, trusting its CA.
async fn https_get(server: &RunningServer, ca: &str, path: &str) -> Value {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let response = client
        .get(format!("{}{path}", server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// An HTTPS OTLP drain: with the receiver's CA in `--drain-ca-file` every
/// record arrives once; a server without it fails each attempt (counted),
/// and `drain list` says it is the certificate, and what to do.
#[tokio::test]
async fn an_https_receiver_gets_every_record_once_with_the_ca_and_none_without() {
    let receiving_dir = tempfile::tempdir().unwrap();
    let (receiving, ca) = https_receiver(receiving_dir.path()).await;
    let ca_file = receiving_dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let sending = |with_ca: bool| {
        let ca_file = ca_file.clone();
        move |config: &mut tailwater_server::ServerConfig| {
            fast(config);
            config.drains.max_failures = 1000;
            config.drains.ca_file = with_ca.then_some(ca_file);
        }
    };
    let trusting_dir = tempfile::tempdir().unwrap();
    let (trusting, _) = server_in(trusting_dir.path(), TOKEN, sending(true)).await;
    let untrusting_dir = tempfile::tempdir().unwrap();
    let (untrusting, _) = server_in(untrusting_dir.path(), TOKEN, sending(false)).await;

    // An ingest token of the receiver's, made over its HTTPS.
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .build()
        .unwrap();
    let created: Value = client
        .post(format!("{}/v1/tokens", receiving.url()))
        .bearer_auth(TOKEN)
        .json(&json!({"scope": "ingest", "app": "sdxl"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let url = format!("{}/v1/logs", receiving.url());
    let mut ids = Vec::new();
    for sender in [&trusting, &untrusting] {
        tenants(sender).await;
        let drain = ok(
            sender,
            "POST",
            "/v1/apps/sdxl/drains?tenant=acme",
            json!({"url": url, "format": "otlp", "token": token}),
        )
        .await;
        ids.push(drain["id"].as_str().unwrap().to_owned());
    }
    ingest(&trusting, "acme", "sdxl", "trusted", 0..120).await;
    ingest(&untrusting, "acme", "sdxl", "untrusted", 0..5).await;

    // Without the CA: every attempt fails, is counted, and says why.
    let labels = format!("{{app=\"sdxl\",drain=\"{}\",tenant=\"acme\"}}", ids[1]);
    let failed = format!("tailwater_drain_failed_attempts_total{labels}");
    let mut error = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let (_, list) = call(
            &untrusting,
            "GET",
            "/v1/apps/sdxl/drains?tenant=acme",
            TOKEN,
            None,
        )
        .await;
        error = list[0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let samples = scrape(&untrusting, Some(TOKEN)).await;
        if !error.is_empty() && samples[&failed] >= 2.0 {
            assert_eq!(list[0]["delivered"], 0, "{list}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        error.contains("certificate problem") && error.contains("--drain-ca-file"),
        "last_error: {error}"
    );

    // With it: all 120 records, each once, and none of the other sender's.
    let path = "/v1/logs?app=sdxl&limit=1000&direction=forward";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let records = loop {
        let page = https_get(&receiving, &ca, path).await;
        let records = page["records"].as_array().unwrap().clone();
        if records.len() >= 120 || tokio::time::Instant::now() > deadline {
            break records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut messages: Vec<String> = records
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_owned())
        .collect();
    messages.sort();
    let mut wanted: Vec<String> = (0..120).map(|seq| format!("trusted {seq}")).collect();
    wanted.sort();
    assert_eq!(messages, wanted, "every record once, none untrusted");
    let samples = scrape(&trusting, Some(TOKEN)).await;
    let labels = format!("{{app=\"sdxl\",drain=\"{}\",tenant=\"acme\"}}", ids[0]);
    assert_eq!(
        samples[&format!("tailwater_drain_delivered_records_total{labels}")],
        120.0
    );
    assert_eq!(
        samples[&format!("tailwater_drain_failed_attempts_total{labels}")],
        0.0
    );
    for server in [trusting, untrusting, receiving] {
        server.shutdown().await.unwrap();
    }
}

/// A paused drain's lag is the age of the first record it has not
/// delivered: 0 while nothing waits, rising while records are stored and
/// it reads none, 0 again once resumed and caught up.
#[tokio::test]
async fn a_paused_drains_lag_rises_while_records_are_stored() {
    let (receiver, addr) = super::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = server_in(dir.path(), TOKEN, fast).await;
    tenants(&server).await;
    let drain = ok(
        &server,
        "POST",
        "/v1/apps/sdxl/drains?tenant=acme",
        json!({"url": format!("http://{addr}/in")}),
    )
    .await;
    let id = drain["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/apps/sdxl/drains/{id}");
    ok(
        &server,
        "POST",
        &format!("{path}/pause?tenant=acme"),
        json!(null),
    )
    .await;
    let lag_name =
        format!("tailwater_drain_lag_seconds{{app=\"sdxl\",drain=\"{id}\",tenant=\"acme\"}}");
    let lag = || {
        let (server, name) = (&server, &lag_name);
        async move { scrape(server, Some(TOKEN)).await[name] }
    };
    // Another app's and another tenant's records are not this drain's.
    ingest(&server, "acme", "other", "r1", 0..5).await;
    ingest(&server, "globex", "sdxl", "r1", 0..5).await;
    assert_eq!(lag().await, 0.0, "nothing of the app waits");

    ingest(&server, "acme", "sdxl", "r1", 0..10).await;
    let mut first = 0.0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while first <= 0.0 && tokio::time::Instant::now() < deadline {
        first = lag().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first > 0.0, "a paused drain with records waiting lags");
    ingest(&server, "acme", "sdxl", "r2", 0..10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut later = first;
    while later <= first && tokio::time::Instant::now() < deadline {
        later = lag().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(later > first, "its lag rises: {first} then {later}");
    assert!(receiver.deliveries().is_empty(), "paused: nothing sent");

    ok(
        &server,
        "POST",
        &format!("{path}/resume?tenant=acme"),
        json!(null),
    )
    .await;
    until("all 20 records delivered", || {
        receiver.records().len() == 20
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut now = later;
    while now > 0.0 && tokio::time::Instant::now() < deadline {
        now = lag().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(now, 0.0, "caught up: no lag");
    server.shutdown().await.unwrap();
}
