//! Nodes that reach each other (`cluster::peer`): two nodes serving HTTPS
//! with a self-signed certificate, one of them behind the URL it
//! advertises (`--nats-advertise`, a name its listener's address is not).
//! A node back after the stream dropped what it had not read fills the
//! stretch from its peer when it trusts the certificate (`--nats-peer-ca`);
//! without it the gap stays unrepaired, counted and shown, and with it
//! again the gap is repaired.

use std::time::{Duration, Instant};

use tailwater_client::Client;
use tailwater_model::wire::{ClusterGap, ClusterStatus, LogsParams};
use tailwater_server::cluster::ClusterConfig;
use tailwater_server::tls::TlsFiles;
use tailwater_server::ServerConfig;

use super::common::{batch, TOKEN};
use super::nats::{free_port, NatsCluster};
use super::status::wait_status;
use super::{stored, wait_stored_once, Node, PARTITIONS, VISIBLE_WITHIN};

/// A self-signed certificate for the nodes, and its files.
struct Certificate {
    dir: tempfile::TempDir,
    pem: String,
    files: TlsFiles,
}

fn certificate() -> Certificate {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let pem = certified.cert.pem();
    std::fs::write(&files.cert, &pem).unwrap();
    std::fs::write(&files.key, certified.signing_key.serialize_pem()).unwrap();
    Certificate { dir, pem, files }
}

/// How a node of the test is started.
struct Setup<'a> {
    name: &'a str,
    port: u16,
    advertise: Option<String>,
    /// Whether it trusts the nodes' certificate when it calls a peer.
    trusting: bool,
}

/// A node serving HTTPS with `certificate`, a replay window of 64 KiB, a
/// fill wait of 1 s; its data in `dir`. The test's clients trust the
/// certificate.
async fn https_node(
    dir: tempfile::TempDir,
    nats: &NatsCluster,
    certificate: &Certificate,
    setup: Setup<'_>,
) -> Node {
    let mut config = ServerConfig::new(dir.path().to_owned());
    config.listen = format!("127.0.0.1:{}", setup.port).parse().unwrap();
    config.bootstrap_token = Some(TOKEN.into());
    config.tls = Some(certificate.files.clone());
    let mut cluster = ClusterConfig::new(nats.urls(), setup.name.to_owned());
    cluster.partitions = PARTITIONS;
    cluster.max_bytes = 64 * 1024;
    cluster.node_ttl = Duration::from_secs(2);
    cluster.fill_wait = Duration::from_secs(1);
    cluster.advertise = setup.advertise;
    if setup.trusting {
        cluster.peer_ca = Some(certificate.dir.path().join("cert.pem"));
    }
    config.cluster = Some(cluster);
    let server = tailwater_server::start(config).await.unwrap();
    let client = Client::new(&server.url(), TOKEN)
        .unwrap()
        .with_ca_certificate(certificate.pem.as_bytes())
        .unwrap();
    Node {
        _dir: dir,
        server,
        client,
    }
}

/// The gaps `status` shows of `node`'s consumers.
fn gaps_of(status: &ClusterStatus, node: &str) -> Vec<ClusterGap> {
    status
        .partitions
        .iter()
        .flat_map(|partition| &partition.consumers)
        .filter(|consumer| consumer.node == node)
        .flat_map(|consumer| consumer.gaps.iter().cloned())
        .collect()
}

/// `name`'s samples summed over partitions, read over HTTPS trusting
/// `certificate`.
async fn counter(node: &Node, certificate: &Certificate, name: &str) -> f64 {
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate.pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let text = client
        .get(format!("{}/metrics", node.server.url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Ships `seqs` of `runner` (whose earlier lines it has from 0) to `node`
/// in batches of 20 lines of about 800 bytes each (little that
/// compresses: a batch is a good part of the 64 KiB window), waiting
/// after each until `node` stores it, so that it never falls behind the
/// window itself.
async fn roll_the_window(node: &Node, runner: &str, seqs: std::ops::Range<u64>) {
    let mut noise = 0x2545_f491_4f6c_dd1d_u64 ^ seqs.start;
    let all: Vec<u64> = seqs.collect();
    for chunk in all.chunks(20) {
        let mut sent = batch("api", runner, chunk[0]..chunk[chunk.len() - 1] + 1);
        for record in &mut sent.records {
            let padding: String = (0..800)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    char::from(b'!' + (noise % 90) as u8)
                })
                .collect();
            record.message = format!("{runner} {} {padding}", record.seq);
        }
        let answer = node.client.ingest(&sent).await.unwrap();
        assert_eq!(answer.accepted, chunk.len());
        let upto: Vec<u64> = (0..=chunk[chunk.len() - 1]).collect();
        wait_stored_once(node, "api", runner, &upto).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_https_a_node_fills_its_gap_from_the_advertised_url_of_a_peer_it_trusts() {
    let nats = NatsCluster::start(3);
    let certificate = certificate();
    let (a_port, held) = free_port();
    drop(held);
    // a is called at a name (the certificate's), not at its listener's
    // address; b at its listener's address, the default.
    let a_url = format!("https://localhost:{a_port}");
    let a = https_node(
        tempfile::tempdir().unwrap(),
        &nats,
        &certificate,
        Setup {
            name: "a",
            port: a_port,
            advertise: Some(a_url.clone()),
            trusting: true,
        },
    )
    .await;
    let b_setup = |trusting| Setup {
        name: "b",
        port: 0,
        advertise: None,
        trusting,
    };
    let b = https_node(
        tempfile::tempdir().unwrap(),
        &nats,
        &certificate,
        b_setup(true),
    )
    .await;
    let status = wait_status(&b, "both nodes live", |status| status.nodes.len() == 2).await;
    let mut urls: Vec<(&str, &str)> = status
        .nodes
        .iter()
        .map(|node| (node.node.as_str(), node.url.as_str()))
        .collect();
    urls.sort_unstable();
    let b_url = b.server.url();
    assert_eq!(urls, [("a", a_url.as_str()), ("b", b_url.as_str())]);
    assert!(b_url.starts_with("https://127.0.0.1:"), "{b_url}");

    // 1. b away while the stream drops what it has not read; back, and
    // trusting a's certificate, it fills the stretch from a.
    roll_the_window(&a, "r1", 0..20).await;
    wait_stored_once(&b, "api", "r1", &(0..20).collect::<Vec<_>>()).await;
    let b_dir = stop(b).await;
    roll_the_window(&a, "r1", 20..300).await;
    let b = https_node(b_dir, &nats, &certificate, b_setup(true)).await;
    wait_stored_once(&b, "api", "r1", &(0..300).collect::<Vec<_>>()).await;
    let status = wait_status(&a, "b's gap shown repaired from a", |status| {
        let gaps = gaps_of(status, "b");
        !gaps.is_empty()
            && gaps
                .iter()
                .all(|gap| gap.repaired_from.as_deref() == Some("a"))
    })
    .await;
    let first_gaps = gaps_of(&status, "b");
    assert!(gaps_of(&status, "a").is_empty(), "a missed nothing");
    // Filled in order, with the stream's ids: each record's id is a's.
    assert_eq!(ids(&b, "r1").await, ids(&a, "r1").await);

    // 2. Again, b not trusting the certificate: it cannot call a, and the
    // gap stays unrepaired, counted and shown.
    let b_dir = stop(b).await;
    roll_the_window(&a, "r2", 0..300).await;
    let b = https_node(b_dir, &nats, &certificate, b_setup(false)).await;
    let deadline = Instant::now() + VISIBLE_WITHIN;
    while counter(&b, &certificate, "tailwater_cluster_repair_failures_total").await < 1.0 {
        assert!(Instant::now() < deadline, "b never tried to repair its gap");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = wait_status(&b, "b's new gap shown", |status| {
        gaps_of(status, "b").len() > first_gaps.len()
    })
    .await;
    let unrepaired: Vec<ClusterGap> = gaps_of(&status, "b")
        .into_iter()
        .filter(|gap| gap.repaired_ms.is_none())
        .collect();
    assert!(!unrepaired.is_empty(), "{status:#?}");
    assert!(
        unrepaired.iter().all(|gap| !first_gaps
            .iter()
            .any(|first| first.from_sequence == gap.from_sequence)),
        "the first gaps stay repaired: {status:#?}"
    );
    // b read on past the gap, and what the stream dropped is missing
    // from it: r2's first lines.
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let held = stored(&b.client, "api", "r2").await;
        if held.contains_key(&299) {
            assert!(!held.contains_key(&0), "b holds r2 0 unrepaired: {held:?}");
            break;
        }
        assert!(Instant::now() < deadline, "b never read on: {held:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let repaired = counter(
        &b,
        &certificate,
        "tailwater_cluster_window_gaps_repaired_total",
    )
    .await;
    assert_eq!(repaired, 0.0, "nothing repaired without the peer ca");

    // 3. Trusting it again, b repairs the gap from a's store.
    let b_dir = stop(b).await;
    let b = https_node(b_dir, &nats, &certificate, b_setup(true)).await;
    wait_stored_once(&b, "api", "r2", &(0..300).collect::<Vec<_>>()).await;
    wait_stored_once(&b, "api", "r1", &(0..300).collect::<Vec<_>>()).await;
    wait_status(&b, "every gap of b repaired from a", |status| {
        let gaps = gaps_of(status, "b");
        gaps.len() > first_gaps.len()
            && gaps
                .iter()
                .all(|gap| gap.repaired_from.as_deref() == Some("a"))
    })
    .await;
    assert!(
        counter(
            &b,
            &certificate,
            "tailwater_cluster_window_gaps_repaired_total"
        )
        .await
            >= 1.0
    );
}

/// The id of each record of `runner` (app `api`) on `node`, in order.
async fn ids(node: &Node, runner: &str) -> Vec<(String, String)> {
    let params = LogsParams {
        app: Some("api".to_owned()),
        runner: Some(runner.to_owned()),
        limit: Some("10000".to_owned()),
        ..Default::default()
    };
    let page = node.client.logs(&params).await.unwrap();
    assert!(page.next_cursor.is_none(), "one page holds them all");
    page.records
        .into_iter()
        .map(|record| (record.id, record.message))
        .collect()
}

/// Shuts `node` down; its data, to start it again.
async fn stop(node: Node) -> tempfile::TempDir {
    let Node {
        _dir: dir, server, ..
    } = node;
    server.shutdown().await.unwrap();
    dir
}
