//! HTTPS: the certificate and key loaded once at start (rustls, with the
//! `ring` provider). [`crate::serve`] does each TLS handshake in the
//! connection's own task, so a client that never finishes one holds up no
//! other. For the server's own clients (drains, a cluster's peers): the
//! extra authorities a flag names ([`authorities`]), and why a call's
//! certificate was refused ([`refused_certificate`]).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the certificate chain and private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and checks the certificate and key: a bad file stops the start
/// with a message that names it.
pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "cannot read the certificate {}: give --tls-cert a PEM file with the certificate chain",
                files.cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!(
            "no certificate in {}: give --tls-cert a PEM file with the certificate chain",
            files.cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).with_context(|| {
        format!(
            "cannot read the private key {}: give --tls-key a PEM file with the key (PKCS#8, PKCS#1 or SEC1)",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "the key {} does not fit the certificate {}: give the pair issued together",
                files.key.display(),
                files.cert.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of the PEM file `path`, given as `flag` (`what` the
/// file holds, for the messages): a file that cannot be read, is not PEM
/// or holds no certificate stops the start, naming it.
pub fn authorities(
    path: &std::path::Path,
    flag: &str,
    what: &str,
) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|error| {
        anyhow::anyhow!(
            "cannot read {flag} {shown}: {error}: give {flag} a readable PEM file of {what}"
        )
    })?;
    let authorities = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
        anyhow::anyhow!(
            "{flag} {shown} is not PEM certificates ({error}): give {flag} {what} in PEM"
        )
    })?;
    anyhow::ensure!(
        !authorities.is_empty(),
        "no certificate in {flag} {shown}: give {flag} a PEM file of {what}"
    );
    Ok(authorities)
}

/// The reason rustls refused a certificate, somewhere in `error`'s causes.
pub fn refused_certificate<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::CertificateError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        // An io::Error's source skips what it wraps: look inside it first.
        cause = match error.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
        if let Some(rustls::Error::InvalidCertificate(why)) = error.downcast_ref::<rustls::Error>()
        {
            return Some(why);
        }
    }
    None
}
