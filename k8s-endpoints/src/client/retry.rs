//! When to retry a request, and how long to wait (SPEC §5.5).
//!
//! * [`classify`] decides from an error alone (pure): `429`, `5xx`, timeouts and refused or
//!   dropped connections are [transient](RetryDecision::Backoff); `409 Conflict` means
//!   [re-read and retry](RetryDecision::Reread), which the reconcile does; `401` means
//!   [re-read the token](RetryDecision::Reauthenticate) and retry once; every other `4xx`,
//!   TLS failures and configuration errors are [final](RetryDecision::Fail).
//! * [`Backoff`] yields the waits: exponential with full jitter (a uniformly random wait
//!   between zero and `min(max_delay, base_delay × 2ⁿ)`), at most `max_attempts − 1` of them;
//!   a server's `Retry-After` replaces the jittered wait, capped at `max_retry_after`.
//!
//! Nothing here sleeps: callers sleep with `tokio::time`, so tests can pause time.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

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

/// The bounds of [`Backoff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts, the first included (so `max_attempts − 1` retries). `1` disables
    /// retrying; `0` is read as `1`.
    pub max_attempts: u32,
    /// The cap of the first wait; doubled for each further retry.
    pub base_delay: Duration,
    /// The largest cap of a jittered wait.
    pub max_delay: Duration,
    /// The largest `Retry-After` honoured; a longer one is cut to this.
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    /// For single requests: 4 attempts, waits up to 200 ms, 400 ms, 800 ms (capped at 5 s),
    /// `Retry-After` honoured up to 10 s. A request that keeps failing gives up after about
    /// 1.4 s of waiting plus the requests themselves, so the daemon's loop can carry on.
    pub const REQUEST: Self = Self {
        max_attempts: 4,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        max_retry_after: Duration::from_secs(10),
    };

    /// For `409 Conflict` in a reconcile: 4 writes, waits up to 50 ms, 100 ms, 200 ms
    /// between a conflict and the next re-read.
    pub const CONFLICT: Self = Self {
        max_attempts: 4,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(1),
    };

    /// No retry at all.
    pub const NONE: Self = Self {
        max_attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        max_retry_after: Duration::ZERO,
    };
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::REQUEST
    }
}

/// The waits between attempts: an iterator of at most `max_attempts − 1` durations.
///
/// ```
/// use std::time::Duration;
/// use k8s_endpoints::client::{Backoff, RetryPolicy};
///
/// let waits: Vec<Duration> = Backoff::with_seed(RetryPolicy::REQUEST, 7).collect();
/// assert_eq!(waits.len(), 3);
/// assert!(waits[2] <= Duration::from_millis(800));
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    retries: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff with a random seed.
    pub fn new(policy: RetryPolicy) -> Self {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self::with_seed(policy, seed)
    }

    /// A backoff with a fixed seed, for tests.
    pub fn with_seed(policy: RetryPolicy, seed: u64) -> Self {
        Self {
            policy,
            retries: 0,
            rng: seed,
        }
    }

    /// How many waits have been handed out.
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// The next wait, or `None` when the attempts are used up. With `retry_after` (the
    /// server's `Retry-After`) the wait is that, capped at `max_retry_after`; otherwise a
    /// uniformly random duration in `[0, min(max_delay, base_delay × 2ⁿ)]`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries.saturating_add(1) >= self.policy.max_attempts.max(1) {
            return None;
        }
        let n = self.retries;
        self.retries += 1;
        if let Some(after) = retry_after {
            return Some(after.min(self.policy.max_retry_after));
        }
        let cap = self
            .policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(n))
            .min(self.policy.max_delay);
        Some(cap.mul_f64(self.unit()))
    }

    /// The cap of the wait before retry `n` (0-based), without jitter.
    pub fn cap(&self, n: u32) -> Duration {
        self.policy
            .base_delay
            .saturating_mul(2u32.saturating_pow(n))
            .min(self.policy.max_delay)
    }

    /// A uniform number in `[0, 1]` (splitmix64).
    fn unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // 53 random bits, as an f64 in [0, 1].
        (z >> 11) as f64 / ((1u64 << 53) - 1) as f64
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.next_delay(None)
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

    #[test]
    fn bounded_attempts_and_delays() {
        for seed in 0..200 {
            let waits: Vec<Duration> = Backoff::with_seed(RetryPolicy::REQUEST, seed).collect();
            assert_eq!(waits.len(), 3);
            for (n, w) in waits.iter().enumerate() {
                assert!(
                    *w <= Duration::from_millis(200) * 2u32.pow(n as u32),
                    "{w:?}"
                );
            }
        }
        let b = Backoff::new(RetryPolicy::REQUEST);
        assert_eq!(b.cap(0), Duration::from_millis(200));
        assert_eq!(b.cap(2), Duration::from_millis(800));
        assert_eq!(b.cap(10), Duration::from_secs(5));
        assert_eq!(b.cap(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn jitter_spreads() {
        let waits: Vec<Duration> = (0..100)
            .filter_map(|seed| Backoff::with_seed(RetryPolicy::REQUEST, seed).next())
            .collect();
        let min = waits.iter().min().unwrap();
        let max = waits.iter().max().unwrap();
        assert!(*min < Duration::from_millis(40), "{min:?}");
        assert!(*max > Duration::from_millis(160), "{max:?}");
    }

    #[test]
    fn retry_after_replaces_jitter_and_is_capped() {
        let mut b = Backoff::with_seed(RetryPolicy::REQUEST, 1);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(3600))),
            Some(Duration::from_secs(10))
        );
        assert!(b.next_delay(None).is_some());
        assert_eq!(b.next_delay(Some(Duration::from_secs(1))), None);
        assert_eq!(b.retries(), 3);
    }

    #[test]
    fn no_retry_policies() {
        assert_eq!(Backoff::new(RetryPolicy::NONE).count(), 0);
        let zero = RetryPolicy {
            max_attempts: 0,
            ..RetryPolicy::REQUEST
        };
        assert_eq!(Backoff::new(zero).count(), 0);
        assert_eq!(Backoff::new(RetryPolicy::CONFLICT).count(), 3);
    }
}
