//! The election's timing and identity, checked once.

use std::time::Duration;

use crate::error::Error;

/// client-go's `JitterFactor`: a candidate waits between `retry_period` and
/// `JITTER_FACTOR × retry_period` between attempts, and `renew_deadline` must exceed
/// `JITTER_FACTOR × retry_period` so that a leader gets at least one more try in time.
pub const JITTER_FACTOR: f64 = 1.2;

/// Default `lease_duration` (client-go's and epcheck's `leader_election.lease_duration`).
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// Default `renew_deadline`.
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);

/// Default `retry_period`.
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

/// The longest a release on shutdown may take (it is one conditional write); shutdown must
/// finish within a second or two (SPEC §5.5).
pub const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// How an elector behaves. Build one with [`ElectionConfig::new`] and adjust the fields; the
/// elector calls [`validate`](Self::validate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElectionConfig {
    /// How long candidates wait, on their own clock, after last seeing the lock change,
    /// before they take it over. Written into the Lease rounded *up* to whole seconds.
    pub lease_duration: Duration,
    /// A leader that has not renewed within this stops being leader, at once, even while a
    /// renewal is still in flight. Measured from the start of the last successful renewal.
    pub renew_deadline: Duration,
    /// Time between attempts (a candidate's are jittered up to [`JITTER_FACTOR`] ×).
    pub retry_period: Duration,
    /// This replica's identity (see [`identity`](super::identity())); must match the lock's.
    pub identity: String,
    /// On shutdown, release a lock this replica holds (empty holder, `leaseDurationSeconds:
    /// 1`), so another replica takes over within about one `retry_period`.
    pub release_on_cancel: bool,
}

impl ElectionConfig {
    /// The defaults (15 s, 10 s, 2 s, release on shutdown) for `identity`.
    pub fn new(identity: impl Into<String>) -> Self {
        Self {
            lease_duration: DEFAULT_LEASE_DURATION,
            renew_deadline: DEFAULT_RENEW_DEADLINE,
            retry_period: DEFAULT_RETRY_PERIOD,
            identity: identity.into(),
            release_on_cancel: true,
        }
    }

    /// Checks `lease_duration > renew_deadline > 1.2 × retry_period`, `retry_period > 0`, a
    /// non-empty identity and a lease duration that fits a Lease.
    ///
    /// # Errors
    ///
    /// [`Error::ElectionConfig`] naming the values.
    pub fn validate(&self) -> Result<(), Error> {
        let fail = |problem: String| Err(Error::ElectionConfig { problem });
        if self.identity.trim().is_empty() {
            return fail("the identity is empty".to_owned());
        }
        if self.retry_period.is_zero() {
            return fail("retry_period must be greater than 0".to_owned());
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if !(self.lease_duration > self.renew_deadline
            && self.renew_deadline.as_secs_f64() > JITTER_FACTOR * self.retry_period.as_secs_f64())
        {
            return fail(format!(
                "need lease_duration > renew_deadline > {JITTER_FACTOR} × retry_period; got {} > {} > {JITTER_FACTOR} × {} ms",
                ms(self.lease_duration),
                ms(self.renew_deadline),
                ms(self.retry_period)
            ));
        }
        if self.lease_duration > Duration::from_secs(i32::MAX as u64) {
            return fail(format!(
                "lease_duration {} s does not fit leaseDurationSeconds",
                self.lease_duration.as_secs()
            ));
        }
        Ok(())
    }

    /// `leaseDurationSeconds` to write: `lease_duration` rounded up to whole seconds (at
    /// least 1), so other replicas never wait *less* than this replica's `renew_deadline`.
    pub fn lease_duration_seconds(&self) -> i32 {
        let secs = self
            .lease_duration
            .as_secs()
            .saturating_add(u64::from(self.lease_duration.subsec_nanos() > 0));
        i32::try_from(secs.max(1)).unwrap_or(i32::MAX)
    }

    /// A candidate's wait for a uniform `unit` in `[0, 1]`: from `retry_period` to
    /// `JITTER_FACTOR × retry_period`.
    pub fn jittered_retry(&self, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.retry_period
            .mul_f64(1.0 + (JITTER_FACTOR - 1.0) * unit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn timings(lease: u64, renew: u64, retry: u64) -> ElectionConfig {
        ElectionConfig {
            lease_duration: Duration::from_millis(lease),
            renew_deadline: Duration::from_millis(renew),
            retry_period: Duration::from_millis(retry),
            ..ElectionConfig::new("pod-a_123abc")
        }
    }

    #[test]
    fn validation() {
        ElectionConfig::new("a").validate().unwrap();
        timings(1500, 1000, 200).validate().unwrap();
        timings(2000, 1000, 833).validate().unwrap();
        for bad in [
            timings(1000, 1000, 200),
            timings(900, 1000, 200),
            timings(2000, 1000, 834),
            timings(2000, 1200, 1000),
            timings(2000, 1000, 0),
        ] {
            let msg = bad.validate().unwrap_err().to_string();
            assert!(msg.starts_with("invalid leader election settings"), "{msg}");
        }
        let msg = timings(15000, 10000, 9000)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(msg.contains("15000 > 10000 > 1.2 × 9000 ms"), "{msg}");
        let mut empty = timings(1500, 1000, 200);
        empty.identity = " ".into();
        assert!(
            empty
                .validate()
                .unwrap_err()
                .to_string()
                .contains("identity")
        );
        let huge = timings(u64::MAX / 2, 1000, 200);
        assert!(huge.validate().is_err());
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(timings(1500, 1000, 200).lease_duration_seconds(), 2);
        assert_eq!(timings(2000, 1000, 200).lease_duration_seconds(), 2);
        assert_eq!(timings(300, 250, 200).lease_duration_seconds(), 1);
        assert_eq!(ElectionConfig::new("a").lease_duration_seconds(), 15);
    }

    #[test]
    fn jitter_stays_in_range() {
        let c = timings(15000, 10000, 2000);
        assert_eq!(c.jittered_retry(0.0), Duration::from_secs(2));
        assert_eq!(c.jittered_retry(1.0), Duration::from_millis(2400));
        assert_eq!(c.jittered_retry(7.0), Duration::from_millis(2400));
        assert_eq!(c.jittered_retry(f64::NAN), Duration::from_secs(2));
    }
}
