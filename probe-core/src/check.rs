//! How a target is probed: the [`Check`] and its parts.

use std::fmt;
use std::time::Duration;

use regex::bytes::Regex;

use crate::error::{Error, Result};

/// How to probe a target. One `Check` is usually shared (behind an `Arc`) by every target of a
/// service.
///
/// The enum is `#[non_exhaustive]`: more kinds of check can be added without a breaking change, so
/// `match`es outside this crate need a wildcard arm.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Check {
    /// Connect to `ip:port`, optionally send a string and expect a reply (see [`TcpCheck`]).
    Tcp(TcpCheck),
    /// Send an HTTP `GET` and expect a status (see [`HttpCheck`]).
    Http(HttpCheck),
    /// Run a check script (see [`ExecCheck`]).
    Exec(ExecCheck),
    /// No probe at all: the target is always up. This is what `port: 0` with no other probe means
    /// (keepalived's convention for static membership); `epcheck validate` warns about it.
    Static,
}

impl Check {
    /// A plain TCP connect check, the default.
    pub fn tcp() -> Self {
        Check::Tcp(TcpCheck::default())
    }

    /// A short lowercase name of the kind of check (`tcp`, `http`, `exec`, `static`), for logs
    /// and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Tcp(_) => "tcp",
            Check::Http(_) => "http",
            Check::Exec(_) => "exec",
            Check::Static => "static",
        }
    }
}

impl Default for Check {
    fn default() -> Self {
        Check::tcp()
    }
}

/// A TCP check (HAProxy's `tcp-check`, blackbox_exporter's `query_response`).
///
/// Without `send` and `expect` it is a plain connect check: up as soon as the handshake completed.
/// With `send`, the string is written after connecting. With `expect`, the reply is read until it
/// matches, the peer closes, 64 KiB have arrived without a match, or the timeout ends; only a
/// match is success. `expect` without `send` checks a banner (SSH, SMTP). The whole check,
/// connect included, must finish within the prober's timeout.
///
/// ```
/// use probe_core::{Expect, TcpCheck};
///
/// // Follow the Redis primary only.
/// let check = TcpCheck::send_expect(
///     Some("INFO replication\r\n".into()),
///     Some(Expect::parse("role:master")?),
/// )?;
/// assert!(check.expect.is_some());
/// # Ok::<(), probe_core::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TcpCheck {
    /// Bytes to write once connected (`"PING\r\n"`), if any.
    pub send: Option<String>,
    /// What the reply must contain or match, if anything.
    pub expect: Option<Expect>,
    /// For a plain connect check (no `send`, no `expect`): stop at the target's SYN-ACK, as
    /// HAProxy's layer-4 checks do. The final ACK of the handshake is held back
    /// (`TCP_QUICKACK` off) and the connection is reset before it goes, so the target's
    /// kernel answers the check and its application never accepts it: no accept, no wake-up,
    /// no log line on the backend, and on loopback none of the target's work is charged to
    /// the prober. What it proves is the same: something listens and answers. Linux only;
    /// elsewhere, and with `send` or `expect`, the handshake completes.
    pub half_open: bool,
}

impl TcpCheck {
    /// A plain connect check (no `send`, no `expect`).
    pub fn connect() -> Self {
        Self::default()
    }

    /// A plain connect check that stops at the SYN-ACK ([`half_open`](Self::half_open)).
    pub fn half_open() -> Self {
        Self {
            half_open: true,
            ..Self::default()
        }
    }

    /// A check that writes `send` (if given) and requires `expect` (if given).
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if `send` is the empty string: it would write nothing, which is
    /// almost certainly a configuration mistake (leave it out instead).
    pub fn send_expect(send: Option<String>, expect: Option<Expect>) -> Result<Self> {
        if send.as_deref() == Some("") {
            return Err(Error::InvalidCheck(
                "tcp check `send` is empty; remove it or give the bytes to write".into(),
            ));
        }
        Ok(Self {
            send,
            expect,
            half_open: false,
        })
    }
}

/// What a TCP check's reply must contain.
///
/// Replies are matched as bytes, so a binary or non-UTF-8 reply never breaks the check; the regex
/// is therefore a [`regex::bytes::Regex`] (same syntax as `regex::Regex`, Unicode-aware by
/// default, but it also runs on bytes that are not valid UTF-8 and never needs the reply copied
/// into a `String`).
///
/// [`Expect::parse`] decides from the configured string: `/.../` is a regex, anything else a
/// substring. A configuration format that prefers an explicit key (`expect_regex:`) can call
/// [`Expect::regex`] and [`Expect::contains`] directly; a literal that itself starts and ends with
/// `/` must go through [`Expect::contains`].
#[derive(Clone, Debug)]
pub enum Expect {
    /// The reply must contain this string (byte-wise, case-sensitive).
    Contains(String),
    /// The reply must match this regular expression somewhere (use `^`/`$` with `(?m)` to anchor
    /// to lines).
    Regex(Regex),
}

impl Expect {
    /// Parses the configured form: `"/pattern/"` is a regex, anything else a substring.
    ///
    /// ```
    /// use probe_core::Expect;
    ///
    /// assert!(matches!(Expect::parse("+PONG")?, Expect::Contains(_)));
    /// let re = Expect::parse(r"/role:(master|primary)/")?;
    /// assert!(re.matches(b"# Replication\r\nrole:master\r\n"));
    /// assert!(Expect::parse("/(/").is_err());
    /// # Ok::<(), probe_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] for an empty string or an empty regex (`//`), which would match
    /// anything; [`Error::BadRegex`] if the pattern does not compile.
    pub fn parse(spec: &str) -> Result<Self> {
        match spec
            .strip_prefix('/')
            .and_then(|rest| rest.strip_suffix('/'))
        {
            Some(pattern) => Self::regex(pattern),
            None => Self::contains(spec),
        }
    }

    /// A substring expectation.
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if `needle` is empty (it would match any reply, even none).
    pub fn contains(needle: impl Into<String>) -> Result<Self> {
        let needle = needle.into();
        if needle.is_empty() {
            return Err(Error::InvalidCheck(
                "tcp check `expect` is empty; remove it or give the text the reply must contain"
                    .into(),
            ));
        }
        Ok(Expect::Contains(needle))
    }

    /// A regex expectation (`pattern` without surrounding slashes).
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] for an empty pattern; [`Error::BadRegex`] if it does not compile.
    pub fn regex(pattern: &str) -> Result<Self> {
        if pattern.is_empty() {
            return Err(Error::InvalidCheck(
                "tcp check `expect` regex is empty; it would match any reply".into(),
            ));
        }
        Regex::new(pattern)
            .map(Expect::Regex)
            .map_err(|source| Error::BadRegex {
                pattern: pattern.to_owned(),
                source,
            })
    }

    /// Whether `reply` satisfies this expectation.
    pub fn matches(&self, reply: &[u8]) -> bool {
        self.matches_after(reply, 0)
    }

    /// Like [`matches`](Self::matches), for a reply that grows: `checked` bytes at its start were
    /// already looked at, so a substring search only has to cover what is new (plus an overlap of
    /// the needle's length). A regex is run over the whole reply again, since anchors and
    /// look-arounds can depend on any earlier byte.
    pub(crate) fn matches_after(&self, reply: &[u8], checked: usize) -> bool {
        match self {
            Expect::Contains(needle) => {
                let needle = needle.as_bytes();
                let start = checked.saturating_sub(needle.len().saturating_sub(1));
                reply
                    .get(start..)
                    .is_some_and(|tail| tail.windows(needle.len()).any(|w| w == needle))
            }
            Expect::Regex(re) => re.is_match(reply),
        }
    }
}

/// Two expectations are equal when they are the same kind with the same text (regexes compare by
/// pattern).
impl PartialEq for Expect {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Expect::Contains(a), Expect::Contains(b)) => a == b,
            (Expect::Regex(a), Expect::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// `"text"` for a substring, `/pattern/` for a regex: the form [`Expect::parse`] reads.
impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Contains(s) => write!(f, "{s:?}"),
            Expect::Regex(re) => write!(f, "/{}/", re.as_str()),
        }
    }
}

/// An HTTP check (Kubernetes' `httpGet` probe, HAProxy's `option httpchk`): connect to
/// `ip:port`, start TLS if `tls`, send `GET path` and require the response status to be one of
/// `expect_status`.
///
/// The request is HTTP/1.1 with `Host` (see [`host`](Self::host)), `User-Agent: epcheck/<version>`
/// and `Connection: close`, on a connection of its own (no pool, no keep-alive). Only the status
/// line and headers are read; the body is dropped unread, so a health page of any size costs the
/// same, and the connection is closed with a reset like a TCP probe's. The whole check (connect,
/// TLS handshake, response headers) must finish within the prober's timeout.
///
/// # TLS
///
/// With `tls`, the server's certificate is **not verified**, exactly as Kubernetes' own HTTPS
/// probes do (the kubelet sets `InsecureSkipVerify`). A health check asks "does this backend
/// answer", not "is this who it claims to be"; backends are addressed by IP, and their
/// certificates rarely carry IP SANs, so verification would fail for most real setups. The
/// handshake's signatures are still checked (the server must hold the key of the certificate it
/// shows), and the request carries no secret. Verification against a configured CA can be added
/// later as an option without a breaking change (the struct is `#[non_exhaustive]`).
///
/// Build it with [`HttpCheck::new`] (or [`Default`]) and the `with_*` methods, which validate
/// their input; a field changed by hand later is checked again when probing, and a bad value
/// makes the probe fail with a message rather than panic.
///
/// ```
/// use probe_core::{Check, HttpCheck};
///
/// let check = HttpCheck::new("/healthz")?
///     .with_expect_status([200, 204])?
///     .with_tls(true)
///     .with_host("redis-proxy.example.com")?;
/// assert!(check.status_matches(204));
/// assert!(!check.status_matches(503));
/// let check = Check::Http(check);
/// assert_eq!(check.kind(), "http");
/// # Ok::<(), probe_core::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HttpCheck {
    /// The request target: an absolute path, optionally with a query (`/healthz`,
    /// `/status?full=1`). Default `/`.
    pub path: String,
    /// The statuses that mean up. Default `[200]`; an empty list accepts any `2xx`.
    pub expect_status: Vec<u16>,
    /// Speak TLS (HTTPS) to the port. Default `false`.
    pub tls: bool,
    /// The name sent as the `Host` header and as the TLS server name (SNI), for backends that
    /// serve several virtual hosts. `None` (the default) sends the target's IP, and no SNI (TLS
    /// has no SNI for addresses). A port is appended to the `Host` header unless the target's
    /// port is the scheme's default (80, or 443 with `tls`), as curl does.
    pub host: Option<String>,
}

impl Default for HttpCheck {
    /// `GET /`, expecting 200, plain HTTP, `Host` = the target's address.
    fn default() -> Self {
        Self {
            path: "/".to_owned(),
            expect_status: vec![200],
            tls: false,
            host: None,
        }
    }
}

impl HttpCheck {
    /// A check of `GET path` expecting 200, without TLS.
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if `path` does not start with `/`, contains a fragment (`#`, never
    /// sent to a server), or has characters not allowed in a request line (spaces, controls).
    pub fn new(path: impl Into<String>) -> Result<Self> {
        let path = path.into();
        crate::http_probe::check_path(&path)?;
        Ok(Self {
            path,
            ..Self::default()
        })
    }

    /// Sets the statuses that mean up; an empty list accepts any `2xx`.
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if a status is outside `100..=599`.
    pub fn with_expect_status(mut self, statuses: impl Into<Vec<u16>>) -> Result<Self> {
        let statuses = statuses.into();
        if let Some(bad) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return Err(Error::InvalidCheck(format!(
                "http check `expect_status` has {bad}; HTTP statuses are 100 to 599"
            )));
        }
        self.expect_status = statuses;
        Ok(self)
    }

    /// Turns TLS (HTTPS) on or off. See [TLS](#tls) for why certificates are not verified.
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.tls = tls;
        self
    }

    /// Sets the `Host` header and TLS server name: a DNS name or an IP address, without a port.
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if `host` is neither a valid DNS name nor an IP address.
    pub fn with_host(mut self, host: impl Into<String>) -> Result<Self> {
        let host = host.into();
        crate::http_probe::check_host(&host)?;
        self.host = Some(host);
        Ok(self)
    }

    /// Whether a response with `status` means up: `status` is in
    /// [`expect_status`](Self::expect_status), or is a `2xx` when that list is empty.
    pub fn status_matches(&self, status: u16) -> bool {
        if self.expect_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect_status.contains(&status)
        }
    }

    /// Checks the fields as the constructors do (for a check whose fields were set by hand).
    ///
    /// # Errors
    /// The [`Error::InvalidCheck`] a constructor would have returned.
    pub fn validate(&self) -> Result<()> {
        crate::http_probe::check_path(&self.path)?;
        Self::default().with_expect_status(self.expect_status.clone())?;
        if let Some(host) = &self.host {
            crate::http_probe::check_host(host)?;
        }
        Ok(())
    }
}

/// An exec check (keepalived's `vrrp_script`, OpenShift's check scripts): run a program; exit
/// status 0 means up.
///
/// The program runs directly (no shell; use `["/bin/sh", "-c", "..."]` to get one) in its own
/// process group, with stdin from `/dev/null` and `EPCHECK_SERVICE`, `EPCHECK_TARGET`,
/// `EPCHECK_IP` and `EPCHECK_PORT` added to the environment. When `timeout` ends first, the whole
/// process group is killed with `SIGKILL` and the probe fails with a timeout. See
/// [`Prober`](crate::Prober) for details.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecCheck {
    /// Program and arguments (`argv`); the program is looked up in `PATH` if it has no `/`.
    pub command: Vec<String>,
    /// How long the program may run. This is the check's own timeout (the config's
    /// `probe.exec.timeout`), used instead of the prober's TCP timeout.
    pub timeout: Duration,
}

impl ExecCheck {
    /// An exec check of `command` (program first) with its own timeout.
    ///
    /// # Errors
    /// [`Error::InvalidCheck`] if `command` is empty, its program is the empty string, or
    /// `timeout` is zero.
    pub fn new(command: Vec<String>, timeout: Duration) -> Result<Self> {
        match command.first() {
            None => {
                return Err(Error::InvalidCheck(
                    "exec check has no command; give at least the program path".into(),
                ));
            }
            Some(program) if program.is_empty() => {
                return Err(Error::InvalidCheck(
                    "exec check's program (command[0]) is empty".into(),
                ));
            }
            Some(_) => {}
        }
        if timeout.is_zero() {
            return Err(Error::InvalidCheck(
                "exec check timeout is 0; give a positive number of milliseconds".into(),
            ));
        }
        Ok(Self { command, timeout })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parse_picks_regex_only_between_slashes() {
        let cases = [
            ("+PONG", "\"+PONG\""),
            ("/role:master/", "/role:master/"),
            ("/not a regex", "\"/not a regex\""),
            ("not a regex/", "\"not a regex/\""),
            ("/", "\"/\""),
        ];
        for (input, display) in cases {
            assert_eq!(
                Expect::parse(input).unwrap().to_string(),
                display,
                "{input}"
            );
        }
    }

    #[test]
    fn parse_rejects_empty_and_bad() {
        assert!(matches!(Expect::parse(""), Err(Error::InvalidCheck(_))));
        assert!(matches!(Expect::parse("//"), Err(Error::InvalidCheck(_))));
        assert!(matches!(
            Expect::parse("/[a-/"),
            Err(Error::BadRegex { .. })
        ));
    }

    #[test]
    fn contains_matches_bytes() {
        let e = Expect::contains("+PONG").unwrap();
        assert!(e.matches(b"+PONG\r\n"));
        assert!(e.matches(b"\xff\xfe+PONG"));
        assert!(!e.matches(b"+PON"));
        assert!(!e.matches(b""));
    }

    #[test]
    fn contains_finds_needle_split_across_reads() {
        let e = Expect::contains("role:master").unwrap();
        let reply = b"# Replication\r\nrole:master\r\n";
        // Pretend the first read ended in the middle of the needle.
        let split = reply.iter().position(|&b| b == b':').unwrap();
        assert!(!e.matches_after(&reply[..split], 0));
        assert!(e.matches_after(reply, split));
    }

    #[test]
    fn regex_runs_on_non_utf8() {
        let e = Expect::parse(r"/(?m)^role:master\r?$/").unwrap();
        assert!(e.matches(b"\xffx\r\nrole:master\r\n"));
        assert!(!e.matches(b"role:slave\r\n"));
    }

    #[test]
    fn expect_equality_by_text() {
        assert_eq!(Expect::parse("/a+/").unwrap(), Expect::regex("a+").unwrap());
        assert_ne!(Expect::parse("a+").unwrap(), Expect::regex("a+").unwrap());
    }

    #[test]
    fn tcp_check_rejects_empty_send() {
        assert!(TcpCheck::send_expect(Some(String::new()), None).is_err());
        assert_eq!(
            TcpCheck::send_expect(None, None).unwrap(),
            TcpCheck::connect()
        );
    }

    #[test]
    fn exec_check_validation() {
        let t = Duration::from_secs(1);
        assert!(ExecCheck::new(vec![], t).is_err());
        assert!(ExecCheck::new(vec![String::new()], t).is_err());
        assert!(ExecCheck::new(vec!["/bin/true".into()], Duration::ZERO).is_err());
        assert!(ExecCheck::new(vec!["/bin/true".into()], t).is_ok());
    }

    #[test]
    fn kinds() {
        assert_eq!(Check::default().kind(), "tcp");
        assert_eq!(Check::Static.kind(), "static");
        let exec = ExecCheck::new(vec!["x".into()], Duration::from_secs(1)).unwrap();
        assert_eq!(Check::Exec(exec).kind(), "exec");
        assert_eq!(Check::Http(HttpCheck::default()).kind(), "http");
    }
}
