//! The drain target: what an owner sends to make a drain (its body, its
//! URL), what a receiver reads of a delivery (the signature header), and
//! the Loki labels a drain writes.

use tailwater_model::wire::NewDrain;
use tailwater_server::drains::destination::{check_url, is_public};
use tailwater_server::drains::{signature, verify};
use tailwater_server::protocols::loki::{label_set, parse_labels};

/// The first byte: bit 0, whether private destinations are allowed. Then
/// three parts: a `POST /v1/apps/{app}/drains` body, a
/// `tailwater-signature` header, a label value.
///
/// A URL the check lets through is http(s), holds no credentials and,
/// unless private ones are allowed, names no literal address that is not
/// public; a header never verifies against another body than the one it
/// was made for; a label value reads back as it was written.
pub fn drain(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let allow_private = mode & 1 == 1;
    let parts = crate::split(rest);
    let body = parts[0];
    if let Ok(new) = serde_json::from_slice::<NewDrain>(body) {
        if let Ok(url) = check_url(&new.url, allow_private) {
            assert!(matches!(url.scheme(), "http" | "https"), "{url}");
            assert!(url.username().is_empty() && url.password().is_none());
            let host = url.host_str().expect("a checked url has a host");
            let literal = host.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
                assert!(allow_private || is_public(ip), "{url}");
            }
        }
    }
    if let Some(header) = parts.get(1) {
        let header = String::from_utf8_lossy(header);
        let _ = verify("whsec_fuzz", &header, body, 1_800_000_000, 300);
        let signed = signature("whsec_fuzz", 1_800_000_000, body);
        assert_eq!(
            verify("whsec_fuzz", &signed, body, 1_800_000_000, 300),
            Ok(())
        );
        let mut other = body.to_vec();
        other.push(b'x');
        assert!(verify("whsec_fuzz", &signed, &other, 1_800_000_000, 300).is_err());
    }
    if let Some(value) = parts.get(2) {
        let value = String::from_utf8_lossy(value);
        let labels = parse_labels(&label_set(&[("app", &value)])).expect("written labels read");
        assert_eq!(labels, [("app".to_owned(), value.into_owned())]);
    }
}
