//! Redis connection options and their translation into a fred client configuration.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::config::{TlsConfig, TlsConnector};
use probe_core::tls::Verify;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// The key prefix when none is configured.
pub const DEFAULT_KEY_PREFIX: &str = "epcheck:";
/// The approximate length the events stream is trimmed to (`XADD … MAXLEN ~ N`).
pub const DEFAULT_EVENTS_MAX_LEN: u64 = 10_000;
/// How long the first connection may take (TCP and TLS handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one command may take before it fails with a timeout.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two reconnection attempts (the backoff starts at 100 ms and
/// doubles up to this).
pub const DEFAULT_RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// How to reach Redis. Build it from the config's `redis` section; `Default` is a local Redis
/// without password.
///
/// Explicit fields win over what the `address` URL carries: `username` and `password` when set,
/// `db` when not 0.
///
/// `Debug` shows neither the password nor credentials inside the address URL.
#[derive(Clone)]
pub struct RedisOptions {
    /// `host:port` (`redis.ipport`; `[v6]:port` for IPv6), or a URL
    /// `redis://[user[:password]@]host[:port][/db]`, `rediss://…` for TLS.
    pub address: String,
    /// The ACL user (`redis.username`); `None` for the default user.
    pub username: Option<String>,
    /// The password (`redis.password`, `password_file` or `EPCHECK_REDIS_PASSWORD`); never
    /// logged, scrubbed from error messages.
    pub password: Option<SecretString>,
    /// The database to `SELECT` after every (re)connection (`redis.db`).
    pub db: u8,
    /// Connect over TLS (`redis.tls`; also implied by a `rediss://` address).
    pub tls: bool,
    /// PEM file with the CA certificates to trust for TLS; `None` uses the system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Prefix of every key (`redis.key_prefix`), so several installations share a Redis.
    pub key_prefix: String,
    /// The events stream is trimmed to about this many entries.
    pub events_max_len: u64,
    /// Timeout of one connection attempt, handshakes included.
    pub connect_timeout: Duration,
    /// Timeout of one store call; while Redis is down calls fail at once instead.
    pub command_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max_delay: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            address: "127.0.0.1:6379".into(),
            username: None,
            password: None,
            db: 0,
            tls: false,
            tls_ca_file: None,
            key_prefix: DEFAULT_KEY_PREFIX.into(),
            events_max_len: DEFAULT_EVENTS_MAX_LEN,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            reconnect_max_delay: DEFAULT_RECONNECT_MAX_DELAY,
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("address", &without_credentials(self.address.trim()))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("tls", &self.tls)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("key_prefix", &self.key_prefix)
            .field("events_max_len", &self.events_max_len)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

impl RedisOptions {
    /// Defaults with this address.
    pub fn new(address: impl Into<String>) -> Self {
        RedisOptions {
            address: address.into(),
            ..RedisOptions::default()
        }
    }
}

/// The checked form of [`RedisOptions`].
pub(crate) struct Resolved {
    pub config: Config,
    /// `host:port`, safe to log.
    pub display: String,
    /// The effective password, for scrubbing error messages.
    pub password: Option<SecretString>,
}

pub(crate) fn resolve(options: &RedisOptions) -> Result<Resolved> {
    let raw = options.address.trim();
    let shown = without_credentials(raw);
    let invalid = |reason: String| Error::InvalidAddress {
        address: shown.clone(),
        reason,
    };
    if raw.is_empty() {
        return Err(invalid("it is empty".into()));
    }
    let (tls_scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
            "redis" => (false, rest),
            "rediss" => (true, rest),
            other => return Err(invalid(format!("unsupported scheme {other:?}"))),
        },
        None => (false, raw),
    };
    // fred builds its own TLS connector for `rediss://` from the process-wide rustls provider;
    // hand it a plain URL and add the connector made with ring below.
    let mut config = Config::from_url_centralized(&format!("redis://{rest}"))
        .map_err(|e| invalid(e.details().to_owned()))?;
    let display = match &config.server {
        ServerConfig::Centralized { server } => server.to_string(),
        _ => shown.clone(),
    };

    if options.username.is_some() {
        config.username.clone_from(&options.username);
    }
    let password = match &options.password {
        Some(p) => Some(p.clone()),
        None => config.password.take().map(SecretString::from),
    };
    config.password = password
        .as_ref()
        .map(|p| p.expose_secret().to_owned())
        .filter(|p| !p.is_empty());
    if options.db != 0 {
        config.database = Some(options.db);
    }
    if options.tls || tls_scheme {
        config.tls = Some(tls_config(options, &display)?);
    }
    if options.key_prefix.contains(char::is_whitespace) {
        return Err(Error::InvalidOption {
            option: "key_prefix",
            reason: format!("{:?} contains whitespace", options.key_prefix),
        });
    }
    for (option, value) in [
        ("connect_timeout", options.connect_timeout),
        ("command_timeout", options.command_timeout),
    ] {
        if value.is_zero() {
            return Err(Error::InvalidOption {
                option,
                reason: "must be more than 0".into(),
            });
        }
    }
    Ok(Resolved {
        config,
        display,
        password,
    })
}

/// The address with any `user:password@` part replaced, for messages.
fn without_credentials(raw: &str) -> String {
    match (raw.split_once("://"), raw.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &raw[at + 1..]),
        (None, Some(at)) => format!("***@{}", &raw[at + 1..]),
        _ => raw.to_owned(),
    }
}

fn tls_config(options: &RedisOptions, display: &str) -> Result<TlsConfig> {
    let tls_error = |reason: String| Error::Tls {
        address: display.to_owned(),
        reason,
    };
    let verify = match &options.tls_ca_file {
        Some(path) => {
            let shown = path.display();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_error(format!("cannot read the CA file {shown}: {e}")))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_error(format!("the CA file {shown} is not valid PEM: {e}")))?;
            let mut roots = rustls::RootCertStore::empty();
            let (added, ignored) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_error(format!(
                    "no usable CA certificate in {shown} ({ignored} ignored); give a PEM file \
                     with the CA that signed Redis's certificate"
                )));
            }
            Verify::Roots(Arc::new(roots))
        }
        None => Verify::System,
    };
    let config = probe_core::tls::client_config(&verify).map_err(|e| match e {
        probe_core::Error::NoSystemRoots => tls_error(
            "no system CA certificates found; install ca-certificates or set the Redis CA file"
                .into(),
        ),
        probe_core::Error::Tls(e) => {
            tls_error(format!("rustls refused the protocol versions: {e}"))
        }
        other => tls_error(other.to_string()),
    })?;
    Ok(TlsConnector::from(config).into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn resolved(address: &str) -> Resolved {
        resolve(&RedisOptions::new(address)).unwrap()
    }

    #[test]
    fn plain_host_port_and_urls() {
        let r = resolved("127.0.0.1:6390");
        assert_eq!(r.display, "127.0.0.1:6390");
        assert_eq!(r.config.database, None);
        assert!(r.config.tls.is_none());

        let r = resolved("redis://user:s3cret@127.0.0.1:6391/4");
        assert_eq!(r.display, "127.0.0.1:6391");
        assert_eq!(r.config.database, Some(4));
        assert_eq!(r.config.username.as_deref(), Some("user"));
        assert_eq!(r.password.unwrap().expose_secret(), "s3cret");

        assert_eq!(resolved("localhost").display, "localhost:6379");
        assert_eq!(resolved("[::1]:6390").display, "[::1]:6390");
        assert_eq!(
            resolved("redis://[2001:db8::5]").display,
            "[2001:db8::5]:6379"
        );
    }

    #[test]
    fn explicit_fields_win_over_the_url() {
        let options = RedisOptions {
            username: Some("epcheck".into()),
            password: Some(SecretString::from("explicit")),
            db: 2,
            ..RedisOptions::new("redis://u:p@127.0.0.1:6379/5")
        };
        let r = resolve(&options).unwrap();
        assert_eq!(r.config.username.as_deref(), Some("epcheck"));
        assert_eq!(r.config.password.as_deref(), Some("explicit"));
        assert_eq!(r.config.database, Some(2));

        let empty = RedisOptions {
            password: Some(SecretString::from("")),
            ..RedisOptions::new("127.0.0.1:6379")
        };
        assert_eq!(
            resolve(&empty).unwrap().config.password,
            None,
            "empty = no password"
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let options = RedisOptions {
            password: Some(SecretString::from("hunter2")),
            ..RedisOptions::new("redis://user:hunter3@127.0.0.1:6379/1")
        };
        let shown = format!("{options:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("hunter3"),
            "{shown}"
        );
        assert!(shown.contains("redis://***@127.0.0.1:6379/1"), "{shown}");
    }

    #[test]
    fn bad_addresses_do_not_echo_credentials() {
        for address in [
            "",
            "http://h:1",
            "redis://user:hunter2@:bad",
            "user:hunter2@h:99999",
        ] {
            let err = resolve(&RedisOptions::new(address)).err().unwrap();
            let text = format!("{err}");
            assert!(matches!(err, Error::InvalidAddress { .. }), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        let err = resolve(&RedisOptions {
            key_prefix: "a b".into(),
            ..RedisOptions::default()
        });
        assert!(matches!(
            err,
            Err(Error::InvalidOption {
                option: "key_prefix",
                ..
            })
        ));
        let err = resolve(&RedisOptions {
            command_timeout: Duration::ZERO,
            ..RedisOptions::default()
        });
        assert!(matches!(
            err,
            Err(Error::InvalidOption {
                option: "command_timeout",
                ..
            })
        ));
    }

    #[test]
    fn tls_with_a_missing_or_empty_ca_file_fails_clearly() {
        let options = RedisOptions {
            tls: true,
            tls_ca_file: Some("/nonexistent/ca.pem".into()),
            ..RedisOptions::default()
        };
        let text = resolve(&options).err().unwrap().to_string();
        assert!(
            text.contains("/nonexistent/ca.pem") && text.contains("127.0.0.1:6379"),
            "{text}"
        );

        let dir = std::env::temp_dir().join(format!("state-store-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let options = RedisOptions {
            tls_ca_file: Some(empty),
            ..RedisOptions::new("rediss://127.0.0.1:6380")
        };
        let text = resolve(&options).err().unwrap().to_string();
        assert!(text.contains("no usable CA certificate"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
