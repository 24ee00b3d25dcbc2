//! The shared registry: tenants, apps, tokens and the seal key are the
//! same on every node, through the cluster's key-value bucket
//! `TAILWATER_REGISTRY`, with writes by compare-and-set.

use std::future::Future;
use std::time::{Duration, Instant};

use tailwater_client::{Client, ClientError};
use tailwater_model::tenancy::{AppPatch, NewApp, NewTenant, NewToken, Scope};
use tailwater_model::wire::LogsParams;

use super::common::{batch, metric};
use super::nats::NatsCluster;
use super::{node, node_in, Node, VISIBLE_WITHIN};

/// Asks `check` until it holds, up to [`VISIBLE_WITHIN`].
async fn wait_until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + VISIBLE_WITHIN;
    while !check().await {
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client(node: &Node, token: &str) -> Client {
    Client::new(&node.server.url(), token).unwrap()
}

fn code(error: &ClientError) -> Option<(u16, &str)> {
    match error {
        ClientError::Api { status, code, .. } | ClientError::Unavailable { status, code, .. } => {
            Some((*status, code.as_str()))
        }
        _ => None,
    }
}

fn new_token(scope: Scope, tenant: &str, app: Option<&str>) -> NewToken {
    NewToken {
        scope,
        tenant: Some(tenant.to_owned()),
        app: app.map(str::to_owned),
        expires_in: None,
        name: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_tokens_made_or_revoked_on_one_node_hold_on_every_node() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;

    // A tenant made on A, and its owner token: usable on B.
    a.client
        .create_tenant(&NewTenant {
            name: "acme".into(),
            private_logs: false,
        })
        .await
        .unwrap();
    let owner = a
        .client
        .create_token(&new_token(Scope::Owner, "acme", None))
        .await
        .unwrap();
    // Read-your-writes on the node that made it: at once.
    let on_a = client(&a, &owner.token);
    assert_eq!(on_a.status().await.unwrap().tenant, "acme");
    let on_b = client(&b, &owner.token);
    wait_until("the owner token authenticates on b", || async {
        on_b.status().await.is_ok()
    })
    .await;
    // B knows the tenant: its owner makes an app and an ingest token there.
    on_b.create_app(
        None,
        &NewApp {
            name: "api".into(),
            ..NewApp::default()
        },
    )
    .await
    .unwrap();
    let ingest = on_b
        .create_token(&new_token(Scope::Ingest, "acme", Some("api")))
        .await
        .unwrap();
    let answer = client(&b, &ingest.token)
        .ingest(&batch("api", "r1", 0..3))
        .await
        .unwrap();
    assert_eq!(answer.accepted, 3);

    // Revoked on B: refused on A.
    b.client.revoke_token(&owner.info.id).await.unwrap();
    let refused = on_b.status().await.unwrap_err();
    assert_eq!(code(&refused).map(|(status, _)| status), Some(401));
    wait_until("the revoked token is refused on a", || async {
        matches!(
            on_a.status().await,
            Err(ClientError::Api { status: 401, .. })
        )
    })
    .await;
    // Every node lists the same tokens, and applied the same revision.
    let listed = |node: &Node| {
        let client = node.client.clone();
        async move {
            let mut ids: Vec<_> = client
                .tokens(None)
                .await
                .unwrap()
                .into_iter()
                .map(|token| (token.id, token.revoked.is_some()))
                .collect();
            ids.sort();
            ids
        }
    };
    wait_until("both nodes list the same tokens", || async {
        listed(&a).await == listed(&b).await
    })
    .await;
    assert!(metric(&b.server, "tailwater_registry_replica_applied_total").await >= 2.0);
    // Each node's heartbeat says how far it has applied the registry.
    wait_until(
        "the cluster's status shows both nodes at one revision",
        || async {
            let status = a.client.cluster_status().await.unwrap();
            let revisions: Vec<u64> = status.nodes.iter().map(|n| n.registry_revision).collect();
            revisions.len() == 2 && revisions[0] > 0 && revisions[0] == revisions[1]
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_made_private_on_one_node_hides_its_records_from_callers_on_another() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    a.client
        .create_app(
            None,
            &NewApp {
                name: "api".into(),
                private_logs: Some(false),
                ..NewApp::default()
            },
        )
        .await
        .unwrap();
    let caller = a
        .client
        .create_token(&new_token(Scope::Caller, "default", Some("api")))
        .await
        .unwrap();
    a.client.ingest(&batch("api", "r1", 0..1)).await.unwrap();
    // A caller reads its request's records on B (once the request settles).
    let on_b = client(&b, &caller.token);
    let params = LogsParams {
        app: Some("api".into()),
        request: Some("req-0".into()),
        ..LogsParams::default()
    };
    wait_until("the caller reads its request on b", || async {
        on_b.logs(&params)
            .await
            .is_ok_and(|page| page.records.len() == 1)
    })
    .await;

    a.client
        .update_app(
            None,
            "api",
            &AppPatch {
                private_logs: Some(true),
                ..AppPatch::default()
            },
        )
        .await
        .unwrap();
    wait_until("b keeps the private app from the caller", || async {
        match on_b.logs(&params).await {
            Err(error) => code(&error) == Some((403, "private_logs")),
            Ok(_) => false,
        }
    })
    .await;
    let app = b.client.apps(None).await.unwrap();
    assert!(app
        .iter()
        .any(|app| app.name == "api" && app.settings.private_logs));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_making_the_same_tenant_or_app_at_once_end_with_one() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    for round in 0..5 {
        let name = format!("t{round}");
        let new = NewTenant {
            name: name.clone(),
            private_logs: round % 2 == 0,
        };
        let (on_a, on_b) = tokio::join!(a.client.create_tenant(&new), b.client.create_tenant(&new));
        let made = [&on_a, &on_b].iter().filter(|made| made.is_ok()).count();
        assert_eq!(made, 1, "{on_a:?} {on_b:?}");
        let refused = on_a.err().or(on_b.err()).unwrap();
        assert_eq!(code(&refused), Some((409, "conflict")), "{refused:?}");

        let app = NewApp {
            name: format!("app {round}"),
            ..NewApp::default()
        };
        let (on_a, on_b) = tokio::join!(
            a.client.create_app(Some(&name), &app),
            b.client.create_app(Some(&name), &app)
        );
        let made = [&on_a, &on_b].iter().filter(|made| made.is_ok()).count();
        assert_eq!(made, 1, "{on_a:?} {on_b:?}");
    }
    for node in [&a, &b] {
        wait_until("every node has each tenant and app once", || async {
            let tenants = node.client.tenants().await.unwrap();
            let mut complete = true;
            for round in 0..5 {
                let name = format!("t{round}");
                let found: Vec<_> = tenants.iter().filter(|t| t.name == name).collect();
                complete &= found.len() == 1 && found[0].apps == 1;
            }
            complete
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_given_one_bootstrap_token_share_one_admin_token_and_one_seal_key() {
    let nats = NatsCluster::start(3);
    // Started at once: both make the bootstrap token; one wins.
    let (a, b) = tokio::join!(node("a", &nats), node("b", &nats));
    let c = node("c", &nats).await;
    for node in [&a, &b, &c] {
        wait_until("one admin token", || async {
            let admins: Vec<_> = node
                .client
                .tokens(None)
                .await
                .unwrap()
                .into_iter()
                .filter(|token| token.scope == Scope::Admin)
                .collect();
            admins.len() == 1
        })
        .await;
    }
    let ids = |node: &Node| {
        let client = node.client.clone();
        async move { client.tokens(None).await.unwrap()[0].id.clone() }
    };
    assert_eq!(ids(&a).await, ids(&b).await);
    assert_eq!(ids(&a).await, ids(&c).await);
    // One seal key: an id one node hands out opens on another.
    let key = |node: &Node| std::fs::read(node._dir.path().join("auth/seal.key")).unwrap();
    assert_eq!(key(&a), key(&b));
    assert_eq!(key(&a), key(&c));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_while_every_nats_server_is_stopped_is_refused_and_changes_nothing() {
    let mut nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let before = a.client.tenants().await.unwrap();
    for index in 0..3 {
        nats.kill(index);
    }
    let refused = a
        .client
        .create_tenant(&NewTenant {
            name: "offline".into(),
            private_logs: false,
        })
        .await
        .unwrap_err();
    assert_eq!(
        code(&refused),
        Some((503, "cluster_unavailable")),
        "{refused:?}"
    );
    assert!(refused.to_string().contains("nothing changed"), "{refused}");
    // Reads (and token checks) go on from this node's replica.
    assert_eq!(a.client.tenants().await.unwrap(), before);
    assert_eq!(
        metric(&a.server, "tailwater_registry_replica_unavailable_total").await,
        1.0
    );

    nats.restart_stopped();
    // Back: the refused write never happened, and a write goes through.
    assert!(a
        .client
        .tenants()
        .await
        .unwrap()
        .iter()
        .all(|tenant| tenant.name != "offline"));
    wait_until("a write goes through once NATS is back", || async {
        a.client
            .create_tenant(&NewTenant {
                name: "online".into(),
                private_logs: false,
            })
            .await
            .is_ok()
    })
    .await;
    assert!(a
        .client
        .tenants()
        .await
        .unwrap()
        .iter()
        .all(|tenant| tenant.name != "offline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_again_catches_up_on_changes_made_while_it_was_away() {
    let nats = NatsCluster::start(3);
    let a = node("a", &nats).await;
    let b = node("b", &nats).await;
    let old = a
        .client
        .create_token(&new_token(Scope::Owner, "default", None))
        .await
        .unwrap();
    let on_b = client(&b, &old.token);
    wait_until("b knows the first token", || async {
        on_b.status().await.is_ok()
    })
    .await;
    let Node {
        _dir: dir, server, ..
    } = b;
    server.shutdown().await.unwrap();

    // While B is away: a tenant, a token, and the first token revoked.
    a.client
        .create_tenant(&NewTenant {
            name: "later".into(),
            private_logs: true,
        })
        .await
        .unwrap();
    let new = a
        .client
        .create_token(&new_token(Scope::Owner, "later", None))
        .await
        .unwrap();
    a.client.revoke_token(&old.info.id).await.unwrap();

    // B answers only once caught up: no wait.
    let b = node_in(dir, "b", &nats).await;
    assert_eq!(
        client(&b, &new.token).status().await.unwrap().tenant,
        "later"
    );
    let refused = client(&b, &old.token).status().await.unwrap_err();
    assert_eq!(code(&refused).map(|(status, _)| status), Some(401));
    let later = b.client.tenants().await.unwrap();
    assert!(later.iter().any(|t| t.name == "later" && t.private_logs));
}
