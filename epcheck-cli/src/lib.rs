//! epcheck keeps the Endpoints objects of selector-less Kubernetes Services equal to the backends
//! that pass their health checks.
//!
//! This crate is the `epcheck` binary's library half: the configuration ([`config`]), the
//! command-line flags ([`cli`]), the reports ([`report`]) and the subcommands ([`commands`]).
//! The probing, the ApiServer client and the state store live in the `probe-core`,
//! `k8s-endpoints` and `state-store` crates, which other tools can embed on their own.
//!
//! ```no_run
//! use epcheck::config::{ProcessEnv, load};
//!
//! let loaded = load(std::path::Path::new("config.yaml"), &ProcessEnv)?;
//! for service in &loaded.config.services {
//!     println!("{} -> {}/{}: {} targets", service.key, service.namespace, service.name,
//!              service.targets.len());
//! }
//! # Ok::<(), epcheck::config::ConfigError>(())
//! ```

pub mod apiserver;
pub mod cli;
pub mod commands;
pub mod config;
pub mod khcheck;
pub mod leader;
pub mod logging;
pub mod manifests;
pub mod metrics;
pub mod notify;
pub mod observers;
pub mod report;
pub mod round;
pub mod server;
pub mod store;

use std::fmt;

/// A mistake in how epcheck was called (a bad flag value, an unreadable `--targets` file):
/// reported without a backtrace and with exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Raises the open-file limit and caps `requested` concurrency below it (SPEC §5.1).
pub fn effective_concurrency(requested: usize) -> usize {
    match probe_core::raise_nofile_limit() {
        Ok(limit) => {
            let n = probe_core::effective_concurrency(requested, &limit);
            if n < requested {
                tracing::warn!(
                    requested,
                    effective = n,
                    soft_limit = limit.soft,
                    "probe concurrency capped by the open-file limit"
                );
            }
            n
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not read or raise the open-file limit");
            requested.min(256)
        }
    }
}
