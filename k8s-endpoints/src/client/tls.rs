//! TLS for the ApiServer connection: trust roots from a PEM CA file (or the public web
//! roots), the opt-in "accept anything" verifier, and the pooled HTTP(S) client built on them.
//!
//! Every rustls configuration is built with the `ring` provider passed explicitly
//! (`builder_with_provider`): if another crate in the binary enables a second provider, the
//! plain builder panics.
//!
//! Host names and IP addresses both work: hyper-rustls turns an IP host in the URL (also a
//! bracketed IPv6 one) into `ServerName::IpAddress`, which is checked against the
//! certificate's IP subject-alternative names.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;

use crate::error::Error;

/// The pooled HTTP client: one per CA generation, shared by every request.
pub(crate) type HttpClient = HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Largest CA file read.
const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// Idle pooled connections are closed after this long (the ApiServer's own idle timeout is
/// longer, so the client closes first and never reuses a connection the server dropped).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// What the server's certificate is checked against.
#[derive(Debug, Clone)]
pub(crate) enum Trust {
    /// The CA certificates of a PEM file.
    Roots(Arc<RootCertStore>),
    /// The public web roots (no CA file configured).
    WebPki,
    /// Nothing: any certificate is accepted.
    Insecure,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a CA file, at most 4 MiB.
///
/// # Errors
///
/// [`Error::CaFile`] when it cannot be read.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let read = || -> std::io::Result<Vec<u8>> {
        let mut buf = Vec::new();
        std::fs::File::open(path)?
            .take(MAX_CA_BYTES)
            .read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().map_err(|e| Error::CaFile {
        path: path.to_path_buf(),
        problem: "cannot read it; check ca_file (in a pod: that the service account is mounted)"
            .to_owned(),
        source: Some(e),
    })
}

/// Parses PEM CA certificates into a root store. Stops at the first malformed PEM section.
///
/// # Errors
///
/// [`Error::CaFile`] when not one certificate could be added.
pub fn parse_ca_pem(path: &Path, pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut certs = Vec::new();
    let mut malformed = false;
    for item in CertificateDer::pem_slice_iter(pem).take(10_000) {
        match item {
            Ok(cert) => certs.push(cert),
            Err(_) => {
                malformed = true;
                break;
            }
        }
    }
    let found = certs.len();
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        let problem = if found == 0 {
            format!(
                "it holds no PEM certificate{}; it must contain one or more \"-----BEGIN CERTIFICATE-----\" blocks",
                if malformed {
                    " (a PEM section is malformed)"
                } else {
                    ""
                }
            )
        } else {
            format!("none of its {ignored} certificate(s) could be parsed as a CA certificate")
        };
        return Err(Error::CaFile {
            path: path.to_path_buf(),
            problem,
            source: None,
        });
    }
    if ignored > 0 || malformed {
        tracing::warn!(
            path = %path.display(), added, ignored, malformed,
            "some certificates in the CA file could not be used"
        );
    }
    Ok(roots)
}

/// The rustls client configuration for a trust setting.
pub(crate) fn client_tls_config(trust: &Trust) -> Result<rustls::ClientConfig, Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls {
            problem: e.to_string(),
        })?;
    let config = match trust {
        Trust::Roots(roots) => builder
            .with_root_certificates(Arc::clone(roots))
            .with_no_client_auth(),
        Trust::WebPki => builder.with_webpki_roots().with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new()))
            .with_no_client_auth(),
    };
    Ok(config)
}

/// The pooled client: HTTP/1.1, `https://` and `http://`, the connect timeout, keep-alive.
pub(crate) fn http_client(tls: rustls::ClientConfig, connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    HyperClient::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(8)
        .build(https)
}

/// Accepts any server certificate (`insecure_skip_tls_verify`). Handshake signatures are
/// still checked, so the session is at least consistent with the certificate presented.
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
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    fn garbage_is_refused_with_the_path() {
        let p = Path::new("/etc/epcheck/ca.crt");
        let msg = parse_ca_pem(p, b"not a pem").unwrap_err().to_string();
        assert!(msg.contains("/etc/epcheck/ca.crt"), "{msg}");
        assert!(msg.contains("holds no PEM certificate"), "{msg}");
        let msg = parse_ca_pem(p, b"").unwrap_err().to_string();
        assert!(msg.contains("holds no PEM certificate"), "{msg}");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA";
        let msg = parse_ca_pem(p, broken.as_bytes()).unwrap_err().to_string();
        assert!(msg.contains("no PEM certificate"), "{msg}");
    }

    #[test]
    fn a_certificate_that_is_not_der_is_ignored() {
        // Valid base64, not a certificate: pem parses, webpki refuses.
        let pem = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
        let msg = parse_ca_pem(Path::new("/x"), pem.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(msg.contains("none of its 1 certificate(s)"), "{msg}");
    }

    #[test]
    fn configs_build_with_ring() {
        for trust in [Trust::WebPki, Trust::Insecure] {
            let cfg = client_tls_config(&trust).unwrap();
            assert!(cfg.alpn_protocols.is_empty());
        }
    }

    #[tokio::test]
    async fn client_builds() {
        let cfg = client_tls_config(&Trust::WebPki).unwrap();
        let _client = http_client(cfg, Duration::from_secs(1));
    }

    #[test]
    fn missing_file_names_it() {
        let msg = read_ca_file(Path::new("/nonexistent/ca.crt"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("/nonexistent/ca.crt"), "{msg}");
    }
}
