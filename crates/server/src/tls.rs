//! HTTPS: the certificate and key loaded once at start (rustls, with the
//! `ring` provider), and the listener served through `axum-server`, which
//! does each TLS handshake in the connection's own task, so a client that
//! never finishes one holds up no other.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use axum_server::tls_rustls::RustlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::task::JoinHandle;

/// How long requests in flight may take to finish once shutdown starts.
const GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the certificate chain and private key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Reads and checks the certificate and key: a bad file stops the start
/// with a message that names it.
pub fn load(files: &TlsFiles) -> anyhow::Result<RustlsConfig> {
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
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// Serves `app` over TLS on `listener` until `stopped` resolves, then
/// finishes requests in flight (up to [`GRACE`]).
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    config: RustlsConfig,
    app: axum::Router,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<JoinHandle<std::io::Result<()>>> {
    let listener = listener.into_std()?;
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle.clone());
    tokio::spawn(async move {
        stopped.await;
        handle.graceful_shutdown(Some(GRACE));
    });
    Ok(tokio::spawn(async move {
        server.serve(app.into_make_service()).await
    }))
}
