//! TLS for the ApiServer connection: trust roots from a PEM CA file (or the public web roots),
//! the opt-in "accept anything" choice, and the pooled HTTP(S) client built on them. The rustls
//! configuration and the client come from [`probe_core::tls`], the workspace's one builder
//! (ring provider, passed explicitly).
//!
//! Host names and IP addresses both work: hyper-rustls turns an IP host in the URL (also a
//! bracketed IPv6 one) into `ServerName::IpAddress`, which is checked against the
//! certificate's IP subject-alternative names.

use std::path::Path;
use std::time::Duration;

use probe_core::tls::{HttpsClient, PoolOptions};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use crate::error::Error;

/// What the server's certificate is checked against: the CA file's roots, the public web
/// roots (no CA file configured), or nothing (`insecure_skip_tls_verify`).
pub(crate) use probe_core::tls::Verify as Trust;

/// The pooled HTTP client: one per CA generation, shared by every request.
pub(crate) type HttpClient = HttpsClient;

/// Largest CA file read.
const MAX_CA_BYTES: u64 = 4 * 1024 * 1024;

/// Idle pooled connections are closed after this long (the ApiServer's own idle timeout is
/// longer, so the client closes first and never reuses a connection the server dropped).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

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
    probe_core::tls::client_config(trust).map_err(|e| Error::Tls {
        problem: match e {
            probe_core::Error::Tls(problem) => problem,
            other => other.to_string(),
        },
    })
}

/// The pooled client: HTTP/1.1, `https://` and `http://`, the connect timeout, keep-alive.
pub(crate) fn http_client(tls: rustls::ClientConfig, connect_timeout: Duration) -> HttpClient {
    probe_core::tls::https_client(
        tls,
        &PoolOptions {
            connect_timeout,
            idle_timeout: POOL_IDLE_TIMEOUT,
            max_idle_per_host: 8,
        },
    )
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
