//! How the nodes of a cluster reach each other over HTTP: the URL a node
//! puts in its heartbeat ([`advertised`]: `--nats-advertise`, or its
//! listener's address), and the one client its repairs ([`super::repair`])
//! and in-order fills ([`super::stretch`]) call peers with ([`client`]:
//! the public roots, and the authorities of `--nats-peer-ca`).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use super::ClusterConfig;

/// How long a node waits to connect to a peer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one page of a peer's records may take, request to last byte.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client a node calls its peers with: connect and page
/// timeouts, and trust in the public roots plus `--nats-peer-ca`'s
/// certificates (read now: a file that cannot be read or holds no
/// certificate stops the start, naming it).
pub fn client(config: &ClusterConfig) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(PAGE_TIMEOUT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tailwater-node/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.peer_ca {
        let what = "the certificates (or their CA) the nodes serve with --tls-cert";
        for authority in crate::tls::authorities(path, "--nats-peer-ca", what)? {
            builder = builder.add_root_certificate(authority);
        }
    }
    builder
        .build()
        .context("cannot make the HTTP client that calls the cluster's peers")
}

/// A call to a peer that got no answer, as said in a failed repair's
/// reasons: with what to pass when the peer's certificate was refused.
pub fn call_failed(error: reqwest::Error) -> anyhow::Error {
    let refused = crate::tls::refused_certificate(&error).map(|why| format!("{why:?}"));
    let error = anyhow::Error::new(error).context("cannot ask it for records");
    match refused {
        Some(why) => error.context(format!(
            "this node does not trust its certificate ({why}): give every node --nats-peer-ca with the nodes' certificates or their CA, and --nats-advertise a URL whose host the certificate is for"
        )),
        None => error,
    }
}

/// The URL this node's heartbeat carries, for peers to call it at:
/// `--nats-advertise` (checked: `https` with `tls`, else `http`; a host
/// that is not 0.0.0.0 or ::; no credentials, path, query or fragment),
/// or the address it listens on. A node listening on every address with
/// nothing advertised is warned of: its peers cannot reach it there.
pub fn advertised(
    advertise: Option<&str>,
    tls: bool,
    listening: SocketAddr,
) -> anyhow::Result<String> {
    let scheme = if tls { "https" } else { "http" };
    let Some(given) = advertise else {
        if listening.ip().is_unspecified() {
            tracing::warn!(
                %listening,
                "this node listens on every address and its heartbeat says {scheme}://{listening}, which its peers cannot reach: they repair gaps from it there; pass --nats-advertise {scheme}://<the host or address they reach it at>:{}",
                listening.port()
            );
        }
        return Ok(format!("{scheme}://{listening}"));
    };
    let invalid = |why: &str| {
        anyhow::anyhow!(
            "invalid --nats-advertise {given:?}: {why}; give the URL the other nodes reach this one at, as {scheme}://host:port"
        )
    };
    let url = reqwest::Url::parse(given).map_err(|error| invalid(&error.to_string()))?;
    if url.scheme() != scheme {
        let serving = if tls {
            "this node serves HTTPS (--tls-cert)"
        } else {
            "this node serves plain HTTP (no --tls-cert)"
        };
        return Err(invalid(&format!("it says {}, and {serving}", url.scheme())));
    }
    let Some(host) = url.host_str().filter(|host| !host.is_empty()) else {
        return Err(invalid("it names no host"));
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    if ip
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified())
    {
        return Err(invalid("no peer reaches a node at 0.0.0.0 or ::"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it carries credentials (peers use the node key)"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it has a path, query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENING: &str = "127.0.0.1:7070";

    fn advertise(url: &str, tls: bool) -> Result<String, String> {
        advertised(Some(url), tls, LISTENING.parse().unwrap()).map_err(|error| error.to_string())
    }

    #[test]
    fn the_heartbeat_says_the_advertised_url_or_else_the_listeners_address() {
        let listening = "0.0.0.0:7070".parse().unwrap();
        assert_eq!(
            advertised(None, false, listening).unwrap(),
            "http://0.0.0.0:7070"
        );
        assert_eq!(
            advertised(None, true, LISTENING.parse().unwrap()).unwrap(),
            "https://127.0.0.1:7070"
        );
        assert_eq!(
            advertise("http://node-a.internal:7070", false).unwrap(),
            "http://node-a.internal:7070"
        );
        assert_eq!(
            advertise("https://node-a.internal:7070/", true).unwrap(),
            "https://node-a.internal:7070"
        );
        assert_eq!(
            advertise("https://[fd00::1]:7070", true).unwrap(),
            "https://[fd00::1]:7070"
        );
        assert_eq!(
            advertise("http://10.0.0.11", false).unwrap(),
            "http://10.0.0.11"
        );
    }

    #[test]
    fn an_advertised_url_peers_could_not_call_stops_the_start_saying_why() {
        for (url, tls, why) in [
            ("http://node-a:7070", true, "serves HTTPS"),
            ("https://node-a:7070", false, "serves plain HTTP"),
            ("nats://node-a:4222", false, "it says nats"),
            ("node-a:7070", false, "it says node-a"),
            ("http://", false, "empty host"),
            ("http://0.0.0.0:7070", false, "0.0.0.0"),
            ("http://[::]:7070", false, "0.0.0.0 or ::"),
            ("http://user:pw@node-a:7070", false, "credentials"),
            ("http://user@node-a:7070", false, "credentials"),
            ("http://node-a:7070/tailwater", false, "path"),
            ("http://node-a:7070/?x=1", false, "query"),
            ("http://node-a:7070/#top", false, "fragment"),
            ("not a url", false, "relative URL"),
        ] {
            let error = advertise(url, tls).expect_err(url);
            assert!(
                error.starts_with("invalid --nats-advertise") && error.contains(why),
                "{url}: {error}"
            );
            assert!(error.contains("give the URL"), "{url}: {error}");
        }
    }

    #[test]
    fn a_peer_ca_that_is_missing_or_holds_no_certificate_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let config = |path: &std::path::Path| {
            let mut config = ClusterConfig::new(vec!["nats://n:4222".into()], "a".into());
            config.peer_ca = Some(path.to_owned());
            config
        };
        let missing = dir.path().join("missing.pem");
        let error = client(&config(&missing)).unwrap_err().to_string();
        assert!(
            error.starts_with("cannot read --nats-peer-ca")
                && error.contains("missing.pem")
                && error.contains("--nats-peer-ca"),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = client(&config(&empty)).unwrap_err().to_string();
        assert!(
            error.contains("no certificate") && error.contains("--nats-peer-ca"),
            "{error}"
        );
        let key = dir.path().join("key.pem");
        let certified = rcgen::generate_simple_self_signed(vec!["node-a".to_owned()]).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        let error = client(&config(&key)).unwrap_err().to_string();
        assert!(error.contains("--nats-peer-ca"), "{error}");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, certified.cert.pem()).unwrap();
        assert!(client(&config(&good)).is_ok());
    }
}
