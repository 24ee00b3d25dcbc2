//! Record ids, `as_of`, cursors and tail resume points tell a tenant
//! nothing of other tenants: they carry the store's ingest position (one
//! order for every tenant) sealed for the tenant given them, so they are
//! not numbers, do not show how far apart two records are, and open for no
//! other tenant. Over real HTTP, with the server's real key.

mod common;

use std::time::Duration;

use common::{batch, call, TOKEN};
use futures_util::StreamExt;
use tailwater_client::Client;
use tailwater_model::tenancy::{NewTenant, NewToken, Scope};
use tailwater_model::wire::{ExportFormat, LogsParams};
use tailwater_model::LogRecord;

/// An owner's client of a new tenant `name`, with an ingest client of its
/// app `api`.
async fn tenant(admin: &Client, url: &str, name: &str) -> (Client, Client, String) {
    admin
        .create_tenant(&NewTenant {
            name: name.into(),
            private_logs: false,
        })
        .await
        .unwrap();
    let token = |scope, app: Option<&str>| NewToken {
        scope,
        tenant: Some(name.into()),
        app: app.map(str::to_owned),
        expires_in: None,
        name: None,
    };
    let owner = admin
        .create_token(&token(Scope::Owner, None))
        .await
        .unwrap();
    let ingest = admin
        .create_token(&token(Scope::Ingest, Some("api")))
        .await
        .unwrap();
    (
        Client::new(url, &owner.token).unwrap(),
        Client::new(url, &ingest.token).unwrap(),
        owner.token,
    )
}

fn everything() -> LogsParams {
    LogsParams {
        limit: Some("1000".into()),
        direction: Some("forward".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn ids_as_of_and_cursors_reveal_no_other_tenants_volume_and_open_for_no_other_tenant() {
    let (dir, server, admin) = common::server(10_000).await;
    let url = server.url();
    let (acme, acme_ingest, acme_token) = tenant(&admin, &url, "acme").await;
    let (globex, globex_ingest, globex_token) = tenant(&admin, &url, "globex").await;

    // acme writes one record, globex a thousand, acme one more.
    acme_ingest.ingest(&batch("api", "r1", 0..1)).await.unwrap();
    let before = acme.logs(&everything()).await.unwrap();
    globex_ingest
        .ingest(&batch("api", "g1", 0..1000))
        .await
        .unwrap();
    acme_ingest.ingest(&batch("api", "r1", 1..2)).await.unwrap();
    let after = acme.logs(&everything()).await.unwrap();
    let [first, second] = &after.records[..] else {
        panic!("two records: {:?}", after.records);
    };

    // What acme is shown is not a number, and not the store's position:
    // neither as text nor inside its bytes.
    let seal = common::seal(dir.path(), "acme");
    let positions = [first, second].map(|record| seal.position(&record.id).unwrap());
    assert_eq!(
        positions[1] - positions[0],
        1001,
        "the store numbered globex's records between acme's"
    );
    for shown in [&first.id, &second.id, &before.as_of, &after.as_of] {
        assert!(shown.parse::<u64>().is_err(), "{shown} is a number");
        for position in positions {
            assert!(!contains(shown, position), "{shown} holds {position}");
        }
    }
    let page = acme
        .logs(&LogsParams {
            limit: Some("1".into()),
            ..everything()
        })
        .await
        .unwrap();
    let cursor = page.next_cursor.expect("a second page");
    assert!(!contains(&cursor, positions[0]), "{cursor}");
    let export = acme
        .export(&LogsParams::default(), ExportFormat::Ndjson)
        .await;
    let as_of = export.unwrap().as_of;
    assert!(as_of.parse::<u64>().is_err(), "{as_of}");

    // One record, one id, on every read: history, export and live tail.
    let again = acme.logs(&everything()).await.unwrap();
    assert_eq!(again.records, after.records);
    let mut tail = Box::pin(
        acme.tail(&LogsParams::default(), Some(&first.id))
            .await
            .unwrap(),
    );
    let resumed: LogRecord = tokio::time::timeout(Duration::from_secs(10), tail.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(resumed.id, second.id, "after= resumes exactly");

    // Handed to another tenant, acme's id, as_of and cursor are refused
    // as invalid, the same as a forged one: nothing of acme's is read.
    for (name, query) in [
        ("after", format!("after={}", first.id)),
        ("after", format!("after={}", after.as_of)),
        ("cursor", format!("cursor={cursor}")),
    ] {
        let path = if name == "cursor" {
            format!("/v1/logs?{query}")
        } else {
            format!("/v1/logs/tail?{query}")
        };
        let (status, body) = call(&server, "GET", &path, &globex_token, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("invalid {name}")), "{message}");
    }
    let (status, body) = call(
        &server,
        "GET",
        &format!("/v1/logs?cursor={cursor}"),
        &acme_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "acme's own cursor: {body}");
    let error = globex
        .tail(&LogsParams::default(), Some(&first.id))
        .await
        .err()
        .expect("Last-Event-ID of another tenant is refused");
    assert!(error.to_string().contains("Last-Event-ID"), "{error}");

    // A flipped character, an old numeric id or any other text is refused
    // with what to send instead; `0` still means "from the first record".
    let mut forged = first.id.clone().into_bytes();
    forged[3] = if forged[3] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "5", "-1", "x"] {
        let (status, body) = call(
            &server,
            "GET",
            &format!("/v1/logs/tail?after={bad}"),
            &acme_token,
            None,
        )
        .await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("use the id of the last record you received"),
            "{body}"
        );
    }
    let mut from_start = Box::pin(
        acme.tail(
            &LogsParams::default(),
            Some(tailwater_model::wire::AFTER_START),
        )
        .await
        .unwrap(),
    );
    let first_again = tokio::time::timeout(Duration::from_secs(10), from_start.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first_again.id, first.id);
    // The admin's default tenant is a tenant like any other.
    let (status, _) = call(
        &server,
        "GET",
        &format!("/v1/logs/tail?after={}", first.id),
        TOKEN,
        None,
    )
    .await;
    assert_eq!(status, 400);
}

/// Whether `shown` (base64url) holds `position` as 8 big- or little-endian
/// bytes.
fn contains(shown: &str, position: u64) -> bool {
    use base64::Engine;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(shown) else {
        return false;
    };
    [position.to_be_bytes(), position.to_le_bytes()]
        .iter()
        .any(|needle| bytes.windows(8).any(|window| window == needle))
}
