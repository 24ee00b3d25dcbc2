//! Records an accepted batch does not store as sent, over real HTTP on
//! loopback: one app's token cannot make another app's lines refused; a
//! clock set far ahead is stored at the server's time and refuses nothing
//! later; records past their app's retention are refused at ingest. Each
//! is in the answer by reason and in `/metrics` by tenant, app and reason.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::{json, Value};
use tailwater_client::Client;
use tailwater_model::tenancy::{NewApp, NewToken, Scope};
use tailwater_model::wire::LogsParams;
use tailwater_model::LogRecord;
use tailwater_server::RunningServer;

mod common;

use common::{scrape, server_in};

const ADMIN: &str = "tw_refusals_admin";

fn batch(app: &str, seqs: std::ops::Range<u64>, ts: Timestamp) -> Value {
    let records: Vec<Value> = seqs
        .map(|seq| {
            json!({"seq": seq, "ts": ts.to_string(), "stream": "stdout", "message": format!("{app} line {seq}")})
        })
        .collect();
    json!({"app": app, "version": "v1", "runner": "r1", "boot": "b1", "records": records})
}

async fn post(server: &RunningServer, token: &str, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/ingest", server.url()))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn logs_of(client: &Client, app: &str) -> Vec<LogRecord> {
    let params = LogsParams {
        app: Some(app.into()),
        direction: Some("forward".into()),
        limit: Some("10000".into()),
        ..LogsParams::default()
    };
    client.logs(&params).await.unwrap().records
}

fn counted(samples: &HashMap<String, f64>, family: &str, app: &str, reason: &str) -> f64 {
    let key =
        format!(r#"tailwater_{family}_total{{app="{app}",reason="{reason}",tenant="default"}}"#);
    samples.get(&key).copied().unwrap_or(0.0)
}

fn hours_ago(hours: i64) -> Timestamp {
    Timestamp::now() - SignedDuration::from_hours(hours)
}

#[tokio::test]
async fn another_apps_token_cannot_get_an_apps_lines_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |_| {}).await;
    for app in ["pub", "other"] {
        client
            .create_app(
                None,
                &NewApp {
                    name: app.into(),
                    ..NewApp::default()
                },
            )
            .await
            .unwrap();
    }
    let other_token = client
        .create_token(&NewToken {
            scope: Scope::Ingest,
            tenant: Some("default".into()),
            app: Some("other".into()),
            expires_in: None,
            name: None,
        })
        .await
        .unwrap()
        .token;
    let answer = post(&server, ADMIN, &batch("pub", 0..5, hours_ago(3))).await;
    assert_eq!(answer["accepted"], 5);
    // `other`'s token names pub's runner and boot, with the sequence
    // numbers pub sends next and a time two hours later.
    let answer = post(&server, &other_token, &batch("other", 5..10, hours_ago(1))).await;
    assert_eq!(answer["accepted"], 5);

    let answer = post(&server, ADMIN, &batch("pub", 5..10, hours_ago(3))).await;
    assert_eq!(
        (
            &answer["accepted"],
            &answer["refused"],
            &answer["duplicates"]
        ),
        (&json!(5), &json!(0), &json!(0)),
        "{answer}"
    );
    assert_eq!(logs_of(&client, "pub").await.len(), 10);

    // A line really out of order is refused, said so, and counted.
    let answer = post(&server, ADMIN, &batch("pub", 10..12, hours_ago(6))).await;
    assert_eq!(answer["refused"], 2, "{answer}");
    assert_eq!(answer["refused_by_reason"], json!({"out_of_order": 2}));
    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        counted(&samples, "ingest_refused_records", "pub", "out_of_order"),
        2.0
    );
    assert_eq!(
        counted(&samples, "ingest_refused_records", "other", "out_of_order"),
        0.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_clock_far_ahead_is_stored_at_the_servers_time_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |config| {
        config.store.max_clock_skew = std::time::Duration::from_secs(60);
    })
    .await;
    let ahead = Timestamp::now() + SignedDuration::from_hours(24 * 30);
    let answer = post(&server, ADMIN, &batch("app", 0..1, ahead)).await;
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["retimed_by_reason"], json!({"clock_skew": 1}));
    let answer = post(&server, ADMIN, &batch("app", 1..4, Timestamp::now())).await;
    assert_eq!(
        (&answer["accepted"], &answer["refused"]),
        (&json!(3), &json!(0))
    );

    let logs = logs_of(&client, "app").await;
    assert_eq!(logs.len(), 4);
    let retimed = logs.iter().find(|r| r.seq == 0).unwrap();
    assert!(retimed.ts <= Timestamp::now());
    assert_eq!(retimed.fields["original_ts"], ahead.to_string());
    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        counted(&samples, "ingest_retimed_records", "app", "clock_skew"),
        1.0
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn records_past_their_apps_retention_are_refused_at_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = server_in(dir.path(), ADMIN, |config| {
        config.retention.max_age = std::time::Duration::from_secs(30 * 86400);
    })
    .await;
    client
        .create_app(
            None,
            &NewApp {
                name: "short".into(),
                retention_days: Some(2),
                ..NewApp::default()
            },
        )
        .await
        .unwrap();
    for app in ["short", "default-age"] {
        let mut body = batch(app, 0..3, hours_ago(24 * 5));
        body["records"][2]["ts"] = json!(Timestamp::now().to_string());
        let answer = post(&server, ADMIN, &body).await;
        if app == "short" {
            assert_eq!(answer["refused"], 2, "{answer}");
            assert_eq!(
                answer["refused_by_reason"],
                json!({"older_than_retention": 2})
            );
            let reason = answer["refused_reason"].as_str().unwrap();
            assert!(reason.contains("retention of 2d"), "{reason}");
        } else {
            // The server's --retention (30 days) keeps them.
            assert_eq!(answer["accepted"], 3, "{answer}");
        }
    }
    assert_eq!(logs_of(&client, "short").await.len(), 1);
    let samples = scrape(&server, Some(ADMIN)).await;
    assert_eq!(
        counted(
            &samples,
            "ingest_refused_records",
            "short",
            "older_than_retention"
        ),
        2.0
    );
    server.shutdown().await.unwrap();
}
