//! When to retry a request, and how long to wait (SPEC §5.5).
//!
//! * [`classify`] decides from an error alone (pure): `429`, `5xx`, timeouts and refused or
//!   dropped connections are [transient](RetryDecision::Backoff); `409 Conflict` means
//!   [re-read and retry](RetryDecision::Reread), which the reconcile does; `401` means
//!   [re-read the token](RetryDecision::Reauthenticate) and retry once; every other `4xx`,
//!   TLS failures and configuration errors are [final](RetryDecision::Fail).
//! * [`Backoff`] (probe-core's, the workspace's one backoff) yields the waits: exponential with
//!   full jitter (a uniformly random wait between zero and `min(max_delay, base_delay × 2ⁿ)`),
//!   at most `max_attempts − 1` of them; a server's `Retry-After` replaces the jittered wait,
//!   capped at `max_retry_after`.
//!
//! Nothing here sleeps: callers sleep with `tokio::time`, so tests can pause time.

use std::time::Duration;

pub use probe_core::backoff::{Backoff, Jitter, RetryPolicy};

use super::error::{ApiErrorKind, TransportKind};
use crate::error::Error;

/// What to do after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// A transient failure: wait (at least `retry_after`, when the server said so) and send
    /// the same request again.
    Backoff {
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The object changed since it was read (`409 Conflict`): read it again, recompute the
    /// write, and retry.
    Reread,
    /// The token was refused (`401`): re-read the token file and retry once.
    Reauthenticate,
    /// Retrying cannot help.
    Fail,
}

/// Classifies an error. Pure.
pub fn classify(error: &Error) -> RetryDecision {
    match error {
        Error::Api(api) => match api.kind() {
            ApiErrorKind::TooManyRequests | ApiErrorKind::ServerError => RetryDecision::Backoff {
                retry_after: api.retry_after,
            },
            ApiErrorKind::Conflict => RetryDecision::Reread,
            ApiErrorKind::Unauthorized => RetryDecision::Reauthenticate,
            _ => RetryDecision::Fail,
        },
        Error::Transport { kind, .. } => match kind {
            TransportKind::ConnectTimeout
            | TransportKind::Timeout
            | TransportKind::ConnectionRefused
            | TransportKind::ConnectionDropped
            | TransportKind::Dns => RetryDecision::Backoff { retry_after: None },
            // A certificate does not fix itself within seconds; the CA file is re-read on
            // its own schedule.
            TransportKind::Tls | TransportKind::Other => RetryDecision::Fail,
        },
        _ => RetryDecision::Fail,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::client::ApiError;
    use http::HeaderMap;

    fn api(code: u16, reason: &str) -> Error {
        let body = format!(r#"{{"kind":"Status","code":{code},"reason":"{reason}"}}"#);
        Error::Api(Box::new(ApiError::from_response(
            "GET",
            "/p",
            code,
            &HeaderMap::new(),
            body.as_bytes(),
        )))
    }

    fn transport(kind: TransportKind) -> Error {
        Error::Transport {
            method: "GET".into(),
            url: "http://127.0.0.1:1/".into(),
            kind,
            hint: String::new(),
            source: None,
        }
    }

    #[test]
    fn classification() {
        assert_eq!(
            classify(&api(500, "InternalError")),
            RetryDecision::Backoff { retry_after: None }
        );
        assert_eq!(
            classify(&api(503, "ServiceUnavailable")),
            RetryDecision::Backoff { retry_after: None }
        );
        assert!(matches!(
            classify(&api(429, "TooManyRequests")),
            RetryDecision::Backoff { .. }
        ));
        assert_eq!(classify(&api(409, "Conflict")), RetryDecision::Reread);
        assert_eq!(classify(&api(409, "AlreadyExists")), RetryDecision::Fail);
        assert_eq!(
            classify(&api(401, "Unauthorized")),
            RetryDecision::Reauthenticate
        );
        for code in [400, 403, 404, 405, 410, 415, 422] {
            assert_eq!(classify(&api(code, "")), RetryDecision::Fail, "{code}");
        }
        for kind in [
            TransportKind::Timeout,
            TransportKind::ConnectTimeout,
            TransportKind::ConnectionRefused,
            TransportKind::ConnectionDropped,
        ] {
            assert!(matches!(
                classify(&transport(kind)),
                RetryDecision::Backoff { .. }
            ));
        }
        assert_eq!(
            classify(&transport(TransportKind::Tls)),
            RetryDecision::Fail
        );
        let config = Error::ClientConfig {
            problem: "x".into(),
        };
        assert_eq!(classify(&config), RetryDecision::Fail);
    }

    #[test]
    fn retry_after_is_carried() {
        let mut e = api(429, "TooManyRequests");
        if let Error::Api(a) = &mut e {
            a.retry_after = Some(Duration::from_secs(2));
        }
        assert_eq!(
            classify(&e),
            RetryDecision::Backoff {
                retry_after: Some(Duration::from_secs(2))
            }
        );
    }
}
