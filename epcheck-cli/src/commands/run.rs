//! `epcheck run`: the daemon until SIGTERM, SIGINT or SIGHUP, with the metrics and health server.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::apiserver::client_config;
use crate::config::{Environment, load_logged};
use k8s_endpoints::daemon::{Daemon, StatusSnapshot};

use crate::metrics::Metrics;
use crate::observers::{MetricsObserver, NotifyObserver, ServerObserver};
use crate::server::{HttpState, Readiness, serve};
use crate::store::{Connect, open};

/// Runs the daemon until `shutdown` resolves; returns exit code 0 after a clean shutdown.
pub async fn run(
    path: &Path,
    cwd: &Path,
    env: &dyn Environment,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<u8> {
    let config = load_logged(path, env)?;
    // Read from the runtime itself, so the line shows what runs, not what was asked for.
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    tracing::info!(
        threads,
        "probing and reconciling on {threads} thread(s) (run --threads)"
    );
    let metrics = Metrics::new();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let delivered = metrics.clone();
    let on_delivery: crate::notify::Observer = Arc::new(move |stats, delivery| {
        use crate::metrics::{Channel, Delivery};
        let channel = if stats.kind == "script" {
            Channel::Script
        } else {
            Channel::Webhook
        };
        let result = match delivery {
            crate::notify::Delivery::Sent => Delivery::Sent,
            crate::notify::Delivery::Failed => Delivery::Failed,
            crate::notify::Delivery::Dropped => Delivery::Dropped,
        };
        delivered.notification(channel, result);
    });
    let notifier = Arc::new(crate::notify::Notifier::new(
        &config.notify,
        crate::notify::NotifyOptions {
            observer: Some(on_delivery),
            ..Default::default()
        },
    )?);
    let client = k8s_endpoints::Client::with_observer(
        client_config(&config, cwd, env)?,
        metrics.apiserver_observer(),
    )?;
    let store = open(&config, Connect::Lazy).await?;
    let election = crate::leader::start_election(&config, &client, env, cwd).await?;
    let board = crate::leader::consensus_board(&config, &client, env, cwd).await?;
    let identity = config.leader_election.enabled.then(|| {
        let backend = crate::leader::backend_kind(&config, env, cwd);
        tracing::info!(identity = election.identity(), backend = ?backend, "leader election on");
        election.identity().to_string()
    });
    metrics.set_leader(election.is_leader());
    let readiness = Readiness::new();
    readiness.set_config_loaded();
    let (status_tx, status_rx) = watch::channel(Arc::new(StatusSnapshot::default()));

    // One shutdown signal, fanned out to the HTTP server and the daemon.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let server = match config.metrics.listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!(
                    "cannot listen on {addr} (metrics.listen): choose another address, or set \
                     metrics.listen to off"
                )
            })?;
            let bound = listener.local_addr().unwrap_or(addr);
            if bound.ip().is_unspecified() {
                // The default: the kubelet's probes come to the pod IP. Say so, for those who run
                // epcheck on a host where that port should not be reachable from outside.
                tracing::info!(
                    addr = %bound,
                    "metrics and health server listening on every interface; set \
                     metrics.listen to 127.0.0.1:{} to keep it local",
                    bound.port()
                );
            } else {
                tracing::info!(addr = %bound, "metrics and health server listening");
            }
            let state = HttpState::new(Arc::new(registry), readiness.clone(), Arc::new(status_rx));
            Some(tokio::spawn(serve(
                listener,
                state,
                stopped(stop_rx.clone()),
            )))
        }
        None => None,
    };
    let per_target = config.metrics.per_target;
    let mut daemon = Daemon::new(config.daemon_spec(), store, client)
        .leadership(election.subscribe(), identity)
        .observe(Arc::new(MetricsObserver::new(metrics, per_target)))
        .observe(Arc::new(NotifyObserver::new(notifier, board.is_some())))
        .observe(Arc::new(ServerObserver::new(readiness, status_tx)));
    if let Some(board) = board {
        tracing::info!(
            quorum = config
                .consensus
                .settings
                .quorum
                .map_or_else(|| "majority of fresh views".to_owned(), |q| q.to_string()),
            "consensus on: a target leaves or returns only when a quorum of replicas agree"
        );
        daemon = daemon.consensus(board, config.consensus.settings.clone());
    }
    drop(config);
    let daemon = daemon.run(stopped(stop_rx));
    tokio::pin!(daemon);
    tokio::select! {
        () = &mut daemon => {}
        () = shutdown => {
            let _ = stop_tx.send(true);
            daemon.await;
        }
    }
    let _ = stop_tx.send(true);
    // The daemon has stopped writing: now the lease can be released for the next leader.
    election.shutdown().await;
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(0)
}

/// Resolves on the first SIGTERM, SIGINT (Ctrl-C) or SIGHUP.
///
/// The handlers are installed when this is called (inside the runtime), not when the future is
/// first polled, so a signal that arrives while the daemon is still starting is not lost to
/// the default action (which ends the process without its shutdown path).
///
/// SIGHUP takes the SIGTERM path (a clean shutdown, exit 0), it does not reload the config: a
/// reload would have to swap the targets, the ApiServer client, the store and the election
/// under a running daemon, whereas a restart by the supervisor (Kubernetes, systemd) does the
/// same with the code path that is tested on every start. Without this handler SIGHUP's default
/// action ended the process at once, without releasing the Lease.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let streams = signal(SignalKind::terminate()).and_then(|term| {
            let hup = signal(SignalKind::hangup())?;
            let int = signal(SignalKind::interrupt())?;
            Ok((term, hup, int))
        });
        async move {
            match streams {
                Ok((mut term, mut hup, mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
                        _ = hup.recv() => tracing::info!(
                            "SIGHUP received; shutting down as on SIGTERM (the config is not \
                             reloaded: restart epcheck to apply a new one)"
                        ),
                        _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "cannot listen for SIGTERM or SIGHUP; only Ctrl-C stops epcheck cleanly"
                    );
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
