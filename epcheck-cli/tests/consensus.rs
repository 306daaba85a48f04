//! Multi-vantage consensus (SPEC §9.1): `epcheck run` replicas that agree before a backend
//! leaves a Service. Every assertion is on the stand-in ApiServer's objects and request log.
//!
//! Two set-ups:
//! * one real leader and two replicas played by the test, which publish their views through
//!   the library's [`LeaseBoard`] exactly as a replica does: this is how "only the leader
//!   cannot reach a backend" is made on loopback (the netns lab does it with routes);
//! * three real replicas (Lease and Redis boards), for removal by agreement and for a replica
//!   that dies.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixtures::apiserver::{ApiServer, Permissions, Resource};
use fixtures::redis::RedisServer;
use fixtures::targets::ToggleTarget;
use k8s_endpoints::consensus::{LeaseBoard, View, ViewBoard};

use crate::daemon::{Daemon, ip_of, until_ready};
use crate::util::{Epcheck, web_config};

const LEASE_MS: u64 = 2000;
const RENEW_MS: u64 = 1400;
const RETRY_MS: u64 = 300;
const HEARTBEAT_MS: u64 = 400;
const TTL_MS: u64 = 3000;
const READ_MS: u64 = 200;

async fn api() -> ApiServer {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.put_service("default", "web");
    api
}

/// Starts replica `n` (user and POD_NAME `replica-N`): probes every 400 ms (fall and rise 1),
/// consensus with a fast heartbeat, leader election on `backend`, and `extra` top-level keys.
fn replica(
    e: &Epcheck,
    api: &ApiServer,
    targets: &[ToggleTarget],
    n: usize,
    backend: &str,
    store_block: &str,
    extra: &str,
) -> Daemon {
    let token = format!("token-of-replica-{n}");
    api.add_user_token(token.clone(), format!("replica-{n}"), Permissions::all());
    e.write(&format!("token-{n}"), &token);
    let ips: Vec<String> = targets.iter().map(ip_of).collect();
    let top = format!(
        "interval: 400\npingtimeout: 300\nurl: {}\ntoken_file: token-{n}\nresync_interval: 60000\n\
         {extra}\nprobe: {{rise: 1, fall: 1, fast_interval: 100}}\n{store_block}\
         leader_election:\n  enabled: true\n  backend: {backend}\n  namespace: default\n  name: epcheck\n\
         \x20 lease_duration: {LEASE_MS}\n  renew_deadline: {RENEW_MS}\n  retry_period: {RETRY_MS}\n\
         consensus:\n  enabled: true\n  heartbeat: {HEARTBEAT_MS}\n  ttl: {TTL_MS}\n  read_interval: {READ_MS}\n",
        api.url()
    );
    let path = e.write(
        &format!("c{n}.yaml"),
        &web_config(&top, targets[0].addr().port(), &ips),
    );
    let pod = format!("replica-{n}");
    Daemon::start_with_env(e, path.to_str().unwrap(), &[("POD_NAME", &pod)])
}

/// The ready addresses of `default/web` now.
fn ready(api: &ApiServer) -> BTreeSet<String> {
    api.get_object(Resource::Endpoints, "default", "web")
        .map(|o| {
            o["subsets"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a["ip"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Successful writes of the Endpoints object so far.
fn endpoint_writes(api: &ApiServer) -> usize {
    api.writes()
        .iter()
        .filter(|w| w.path.ends_with("/endpoints/web") && w.status.is_some_and(|s| s < 300))
        .count()
}

/// Waits until `ip` is in (or out of) the ready set; how long it took.
async fn until_membership(
    api: &ApiServer,
    ip: &str,
    present: bool,
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if ready(api).contains(ip) == present {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

/// A replica played by the test: it publishes a view with the down set it is told, every
/// heartbeat, through the same board a real replica uses.
struct FakeReplica {
    down: Arc<Mutex<BTreeSet<IpAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeReplica {
    fn start(api: &ApiServer, name: &str) -> FakeReplica {
        let token = format!("token-of-{name}");
        api.add_user_token(token.clone(), name.to_owned(), Permissions::all());
        let mut cc = k8s_endpoints::ClientConfig::from_url(api.url());
        cc.ca_file = None;
        cc.token = k8s_endpoints::TokenSource::Static(k8s_endpoints::Token::new(token));
        let client = k8s_endpoints::Client::new(cc).unwrap();
        let board = LeaseBoard::new(client, "default", "epcheck");
        let down = Arc::new(Mutex::new(BTreeSet::new()));
        let shared = down.clone();
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let set = shared.lock().unwrap().clone();
                let view = View::voting(name.clone(), BTreeMap::from([("web".to_owned(), set)]));
                let _ = board.publish(&view, Duration::from_millis(TTL_MS)).await;
                tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS / 2)).await;
            }
        });
        FakeReplica { down, task }
    }

    fn sees_down(&self, ips: &[&str]) {
        *self.down.lock().unwrap() = ips.iter().map(|i| i.parse().unwrap()).collect();
    }

    /// Stops publishing, as if the replica died (its view goes stale after the TTL).
    fn die(self) {
        self.task.abort();
    }
}

/// The leader alone cannot reach a backend: it stays. A second replica seeing it down
/// removes it. With one replica dead, the two left must agree to bring it back. A leader
/// whose probes all fail removes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_leaves_only_when_a_quorum_sees_it_down() {
    let api = api().await;
    let mut targets = ToggleTarget::start_group(3).await.unwrap();
    let ips: Vec<String> = targets.iter().map(ip_of).collect();
    let (b, c) = (
        FakeReplica::start(&api, "replica-b"),
        FakeReplica::start(&api, "replica-c"),
    );
    let e = Epcheck::new();
    // The leader serves /status and /metrics and runs a notify script that records its
    // environment.
    let notified = e.dir.path().join("notified");
    let script = e.write(
        "notify.sh",
        &format!(
            "#!/bin/sh\nenv | grep ^EPCHECK_ | sort >> {notified:?}\necho --- >> {notified:?}\n"
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let extra = format!(
        "metrics: {{listen: \"127.0.0.1:0\"}}\nnotify: {{script: {}}}",
        script.display()
    );
    let leader = replica(&e, &api, &targets, 0, "lease", "", &extra);
    let metrics = leader.metrics_addr().await;
    assert!(
        until_ready(&api, &ips, Duration::from_secs(10))
            .await
            .is_some(),
        "never written:\n{}",
        leader.log()
    );
    assert!(
        leader
            .wait_log("this replica leads", Duration::from_secs(5))
            .await
    );
    // The views are read and count (the fakes' Leases change every heartbeat).
    assert!(
        leader
            .wait_log("consensus: a replica's view counts", Duration::from_secs(5))
            .await,
        "{}",
        leader.log()
    );
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 2)).await;

    // Only the leader sees node-01 fail (it really refuses; the others say it is up).
    let writes = endpoint_writes(&api);
    targets[0].refuse().await;
    assert!(
        leader.wait_log("target down", Duration::from_secs(3)).await,
        "{}",
        leader.log()
    );
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    assert!(
        ready(&api).contains(&ips[0]),
        "removed on the leader's view alone:\n{}",
        leader.log()
    );
    assert_eq!(endpoint_writes(&api), writes, "the Endpoints were written");
    // /status says who sees it how; the metrics count the views and the disagreement.
    let status = fixtures::http::get(&metrics, "/status", "application/json")
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    let votes = &status["services"][0]["targets"][0]["views"];
    let me = identity(&leader.log());
    assert_eq!(votes["down"], serde_json::json!([me]), "{status}");
    assert_eq!(
        votes["up"],
        serde_json::json!(["replica-b", "replica-c"]),
        "{status}"
    );
    assert_eq!(
        status["consensus"]["fresh"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    assert_eq!(
        status["consensus"]["holding"],
        serde_json::Value::Null,
        "{status}"
    );
    let scrape = fixtures::http::get(&metrics, "/metrics", "text/plain")
        .await
        .unwrap()
        .body;
    for line in [
        "epcheck_consensus_views{state=\"fresh\"} 3",
        "epcheck_consensus_views{state=\"stale\"} 0",
        "epcheck_consensus_disagreements{service=\"web\"} 1",
        "epcheck_consensus_holding 0",
    ] {
        assert!(
            scrape.lines().any(|l| l == line),
            "no {line:?} in:\n{scrape}"
        );
    }
    assert!(
        !std::fs::read_to_string(&notified)
            .unwrap_or_default()
            .contains("EPCHECK_TARGET"),
        "a replica's own probe result was notified:\n{}",
        std::fs::read_to_string(&notified).unwrap_or_default()
    );

    // A second replica sees it down: 2 of 3 agree, it goes.
    b.sees_down(&[&ips[0]]);
    let took = until_membership(&api, &ips[0], false, Duration::from_secs(3)).await;
    assert!(
        took.is_some(),
        "not removed with 2/3 down:\n{}",
        leader.log()
    );
    assert!(
        leader
            .wait_log("2/3 see it down", Duration::from_secs(2))
            .await,
        "{}",
        leader.log()
    );
    // The notification is the decision, with how many agreed.
    let deadline = Instant::now() + Duration::from_secs(3);
    let text = loop {
        let text = std::fs::read_to_string(&notified).unwrap_or_default();
        if text.contains("EPCHECK_AGREED") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for want in [
        "EPCHECK_AGREED=2/3 see it down",
        "EPCHECK_TO=down",
        "EPCHECK_TARGET=node-01",
    ] {
        assert!(text.lines().any(|l| l == want), "no {want} in:\n{text}");
    }

    // Replica c dies: after its TTL two views are fresh, and both must agree.
    c.die();
    assert!(
        leader
            .wait_log(
                "consensus: a replica's view does not count",
                Duration::from_millis(TTL_MS * 3)
            )
            .await,
        "{}",
        leader.log()
    );
    targets[0].accept().await.unwrap();
    assert!(leader.wait_log("target up", Duration::from_secs(3)).await);
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    assert!(
        !ready(&api).contains(&ips[0]),
        "restored with 1 of 2 fresh views up:\n{}",
        leader.log()
    );
    b.sees_down(&[]);
    assert!(
        until_membership(&api, &ips[0], true, Duration::from_secs(3))
            .await
            .is_some(),
        "not restored with 2/2 up:\n{}",
        leader.log()
    );

    // The leader is cut off from every backend: its fail-safe holds and it abstains; nothing
    // is removed.
    let writes = endpoint_writes(&api);
    for t in &mut targets {
        t.refuse().await;
    }
    assert!(
        leader
            .wait_log("fail-safe active", Duration::from_secs(5))
            .await,
        "{}",
        leader.log()
    );
    tokio::time::sleep(Duration::from_millis(TTL_MS)).await;
    assert_eq!(
        endpoint_writes(&api),
        writes,
        "written while cut off:\n{}",
        leader.log()
    );
    assert_eq!(ready(&api).len(), 3);
    b.die();
    let (code, _, log) = leader.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    // A clean shutdown withdraws the view.
    assert!(
        api.get_object(
            Resource::Leases,
            "default",
            &k8s_endpoints::consensus::lease_name("epcheck", &identity(&log))
        )
        .is_none(),
        "the view Lease is still there:\n{log}"
    );
}

/// The election identity the log shows.
fn identity(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("leader election on"))
        .unwrap();
    let at = line.find("identity=").unwrap() + "identity=".len();
    line[at..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// Three real replicas: a backend that really stops is removed within detection time plus a
/// publish and a read; a replica killed outright stops counting after its TTL and the two
/// left still decide.
async fn three_replicas(backend: &str, store_block: &str) {
    let api = api().await;
    let mut targets = ToggleTarget::start_group(3).await.unwrap();
    let ips: Vec<String> = targets.iter().map(ip_of).collect();
    let e = Epcheck::new();
    let mut daemons: Vec<Option<Daemon>> = (0..3)
        .map(|n| {
            Some(replica(
                &e,
                &api,
                &targets,
                n,
                backend,
                store_block,
                "metrics: {listen: off}",
            ))
        })
        .collect();
    assert!(
        until_ready(&api, &ips, Duration::from_secs(10))
            .await
            .is_some()
    );
    let logs = |d: &[Option<Daemon>]| {
        d.iter()
            .flatten()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    // Every replica's view counts on the leader before anything fails.
    let deadline = Instant::now() + Duration::from_secs(8);
    let leader = loop {
        let found = daemons.iter().position(|d| {
            d.as_ref().is_some_and(|d| {
                let log = d.log();
                log.contains("this replica leads")
                    && log.matches("consensus: a replica's view counts").count() >= 2
            })
        });
        if let Some(i) = found {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no leader counting both views:\n{}",
            logs(&daemons)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS * 2)).await;

    targets[1].refuse().await;
    let took = until_membership(&api, &ips[1], false, Duration::from_secs(5)).await;
    assert!(took.is_some(), "not removed:\n{}", logs(&daemons));
    // Detection (fall 1: the next probe, ≤ 400 ms + jitter) + a publish (≤ 200 ms gap) + a
    // read (≤ 200 ms) + the batch: about 1 s, with room for a two-core machine running the
    // other tests (the netns lab measures it on a quiet network: 0.4 s).
    assert!(
        took.unwrap() < Duration::from_millis(4000),
        "removal took {took:?}"
    );

    // Kill a follower: after its TTL the other two decide.
    let follower = (0..3).find(|&i| i != leader).unwrap();
    daemons[follower].take().unwrap().kill().await;
    let l = daemons[leader].as_ref().unwrap();
    assert!(
        l.wait_log(
            "consensus: a replica's view does not count",
            Duration::from_millis(TTL_MS * 3)
        )
        .await,
        "{}",
        l.log()
    );
    targets[2].refuse().await;
    assert!(
        until_membership(&api, &ips[2], false, Duration::from_secs(5))
            .await
            .is_some(),
        "the two replicas left did not remove it:\n{}",
        logs(&daemons)
    );
    targets[1].accept().await.unwrap();
    targets[2].accept().await.unwrap();
    assert!(
        until_ready(&api, &ips, Duration::from_secs(5))
            .await
            .is_some(),
        "not restored:\n{}",
        logs(&daemons)
    );
    for d in daemons.iter_mut().filter_map(Option::take) {
        let (code, _, log) = d.terminate().await;
        assert_eq!(code, Some(0), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_through_leases() {
    three_replicas("lease", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_through_redis() {
    let Some(redis) = RedisServer::start().unwrap() else {
        return;
    };
    let block = format!(
        "redis:\n  ipport: {}\n  key_prefix: \"cs:\"\n",
        redis.address()
    );
    three_replicas("redis", &block).await;
}

/// The etcd lock elects; the views are etcd keys bound to each replica's etcd lease.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_with_the_etcd_lock() {
    let Some(etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    let block = format!(
        "etcd:\n  endpoints: [\"{}\"]\n  key_prefix: \"cs/\"\n",
        etcd.endpoint()
    );
    three_replicas("etcd", &block).await;
}
