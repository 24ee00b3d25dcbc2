//! A model-based tenancy test: random tenants and apps (adversarial names
//! among them), tokens of every scope, random ingest (attacks among it), and
//! then every read path, each checked against a model of who may see what.
//!
//! The model is small on purpose, so it can be read as the rules:
//! - a record belongs to the tenant and app its ingest token wrote; an
//!   ingest token that names another app is refused and stores nothing;
//! - records are keyed by (tenant, app, runner, boot, seq): two apps that
//!   share runner and boot names never deduplicate or refuse each other;
//! - admin sees everything; an owner its tenant; an ingest token nothing;
//! - a caller sees one request at a time, of its tenant (of its app, when
//!   the token names one), never of a private app, and, when that app has a
//!   `request_start` of that request naming a caller token, only if the
//!   first such start to arrive (whatever its time says) names its own;
//!   and only once the request's owner is settled: every read is checked
//!   after the hold (`--request-owner-grace` and half again) has passed,
//!   and the ingest takes less than the grace, so every start counts.
//!
//! Every read path is held to the model: history, live tail over SSE and
//! WebSocket (opened before the records exist), export, histogram,
//! `/v1/requests/{id}` and its logs, runners and status. A failure prints
//! the seed; `TENANCY_MODEL_SEED=N` replays one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tailwater_model::wire::percent_encode;
use tailwater_server::{start, RunningServer, ServerConfig};

const ADMIN: &str = "tw_tenancy_model_admin";
/// Request ids shared by every tenant and app, so that they collide.
const REQUESTS: [&str; 3] = ["req-1", "req-2", "req-3"];
/// Runner names shared by every tenant and app, with one boot, so that
/// (runner, boot, seq) collide across apps.
const RUNNERS: [&str; 2] = ["r1", "r2"];
/// Names chosen to break folder names, paths and encodings: a name and its
/// old encoding (`a.` was `x-612e`), the longest name allowed (200 bytes,
/// all non-ASCII), path syntax, spaces, a four-byte character.
const APP_NAMES: [&str; 7] = [
    "a.",
    "x-612e",
    "../../etc",
    "app with spaces",
    "Ω/😀",
    "plain",
    "",
];
const TENANTS: [&str; 3] = [
    "acme",
    "x-6163-me",
    // The longest tenant name allowed.
    "t23456789012345678901234567890123456789012345678901234567890123",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nobody_sees_or_changes_what_is_not_theirs() {
    let seeds: Vec<u64> = match std::env::var("TENANCY_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("TENANCY_MODEL_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        eprintln!("tenancy model: seed {seed} (replay with TENANCY_MODEL_SEED={seed})");
        run(seed).await;
    }
}

/// A token of the world, with what the model needs to know of it.
#[derive(Clone, Debug)]
struct Token {
    secret: String,
    id: String,
    scope: &'static str,
    tenant: Option<String>,
    app: Option<String>,
}

/// One stored record, as the model knows it.
#[derive(Clone, Debug)]
struct Stored {
    marker: String,
    tenant: String,
    app: String,
    runner: String,
    request: Option<String>,
}

#[derive(Default)]
struct Model {
    records: Vec<Stored>,
    /// (tenant, app, request) → the caller the first `request_start` of
    /// that app naming one recorded.
    owners: BTreeMap<(String, String, String), String>,
    private: BTreeSet<(String, String)>,
}

impl Model {
    /// The markers `token` should read with `request=` (or everything it
    /// may read when `request` is `None`).
    fn visible(&self, token: &Token, request: Option<&str>) -> BTreeSet<String> {
        self.records
            .iter()
            .filter(|r| request.is_none_or(|asked| r.request.as_deref() == Some(asked)))
            .filter(|r| self.sees(token, r))
            .map(|r| r.marker.clone())
            .collect()
    }

    fn sees(&self, token: &Token, record: &Stored) -> bool {
        match token.scope {
            "admin" => true,
            "owner" => token.tenant.as_deref() == Some(&record.tenant),
            "caller" => {
                let Some(request) = &record.request else {
                    return false;
                };
                token.tenant.as_deref() == Some(&record.tenant)
                    && token.app.as_ref().is_none_or(|app| *app == record.app)
                    && !self
                        .private
                        .contains(&(record.tenant.clone(), record.app.clone()))
                    && self
                        .owners
                        .get(&(record.tenant.clone(), record.app.clone(), request.clone()))
                        .is_none_or(|owner| *owner == token.id)
            }
            _ => false,
        }
    }
}

struct World {
    server: RunningServer,
    _dir: tempfile::TempDir,
    /// tenant → its apps.
    apps: BTreeMap<String, Vec<String>>,
    tokens: Vec<Token>,
    /// (tenant, app) → its ingest token.
    ingest: BTreeMap<(String, String), Token>,
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = build_world(&mut rng).await;
    let mut model = Model::default();
    for (tenant, apps) in &world.apps {
        for app in apps {
            if rng.random_bool(0.3) {
                model.private.insert((tenant.clone(), app.clone()));
                let (status, body) = http(
                    &world.server,
                    "PATCH",
                    &format!("/v1/apps/{}?tenant={tenant}", percent_encode(app)),
                    ADMIN,
                    Some(json!({"private_logs": true})),
                )
                .await;
                assert_eq!(status, 200, "seed {seed}: make {app:?} private: {body}");
            }
        }
    }
    // Caller tokens, now that privacy is known: one per tenant, and one per
    // public app. A caller token for a private app could read nothing: it
    // is refused.
    for (tenant, apps) in world.apps.clone() {
        world
            .tokens
            .push(new_token(&world.server, json!({"scope": "caller", "tenant": tenant})).await);
        for app in apps {
            let body = json!({"scope": "caller", "tenant": tenant, "app": app});
            if model.private.contains(&(tenant.clone(), app.clone())) {
                let (status, answer) =
                    http(&world.server, "POST", "/v1/tokens", ADMIN, Some(body)).await;
                assert!(
                    (400..500).contains(&status),
                    "seed {seed}: a caller token for private app {app:?} must be refused, got {status} {answer}"
                );
            } else {
                world.tokens.push(new_token(&world.server, body).await);
            }
        }
    }

    // Live tails open before anything is written: every caller on every
    // request, and every owner, over SSE and WebSocket. (An admin's tail is
    // of one tenant at a time, as an owner's is.)
    let mut tails = Vec::new();
    for token in world
        .tokens
        .iter()
        .filter(|t| matches!(t.scope, "owner" | "caller"))
    {
        let requests: Vec<Option<&str>> = if token.scope == "caller" {
            REQUESTS.iter().map(|r| Some(*r)).collect()
        } else {
            vec![None]
        };
        for request in requests {
            let query = request.map(|r| format!("?request={r}")).unwrap_or_default();
            for websocket in [false, true] {
                let path = format!("/v1/logs/tail{query}");
                let open = Tail::open(world.server.addr, &path, &token.secret, websocket).await;
                tails.push((token.clone(), request.map(str::to_owned), open));
            }
        }
    }

    let grace = tailwater_server::access::ownership::DEFAULT_REQUEST_OWNER_GRACE;
    let ingest_began = tokio::time::Instant::now();
    ingest_randomly(&mut rng, &world, &mut model, seed).await;
    assert!(
        ingest_began.elapsed() < grace,
        "seed {seed}: the ingest took {:?}, longer than the grace {grace:?} a gateway's start has: the model cannot tell which starts count",
        ingest_began.elapsed()
    );
    // The rule is about time: a request with no recorded caller is any
    // caller's once its first line is older than the hold. Past it, every
    // request's owner is settled.
    tokio::time::sleep_until(tokio::time::Instant::now() + grace * 3 / 2).await;

    // Every path, every token. The tails have followed the store since
    // before the ingest; what they hold for their clients is read now.
    for token in &world.tokens {
        check_reads(&world.server, token, &model, seed).await;
    }
    check_positions_stay_home(&world, seed).await;
    let tails: Vec<_> = tails
        .into_iter()
        .map(|(token, request, open)| (token, request, tokio::spawn(open.read())))
        .collect();
    for (token, request, handle) in tails {
        let want = model.visible(&token, request.as_deref());
        let got = handle.await.unwrap();
        // A tail of everything of its tenant also gets the server's own
        // records (none are expected here); compare markers only.
        let got: BTreeSet<String> = got.into_iter().filter(|m| is_marker(m)).collect();
        assert_eq!(
            got, want,
            "seed {seed}: live tail of {} {:?} (tenant {:?}, app {:?}) on request {request:?}",
            token.scope, token.id, token.tenant, token.app
        );
    }
    world.server.shutdown().await.unwrap();
}

/// Record ids, `as_of` and cursors are one tenant's: handed to any other
/// tenant's owner they are refused (400), never read as a position of
/// theirs; to their own tenant's owner they work.
async fn check_positions_stay_home(world: &World, seed: u64) {
    let owners: Vec<&Token> = world.tokens.iter().filter(|t| t.scope == "owner").collect();
    let mut refused = 0;
    for from in &owners {
        let (status, page) = http(
            &world.server,
            "GET",
            "/v1/logs?limit=1&since=2h",
            &from.secret,
            None,
        )
        .await;
        assert_eq!(status, 200, "seed {seed}: {page}");
        let mut handed = vec![format!(
            "/v1/logs/tail?after={}",
            page["as_of"].as_str().unwrap()
        )];
        if let Some(record) = page["records"].as_array().unwrap().first() {
            handed.push(format!(
                "/v1/logs/tail?after={}",
                record["id"].as_str().unwrap()
            ));
        }
        if let Some(cursor) = page["next_cursor"].as_str() {
            handed.push(format!("/v1/logs?cursor={cursor}"));
        }
        for to in &owners {
            for path in &handed {
                if from.tenant == to.tenant {
                    // A tail would stream: its own tenant's history is
                    // checked instead.
                    if path.starts_with("/v1/logs?") {
                        let (status, body) =
                            http(&world.server, "GET", path, &to.secret, None).await;
                        assert_eq!(status, 200, "seed {seed}: own cursor: {body}");
                    }
                    continue;
                }
                let (status, body) = http(&world.server, "GET", path, &to.secret, None).await;
                assert_eq!(
                    status, 400,
                    "seed {seed}: tenant {:?}'s {path} read by tenant {:?}: {body}",
                    from.tenant, to.tenant
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "seed {seed}: no two tenants' owners to check");
}

async fn build_world(rng: &mut StdRng) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.bootstrap_token = Some(ADMIN.into());
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
async fn ingest_randomly(rng: &mut StdRng, world: &World, model: &mut Model, seed: u64) {
    let mut next_seq: BTreeMap<(String, String, String), u64> = BTreeMap::new();
    let mut marker = 0;
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
        let batch = json!({"app": target_app, "version": "v1", "runner": runner, "boot": "b1",
            "source": "gateway", "records": records});
        let (status, answer) = http(
            &world.server,
            "POST",
            &format!("/v1/ingest?tenant={tenant}"),
            &token.secret,
            Some(batch),
        )
        .await;
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
            if let Some(caller) = caller {
                model
                    .owners
                    .entry((tenant.clone(), app.clone(), request))
                    .or_insert(caller);
            }
        }
        model.records.extend(stored);
    }
}

/// Every read path of `token`, against the model.
async fn check_reads(server: &RunningServer, token: &Token, model: &Model, seed: u64) {
    let who = format!(
        "seed {seed}: {} token {:?} (tenant {:?}, app {:?})",
        token.scope, token.id, token.tenant, token.app
    );
    let requests: Vec<Option<&str>> = match token.scope {
        "caller" => REQUESTS.iter().map(|r| Some(*r)).collect(),
        _ => std::iter::once(None)
            .chain(REQUESTS.iter().map(|r| Some(*r)))
            .collect(),
    };
    for request in requests {
        let want = model.visible(token, request);
        let query = request.map(|r| format!("request={r}&")).unwrap_or_default();
        // An admin reads its own tenant unless it names one: read each.
        let tenants: Vec<Option<&str>> = if token.scope == "admin" {
            TENANTS.iter().map(|t| Some(*t)).collect()
        } else {
            vec![None]
        };
        let mut history = BTreeSet::new();
        let mut history_records = 0;
        let mut export = BTreeSet::new();
        let mut histogram_total = 0;
        for tenant in tenants {
            let tenant_q = tenant.map(|t| format!("tenant={t}&")).unwrap_or_default();
            let (status, page) = http(
                server,
                "GET",
                &format!("/v1/logs?{query}{tenant_q}limit=10000&since=2h"),
                &token.secret,
                None,
            )
            .await;
            if token.scope == "ingest" {
                assert_eq!(status, 403, "{who}: an ingest token reads nothing: {page}");
                return;
            }
            assert_eq!(status, 200, "{who}: history {request:?}: {page}");
            let records = page["records"].as_array().unwrap();
            history_records += records.len();
            history.extend(markers(records));

            let (status, text) = http_text(
                server,
                &format!("/v1/export?{query}{tenant_q}since=2h&format=ndjson"),
                &token.secret,
            )
            .await;
            assert_eq!(status, 200, "{who}: export {request:?}: {text}");
            let lines: Vec<Value> = text
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            export.extend(markers(&lines));

            let (status, histogram) = http(
                server,
                "GET",
                &format!("/v1/histogram?{query}{tenant_q}since=2h"),
                &token.secret,
                None,
            )
            .await;
            assert_eq!(status, 200, "{who}: histogram {request:?}: {histogram}");
            histogram_total += histogram["total"].as_u64().unwrap();
        }
        let history_markers: BTreeSet<String> =
            history.iter().filter(|m| is_marker(m)).cloned().collect();
        assert_eq!(
            history_markers, want,
            "{who}: history of request {request:?}"
        );
        let export_markers: BTreeSet<String> =
            export.iter().filter(|m| is_marker(m)).cloned().collect();
        assert_eq!(export_markers, want, "{who}: export of request {request:?}");
        // The histogram counts what history returns (the server's own
        // records included, which carry no marker).
        assert_eq!(
            histogram_total as usize, history_records,
            "{who}: histogram of request {request:?} counts what history shows"
        );

        // A request's own page: found exactly when the token sees any of
        // its records (or, for an owner, any record of it in its tenant).
        if let (Some(request), false) = (request, token.scope == "admin") {
            let (status, body) = http(
                server,
                "GET",
                &format!("/v1/requests/{request}"),
                &token.secret,
                None,
            )
            .await;
            if want.is_empty() {
                assert_eq!(
                    status, 404,
                    "{who}: /v1/requests/{request} must not exist: {body}"
                );
            } else {
                assert_eq!(status, 200, "{who}: /v1/requests/{request}: {body}");
                let (status, page) = http(
                    server,
                    "GET",
                    &format!("/v1/requests/{request}/logs?limit=10000&since=2h"),
                    &token.secret,
                    None,
                )
                .await;
                assert_eq!(status, 200, "{who}: /v1/requests/{request}/logs: {page}");
                let got: BTreeSet<String> = markers(page["records"].as_array().unwrap())
                    .into_iter()
                    .filter(|m| is_marker(m))
                    .collect();
                assert_eq!(got, want, "{who}: /v1/requests/{request}/logs");
            }
        }
    }

    // Runners and status: owners see their tenant's only; callers nothing.
    let (status, runners) = http(server, "GET", "/v1/runners", &token.secret, None).await;
    match token.scope {
        "owner" => {
            assert_eq!(status, 200, "{who}: runners: {runners}");
            for runner in runners["runners"].as_array().unwrap() {
                assert_eq!(
                    runner["tenant"].as_str(),
                    token.tenant.as_deref(),
                    "{who}: a runner of another tenant: {runner}"
                );
                let app = runner["app"].as_str().unwrap();
                assert!(
                    model
                        .records
                        .iter()
                        .any(|r| Some(&r.tenant) == token.tenant.as_ref()
                            && r.app == app
                            && r.runner == runner["runner"].as_str().unwrap()),
                    "{who}: runner {runner} was never written by its tenant"
                );
            }
        }
        "caller" => assert_eq!(status, 403, "{who}: runners: {runners}"),
        _ => {}
    }
    let (status, body) = http(server, "GET", "/v1/status", &token.secret, None).await;
    assert_eq!(status, 200, "{who}: status: {body}");
    let text = body.to_string();
    for tenant in TENANTS {
        if token.scope != "admin" && token.tenant.as_deref() != Some(tenant) {
            assert!(
                !text.contains(&format!("\"{tenant}\"")),
                "{who}: status names another tenant {tenant}: {body}"
            );
        }
    }
}

/// The markers (`m<N>`, the first word of the message) of records.
fn markers(records: &[Value]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|record| {
            let record = record.get("record").unwrap_or(record);
            let message = record["message"].as_str()?;
            Some(message.split(' ').next().unwrap_or("").to_owned())
        })
        .collect()
}

/// An open live tail, SSE or WebSocket.
enum Tail {
    Sse(reqwest::Response),
    WebSocket(
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ),
}

impl Tail {
    /// Opens a tail: once this returns, the server follows the store for
    /// it (the answer's head, or the WebSocket handshake, has come back).
    async fn open(addr: std::net::SocketAddr, path: &str, token: &str, websocket: bool) -> Tail {
        if websocket {
            use tokio_tungstenite::tungstenite::client::IntoClientRequest;
            let mut request = format!("ws://{addr}{path}").into_client_request().unwrap();
            let bearer = format!("Bearer {token}").parse().unwrap();
            request.headers_mut().insert("authorization", bearer);
            let (socket, _) = tokio_tungstenite::connect_async(request)
                .await
                .unwrap_or_else(|error| panic!("websocket {path}: {error}"));
            Tail::WebSocket(socket)
        } else {
            let response = reqwest::Client::new()
                .get(format!("http://{addr}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "tail {path}");
            Tail::Sse(response)
        }
    }

    /// The markers it gets until it has been quiet for a while: every
    /// record is written before the tails are read out, so a tail quiet
    /// that long has had all it will get.
    async fn read(self) -> BTreeSet<String> {
        const QUIET: Duration = Duration::from_secs(3);
        let mut got = BTreeSet::new();
        match self {
            Tail::WebSocket(mut socket) => {
                use tokio_tungstenite::tungstenite::Message;
                while let Ok(Some(Ok(message))) = tokio::time::timeout(QUIET, socket.next()).await {
                    if let Message::Text(text) = message {
                        let value: Value = serde_json::from_str(&text).unwrap();
                        got.extend(markers(std::slice::from_ref(&value)));
                    }
                }
            }
            Tail::Sse(response) => {
                let mut stream = response.bytes_stream();
                let mut buffer = String::new();
                while let Ok(Some(Ok(chunk))) = tokio::time::timeout(QUIET, stream.next()).await {
                    buffer.push_str(&String::from_utf8_lossy(&chunk));
                }
                for line in buffer.lines() {
                    if let Some(data) = line.strip_prefix("data:") {
                        if let Ok(value) = serde_json::from_str::<Value>(data.trim()) {
                            got.extend(markers(std::slice::from_ref(&value)));
                        }
                    }
                }
            }
        }
        got
    }
}

/// Whether a first word is one of this test's markers (`m` and a number),
/// not the start of one of the server's own records.
fn is_marker(word: &str) -> bool {
    word.strip_prefix('m')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

async fn new_token(server: &RunningServer, body: Value) -> Token {
    let (status, created) = http(server, "POST", "/v1/tokens", ADMIN, Some(body.clone())).await;
    assert!(status < 300, "create token {body}: {status} {created}");
    Token {
        secret: created["token"].as_str().unwrap().to_owned(),
        id: created["id"].as_str().unwrap().to_owned(),
        scope: match body["scope"].as_str().unwrap() {
            "owner" => "owner",
            "ingest" => "ingest",
            "caller" => "caller",
            other => panic!("scope {other}"),
        },
        tenant: body["tenant"].as_str().map(str::to_owned),
        app: body["app"].as_str().map(str::to_owned),
    }
}

async fn http(
    server: &RunningServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    common::call(server, method, path, token, body).await
}

async fn http_text(server: &RunningServer, path: &str, token: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://{}{path}", server.addr))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}
