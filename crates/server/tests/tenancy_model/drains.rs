//! Drains in the model: every app of every tenant has a drain to a
//! receiver of its own, made before the ingest. Each receiver gets exactly
//! its app's records (none of another app, of the same name in another
//! tenant, of a private app's neighbour), and an owner of another tenant
//! cannot see, pause or delete a drain it was told the id of.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::Path;
use serde_json::{json, Value};
use tailwater_model::wire::percent_encode;

use super::reads::{http, is_marker};
use super::{Model, World, ADMIN};

/// Each drain's receiver: markers of the NDJSON records delivered to
/// `/in/{n}`, by `n`.
type Received = Arc<Mutex<BTreeMap<usize, BTreeSet<String>>>>;

/// Drains made for every app, and where they deliver.
pub(crate) struct Drains {
    received: Received,
    /// (tenant, app, drain id), in the order of their `n`.
    drains: Vec<(String, String, String)>,
}

fn drains_path(tenant: &str, app: &str) -> String {
    format!("/v1/apps/{}/drains?tenant={tenant}", percent_encode(app))
}

/// A receiver, and a drain to it for every app of the world.
pub(crate) async fn make_drains(world: &World, seed: u64) -> Drains {
    let received = Received::default();
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/in/{n}",
        axum::routing::post(move |Path(n): Path<usize>, body: Bytes| {
            let kept = kept.clone();
            async move {
                let mut kept = kept.lock().unwrap();
                let markers = kept.entry(n).or_default();
                for line in std::str::from_utf8(&body).unwrap().lines() {
                    let record: Value = serde_json::from_str(line).unwrap();
                    let message = record["message"].as_str().unwrap_or_default();
                    let first = message.split(' ').next().unwrap_or_default();
                    if is_marker(first) {
                        markers.insert(first.to_owned());
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut drains = Vec::new();
    for (tenant, apps) in &world.apps {
        for app in apps {
            let url = format!("http://{addr}/in/{}", drains.len());
            let (status, created) = http(
                &world.server,
                "POST",
                &drains_path(tenant, app),
                ADMIN,
                Some(json!({"url": url})),
            )
            .await;
            assert_eq!(
                status, 201,
                "seed {seed}: drain of {tenant}/{app:?}: {created}"
            );
            let id = created["id"].as_str().unwrap().to_owned();
            drains.push((tenant.clone(), app.clone(), id));
        }
    }
    Drains { received, drains }
}

/// Every drain delivers exactly its app's records; no owner reaches
/// another tenant's drain.
pub(crate) async fn check_drains(world: &World, model: &Model, drains: &Drains, seed: u64) {
    for (n, (tenant, app, _)) in drains.drains.iter().enumerate() {
        let want: BTreeSet<String> = model
            .records
            .iter()
            .filter(|r| &r.tenant == tenant && &r.app == app)
            .map(|r| r.marker.clone())
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = drains
                .received
                .lock()
                .unwrap()
                .get(&n)
                .cloned()
                .unwrap_or_default();
            if got == want {
                break;
            }
            assert!(
                got.is_subset(&want) && tokio::time::Instant::now() < deadline,
                "seed {seed}: the drain of {tenant}/{app:?} got {:?}, not {:?}",
                got.difference(&want).collect::<Vec<_>>(),
                want.difference(&got).collect::<Vec<_>>(),
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Owners of other tenants: the drain is not theirs to list, pause or
    // delete, even by its id under the same app name in their tenant.
    for token in world.tokens.iter().filter(|t| t.scope == "owner") {
        let own = token.tenant.as_deref().unwrap();
        for (tenant, app, id) in drains.drains.iter().filter(|(t, _, _)| t != own) {
            let encoded = percent_encode(app);
            for (method, path) in [
                ("GET", format!("/v1/apps/{encoded}/drains?tenant={tenant}")),
                (
                    "POST",
                    format!("/v1/apps/{encoded}/drains/{id}/pause?tenant={tenant}"),
                ),
                ("POST", format!("/v1/apps/{encoded}/drains/{id}/pause")),
                ("DELETE", format!("/v1/apps/{encoded}/drains/{id}")),
            ] {
                let (status, body) = http(&world.server, method, &path, &token.secret, None).await;
                assert_eq!(
                    status, 404,
                    "seed {seed}: owner of {own} {method} {path}: {body}"
                );
            }
        }
    }
    for (tenant, app, id) in &drains.drains {
        let (_, list) = http(&world.server, "GET", &drains_path(tenant, app), ADMIN, None).await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 1, "seed {seed}: {tenant}/{app:?}: {list:?}");
        assert_eq!(list[0]["id"], id.as_str());
        assert_eq!(
            list[0]["state"], "active",
            "seed {seed}: untouched by other tenants"
        );
    }
}
