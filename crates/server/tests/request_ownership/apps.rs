//! A request is its app's: an ingest token of another app cannot claim it,
//! however it dates its records.

use super::*;

/// `(app, message)` of each record of a JSON page.
fn app_messages(page: &Value) -> Vec<(String, String)> {
    page["records"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of records: {page}"))
        .iter()
        .map(|record| {
            (
                record["app"].as_str().unwrap().to_owned(),
                record["message"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn an_ingest_token_of_another_app_cannot_take_over_a_request() {
    let (_dir, server, _admin) = common::server(tailwater_server::tail::DEFAULT_TAIL_BUFFER).await;
    let (real, real_id) = token(&server, "caller", None).await;
    let (thief, thief_id) = token(&server, "caller", None).await;
    let (pub_ingest, _) = token(&server, "ingest", Some("pub")).await;
    let (other_ingest, _) = token(&server, "ingest", Some("other")).await;

    // r-1: app pub's gateway starts it for the real caller; then app
    // other's token sends a start of the same id, dated ten minutes
    // earlier, naming the thief.
    ingest(
        &server,
        &pub_ingest,
        records(
            "pub",
            "pub-1",
            "r-1",
            0,
            &[start(&real_id), line("pub line 1")],
        ),
    )
    .await;
    // Another runner of app pub: the same app's request, the same owner.
    ingest(
        &server,
        &pub_ingest,
        records("pub", "pub-2", "r-1", 0, &[line("pub line 2")]),
    )
    .await;
    ingest(
        &server,
        &other_ingest,
        records(
            "other",
            "other-1",
            "r-1",
            600,
            &[start(&thief_id), line("other line")],
        ),
    )
    .await;
    // r-2: app other's token claims the id first, and app pub's real
    // start comes after it.
    ingest(
        &server,
        &other_ingest,
        records("other", "other-1", "r-2", 600, &[start(&thief_id)]),
    )
    .await;
    ingest(
        &server,
        &pub_ingest,
        records(
            "pub",
            "pub-1",
            "r-2",
            0,
            &[start(&real_id), line("pub r-2")],
        ),
    )
    .await;

    let pub_r1 = [
        ("pub", "request started"),
        ("pub", "pub line 1"),
        ("pub", "pub line 2"),
    ];
    let other_r1 = [("other", "request started"), ("other", "other line")];
    let own = |records: &[(&str, &str)]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|(app, message)| (app.to_string(), message.to_string()))
            .collect()
    };
    for path in [
        "/v1/logs?request=r-1&direction=forward",
        "/v1/requests/r-1/logs?direction=forward",
    ] {
        let (status, page) = call(&server, "GET", path, &real, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(app_messages(&page), own(&pub_r1), "{path}: the real caller");
        let (status, page) = call(&server, "GET", path, &thief, None).await;
        assert_eq!(status, 200, "{path}: {page}");
        assert_eq!(app_messages(&page), own(&other_r1), "{path}: the thief");
    }
    let (status, page) = call(
        &server,
        "GET",
        "/v1/logs?request=r-2&direction=forward",
        &real,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        app_messages(&page),
        own(&[("pub", "request started"), ("pub", "pub r-2")])
    );
    let (status, page) = call(
        &server,
        "GET",
        "/v1/logs?request=r-2&direction=forward",
        &thief,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(app_messages(&page), own(&[("other", "request started")]));

    // The request page: each sees its own app's request.
    for (token, app, runner) in [(&real, "pub", "pub-1"), (&thief, "other", "other-1")] {
        let (status, info) = call(&server, "GET", "/v1/requests/r-1", token, None).await;
        assert_eq!(status, 200, "{info}");
        assert_eq!(
            (info["app"].as_str(), info["runner"].as_str()),
            (Some(app), Some(runner))
        );
        assert_eq!(
            info["records"],
            json!(if app == "pub" { 3 } else { 2 }),
            "{info}"
        );
    }

    // Export and histogram hold the same records as history.
    let (status, export) = call(
        &server,
        "GET",
        "/v1/export?request=r-1&format=ndjson",
        &thief,
        None,
    )
    .await;
    assert_eq!(status, 200, "{export}");
    let exported: Vec<String> = export
        .as_str()
        .map(|text| text.lines().map(str::to_owned).collect())
        .unwrap_or_else(|| vec![export.to_string()]);
    assert!(
        exported.iter().all(|line| !line.contains("pub line")),
        "the thief exports nothing of app pub: {exported:?}"
    );
    assert!(
        exported.iter().any(|line| line.contains("other line")),
        "{exported:?}"
    );
    for (token, total) in [(&real, 3), (&thief, 2)] {
        let (status, histogram) =
            call(&server, "GET", "/v1/histogram?request=r-1", token, None).await;
        assert_eq!(status, 200, "{histogram}");
        assert_eq!(histogram["total"], json!(total), "{histogram}");
    }
}
