//! HTTPS with a certificate generated for the test: a client that trusts it
//! sends and reads logs; plain HTTP to the same port gets nothing.

use tailwater_client::Client;
use tailwater_model::wire::{IngestBatch, IngestRecord, LogsParams};
use tailwater_model::Stream;
use tailwater_server::tls::TlsFiles;
use tailwater_server::{start, ServerConfig};

const TOKEN: &str = "tw_tls_admin";

#[tokio::test]
async fn a_client_reads_logs_over_https_and_plain_http_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert_pem = certified.cert.pem();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    std::fs::write(&files.cert, &cert_pem).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();

    let mut config = ServerConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.tls = Some(files);
    let server = start(config).await.unwrap();
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let client = Client::new(&url, TOKEN)
        .unwrap()
        .with_ca_certificate(cert_pem.as_bytes())
        .unwrap();
    let batch = IngestBatch {
        app: "secure".into(),
        version: String::new(),
        runner: "r1".into(),
        boot: "b1".into(),
        source: Default::default(),
        records: vec![IngestRecord {
            seq: 0,
            ts: jiff::Timestamp::now(),
            stream: Stream::Stdout,
            level: Default::default(),
            request_id: None,
            message: "over tls".into(),
            fields: Default::default(),
            invalid_utf8: false,
        }],
    };
    assert_eq!(client.ingest(&batch).await.unwrap().accepted, 1);
    let page = client.logs(&LogsParams::default()).await.unwrap();
    assert_eq!(page.records[0].message, "over tls");

    // A client that does not trust the certificate is refused by its own TLS.
    let untrusting = Client::new(&url, TOKEN).unwrap();
    assert!(untrusting.logs(&LogsParams::default()).await.is_err());
    // Plain HTTP to the TLS port gets no answer.
    let plain = format!("http://{}/healthz", server.addr);
    assert!(
        reqwest::get(&plain).await.is_err(),
        "plain http must not be served"
    );
    let plain_client = Client::new(&format!("http://{}", server.addr), TOKEN).unwrap();
    assert!(plain_client.logs(&LogsParams::default()).await.is_err());

    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_missing_or_mismatched_key_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, one.cert.pem()).unwrap();
    std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
    let config = |cert: &std::path::Path, key: &std::path::Path| {
        let mut config = ServerConfig::new(dir.path().join("data"));
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.tls = Some(TlsFiles {
            cert: cert.to_owned(),
            key: key.to_owned(),
        });
        config
    };
    let error = start(config(&cert, &key)).await.err().unwrap();
    assert!(
        format!("{error:#}").contains("does not fit the certificate"),
        "{error:#}"
    );
    let missing = dir.path().join("nothing.pem");
    let error = start(config(&cert, &missing)).await.err().unwrap();
    assert!(format!("{error:#}").contains("--tls-key"), "{error:#}");
}
