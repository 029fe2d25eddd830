//! The TLS client side of `https` checks, and its cache of the system's trusted roots.
//!
//! Certificates are verified as any TLS client would (chain to a trusted CA, name matches the URL's
//! host), with rustls on the `ring` provider. The roots come from the system store
//! (`rustls-native-certs`), read once and cached; a config reload ([`forget_trust`], called by
//! the scheduler's `replace`) drops the cache, so a CA installed with `update-ca-certificates`
//! counts from the next check on, without a restart. Any handshake failure is reason `tls`.

use std::sync::{Arc, Mutex, PoisonError};

use rustls::{ClientConfig, RootCertStore};
use tracing::{debug, warn};

use super::Reason;

/// The TLS client config with the system's trusted roots, loaded on first use and again after
/// [`forget_trust`] (a reload), so that a CA installed with `update-ca-certificates` is picked up
/// without a restart.
static SYSTEM_TLS: Mutex<Option<Arc<ClientConfig>>> = Mutex::new(None);

pub(super) fn system_tls() -> Result<Arc<ClientConfig>, Reason> {
    let mut cached = SYSTEM_TLS.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(config) = cached.as_ref() {
        return Ok(Arc::clone(config));
    }
    let loaded = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    for e in &loaded.errors {
        debug!(error = %e, "reading trusted CA certificates");
    }
    if added == 0 {
        warn!("no trusted CA certificates found: every https probe will fail with reason tls");
    } else {
        debug!(
            added,
            ignored, "loaded trusted CA certificates for https probes"
        );
    }
    let config = Arc::new(tls_client_config(roots).map_err(|e| {
        debug!(error = %e, "cannot build the TLS client config");
        Reason::Tls
    })?);
    *cached = Some(Arc::clone(&config));
    Ok(config)
}

pub(super) fn forget_trust() {
    *SYSTEM_TLS.lock().unwrap_or_else(PoisonError::into_inner) = None;
}

/// rustls on the `ring` provider (already linked for WireGuard), certificate and host name
/// verification on, as any TLS client.
pub(super) fn tls_client_config(roots: RootCertStore) -> Result<ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A private CA, and a TLS server on 127.0.0.1 with a certificate for `name` that it issued.
    async fn https_server(name: &str) -> (SocketAddr, RootCertStore) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(conn).await {
                        read_head(&mut tls).await;
                        let _ = tls.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        (addr, roots)
    }

    #[tokio::test]
    async fn https_passes_when_the_certificate_chains_to_a_trusted_ca() {
        let (addr, roots) = https_server("127.0.0.1").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        let trusting = Arc::new(tls_client_config(roots).unwrap());
        assert_eq!(run_with(&p, None, Some(&trusting)).await.reason, Reason::Ok);
    }

    #[tokio::test]
    async fn https_fails_on_a_certificate_that_the_system_does_not_trust() {
        let (addr, _roots) = https_server("127.0.0.1").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        assert_eq!(run_once(&p).await.reason, Reason::Tls);
    }

    #[tokio::test]
    async fn https_fails_on_a_trusted_certificate_for_another_address() {
        let (addr, roots) = https_server("127.0.0.9").await;
        let p = probe("app", ProbeKind::Https, &format!("https://{addr}/health"));
        let trusting = Arc::new(tls_client_config(roots).unwrap());
        assert_eq!(
            run_with(&p, None, Some(&trusting)).await.reason,
            Reason::Tls
        );
    }
}
