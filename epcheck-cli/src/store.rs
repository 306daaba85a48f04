//! Opening the state store the config asks for: in memory by default, Redis when configured.

use std::sync::Arc;

use state_store::{MemoryStore, RedisOptions, RedisStore, StateStore};

use crate::config::{Config, RedisConfig};

/// How to wait for Redis.
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

/// Opens the store of `config`.
///
/// # Errors
/// Invalid Redis options, or with [`Connect::Now`] an unreachable Redis or refused credentials.
pub async fn open(
    config: &Config,
    how: Connect,
) -> Result<Arc<dyn StateStore>, state_store::Error> {
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
