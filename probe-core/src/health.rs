//! The rise/fall health state machine (SPEC §5.2), as pure logic.
//!
//! [`HealthTracker`] never reads a clock: every observation comes with the time it was made, so the
//! scheduler decides what "now" is and tests need no sleeping.

use std::fmt;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// The health of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not probed yet (and nothing restored from the store).
    #[default]
    Unknown,
    /// Passing: the target belongs in the Endpoints' ready addresses.
    Up,
    /// Failing.
    Down,
}

impl Health {
    /// `unknown`, `up` or `down`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of [`Health`], returned by [`HealthTracker::observe`]. Every transition is an event:
/// logged, counted, stored and notified by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Health,
    /// The state after.
    pub to: Health,
    /// When the deciding observation was made.
    pub at: Instant,
}

/// Turns a target's probe results into its [`Health`], with rise/fall thresholds so that one lost
/// packet does not flap a Service.
///
/// - [`Unknown`](Health::Unknown): the first result decides at once (no rise/fall wait on a cold
///   start).
/// - [`Down`](Health::Down) → [`Up`](Health::Up) after `rise` consecutive successes.
/// - [`Up`](Health::Up) → [`Down`](Health::Down) after `fall` consecutive failures.
/// - A contrary result resets the other counter: `up, fail, ok, fail, fail` with `fall = 3` stays
///   up (unlike HAProxy, whose counter is not strictly consecutive).
///
/// `rise` and `fall` of 0 are treated as 1 (the config layer should reject them first).
///
/// ```
/// use probe_core::{Health, HealthTracker};
/// use tokio::time::Instant;
///
/// let mut t = HealthTracker::new(2, 3);
/// let now = Instant::now();
/// let first = t.observe(true, now).expect("the first result decides");
/// assert_eq!((first.from, first.to), (Health::Unknown, Health::Up));
///
/// assert_eq!(t.observe(false, now), None); // 1 of 3
/// assert!(t.in_doubt()); // the scheduler re-probes soon
/// assert_eq!(t.observe(false, now), None); // 2 of 3
/// assert_eq!(t.observe(false, now).map(|tr| tr.to), Some(Health::Down));
/// assert!(!t.in_doubt());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthTracker {
    rise: u32,
    fall: u32,
    state: Health,
    successes: u32,
    failures: u32,
    since: Option<Instant>,
}

impl HealthTracker {
    /// A tracker in [`Health::Unknown`] with the given thresholds.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self::restore(rise, fall, Health::Unknown, None)
    }

    /// A tracker that continues from a stored state (SPEC §5.2: a record younger than a few
    /// intervals). `since` is when that state began, if known. Counters start at zero, so a
    /// restored `Up` target needs `fall` failures to go down, like one that never stopped being
    /// watched; restoring [`Health::Unknown`] is the same as [`new`](Self::new).
    pub fn restore(rise: u32, fall: u32, state: Health, since: Option<Instant>) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state,
            successes: 0,
            failures: 0,
            since,
        }
    }

    /// Records one probe result made at `at` and returns the transition it caused, if any.
    pub fn observe(&mut self, success: bool, at: Instant) -> Option<Transition> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
        }
        let to = match (self.state, success) {
            (Health::Unknown, true) => Health::Up,
            (Health::Unknown, false) => Health::Down,
            (Health::Down, true) if self.successes >= self.rise => Health::Up,
            (Health::Up, false) if self.failures >= self.fall => Health::Down,
            (state, _) => state,
        };
        if to == self.state {
            return None;
        }
        let from = std::mem::replace(&mut self.state, to);
        self.since = Some(at);
        Some(Transition { from, to, at })
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// Whether the last result disagrees with the state: an `Up` target whose last probe failed,
    /// or a `Down` target whose last probe passed. The scheduler re-probes such a target every
    /// `fast_interval` until the state settles. Always `false` for [`Health::Unknown`].
    pub fn in_doubt(&self) -> bool {
        match self.state {
            Health::Up => self.failures > 0,
            Health::Down => self.successes > 0,
            Health::Unknown => false,
        }
    }

    /// When the current state began: the time of the last transition, or what
    /// [`restore`](Self::restore) was given. `None` while unknown.
    pub fn since(&self) -> Option<Instant> {
        self.since
    }

    /// Consecutive successes up to the last result (0 if it was a failure).
    pub fn consecutive_successes(&self) -> u32 {
        self.successes
    }

    /// Consecutive failures up to the last result (0 if it was a success).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// Successes needed to turn `Down` into `Up`.
    pub fn rise(&self) -> u32 {
        self.rise
    }

    /// Failures needed to turn `Up` into `Down`.
    pub fn fall(&self) -> u32 {
        self.fall
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use Health::{Down, Unknown, Up};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    /// Feeds `results` ('+' success, '-' failure) one second apart and returns the state after each
    /// and the index of every transition.
    fn run(rise: u32, fall: u32, results: &str) -> (String, Vec<usize>) {
        let t0 = Instant::now();
        let mut t = HealthTracker::new(rise, fall);
        let mut states = String::new();
        let mut transitions = Vec::new();
        for (i, c) in results.chars().enumerate() {
            let at = t0 + Duration::from_secs(i as u64);
            let before = t.state();
            if let Some(tr) = t.observe(c == '+', at) {
                assert_eq!((tr.from, tr.at), (before, at));
                assert_eq!(t.since(), Some(at));
                transitions.push(i);
            }
            states.push(match t.state() {
                Up => 'U',
                Down => 'D',
                Unknown => '?',
            });
        }
        (states, transitions)
    }

    #[test]
    fn table() {
        // (rise, fall, results, states after each result)
        let cases = [
            // Cold start: the first result decides at once, whatever rise/fall are.
            (2, 3, "+", "U"),
            (2, 3, "-", "D"),
            (5, 5, "-+", "DD"),
            // Fall: exactly `fall` consecutive failures.
            (2, 3, "+---", "UUUD"),
            (2, 3, "+--+--", "UUUUUU"),
            (2, 3, "+--+---", "UUUUUUD"),
            (2, 1, "+-", "UD"),
            // Rise: exactly `rise` consecutive successes.
            (2, 3, "-++", "DDU"),
            (2, 3, "-+-+", "DDDD"),
            (3, 3, "-+++", "DDDU"),
            (1, 3, "-+", "DU"),
            // Round trips.
            (2, 2, "+--++--", "UUDDUUD"),
            // Zero thresholds behave as one.
            (0, 0, "+-+-", "UDUD"),
        ];
        for (rise, fall, results, want) in cases {
            let (got, _) = run(rise, fall, results);
            assert_eq!(got, want, "rise={rise} fall={fall} results={results}");
        }
    }

    #[test]
    fn in_doubt_follows_last_result() {
        let t0 = Instant::now();
        let mut t = HealthTracker::new(2, 3);
        assert!(!t.in_doubt());
        t.observe(true, t0);
        assert!(!t.in_doubt());
        t.observe(false, t0);
        assert!(t.in_doubt());
        assert_eq!(t.consecutive_failures(), 1);
        t.observe(true, t0);
        assert!(!t.in_doubt());
        assert_eq!(
            (t.consecutive_successes(), t.consecutive_failures()),
            (1, 0)
        );
        for _ in 0..3 {
            t.observe(false, t0);
        }
        assert_eq!(t.state(), Down);
        assert!(!t.in_doubt());
        t.observe(true, t0);
        assert!(t.in_doubt());
    }

    #[test]
    fn restore_continues_without_cold_start() {
        let t0 = Instant::now();
        let mut t = HealthTracker::restore(2, 3, Up, Some(t0));
        assert_eq!((t.state(), t.since()), (Up, Some(t0)));
        // Restored Up: a single failure is not a "first result".
        assert_eq!(t.observe(false, t0), None);
        assert_eq!(t.state(), Up);

        let mut d = HealthTracker::restore(2, 3, Down, None);
        assert_eq!(d.observe(true, t0), None);
        let tr = d.observe(true, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((tr.from, tr.to), (Down, Up));

        assert_eq!(
            HealthTracker::restore(2, 3, Unknown, None),
            HealthTracker::new(2, 3)
        );
    }

    #[test]
    fn since_moves_only_on_transitions() {
        let t0 = Instant::now();
        let mut t = HealthTracker::new(2, 2);
        assert_eq!(t.since(), None);
        t.observe(true, t0);
        t.observe(true, t0 + Duration::from_secs(1));
        t.observe(false, t0 + Duration::from_secs(2));
        assert_eq!(t.since(), Some(t0));
    }

    /// Over random sequences and thresholds, compares with the rule stated in SPEC §5.2: after the
    /// first result, a transition to Down happens exactly when the run of failures reaches `fall`
    /// while Up, and to Up exactly when the run of successes reaches `rise` while Down.
    #[test]
    fn random_sequences_obey_rise_and_fall() {
        let t0 = Instant::now();
        for seed in 0..500u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let rise = rng.random_range(1..=5);
            let fall = rng.random_range(1..=5);
            // Bias towards long runs so that thresholds are reached often.
            let p_flip = rng.random_range(0.05..0.6);
            let mut t = HealthTracker::new(rise, fall);
            let mut last = rng.random_bool(0.5);
            let mut run = 0u32;
            let mut transitions = 0;
            for i in 0..200u64 {
                let success = if rng.random_bool(p_flip) { !last } else { last };
                run = if i > 0 && success == last { run + 1 } else { 1 };
                last = success;
                let before = t.state();
                let tr = t.observe(success, t0 + Duration::from_millis(i));
                let expected = match (before, success) {
                    (Unknown, true) => Some(Up),
                    (Unknown, false) => Some(Down),
                    (Up, false) if run == fall => Some(Down),
                    (Down, true) if run == rise => Some(Up),
                    _ => None,
                };
                assert_eq!(tr.map(|tr| tr.to), expected, "seed {seed} step {i}");
                if let Some(tr) = tr {
                    transitions += 1;
                    assert_eq!(tr.from, before);
                    // A transition needs exactly the threshold, never more.
                    match tr.to {
                        Down if before == Up => assert_eq!(t.consecutive_failures(), fall),
                        Up if before == Down => assert_eq!(t.consecutive_successes(), rise),
                        _ => assert_eq!(before, Unknown),
                    }
                }
                assert_ne!(t.state(), Unknown);
                assert_eq!(t.consecutive_successes() > 0, success);
                assert_eq!(t.consecutive_failures() > 0, !success);
                assert_eq!(
                    t.in_doubt(),
                    (t.state() == Up) != success,
                    "seed {seed} step {i}"
                );
            }
            assert!(transitions >= 1);
        }
    }

    #[test]
    fn health_names() {
        assert_eq!(Up.to_string(), "up");
        assert_eq!(serde_json::to_string(&Down).unwrap(), "\"down\"");
        assert_eq!(
            serde_json::from_str::<Health>("\"unknown\"").unwrap(),
            Unknown
        );
    }
}
