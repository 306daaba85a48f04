//! The readiness latch behind `/readyz` (linkerd2-proxy's `/ready`): closed until the config is
//! loaded, the first probe cycle is done and the ApiServer has answered once; open for good after.
//!
//! Once open it stays open. A later ApiServer outage does not make the pod unready: nothing sends
//! traffic to epcheck but Prometheus, and taking the pod out of its Service would only hide the
//! metrics that explain the outage (they and the alert rules report it instead).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A readiness latch in three parts. Cheap to clone: clones share the same parts.
///
/// ```
/// use epcheck::server::Readiness;
///
/// let ready = Readiness::new();
/// ready.set_config_loaded();
/// ready.set_first_cycle_done();
/// assert_eq!(ready.missing(), vec!["ApiServer not reached yet"]);
/// ready.set_apiserver_ok();
/// assert!(ready.is_ready());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    inner: Arc<Parts>,
}

#[derive(Debug, Default)]
struct Parts {
    config_loaded: AtomicBool,
    first_cycle_done: AtomicBool,
    apiserver_ok: AtomicBool,
}

impl Readiness {
    /// A closed latch: nothing done yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The configuration was loaded and checked.
    pub fn set_config_loaded(&self) {
        self.set(&self.inner.config_loaded);
    }

    /// Every target has been probed once.
    pub fn set_first_cycle_done(&self) {
        self.set(&self.inner.first_cycle_done);
    }

    /// The ApiServer answered a request (any HTTP status that proves it is reachable and
    /// accepts the credentials: a 2xx or a 404 on a missing object).
    pub fn set_apiserver_ok(&self) {
        self.set(&self.inner.apiserver_ok);
    }

    fn set(&self, part: &AtomicBool) {
        part.store(true, Ordering::Release);
    }

    /// Whether every part is done.
    pub fn is_ready(&self) -> bool {
        let p = &self.inner;
        [&p.config_loaded, &p.first_cycle_done, &p.apiserver_ok]
            .iter()
            .all(|part| part.load(Ordering::Acquire))
    }

    /// What is still missing, in words (empty when ready).
    pub fn missing(&self) -> Vec<&'static str> {
        let p = &self.inner;
        [
            (&p.config_loaded, "config not loaded"),
            (&p.first_cycle_done, "first probe cycle not done"),
            (&p.apiserver_ok, "ApiServer not reached yet"),
        ]
        .into_iter()
        .filter(|(flag, _)| !flag.load(Ordering::Acquire))
        .map(|(_, what)| what)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_when_every_part_is_done_in_any_order() {
        let r = Readiness::new();
        assert!(!r.is_ready());
        assert_eq!(r.missing().len(), 3);
        let clone = r.clone();
        clone.set_apiserver_ok();
        r.set_first_cycle_done();
        assert!(!r.is_ready());
        assert_eq!(r.missing(), vec!["config not loaded"]);
        clone.set_config_loaded();
        assert!(r.is_ready());
        assert!(r.missing().is_empty());
        // Setting a part again changes nothing.
        r.set_apiserver_ok();
        assert!(r.is_ready());
    }
}
