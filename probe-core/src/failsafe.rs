//! The fail-safe (SPEC §5.4): when every probe fails at once, the likelier fault is epcheck's own
//! network, not every backend; writing would empty every Service.
//!
//! Two rules, both pure logic fed with probe results:
//!
//! 1. **Hold**: while the latest result of *every* probed target is a failure (and there are at
//!    least `min_targets` of them), or while the optional canary fails, nothing is written. Any
//!    success releases the hold.
//! 2. **Confirm removals**: a network that breaks does not fail every target in the same
//!    instant — targets are probed spread over the interval — so rule 1 alone would let the
//!    first targets to fail be removed one by one until the last. A target that went down is
//!    therefore only *removed* once some probe that started after its failures began has
//!    succeeded: proof that the checker can still reach something. With many targets such a
//!    success arrives within a fraction of the interval (usually before the target's own
//!    `fall` confirmations are done), so a real outage is written without a noticeable delay,
//!    while a checker-side outage is held from its first failure.
//!
//! Both rules apply only when the fail-safe is on (`failsafe.mode: hold`) and at least
//! `min_targets` targets are probed; with fewer, every transition is written at once. The
//! daemon feeds [`FailSafe`] as results arrive; a single round (`epcheck once`) asks
//! [`FailSafe::holds_after_round`], the same rule.

use tokio::time::Instant;

/// Fail-safe state over all probed targets.
#[derive(Debug)]
pub struct FailSafe {
    enabled: bool,
    min_targets: usize,
    /// Latest result per probed target: `None` before its first probe.
    latest: Vec<Option<bool>>,
    /// Targets whose latest result is a failure.
    failing: usize,
    /// Targets with at least one result.
    known: usize,
    /// Start time of the newest successful probe of any target.
    last_success_started: Option<Instant>,
    /// `Some(false)` while the canary fails.
    canary_ok: Option<bool>,
}

impl FailSafe {
    /// A fail-safe over `targets` probed targets.
    pub fn new(enabled: bool, min_targets: usize, targets: usize) -> Self {
        FailSafe {
            enabled,
            min_targets,
            latest: vec![None; targets],
            failing: 0,
            known: 0,
            last_success_started: None,
            canary_ok: None,
        }
    }

    /// Whether the rules apply at all (on, and enough targets).
    pub fn applies(&self) -> bool {
        self.enabled && self.latest.len() >= self.min_targets
    }

    /// Records the result of a probe of target `index` that started at `started`.
    pub fn observe(&mut self, index: usize, success: bool, started: Instant) {
        let Some(slot) = self.latest.get_mut(index) else {
            return;
        };
        match *slot {
            None => self.known += 1,
            Some(false) => self.failing -= 1,
            Some(true) => {}
        }
        if !success {
            self.failing += 1;
        }
        *slot = Some(success);
        if success && self.last_success_started.is_none_or(|t| started > t) {
            self.last_success_started = Some(started);
        }
    }

    /// Records a canary probe result.
    pub fn observe_canary(&mut self, success: bool) {
        self.canary_ok = Some(success);
    }

    /// Whether every write is held now.
    pub fn holds(&self) -> bool {
        if !self.enabled {
            return false;
        }
        if self.canary_ok == Some(false) {
            return true;
        }
        self.applies() && self.known > 0 && self.failing == self.known
    }

    /// Whether the canary is what holds.
    pub fn canary_failing(&self) -> bool {
        self.enabled && self.canary_ok == Some(false)
    }

    /// Rule 1 over one round of results (`once`, `plan`, `khcheck`): whether every write is
    /// held after probing each probed target once, `true` meaning up. Targets that are not
    /// probed (static membership) are left out by the caller.
    pub fn holds_after_round(
        enabled: bool,
        min_targets: usize,
        results: impl IntoIterator<Item = bool>,
    ) -> bool {
        let mut fs = FailSafe::new(enabled, min_targets, 0);
        let now = Instant::now();
        for up in results {
            fs.latest.push(None);
            let i = fs.latest.len() - 1;
            fs.observe(i, up, now);
        }
        fs.holds()
    }

    /// Whether a target whose failures began with a probe started at `failing_since` may be
    /// removed (rule 2).
    pub fn removal_confirmed(&self, failing_since: Instant) -> bool {
        !self.applies() || self.last_success_started.is_some_and(|t| t > failing_since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn every_target_failing_holds_and_one_success_releases() {
        let t0 = Instant::now();
        let mut fs = FailSafe::new(true, 3, 4);
        for i in 0..4 {
            fs.observe(i, true, at(t0, i as u64));
        }
        assert!(!fs.holds());
        for i in 0..3 {
            fs.observe(i, false, at(t0, 100 + i as u64));
            assert!(!fs.holds(), "target {i}: others still pass");
        }
        fs.observe(3, false, at(t0, 200));
        assert!(fs.holds());
        fs.observe(2, true, at(t0, 300));
        assert!(!fs.holds());
    }

    #[test]
    fn too_few_targets_or_off_never_holds() {
        let t0 = Instant::now();
        let mut few = FailSafe::new(true, 3, 2);
        let mut off = FailSafe::new(false, 3, 5);
        for i in 0..5 {
            few.observe(i, false, t0);
            off.observe(i, false, t0);
        }
        assert!(!few.holds());
        assert!(!off.holds());
        assert!(few.removal_confirmed(t0));
        assert!(off.removal_confirmed(t0));
    }

    #[test]
    fn first_round_all_failing_holds() {
        let t0 = Instant::now();
        let mut fs = FailSafe::new(true, 3, 3);
        fs.observe(0, false, t0);
        assert!(fs.holds(), "the only known result failed");
        fs.observe(1, false, t0);
        fs.observe(2, false, t0);
        assert!(fs.holds());
    }

    #[test]
    fn removal_waits_for_a_later_success() {
        let t0 = Instant::now();
        let mut fs = FailSafe::new(true, 3, 3);
        fs.observe(0, true, at(t0, 0));
        fs.observe(1, true, at(t0, 10));
        // Target 2's failures begin with a probe started at 50 ms.
        let failing_since = at(t0, 50);
        fs.observe(2, false, failing_since);
        assert!(!fs.removal_confirmed(failing_since), "no success since");
        // A success of a probe that started before the failure proves nothing.
        fs.observe(0, true, at(t0, 40));
        assert!(!fs.removal_confirmed(failing_since));
        fs.observe(1, true, at(t0, 60));
        assert!(fs.removal_confirmed(failing_since));
    }

    #[test]
    fn a_failing_canary_holds_even_with_passing_targets() {
        let t0 = Instant::now();
        let mut fs = FailSafe::new(true, 3, 1);
        fs.observe(0, true, t0);
        fs.observe_canary(false);
        assert!(fs.holds());
        assert!(fs.canary_failing());
        fs.observe_canary(true);
        assert!(!fs.holds());
    }

    #[test]
    fn one_round_holds_only_when_enough_targets_all_failed() {
        let holds =
            |enabled, min, r: &[bool]| FailSafe::holds_after_round(enabled, min, r.iter().copied());
        assert!(holds(true, 3, &[false, false, false]));
        assert!(
            !holds(true, 3, &[false, true, false]),
            "one success releases"
        );
        assert!(!holds(true, 4, &[false, false, false]), "too few targets");
        assert!(!holds(false, 1, &[false, false]), "off");
        assert!(
            !holds(true, 0, &[]),
            "nothing probed is not everything failing"
        );
    }
}
