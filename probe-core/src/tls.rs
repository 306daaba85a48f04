//! TLS clients: the one place in epcheck that builds a rustls client configuration and a pooled
//! HTTPS client on it. The ApiServer client, the Redis store, the webhooks and Kuberhealthy
//! reports, and the HTTPS probe all use it.
//!
//! - [`client_config`]: a rustls [`ClientConfig`] for a [`Verify`] choice: the CA certificates
//!   of a PEM file ([`Verify::Roots`]), the public web roots ([`Verify::WebPki`]), the
//!   operating system's roots ([`Verify::System`]), or no verification at all
//!   ([`Verify::Insecure`], which only an explicit opt-in may choose).
//! - [`https_client`]: hyper-util's pooled client over hyper-rustls, HTTP/1.1, `https://` and
//!   `http://`, with a connect timeout and idle-connection limits ([`PoolOptions`]).
//!
//! Every configuration is built with the `ring` provider passed explicitly
//! (`builder_with_provider`): if another crate in the binary enables a second provider, rustls's
//! plain builder panics.
//!
//! ```
//! use std::time::Duration;
//! use probe_core::tls::{PoolOptions, Verify, client_config, https_client};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), probe_core::Error> {
//! let tls = client_config(&Verify::WebPki)?;
//! let client = https_client(tls, &PoolOptions::new(Duration::from_secs(3)));
//! # drop(client);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::error::{Error, Result};

/// What a server's certificate is checked against.
#[derive(Debug, Clone)]
pub enum Verify {
    /// These CA certificates (typically a PEM CA file's).
    Roots(Arc<RootCertStore>),
    /// The public web roots compiled in (webpki-roots).
    WebPki,
    /// The operating system's trust store (read when the configuration is built).
    System,
    /// Nothing: any certificate for any name is accepted; the handshake's signatures are still
    /// checked, so the server must hold the key of the certificate it presents. Only for an
    /// explicit opt-in (`insecure_skip_tls_verify`) or where verification is not wanted by
    /// design (HTTPS health probes, as Kubernetes' own).
    Insecure,
}

/// The rustls provider every configuration is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration (safe default protocol versions, no client certificate, no
/// ALPN) that verifies servers as `verify` says.
///
/// # Errors
///
/// [`Error::Tls`] when rustls refuses the protocol versions, [`Error::NoSystemRoots`] when
/// [`Verify::System`] finds no usable certificate.
pub fn client_config(verify: &Verify) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let config = match verify {
        Verify::Roots(roots) => builder
            .with_root_certificates(Arc::clone(roots))
            .with_no_client_auth(),
        Verify::WebPki => builder.with_webpki_roots().with_no_client_auth(),
        Verify::System => builder
            .with_root_certificates(system_roots()?)
            .with_no_client_auth(),
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The operating system's CA certificates; unreadable ones are skipped with a warning.
fn system_roots() -> Result<RootCertStore> {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "skipping unreadable system CA certificates");
    }
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        return Err(Error::NoSystemRoots);
    }
    Ok(roots)
}

/// The pooled HTTP(S) client [`https_client`] builds.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Connection settings of an [`HttpsClient`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Timeout of the TCP connect (the TLS handshake is bounded by the caller's request timeout).
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub idle_timeout: Duration,
    /// Most idle connections kept per host.
    pub max_idle_per_host: usize,
}

impl PoolOptions {
    /// This connect timeout, idle connections closed after 30 s, at most 2 per host.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            connect_timeout,
            idle_timeout: Duration::from_secs(30),
            max_idle_per_host: 2,
        }
    }
}

/// The pooled client: HTTP/1.1, `https://` with `tls` and plain `http://`, `TCP_NODELAY`,
/// keep-alive as `pool` says. Needs a tokio runtime when used, not when built.
pub fn https_client(tls: ClientConfig, pool: &PoolOptions) -> HttpsClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(pool.connect_timeout));
    http.set_nodelay(true);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host)
        .build(https)
}

/// Accepts any server certificate ([`Verify::Insecure`]). Handshake signatures are still
/// checked, so the session is at least consistent with the certificate presented.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new() -> Self {
        Self {
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn configs_build_with_ring() {
        let roots = Verify::Roots(Arc::new(RootCertStore::empty()));
        for verify in [roots, Verify::WebPki, Verify::Insecure] {
            let cfg = client_config(&verify).unwrap();
            assert!(cfg.alpn_protocols.is_empty());
        }
    }

    #[test]
    fn only_insecure_accepts_any_certificate() {
        // The verifier is ours only when asked for.
        let debug = |v: &Verify| format!("{:?}", client_config(v).unwrap());
        assert!(debug(&Verify::Insecure).contains("AcceptAnyCertificate"));
        assert!(!debug(&Verify::WebPki).contains("AcceptAnyCertificate"));
    }

    #[tokio::test]
    async fn client_builds() {
        let cfg = client_config(&Verify::WebPki).unwrap();
        let _client = https_client(cfg, &PoolOptions::new(Duration::from_secs(1)));
    }
}
