//! Leader election as the config asks for it (SPEC §9): which backend, and starting it as a
//! [`k8s_endpoints::election::Election`], whose `watch::Receiver<LeaderState>` says whether
//! this replica may write — the same for both backends:
//!
//! * `backend: lease` — [`k8s_endpoints::election::LeaderElector`] on a
//!   `coordination.k8s.io/v1` Lease, through the daemon's ApiServer [`Client`];
//! * `backend: redis` — [`k8s_endpoints::election::TtlElector`] on the lock key
//!   `<prefix>lock:<name>` ([`RedisTtlLock`]);
//! * `backend: etcd` (feature `etcd`) — the same elector on the key `<prefix>_lock/<name>`,
//!   bound to an etcd lease (`EtcdTtlLock`).
//!
//! In both, a leader that has not renewed within `renew_deadline` of the start of its last
//! successful renewal stops leading at once, by a timer, even while a renewal hangs — before
//! the lock can expire for anyone else (`renew_deadline < lease_duration`).

use std::path::Path;
use std::sync::Arc;

use k8s_endpoints::consensus::{ExpiringBoard, LeaseBoard, ViewBoard};

use k8s_endpoints::election::{Election, ElectionConfig, RedisTtlLock, identity, lease_namespace};
use k8s_endpoints::{Client, TokenLocation};
use state_store::RedisStore;

use crate::config::{Config, Environment, LeaderBackend};
use crate::store::redis_options;

/// Why the election cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaderError {
    /// Invalid timings or Lease name (see the source).
    #[error("cannot start leader election")]
    Election(#[from] k8s_endpoints::Error),
    /// `backend: redis` without a `redis` section.
    #[error(
        "leader_election.backend is redis but no Redis is configured; set redis.ipport or use backend: lease"
    )]
    NoRedis,
    /// The Redis options of the config are invalid.
    #[error("cannot set up the Redis connection for the leader lock")]
    Redis(#[source] state_store::Error),
    /// `backend: etcd` without an `etcd` section, or in a build without the etcd store.
    #[error(
        "leader_election.backend is etcd but no etcd is configured (or this epcheck was built \
         without the `etcd` feature); add an etcd section or use backend: lease"
    )]
    NoEtcd,
    /// The etcd options of the config are invalid.
    #[error("cannot set up the etcd connection for the leader lock")]
    Etcd(#[source] state_store::Error),
}

/// Which election the config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaderBackendKind {
    /// `leader_election.enabled: false`: this replica always leads.
    Disabled,
    /// A Lease `namespace/name`.
    Lease {
        /// The Lease's namespace (configured, else `POD_NAMESPACE`, the service account's
        /// `namespace` file, `default`).
        namespace: String,
        /// The Lease's name.
        name: String,
    },
    /// The Redis lock key `<prefix>lock:<name>`.
    Redis {
        /// The lock's name.
        name: String,
    },
    /// The etcd lock key `<prefix>_lock/<name>`.
    Etcd {
        /// The lock's name.
        name: String,
    },
}

/// The backend of `config`; `cwd` locates the token file whose `namespace` file names the
/// Lease's namespace when the config does not.
pub fn backend_kind(config: &Config, env: &dyn Environment, cwd: &Path) -> LeaderBackendKind {
    let le = &config.leader_election;
    if !le.enabled {
        return LeaderBackendKind::Disabled;
    }
    let name = le.name.clone();
    match le.backend {
        LeaderBackend::Redis => LeaderBackendKind::Redis { name },
        LeaderBackend::Etcd => LeaderBackendKind::Etcd { name },
        LeaderBackend::Lease => {
            let namespace = le.namespace.clone().unwrap_or_else(|| {
                let token = TokenLocation::from_setting(&config.token_file)
                    .candidates(cwd)
                    .into_iter()
                    .find(|p| p.is_file());
                lease_namespace(&|k| env.var(k), token.as_deref())
            });
            LeaderBackendKind::Lease { namespace, name }
        }
    }
}

/// The election settings of `config` for `identity`.
pub fn election_config(config: &Config, identity: &str) -> ElectionConfig {
    let le = &config.leader_election;
    ElectionConfig {
        lease_duration: le.lease_duration,
        renew_deadline: le.renew_deadline,
        retry_period: le.retry_period,
        identity: identity.to_owned(),
        release_on_cancel: true,
    }
}

/// Starts the election `config` asks for; `client` is used for a Lease, `env` and `cwd` for
/// the identity and the Lease's namespace. Must be called within a tokio runtime.
///
/// # Errors
///
/// [`LeaderError`] for invalid timings or names, or `backend: redis` without Redis.
pub async fn start_election(
    config: &Config,
    client: &Client,
    env: &dyn Environment,
    cwd: &Path,
) -> Result<Election, LeaderError> {
    let id = identity(&|k| env.var(k));
    let settings = election_config(config, &id);
    Ok(match backend_kind(config, env, cwd) {
        LeaderBackendKind::Disabled => Election::standalone(id),
        LeaderBackendKind::Lease { namespace, name } => {
            Election::lease(client, &namespace, &name, settings)?
        }
        LeaderBackendKind::Redis { name } => {
            let redis = config.redis.as_ref().ok_or(LeaderError::NoRedis)?;
            let store = RedisStore::new_lazy(redis_options(redis))
                .await
                .map_err(LeaderError::Redis)?;
            Election::ttl_lock(RedisTtlLock(store.lock(&name)), settings)?
        }
        LeaderBackendKind::Etcd { name } => etcd_election(config, &name, settings).await?,
    })
}

#[cfg(feature = "etcd")]
async fn etcd_election(
    config: &Config,
    name: &str,
    settings: ElectionConfig,
) -> Result<Election, LeaderError> {
    let etcd = config.etcd.as_ref().ok_or(LeaderError::NoEtcd)?;
    let store = state_store::EtcdStore::new_lazy(crate::store::etcd_options(etcd))
        .await
        .map_err(LeaderError::Etcd)?;
    let lock = k8s_endpoints::election::EtcdTtlLock(store.lock(name));
    Ok(Election::ttl_lock(lock, settings)?)
}

#[cfg(not(feature = "etcd"))]
async fn etcd_election(
    _config: &Config,
    _name: &str,
    _settings: ElectionConfig,
) -> Result<Election, LeaderError> {
    Err(LeaderError::NoEtcd)
}

/// The board the replicas' consensus views go on (SPEC §9.1), if `consensus.enabled`: Leases
/// labelled `epcheck.io/view-of=<name>` beside the election's Lease, Redis keys under
/// `<prefix>view:<name>:` with `backend: redis`, or etcd keys under `<prefix>_views/<name>/`
/// bound to each replica's etcd lease with `backend: etcd`.
///
/// # Errors
///
/// [`LeaderError::NoRedis`] or [`LeaderError::Redis`] as for the election.
pub async fn consensus_board(
    config: &Config,
    client: &Client,
    env: &dyn Environment,
    cwd: &Path,
) -> Result<Option<Arc<dyn ViewBoard>>, LeaderError> {
    if !config.consensus.enabled {
        return Ok(None);
    }
    Ok(match backend_kind(config, env, cwd) {
        LeaderBackendKind::Disabled => None,
        LeaderBackendKind::Lease { namespace, name } => {
            Some(Arc::new(LeaseBoard::new(client.clone(), namespace, name)))
        }
        LeaderBackendKind::Redis { name } => {
            let redis = config.redis.as_ref().ok_or(LeaderError::NoRedis)?;
            let store = RedisStore::new_lazy(redis_options(redis))
                .await
                .map_err(LeaderError::Redis)?;
            Some(Arc::new(ExpiringBoard(store.views(&name))))
        }
        LeaderBackendKind::Etcd { name } => etcd_board(config, &name).await?,
    })
}

#[cfg(feature = "etcd")]
async fn etcd_board(
    config: &Config,
    name: &str,
) -> Result<Option<Arc<dyn ViewBoard>>, LeaderError> {
    let etcd = config.etcd.as_ref().ok_or(LeaderError::NoEtcd)?;
    let store = state_store::EtcdStore::new_lazy(crate::store::etcd_options(etcd))
        .await
        .map_err(LeaderError::Etcd)?;
    let board = ExpiringBoard(store.views(name));
    Ok(Some(Arc::new(board)))
}

#[cfg(not(feature = "etcd"))]
async fn etcd_board(
    _config: &Config,
    _name: &str,
) -> Result<Option<Arc<dyn ViewBoard>>, LeaderError> {
    Err(LeaderError::NoEtcd)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::HashMap;
    use std::time::Duration;

    use fixtures::apiserver::{ApiServer, Permissions, Resource};
    use fixtures::redis::RedisServer;
    use state_store::RedisOptions;
    use tokio::time::Instant;

    use super::*;

    const LEASE: Duration = Duration::from_secs(2);
    const RENEW: Duration = Duration::from_secs(1);
    const RETRY: Duration = Duration::from_millis(200);
    const SLACK: Duration = Duration::from_millis(300);

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config(url: &str) -> Config {
        let text = format!(
            "interval: 1000\npingtimeout: 500\nurl: {url}\ntoken_file: t\n\
             service_info: {{web: {{namespace: default, name: web}}}}\n\
             service_healthcheck_list: {{web: {{port: 80, iplist: [{{name: n0, ip: 198.51.100.1}}]}}}}\n\
             endpoint_template: {{kind: Endpoints, apiVersion: v1, subsets: [{{ports: [{{port: 80}}]}}]}}\n"
        );
        let mut c = crate::config::check(&text, Path::new("c.yaml"), &env(&[]))
            .unwrap()
            .config;
        c.leader_election.lease_duration = LEASE;
        c.leader_election.renew_deadline = RENEW;
        c.leader_election.retry_period = RETRY;
        c
    }

    #[tokio::test]
    async fn selection_and_start_errors() {
        let mut c = config("http://127.0.0.1:1");
        let mut cc = k8s_endpoints::ClientConfig::from_url("http://127.0.0.1:1");
        (cc.ca_file, cc.token) = (None, k8s_endpoints::TokenSource::None);
        let client = Client::new(cc).unwrap();
        let (cwd, e) = (
            Path::new("/none"),
            env(&[("POD_NAMESPACE", "ops"), ("POD_NAME", "p-1")]),
        );
        assert_eq!(backend_kind(&c, &e, cwd), LeaderBackendKind::Disabled);
        let standalone = start_election(&c, &client, &e, cwd).await.unwrap();
        assert!(standalone.is_leader() && standalone.identity().starts_with("p-1_"));
        standalone.shutdown().await;
        c.leader_election.enabled = true;
        let lease = |ns: &str| LeaderBackendKind::Lease {
            namespace: ns.into(),
            name: "epcheck".into(),
        };
        assert_eq!(backend_kind(&c, &e, cwd), lease("ops"));
        c.leader_election.namespace = Some("team".into());
        assert_eq!(backend_kind(&c, &e, cwd), lease("team"));
        c.leader_election.backend = LeaderBackend::Redis;
        let redis = LeaderBackendKind::Redis {
            name: "epcheck".into(),
        };
        assert_eq!(backend_kind(&c, &e, cwd), redis);
        let s = election_config(&c, "me_abc123");
        assert_eq!(
            (s.lease_duration, s.renew_deadline, s.retry_period),
            (LEASE, RENEW, RETRY)
        );
        c.redis = None;
        let err = start_election(&c, &client, &e, cwd).await.unwrap_err();
        assert!(matches!(err, LeaderError::NoRedis), "{err}");
        c.leader_election.backend = LeaderBackend::Lease;
        c.leader_election.renew_deadline = LEASE;
        let err = start_election(&c, &client, &e, cwd).await.unwrap_err();
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("lease_duration > renew_deadline"), "{chain}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lease_backend_leads_and_releases() {
        let api = ApiServer::start().await.unwrap();
        api.add_token("t", Permissions::all());
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t"), "t").unwrap();
        let mut c = config(&api.url());
        c.leader_election.enabled = true;
        let e = env(&[("POD_NAMESPACE", "ops")]);
        let client = crate::apiserver::connect(&c, dir.path(), &e).unwrap();
        let election = start_election(&c, &client, &e, dir.path()).await.unwrap();
        let mut rx = election.subscribe();
        rx.wait_for(|s| s.is_leader).await.unwrap();
        let holder = |api: &ApiServer| {
            api.get_object(Resource::Leases, "ops", "epcheck").unwrap()["spec"]["holderIdentity"]
                .clone()
        };
        assert_eq!(holder(&api), election.identity());
        election.shutdown().await;
        assert!(!rx.borrow().is_leader);
        assert_eq!(holder(&api), "");
    }

    async fn redis_elector(addr: &str, id: &str) -> Election {
        let mut o = RedisOptions::new(addr);
        o.key_prefix = "leader-test:".into();
        let store = RedisStore::connect(o).await.unwrap();
        let settings = ElectionConfig {
            lease_duration: LEASE,
            renew_deadline: RENEW,
            retry_period: RETRY,
            ..ElectionConfig::new(id)
        };
        Election::ttl_lock(RedisTtlLock(store.lock("epcheck")), settings).unwrap()
    }

    /// The leader's index, polling every 20 ms up to `within`; never two at once.
    async fn leader(cs: &[Election], within: Duration) -> usize {
        let end = Instant::now() + within;
        loop {
            let leaders: Vec<usize> = (0..cs.len()).filter(|&i| cs[i].is_leader()).collect();
            assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
            if let Some(&i) = leaders.first() {
                return i;
            }
            assert!(Instant::now() < end, "no leader within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Exactly one leader, the same, at every 20 ms sample for `dur`.
    async fn steady(cs: &[Election], who: usize, dur: Duration) {
        let end = Instant::now() + dur;
        while Instant::now() < end {
            assert_eq!(leader(cs, Duration::ZERO).await, who);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_one_leader_failover_and_release() {
        let Some(server) = RedisServer::start().unwrap() else {
            return;
        };
        let mut cs = Vec::new();
        for id in ["a", "b", "c"] {
            cs.push(redis_elector(&server.address(), id).await);
        }
        let first = leader(&cs, Duration::from_secs(2)).await;
        steady(&cs, first, Duration::from_secs(3)).await;
        let id = cs[first].identity().to_owned();
        assert!(
            cs.iter()
                .all(|c| c.subscribe().borrow().leader.as_deref() == Some(&*id))
        );
        // Killed without a release: the key expires on Redis after lease_duration.
        let dead = cs.remove(first);
        let dead_until = dead.subscribe().borrow().valid_until.unwrap();
        dead.abort();
        let killed = Instant::now();
        let next = leader(&cs, LEASE + RETRY.mul_f64(1.2) + SLACK).await;
        let took = killed.elapsed();
        eprintln!("redis failover after a kill: {took:?}");
        assert!(took >= LEASE - RETRY - SLACK, "{took:?}");
        assert!(dead_until < cs[next].subscribe().borrow().since);
        steady(&cs, next, Duration::from_millis(500)).await;
        // Released on shutdown: the other one takes over within a jittered retry.
        let leaving = cs.remove(next);
        let rx = leaving.subscribe();
        leaving.shutdown().await;
        let stopped = rx.borrow().since;
        let next = leader(&cs, RETRY.mul_f64(1.2) + SLACK).await;
        let took = cs[next].subscribe().borrow().since - stopped;
        eprintln!("redis hand-over after a release: {took:?}");
        assert!(took < RETRY.mul_f64(1.2) + SLACK, "{took:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_leader_steps_down_when_redis_is_gone() {
        let Some(mut server) = RedisServer::start().unwrap() else {
            return;
        };
        let cs = vec![redis_elector(&server.address(), "a").await];
        leader(&cs, Duration::from_secs(2)).await;
        tokio::time::sleep(RETRY * 2).await;
        server.stop();
        let gone = Instant::now();
        // No renewal can succeed from here on: this is the term's last deadline.
        let until = cs[0].subscribe().borrow().valid_until.unwrap();
        assert!(until - gone <= RENEW);
        let mut rx = cs[0].subscribe();
        let since = rx.wait_for(|s| !s.is_leader).await.unwrap().since;
        eprintln!("redis gone: stopped leading after {:?}", since - gone);
        assert!(
            since - until <= Duration::from_millis(100),
            "{:?}",
            since - until
        );
    }
}
