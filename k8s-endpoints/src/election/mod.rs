//! Leader election among replicas (SPEC §9), following client-go's `tools/leaderelection`:
//! one writer at a time, through a `coordination.k8s.io/v1` Lease or any other [`Lock`].
//!
//! * [`LeaderElector`] — the loop: every `retry_period` (a candidate's jittered up to
//!   [`JITTER_FACTOR`] ×) it reads the lock and, when the lock is free, expired or its own,
//!   writes it conditionally on the version just read, so that a competitor gets `409
//!   Conflict`. A leader renews without reading first.
//! * [`ElectionCore`] — the rules, without I/O or clocks of its own: a lock is expired when
//!   `leaseDurationSeconds` have passed on the *local* monotonic clock since this replica
//!   last saw the record change (`renewTime` is never compared across hosts); a renewal keeps
//!   `acquireTime` and `leaseTransitions`, a takeover sets `acquireTime` and increments
//!   `leaseTransitions`; a term ends `renew_deadline` after the start of the last successful
//!   write — by a timer, even while a renewal is still hanging — which is before any other
//!   replica may consider the lock expired, since `renew_deadline < lease_duration`.
//! * [`LeaderState`] on a `tokio::sync::watch` channel ([`LeaderElector::subscribe`]) tells
//!   the daemon whether it may write; [`LeaderState::leads_at`] is the check to make right
//!   before each write. [`StatePublisher`] lets other backends (a Redis lock) publish the
//!   same way.
//! * [`LeaseLock`] — the lock on a Lease, through the hand-written [`Client`](crate::Client)
//!   (`get_lease`, a create by `PUT` to the named URL so RBAC can restrict `create` by name,
//!   `update_lease` with the `resourceVersion`); [`MicroTime`] writes its times with exactly
//!   six fractional digits.
//! * [`TtlElector`] — the same rules and output over a [`TtlLock`], a key that expires by
//!   itself on its server's clock (`SET NX PX` on Redis, a key bound to a lease on etcd),
//!   renewed and released only by its holder.
//! * [`Election`] — a running election as one handle (or none: always leading), whatever the
//!   lock; `RedisTtlLock` (feature `redis`) is a Redis key and `EtcdTtlLock` (feature `etcd`)
//!   an etcd key bound to an etcd lease as a [`TtlLock`].
//! * [`identity()`] (`POD_NAME` or the hostname, plus a random suffix) and
//!   [`lease_namespace`] (`POD_NAMESPACE`, the service-account `namespace` file, `default`).
//!
//! On shutdown (`run`'s future resolves) a leader first publishes `is_leader: false`, then
//! releases the lock by writing an empty `holderIdentity` with `leaseDurationSeconds: 1`, so
//! another replica takes over within about one `retry_period`. The caller should stop
//! writing before it signals shutdown.
//!
//! Deleting the Lease by hand while a leader holds it lets another replica create it at
//! once (as with client-go); the old leader learns of it on its next renewal, at most one
//! `retry_period` later, and stops leading then.

mod config;
mod core;
mod elector;
#[cfg(feature = "etcd")]
mod etcd_lock;
mod handle;
mod identity;
mod lease_lock;
mod microtime;
mod record;
#[cfg(feature = "redis")]
mod redis_lock;
mod ttl;

pub use config::{
    DEFAULT_LEASE_DURATION, DEFAULT_RENEW_DEADLINE, DEFAULT_RETRY_PERIOD, ElectionConfig,
    JITTER_FACTOR, RELEASE_TIMEOUT,
};
pub use core::{Decision, ElectionCore, Observation};
pub(crate) use elector::error_chain;
pub use elector::{LeaderElector, LeaderState, StatePublisher, term_timer};
#[cfg(feature = "etcd")]
pub use etcd_lock::EtcdTtlLock;
pub use handle::Election;
pub use identity::{NAMESPACE_FILE, identity, lease_namespace};
pub use lease_lock::LeaseLock;
pub use microtime::{MicroTime, MicroTimeError};
pub use record::{LeaderRecord, Lock, Version};
#[cfg(feature = "redis")]
pub use redis_lock::RedisTtlLock;
pub use ttl::{TtlElector, TtlLock};
