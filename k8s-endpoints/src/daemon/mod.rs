//! The daemon: probe every target on its schedule, track health with rise/fall, keep each
//! service's Endpoints object or EndpointSlices equal to the healthy set (writing only on
//! change), repair drift on a resync, hold every write while the fail-safe says the checker's
//! own network is the likelier fault, report (and with `prune` hand back) the objects of its
//! instance whose Service is not configured, and drain on shutdown.
//!
//! ```text
//!  DaemonSpec ─► targets ─► probe (probe-core) ─► health (rise/fall, fail-safe)
//!                                                        │
//!                                                        ▼
//!                             StateStore ◄─ reconcile (writer) ─► ApiServer
//!
//!  Observers (metrics, notifications, /status, yours) receive every step on the side.
//! ```
//!
//! The caller owns the store, the client and the shutdown signal, and builds the
//! [`DaemonSpec`] by code:
//!
//! ```no_run
//! # async fn demo(client: k8s_endpoints::Client) {
//! use std::sync::Arc;
//! use k8s_endpoints::daemon::{Daemon, DaemonSpec, ServiceSpec};
//! use k8s_endpoints::{Endpoints, EndpointPort, EndpointSubset};
//! use probe_core::Target;
//!
//! let mut template = Endpoints::new("default", "redis");
//! template.subsets.push(EndpointSubset {
//!     ports: vec![EndpointPort::tcp(6379)],
//!     ..EndpointSubset::default()
//! });
//! let targets = vec![Target::new("redis", "node-01", [198, 51, 100, 10].into(), 6379)];
//! let spec = DaemonSpec::new(template, vec![ServiceSpec::new("redis", "default", "redis", targets)]);
//! let store = Arc::new(state_store::MemoryStore::new());
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! Daemon::new(spec, store, client).run(shutdown).await;
//! # }
//! ```

mod engine;
pub mod observe;
mod outage;
pub mod persist;
pub mod spec;
pub mod status;
pub mod table;
mod unconfigured;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use state_store::StateStore;
use tokio::sync::watch;

use crate::Client;
use crate::consensus::{Agent, ConsensusSettings, View, ViewBoard, Views};
use crate::election::LeaderState;

pub use engine::Engine;
pub use observe::{ConsensusReport, Observer, Observers, StartedService, TargetRef};
pub use spec::{DaemonSpec, FailsafeSpec, ServiceSpec};
pub use status::{ConsensusStatus, ServiceStatus, StatusSnapshot, TargetStatus, TargetViews};

/// Tunables of the loop that the spec does not carry.
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
    /// Defaults for `spec`: a 30 ms batch, a flush every interval (at least 1 s), a 1.5 s
    /// grace, retries up to 30 s apart.
    pub fn for_spec(spec: &DaemonSpec) -> Self {
        DaemonOptions {
            batch_delay: Duration::from_millis(30),
            flush_interval: spec.interval.max(Duration::from_secs(1)),
            shutdown_grace: Duration::from_millis(1500),
            max_retry_delay: Duration::from_secs(30),
        }
    }
}

/// A daemon ready to run: the spec, the store and the client, plus what is optional.
pub struct Daemon {
    spec: DaemonSpec,
    store: Arc<dyn StateStore>,
    client: Client,
    options: DaemonOptions,
    observers: Observers,
    leadership: watch::Receiver<LeaderState>,
    identity: Option<String>,
    consensus: Option<(Arc<dyn ViewBoard>, ConsensusSettings)>,
}

impl Daemon {
    /// A daemon for `spec` that keeps its state in `store` and writes through `client`,
    /// always leading (no election), with [`DaemonOptions::for_spec`] and no observer.
    pub fn new(spec: DaemonSpec, store: Arc<dyn StateStore>, client: Client) -> Self {
        let options = DaemonOptions::for_spec(&spec);
        Daemon {
            spec,
            store,
            client,
            options,
            observers: Observers::default(),
            leadership: watch::channel(LeaderState::standalone("standalone")).1,
            identity: None,
            consensus: None,
        }
    }

    /// Other tunables.
    #[must_use]
    pub fn options(mut self, options: DaemonOptions) -> Self {
        self.options = options;
        self
    }

    /// Adds an observer; they are called in the order added.
    #[must_use]
    pub fn observe(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }

    /// Writes only while `leadership` says this replica leads (an
    /// [`election`](crate::election)); `identity` is shown in the status document.
    #[must_use]
    pub fn leadership(
        mut self,
        leadership: watch::Receiver<LeaderState>,
        identity: Option<String>,
    ) -> Self {
        self.leadership = leadership;
        self.identity = identity;
        self
    }

    /// Multi-vantage consensus (SPEC §9.1): publishes this replica's view on `board` and,
    /// while it leads, removes or restores a target only when a quorum of the fresh views
    /// agree. The replica is named by the identity given to [`leadership`](Self::leadership)
    /// (`standalone` without one). `settings` should be valid
    /// ([`ConsensusSettings::validate`]).
    #[must_use]
    pub fn consensus(mut self, board: Arc<dyn ViewBoard>, settings: ConsensusSettings) -> Self {
        self.consensus = Some((board, settings));
        self
    }

    /// Runs until `shutdown` resolves; returns once in-flight writes finished (or the grace
    /// ran out) and state was flushed.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let observers: Arc<dyn Observer> = Arc::new(self.observers);
        let replica = self
            .identity
            .clone()
            .unwrap_or_else(|| "standalone".to_owned());
        let (consensus, agent) = match self.consensus {
            Some((board, settings)) => {
                let (own_tx, own_rx) = watch::channel(View::abstaining(
                    replica.clone(),
                    "starting: the first probe cycle is not done",
                ));
                let (views_tx, views_rx) = watch::channel(Arc::new(Views::not_read()));
                let link = engine::consensus::Link::new(
                    replica.clone(),
                    settings.quorum,
                    own_tx,
                    views_rx,
                );
                let agent = Agent::new(board, settings, replica);
                let task = tokio::spawn(agent.run(own_rx, self.leadership.clone(), views_tx));
                (Some(link), Some(task))
            }
            None => (None, None),
        };
        let sweeper = unconfigured::Sweeper::new(
            &self.spec,
            self.client.clone(),
            self.leadership.clone(),
            observers.clone(),
        );
        let sweeping = tokio::spawn(sweeper.run());
        let engine = Engine::start(
            self.spec,
            self.store,
            self.client,
            self.options,
            engine::Wiring {
                observers,
                leadership: self.leadership,
                identity: self.identity,
                consensus,
            },
        )
        .await;
        engine.run(shutdown).await;
        sweeping.abort();
        if let Some(agent) = agent {
            // The engine is gone, so the agent withdraws this replica's view and ends.
            let _ = tokio::time::timeout(Duration::from_secs(2), agent).await;
        }
    }
}

/// Runs a daemon for `spec` without observers or election until `shutdown` resolves.
pub async fn run(
    spec: DaemonSpec,
    store: Arc<dyn StateStore>,
    client: Client,
    shutdown: impl Future<Output = ()> + Send,
) {
    Daemon::new(spec, store, client).run(shutdown).await;
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

    /// A spec keeping `default/web` with `targets` (probed every 300 ms, timeout 200 ms,
    /// rise and fall 1) and a client for `api` with token `t`.
    fn web(api: &ApiServer, targets: &[std::net::SocketAddr]) -> (DaemonSpec, Client) {
        let targets = targets
            .iter()
            .enumerate()
            .map(|(i, a)| probe_core::Target::new("web", format!("n{i}"), a.ip(), a.port()))
            .collect();
        let mut service = ServiceSpec::new("web", "default", "web", targets);
        service.rise = 1;
        service.fall = 1;
        service.schedule.interval = Duration::from_millis(300);
        service.schedule.timeout = Duration::from_millis(200);
        service.schedule.fast_interval = Duration::from_millis(50);
        let mut template = crate::Endpoints::new("default", "web");
        template.subsets.push(crate::EndpointSubset {
            ports: vec![crate::EndpointPort::tcp(80)],
            ..crate::EndpointSubset::default()
        });
        let mut spec = DaemonSpec::new(template, vec![service]);
        spec.interval = Duration::from_millis(300);
        spec.timeout = Duration::from_millis(200);
        let mut cc = crate::ClientConfig::from_url(api.url());
        cc.token = crate::TokenSource::Static(crate::Token::new("t"));
        (spec, Client::new(cc).unwrap())
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
        let (mut spec, client) = web(&api, &[target.addr()]);
        spec.resync_interval = Duration::from_millis(300);
        spec.prune = true;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let store = Arc::new(state_store::MemoryStore::new());
        let daemon = tokio::spawn(run(spec, store, client, async move {
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
        let addrs: Vec<std::net::SocketAddr> = targets.iter().map(ToggleTarget::addr).collect();
        let (spec, client) = web(&api, &addrs);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let daemon = tokio::spawn(run(spec, Arc::new(broken_store()), client, async move {
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
