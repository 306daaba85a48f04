//! etcd connection options and their translation into etcd-client's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// The key prefix when none is configured (SPEC §3.3).
pub const DEFAULT_KEY_PREFIX: &str = "epcheck/";
/// How many transitions the history keeps (the oldest are deleted first).
pub const DEFAULT_EVENTS_MAX_LEN: u64 = 10_000;
/// How long the first connection may take (TCP, TLS handshake and authentication).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one call may take before it fails as unavailable.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two attempts to make the first connection (the backoff starts at
/// 100 ms and doubles up to this).
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);
/// The most endpoints one store takes (an etcd cluster has 3, 5 or 7 members).
pub const MAX_ENDPOINTS: usize = 16;

/// How to reach etcd. Build it from the config's `etcd` section; `Default` is a local etcd on
/// `http://127.0.0.1:2379` without authentication.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct EtcdOptions {
    /// The members' client URLs (`etcd.endpoints`): `https://host:port`, `http://host:port` or
    /// `host:port` (then `https` when another endpoint says so or a TLS file is given, else
    /// `http`). All use one scheme.
    pub endpoints: Vec<String>,
    /// The etcd user (`etcd.username`); `None` without authentication.
    pub username: Option<String>,
    /// The user's password (`etcd.password`, `password_file` or `EPCHECK_ETCD_PASSWORD`);
    /// never logged, scrubbed from error messages.
    pub password: Option<SecretString>,
    /// PEM file with the CA certificates that sign the members' serving certificates
    /// (`etcd.ca_file`); `None` trusts the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for etcd's `--client-cert-auth` (`etcd.cert_file`).
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key (`etcd.key_file`).
    pub key_file: Option<PathBuf>,
    /// Prefix of every key (`etcd.key_prefix`), so several installations share an etcd.
    pub key_prefix: String,
    /// The transition history keeps this many entries.
    pub events_max_len: u64,
    /// Timeout of the first connection (and of each reconnection attempt).
    pub connect_timeout: Duration,
    /// Timeout of one store call.
    pub command_timeout: Duration,
    /// Longest wait between attempts to make the first connection.
    pub reconnect_max_delay: Duration,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            events_max_len: DEFAULT_EVENTS_MAX_LEN,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
        }
    }
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("endpoints", &self.endpoints)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key_prefix", &self.key_prefix)
            .field("events_max_len", &self.events_max_len)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

impl EtcdOptions {
    /// Checks the options as [`EtcdStore::connect`](super::EtcdStore::connect) would, without
    /// connecting: endpoints, credentials in pairs, TLS files readable PEM.
    ///
    /// # Errors
    /// [`Error::EtcdOption`] naming the option and what to do.
    pub fn check(&self) -> Result<()> {
        resolve(self).map(drop)
    }

    /// Defaults with these endpoints.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        EtcdOptions {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..EtcdOptions::default()
        }
    }
}

/// The checked form of [`EtcdOptions`].
pub(crate) struct Resolved {
    /// Full URLs, one scheme.
    pub urls: Vec<String>,
    /// The endpoints for messages, comma-separated.
    pub display: String,
    pub connect: ConnectOptions,
    /// The password, for scrubbing error messages.
    pub password: Option<SecretString>,
}

fn invalid(option: &'static str, reason: impl Into<String>) -> Error {
    Error::EtcdOption {
        option,
        reason: reason.into(),
    }
}

pub(crate) fn resolve(options: &EtcdOptions) -> Result<Resolved> {
    let tls_files = options.ca_file.is_some() || options.cert_file.is_some();
    let urls = urls(&options.endpoints, tls_files)?;
    let tls = urls.iter().any(|u| u.starts_with("https://"));
    if options
        .key_prefix
        .contains(|c: char| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "key_prefix",
            format!(
                "{:?} contains whitespace or a control character",
                options.key_prefix
            ),
        ));
    }
    for (option, value) in [
        ("connect_timeout", options.connect_timeout),
        ("command_timeout", options.command_timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(option, "must be more than 0"));
        }
    }
    let mut connect = ConnectOptions::new()
        .with_connect_timeout(options.connect_timeout)
        .with_timeout(options.command_timeout)
        // HTTP/2 pings find a connection that stopped answering without closing (a partition).
        .with_keep_alive(
            options.command_timeout.max(Duration::from_secs(1)),
            options.command_timeout,
        )
        .with_auto_token_refresh(true);
    let password = options
        .password
        .clone()
        .filter(|p| !p.expose_secret().is_empty());
    match (&options.username, &password) {
        (Some(user), Some(p)) if !user.is_empty() => {
            connect = connect.with_user(user.clone(), p.expose_secret().to_owned());
        }
        (Some(user), None) if !user.is_empty() => {
            return Err(invalid(
                "password",
                format!(
                    "etcd.username {user:?} is set but no password: set etcd.password_file or \
                     EPCHECK_ETCD_PASSWORD"
                ),
            ));
        }
        (_, Some(_)) => {
            return Err(invalid(
                "username",
                "a password is set but no etcd.username: etcd authenticates a user by name",
            ));
        }
        _ => {}
    }
    if tls {
        connect = connect.with_tls(tls_options(options)?);
    } else if tls_files || options.key_file.is_some() {
        return Err(invalid(
            "endpoints",
            "TLS files are set but the endpoints are http://; use https:// (or host:port)",
        ));
    }
    Ok(Resolved {
        display: urls.join(","),
        urls,
        connect,
        password,
    })
}

/// Every endpoint as a URL with a scheme; all schemes alike.
fn urls(endpoints: &[String], tls_files: bool) -> Result<Vec<String>> {
    if endpoints.is_empty() {
        return Err(invalid(
            "endpoints",
            "none given; list the members' client URLs, e.g. [\"https://10.0.0.5:2379\"]",
        ));
    }
    if endpoints.len() > MAX_ENDPOINTS {
        return Err(invalid(
            "endpoints",
            format!("{} given; at most {MAX_ENDPOINTS}", endpoints.len()),
        ));
    }
    // A bare host:port takes the scheme the others name, else https with TLS files.
    let tls_default = tls_files
        || endpoints
            .iter()
            .any(|e| e.trim().to_ascii_lowercase().starts_with("https://"));
    let mut out = Vec::with_capacity(endpoints.len());
    for raw in endpoints {
        let raw = raw.trim();
        let (scheme, rest) = match raw.split_once("://") {
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                s @ ("http" | "https") => (if s == "https" { "https" } else { "http" }, rest),
                other => {
                    return Err(invalid(
                        "endpoints",
                        format!("{raw:?}: unsupported scheme {other:?}; use https:// or http://"),
                    ));
                }
            },
            None if tls_default => ("https", raw),
            None => ("http", raw),
        };
        let host_port = rest.strip_suffix('/').unwrap_or(rest);
        let valid = !host_port.is_empty()
            && !host_port.contains(['/', '@', '?', '#'])
            && !host_port.contains(char::is_whitespace)
            && host_port
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(invalid(
                "endpoints",
                format!(
                    "{raw:?} is not host:port or a URL like https://10.0.0.5:2379 (no path, no \
                     credentials: use etcd.username and etcd.password_file)"
                ),
            ));
        }
        out.push(format!("{scheme}://{host_port}"));
    }
    if out.iter().any(|u| u.starts_with("https://")) && out.iter().any(|u| u.starts_with("http://"))
    {
        return Err(invalid(
            "endpoints",
            "mixes http:// and https://; all members must use one scheme",
        ));
    }
    Ok(out)
}

fn read(option: &'static str, path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| invalid(option, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN ") {
        return Err(invalid(
            option,
            format!("{} holds no PEM block", path.display()),
        ));
    }
    Ok(bytes)
}

fn tls_options(options: &EtcdOptions) -> Result<TlsOptions> {
    let mut tls = TlsOptions::new();
    match &options.ca_file {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read("ca_file", ca)?)),
        None => tls = tls.with_enabled_roots(),
    }
    match (&options.cert_file, &options.key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("cert_file", cert)?,
                read("key_file", key)?,
            ));
        }
        (None, None) => {}
        (Some(_), None) => {
            return Err(invalid(
                "key_file",
                "etcd.cert_file is set without etcd.key_file",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "cert_file",
                "etcd.key_file is set without etcd.cert_file",
            ));
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn reason(options: &EtcdOptions) -> String {
        match resolve(options) {
            Err(Error::EtcdOption { option, reason }) => format!("{option}: {reason}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("accepted {options:?}"),
        }
    }

    #[test]
    fn endpoints_get_one_scheme() {
        let r = resolve(&EtcdOptions::new(["127.0.0.1:2379", "http://[::1]:2379/"])).unwrap();
        assert_eq!(r.urls, ["http://127.0.0.1:2379", "http://[::1]:2379"]);
        assert_eq!(r.display, "http://127.0.0.1:2379,http://[::1]:2379");
        for (bad, says) in [
            (vec![], "none given"),
            (vec!["127.0.0.1"], "not host:port"),
            (vec!["http://u:p@127.0.0.1:2379"], "no credentials"),
            (vec!["unix:///run/etcd.sock"], "unsupported scheme"),
            (vec!["127.0.0.1:2379/v3"], "no path"),
            (
                vec!["https://127.0.0.1:2379", "http://127.0.0.1:2380"],
                "one scheme",
            ),
        ] {
            let text = reason(&EtcdOptions::new(bad.clone()));
            assert!(text.contains(says), "{bad:?}: {text}");
        }
        let many: Vec<String> = (0..17).map(|n| format!("127.0.0.{n}:2379")).collect();
        assert!(reason(&EtcdOptions::new(many)).contains("at most 16"));
    }

    #[test]
    fn credentials_come_in_pairs_and_never_show() {
        let options = EtcdOptions {
            username: Some("epcheck".into()),
            password: Some("hunter2".into()),
            ..EtcdOptions::default()
        };
        assert!(resolve(&options).is_ok());
        assert!(!format!("{options:?}").contains("hunter2"));
        let text = reason(&EtcdOptions {
            password: None,
            ..options.clone()
        });
        assert!(text.contains("EPCHECK_ETCD_PASSWORD"), "{text}");
        let text = reason(&EtcdOptions {
            username: None,
            ..options
        });
        assert!(text.starts_with("username"), "{text}");
    }

    #[test]
    fn tls_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        std::fs::write(&pem, cert.cert.pem()).unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here").unwrap();

        // A CA file makes host:port https.
        let r = resolve(&EtcdOptions {
            ca_file: Some(pem.clone()),
            ..EtcdOptions::new(["127.0.0.1:2379"])
        })
        .unwrap();
        assert_eq!(r.urls, ["https://127.0.0.1:2379"]);
        let text = reason(&EtcdOptions {
            ca_file: Some(empty),
            ..EtcdOptions::new(["127.0.0.1:2379"])
        });
        assert!(text.contains("no PEM block"), "{text}");
        let text = reason(&EtcdOptions {
            ca_file: Some(dir.path().join("missing.pem")),
            ..EtcdOptions::new(["127.0.0.1:2379"])
        });
        assert!(text.contains("cannot read"), "{text}");
        let text = reason(&EtcdOptions {
            cert_file: Some(pem.clone()),
            ..EtcdOptions::new(["https://127.0.0.1:2379"])
        });
        assert!(text.contains("without etcd.key_file"), "{text}");
        let text = reason(&EtcdOptions {
            ca_file: Some(pem),
            ..EtcdOptions::new(["http://127.0.0.1:2379"])
        });
        assert!(text.contains("use https://"), "{text}");
    }
}
