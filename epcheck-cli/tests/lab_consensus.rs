//! Multi-vantage consensus in the network-namespace lab (SPEC §9.1, §12): three `epcheck run`
//! replicas in three namespaces, backends in three others, the stand-in ApiServer in a hub, and
//! routes cut for one replica only. Assertions are on the ApiServer's request log.
//!
//! ```text
//!   netns epl-<pid>c-hub: br0 <net>.1/24, the lab ApiServer on <net>.1 (strict)
//!     ├── vr1..vr3 ── netns epl-<pid>c-r1..r3: epcheck run, eth0 <net>.21..23/24
//!     └── vh1..vh3 ── netns epl-<pid>c-h1..h3: TCP backend :8080, eth0 <net>.11..13/24
//! ```
//!
//! No namespace has a route beyond the lab subnet, and every veth is created inside the lab
//! (see `lab.rs`, whose helpers and roles this reuses). The scenario, in order:
//! 1. only the leader loses its route to a backend (a blackhole route in its namespace): the
//!    backend stays in the Endpoints;
//! 2. a backend stops for real: it is removed within detection time plus a publish and a read;
//! 3. a follower is killed: after its TTL the two left still remove a backend that stops;
//! 4. the leader is cut off from everything (its link down): nothing is removed.
//!
//! Needs root and `ip netns`, like `lab.rs` (skips otherwise, except under CI as root). Run it
//! alone with `cargo test -p epcheck-cli --test integration lab_consensus -- --nocapture`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::lab::{
    Proc, ROLE_ENV, SUBNETS, TOKEN, Write, Writes, check_routes, ip, must, now_ms,
    remove_stale_namespaces, skip, skip_reason, spawn_apiserver, spawn_backend, spawn_epcheck,
    tail, teardown, terminate,
};
use crate::util::{Epcheck, web_config};

const PORT: u16 = 8080;
const INTERVAL_MS: u64 = 500;
const TIMEOUT_MS: u64 = 300;
const FAST_MS: u64 = 100;
const FALL: u64 = 2;
const HEARTBEAT_MS: u64 = 500;
const TTL_MS: u64 = 3000;
const READ_MS: u64 = 250;
const LEASE_MS: u64 = 3000;
/// Jitter, the reconciler's batch, the write and a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1200);

struct Cluster {
    tag: String,
    net: String,
    namespaces: Vec<String>,
    backends: Vec<Option<Proc>>,
    apiserver: Option<Proc>,
    replicas: Vec<Option<Proc>>,
    logs: Vec<Arc<Mutex<String>>>,
    writes: Option<Writes>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let procs = self
            .replicas
            .iter_mut()
            .chain(self.backends.iter_mut())
            .map(Option::take)
            .chain([self.apiserver.take()])
            .flatten();
        teardown(procs, &self.namespaces);
    }
}

impl Cluster {
    fn hub(&self) -> String {
        format!("{}-hub", self.tag)
    }
    fn replica_ns(&self, i: usize) -> String {
        format!("{}-r{}", self.tag, i + 1)
    }
    fn host_ns(&self, i: usize) -> String {
        format!("{}-h{}", self.tag, i + 1)
    }
    fn hub_ip(&self) -> String {
        format!("{}1", self.net)
    }
    fn replica_ip(&self, i: usize) -> String {
        format!("{}{}", self.net, 21 + i)
    }
    fn host_ip(&self, i: usize) -> String {
        format!("{}{}", self.net, 11 + i)
    }
    fn host_ips(&self) -> Vec<String> {
        (0..3).map(|i| self.host_ip(i)).collect()
    }

    /// Builds the namespaces and links, or says why it cannot (the caller skips on that).
    fn build() -> Result<Cluster, String> {
        remove_stale_namespaces();
        let host_addrs = ip(&["-br", "addr"])?;
        let net = SUBNETS
            .iter()
            .find(|s| !host_addrs.contains(*s))
            .unwrap_or_else(|| panic!("both lab subnets are on this machine:\n{host_addrs}"))
            .to_string();
        let mut c = Cluster {
            // Not `epl-<pid>-…`: the other lab, in the same test process, checks that none of
            // its namespaces is left by that prefix.
            tag: format!("epl-{}c", std::process::id()),
            net,
            namespaces: Vec::new(),
            backends: (0..3).map(|_| None).collect(),
            apiserver: None,
            replicas: (0..3).map(|_| None).collect(),
            logs: (0..3).map(|_| Arc::default()).collect(),
            writes: None,
        };
        let hub = c.hub();
        ip(&["netns", "add", &hub])?;
        c.namespaces.push(hub.clone());
        must("ip", &["-n", &hub, "link", "set", "lo", "up"]);
        must("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        let cidr = format!("{}/24", c.hub_ip());
        must("ip", &["-n", &hub, "addr", "add", &cidr, "dev", "br0"]);
        must("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        let spokes: Vec<(String, String, String)> = (0..3)
            .map(|i| (c.replica_ns(i), format!("vr{}", i + 1), c.replica_ip(i)))
            .chain((0..3).map(|i| (c.host_ns(i), format!("vh{}", i + 1), c.host_ip(i))))
            .collect();
        for (ns, veth, addr) in spokes {
            must("ip", &["netns", "add", &ns]);
            c.namespaces.push(ns.clone());
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            // Created in the hub with its peer put straight into the spoke: neither end ever
            // exists in the machine's own namespace.
            must(
                "ip",
                &[
                    "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0",
                    "netns", &ns,
                ],
            );
            must("ip", &["-n", &hub, "link", "set", &veth, "master", "br0"]);
            must("ip", &["-n", &hub, "link", "set", &veth, "up"]);
            let cidr = format!("{addr}/24");
            must("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            must("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        }
        c.check_closed();
        Ok(c)
    }

    /// Before any traffic: the lab subnet is on no interface of the machine, and no lab
    /// namespace routes anything beyond it.
    fn check_closed(&self) {
        check_routes(&self.namespaces, &self.net);
        println!(
            "netns consensus lab: closed network {}0/24 in {} namespaces checked",
            self.net,
            self.namespaces.len()
        );
    }

    fn start_backend(&mut self, i: usize) {
        let addr = format!("{}:{PORT}", self.host_ip(i));
        self.backends[i] = Some(spawn_backend(&self.host_ns(i), &addr));
    }

    fn stop_backend(&mut self, i: usize) {
        if let Some(p) = self.backends[i].take() {
            p.kill();
        }
    }

    /// Starts the lab ApiServer in the hub; its URL.
    fn start_apiserver(&mut self) -> String {
        let hub_ip = self.hub_ip();
        let (p, url, writes) = spawn_apiserver(&self.hub(), Some(&hub_ip));
        assert!(
            url.contains(&hub_ip),
            "the ApiServer is not on the lab address: {url}"
        );
        self.apiserver = Some(p);
        self.writes = Some(writes);
        url
    }

    fn start_replica(&mut self, i: usize, e: &Epcheck, config: &str) {
        let pod = format!("replica-{}", i + 1);
        let (p, log) = spawn_epcheck(&self.replica_ns(i), e, config, &[("POD_NAME", &pod)]);
        self.replicas[i] = Some(p);
        self.logs[i] = log;
    }

    fn log(&self, i: usize) -> String {
        self.logs[i].lock().unwrap().clone()
    }

    fn logs_tail(&self) -> String {
        (0..3)
            .map(|i| {
                format!(
                    "replica-{} (last lines):\n{}",
                    i + 1,
                    tail(&self.log(i), 25)
                )
            })
            .collect::<Vec<_>>()
            .join("\n-----\n")
    }

    fn wait_log(&self, i: usize, needle: &str, count: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.log(i).matches(needle).count() >= count {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn next_write(&self, within: Duration) -> Option<Write> {
        self.writes.as_ref()?.next(within, &|| self.logs_tail())
    }

    fn expect_write(
        &self,
        what: &str,
        ready: &[String],
        not_ready: &[String],
        within: Duration,
    ) -> Write {
        let writes = self.writes.as_ref().expect("the lab ApiServer runs");
        writes.expect(what, ready, not_ready, within, &|| self.logs_tail())
    }

    fn expect_no_write(&self, what: &str, during: Duration) {
        if let Some(w) = self.next_write(during) {
            panic!(
                "{what}: the Endpoints were written ({}: ready {:?}, not ready {:?})\n{}",
                w.summary,
                w.ready,
                w.not_ready,
                self.logs_tail()
            );
        }
    }

    fn kill_replica(&mut self, i: usize) {
        if let Some(p) = self.replicas[i].take() {
            p.kill();
        }
    }

    fn terminate_replica(&mut self, i: usize) -> Option<i32> {
        terminate(self.replicas[i].take()?)
    }
}

fn others(all: &[String], i: usize) -> Vec<String> {
    all.iter().filter(|a| **a != all[i]).cloned().collect()
}

#[test]
fn netns_lab_replicas_agree_before_a_backend_leaves() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    if let Some(reason) = skip_reason() {
        return skip(&reason);
    }
    let mut c = match Cluster::build() {
        Ok(c) => c,
        Err(reason) => return skip(&reason),
    };
    let tag = c.tag.clone();
    let all = c.host_ips();
    for i in 0..3 {
        c.start_backend(i);
    }
    let url = c.start_apiserver();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    let top = format!(
        "interval: {INTERVAL_MS}\npingtimeout: {TIMEOUT_MS}\nurl: {url}\n\
         content_type: application/json\ntoken_file: token\nresync_interval: 60000\n\
         metrics:\n  listen: \"off\"\n\
         probe: {{rise: 1, fall: {FALL}, fast_interval: {FAST_MS}}}\n\
         failsafe: {{mode: hold, min_targets: 3}}\n\
         leader_election: {{enabled: true, namespace: default, name: epcheck, \
         lease_duration: {LEASE_MS}, renew_deadline: 2000, retry_period: 500}}\n\
         consensus: {{enabled: true, heartbeat: {HEARTBEAT_MS}, ttl: {TTL_MS}, read_interval: {READ_MS}}}\n"
    );
    let config = e.write("config.yaml", &web_config(&top, PORT, &all));
    let config = config.to_str().unwrap();

    // Replica 1 starts first and leads; the others follow it.
    c.start_replica(0, &e, config);
    assert!(
        c.wait_log(0, "this replica leads", 1, Duration::from_secs(10)),
        "{}",
        c.logs_tail()
    );
    c.start_replica(1, &e, config);
    c.start_replica(2, &e, config);
    c.expect_write("start", &all, &[], Duration::from_secs(10));
    assert!(
        c.wait_log(
            0,
            "consensus: a replica's view counts",
            2,
            Duration::from_secs(10)
        ),
        "the leader does not count both other views\n{}",
        c.logs_tail()
    );
    // Every view has voted at least once after being seen to change.
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS * 3));
    c.expect_no_write("steady state", Duration::ZERO);

    // 1. Only the leader loses its route to backend 1: it stays in the Endpoints.
    let r1 = c.replica_ns(0);
    must(
        "ip",
        &["-n", &r1, "route", "add", "blackhole", &c.host_ip(0)],
    );
    let addr0 = format!("{}:{PORT}", all[0]);
    let down_seen = Instant::now();
    let deadline = Duration::from_secs(5);
    while !c
        .log(0)
        .lines()
        .any(|l| l.contains("target down") && l.contains(&addr0))
    {
        assert!(
            down_seen.elapsed() < deadline,
            "the leader never saw it down\n{}",
            c.logs_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    c.expect_no_write(
        "only the leader's route is cut",
        Duration::from_millis(TTL_MS * 2),
    );
    println!(
        "netns consensus lab: leader's route cut: {} stayed ready for {} ms",
        all[0],
        TTL_MS * 2
    );
    must(
        "ip",
        &["-n", &r1, "route", "del", "blackhole", &c.host_ip(0)],
    );
    assert!(
        c.wait_log(0, "target up", 1, Duration::from_secs(5)),
        "{}",
        c.logs_tail()
    );
    std::thread::sleep(Duration::from_millis(HEARTBEAT_MS));
    c.expect_no_write("route restored", Duration::ZERO);

    // 2. Backend 2 stops for real: every replica sees it; removed within detection (an
    // interval plus fall-1 fast probes) plus a publish and a read.
    let bound = Duration::from_millis(INTERVAL_MS + (FALL - 1) * FAST_MS + 200 + READ_MS);
    c.stop_backend(1);
    let cut = now_ms();
    let w = c.expect_write(
        "a backend stops",
        &others(&all, 1),
        &all[1..=1],
        bound + SLACK + Duration::from_secs(2),
    );
    let took = Duration::from_secs_f64(((w.t_ms - cut) / 1000.0).max(0.0));
    println!(
        "netns consensus lab: stopped backend removed after {} ms (bound {} ms + {} ms slack)",
        took.as_millis(),
        bound.as_millis(),
        SLACK.as_millis()
    );
    assert!(
        took <= bound + SLACK,
        "removal took {took:?}\n{}",
        c.logs_tail()
    );
    c.start_backend(1);
    c.expect_write("backend back", &all, &[], Duration::from_secs(5));

    // 3. A follower is killed: after its TTL, the two left decide.
    c.kill_replica(2);
    assert!(
        c.wait_log(
            0,
            "consensus: a replica's view does not count",
            1,
            Duration::from_millis(TTL_MS * 3)
        ),
        "{}",
        c.logs_tail()
    );
    c.stop_backend(2);
    c.expect_write(
        "a backend stops, two replicas left",
        &others(&all, 2),
        &all[2..=2],
        Duration::from_secs(5),
    );
    c.start_backend(2);
    c.expect_write(
        "backend back, two replicas left",
        &all,
        &[],
        Duration::from_secs(5),
    );

    // 4. The leader is cut off from everything: its probes all fail (it abstains, its
    // fail-safe holds), it cannot renew, replica 2 takes over and sees every backend up.
    must("ip", &["-n", &r1, "link", "set", "eth0", "down"]);
    c.expect_no_write(
        "the leader cut off from everything",
        Duration::from_millis(LEASE_MS * 2 + 2000),
    );
    assert!(
        c.log(1).contains("this replica leads"),
        "replica 2 did not take over\n{}",
        c.logs_tail()
    );
    must("ip", &["-n", &r1, "link", "set", "eth0", "up"]);

    for i in [1, 0] {
        let code = c.terminate_replica(i);
        assert_eq!(
            code,
            Some(0),
            "replica-{} did not exit cleanly\n{}",
            i + 1,
            c.logs_tail()
        );
    }
    assert!(
        !(0..3).any(|i| c.log(i).contains(TOKEN)),
        "the token leaked into a log"
    );
    drop(c);
    let left = ip(&["netns", "list"]).unwrap_or_default();
    assert!(
        !left.contains(&format!("{tag}-")),
        "namespaces left after teardown:\n{left}"
    );
}
