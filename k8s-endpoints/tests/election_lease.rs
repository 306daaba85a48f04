//! Three `LeaderElector`s on one Lease of the stand-in ApiServer (real clock, loopback):
//! one leader at a time, failover after a kill, a quick hand-over on release, and a leader
//! whose writes stall stepping down before anyone may take over (SPEC §9).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::apiserver::{
    ApiServer, Fault, FaultRule, Permissions, RecordedRequest, Resource, Rule, Verb,
};
use k8s_endpoints::client::{Client, ClientConfig, RetryPolicy, TokenSource};
use k8s_endpoints::election::{ElectionConfig, LeaderElector, LeaderState, LeaseLock};
use k8s_endpoints::{Lease, Token};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const TOKEN: &str = "election-test-token-0123456789";
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases/epcheck";
const LEASE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(200);
/// Scheduling and loopback requests on a busy two-core machine.
const SLACK: Duration = Duration::from_millis(300);

async fn api() -> ApiServer {
    let api = ApiServer::start().await.unwrap();
    // Least privilege (SPEC §10): get, update and a name-restricted create on the one Lease.
    let rule = Rule::allow(&[Verb::Get, Verb::Update, Verb::Create], Resource::Leases)
        .in_namespace("default")
        .named(["epcheck"]);
    api.add_token(TOKEN, Permissions::none().with(rule));
    api
}

struct Candidate {
    id: String,
    rx: watch::Receiver<LeaderState>,
    /// `(since, is_leader)` for every change, in order.
    log: Arc<Mutex<Vec<(Instant, bool)>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(api: &ApiServer, id: &str) -> Candidate {
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.ca_file = None;
    cfg.token = TokenSource::Static(Token::new(TOKEN));
    cfg.request_timeout = Duration::from_secs(2);
    cfg.retry = RetryPolicy {
        base_delay: Duration::from_millis(20),
        ..RetryPolicy::REQUEST
    };
    let client = Client::new(cfg).unwrap();
    let lock = LeaseLock::new(client, "default", "epcheck", id).unwrap();
    let config = ElectionConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..ElectionConfig::new(id)
    };
    let elector = LeaderElector::new(lock, config).unwrap();
    let rx = elector.subscribe();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut watcher = elector.subscribe();
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let s = watcher.borrow_and_update().clone();
            {
                let mut log = sink.lock().unwrap();
                if log.last().is_none_or(|(_, was)| *was != s.is_leader) {
                    log.push((s.since, s.is_leader));
                }
            }
            if watcher.changed().await.is_err() {
                break;
            }
        }
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    Candidate {
        id: id.to_owned(),
        rx,
        log,
        stop: Some(stop),
        task,
    }
}

fn three(api: &ApiServer) -> Vec<Candidate> {
    ["a", "b", "c"].iter().map(|id| start(api, id)).collect()
}

/// The index of the leader, waiting up to `within`.
async fn leader(cs: &[Candidate], within: Duration) -> usize {
    let end = Instant::now() + within;
    loop {
        if let Some(i) = cs.iter().position(|c| c.rx.borrow().is_leader) {
            return i;
        }
        assert!(Instant::now() < end, "no leader within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `[start, end)` of each leadership term of `c` (open terms end at `now`).
fn intervals(c: &Candidate, now: Instant) -> Vec<(Instant, Instant)> {
    let log = c.log.lock().unwrap();
    let mut out = Vec::new();
    let mut open = None;
    for &(at, leading) in log.iter() {
        match (leading, open) {
            (true, None) => open = Some(at),
            (false, Some(start)) => {
                out.push((start, at));
                open = None;
            }
            _ => {}
        }
    }
    out.extend(open.map(|start| (start, now)));
    out
}

/// No two candidates' terms overlap.
fn assert_no_overlap(cs: &[Candidate]) {
    let now = Instant::now();
    for (i, a) in cs.iter().enumerate() {
        for b in &cs[i + 1..] {
            for x in intervals(a, now) {
                for y in intervals(b, now) {
                    assert!(
                        x.1 <= y.0 || y.1 <= x.0,
                        "{} led {x:?} while {} led {y:?}",
                        a.id,
                        b.id
                    );
                }
            }
        }
    }
}

/// Samples every 20 ms for `dur`: the most leaders seen at once, and the share of samples
/// with exactly one.
async fn sample(cs: &[Candidate], dur: Duration) -> (usize, f64) {
    let end = Instant::now() + dur;
    let (mut most, mut one, mut n) = (0, 0, 0);
    while Instant::now() < end {
        let now = Instant::now();
        let leaders = cs.iter().filter(|c| c.rx.borrow().leads_at(now)).count();
        most = most.max(leaders);
        one += usize::from(leaders == 1);
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (most, one as f64 / f64::from(n.max(1)))
}

/// Successful lease writes, in arrival order: (arrival, holder, transitions).
fn lease_writes(api: &ApiServer) -> Vec<(Instant, String, i64)> {
    let mut w: Vec<RecordedRequest> = api
        .writes()
        .into_iter()
        .filter(|r| r.path == LEASE_PATH && r.status.is_some_and(|s| (200..300).contains(&s)))
        .collect();
    w.sort_by_key(|r| r.seq);
    w.iter()
        .map(|r| {
            let body = r.body_json().unwrap();
            let spec = &body["spec"];
            (
                r.at,
                spec["holderIdentity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                spec["leaseTransitions"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// Server view: a new holder never writes before the previous holder's last write is a
/// lease duration old (unless it was a release), and each takeover counts one transition.
fn assert_takeovers_wait(api: &ApiServer) {
    let writes = lease_writes(api);
    for pair in writes.windows(2) {
        let ((t0, h0, n0), (t1, h1, n1)) = (&pair[0], &pair[1]);
        if h0 != h1 && !h1.is_empty() {
            assert_eq!(*n1, n0 + 1, "a takeover by {h1} counts one transition");
            if !h0.is_empty() {
                assert!(
                    *t1 - *t0 >= LEASE - Duration::from_millis(50),
                    "{h1} wrote {:?} after {h0}'s last write",
                    *t1 - *t0
                );
            }
        }
        if h0 == h1 {
            assert_eq!(n0, n1, "a renewal keeps leaseTransitions");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time() {
    let api = api().await;
    let cs = three(&api);
    let first = leader(&cs, Duration::from_secs(2)).await;
    let (most, share) = sample(&cs, Duration::from_secs(5)).await;
    assert_eq!(most, 1, "never two leaders");
    assert!(share > 0.99, "exactly one leader in {share} of the samples");
    assert!(cs[first].rx.borrow().is_leader, "the leader kept its lease");
    assert_no_overlap(&cs);
    for (i, c) in cs.iter().enumerate() {
        if i != first {
            assert_eq!(c.rx.borrow().leader.as_deref(), Some(cs[first].id.as_str()));
        }
    }
    let stored: Lease = serde_json::from_value(
        api.get_object(Resource::Leases, "default", "epcheck")
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stored.spec.holder_identity.as_deref(),
        Some(cs[first].id.as_str())
    );
    assert_eq!(stored.spec.lease_duration_seconds, Some(2));
    assert_eq!(stored.spec.lease_transitions, Some(0));
    // Created by a PUT to the named URL (a named create), then only conditional PUTs.
    let writes = api.writes();
    assert!(
        writes
            .iter()
            .all(|r| r.method == "PUT" && r.path == LEASE_PATH)
    );
    assert_eq!(writes.iter().filter(|r| r.status == Some(201)).count(), 1);
    assert!(
        writes.len() >= 20,
        "renewed every retry_period: {}",
        writes.len()
    );
    assert_takeovers_wait(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_moves_leadership_within_a_lease_duration() {
    let api = api().await;
    let mut cs = three(&api);
    let first = leader(&cs, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let dead = cs.remove(first);
    dead.task.abort();
    let killed = Instant::now();
    let next = leader(&cs, LEASE + RETRY.mul_f64(2.4) + SLACK).await;
    let took = Instant::now() - killed;
    eprintln!("failover after a kill: {took:?}");
    assert!(took >= LEASE - RETRY - SLACK, "{took:?}");
    // The dead leader's term (had it lived on, hung) ended before the new one began.
    let dead_until = dead.rx.borrow().valid_until.unwrap();
    assert!(dead_until < cs[next].rx.borrow().since);
    let (most, _) = sample(&cs, Duration::from_secs(1)).await;
    assert_eq!(most, 1);
    assert_no_overlap(&cs);
    assert_takeovers_wait(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_over_quickly() {
    let api = api().await;
    let mut cs = three(&api);
    let first = leader(&cs, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    cs[first].stop.take().unwrap().send(()).unwrap();
    (&mut cs[first].task).await.unwrap();
    let stopped = cs[first].rx.borrow().since;
    let next = leader(&cs, RETRY.mul_f64(1.2) + SLACK).await;
    let took = cs[next].rx.borrow().since - stopped;
    eprintln!("hand-over after a release: {took:?}");
    assert!(took < RETRY.mul_f64(1.2) + SLACK, "{took:?}");
    assert!(!cs[first].rx.borrow().is_leader);
    let released = lease_writes(&api)
        .into_iter()
        .any(|(_, holder, _)| holder.is_empty());
    assert!(released, "the release wrote an empty holder");
    assert_no_overlap(&cs);
    assert_takeovers_wait(&api);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_leader_steps_down_before_anyone_takes_over() {
    let api = api().await;
    let mut cs = vec![start(&api, "a")];
    leader(&cs, Duration::from_secs(2)).await;
    cs.push(start(&api, "b"));
    cs.push(start(&api, "c"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(cs[0].rx.borrow().is_leader);

    // Only the leader writes while its lease is valid, so every stalled PUT is a's: the
    // renewal in flight, then its try to take its own lease back.
    let stall = FaultRule::new(Fault::Stall)
        .method("PUT")
        .path_contains("/leases/");
    api.push_fault(stall.always());
    let stalled = |r: &RecordedRequest| r.fault == Some(Fault::Stall);
    api.wait_for_count(stalled, 2, RENEW + RETRY * 3)
        .await
        .unwrap();
    api.clear_faults();
    let a_false = cs[0].log.lock().unwrap().last().copied().unwrap();
    assert!(!a_false.1, "a stopped leading while its renewal hung");

    let next = leader(&cs[1..], LEASE + SLACK * 2).await + 1;
    let new_true = cs[next].rx.borrow().since;
    let (a_last, _, _) = lease_writes(&api)
        .into_iter()
        .rev()
        .find(|(_, h, _)| h == "a")
        .unwrap();
    let gap = new_true - a_false.0;
    eprintln!(
        "a stopped {:?} after its last renewal; {} led {gap:?} after that",
        a_false.0 - a_last,
        cs[next].id
    );
    assert!(
        a_false.0 < new_true,
        "a stopped before {} started",
        cs[next].id
    );
    assert!(a_false.0 - a_last <= RENEW + Duration::from_millis(50));
    assert!(gap >= LEASE - RENEW - SLACK, "{gap:?}");
    assert_no_overlap(&cs);
    assert_takeovers_wait(&api);
    // No write of a's was accepted after the takeover.
    let writes = lease_writes(&api);
    let takeover = writes.iter().position(|(_, h, _)| h != "a").unwrap();
    assert!(writes[takeover..].iter().all(|(_, h, _)| h != "a"));
}

fn client(api: &ApiServer) -> Client {
    let mut cfg = ClientConfig::from_url(api.url());
    cfg.ca_file = None;
    cfg.token = TokenSource::Static(Token::new(TOKEN));
    Client::new(cfg).unwrap()
}

/// Replicas that start together all find no Lease and create it with a `PUT`; those that lose
/// get a `422` (`must be specified for an update`). That is an ordinary retry: the error says
/// so, and nothing in it points at endpoint templates or target IPs (SPEC §9).
#[tokio::test]
async fn losing_the_creation_race_says_so_without_endpoint_hints() {
    let api = api().await;
    let client = client(&api);
    let lease = Lease::new("default", "epcheck");
    client
        .create_lease("default", "epcheck", &lease)
        .await
        .unwrap();
    let err = client
        .create_lease("default", "epcheck", &lease)
        .await
        .unwrap_err();
    assert!(err.is_lost_race(), "{err}");
    let text = err.to_string();
    assert!(text.contains("must be specified for an update"), "{text}");
    assert!(
        text.contains("another replica created the Lease first"),
        "{text}"
    );
    for unrelated in ["endpoint_template", "loopback", "IPs"] {
        assert!(!text.contains(unrelated), "{text}");
    }
}

/// A Lease reply naming another Lease is refused, and a write goes only to the Lease named by
/// the caller (SPEC §13).
#[tokio::test]
async fn lease_replies_and_writes_stay_on_the_configured_lease() {
    let api = api().await;
    let client = client(&api);
    let created = client
        .create_lease("default", "epcheck", &Lease::new("default", "epcheck"))
        .await
        .unwrap();
    api.push_fault(
        FaultRule::new(Fault::RewriteMetadata(
            serde_json::json!({"name": "kube-scheduler"}),
        ))
        .method("GET"),
    );
    let err = client.get_lease("default", "epcheck").await.unwrap_err();
    assert!(
        err.to_string().contains(
            "asked for Lease default/epcheck but the ApiServer's reply is Lease default/kube-scheduler"
        ),
        "{err}"
    );
    // A body naming another Lease is not sent at all.
    api.clear_requests();
    let mut other = created.clone();
    other.metadata.name = Some("kube-scheduler".into());
    let err = client
        .update_lease("default", "epcheck", &other)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Lease default/kube-scheduler"),
        "{err}"
    );
    assert!(api.requests().is_empty());
}
