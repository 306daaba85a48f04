//! Whose a Service is: epcheck's while it has no selector, the cluster's controllers' once it
//! has one (SPEC §9), and what is worth saying about it once (ports that route nothing).

use crate::daemon::observe::Observer;
use crate::daemon::table::ServiceSlot;
use crate::writer::UnmatchedPorts;

/// A reconcile succeeded: epcheck manages the Service (again, if it had a selector before).
/// Configured ports that match no port of the Service are warned about once per service.
pub(super) fn managed(
    s: &mut ServiceSlot,
    unmatched: Option<&UnmatchedPorts>,
    observers: &dyn Observer,
    index: usize,
) {
    if s.selector_owned {
        s.selector_owned = false;
        observers.selector_owned(index, false);
        tracing::info!(service = %s.key, "the Service has no selector any more: epcheck manages it again");
    }
    if let Some(unmatched) = unmatched
        && !s.ports_warned
    {
        s.ports_warned = true;
        tracing::warn!(service = %s.key, "{unmatched}");
    }
}

/// The Service has a selector: its endpoints belong to the cluster's controllers. epcheck
/// stops managing it (its own slices were deleted by the reconcile), says so once at error
/// level, tells the observers, and looks again only at each resync.
pub(super) fn selector_owned(
    s: &mut ServiceSlot,
    error: &crate::Error,
    observers: &dyn Observer,
    index: usize,
) {
    if s.selector_owned {
        tracing::debug!(service = %s.key, error = %error, "the Service still has a selector");
    } else {
        s.selector_owned = true;
        observers.selector_owned(index, true);
        tracing::error!(
            service = %s.key, error = %error,
            "epcheck stopped managing this Service; it checks again at every resync"
        );
    }
    s.failures = 0;
    s.last_error = Some(error.to_string());
    // Nothing of epcheck's is written for it any more; a resync marks it dirty again.
    s.applied = None;
    s.dirty = false;
}
