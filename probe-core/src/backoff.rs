//! Exponential backoff with jitter: the one implementation in epcheck, used by the ApiServer
//! client's retries and conflict loop, the daemon's reconcile retries, webhooks and Kuberhealthy
//! reports.
//!
//! [`Backoff`] yields the waits between attempts: retry `n` (0-based) waits at most
//! `cap(n) = min(max_delay, base_delay × 2ⁿ)`, drawn in `[0, cap]` ([`Jitter::Full`]) or in
//! `[cap / 2, cap]` ([`Jitter::Equal`]), at most `max_attempts − 1` times; a server's
//! `Retry-After` replaces the jittered wait, capped at `max_retry_after`.
//!
//! Nothing here sleeps: callers sleep with `tokio::time`, so tests can pause time.

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How a wait is drawn below its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// Uniformly in `[0, cap]` ("full jitter"): spreads clients best.
    #[default]
    Full,
    /// Uniformly in `[cap / 2, cap]` ("equal jitter"): never much shorter than the cap.
    Equal,
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
    /// Where in `[0, cap]` a wait falls.
    pub jitter: Jitter,
}

impl RetryPolicy {
    /// For single requests to a server (the ApiServer client's default): 4 attempts, waits up to 200 ms, 400 ms, 800 ms (capped at 5 s),
    /// `Retry-After` honoured up to 10 s. A request that keeps failing gives up after about
    /// 1.4 s of waiting plus the requests themselves, so the daemon's loop can carry on.
    pub const REQUEST: Self = Self {
        max_attempts: 4,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(5),
        max_retry_after: Duration::from_secs(10),
        jitter: Jitter::Full,
    };

    /// For a read-modify-write loop that met a conflict (`409 Conflict` in a reconcile): 4 writes, waits up to 50 ms, 100 ms, 200 ms
    /// between a conflict and the next re-read.
    pub const CONFLICT: Self = Self {
        max_attempts: 4,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
        max_retry_after: Duration::from_secs(1),
        jitter: Jitter::Full,
    };

    /// No retry at all.
    pub const NONE: Self = Self {
        max_attempts: 1,
        base_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
        max_retry_after: Duration::ZERO,
        jitter: Jitter::Full,
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
/// use probe_core::backoff::{Backoff, RetryPolicy};
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
    /// jittered duration of at most `min(max_delay, base_delay × 2ⁿ)` ([`Backoff::delay`]).
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.retries.saturating_add(1) >= self.policy.max_attempts.max(1) {
            return None;
        }
        let n = self.retries;
        self.retries += 1;
        if let Some(after) = retry_after {
            return Some(after.min(self.policy.max_retry_after));
        }
        Some(self.delay(n))
    }

    /// A jittered wait before retry `n` (0-based), as [`Jitter`] says, without counting it
    /// against `max_attempts`: for callers that count attempts themselves.
    pub fn delay(&mut self, n: u32) -> Duration {
        let cap = self.cap(n);
        let unit = self.unit();
        match self.policy.jitter {
            Jitter::Full => cap.mul_f64(unit),
            Jitter::Equal => cap.mul_f64(0.5 + unit * 0.5),
        }
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

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_retry_after: Duration::ZERO,
            jitter: Jitter::Equal,
        };
        for seed in 0..200 {
            let mut b = Backoff::with_seed(policy, seed);
            for (n, full) in [(0u32, 500u128), (1, 1000), (2, 2000), (20, 60_000)] {
                let d = b.delay(n).as_millis();
                assert!(d >= full / 2 && d <= full, "retry {n}: {d} ms");
            }
            assert_eq!(b.retries(), 0, "delay() does not count");
        }
    }
}
