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
//! WebSocket (opened before the records exist), export, histogram, count,
//! `/v1/requests/{id}` and its logs, the list of requests (`/v1/requests`,
//! paged), runners, status and the cluster's status (admin only); and
//! every app's drain delivers exactly its records, out of other tenants'
//! reach (`drains.rs`). A failure prints the seed; `TENANCY_MODEL_SEED=N`
//! replays one.

//!
//! The files: `world.rs` (the world and the random ingest), `reads.rs`
//! (every read path checked); the model itself is here.

#[path = "../common/mod.rs"]
mod common;
mod drains;
mod reads;
mod world;

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tailwater_model::wire::percent_encode;
use tailwater_server::RunningServer;

use reads::{check_positions_stay_home, check_reads, http, is_marker, new_token, Tail};
use world::{build_world, ingest_randomly};

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
    /// (tenant, app, request) with at least one `request_start`: what
    /// `GET /v1/requests` lists.
    started: BTreeSet<(String, String, String)>,
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

    /// The requests (app, id) of `tenant` that `token` lists: every one
    /// with a start for admins and the tenant's owners; for a caller only
    /// those whose first start naming a caller names it, of its app, never
    /// of a private app.
    fn listed(&self, token: &Token, tenant: &str) -> BTreeSet<(String, String)> {
        self.started
            .iter()
            .filter(|(t, _, _)| t == tenant)
            .filter(|(t, app, request)| match token.scope {
                "admin" => true,
                "owner" => token.tenant.as_deref() == Some(t),
                "caller" => {
                    token.tenant.as_deref() == Some(t)
                        && token.app.as_ref().is_none_or(|own| own == app)
                        && !self.private.contains(&(t.clone(), app.clone()))
                        && self.owners.get(&(t.clone(), app.clone(), request.clone()))
                            == Some(&token.id)
                }
                _ => false,
            })
            .map(|(_, app, request)| (app.clone(), request.clone()))
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

    let drains = drains::make_drains(&world, seed).await;
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
    drains::check_drains(&world, &model, &drains, seed).await;
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
