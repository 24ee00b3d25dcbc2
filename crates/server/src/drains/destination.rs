//! Where a drain may send: `http://` and `https://` URLs only, and — unless
//! the server allows it (`--drain-allow-private`) — never to loopback,
//! private, link-local (cloud metadata), shared or other non-public
//! addresses, whether written in the URL or resolved from its host name.
//! Names are checked as each connection resolves them (the client's
//! resolver), so a name that later resolves to a private address is
//! refused then too. No proxy from the environment, no redirects.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// Longest drain URL, in bytes.
pub const MAX_URL_BYTES: usize = 2048;

/// Checks a drain URL as its owner gives it: the parsed URL, or a message
/// that says what to do.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!(
            "the drain url is longer than {MAX_URL_BYTES} bytes: give a shorter one"
        ));
    }
    let url = Url::parse(text).map_err(|error| {
        format!("invalid drain url '{text}': {error}: give an http:// or https:// url")
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a drain url must be http:// or https://, not {}://",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "a drain url may not hold a user or password: the drain signs each delivery instead (verify tailwater-signature)".into(),
        );
    }
    check_host(&url, allow_private)?;
    Ok(url)
}

/// Refuses a URL whose host is a literal non-public address (names are the
/// resolver's to check).
pub fn check_host(url: &Url, allow_private: bool) -> Result<(), String> {
    let host = url.host_str().ok_or("a drain url needs a host")?;
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    if !allow_private && !is_public(ip) {
        return Err(format!(
            "the drain url's address {ip} is not a public one: loopback and private destinations are refused unless the server runs with --drain-allow-private"
        ));
    }
    Ok(())
}

/// Whether `ip` is an ordinary public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => is_public_v4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(ip),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT).
        || (a == 100 && (64..128).contains(&b))
        // Benchmarking, and reserved for future use.
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // Unique local fc00::/7, link-local fe80::/10.
        || (first & 0xfe00) == 0xfc00
        || (first & 0xffc0) == 0xfe80
        // Documentation 2001:db8::/32.
        || (first == 0x2001 && ip.segments()[1] == 0x0db8))
}

/// The drains' resolver: the system's, without the addresses drains may
/// not reach.
#[derive(Clone, Copy, Debug)]
pub struct Resolver {
    pub allow_private: bool,
}

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| allow_private || is_public(addr.ip()))
                .collect();
            if allowed.is_empty() {
                let message = match found.is_empty() {
                    true => format!("{host} resolves to no address"),
                    false => format!(
                        "{host} resolves only to addresses that are not public (refused unless the server runs with --drain-allow-private)"
                    ),
                };
                return Err(message.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

/// The HTTP client every drain sends with: it trusts the public web
/// roots, and the authorities of `--drain-ca-file` if given (a file that
/// cannot be read or holds no certificate stops the start, naming it).
pub fn client(settings: &super::DrainSettings) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(Resolver {
            allow_private: settings.allow_private,
        }))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        .user_agent(concat!("tailwater-drain/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &settings.ca_file {
        for authority in crate::tls::authorities(path, "--drain-ca-file", "CA certificates")? {
            builder = builder.add_root_certificate(authority);
        }
    }
    Ok(builder.build()?)
}

/// A refused TLS certificate somewhere in `error`'s causes, in plain
/// words and what to do; `None` when the failure is something else.
pub fn certificate_problem(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::CertificateError as Cert;
    crate::tls::refused_certificate(error).map(|why| {
        let what = match why {
            Cert::UnknownIssuer => "is signed by an authority drains do not trust: if your own CA signed it, start the server with --drain-ca-file <its PEM>".to_owned(),
            Cert::Expired | Cert::ExpiredContext { .. } => "has expired: the receiver needs a new one".to_owned(),
            Cert::NotValidYet | Cert::NotValidYetContext { .. } => "is not valid yet: check the receiver's and this server's clocks".to_owned(),
            Cert::NotValidForName | Cert::NotValidForNameContext { .. } => "is not for the drain url's host: give the url with the name the certificate is for".to_owned(),
            other => format!("was refused ({other:?}): the receiver needs a certificate a public or --drain-ca-file authority issued"),
        };
        format!("certificate problem: the receiver's TLS certificate {what}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_http_urls_pass_by_default() {
        assert!(check_url("https://logs.example.com/in", false).is_ok());
        assert!(check_url("http://93.184.216.34/in", false).is_ok());
        for refused in [
            "ftp://example.com/",
            "file:///etc/passwd",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00::1]/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "https://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_url(refused, false).is_err(), "{refused}");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok());
        assert!(check_url(
            &format!("https://e.com/{}", "a".repeat(MAX_URL_BYTES)),
            true
        )
        .is_err());
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let settings = |path: &std::path::Path| super::super::DrainSettings {
            ca_file: Some(path.to_owned()),
            ..Default::default()
        };
        let missing = dir.path().join("missing.pem");
        let error = client(&settings(&missing)).unwrap_err().to_string();
        assert!(
            error.contains("--drain-ca-file") && error.contains("missing.pem"),
            "{error}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = client(&settings(&empty)).unwrap_err().to_string();
        assert!(error.contains("--drain-ca-file"), "{error}");
        let good = dir.path().join("ca.pem");
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".to_owned()]).unwrap();
        std::fs::write(&good, ca.cert.pem()).unwrap();
        assert!(client(&settings(&good)).is_ok());
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses() {
        let refused = Resolver {
            allow_private: false,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        assert!(refused.is_err());
        let allowed = Resolver {
            allow_private: true,
        }
        .resolve("localhost".parse().unwrap())
        .await;
        assert!(allowed.unwrap().next().is_some());
    }
}
