//! The daemon (`epcheck run`, SPEC §5): probe every target on its schedule, track health,
//! reconcile each service's Endpoints when its healthy set changes, repair drift on a resync,
//! hold every write while the fail-safe says epcheck's own network is the likelier fault,
//! report (and with `prune: true` hand back) the objects of its instance whose Service left
//! the config, and drain on shutdown.
//!
//! The library owns the loop; the caller owns the store, the client and the shutdown signal
//! (mini-redis style), so tests and other tools can hand in their own:
//!
//! ```no_run
//! # async fn demo(config: epcheck::config::Config, client: k8s_endpoints::Client) {
//! use std::sync::Arc;
//! let store = Arc::new(state_store::MemoryStore::new());
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! epcheck::daemon::run(config, store, client, shutdown).await;
//! # }
//! ```

mod engine;
mod outage;
pub mod persist;
pub mod table;
mod unconfigured;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_endpoints::Client;
use state_store::StateStore;
use tokio::sync::watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::server::{Readiness, StatusSnapshot};
use k8s_endpoints::election::LeaderState;

pub use engine::Engine;

/// Tunables of the loop that the config does not carry.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// How long a transition waits for others before its service is reconciled, so several
    /// transitions make one write.
    pub batch_delay: Duration,
    /// How often every target's record is written to the store (keeps records fresh enough to
    /// be restored after a restart).
    pub flush_interval: Duration,
    /// How long shutdown waits for an in-flight write.
    pub shutdown_grace: Duration,
    /// Longest wait between two attempts at a service whose reconcile failed.
    pub max_retry_delay: Duration,
}

impl DaemonOptions {
    /// Defaults for `config`: a 30 ms batch, a flush every interval (at least 1 s), a 1.5 s
    /// grace, retries up to 30 s apart.
    pub fn for_config(config: &Config) -> Self {
        DaemonOptions {
            batch_delay: Duration::from_millis(30),
            flush_interval: config.interval.max(Duration::from_secs(1)),
            shutdown_grace: Duration::from_millis(1500),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

/// What the daemon reports to: metrics, the readiness latch and the `/status` document. The
/// caller serves them (see [`crate::server::serve`]); the daemon only updates them.
#[derive(Clone, Debug)]
pub struct Telemetry {
    /// Metric handles (register them in the caller's registry).
    pub metrics: Metrics,
    /// Released once the first probe cycle is done and the ApiServer answered.
    pub readiness: Readiness,
    /// Receives a new `/status` document after each change.
    pub status: Arc<watch::Sender<StatusSnapshot>>,
    /// Runs the notify script and webhooks on transitions.
    pub notifier: Arc<Notifier>,
    /// Whether this replica may write (leader election, SPEC §9); always leading without it.
    pub leadership: watch::Receiver<LeaderState>,
    /// This replica's leader-election identity, when elections run.
    pub identity: Option<String>,
}

impl Telemetry {
    /// Fresh metrics (this replica leads: there is no election yet), a latch with the config
    /// marked loaded, and an empty status document.
    pub fn new() -> Self {
        let metrics = Metrics::new();
        metrics.set_leader(true);
        let readiness = Readiness::new();
        readiness.set_config_loaded();
        let (status, _) = watch::channel(StatusSnapshot::default());
        Telemetry {
            metrics,
            readiness,
            status: Arc::new(status),
            notifier: Arc::new(Notifier::disabled()),
            leadership: watch::channel(LeaderState::standalone("standalone")).1,
            identity: None,
        }
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs the daemon until `shutdown` resolves; returns once in-flight writes finished (or the
/// grace ran out) and state was flushed.
pub async fn run(
    config: Config,
    store: Arc<dyn StateStore>,
    client: Client,
    shutdown: impl Future<Output = ()> + Send,
) {
    let options = DaemonOptions::for_config(&config);
    run_with(config, store, client, options, Telemetry::new(), shutdown).await;
}

/// [`run`] with explicit [`DaemonOptions`] and [`Telemetry`].
pub async fn run_with(
    config: Config,
    store: Arc<dyn StateStore>,
    client: Client,
    options: DaemonOptions,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send,
) {
    let sweeper = unconfigured::Sweeper::new(
        &config,
        client.clone(),
        telemetry.leadership.clone(),
        telemetry.metrics.clone(),
    );
    let sweeping = tokio::spawn(sweeper.run());
    let engine = Engine::start(config, store, client, options, telemetry).await;
    engine.run(shutdown).await;
    sweeping.abort();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use fixtures::apiserver::{ApiServer, Permissions, Resource};
    use fixtures::targets::ToggleTarget;
    use state_store::MockStateStore;

    fn store_error() -> state_store::Error {
        state_store::Error::Timeout {
            address: "127.0.0.1:6379".into(),
            op: "HSET",
            key: "epcheck:web:targets".into(),
            timeout: Duration::from_millis(100),
        }
    }

    /// A store whose every call fails.
    fn broken_store() -> MockStateStore {
        let mut m = MockStateStore::new();
        m.expect_kind().return_const("mock");
        m.expect_durable().return_const(true);
        m.expect_load_targets().returning(|_| Err(store_error()));
        m.expect_load_applied().returning(|_| Err(store_error()));
        m.expect_save_targets().returning(|_, _| Err(store_error()));
        m.expect_save_target().returning(|_, _| Err(store_error()));
        m.expect_save_applied().returning(|_, _| Err(store_error()));
        m.expect_append_event().returning(|_| Err(store_error()));
        m
    }

    fn ready(api: &ApiServer) -> usize {
        api.get_object(Resource::Endpoints, "default", "web")
            .and_then(|o| o["subsets"][0]["addresses"].as_array().map(Vec::len))
            .unwrap_or(0)
    }

    /// Through the library, without an election (the leadership sender is gone from the
    /// start), `prune: true` still hands back a slice of a Service that left the config.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn prune_works_without_an_election() {
        let api = ApiServer::builder()
            .strict_ips(false)
            .start()
            .await
            .unwrap();
        api.add_token("t", Permissions::all());
        api.put_service("default", "web");
        api.insert_object(
            Resource::EndpointSlices,
            "default",
            serde_json::json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "old-epcheck-ipv4-0", "labels": {
                    "kubernetes.io/service-name": "old",
                    "endpointslice.kubernetes.io/managed-by": "epcheck.io",
                    "epcheck.io/instance": "epcheck"}},
                "addressType": "IPv4", "endpoints": [], "ports": [],
            }),
        );
        let target = ToggleTarget::start().await.unwrap();
        let text = format!(
            "interval: 300\npingtimeout: 200\nurl: {}\ntoken_file: t\nresync_interval: 300\nprune: true\n\
service_info:\n  web: {{namespace: default, name: web}}\n\
service_healthcheck_list:\n  web:\n    port: {}\n    iplist: [{{name: n0, ip: {}}}]\n\
endpoint_template: {{kind: Endpoints, apiVersion: v1, subsets: [{{ports: [{{port: 80}}]}}]}}\n",
            api.url(),
            target.addr().port(),
            target.addr().ip()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "t").unwrap();
        let config = crate::config::check(
            &text,
            &dir.path().join("c.yaml"),
            &crate::config::ProcessEnv,
        )
        .unwrap()
        .config;
        let client =
            crate::apiserver::connect(&config, dir.path(), &crate::config::ProcessEnv).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store = Arc::new(state_store::MemoryStore::new());
        let daemon = tokio::spawn(run(config, store, client, async move {
            let _ = stopped.await;
        }));
        let mut gone = false;
        for _ in 0..60 {
            if api
                .get_object(Resource::EndpointSlices, "default", "old-epcheck-ipv4-0")
                .is_none()
            {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), daemon)
            .await
            .unwrap()
            .unwrap();
        assert!(gone, "the slice of the removed Service was not pruned");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_store_does_not_stop_the_daemon() {
        let api = ApiServer::builder()
            .strict_ips(false)
            .start()
            .await
            .unwrap();
        api.add_token("t", Permissions::all());
        api.put_service("default", "web");
        let mut targets = ToggleTarget::start_group(3).await.unwrap();
        let iplist: String = targets
            .iter()
            .enumerate()
            .map(|(i, t)| format!("      - name: n{i}\n        ip: {}\n", t.addr().ip()))
            .collect();
        let text = format!(
            "interval: 300\npingtimeout: 200\nurl: {}\ntoken_file: t\nprobe: {{rise: 1, fall: 1, fast_interval: 50}}\n\
service_info:\n  web: {{namespace: default, name: web}}\n\
service_healthcheck_list:\n  web:\n    port: {}\n    iplist:\n{iplist}\
endpoint_template: {{kind: Endpoints, apiVersion: v1, subsets: [{{ports: [{{port: 80}}]}}]}}\n",
            api.url(),
            targets[0].addr().port()
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "t").unwrap();
        let path = dir.path().join("c.yaml");
        let config = crate::config::check(&text, &path, &crate::config::ProcessEnv)
            .unwrap()
            .config;
        let client =
            crate::apiserver::connect(&config, dir.path(), &crate::config::ProcessEnv).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(config, Arc::new(broken_store()), client, async move {
            let _ = stopped.await;
        }));
        let wait = |n: usize| {
            let api = &api;
            async move {
                for _ in 0..100 {
                    if ready(api) == n {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                false
            }
        };
        assert!(wait(3).await, "the object was not created");
        targets[2].refuse().await;
        assert!(
            wait(2).await,
            "a transition was not written while the store fails"
        );
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(3), daemon)
            .await
            .unwrap()
            .unwrap();
    }
}
