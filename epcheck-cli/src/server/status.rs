//! What `/status` shows: the daemon's [`StatusSnapshot`] (schema in
//! [`k8s_endpoints::daemon::status`]), provided through a [`StatusSource`].

use std::sync::Arc;

pub use k8s_endpoints::daemon::status::{ServiceStatus, StatusSnapshot, TargetStatus};
pub use k8s_endpoints::time::rfc3339;

/// Where `/status` gets its data. The daemon owns the data and publishes it; `snapshot` is
/// called on the HTTP server's task for each request, so it must be quick and must not block
/// on the daemon's loop (copy from a `watch` channel or a mutex-held copy, do not ask the loop).
///
/// Implemented for closures `Fn() -> StatusSnapshot` and for
/// `tokio::sync::watch::Receiver<StatusSnapshot>` or `<Arc<StatusSnapshot>>` (the daemon's
/// status observer keeps the sender and calls `send_replace` after each change or cycle).
pub trait StatusSource: Send + Sync {
    /// The current status.
    fn snapshot(&self) -> StatusSnapshot;
}

impl<F> StatusSource for F
where
    F: Fn() -> StatusSnapshot + Send + Sync,
{
    fn snapshot(&self) -> StatusSnapshot {
        self()
    }
}

impl StatusSource for tokio::sync::watch::Receiver<StatusSnapshot> {
    fn snapshot(&self) -> StatusSnapshot {
        self.borrow().clone()
    }
}

impl StatusSource for tokio::sync::watch::Receiver<Arc<StatusSnapshot>> {
    fn snapshot(&self) -> StatusSnapshot {
        StatusSnapshot::clone(&self.borrow())
    }
}
