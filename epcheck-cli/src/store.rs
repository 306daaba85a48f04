//! Opening the state store the config asks for: in memory by default, Redis or etcd when
//! configured.

use std::sync::Arc;

use state_store::{MemoryStore, RedisOptions, RedisStore, StateStore};

#[cfg(feature = "etcd")]
use crate::config::EtcdConfig;
use crate::config::{Config, RedisConfig};

/// How to wait for Redis or etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Return at once and connect in the background (the daemon: it must start and probe while
    /// Redis is down).
    Lazy,
    /// Connect now and fail if Redis cannot be reached (one-shot commands such as `status`).
    Now,
}

/// The Redis options of the config.
pub fn redis_options(r: &RedisConfig) -> RedisOptions {
    let mut o = RedisOptions::new(r.address.clone());
    o.username = r.username.clone();
    o.password = r.password.clone();
    o.db = r.db;
    o.tls = r.tls;
    o.key_prefix = r.key_prefix.clone();
    o
}

/// The etcd options of the config.
#[cfg(feature = "etcd")]
pub fn etcd_options(e: &EtcdConfig) -> state_store::EtcdOptions {
    let mut o = state_store::EtcdOptions::new(e.endpoints.iter().cloned());
    o.username = e.username.clone();
    o.password = e.password.clone();
    o.ca_file = e.ca_file.clone();
    o.cert_file = e.cert_file.clone();
    o.key_file = e.key_file.clone();
    o.key_prefix = e.key_prefix.clone();
    o
}

/// Opens the store of `config`.
///
/// # Errors
/// Invalid Redis or etcd options, or with [`Connect::Now`] an unreachable store or refused
/// credentials.
pub async fn open(
    config: &Config,
    how: Connect,
) -> Result<Arc<dyn StateStore>, state_store::Error> {
    #[cfg(feature = "etcd")]
    if let Some(e) = &config.etcd {
        let options = etcd_options(e);
        let store = match how {
            Connect::Lazy => state_store::EtcdStore::new_lazy(options).await?,
            Connect::Now => state_store::EtcdStore::connect(options).await?,
        };
        return Ok(Arc::new(store));
    }
    match &config.redis {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(r) => {
            let options = redis_options(r);
            let store = match how {
                Connect::Lazy => RedisStore::new_lazy(options).await?,
                Connect::Now => RedisStore::connect(options).await?,
            };
            Ok(Arc::new(store))
        }
    }
}
