//! The bearer token and the CA, kept fresh (SPEC §4).
//!
//! Service-account tokens rotate, and so, more rarely, does the cluster CA. Like client-go,
//! the client re-reads both files on a schedule ([`RefreshSchedule`], once a minute by
//! default) and the token right after a `401`:
//!
//! * a token re-read that fails (file gone, empty, unreadable) keeps the last good token and
//!   logs a warning that names the file, never the token;
//! * a CA file whose contents changed and parse replaces the trust roots (the caller then
//!   rebuilds its connection pool); contents that do not parse keep the old roots, with one
//!   warning per distinct content.
//!
//! The decisions take the current [`Instant`] as an argument, so tests drive them without
//! sleeping.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::config::{ClientConfig, TokenSource};
use super::tls::{Trust, parse_ca_pem, read_ca_file};
use crate::error::Error;
use crate::token::{Token, read_token};

/// When the token and CA files are due for a re-read. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshSchedule {
    period: Duration,
    last: Instant,
}

impl RefreshSchedule {
    /// A schedule whose last read was at `now`.
    pub fn new(period: Duration, now: Instant) -> Self {
        Self { period, last: now }
    }

    /// Whether a re-read is due at `now`: at least one period has passed since the last one.
    pub fn is_due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.period
    }

    /// Records a re-read at `now`.
    pub fn mark(&mut self, now: Instant) {
        self.last = now;
    }

    /// The re-read period.
    pub fn period(&self) -> Duration {
        self.period
    }
}

/// The current token and CA, and where they come from.
pub(crate) struct Credentials {
    source: TokenSource,
    token: Option<Token>,
    token_path: Option<PathBuf>,
    header: Option<HeaderValue>,
    ca_file: Option<PathBuf>,
    ca_seen: Option<Vec<u8>>,
    insecure: bool,
    schedule: RefreshSchedule,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("token_path", &self.token_path)
            .field("ca_file", &self.ca_file)
            .field("schedule", &self.schedule)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Reads the token and the CA for the first time; both must work.
    pub(crate) fn load(config: &ClientConfig, now: Instant) -> Result<(Self, Trust), Error> {
        let mut creds = Self {
            source: config.token.clone(),
            token: None,
            token_path: None,
            header: None,
            ca_file: if config.insecure_skip_tls_verify {
                None
            } else {
                config.ca_file.clone()
            },
            ca_seen: None,
            insecure: config.insecure_skip_tls_verify,
            schedule: RefreshSchedule::new(config.refresh_period, now),
        };
        match &config.token {
            TokenSource::File { location, base_dir } => {
                let (path, token) = read_token(location, base_dir)?;
                creds.set_token(path, token)?;
            }
            TokenSource::Static(token) => {
                creds.header = Some(bearer_header(token)?);
                creds.token = Some(token.clone());
            }
            TokenSource::None => {}
        }
        let trust = if config.insecure_skip_tls_verify {
            tracing::warn!(
                url = %config.base_url,
                "insecure_skip_tls_verify is on: the ApiServer's certificate is not checked, so anyone on the network path can read the bearer token; use it only in a lab"
            );
            Trust::Insecure
        } else if let Some(path) = &creds.ca_file {
            let pem = read_ca_file(path)?;
            let roots = parse_ca_pem(path, &pem)?;
            creds.ca_seen = Some(pem);
            Trust::Roots(Arc::new(roots))
        } else {
            Trust::WebPki
        };
        Ok((creds, trust))
    }

    fn set_token(&mut self, path: PathBuf, token: Token) -> Result<bool, Error> {
        let header = bearer_header(&token).map_err(|_| Error::TokenInvalid {
            path: path.clone(),
            problem: "it cannot be sent in an HTTP header".to_owned(),
        })?;
        let changed = self
            .token
            .as_ref()
            .is_none_or(|old| old.expose_secret() != token.expose_secret());
        self.token = Some(token);
        self.header = Some(header);
        self.token_path = Some(path);
        Ok(changed)
    }

    /// The `Authorization` header value, marked sensitive.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        self.header.clone()
    }

    /// The token value, to redact it from server texts.
    pub(crate) fn secret(&self) -> Option<&str> {
        self.token.as_ref().map(Token::expose_secret)
    }

    /// The token file last read, for messages.
    pub(crate) fn token_path(&self) -> Option<&Path> {
        self.token_path.as_deref()
    }

    /// Where the token comes from.
    pub(crate) fn source(&self) -> &TokenSource {
        &self.source
    }

    /// The CA file in use, for messages.
    pub(crate) fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// Whether certificate checks are off.
    pub(crate) fn insecure(&self) -> bool {
        self.insecure
    }

    /// Re-reads the token and the CA when the schedule says so. Returns new trust roots
    /// when the CA file changed and parses (the caller rebuilds its connection pool).
    pub(crate) fn refresh_if_due(&mut self, now: Instant) -> Option<Trust> {
        if !self.schedule.is_due(now) {
            return None;
        }
        self.schedule.mark(now);
        self.reread_token();
        self.reread_ca()
    }

    /// Re-reads the token now (after a `401`), and restarts the schedule. Returns whether it
    /// changed.
    pub(crate) fn reread_token_now(&mut self, now: Instant) -> bool {
        self.schedule.mark(now);
        self.reread_token()
    }

    fn reread_token(&mut self) -> bool {
        let TokenSource::File { location, base_dir } = &self.source else {
            return false;
        };
        match read_token(location, base_dir).and_then(|(path, token)| self.set_token(path, token)) {
            Ok(changed) => {
                if changed {
                    tracing::info!(
                        path = %self.token_path.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default(),
                        "bearer token file changed; using the new token"
                    );
                }
                changed
            }
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    "re-reading the bearer token failed; keeping the last good token"
                );
                false
            }
        }
    }

    fn reread_ca(&mut self) -> Option<Trust> {
        let path = self.ca_file.clone()?;
        let pem = match read_ca_file(&path) {
            Ok(pem) => pem,
            Err(error) => {
                tracing::warn!(error = %error, "re-reading the CA file failed; keeping the current CA");
                return None;
            }
        };
        if self.ca_seen.as_deref() == Some(pem.as_slice()) {
            return None;
        }
        let parsed = parse_ca_pem(&path, &pem);
        // Remember the contents either way: a bad file is reported once, not every minute.
        self.ca_seen = Some(pem);
        match parsed {
            Ok(roots) => {
                tracing::info!(path = %path.display(), "CA file changed; reconnecting with the new CA");
                Some(Trust::Roots(Arc::new(roots)))
            }
            Err(error) => {
                tracing::warn!(error = %error, "the CA file changed but cannot be used; keeping the current CA");
                None
            }
        }
    }
}

/// `Bearer <token>`, marked sensitive so that hyper and any header dump leave it out.
fn bearer_header(token: &Token) -> Result<HeaderValue, Error> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).map_err(|_| {
            Error::ClientConfig {
                problem:
                    "the bearer token cannot be sent in an HTTP header (it must be visible ASCII)"
                        .to_owned(),
            }
        })?;
    value.set_sensitive(true);
    Ok(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::token::TokenLocation;

    fn config(dir: &Path) -> ClientConfig {
        let mut c = ClientConfig::from_url("http://127.0.0.1:1");
        c.token = TokenSource::File {
            location: TokenLocation::Path("token".into()),
            base_dir: dir.to_path_buf(),
        };
        c.ca_file = None;
        c
    }

    #[test]
    fn schedule() {
        let t0 = Instant::now();
        let mut s = RefreshSchedule::new(Duration::from_secs(60), t0);
        assert!(!s.is_due(t0));
        assert!(!s.is_due(t0 + Duration::from_secs(59)));
        assert!(s.is_due(t0 + Duration::from_secs(60)));
        s.mark(t0 + Duration::from_secs(60));
        assert!(!s.is_due(t0 + Duration::from_secs(61)));
        // A clock that goes backwards is never due.
        assert!(!s.is_due(t0));
        assert_eq!(s.period(), Duration::from_secs(60));
    }

    #[test]
    fn token_refresh_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "first\n").unwrap();
        let t0 = Instant::now();
        let (mut c, trust) = Credentials::load(&config(dir.path()), t0).unwrap();
        assert!(matches!(trust, Trust::WebPki));
        assert_eq!(c.secret(), Some("first"));
        let h = c.header().unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer first");
        assert_eq!(c.token_path(), Some(file.as_path()));

        // Not due yet: the new file is not seen.
        std::fs::write(&file, "second").unwrap();
        assert!(c.refresh_if_due(t0 + Duration::from_secs(30)).is_none());
        assert_eq!(c.secret(), Some("first"));
        // Due: it is.
        let t1 = t0 + Duration::from_secs(60);
        assert!(c.refresh_if_due(t1).is_none());
        assert_eq!(c.secret(), Some("second"));
        // Gone or empty: the last good one stays.
        std::fs::write(&file, "  \n").unwrap();
        assert!(c.refresh_if_due(t1 + Duration::from_secs(60)).is_none());
        assert_eq!(c.secret(), Some("second"));
        std::fs::remove_file(&file).unwrap();
        assert!(!c.reread_token_now(t1 + Duration::from_secs(61)));
        assert_eq!(c.secret(), Some("second"));
        // After a 401: read at once.
        std::fs::write(&file, "third").unwrap();
        assert!(c.reread_token_now(t1 + Duration::from_secs(62)));
        assert_eq!(c.header().unwrap().to_str().unwrap(), "Bearer third");
        assert!(!format!("{c:?}").contains("third"));
    }

    #[test]
    fn missing_token_file_fails_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let err = Credentials::load(&config(dir.path()), Instant::now()).unwrap_err();
        assert!(matches!(err, Error::TokenNotFound { .. }), "{err}");
    }

    #[test]
    fn static_and_no_token() {
        let mut c = ClientConfig::from_url("http://127.0.0.1:1");
        c.ca_file = None;
        c.token = TokenSource::Static(Token::new("abc"));
        let (mut creds, _) = Credentials::load(&c, Instant::now()).unwrap();
        assert_eq!(creds.header().unwrap().to_str().unwrap(), "Bearer abc");
        assert!(!creds.reread_token_now(Instant::now()));
        c.token = TokenSource::None;
        let (creds, _) = Credentials::load(&c, Instant::now()).unwrap();
        assert!(creds.header().is_none());
        c.token = TokenSource::Static(Token::new("a\nb"));
        assert!(Credentials::load(&c, Instant::now()).is_err());
    }

    #[test]
    fn bad_ca_fails_at_load_and_is_kept_on_refresh() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, "garbage").unwrap();
        let mut c = config(dir.path());
        c.ca_file = Some(ca.clone());
        let err = Credentials::load(&c, Instant::now())
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.crt"), "{err}");
        // Insecure ignores the CA file.
        c.insecure_skip_tls_verify = true;
        let (mut creds, trust) = Credentials::load(&c, Instant::now()).unwrap();
        assert!(matches!(trust, Trust::Insecure));
        assert!(creds.insecure());
        assert!(creds.ca_file().is_none());
        assert!(creds.reread_ca().is_none());
    }
}
