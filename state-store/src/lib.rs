//! Where epcheck keeps health state and history, so that a restart or a second replica continues
//! where the last one stopped.
//!
//! [`StateStore`] is the seam: an async trait another tool can implement. Three implementations
//! ship here:
//! - [`MemoryStore`], the default: nothing to run, state lives as long as the process;
//! - `RedisStore` (feature `redis`, on fred): a hash of target records per service, the last
//!   addresses written, a capped stream of transitions and a set of known services, with
//!   password, db, TLS and a key prefix, reconnecting by itself; plus `RedisLock`, the lock
//!   key for leader election on Redis (SPEC §9);
//! - `EtcdStore` (feature `etcd`, on etcd-client): the same records under
//!   `<prefix><svc>/…` in etcd's v3 API, with TLS (CA, client certificate), user and password
//!   and a key prefix; plus `EtcdLock`, a key bound to an etcd lease for leader election.
//!
//! Records ([`TargetRecord`], [`AppliedRecord`], [`TransitionEvent`]) are JSON with a schema
//! version and wall-clock unix-millisecond times; see [`record`] for the compatibility rules.
//! A stored record that does not parse is skipped with a warning, never an error for the whole
//! load.
//!
//! # Example
//!
//! ```
//! use state_store::{Health, MemoryStore, StateStore, TargetRecord, TransitionEvent};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> state_store::Result<()> {
//! // The daemon holds the store as a trait object; `RedisStore` drops in the same way.
//! let store: std::sync::Arc<dyn StateStore> = std::sync::Arc::new(MemoryStore::new());
//!
//! let mut record = TargetRecord::new("redis", "node-01", "198.51.100.10".parse().unwrap(), 38080);
//! record.state = Health::Up;
//! store.save_target("redis", &record).await?;
//! store
//!     .append_event(&TransitionEvent {
//!         schema: state_store::SCHEMA_VERSION,
//!         service: "redis".into(),
//!         target: "node-01".into(),
//!         ip: record.ip,
//!         from: Health::Unknown,
//!         to: Health::Up,
//!         at: state_store::now_ms(),
//!         error: None,
//!     })
//!     .await?;
//!
//! // After a restart: restore what is fresh enough.
//! let restored = store.load_targets("redis").await?;
//! assert_eq!(restored[0].state, Health::Up);
//! assert_eq!(store.services().await?, ["redis"]);
//! assert_eq!(store.recent_events(Some("redis"), 10).await?.len(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Mocking
//!
//! With the `mock` feature (always in this crate's own unit tests) the crate exports
//! `MockStateStore`, made by mockall, to force a store failure in another crate's tests:
//!
//! ```toml
//! [dev-dependencies]
//! state-store = { workspace = true, features = ["mock"] }
//! ```

use async_trait::async_trait;

mod error;
#[cfg(feature = "etcd")]
mod etcd;
mod memory;
pub mod record;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "redis", feature = "etcd"))]
mod views;

pub use error::{BackendError, Error, Result};
#[cfg(feature = "etcd")]
pub use etcd::{
    DEFAULT_ETCD_COMMAND_TIMEOUT, DEFAULT_ETCD_CONNECT_TIMEOUT, DEFAULT_ETCD_EVENTS_MAX_LEN,
    DEFAULT_ETCD_KEY_PREFIX, EtcdLock, EtcdOptions, EtcdStore, EtcdViews, MAX_ETCD_ENDPOINTS,
};
pub use memory::{DEFAULT_EVENT_CAPACITY, MemoryStore};
pub use record::{
    AppliedRecord, Health, SCHEMA_VERSION, TargetRecord, TransitionEvent, from_unix_ms, now_ms,
    unix_ms,
};
#[cfg(feature = "redis")]
pub use redis::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EVENTS_MAX_LEN, DEFAULT_KEY_PREFIX,
    DEFAULT_RECONNECT_MAX_DELAY, RedisLock, RedisOptions, RedisStore, RedisViews,
};
#[cfg(any(feature = "redis", feature = "etcd"))]
pub use views::{MAX_REPLICAS as MAX_VIEW_REPLICAS, PostedView};

/// Storage for targets' health, the last addresses written per service, and transition history.
///
/// Every method is a single short operation with its own timeout in the network
/// implementations: when the backend is down, calls fail fast with a [transient](Error::is_transient)
/// error and the caller carries on from memory.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait StateStore: Send + Sync {
    /// A short name for logs and `epcheck status`: `memory`, `redis`, `etcd`.
    fn kind(&self) -> &'static str;

    /// Whether what is saved outlives this process (Redis: `true`) or goes with it (memory:
    /// `false`). The daemon saves target records only to a store that outlives it: they are
    /// read back by the next process, and the daemon's own table is authoritative meanwhile.
    fn durable(&self) -> bool {
        true
    }

    /// Checks that the store answers.
    async fn ping(&self) -> Result<()>;

    /// The services the store has records for, sorted.
    async fn services(&self) -> Result<Vec<String>>;

    /// Every target record of `service`, sorted by name. Records that do not parse are skipped
    /// with a warning.
    async fn load_targets(&self, service: &str) -> Result<Vec<TargetRecord>>;

    /// Stores (replaces) the record of one target, keyed by `record.name`.
    async fn save_target(&self, service: &str, record: &TargetRecord) -> Result<()>;

    /// Stores several records of one service at once (one round trip in Redis).
    async fn save_targets(&self, service: &str, records: &[TargetRecord]) -> Result<()> {
        for record in records {
            self.save_target(service, record).await?;
        }
        Ok(())
    }

    /// Forgets one target (it left the config). Returns whether there was a record.
    async fn remove_target(&self, service: &str, name: &str) -> Result<bool>;

    /// The addresses last written for `service`, if any (and if the record parses).
    async fn load_applied(&self, service: &str) -> Result<Option<AppliedRecord>>;

    /// Stores the addresses just written for `service`.
    async fn save_applied(&self, service: &str, record: &AppliedRecord) -> Result<()>;

    /// Appends a transition to the capped history (the oldest entries go first).
    async fn append_event(&self, event: &TransitionEvent) -> Result<()>;

    /// The `limit` most recent transitions, of one service or of all, oldest first.
    ///
    /// (The named lifetime is there for mockall; an implementation writes the same signature.)
    async fn recent_events<'a>(
        &self,
        service: Option<&'a str>,
        limit: usize,
    ) -> Result<Vec<TransitionEvent>>;
}

/// Compiles the README's example as a doctest (it uses the Redis store).
#[cfg(all(doctest, feature = "redis"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn mock_store_works_through_async_trait() {
        let mut mock = MockStateStore::new();
        mock.expect_kind().return_const("mock");
        mock.expect_durable().return_const(true);
        mock.expect_load_targets()
            .withf(|service| service == "redis")
            .times(1)
            .returning(|_| {
                Err(Error::Unavailable {
                    address: "127.0.0.1:6379".into(),
                    op: "HGETALL",
                    key: "epcheck:redis:targets".into(),
                    source: BackendError::new("IO", "Connection refused"),
                })
            });
        mock.expect_recent_events()
            .withf(|service, limit| *service == Some("redis") && *limit == 5)
            .returning(|_, _| Ok(Vec::new()));

        let store: Arc<dyn StateStore> = Arc::new(mock);
        assert_eq!(store.kind(), "mock");
        let err = store.load_targets("redis").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(
            store
                .recent_events(Some("redis"), 5)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
