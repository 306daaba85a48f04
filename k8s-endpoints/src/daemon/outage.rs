//! Logs that follow the ApiServer's state, not every failed request: while the ApiServer is
//! unavailable (unreachable, timing out, 5xx, 429), every service's reconcile fails and is
//! retried with backoff. Logging each of those would write dozens of lines a second with a
//! hundred services, hiding everything else. Instead the outage is one line when it starts, a
//! summary once a minute while it lasts, and one line when the ApiServer answers again; the
//! individual failures go to debug.
//!
//! [`ApiOutage`] is the bookkeeping only: it takes the time as an input and says what to log,
//! so the rule is tested without sleeping.
//!
//! While an outage lasts, requests are budgeted as well (see the engine's `start_due`): one
//! reconcile at a time tests the ApiServer, about once a second, each with a single attempt;
//! the other services wait behind it. When it answers, every waiting service is due at once,
//! whatever its own backoff had grown to.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

/// How often a lasting outage is summarised.
pub(super) const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// What the caller should log after telling [`ApiOutage`] about a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum OutageLog {
    /// Nothing beyond a debug line.
    Quiet,
    /// The first failure of an outage.
    Started,
    /// A periodic summary of a lasting outage.
    Summary {
        /// Since the outage started.
        lasted: Duration,
        /// Reconciles that failed since it started.
        failures: u64,
        /// Services whose reconcile failed since it started.
        services: usize,
    },
    /// The first success after an outage.
    Ended {
        /// How long it lasted.
        lasted: Duration,
        /// Reconciles that failed during it.
        failures: u64,
    },
}

/// The ApiServer's availability as the reconciles see it.
#[derive(Debug, Default)]
pub(super) struct ApiOutage {
    /// When the current outage started and when it was last logged; `None` when none.
    current: Option<(Instant, Instant)>,
    failures: u64,
    services: BTreeSet<String>,
}

impl ApiOutage {
    /// Whether the ApiServer is unavailable now (the last reconcile found it so).
    pub(super) fn is_active(&self) -> bool {
        self.current.is_some()
    }

    /// A reconcile of `service` failed because the ApiServer is unavailable.
    pub(super) fn failed(&mut self, now: Instant, service: &str) -> OutageLog {
        self.failures += 1;
        if !self.services.contains(service) {
            self.services.insert(service.to_owned());
        }
        match &mut self.current {
            None => {
                self.current = Some((now, now));
                OutageLog::Started
            }
            Some((since, logged)) if now.duration_since(*logged) >= SUMMARY_EVERY => {
                *logged = now;
                OutageLog::Summary {
                    lasted: now.duration_since(*since),
                    failures: self.failures,
                    services: self.services.len(),
                }
            }
            Some(_) => OutageLog::Quiet,
        }
    }

    /// A reconcile succeeded: the ApiServer answers.
    pub(super) fn succeeded(&mut self, now: Instant) -> OutageLog {
        let Some((since, _)) = self.current.take() else {
            return OutageLog::Quiet;
        };
        let failures = std::mem::take(&mut self.failures);
        self.services.clear();
        OutageLog::Ended {
            lasted: now.duration_since(since),
            failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_to_start_one_a_minute_one_to_end() {
        let t0 = Instant::now();
        let mut o = ApiOutage::default();
        assert_eq!(
            o.succeeded(t0),
            OutageLog::Quiet,
            "no outage, nothing to end"
        );
        assert_eq!(o.failed(t0, "a"), OutageLog::Started);
        // A hundred services failing over and over within the minute: quiet.
        for i in 0..1000u64 {
            let at = t0 + Duration::from_millis(i * 50);
            assert_eq!(o.failed(at, &format!("svc-{}", i % 100)), OutageLog::Quiet);
        }
        let minute = t0 + SUMMARY_EVERY;
        assert_eq!(
            o.failed(minute, "a"),
            OutageLog::Summary {
                lasted: SUMMARY_EVERY,
                failures: 1002,
                services: 101,
            }
        );
        assert_eq!(
            o.failed(minute + Duration::from_secs(59), "a"),
            OutageLog::Quiet
        );
        assert!(matches!(
            o.failed(minute + SUMMARY_EVERY, "a"),
            OutageLog::Summary { .. }
        ));
        let back = minute + SUMMARY_EVERY + Duration::from_secs(5);
        assert_eq!(
            o.succeeded(back),
            OutageLog::Ended {
                lasted: back - t0,
                failures: 1004,
            }
        );
        assert_eq!(o.succeeded(back), OutageLog::Quiet, "the outage is over");
        // The next outage starts afresh.
        assert_eq!(o.failed(back, "b"), OutageLog::Started);
    }
}
