//! The network-namespace lab (SPEC §12): `epcheck run` against backends on other hosts of a
//! closed network, with real (documentation) addresses in the Endpoints and the stand-in
//! ApiServer in strict mode, and three ways of losing a host.
//!
//! ```text
//!   netns epl-<pid>-chk  (checker)                  netns epl-<pid>-h1 … h3  (backend hosts)
//!  ┌───────────────────────────────────────┐       ┌──────────────────────────────┐
//!  │ epcheck run ──▶ lab ApiServer         │       │ backend, TCP :8080           │
//!  │                 127.0.0.1:N (strict)  │ veth  │ eth0  <net>.11 … <net>.13/24 │
//!  │ br0 <net>.1/24 ─┬─ vh1 … vh3 ─────────┼───────┤ no other route               │
//!  └─────────────────┴─────────────────────┘       └──────────────────────────────┘
//! ```
//!
//! `<net>` is 198.51.100.0/24 (203.0.113.0/24 if the first is on one of the machine's
//! interfaces; never 192.0.2.0/24, which is the real network here). No namespace of the lab has
//! a default route or any route beyond the lab subnet, and the veth pairs are created inside the
//! namespaces, so no packet can leave the lab; the test checks both before any traffic.
//!
//! # How the processes run
//! The test process stays in the machine's own namespace and only orchestrates: it runs `ip`,
//! `tc` and `nft`, starts processes and reads their pipes, and sends no lab traffic itself.
//! Every lab process is started with `ip netns exec <ns> …` (which `exec`s, so the child's pid is
//! the process itself):
//! - the real `epcheck run` binary, in the checker namespace;
//! - this very test executable, re-run as `<exe> lab::lab_role --exact --nocapture` with
//!   `EPCHECK_LAB_ROLE` set. [`lab_role`] is an empty test in an ordinary run; with
//!   `EPCHECK_LAB_ROLE=apiserver` it serves the stand-in ApiServer on the namespace's loopback
//!   and prints every write it receives as one `EPLAB {json}` line (with a wall-clock time, the
//!   clock both sides share), and with `EPCHECK_LAB_ROLE=backend EPCHECK_LAB_ADDR=ip:port` it is
//!   a TCP listener that accepts and closes.
//!
//! Role processes exit when their stdin closes, so they do not outlive the orchestrator. A guard
//! kills every child and deletes the namespaces when the test ends, also on a panic; namespaces
//! left by an earlier run that was killed outright (`epl-<pid>-…` whose pid is gone) are removed
//! at the start.
//!
//! The test needs root and `ip netns`; without them it prints `skipping netns lab: <reason>` and
//! passes — except that with `CI` set and root available it fails instead of skipping. `nft`
//! (package nftables) is the preferred way to drop packets; `tc netem` and a blackhole route in
//! the backend's namespace are the fallbacks, in that order (`EPCHECK_LAB_DROP=nft|netem|
//! blackhole` tries only that one, to exercise a fallback). Run it alone with
//! `cargo test -p epcheck-cli --test integration lab:: -- --nocapture`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::{Epcheck, web_config};

pub(crate) const ROLE_ENV: &str = "EPCHECK_LAB_ROLE";
/// The address the lab ApiServer binds (default 127.0.0.1).
pub(crate) const BIND_ENV: &str = "EPCHECK_LAB_BIND";
pub(crate) const ADDR_ENV: &str = "EPCHECK_LAB_ADDR";
/// Restricts the drop methods tried to one (`nft`, `netem` or `blackhole`), to exercise a
/// fallback on a machine that has the preferred one.
const DROP_ENV: &str = "EPCHECK_LAB_DROP";
/// What a role process puts before each JSON line it reports (libtest may print on the same
/// line, so the reader looks for it anywhere in the line).
const MARK: &str = "EPLAB ";
pub(crate) const TOKEN: &str = "lab-token-5c1e";
const PORT: u16 = 8080;
/// The subnets the lab may use, in order of preference.
pub(crate) const SUBNETS: [&str; 2] = ["198.51.100.", "203.0.113."];

const INTERVAL_MS: u64 = 1000;
const TIMEOUT_MS: u64 = 500;
const FAST_MS: u64 = 200;
const RISE: u64 = 2;
const FALL: u64 = 2;
/// Allowance over the SPEC §11 bounds for jitter (10 % of the interval), the reconciler's batch
/// window, the write itself and a loaded two-core machine running other tests meanwhile.
const SLACK: Duration = Duration::from_millis(800);

// ---------------------------------------------------------------------------------------------
// Roles: what this executable does when re-run inside a namespace.

/// An empty test in an ordinary run; a lab process when `EPCHECK_LAB_ROLE` says so.
#[test]
fn lab_role() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("apiserver") => role_apiserver(),
        Ok("backend") => role_backend(),
        _ => {}
    }
}

fn report(v: &Value) {
    println!("{MARK}{v}");
}

/// Exits the process once stdin reaches EOF, that is when the orchestrator closed it or died.
fn exit_on_stdin_eof() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
}

fn role_backend() {
    exit_on_stdin_eof();
    let addr = std::env::var(ADDR_ENV).expect("EPCHECK_LAB_ADDR");
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    report(&json!({"event": "listening", "addr": addr}));
    for conn in listener.incoming() {
        drop(conn);
    }
}

fn role_apiserver() {
    exit_on_stdin_eof();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // EPCHECK_LAB_BIND: serve on a lab address (replicas in other namespaces reach it).
        let bind = std::env::var(BIND_ENV)
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let api = fixtures::apiserver::ApiServer::builder()
            .strict_ips(true)
            .bind(bind)
            .start()
            .await
            .unwrap();
        api.add_token(TOKEN, fixtures::apiserver::Permissions::all());
        api.put_service("default", "web");
        report(&json!({"event": "ready", "url": api.url()}));
        let mut next = 0;
        loop {
            let found = api
                .wait_for_count(|r| r.seq >= next && r.is_write(), 1, Duration::from_secs(1))
                .await;
            for r in found.unwrap_or_default() {
                next = next.max(r.seq + 1);
                let body = r.body_json().unwrap_or(Value::Null);
                let t_ms = now_ms() - r.at.elapsed().as_secs_f64() * 1000.0;
                report(&json!({
                    "event": "write",
                    "seq": r.seq,
                    "t_ms": t_ms,
                    "method": r.method.as_str(),
                    "path": r.path,
                    "status": r.status,
                    "ready": ips(&body, "addresses"),
                    "not_ready": ips(&body, "notReadyAddresses"),
                }));
            }
        }
    });
}

pub(crate) fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn ips(body: &Value, key: &str) -> Vec<String> {
    let mut v = fixtures::apiserver::endpoint_ips(body, key);
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Commands run by the orchestrator.

/// Runs a command to completion; its stdout, or a message with its stderr.
pub(crate) fn run(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("`{prog} {}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{prog} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Runs a lab set-up step that must work.
pub(crate) fn must(prog: &str, args: &[&str]) -> String {
    run(prog, args).unwrap_or_else(|e| panic!("netns lab set-up: {e}"))
}

pub(crate) fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Kills what is left in a lab namespace: only processes this test (or an earlier run of it)
/// started live there.
pub(crate) fn kill_namespace_pids(ns: &str) {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-KILL", pid]);
        }
    }
}

/// Deletes `epl-<pid>…` namespaces whose creating test process no longer exists.
pub(crate) fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    let me = std::process::id();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("epl-")
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != me && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            println!("netns lab: removing stale namespace {name}");
            kill_namespace_pids(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The lab.

/// A process started in a namespace; its stdin is held open so that a role process lives
/// exactly as long as this handle.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) _stdin: Option<ChildStdin>,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The namespaces and processes of one run; dropping it tears everything down.
pub(crate) struct Lab {
    tag: String,
    /// The subnet's first three octets with the trailing dot, e.g. `198.51.100.`.
    net: String,
    namespaces: Vec<String>,
    backends: Vec<Option<Proc>>,
    apiserver: Option<Proc>,
    epcheck: Option<Proc>,
    writes: Option<Writes>,
    epcheck_log: Arc<Mutex<String>>,
}

/// One Endpoints write as the lab ApiServer saw it.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    pub(crate) t_ms: f64,
    pub(crate) summary: String,
    pub(crate) status: Option<u64>,
    pub(crate) ready: Vec<String>,
    pub(crate) not_ready: Vec<String>,
}

/// The Endpoints writes the lab ApiServer reports, in order.
pub(crate) struct Writes(Receiver<Write>);

impl Writes {
    /// The next write, if one arrives within `within`; it must have succeeded (`context` is
    /// added to the failure message).
    pub(crate) fn next(&self, within: Duration, context: &dyn Fn() -> String) -> Option<Write> {
        match self.0.recv_timeout(within) {
            Ok(w) => {
                assert!(
                    matches!(w.status, Some(200 | 201)),
                    "the ApiServer refused a write: {}\n{}",
                    w.summary,
                    context()
                );
                Some(w)
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the lab ApiServer is gone"),
        }
    }

    /// Waits for the next write, which must set exactly `ready` and `not_ready`.
    pub(crate) fn expect(
        &self,
        what: &str,
        ready: &[String],
        not_ready: &[String],
        within: Duration,
        context: &dyn Fn() -> String,
    ) -> Write {
        let w = self
            .next(within, context)
            .unwrap_or_else(|| panic!("{what}: no write within {within:?}\n{}", context()));
        assert_eq!(
            (w.ready.as_slice(), w.not_ready.as_slice()),
            (ready, not_ready),
            "{what}: wrong Endpoints written ({})\n{}",
            w.summary,
            context()
        );
        w
    }
}

/// How a host is cut off from the checker.
#[derive(Debug, Clone, Copy)]
enum DropMethod {
    /// An nftables rule in the host's namespace drops everything from the checker.
    Nft,
    /// `tc netem loss 100%` on the host's interface drops everything it sends.
    Netem,
    /// A blackhole route to the checker in the host's namespace: the host's SYN-ACKs vanish.
    Blackhole,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let procs = [self.epcheck.take(), self.apiserver.take()]
            .into_iter()
            .chain(self.backends.iter_mut().map(Option::take))
            .flatten();
        teardown(procs, &self.namespaces);
    }
}

/// Kills `procs`, then whatever else lives in `namespaces`, and deletes them (last first).
pub(crate) fn teardown(procs: impl IntoIterator<Item = Proc>, namespaces: &[String]) {
    for p in procs {
        p.kill();
    }
    for ns in namespaces.iter().rev() {
        kill_namespace_pids(ns);
        if let Err(e) = ip(&["netns", "del", ns]) {
            eprintln!("netns lab teardown: {e}");
        }
    }
}

/// Checks that no namespace of `namespaces` routes anything beyond the lab subnet `net`
/// (`198.51.100.`), and that the subnet is on no interface of the machine.
pub(crate) fn check_routes(namespaces: &[String], net: &str) {
    let root = must("ip", &["-br", "addr"]);
    assert!(
        !root.contains(net),
        "the lab subnet {net}0/24 showed up in the machine's own namespace:\n{root}"
    );
    for ns in namespaces {
        let v4 = must("ip", &["-n", ns, "-4", "route", "show", "table", "all"]);
        for line in v4.lines() {
            // The local table holds the namespace's own and loopback addresses.
            let local = line.starts_with("local ") || line.starts_with("broadcast ");
            assert!(
                local || line.starts_with(&format!("{net}0/24 ")),
                "namespace {ns} routes outside the lab: {line}\n{v4}"
            );
        }
        let v6 = must("ip", &["-n", ns, "-6", "route", "show"]);
        assert!(
            !v6.contains("default"),
            "namespace {ns} has an IPv6 default route:\n{v6}"
        );
    }
}

/// A backend role listening on `addr` (`ip:port`) in namespace `ns`.
pub(crate) fn spawn_backend(ns: &str, addr: &str) -> Proc {
    let (p, rx) = Lab::spawn_role(ns, "backend", &[(ADDR_ENV, addr)]);
    let first = rx.recv_timeout(Duration::from_secs(10));
    assert!(
        matches!(&first, Ok(v) if v["event"] == "listening"),
        "backend {addr} did not start: {first:?}"
    );
    p
}

/// The lab ApiServer in namespace `ns`, on `bind` (default loopback): its process, its URL and
/// the Endpoints writes it receives.
pub(crate) fn spawn_apiserver(ns: &str, bind: Option<&str>) -> (Proc, String, Writes) {
    let env: Vec<(&str, &str)> = bind.map(|b| (BIND_ENV, b)).into_iter().collect();
    let (p, rx) = Lab::spawn_role(ns, "apiserver", &env);
    let first = rx.recv_timeout(Duration::from_secs(10));
    let url = match &first {
        Ok(v) if v["event"] == "ready" => v["url"].as_str().unwrap().to_string(),
        _ => panic!("lab ApiServer did not start: {first:?}"),
    };
    let (tx, writes) = mpsc::channel();
    std::thread::spawn(move || {
        for v in rx {
            if v["event"] != "write" {
                continue;
            }
            let w = Write {
                t_ms: v["t_ms"].as_f64().unwrap_or_default(),
                summary: format!(
                    "{} {} -> {}",
                    v["method"].as_str().unwrap_or("?"),
                    v["path"].as_str().unwrap_or("?"),
                    v["status"]
                ),
                status: v["status"].as_u64(),
                ready: strings(&v["ready"]),
                not_ready: strings(&v["not_ready"]),
            };
            if v["path"].as_str().is_some_and(|p| p.contains("/endpoints")) && tx.send(w).is_err() {
                break;
            }
        }
    });
    (p, url, Writes(writes))
}

/// `epcheck run -f config` in namespace `ns` (cwd `e`'s directory) with `env`: its process and
/// its log, collected as it comes.
pub(crate) fn spawn_epcheck(
    ns: &str,
    e: &Epcheck,
    config: &str,
    env: &[(&str, &str)],
) -> (Proc, Arc<Mutex<String>>) {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_epcheck"))
        .args(["run", "-f", config])
        .current_dir(e.dir.path())
        .env_remove("EPCHECK_CONFIG")
        .env_remove("EPCHECK_REDIS_PASSWORD")
        .env("EPCHECK_LOG", "info,epcheck=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log: Arc<Mutex<String>> = Arc::default();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    (
        Proc {
            child,
            _stdin: None,
        },
        log,
    )
}

/// The last `n` lines of `log`.
pub(crate) fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM to `p`; its exit code, or `None` (and SIGKILL) after 5 s.
pub(crate) fn terminate(mut p: Proc) -> Option<i32> {
    let _ = run("kill", &["-TERM", &p.pid().to_string()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = p.child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    p.kill();
    None
}

impl Lab {
    fn chk(&self) -> String {
        format!("{}-chk", self.tag)
    }

    fn host(&self, i: usize) -> String {
        format!("{}-h{}", self.tag, i + 1)
    }

    fn checker_ip(&self) -> String {
        format!("{}1", self.net)
    }

    fn host_ip(&self, i: usize) -> String {
        format!("{}{}", self.net, 11 + i)
    }

    fn host_ips(&self) -> Vec<String> {
        (0..3).map(|i| self.host_ip(i)).collect()
    }

    /// Builds the namespaces and links, or says why it cannot (the caller skips on that).
    fn build() -> Result<Lab, String> {
        remove_stale_namespaces();
        // Before anything else: a subnet that is on none of the machine's interfaces.
        let host_addrs = ip(&["-br", "addr"])?;
        let net = SUBNETS
            .iter()
            .find(|s| !host_addrs.contains(*s))
            .unwrap_or_else(|| {
                panic!(
                    "netns lab: both lab subnets are on this machine's interfaces:\n{host_addrs}"
                )
            })
            .to_string();
        let mut lab = Lab {
            tag: format!("epl-{}", std::process::id()),
            net,
            namespaces: Vec::new(),
            backends: Vec::new(),
            apiserver: None,
            epcheck: None,
            writes: None,
            epcheck_log: Arc::default(),
        };
        // The first `ip netns add` decides whether this machine can run the lab at all.
        let chk = lab.chk();
        ip(&["netns", "add", &chk])?;
        lab.namespaces.push(chk.clone());
        for i in 0..3 {
            let h = lab.host(i);
            must("ip", &["netns", "add", &h]);
            lab.namespaces.push(h);
        }

        let cidr = |ip: String| format!("{ip}/24");
        must("ip", &["-n", &chk, "link", "set", "lo", "up"]);
        must("ip", &["-n", &chk, "link", "add", "br0", "type", "bridge"]);
        must(
            "ip",
            &[
                "-n",
                &chk,
                "addr",
                "add",
                &cidr(lab.checker_ip()),
                "dev",
                "br0",
            ],
        );
        must("ip", &["-n", &chk, "link", "set", "br0", "up"]);
        for i in 0..3 {
            let h = lab.host(i);
            let vh = format!("vh{}", i + 1);
            must("ip", &["-n", &h, "link", "set", "lo", "up"]);
            // Created inside the checker namespace with its peer put straight into the host's:
            // neither end ever exists in the machine's own namespace.
            must(
                "ip",
                &[
                    "-n", &chk, "link", "add", &vh, "type", "veth", "peer", "name", "eth0",
                    "netns", &h,
                ],
            );
            must("ip", &["-n", &chk, "link", "set", &vh, "master", "br0"]);
            must("ip", &["-n", &chk, "link", "set", &vh, "up"]);
            must(
                "ip",
                &[
                    "-n",
                    &h,
                    "addr",
                    "add",
                    &cidr(lab.host_ip(i)),
                    "dev",
                    "eth0",
                ],
            );
            must("ip", &["-n", &h, "link", "set", "eth0", "up"]);
        }
        lab.check_closed();
        Ok(lab)
    }

    /// The checks made before any traffic: the lab's subnet is on no interface of the machine,
    /// no lab namespace routes anything but the lab subnet, and every target resolves through
    /// the lab's bridge from the checker.
    fn check_closed(&self) {
        check_routes(&self.namespaces, &self.net);
        let chk = self.chk();
        for target in self.host_ips() {
            let got = must("ip", &["-n", &chk, "-4", "route", "get", &target]);
            assert!(
                got.contains("dev br0") && got.contains(&format!("src {}", self.checker_ip())),
                "{target} does not resolve through the lab from {chk}: {got}"
            );
        }
        // A route lookup (no packet is sent) for an address outside the lab must fail.
        let outside = if self.net == SUBNETS[0] {
            "203.0.113.1"
        } else {
            "198.51.100.1"
        };
        let escaped = ip(&["-n", &chk, "-4", "route", "get", outside]);
        assert!(
            escaped.is_err(),
            "{chk} has a route out of the lab: {escaped:?}"
        );
        println!(
            "netns lab: closed network {}0/24 in {} namespaces checked",
            self.net,
            self.namespaces.len()
        );
    }

    /// Starts this executable in namespace `ns` in the given role; returns it and the reports
    /// it prints.
    pub(crate) fn spawn_role(
        ns: &str,
        role: &str,
        env: &[(&str, &str)],
    ) -> (Proc, Receiver<Value>) {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(exe)
            .args([
                "lab::lab_role",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(MARK)
                    && let Ok(v) = serde_json::from_str::<Value>(&line[at + MARK.len()..])
                    && tx.send(v).is_err()
                {
                    break;
                }
            }
        });
        (
            Proc {
                child,
                _stdin: stdin,
            },
            rx,
        )
    }

    fn start_backend(&mut self, i: usize) {
        let p = spawn_backend(&self.host(i), &format!("{}:{PORT}", self.host_ip(i)));
        while self.backends.len() <= i {
            self.backends.push(None);
        }
        self.backends[i] = Some(p);
    }

    fn stop_backend(&mut self, i: usize) {
        if let Some(p) = self.backends[i].take() {
            p.kill();
        }
    }

    /// Starts the lab ApiServer; returns its URL (inside the checker namespace).
    fn start_apiserver(&mut self) -> String {
        let (p, url, writes) = spawn_apiserver(&self.chk(), None);
        self.apiserver = Some(p);
        self.writes = Some(writes);
        url
    }

    fn start_epcheck(&mut self, e: &Epcheck, config: &str) {
        let (p, log) = spawn_epcheck(&self.chk(), e, config, &[]);
        self.epcheck = Some(p);
        self.epcheck_log = log;
    }

    /// The end of epcheck's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.epcheck_log.lock().unwrap().clone();
        format!("epcheck log (last lines):\n{}", tail(&log, 60))
    }

    /// The next Endpoints write, if one arrives within `within`.
    fn next_write(&self, within: Duration) -> Option<Write> {
        self.writes.as_ref()?.next(within, &|| self.log_tail())
    }

    /// Waits for the next write, which must set exactly `ready` and `not_ready`.
    fn expect_write(
        &self,
        what: &str,
        ready: &[String],
        not_ready: &[String],
        within: Duration,
    ) -> Write {
        let writes = self.writes.as_ref().expect("the lab ApiServer runs");
        writes.expect(what, ready, not_ready, within, &|| self.log_tail())
    }

    /// Cuts host `i` off by dropping its packets, with the best method this machine has.
    fn drop_packets(&self, i: usize) -> DropMethod {
        let h = self.host(i);
        let checker = self.checker_ip();
        let nft = format!(
            "add table inet epl_lab ; \
             add chain inet epl_lab input {{ type filter hook input priority 0 ; policy accept ; }} ; \
             add rule inet epl_lab input ip saddr {checker} drop"
        );
        let attempts: [(DropMethod, Vec<&str>); 3] = [
            (DropMethod::Nft, vec!["netns", "exec", &h, "nft", &nft]),
            (
                DropMethod::Netem,
                vec![
                    "-n", &h, "qdisc", "add", "dev", "eth0", "root", "netem", "loss", "100%",
                ],
            ),
            (
                DropMethod::Blackhole,
                vec!["-n", &h, "route", "add", "blackhole", &checker],
            ),
        ];
        let only = std::env::var(DROP_ENV).ok();
        let mut failed = Vec::new();
        for (method, args) in attempts {
            if only
                .as_deref()
                .is_some_and(|o| !format!("{method:?}").eq_ignore_ascii_case(o))
            {
                continue;
            }
            let prog = if matches!(method, DropMethod::Netem) {
                "tc"
            } else {
                "ip"
            };
            match run(prog, &args) {
                Ok(_) => {
                    for f in &failed {
                        println!("netns lab: drop method unavailable: {f}");
                    }
                    println!("netns lab: dropping packets with {method:?}");
                    return method;
                }
                Err(e) => failed.push(e),
            }
        }
        panic!("no way to drop packets in the lab: {failed:#?}");
    }

    fn undrop_packets(&self, i: usize, method: DropMethod) {
        let h = self.host(i);
        let checker = self.checker_ip();
        match method {
            DropMethod::Nft => must(
                "ip",
                &["netns", "exec", &h, "nft", "delete table inet epl_lab"],
            ),
            DropMethod::Netem => must("tc", &["-n", &h, "qdisc", "del", "dev", "eth0", "root"]),
            DropMethod::Blackhole => must("ip", &["-n", &h, "route", "del", "blackhole", &checker]),
        };
    }

    fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        must("ip", &["-n", &self.host(i), "link", "set", "eth0", state]);
    }

    /// The error epcheck logged when it marked `ip` down the last time.
    fn down_error(&self, ip: &str) -> String {
        let log = self.epcheck_log.lock().unwrap().clone();
        let addr = format!("{ip}:{PORT}");
        log.lines()
            .rev()
            .find(|l| l.contains("target down") && l.contains(&addr))
            .and_then(|l| l.split("error=").nth(1))
            .map(|rest| {
                let rest = rest.strip_prefix('"').unwrap_or(rest);
                rest.split('"').next().unwrap_or(rest).trim().to_string()
            })
            .unwrap_or_default()
    }

    /// SIGTERM to epcheck; its exit code.
    fn terminate_epcheck(&mut self) -> Option<i32> {
        terminate(self.epcheck.take()?)
    }
}

pub(crate) fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Whether to skip, and why: not root, or no `ip netns`.
pub(crate) fn skip_reason() -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("not root (uid {uid})")),
        None => return Some("cannot tell the uid".into()),
    }
    if let Err(e) = ip(&["netns", "list"]) {
        return Some(format!("`ip netns` unusable: {e}"));
    }
    None
}

pub(crate) fn skip(reason: &str) {
    // CI runs as root and must run the lab; only a machine without root may skip there.
    let in_ci = std::env::var_os("CI").is_some();
    assert!(
        !in_ci || effective_uid() != Some(0),
        "netns lab cannot run in CI although it runs as root: {reason}"
    );
    println!("skipping netns lab: {reason}");
}

// ---------------------------------------------------------------------------------------------
// The test.

#[test]
fn netns_lab_detects_rst_drop_and_link_down() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return;
    }
    if let Some(reason) = skip_reason() {
        return skip(&reason);
    }
    let mut lab = match Lab::build() {
        Ok(lab) => lab,
        Err(reason) => return skip(&reason),
    };
    let tag = lab.tag.clone();
    let all = lab.host_ips();

    for i in 0..3 {
        lab.start_backend(i);
    }
    let url = lab.start_apiserver();
    let e = Epcheck::new();
    e.write("token", TOKEN);
    let top = format!(
        "interval: {INTERVAL_MS}\npingtimeout: {TIMEOUT_MS}\nurl: {url}\n\
         content_type: application/json\ntoken_file: token\nresync_interval: 60000\n\
         metrics:\n  listen: \"off\"\n\
         probe:\n  rise: {RISE}\n  fall: {FALL}\n  fast_interval: {FAST_MS}\n\
         failsafe:\n  mode: hold\n  min_targets: 3\n"
    );
    let config = e.write("config.yaml", &web_config(&top, PORT, &all));
    lab.start_epcheck(&e, config.to_str().unwrap());

    // Cold start: the first probe of each target decides, and the real addresses go in.
    lab.expect_write("start", &all, &[], Duration::from_secs(10));

    let refuse_bound = Duration::from_millis(INTERVAL_MS + (FALL - 1) * FAST_MS);
    let drop_bound = Duration::from_millis(INTERVAL_MS + TIMEOUT_MS + (FALL - 1) * FAST_MS);
    // Back after `rise` successes: the next probe (within an interval) and a confirming one.
    let back_bound = Duration::from_millis(INTERVAL_MS + (RISE - 1) * FAST_MS + TIMEOUT_MS);
    let mut results = Vec::new();

    for (i, what) in ["backend stopped (RST)", "packets dropped", "link down"]
        .into_iter()
        .enumerate()
    {
        let bound = if i == 0 { refuse_bound } else { drop_bound };
        let others: Vec<String> = all.iter().filter(|a| **a != all[i]).cloned().collect();
        // Let a probe round pass so that the cut lands at an arbitrary point of the interval.
        std::thread::sleep(Duration::from_millis(INTERVAL_MS + 150 * i as u64));
        if let Some(w) = lab.next_write(Duration::ZERO) {
            panic!(
                "a write while nothing changed: {}\n{}",
                w.summary,
                lab.log_tail()
            );
        }

        let mut method = None;
        match i {
            0 => lab.stop_backend(0),
            1 => method = Some(lab.drop_packets(1)),
            _ => lab.set_link(2, false),
        }
        let cut = now_ms();
        let w = lab.expect_write(
            what,
            &others,
            &all[i..=i],
            bound + SLACK + Duration::from_secs(2),
        );
        let took = Duration::from_secs_f64(((w.t_ms - cut) / 1000.0).max(0.0));
        println!(
            "netns lab: {what}: {} out of Endpoints after {} ms (bound {} ms + {} ms slack)",
            all[i],
            took.as_millis(),
            bound.as_millis(),
            SLACK.as_millis()
        );
        // The cut must look like what it imitates: a refusal, or silence until the timeout.
        let error = lab.down_error(&all[i]);
        println!("netns lab: {what}: epcheck's probe error: {error}");
        let expected = if i == 0 { "refused" } else { "timed out" };
        assert!(
            i == 2 || error.contains(expected),
            "{what}: epcheck saw `{error}`, expected `{expected}`\n{}",
            lab.log_tail()
        );
        assert!(
            took <= bound + SLACK,
            "{what}: {} removed after {took:?}, bound {bound:?} + {SLACK:?}\n{}",
            all[i],
            lab.log_tail()
        );

        match (i, method) {
            (0, _) => lab.start_backend(0),
            (1, Some(m)) => lab.undrop_packets(1, m),
            _ => lab.set_link(2, true),
        }
        let restored = now_ms();
        let w = lab.expect_write(
            &format!("{what}, restored"),
            &all,
            &[],
            back_bound + SLACK + Duration::from_secs(3),
        );
        let back = Duration::from_secs_f64(((w.t_ms - restored) / 1000.0).max(0.0));
        println!(
            "netns lab: {what}: {} back after {} ms (bound {} ms)",
            all[i],
            back.as_millis(),
            back_bound.as_millis()
        );
        results.push((what, took, bound, back, error));
    }

    let code = lab.terminate_epcheck();
    assert_eq!(
        code,
        Some(0),
        "epcheck did not exit cleanly\n{}",
        lab.log_tail()
    );
    let log = lab.epcheck_log.lock().unwrap().clone();
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    drop(lab);

    let left = ip(&["netns", "list"]).unwrap_or_default();
    assert!(
        !left.contains(&format!("{tag}-")),
        "namespaces left after teardown:\n{left}"
    );
    println!("netns lab: summary");
    for (what, took, bound, back, error) in results {
        println!(
            "  {what:<24} detected {:>5} ms (bound {:>5} ms)   back {:>5} ms   ({error})",
            took.as_millis(),
            bound.as_millis(),
            back.as_millis()
        );
    }
}
