//! The result of one probe.

use std::fmt;
use std::io;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// The result of probing one target once.
///
/// Serialized for JSON output as
/// `{"up": false, "latency_ms": 0.412, "error": {"kind": "refused", "message": "connection refused"}}`
/// (`error` is left out when the probe succeeded).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeOutcome {
    /// Whether the target passed the check.
    pub up: bool,
    /// Time from the start of the probe to its result (connect, or connect + reply, or the
    /// script's run time; the timeout itself when it timed out).
    #[serde(rename = "latency_ms", serialize_with = "as_millis_f64")]
    pub latency: Duration,
    /// Why the probe failed; `None` when `up`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProbeError>,
}

impl ProbeOutcome {
    /// A success that took `latency`.
    pub fn up(latency: Duration) -> Self {
        Self {
            up: true,
            latency,
            error: None,
        }
    }

    /// A failure that took `latency`.
    pub fn down(latency: Duration, error: ProbeError) -> Self {
        Self {
            up: false,
            latency,
            error: Some(error),
        }
    }

    /// The kind of failure, `None` for a success.
    pub fn failure_kind(&self) -> Option<FailureKind> {
        self.error.as_ref().map(|e| e.kind)
    }
}

fn as_millis_f64<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Why a probe failed: a [`FailureKind`] for metrics and decisions, and a message for people.
///
/// Displays as its message (`connection refused`, `timed out after 3000 ms`,
/// `exit status 1: redis not ready`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeError {
    /// The class of failure.
    pub kind: FailureKind,
    /// A short human-readable description, without the target (callers log the target next to
    /// it).
    pub message: String,
}

impl ProbeError {
    /// An error of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A [`FailureKind::Timeout`] saying `timed out after N ms`.
    pub fn timeout(after: Duration) -> Self {
        Self::new(
            FailureKind::Timeout,
            format!("timed out after {} ms", after.as_millis()),
        )
    }

    /// Classifies an error from `connect(2)`: refused, unreachable (no route, network down or
    /// unreachable, address not available), a kernel timeout, or other.
    pub fn from_connect(e: &io::Error) -> Self {
        use io::ErrorKind as K;
        let (kind, message) = match e.kind() {
            K::ConnectionRefused => (FailureKind::Refused, "connection refused"),
            K::HostUnreachable => (FailureKind::Unreachable, "no route to host"),
            K::NetworkUnreachable => (FailureKind::Unreachable, "network unreachable"),
            K::NetworkDown => (FailureKind::Unreachable, "network is down"),
            K::AddrNotAvailable => (FailureKind::Unreachable, "address not available"),
            K::TimedOut => (FailureKind::Timeout, "connection timed out in the kernel"),
            _ if is_host_down(e) => (FailureKind::Unreachable, "host is down"),
            _ => return Self::new(FailureKind::Other, e.to_string()),
        };
        Self::new(kind, message)
    }
}

#[cfg(unix)]
fn is_host_down(e: &io::Error) -> bool {
    e.raw_os_error() == Some(nix::errno::Errno::EHOSTDOWN as i32)
}

#[cfg(not(unix))]
fn is_host_down(_: &io::Error) -> bool {
    false
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProbeError {}

/// The class of a probe failure (SPEC §5.1: refused, timeout, unreachable, other; plus two that
/// tell a bad answer from no answer).
///
/// Serialized in snake_case (`"unexpected_reply"`), the same text as [`FailureKind::as_str`], which
/// is meant for metric labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// The target actively refused the connection (`RST` to our `SYN`): the host is up, nothing
    /// listens on the port.
    Refused,
    /// No answer within the timeout (a dead host, a filtering firewall, a hung script).
    Timeout,
    /// The network said the address cannot be reached (`EHOSTUNREACH`, `ENETUNREACH`,
    /// `EADDRNOTAVAIL`, `EHOSTDOWN`).
    Unreachable,
    /// Connected, but the answer was wrong: the reply did not satisfy `expect` before the peer
    /// closed or the read limit was reached, an HTTP status not in `expect_status`, or a reply
    /// that is not HTTP at all.
    UnexpectedReply,
    /// An exec check ran and exited with a non-zero status or was killed by a signal.
    ExitStatus,
    /// Anything else (a reset, an exec program that cannot be started, out of file descriptors).
    Other,
}

impl FailureKind {
    /// Every kind, for pre-creating metric series.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::Unreachable,
        FailureKind::UnexpectedReply,
        FailureKind::ExitStatus,
        FailureKind::Other,
    ];

    /// The snake_case name (`refused`, `timeout`, `unreachable`, `unexpected_reply`,
    /// `exit_status`, `other`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::Unreachable => "unreachable",
            FailureKind::UnexpectedReply => "unexpected_reply",
            FailureKind::ExitStatus => "exit_status",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn connect_errors_are_classified() {
        let cases = [
            (
                io::ErrorKind::ConnectionRefused,
                FailureKind::Refused,
                "connection refused",
            ),
            (
                io::ErrorKind::HostUnreachable,
                FailureKind::Unreachable,
                "no route to host",
            ),
            (
                io::ErrorKind::NetworkUnreachable,
                FailureKind::Unreachable,
                "network unreachable",
            ),
            (
                io::ErrorKind::AddrNotAvailable,
                FailureKind::Unreachable,
                "address not available",
            ),
            (
                io::ErrorKind::TimedOut,
                FailureKind::Timeout,
                "connection timed out in the kernel",
            ),
        ];
        for (io_kind, kind, message) in cases {
            let e = ProbeError::from_connect(&io::Error::from(io_kind));
            assert_eq!((e.kind, e.message.as_str()), (kind, message), "{io_kind:?}");
        }
        let other = ProbeError::from_connect(&io::Error::other("boom"));
        assert_eq!(
            (other.kind, other.message.as_str()),
            (FailureKind::Other, "boom")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn raw_errnos_are_classified() {
        // EHOSTUNREACH = 113, ENETUNREACH = 101, ECONNREFUSED = 111, EHOSTDOWN = 112 on Linux.
        let kind = |errno| ProbeError::from_connect(&io::Error::from_raw_os_error(errno)).kind;
        assert_eq!(kind(113), FailureKind::Unreachable);
        assert_eq!(kind(101), FailureKind::Unreachable);
        assert_eq!(kind(111), FailureKind::Refused);
        assert_eq!(kind(112), FailureKind::Unreachable);
    }

    #[test]
    fn timeout_message() {
        assert_eq!(
            ProbeError::timeout(Duration::from_secs(3)).to_string(),
            "timed out after 3000 ms"
        );
    }

    #[test]
    fn serializes_for_json() {
        let up = ProbeOutcome::up(Duration::from_micros(1500));
        assert_eq!(
            serde_json::to_string(&up).unwrap(),
            r#"{"up":true,"latency_ms":1.5}"#
        );
        let down = ProbeOutcome::down(
            Duration::from_millis(2),
            ProbeError::new(FailureKind::UnexpectedReply, "no match"),
        );
        assert_eq!(
            serde_json::to_value(&down).unwrap(),
            serde_json::json!({
                "up": false,
                "latency_ms": 2.0,
                "error": {"kind": "unexpected_reply", "message": "no match"}
            })
        );
        for kind in FailureKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
    }
}
