//! `epcheck run`: the real binary against loopback targets, the stand-in ApiServer and a real
//! Redis or etcd.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, Resource};
use fixtures::redis::RedisServer;
use fixtures::targets::ToggleTarget;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;

use crate::util::{Epcheck, web_config};

pub(crate) const TOKEN: &str = "daemon-test-token-0b7d";
const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 300;
const FAST_MS: u64 = 100;

/// A running `epcheck run` whose stderr is collected.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub(crate) fn start(e: &Epcheck, config: &str) -> Daemon {
        Self::start_with_env(e, config, &[])
    }

    pub(crate) fn start_with_env(e: &Epcheck, config: &str, env: &[(&str, &str)]) -> Daemon {
        let mut cmd = tokio::process::Command::from(e.cmd(&["run", "-f", config]));
        cmd.stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        cmd.env("EPCHECK_LOG", "info,epcheck=debug");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Daemon { child, log }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The metrics server's address, from the start-up log line.
    pub(crate) async fn metrics_addr(&self) -> String {
        assert!(
            self.wait_log("server listening", Duration::from_secs(5))
                .await,
            "{}",
            self.log()
        );
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("server listening"))
            .unwrap();
        let at = line.find("addr=").unwrap() + 5;
        line[at..].split_whitespace().next().unwrap().to_string()
    }

    pub(crate) async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Kills the process with SIGKILL, as if its node died.
    pub(crate) async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Sends SIGTERM and waits for the exit code.
    pub(crate) async fn terminate(self) -> (Option<i32>, Duration, String) {
        self.signal("-TERM").await
    }

    /// Sends `signal` (`kill`'s spelling: `-TERM`, `-HUP`) and waits for the exit code.
    pub(crate) async fn signal(mut self, signal: &str) -> (Option<i32>, Duration, String) {
        let pid = self.child.id().unwrap().to_string();
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let code = tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .ok()
            .and_then(|r| r.ok())
            .and_then(|s| s.code());
        tokio::time::sleep(Duration::from_millis(50)).await;
        (code, started.elapsed(), self.log())
    }
}

fn config(url: &str, targets: &[ToggleTarget], extra: &str) -> String {
    let top = format!(
        "interval: {INTERVAL_MS}\npingtimeout: {TIMEOUT_MS}\nurl: {url}\n\
         content_type: application/json\ntoken_file: token\nresync_interval: 60000\n\
         metrics:\n  listen: 127.0.0.1:0\n\
         probe:\n  rise: 2\n  fall: 2\n  fast_interval: {FAST_MS}\n{extra}"
    );
    let ips: Vec<String> = targets.iter().map(ip_of).collect();
    web_config(&top, targets[0].addr().port(), &ips)
}

struct Setup {
    api: ApiServer,
    e: Epcheck,
    targets: Vec<ToggleTarget>,
    config: String,
}

/// The stand-in ApiServer, accepting loopback addresses, with the tests' token allowed everything.
pub(crate) async fn loopback_api() -> ApiServer {
    let api = ApiServer::builder()
        .strict_ips(false)
        .start()
        .await
        .unwrap();
    api.add_token(TOKEN, Permissions::all());
    api
}

async fn setup(n: usize, extra: &str) -> Setup {
    let api = loopback_api().await;
    api.put_service("default", "web");
    let targets = ToggleTarget::start_group(n).await.unwrap();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    let path = e.write("c.yaml", &config(&api.url(), &targets, extra));
    Setup {
        api,
        e,
        targets,
        config: path.to_str().unwrap().to_string(),
    }
}

pub(crate) use fixtures::apiserver::endpoint_ips as ips;

fn live_ready(api: &ApiServer) -> Vec<String> {
    api.get_object(Resource::Endpoints, "default", "web")
        .map(|o| ips(&o, "addresses"))
        .unwrap_or_default()
}

/// Waits until the live object's ready set equals `want`; returns the time it took.
pub(crate) async fn until_ready(
    api: &ApiServer,
    want: &[String],
    within: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        let mut got = live_ready(api);
        got.sort();
        let mut w = want.to_vec();
        w.sort();
        if got == w {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

pub(crate) fn ip_of(t: &ToggleTarget) -> String {
    t.addr().ip().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_leaves_within_the_bound_and_returns_after_rise() {
    let mut s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let writes_before = s.api.writes().len();

    s.targets[1].refuse().await;
    // interval + (fall-1) × fast_interval + timeout, plus slack for a loaded 2-core machine.
    let bound = Duration::from_millis(INTERVAL_MS + FAST_MS + TIMEOUT_MS);
    let want: Vec<String> = vec![all[0].clone(), all[2].clone()];
    let took = until_ready(&s.api, &want, bound + Duration::from_secs(2)).await;
    let took = took.unwrap_or_else(|| panic!("not removed; log:\n{}", d.log()));
    assert!(
        took <= bound + Duration::from_millis(700),
        "removed after {took:?} (bound {bound:?})"
    );
    let obj = s
        .api
        .get_object(Resource::Endpoints, "default", "web")
        .unwrap();
    assert_eq!(ips(&obj, "notReadyAddresses"), vec![all[1].clone()]);

    s.targets[1].accept().await.unwrap();
    let took = until_ready(&s.api, &all, Duration::from_secs(4)).await;
    assert!(took.is_some(), "not re-added; log:\n{}", d.log());
    // Exactly one write to remove it and one to add it back.
    let writes: Vec<_> = s.api.writes().into_iter().skip(writes_before).collect();
    assert_eq!(
        writes.len(),
        2,
        "{:?}",
        writes.iter().map(|w| w.summary()).collect::<Vec<_>>()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(TOKEN));
    // The start's write is in the start's summary; each later write is a line of its own.
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("first reconcile of every service done"), 1, "{log}");
    assert_eq!(lines("endpoints written"), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_makes_no_writes() {
    let s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.api.clear_requests();
    // Twelve probe cycles.
    tokio::time::sleep(Duration::from_millis(12 * INTERVAL_MS)).await;
    let requests = s.api.requests();
    assert!(
        requests.is_empty(),
        "steady state must not touch the ApiServer before the resync: {:?}",
        requests.iter().map(|r| r.summary()).collect::<Vec<_>>()
    );
    let (code, took, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(2), "SIGTERM took {took:?}");
}

/// Issue 15: the daemon runs on one thread unless `--threads` or `EPCHECK_THREADS` asks for
/// more (one thread spends the least CPU per probe); the start-up line reports the runtime's own
/// worker count, and a count out of range is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_on_the_threads_it_is_given() {
    let s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    for (env, want) in [(None, 1), (Some("3"), 3)] {
        let env: Vec<(&str, &str)> = env.map(|n| ("EPCHECK_THREADS", n)).into_iter().collect();
        // Each daemon writes the object anew.
        s.api.delete_object(Resource::Endpoints, "default", "web");
        let d = Daemon::start_with_env(&s.e, &s.config, &env);
        let line = format!("probing and reconciling on {want} thread(s)");
        assert!(
            d.wait_log(&line, Duration::from_secs(5)).await,
            "{}",
            d.log()
        );
        assert!(
            until_ready(&s.api, &all, Duration::from_secs(5))
                .await
                .is_some(),
            "{}",
            d.log()
        );
        let (code, _, log) = d.terminate().await;
        assert_eq!(code, Some(0), "{log}");
    }
    for bad in ["0", "257", "many"] {
        let out =
            s.e.run_async(&["run", "-f", &s.config, "--threads", bad])
                .await;
        assert_eq!(out.code, 2, "--threads {bad}: {}", out.all());
        assert!(out.stderr.contains("--threads"), "{}", out.stderr);
    }
}

/// Issue 18: SIGHUP exited 129 at once, skipping the shutdown path (no Lease release, no final
/// flush). It now takes the SIGTERM path: exit 0, and the Lease is released for the next leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_shuts_down_cleanly_and_releases_the_lease() {
    let s = setup(
        2,
        "leader_election:\n  enabled: true\n  namespace: default\n  name: epcheck\n",
    )
    .await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let holder = |api: &ApiServer| {
        api.get_object(Resource::Leases, "default", "epcheck")
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    assert!(!holder(&s.api).is_empty(), "no leader: {}", d.log());
    let (code, took, log) = d.signal("-HUP").await;
    assert_eq!(code, Some(0), "{log}");
    assert!(took < Duration::from_secs(3), "SIGHUP took {took:?}");
    assert!(log.contains("SIGHUP received"), "{log}");
    assert_eq!(holder(&s.api), "", "the Lease was not released: {log}");
}

/// Issue 18: stopping the daemon left the children of running exec checks behind. SIGTERM now
/// kills each running check's whole process group.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_what_running_exec_checks_started() {
    let s = setup(2, "").await;
    let pids = s.e.path("pids");
    let check = s.e.write(
        "check.sh",
        &format!(
            "#!/bin/sh\nsleep 30 &\necho $! >> '{}'\nwait\n",
            pids.display()
        ),
    );
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let config = std::fs::read_to_string(&s.config).unwrap().replacen(
        "probe:\n",
        &format!(
            "probe:\n  kind: exec\n  exec: {{command: [\"{}\"], timeout: 20000}}\n",
            check.display()
        ),
        1,
    );
    std::fs::write(&s.config, config).unwrap();
    let d = Daemon::start(&s.e, &s.config);
    // Both targets' checks are running (each started a `sleep`).
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let text = std::fs::read_to_string(&pids).unwrap_or_default();
        let found: Vec<i32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if found.len() >= 2 {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "the checks never ran: {}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    let deadline = Instant::now() + Duration::from_secs(2);
    for pid in started {
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
        {
            assert!(
                Instant::now() < deadline,
                "a check's child {pid} survived the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Services `s00`… (`n` of them, each with a Service on `api`) sharing `target`; the scratch
/// directory and the config's path.
fn many_services(
    api: &ApiServer,
    target: &ToggleTarget,
    n: usize,
) -> (Epcheck, std::path::PathBuf) {
    let mut info = String::new();
    let mut list = String::new();
    for i in 0..n {
        let name = format!("s{i:02}");
        api.put_service("default", &name);
        info.push_str(&format!("  {name}: {{namespace: default, name: {name}}}\n"));
        list.push_str(&format!(
            "  {name}:\n    port: {}\n    iplist:\n      - {{name: n1, ip: {}}}\n",
            target.addr().port(),
            ip_of(target)
        ));
    }
    let yaml = format!(
        "interval: {INTERVAL_MS}\npingtimeout: {TIMEOUT_MS}\nurl: {}\n\
         content_type: application/json\ntoken_file: token\nresync_interval: 60000\n\
         metrics: {{listen: off}}\n\
         service_info:\n{info}service_healthcheck_list:\n{list}\
         endpoint_template:\n  kind: Endpoints\n  apiVersion: v1\n  subsets:\n    - ports:\n\
         \x20       - port: 8080\n          protocol: TCP\n",
        api.url()
    );
    let e = Epcheck::new();
    e.write("token", TOKEN);
    let path = e.write("c.yaml", &yaml);
    (e, path)
}

/// At start-up every service is due at once. With each request slowed down, the reconciles of
/// 40 services would all overlap; epcheck runs at most 16 at a time, so the ApiServer sees at
/// most 16 connections (HTTP/1.1: one per request in flight), and every object still gets
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_sixteen_reconciles_run_at_once() {
    const SERVICES: usize = 40;
    let api = loopback_api().await;
    let target = ToggleTarget::start().await.unwrap();
    let (e, path) = many_services(&api, &target, SERVICES);
    // Every read of a Service, and the list of its EndpointSlices (the first request of each
    // service's first reconcile, looking for slices left by mode: endpointslice), takes 300 ms.
    for path in ["/services/", "/endpointslices"] {
        api.push_fault(
            FaultRule::from(Fault::Delay(Duration::from_millis(300)))
                .path_contains(path)
                .always(),
        );
    }
    let d = Daemon::start(&e, path.to_str().unwrap());
    let deadline = Instant::now() + Duration::from_secs(15);
    let written = |api: &ApiServer| {
        (0..SERVICES)
            .filter(|i| {
                api.get_object(Resource::Endpoints, "default", &format!("s{i:02}"))
                    .is_some_and(|o| ips(&o, "addresses") == [ip_of(&target)])
            })
            .count()
    };
    while written(&api) < SERVICES && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written(&api), SERVICES, "{}", d.log());
    let connections: std::collections::BTreeSet<u64> =
        api.requests().iter().map(|r| r.connection).collect();
    // 16 reconciles, plus the look for objects of Services no longer configured, which runs
    // beside them from the start.
    assert!(
        connections.len() <= 17,
        "{} connections to the ApiServer: more than 16 reconciles ran at once",
        connections.len()
    );
    // The cap is what held them back: more than one reconcile did run at a time.
    assert!(connections.len() > 1, "reconciles ran one at a time");
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_target_failing_holds_writes_until_a_probe_succeeds() {
    let mut s = setup(4, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let writes_before = s.api.writes().len();

    // The checker's own network breaks: every target fails at once.
    for t in &mut s.targets {
        t.refuse().await;
    }
    assert!(
        d.wait_log("fail-safe active", Duration::from_secs(4)).await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    assert_eq!(
        s.api.writes().len(),
        writes_before,
        "a write during the outage:\n{}",
        d.log()
    );
    assert_eq!(live_ready(&s.api).len(), 4, "the Service was emptied");

    for t in &mut s.targets {
        t.accept().await.unwrap();
    }
    assert!(
        d.wait_log("fail-safe released", Duration::from_secs(4))
            .await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    assert_eq!(
        s.api.writes().len(),
        writes_before,
        "the recovery flapped the Service"
    );

    // Normal writes resume: one real failure is written.
    s.targets[3].refuse().await;
    let want: Vec<String> = all[..3].to_vec();
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_faults_are_survived_without_partial_writes() {
    let mut s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    // Faults on the very first requests: 500s, a 429 with Retry-After, a dropped connection,
    // and a write race.
    s.api.push_fault(FaultRule::from(Fault::Status500).times(2));
    s.api.push_fault(Fault::TooManyRequests {
        retry_after_secs: 1,
    });
    s.api.push_fault(Fault::DropConnection);
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        d.log()
    );

    s.api
        .push_fault(FaultRule::from(Fault::ConcurrentWrite).method("PUT"));
    s.api
        .push_fault(FaultRule::from(Fault::Status500).method("PUT"));
    s.targets[0].refuse().await;
    let want: Vec<String> = all[1..].to_vec();
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        d.log()
    );

    for w in s.api.writes() {
        let Some(body) = w.body_json() else { continue };
        let ready = ips(&body, "addresses");
        let mut seen = ready.clone();
        seen.extend(ips(&body, "notReadyAddresses"));
        seen.sort();
        assert!(
            !ready.is_empty(),
            "a write emptied the Service: {}",
            w.summary()
        );
        assert_eq!(seen, all, "a partial write: {}", w.summary());
    }
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "the daemon did not survive:\n{log}");
}

/// A real store server the daemon keeps its state in: its config section, and a crash and
/// restart.
trait StoreServer {
    fn block(&self) -> String;
    fn crash(&mut self);
    fn restart(&mut self);
}

impl StoreServer for RedisServer {
    fn block(&self) -> String {
        format!(
            "redis:\n  ipport: {}\n  key_prefix: \"t:\"\n",
            self.address()
        )
    }
    /// Redis comes back empty (nothing is saved).
    fn crash(&mut self) {
        self.stop();
    }
    fn restart(&mut self) {
        RedisServer::restart(self).unwrap();
    }
}

#[cfg(feature = "etcd")]
impl StoreServer for fixtures::etcd::EtcdServer {
    fn block(&self) -> String {
        format!(
            "etcd:\n  endpoints: [\"{}\"]\n  key_prefix: \"t/\"\n",
            self.endpoint()
        )
    }
    /// etcd comes back with what it had before the crash, now out of date.
    fn crash(&mut self) {
        self.stop();
    }
    fn restart(&mut self) {
        fixtures::etcd::EtcdServer::restart(self).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_does_not_stop_probing_or_writing() {
    let Some(mut redis) = RedisServer::start().unwrap() else {
        return;
    };
    store_outage(&mut redis).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_does_not_stop_probing_or_writing() {
    let Some(mut etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    store_outage(&mut etcd).await;
}

async fn store_outage(store: &mut dyn StoreServer) {
    let mut s = setup(3, &store.block()).await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );

    store.crash();
    s.targets[2].refuse().await;
    let want: Vec<String> = all[..2].to_vec();
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(4))
            .await
            .is_some(),
        "no write while the store was down:\n{}",
        d.log()
    );

    // The store comes back; the daemon's state catches up.
    store.restart();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut caught_up = false;
    while Instant::now() < deadline && !caught_up {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let out = s.e.run(&["status", "-f", &s.config, "-o", "json"]);
        if out.code == 0 {
            let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
            let targets = v["services"][0]["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            caught_up = targets.len() == 3
                && targets
                    .iter()
                    .any(|t| t["ip"] == all[2].as_str() && t["state"] == "down");
        }
    }
    assert!(caught_up, "the store did not catch up:\n{}", d.log());
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_redis_restores_health_without_a_flap() {
    let Some(redis) = RedisServer::start().unwrap() else {
        return;
    };
    restart_restores_health(&redis).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_etcd_restores_health_without_a_flap() {
    let Some(etcd) = fixtures::etcd::EtcdServer::start().unwrap() else {
        return;
    };
    restart_restores_health(&etcd).await;
}

async fn restart_restores_health(store: &dyn StoreServer) {
    let mut s = setup(3, &store.block()).await;
    s.targets[1].refuse().await;
    let want: Vec<String> = vec![ip_of(&s.targets[0]), ip_of(&s.targets[2])];
    let first = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        first.log()
    );
    tokio::time::sleep(Duration::from_millis(2 * INTERVAL_MS)).await;
    let (code, _, _) = first.terminate().await;
    assert_eq!(code, Some(0));

    s.api.clear_requests();
    let second = Daemon::start(&s.e, &s.config);
    assert!(
        second
            .wait_log("restored recent target health", Duration::from_secs(3))
            .await,
        "{}",
        second.log()
    );
    tokio::time::sleep(Duration::from_millis(4 * INTERVAL_MS)).await;
    let log = second.log();
    // Restored state is not a transition: no "target up/down" at start, and no write.
    assert!(
        !log.contains("target up") && !log.contains("target down"),
        "{log}"
    );
    assert!(
        s.api.writes().is_empty(),
        "{:?}",
        s.api
            .writes()
            .iter()
            .map(|w| w.summary())
            .collect::<Vec<_>>()
    );
    let (code, _, log) = second.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

#[test]
fn status_without_redis_explains_itself() {
    let e = Epcheck::new();
    let path = e.write(
        "c.yaml",
        crate::util::seed()
            .replacen("  ipport: 172.16.0.61:6379\n  password: 123\n", "", 1)
            .as_str(),
    );
    let r = e.run(&["status", "-f", path.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("in-memory store"), "{}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_holds_every_write() {
    let mut canary = ToggleTarget::start_refusing().unwrap();
    let extra = format!("failsafe:\n  canary: {}\n", canary.addr());
    let s = setup(3, &extra).await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        d.wait_log("fail-safe active", Duration::from_secs(4)).await,
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
    assert!(s.api.writes().is_empty(), "written while the canary failed");

    canary.accept().await.unwrap();
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

/// GETs `path` from `addr` with a plain HTTP/1.1 request; returns (status, body).
pub(crate) async fn http_get(addr: &str, path: &str) -> (u16, String) {
    http_get_accept(addr, path, "text/plain").await
}

/// [`http_get`] with this `Accept` header; a chunked body is decoded.
pub(crate) async fn http_get_accept(addr: &str, path: &str, accept: &str) -> (u16, String) {
    let answer = fixtures::http::get(addr, path, accept).await.unwrap();
    (answer.status, answer.body)
}

/// The value of the sample `name{labels}` in a Prometheus text scrape.
pub(crate) fn sample(scrape: &str, name_and_labels: &str) -> Option<f64> {
    scrape
        .lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_readiness_and_status_follow_a_target_going_down() {
    let mut s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    let addr = d.metrics_addr().await;
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let (code, _) = http_get(&addr, "/healthz").await;
    assert_eq!(code, 200);
    let mut ready = 0;
    for _ in 0..50 {
        ready = http_get(&addr, "/readyz").await.0;
        if ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ready, 200, "/readyz never became ready");

    let up = "epcheck_target_up{service=\"web\",target=\"node-02\"}";
    let down = "epcheck_target_transitions_total{service=\"web\",target=\"node-02\",to=\"down\"}";
    let (_, before) = http_get(&addr, "/metrics").await;
    assert_eq!(sample(&before, up), Some(1.0), "{before}");
    let transitions_before = sample(&before, down).unwrap_or(0.0);

    s.targets[1].refuse().await;
    let want = vec![all[0].clone(), all[2].clone()];
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let (_, after) = http_get(&addr, "/metrics").await;
    assert_eq!(sample(&after, up), Some(0.0), "{after}");
    assert_eq!(
        sample(&after, down),
        Some(transitions_before + 1.0),
        "{after}"
    );
    assert_eq!(
        sample(&after, "epcheck_service_ready_endpoints{service=\"web\"}"),
        Some(2.0)
    );
    assert!(
        sample(
            &after,
            "epcheck_endpoint_writes_total{service=\"web\",result=\"updated\"}"
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{after}"
    );

    let (code, status) = http_get(&addr, "/status").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["services"][0]["ready"], 2);
    assert_eq!(v["services"][0]["targets"][1]["state"], "down");
    assert!(
        v["services"][0]["targets"][1]["last_error"]
            .as_str()
            .unwrap()
            .contains("refused")
    );

    // promtool (from Debian's prometheus package, installed by .ci/run) accepts the scrape.
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok()
    {
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(after.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    } else if std::env::var_os("CI").is_some() {
        panic!("promtool is missing: .ci/run installs it with apt-get install -y prometheus");
    }
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_shows_in_the_metrics() {
    let mut s = setup(3, "").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    let addr = d.metrics_addr().await;
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    assert_eq!(
        sample(
            &http_get(&addr, "/metrics").await.1,
            "epcheck_failsafe_active"
        ),
        Some(0.0)
    );
    for t in &mut s.targets {
        t.refuse().await;
    }
    assert!(
        d.wait_log("fail-safe active", Duration::from_secs(4)).await,
        "{}",
        d.log()
    );
    assert_eq!(
        sample(
            &http_get(&addr, "/metrics").await.1,
            "epcheck_failsafe_active"
        ),
        Some(1.0)
    );
    let (_, status) = http_get(&addr, "/status").await;
    assert!(status.contains("\"failsafe_active\":true"), "{status}");
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}

/// A loopback HTTP receiver that records each request body and answers 200.
async fn webhook_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let sink = bodies.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if body.len() >= len {
                            sink.lock().unwrap().push(body[..len].to_string());
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                .await;
                            return;
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/hook"), bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_script_and_webhook_see_each_transition_once() {
    let (url, bodies) = webhook_receiver().await;
    let scratch = Epcheck::new();
    let log_file = scratch.path("notify.log");
    let script = scratch.write(
        "notify.sh",
        &format!(
            "#!/bin/sh\necho \"$1 $2 $3 $EPCHECK_IP\" >> {}\n",
            log_file.display()
        ),
    );
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    let extra = format!(
        "notify:\n  script: {}\n  webhooks:\n    - url: {url}\n      format: json\n",
        script.display()
    );
    let mut s = setup(3, &extra).await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    s.targets[1].refuse().await;
    let want = vec![all[0].clone(), all[2].clone()];
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    s.targets[1].accept().await.unwrap();
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");

    let lines = std::fs::read_to_string(&log_file).unwrap_or_default();
    let mut lines: Vec<&str> = lines.lines().collect();
    let ip = &all[1];
    assert_eq!(
        lines.len(),
        4,
        "one call per transition; got {lines:?}\n{log}"
    );
    // Target and service events of one change may be delivered in either order.
    lines[..2].sort_unstable();
    lines[2..].sort_unstable();
    let down = format!("TARGET web/node-02 DOWN {ip}");
    let up = format!("TARGET web/node-02 UP {ip}");
    assert_eq!(
        lines,
        vec![
            "SERVICE web DEGRADED ",
            down.as_str(),
            "SERVICE web HEALTHY ",
            up.as_str()
        ],
        "script calls; log:\n{log}"
    );
    let bodies = bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    let events: Vec<serde_json::Value> = bodies
        .iter()
        .map(|b| serde_json::from_str(b).unwrap())
        .collect();
    let target_downs = events
        .iter()
        .filter(|e| e["kind"] == "target" && e["to"] == "down")
        .count();
    let target_ups = events
        .iter()
        .filter(|e| e["kind"] == "target" && e["to"] == "up")
        .count();
    assert_eq!((target_downs, target_ups), (1, 1), "{events:?}");
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "target" && e["ip"] == ip.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apiserver_outage_is_logged_by_its_changes_not_by_each_retry() {
    let s = setup(2, "").await;
    // Every request fails with 500 from the start: the first writes and their retries fail.
    s.api.push_fault(FaultRule::new(Fault::Status500).always());
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        s.api
            .wait_for_count(
                // The reconciles' requests (not the look for unconfigured objects).
                |r| {
                    r.status == Some(500)
                        && !r.query.as_deref().is_some_and(|q| q.contains("instance"))
                },
                12,
                Duration::from_secs(20)
            )
            .await
            .is_ok(),
        "{}",
        d.log()
    );
    s.api.clear_faults();
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    assert!(
        d.wait_log("answers again", Duration::from_secs(2)).await,
        "{}",
        d.log()
    );
    let (_, _, log) = d.terminate().await;
    let lines = |needle: &str| {
        log.lines()
            .filter(|l| l.contains(needle) && (l.contains("ERROR") || l.contains("WARN")))
            .count()
    };
    assert_eq!(lines("the ApiServer is unavailable"), 1, "{log}");
    assert_eq!(
        lines("reconcile failed"),
        0,
        "each failed retry was logged above debug:\n{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("the ApiServer answers again"))
            .count(),
        1,
        "{log}"
    );
}

/// Logs follow events, not targets: the config's loopback warnings are one line, the first
/// probes of a service are one line, and 45 targets going down at once are at most 20 lines
/// plus one summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_events_not_targets() {
    let mut s = setup(50, "").await;
    for t in &mut s.targets[45..] {
        t.refuse().await;
    }
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        d.wait_log("first probes", Duration::from_secs(10)).await,
        "{}",
        d.log()
    );
    for t in &mut s.targets[..45] {
        t.refuse().await;
    }
    let summed = d
        .wait_log("more transitions in one second", Duration::from_secs(10))
        .await;
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert!(summed, "{log}");
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(lines("loopback address"), 1, "{log}");
    assert!(log.contains("50 findings of one kind"), "{log}");
    assert_eq!(lines("first probes"), 1, "{log}");
    // The start's writes are one line, the later ones one each.
    assert_eq!(lines("first reconcile of every service done"), 1, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("first probes") && l.contains("up=45") && l.contains("down=5")),
        "{log}"
    );
    let one_by_one = lines("target down");
    assert!(
        one_by_one <= 20,
        "{one_by_one} lines of target down:\n{log}"
    );
    assert!(one_by_one >= 1, "{log}");
}

/// While the ApiServer fails, one reconcile at a time tests it, about once a second, with one
/// attempt per request, instead of every service retrying on its own; when it answers, every
/// service is written within 3 s, whatever its backoff had grown to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_costs_about_one_test_a_second_and_ends_at_once() {
    const SERVICES: usize = 12;
    let api = loopback_api().await;
    let target = ToggleTarget::start().await.unwrap();
    let (e, path) = many_services(&api, &target, SERVICES);
    api.push_fault(FaultRule::new(Fault::Status500).always());
    let d = Daemon::start(&e, path.to_str().unwrap());
    assert!(
        d.wait_log("the ApiServer is unavailable", Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    // Let the reconciles that started before the outage was known finish failing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.clear_requests();
    tokio::time::sleep(Duration::from_secs(4)).await;
    // The reconciles' requests (not `/version`, not the look for unconfigured objects).
    let reconcile_requests = api
        .requests()
        .iter()
        .filter(|r| {
            r.path != "/version" && !r.query.as_deref().is_some_and(|q| q.contains("instance"))
        })
        .count();
    // About one test a second, each a single request.
    assert!(
        reconcile_requests <= 7,
        "{reconcile_requests} requests in 4 s of outage:\n{}",
        d.log()
    );
    assert!(reconcile_requests >= 2, "the ApiServer was not tested");
    api.clear_faults();
    let back = Instant::now();
    let written = |api: &ApiServer| {
        (0..SERVICES)
            .filter(|i| {
                api.get_object(Resource::Endpoints, "default", &format!("s{i:02}"))
                    .is_some()
            })
            .count()
    };
    while written(&api) < SERVICES && back.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = back.elapsed();
    eprintln!(
        "outage: {reconcile_requests} reconcile requests in 4 s; {SERVICES} services written {} ms after the ApiServer answered",
        took.as_millis()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(written(&api), SERVICES, "{log}");
    assert!(
        took <= Duration::from_secs(3),
        "every service written {took:?} after the ApiServer came back:\n{log}"
    );
}

/// Probes that cannot keep up (six exec checks of 200 ms, one at a time, every 500 ms) skip
/// slots: the skips are counted per service and warned about once (at most once a minute),
/// naming the setting to raise, and every target still gets probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_probe_slots_are_counted_and_warned_about_once() {
    let extra = "  kind: exec\n  concurrency: 1\n  \
                 exec: {command: [\"/bin/sleep\", \"0.2\"], timeout: 2000}\n";
    let s = setup(6, extra).await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    let addr = d.metrics_addr().await;
    assert!(
        d.wait_log("probes do not keep up", Duration::from_secs(10))
            .await,
        "{}",
        d.log()
    );
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(10))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, scrape) = http_get(&addr, "/metrics").await;
    let skipped = sample(
        &scrape,
        "epcheck_probe_slots_skipped_total{service=\"web\"}",
    )
    .unwrap_or(0.0);
    let probes = sample(
        &scrape,
        "epcheck_probes_total{service=\"web\",result=\"up\"}",
    )
    .unwrap_or(0.0);
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    // About 2.4 × the probes that fit were asked for: more than half the slots were skipped.
    assert!(
        skipped >= probes,
        "skipped {skipped}, probed {probes}\n{scrape}"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("probes do not keep up"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("probe.concurrency"), "{log}");
}

/// `probe: {half_open: true}`: the daemon's connect checks stop at the SYN-ACK, so the targets
/// never accept one, and a target that stops listening still leaves the Endpoints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_checks_are_never_accepted_and_still_find_a_dead_target() {
    let mut s = setup(3, "  half_open: true\n").await;
    let all: Vec<String> = s.targets.iter().map(ip_of).collect();
    let d = Daemon::start(&s.e, &s.config);
    assert!(
        until_ready(&s.api, &all, Duration::from_secs(5))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    // Several rounds of checks.
    tokio::time::sleep(Duration::from_millis(3 * INTERVAL_MS)).await;
    let accepted: Vec<u64> = s.targets.iter().map(|t| t.accepted()).collect();
    assert_eq!(accepted, [0, 0, 0], "half-open checks reached accept()");
    s.targets[1].refuse().await;
    let want = vec![all[0].clone(), all[2].clone()];
    assert!(
        until_ready(&s.api, &want, Duration::from_secs(4))
            .await
            .is_some(),
        "{}",
        d.log()
    );
    let (code, _, log) = d.terminate().await;
    assert_eq!(code, Some(0), "{log}");
}
