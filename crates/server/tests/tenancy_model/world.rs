//! The world of the model: tenants, apps and tokens made, and random
//! ingest (attacks among it; native batches in JSON or binary) recorded in the model as the server took it.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use tailwater_server::{start, ServerConfig};

use super::*;

pub(crate) async fn build_world(rng: &mut StdRng) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
    // Every app's drain delivers to a receiver of the test, on loopback.
    config.drains.allow_private = true;
    config.drains.batch_wait = std::time::Duration::from_millis(50);
    let server = start(config).await.unwrap();
    let mut world = World {
        server,
        _dir: dir,
        apps: BTreeMap::new(),
        tokens: vec![Token {
            secret: ADMIN.into(),
            id: String::new(),
            scope: "admin",
            tenant: None,
            app: None,
        }],
        ingest: BTreeMap::new(),
    };
    for tenant in TENANTS {
        let (status, body) = http(
            &world.server,
            "POST",
            "/v1/tenants",
            ADMIN,
            Some(json!({"name": tenant})),
        )
        .await;
        assert!(status < 300, "create tenant {tenant}: {status} {body}");
        // Three apps of the adversarial names, the same names in several
        // tenants; the longest name allowed always among them.
        let mut apps: Vec<String> = APP_NAMES
            .iter()
            .map(|name| {
                if name.is_empty() {
                    "é".repeat(100)
                } else {
                    (*name).to_owned()
                }
            })
            .collect();
        while apps.len() > 3 {
            apps.remove(rng.random_range(0..apps.len() - 1));
        }
        for app in &apps {
            let (status, body) = http(
                &world.server,
                "POST",
                &format!("/v1/apps?tenant={tenant}"),
                ADMIN,
                Some(json!({"name": app})),
            )
            .await;
            assert!(
                status < 300,
                "create app {app:?} in {tenant}: {status} {body}"
            );
            let token = new_token(
                &world.server,
                json!({"scope": "ingest", "tenant": tenant, "app": app}),
            )
            .await;
            world
                .ingest
                .insert((tenant.to_owned(), app.clone()), token.clone());
            world.tokens.push(token);
        }
        world
            .tokens
            .push(new_token(&world.server, json!({"scope": "owner", "tenant": tenant})).await);
        world.apps.insert(tenant.to_owned(), apps);
    }
    world
}

/// Random batches from every app's ingest token, on shared runner, boot and
/// request names, with gateway `request_start` records naming callers (some
/// backdated, as an attacker would), and attacks: a token sending another
/// app's batch.
pub(crate) async fn ingest_randomly(rng: &mut StdRng, world: &World, model: &mut Model, seed: u64) {
    let mut next_seq: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut marker = 0;
    let (mut otlp_sent, mut loki_sent, mut docs_sent, mut es_sent) = (0, 0, 0, 0);
    let mut binary_sent = 0;
    let keys: Vec<(String, String)> = world.ingest.keys().cloned().collect();
    for _ in 0..40 {
        let (tenant, app) = keys[rng.random_range(0..keys.len())].clone();
        let token = &world.ingest[&(tenant.clone(), app.clone())];
        // An attack: this token sends a batch for another app of any tenant.
        let target_app = if rng.random_bool(0.15) {
            keys[rng.random_range(0..keys.len())].1.clone()
        } else {
            app.clone()
        };
        let runner = RUNNERS[rng.random_range(0..RUNNERS.len())];
        let seq_key = (tenant.clone(), app.clone(), runner.to_owned());
        let first_seq = *next_seq.get(&seq_key).unwrap_or(&0);
        let mut records = Vec::new();
        let mut stored = Vec::new();
        let mut starts = Vec::new();
        let count = rng.random_range(1..6);
        for index in 0..count {
            let seq = first_seq + index;
            let request = rng
                .random_bool(0.7)
                .then(|| REQUESTS[rng.random_range(0..REQUESTS.len())].to_owned());
            marker += 1;
            let text = format!("m{marker} of {app}");
            let level = ["info", "warn", "error"][rng.random_range(0..3)];
            let mut record = json!({
                "seq": seq, "ts": jiff::Timestamp::now().to_string(), "stream": "stdout",
                "level": level,
                "message": text,
            });
            if let Some(request) = &request {
                record["request_id"] = json!(request);
                if rng.random_bool(0.3) {
                    // A gateway's request_start, naming a caller of this
                    // tenant (or of another: it then locks every caller
                    // out), or none; sometimes backdated by an hour.
                    let callers: Vec<&Token> = world
                        .tokens
                        .iter()
                        .filter(|t| t.scope == "caller")
                        .collect();
                    let caller = rng
                        .random_bool(0.7)
                        .then(|| callers[rng.random_range(0..callers.len())].id.clone());
                    let ts = if rng.random_bool(0.5) {
                        jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3000)
                    } else {
                        jiff::Timestamp::now()
                    };
                    record["stream"] = json!("system");
                    record["ts"] = json!(ts.to_string());
                    record["fields"] = match &caller {
                        Some(caller) => json!({"event": "request_start", "caller": caller}),
                        None => json!({"event": "request_start"}),
                    };
                    starts.push((request.clone(), caller));
                }
            }
            records.push(record);
            stored.push(Stored {
                marker: format!("m{marker}"),
                tenant: tenant.clone(),
                app: app.clone(),
                runner: runner.to_owned(),
                request,
            });
        }
        // Some batches come as OTLP logs, a Loki push, JSON documents or
        // an Elasticsearch bulk instead (those without a gateway's start,
        // which is a system record none can send): the same records,
        // labels and token, through the same pipeline.
        let protocol = match starts.is_empty() {
            false => Protocol::Native,
            true if otlp_sent == 0 => Protocol::Otlp,
            true if loki_sent == 0 => Protocol::Loki,
            true if docs_sent == 0 => Protocol::Json,
            true if es_sent == 0 => Protocol::EsBulk,
            true => [
                Protocol::Native,
                Protocol::Native,
                Protocol::Otlp,
                Protocol::Loki,
                Protocol::Json,
                Protocol::EsBulk,
            ][rng.random_range(0..6)],
        };
        otlp_sent += usize::from(protocol == Protocol::Otlp);
        loki_sent += usize::from(protocol == Protocol::Loki);
        docs_sent += usize::from(protocol == Protocol::Json);
        es_sent += usize::from(protocol == Protocol::EsBulk);
        if protocol == Protocol::EsBulk {
            // Each document's item says what became of it, in a 200.
            let path = format!("/_bulk?tenant={tenant}");
            let body = es_bulk(&documents(&target_app, runner, &records));
            let items = post_ndjson(&world.server, &path, &token.secret, body).await;
            let want = if target_app != app { 403 } else { 201 };
            let statuses: Vec<u64> = items
                .iter()
                .map(|item| item["index"]["status"].as_u64().unwrap())
                .collect();
            assert_eq!(
                statuses,
                vec![want; records.len()],
                "seed {seed}: bulk of {tenant}/{app:?} as {target_app:?}: {items:?}"
            );
            if want == 201 {
                model.records.extend(stored);
            }
            continue;
        }
        let (path, batch) = match protocol {
            Protocol::Otlp => (
                format!("/v1/logs?tenant={tenant}"),
                otlp_batch(&target_app, runner, &records),
            ),
            Protocol::Loki => (
                format!("/loki/api/v1/push?tenant={tenant}"),
                loki_push(&target_app, runner, &records),
            ),
            Protocol::Json => (
                format!("/v1/ingest/json?tenant={tenant}"),
                json!(documents(&target_app, runner, &records)),
            ),
            Protocol::EsBulk => unreachable!("sent above"),
            Protocol::Native => {
                let batch = json!({"app": target_app, "version": "v1", "runner": runner, "boot": "b1",
                    "source": "gateway", "records": records});
                (format!("/v1/ingest?tenant={tenant}"), batch)
            }
        };
        // Native batches come as JSON or, as the agent sends them, in
        // binary: the same rules either way.
        let binary = protocol == Protocol::Native && (binary_sent == 0 || rng.random_bool(0.5));
        let (status, answer) = if binary {
            binary_sent += 1;
            post_binary(&world.server, &path, &token.secret, batch).await
        } else {
            http(&world.server, "POST", &path, &token.secret, Some(batch)).await
        };
        if protocol != Protocol::Native {
            let stored_status = if protocol == Protocol::Loki { 204 } else { 200 };
            let expected = if target_app != app {
                403
            } else {
                stored_status
            };
            assert_eq!(
                status, expected,
                "seed {seed}: {protocol:?} of {tenant}/{app:?} as {target_app:?}: {answer}"
            );
            assert!(
                answer.get("partialSuccess").is_none_or(|p| p.is_null()),
                "seed {seed}: {answer}"
            );
            if status == stored_status {
                model.records.extend(stored);
            }
            continue;
        }
        if target_app != app {
            assert_eq!(
                status, 403,
                "seed {seed}: an ingest token of {app:?} wrote app {target_app:?}: {answer}"
            );
            continue;
        }
        assert_eq!(status, 200, "seed {seed}: ingest: {answer}");
        assert_eq!(
            (answer["accepted"].as_u64(), answer["refused"].as_u64()),
            (Some(count), Some(0)),
            "seed {seed}: every record of {tenant}/{app:?} {runner} stored, none refused by another app's records: {answer}"
        );
        next_seq.insert(seq_key, first_seq + count);
        for (request, caller) in starts {
            model
                .started
                .insert((tenant.clone(), app.clone(), request.clone()));
            if let Some(caller) = caller {
                model
                    .owners
                    .entry((tenant.clone(), app.clone(), request))
                    .or_insert(caller);
            }
        }
        model.records.extend(stored);
    }
    assert!(otlp_sent > 0, "seed {seed}: some batches came as OTLP");
    assert!(binary_sent > 0, "seed {seed}: some came in binary");
    assert!(
        loki_sent > 0,
        "seed {seed}: some batches came as a Loki push"
    );
    assert!(docs_sent > 0, "seed {seed}: some came as JSON documents");
    assert!(
        es_sent > 0,
        "seed {seed}: some came as an Elasticsearch bulk"
    );
}

/// `records` (the native batch's) as JSON documents naming `app` and the
/// runner, as a shipper sends them.
fn documents(app: &str, runner: &str, records: &[serde_json::Value]) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|record| {
            let mut document = json!({
                "@timestamp": record["ts"], "app": app, "runner": runner,
                "level": record["level"], "message": record["message"],
            });
            if let Some(request) = record["request_id"].as_str() {
                document["request_id"] = json!(request);
            }
            document
        })
        .collect()
}

/// `documents` as an Elasticsearch bulk: an index action before each.
fn es_bulk(documents: &[serde_json::Value]) -> String {
    documents
        .iter()
        .map(|document| format!("{}\n{document}\n", json!({"index": {"_index": "logs"}})))
        .collect()
}

/// `POST path` of an NDJSON body with `token`: the bulk's items.
/// POSTs a native `batch` in binary (`application/x-tailwater-batch`), as
/// the agent sends it: the status and JSON answer.
async fn post_binary(
    server: &tailwater_server::RunningServer,
    path: &str,
    token: &str,
    batch: serde_json::Value,
) -> (u16, serde_json::Value) {
    use tailwater_model::wire::{encode_binary_batch, IngestBatch, BINARY_BATCH_MEDIA_TYPE};
    let batch: IngestBatch = serde_json::from_value(batch).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", server.addr))
        .bearer_auth(token)
        .header("content-type", BINARY_BATCH_MEDIA_TYPE)
        .body(encode_binary_batch(&batch))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post_ndjson(
    server: &tailwater_server::RunningServer,
    path: &str,
    token: &str,
    body: String,
) -> Vec<serde_json::Value> {
    let response = reqwest::Client::new()
        .post(format!("http://{}{path}", server.addr))
        .bearer_auth(token)
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: serde_json::Value = response.json().await.unwrap();
    answer["items"].as_array().unwrap().clone()
}

/// `records` (the native batch's) as an OTLP/JSON request of `app`'s
/// resource, the runner its instance.
fn otlp_batch(app: &str, runner: &str, records: &[serde_json::Value]) -> serde_json::Value {
    let text = |value: &str| json!({"stringValue": value});
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|record| {
            let mut attributes = Vec::new();
            if let Some(request) = record["request_id"].as_str() {
                attributes.push(json!({"key": "request_id", "value": text(request)}));
            }
            json!({
                "severityText": record["level"],
                "body": text(record["message"].as_str().unwrap()),
                "attributes": attributes,
            })
        })
        .collect();
    json!({"resourceLogs": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": text(app)},
            {"key": "service.instance.id", "value": text(runner)}
        ]},
        "scopeLogs": [{"logRecords": records}]
    }]})
}

/// How a batch is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Native,
    Otlp,
    Loki,
    Json,
    EsBulk,
}

/// `records` (the native batch's) as a Loki JSON push of `app`'s stream,
/// each line a JSON object the line parser reads back (level, message,
/// request id).
fn loki_push(app: &str, runner: &str, records: &[serde_json::Value]) -> serde_json::Value {
    let values: Vec<serde_json::Value> = records
        .iter()
        .map(|record| {
            let mut line = json!({"level": record["level"], "msg": record["message"]});
            if let Some(request) = record["request_id"].as_str() {
                line["request_id"] = json!(request);
            }
            let ts = jiff::Timestamp::now().as_nanosecond().to_string();
            json!([ts, line.to_string()])
        })
        .collect();
    json!({"streams": [{"stream": {"app": app, "runner": runner}, "values": values}]})
}
