//! `epcheck run`: the daemon until SIGTERM/SIGINT.

use std::future::Future;
use std::path::Path;

use crate::apiserver::connect;
use crate::config::{Environment, Loaded, load};
use crate::store::{Connect, open};

/// Runs the daemon until `shutdown` resolves; returns exit code 0 after a clean shutdown.
pub async fn run(
    path: &Path,
    cwd: &Path,
    env: &dyn Environment,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<u8> {
    let Loaded { config, warnings } = load(path, env)?;
    for w in &warnings {
        tracing::warn!("{}", w.display_with(path));
    }
    let client = connect(&config, cwd, env)?;
    let store = open(&config, Connect::Lazy).await?;
    crate::daemon::run(config, store, client, shutdown).await;
    Ok(0)
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops epcheck");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
