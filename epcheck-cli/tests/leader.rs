//! Several `epcheck run` replicas with leader election: exactly one writes at a time.

use std::time::{Duration, Instant};

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, Resource};
use fixtures::redis::RedisServer;
use fixtures::targets::ToggleTarget;

use crate::daemon::{Daemon, ip_of, until_ready};
use crate::util::{Epcheck, web_config};

const LEASE_MS: u64 = 2000;
const RENEW_MS: u64 = 1400;
const RETRY_MS: u64 = 300;

struct Replicas {
    api: ApiServer,
    _e: Epcheck,
    targets: Vec<ToggleTarget>,
    daemons: Vec<Option<Daemon>>,
}

/// Three replicas, each with its own token (so the stand-in's log tells them apart: user
/// `replica-N`) and POD_NAME.
async fn start(backend: &str, store_block: &str) -> Replicas {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.put_service("default", "web");
    let targets = ToggleTarget::start_group(3).await.unwrap();
    let e = Epcheck::new();
    let ips: Vec<String> = targets.iter().map(ip_of).collect();
    let mut daemons = Vec::new();
    for n in 0..3 {
        let token = format!("token-of-replica-{n}");
        api.add_user_token(token.clone(), format!("replica-{n}"), Permissions::all());
        e.write(&format!("token-{n}"), &token);
        let top = format!(
            "interval: 400\npingtimeout: 300\nurl: {}\ntoken_file: token-{n}\nresync_interval: 60000\n\
             metrics: {{listen: off}}\nprobe: {{rise: 1, fall: 1, fast_interval: 100}}\n{store_block}\
             leader_election:\n  enabled: true\n  backend: {backend}\n  namespace: default\n  name: epcheck\n\
             \x20 lease_duration: {LEASE_MS}\n  renew_deadline: {RENEW_MS}\n  retry_period: {RETRY_MS}\n",
            api.url()
        );
        let path = e.write(
            &format!("c{n}.yaml"),
            &web_config(&top, targets[0].addr().port(), &ips),
        );
        let pod = format!("replica-{n}");
        daemons.push(Some(Daemon::start_with_env(
            &e,
            path.to_str().unwrap(),
            &[("POD_NAME", &pod)],
        )));
    }
    Replicas {
        api,
        _e: e,
        targets,
        daemons,
    }
}

/// The users that wrote Endpoints, in order, with consecutive repeats collapsed.
fn endpoint_writers(api: &ApiServer) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in api.writes() {
        if !w.path.contains("/endpoints") || w.status.is_none_or(|s| s >= 300) {
            continue;
        }
        let user = w.user().unwrap_or("?").to_string();
        if out.last() != Some(&user) {
            out.push(user);
        }
    }
    out
}

/// Which replica (0..3) logged that it leads now, waiting up to `within`.
async fn leader(r: &Replicas, exclude: Option<usize>, within: Duration) -> Option<usize> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for (i, d) in r.daemons.iter().enumerate() {
            if Some(i) == exclude {
                continue;
            }
            if let Some(d) = d {
                let log = d.log();
                let leads = log.rfind("this replica leads");
                let follows = log.rfind("following");
                if leads.is_some() && leads > follows {
                    return Some(i);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

async fn flip_and_wait(r: &mut Replicas, idx: usize, accept: bool) {
    r.targets[idx].set_accepting(accept).await.unwrap();
    let want: Vec<String> = r
        .targets
        .iter()
        .filter(|t| t.is_accepting())
        .map(ip_of)
        .collect();
    let logs: Vec<String> = r.daemons.iter().flatten().map(Daemon::log).collect();
    assert!(
        until_ready(&r.api, &want, Duration::from_secs(6))
            .await
            .is_some(),
        "not written; logs:\n{}",
        logs.join("\n-----\n")
    );
}

fn redis_block(address: &str) -> String {
    format!("redis:\n  ipport: {address}\n  key_prefix: \"le:\"\n")
}

#[cfg(feature = "etcd")]
fn etcd_block(etcd: &fixtures::etcd::EtcdServer) -> String {
    format!(
        "etcd:\n  endpoints: [\"{}\"]\n  key_prefix: \"le/\"\n",
        etcd.endpoint()
    )
}

async fn failover(backend: &str, store_block: &str) {
    let mut r = start(backend, store_block).await;
    let all: Vec<String> = r.targets.iter().map(ip_of).collect();
    assert!(
        until_ready(&r.api, &all, Duration::from_secs(8))
            .await
            .is_some()
    );
    let first = leader(&r, None, Duration::from_secs(5))
        .await
        .expect("a leader");
    flip_and_wait(&mut r, 0, false).await;
    assert_eq!(endpoint_writers(&r.api), vec![format!("replica-{first}")]);

    // The leader's node dies: no release, the lease must expire on the others' clocks.
    let killed_at = Instant::now();
    r.daemons[first].take().unwrap().kill().await;
    let next = leader(&r, Some(first), Duration::from_millis(LEASE_MS * 3))
        .await
        .expect("failover");
    let took = killed_at.elapsed();
    eprintln!("{backend}: failover took {took:?} (lease {LEASE_MS} ms)");
    assert!(
        took <= Duration::from_millis(LEASE_MS + 2 * RETRY_MS + 1500),
        "failover took {took:?} (lease {LEASE_MS} ms)"
    );
    flip_and_wait(&mut r, 0, true).await;
    // Writes from exactly one identity at a time: the old leader's, then the new one's.
    assert_eq!(
        endpoint_writers(&r.api),
        vec![format!("replica-{first}"), format!("replica-{next}")]
    );
    for d in r.daemons.iter_mut().filter_map(Option::take) {
        let (code, _, log) = d.terminate().await;
        assert_eq!(code, Some(0), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_one_writer_and_failover_within_a_lease() {
    failover("lease", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lock_one_writer_and_failover_within_a_lease() {
    let Some(redis) = RedisServer::start().unwrap() else {
        return;
    };
    failover("redis", &redis_block(&redis.address())).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_lock_one_writer_and_failover_within_a_lease() {
    let Some(etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    failover("etcd", &etcd_block(&etcd)).await;
}

/// etcd stops answering (SIGSTOP: connections stay open, like a partition): the leader cannot
/// keep its lease alive and must stop leading within renew_deadline, before the lease can
/// expire; once etcd answers again one replica leads and the Endpoints converge under it.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_cannot_keep_its_etcd_lease_alive_steps_down() {
    let Some(etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    let mut r = start("etcd", &etcd_block(&etcd)).await;
    let all: Vec<String> = r.targets.iter().map(ip_of).collect();
    assert!(
        until_ready(&r.api, &all, Duration::from_secs(8))
            .await
            .is_some()
    );
    let first = leader(&r, None, Duration::from_secs(5))
        .await
        .expect("a leader");
    etcd.pause();
    let paused_at = Instant::now();
    let old = r.daemons[first].as_ref().unwrap();
    let stepped = old
        .wait_log("following", Duration::from_millis(RENEW_MS * 3))
        .await;
    let took = paused_at.elapsed();
    etcd.resume();
    eprintln!("the leader stepped down {took:?} after etcd froze (renew_deadline {RENEW_MS} ms)");
    assert!(
        stepped,
        "the leader kept leading without etcd:\n{}",
        old.log()
    );
    assert!(
        took <= Duration::from_millis(RENEW_MS + RETRY_MS + 500),
        "stepped down after {took:?}; renew_deadline is {RENEW_MS} ms"
    );
    // Whoever leads next (perhaps the same replica) converges the Endpoints, and writers never
    // interleave.
    flip_and_wait(&mut r, 1, false).await;
    let writers = endpoint_writers(&r.api);
    assert!(writers.len() <= 2, "interleaved writers: {writers:?}");
    for d in r.daemons.iter_mut().filter_map(Option::take) {
        let (code, _, log) = d.terminate().await;
        assert_eq!(code, Some(0), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_stops_writing_before_another_takes_over() {
    let mut r = start("lease", "").await;
    let all: Vec<String> = r.targets.iter().map(ip_of).collect();
    assert!(
        until_ready(&r.api, &all, Duration::from_secs(8))
            .await
            .is_some()
    );
    let first = leader(&r, None, Duration::from_secs(5))
        .await
        .expect("a leader");
    // The leader's ApiServer calls stall: every lease write hangs from now on.
    r.api.push_fault(
        FaultRule::from(Fault::Stall)
            .method("PUT")
            .path_contains("/leases/")
            .always(),
    );
    let old = r.daemons[first].as_ref().unwrap();
    assert!(
        old.wait_log("following", Duration::from_millis(RENEW_MS * 3))
            .await,
        "the stalled leader kept leading:\n{}",
        old.log()
    );
    // Nobody could write the lease meanwhile; once the ApiServer answers again, a leader
    // (possibly the same replica, re-taking its own lease) takes over.
    r.api.clear_faults();
    let stepped_down = stamp(&old.log(), "following");
    let mut next = None;
    let deadline = Instant::now() + Duration::from_millis(LEASE_MS * 4);
    while next.is_none() && Instant::now() < deadline {
        for (i, d) in r.daemons.iter().enumerate() {
            let log = d.as_ref().unwrap().log();
            if log
                .lines()
                .any(|l| l.contains("this replica leads") && stamp_of(l) > stepped_down)
            {
                next = Some(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = next.expect("nobody took over after the ApiServer recovered");
    let took_over = r.daemons[next]
        .as_ref()
        .unwrap()
        .log()
        .lines()
        .filter(|l| l.contains("this replica leads"))
        .map(stamp_of)
        .find(|t| *t > stepped_down)
        .unwrap();
    assert!(stepped_down < took_over, "{stepped_down} !< {took_over}");
    // The object converges under the new leader, and only one replica wrote at a time.
    flip_and_wait(&mut r, 1, false).await;
    let writers = endpoint_writers(&r.api);
    assert_eq!(
        writers.last(),
        Some(&format!("replica-{next}")),
        "{writers:?}"
    );
    assert!(writers.len() <= 2, "interleaved writers: {writers:?}");
    let lease = r
        .api
        .get_object(Resource::Leases, "default", "epcheck")
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .starts_with(&format!("replica-{next}"))
    );
    for d in r.daemons.iter_mut().filter_map(Option::take) {
        let _ = d.terminate().await;
    }
}

/// The RFC 3339 timestamp that starts a log line.
fn stamp_of(line: &str) -> String {
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The timestamp of the last line of `log` containing `needle`.
fn stamp(log: &str, needle: &str) -> String {
    log.lines()
        .rfind(|l| l.contains(needle))
        .map(stamp_of)
        .unwrap_or_default()
}
