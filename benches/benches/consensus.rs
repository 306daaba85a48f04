//! Multi-vantage consensus (SPEC §9.1) at scale: three `epcheck run` replicas of the release
//! binary over 10,000 loopback targets, measured at the stand-in ApiServer.
//!
//! ```sh
//! cargo build --release -p epcheck-cli && cargo bench -p epcheck-benches --bench consensus
//! ```
//!
//! Options after `--`: `--targets N` (10,000, in services of 100), `--window S` (60: the
//! steady window with consensus on and each outage window; the steady window with consensus
//! off is half as long), `--flips N` (10 per mode), `--interval MS` (5,000: the probe interval;
//! timeout 1 s, rise 2, fall 3, fast_interval 200 ms, concurrency 1,024 as in the daemon
//! bench). The binary is `target/release/epcheck` of this workspace, or `EPCHECK_BIN`.
//!
//! What runs, all on loopback, started and stopped by this process:
//! - the targets: 100 services × 100 backends on `127.10.S.T`, one port shared by all, one
//!   listener per address on two accept threads, every one accepting at the start;
//! - the stand-in ApiServer (`fixtures::apiserver`, loopback IPs allowed), in this process,
//!   with one token per replica (users `replica-0` … `replica-2`), so every request in its log
//!   names the replica that sent it;
//! - three `epcheck run --log-format json` replicas (`POD_NAME=replica-N`, under `timeout -s
//!   KILL` so they die even if this process is killed), with leader election on Leases (the
//!   defaults written out: lease 15 s, renew 10 s, retry 2 s) and consensus with its defaults
//!   written out (heartbeat 10 s, ttl 30 s, read_interval 1 s, quorum: a majority).
//!
//! Two modes, one after the other on the same targets and ApiServer: consensus **on** (three
//! replicas, views in Leases) and consensus **off** (the same three replicas with the
//! `consensus` block left out: the leader decides alone; same probes, same election, same
//! load on the machine). In each mode:
//! 1. steady window: every target up; the ApiServer's requests in the window, by kind;
//! 2. outage window: 5 % of the targets (the last five of every service) refuse for half the
//!    window, then accept again; the requests in the window, and how long until all of them
//!    were out of (and back in) the Endpoints;
//! 3. flips: one live target at a time (a different service each time) starts refusing; the
//!    time from then until the write that takes it out of its Endpoints object arrives, then it
//!    accepts again. From the replicas' logs, the time at which each replica saw it down: the
//!    deciding one is the quorum-th (2nd of 3) with consensus, the leader without.
//!
//! Writes are counted from the stand-in's request log: Endpoints, view Leases
//! (`epcheck-view-…`), the election Lease (`epcheck`), anything else. Each replica's `/metrics`
//! gives its probes and skipped probe slots in each window (to show the probe load is
//! sustainable), `/proc` its CPU.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use epcheck_benches::daemon::layout::{DaemonSettings, Layout, config_yaml};
use epcheck_benches::daemon::log::{Clock, LogEvent, parse, secs_between, tail};
use epcheck_benches::daemon::process::{
    ChildGuard, ProcSample, clock_ticks, epcheck_binary, sample,
};
use epcheck_benches::daemon::scrape;
use epcheck_benches::daemon::stats::{median, quantile};
use fixtures::apiserver::{ApiServer, Permissions, RecordedRequest, Resource};
use fixtures::targets::{ListenerGroup, MemberMode};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const NAMESPACE: &str = "default";
/// Backends per service.
const PER_SERVICE: usize = 100;
/// Replicas of `epcheck run`.
const REPLICAS: usize = 3;
/// The election Lease's name; view Leases are `<ELECTION>-view-<replica>`.
const ELECTION: &str = "epcheck";
/// Accept threads of the targets.
const ACCEPT_THREADS: usize = 2;
/// The share of the targets that refuse during the outage.
const OUTAGE_SHARE: f64 = 0.05;
/// Leader election (the defaults, written out).
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Consensus (the defaults, written out).
const HEARTBEAT: Duration = Duration::from_secs(10);
const TTL: Duration = Duration::from_secs(30);
const READ_INTERVAL: Duration = Duration::from_secs(1);
/// Flip targets are taken from the first `FLIP_SLOTS` of a service, per mode (the outage's are
/// the last ones).
const FLIP_SLOTS: usize = 20;

struct Options {
    targets: usize,
    window: Duration,
    flips: usize,
    interval: Duration,
    /// The arguments as given, for the command printed with the table.
    args: Vec<String>,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        targets: 10_000,
        window: Duration::from_secs(60),
        flips: 10,
        interval: Duration::from_secs(5),
        args: Vec::new(),
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--bench" {
            continue;
        }
        let value = it
            .next()
            .and_then(|v| v.parse::<f64>().ok().filter(|v| *v > 0.0).map(|n| (v, n)));
        let Some((raw, n)) = value else {
            return Err(format!(
                "{a}: use --targets N, --window S, --flips N or --interval MS, each with a \
                 positive number"
            )
            .into());
        };
        match a.as_str() {
            "--targets" => o.targets = n as usize,
            "--window" => o.window = Duration::from_secs_f64(n),
            "--flips" => o.flips = n as usize,
            "--interval" => o.interval = Duration::from_millis(n as u64),
            other => {
                return Err(format!(
                    "unknown option {other}; use --targets N, --window S, --flips N or \
                     --interval MS"
                )
                .into());
            }
        }
        o.args.extend([a.clone(), raw.clone()]);
    }
    if o.targets < PER_SERVICE {
        return Err(format!("--targets must be at least {PER_SERVICE}").into());
    }
    if o.interval < Duration::from_millis(500) {
        return Err("--interval must be at least 500 ms".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = options(&args).and_then(|o| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(bench(o))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("consensus bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one mode measured.
struct ModeResult {
    consensus: bool,
    steady: Window,
    outage: Outage,
    flips: Vec<FlipSample>,
    /// Flips whose removal write never came.
    missing: usize,
}

async fn bench(o: Options) -> Result<()> {
    let exe = epcheck_binary()?;
    let limit = probe_core::raise_nofile_limit()?;
    let need = o.targets as u64 + 1_000;
    if limit.soft < need {
        return Err(format!(
            "the open-file limit is {} but {need} are needed (one listener per target); \
             raise it (ulimit -n)",
            limit.soft
        )
        .into());
    }
    let layout = Layout::new(o.targets, PER_SERVICE);
    let settings = DaemonSettings {
        interval: o.interval,
        ..DaemonSettings::default()
    };
    let ticks = clock_ticks();
    let clock = Clock::now();
    let dir = tempfile::tempdir()?;
    println!(
        "consensus bench: {} targets ({} services x {}), {} replicas, interval {} ms, window {} s, \
         {} flips per mode",
        layout.targets(),
        layout.services,
        layout.per_service,
        REPLICAS,
        settings.interval.as_millis(),
        o.window.as_secs(),
        o.flips
    );

    let group = Arc::new(ListenerGroup::start_shared_port(
        &layout.ips(),
        ACCEPT_THREADS,
    )?);
    let port = group.addrs()[0].port();
    let api = ApiServer::builder().strict_ips(false).start().await?;
    for s in 0..layout.services {
        api.put_service(NAMESPACE, &layout.service(s));
    }
    let outage_members = outage_members(&layout);

    let mut results = Vec::new();
    for (m, consensus) in [true, false].into_iter().enumerate() {
        let label = if consensus { "on" } else { "off" };
        println!("consensus {label}: starting {REPLICAS} replicas ...");
        let mut cluster = Cluster::start(
            &exe,
            dir.path(),
            &api,
            &layout,
            &settings,
            port,
            consensus,
            m,
        )?;
        cluster.settle(&api, &layout, &settings).await?;
        let steady_window = if consensus { o.window } else { o.window / 2 };
        println!("  steady window ({} s) ...", steady_window.as_secs());
        let steady = steady(&api, &mut cluster, steady_window, ticks).await?;
        println!(
            "  outage: {} targets refuse for {} s ...",
            outage_members.len(),
            (o.window / 2).as_secs()
        );
        let outage = outage(
            &api,
            &group,
            &layout,
            &mut cluster,
            &outage_members,
            o.window,
            &settings,
            ticks,
        )
        .await?;
        println!("  {} flips, one at a time ...", o.flips);
        let (flips, missing) = flips(
            &api,
            &group,
            &layout,
            &mut cluster,
            &settings,
            o.flips,
            m,
            &clock,
        )
        .await?;
        // Every target back in before the replicas stop and the next mode starts.
        wait_all_ready(&api, &layout, settings.interval * 3 + TTL).await?;
        cluster.stop().await;
        results.push(ModeResult {
            consensus,
            steady,
            outage,
            flips,
            missing,
        });
    }
    report(&o, &layout, &settings, outage_members.len(), &results);
    if let Ok(g) = Arc::try_unwrap(group) {
        g.stop().await;
    }
    api.shutdown().await;
    Ok(())
}

/// The outage's targets as `(service, target)`: 5 % of all, round-robin over the services,
/// from the last target of each service down.
fn outage_members(layout: &Layout) -> Vec<(usize, usize)> {
    let n = ((layout.targets() as f64 * OUTAGE_SHARE).round() as usize).max(1);
    (0..n)
        .map(|k| {
            let s = k % layout.services;
            let t = layout.per_service - 1 - (k / layout.services) % layout.per_service;
            (s, t)
        })
        .collect()
}

/// One replica of `epcheck run`.
struct Replica {
    /// Its ApiServer user and `POD_NAME`: `replica-N`.
    name: String,
    guard: ChildGuard,
    log: PathBuf,
    metrics: String,
}

/// The replicas of one mode.
struct Cluster {
    replicas: Vec<Replica>,
    consensus: bool,
}

impl Cluster {
    #[allow(clippy::too_many_arguments)]
    fn start(
        exe: &Path,
        dir: &Path,
        api: &ApiServer,
        layout: &Layout,
        settings: &DaemonSettings,
        port: u16,
        consensus: bool,
        mode: usize,
    ) -> Result<Self> {
        let mut replicas = Vec::new();
        for n in 0..REPLICAS {
            let name = format!("replica-{n}");
            let token = format!("consensus-bench-token-{mode}-{n}");
            api.add_user_token(token.clone(), name.clone(), Permissions::all());
            let token_file = dir.join(format!("token-{mode}-{n}"));
            std::fs::write(&token_file, &token)?;
            let metrics = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .to_string();
            let mut yaml = config_yaml(layout, settings, port, &api.url(), &token_file, &metrics);
            yaml.push_str(&replica_yaml(consensus));
            let config = dir.join(format!("config-{mode}-{n}.yaml"));
            std::fs::write(&config, yaml)?;
            let log = dir.join(format!("epcheck-{mode}-{n}.log"));
            let guard = spawn(exe, &config, &log, dir, &name)?;
            replicas.push(Replica {
                name,
                guard,
                log,
                metrics,
            });
        }
        Ok(Self {
            replicas,
            consensus,
        })
    }

    /// An error with the log tail of a replica that exited, if one did.
    fn check_alive(&mut self) -> Result<()> {
        for r in &mut self.replicas {
            if r.guard.exited() {
                return Err(format!("{} exited; log tail:\n{}", r.name, tail(&r.log, 20)).into());
            }
        }
        Ok(())
    }

    /// Waits until every Endpoints object holds every target, a replica leads (with consensus,
    /// counting both other views), then two intervals or one heartbeat, whichever is longer,
    /// so the start's writes are over.
    async fn settle(
        &mut self,
        api: &ApiServer,
        layout: &Layout,
        settings: &DaemonSettings,
    ) -> Result<()> {
        let started = Instant::now();
        let within = Duration::from_secs(90);
        loop {
            self.check_alive()?;
            let leader = self.replicas.iter().find(|r| {
                let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                log.contains("this replica leads")
                    && (!self.consensus
                        || log.matches("consensus: a replica's view counts").count()
                            >= REPLICAS - 1)
            });
            if let Some(l) = leader
                && all_ready(api, layout)
            {
                println!(
                    "  {} leads{}; settled {:.1} s after the start",
                    l.name,
                    if self.consensus {
                        " and counts both other views"
                    } else {
                        ""
                    },
                    started.elapsed().as_secs_f64()
                );
                break;
            }
            if started.elapsed() > within {
                let logs: Vec<String> = self
                    .replicas
                    .iter()
                    .map(|r| format!("{}:\n{}", r.name, tail(&r.log, 10)))
                    .collect();
                return Err(format!(
                    "no leader with every view counted and every target ready within {} s:\n{}",
                    within.as_secs(),
                    logs.join("\n")
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep((settings.interval * 2).max(HEARTBEAT)).await;
        self.check_alive()
    }

    /// Every replica's CPU and probe counters now.
    async fn snapshot(&self, ticks: f64) -> Result<Snapshot> {
        let mut s = Snapshot {
            at: Instant::now(),
            cpu: Vec::new(),
            probes: 0.0,
            skipped: 0.0,
        };
        for r in &self.replicas {
            let page = scrape::get(&r.metrics, "/metrics").await?;
            s.probes += scrape::sum(&page, "epcheck_probes_total");
            s.skipped += scrape::sum(&page, "epcheck_probe_slots_skipped_total");
            let p: ProcSample = sample(r.guard.pid(), ticks)?;
            s.cpu.push(p.cpu_secs);
        }
        Ok(s)
    }

    /// The log events of every replica, by replica name.
    fn events(&self) -> Vec<(String, Vec<LogEvent>)> {
        self.replicas
            .iter()
            .map(|r| {
                let text = std::fs::read_to_string(&r.log).unwrap_or_default();
                (r.name.clone(), parse(&text))
            })
            .collect()
    }

    /// SIGTERM to every replica at once; each gets 10 s.
    async fn stop(self) {
        let handles: Vec<_> = self
            .replicas
            .into_iter()
            .map(|mut r| {
                tokio::task::spawn_blocking(move || {
                    let _ = r.guard.terminate(Duration::from_secs(10));
                })
            })
            .collect();
        for h in handles {
            let _ = h.await;
        }
    }
}

/// The keys a replica adds to the daemon bench's config: leader election on Leases, and
/// consensus when `consensus` (the defaults, written out).
fn replica_yaml(consensus: bool) -> String {
    let mut y = format!(
        "leader_election:\n  enabled: true\n  backend: lease\n  namespace: {NAMESPACE}\n  \
         name: {ELECTION}\n  lease_duration: {}\n  renew_deadline: {}\n  retry_period: {}\n",
        LEASE_DURATION.as_millis(),
        RENEW_DEADLINE.as_millis(),
        RETRY_PERIOD.as_millis()
    );
    if consensus {
        y.push_str(&format!(
            "consensus:\n  enabled: true\n  heartbeat: {}\n  ttl: {}\n  read_interval: {}\n",
            HEARTBEAT.as_millis(),
            TTL.as_millis(),
            READ_INTERVAL.as_millis()
        ));
    }
    y
}

/// Starts `epcheck run` as `pod` under `timeout -s KILL` (the backstop: the replicas die even
/// if this process is killed).
fn spawn(exe: &Path, config: &Path, log_path: &Path, cwd: &Path, pod: &str) -> Result<ChildGuard> {
    let log = std::fs::File::create(log_path)?;
    let has_timeout = Command::new("timeout")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let mut cmd = if has_timeout {
        let mut c = Command::new("timeout");
        c.args(["-s", "KILL", "1800"]).arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(["run", "-f"])
        .arg(config)
        .args(["--log-format", "json"])
        .current_dir(cwd)
        .env("POD_NAME", pod)
        .env_remove("EPCHECK_CONFIG")
        .env_remove("EPCHECK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = cmd.spawn()?;
    Ok(if has_timeout {
        ChildGuard::wrapped(child, exe)?
    } else {
        ChildGuard::new(child)
    })
}

/// The replicas' counters at one moment.
struct Snapshot {
    at: Instant,
    /// CPU seconds, per replica.
    cpu: Vec<f64>,
    probes: f64,
    skipped: f64,
}

/// The probe load of a window.
#[derive(Clone, Debug, Default)]
struct Load {
    /// Probes per second, all replicas.
    probes_per_sec: f64,
    /// Probe slots skipped (`epcheck_probe_slots_skipped_total`), all replicas.
    skipped: f64,
    /// CPU used, in cores, per replica.
    cores: Vec<f64>,
}

impl Load {
    fn between(a: &Snapshot, b: &Snapshot) -> Self {
        let secs = (b.at - a.at).as_secs_f64().max(1e-9);
        Load {
            probes_per_sec: (b.probes - a.probes) / secs,
            skipped: b.skipped - a.skipped,
            cores: a
                .cpu
                .iter()
                .zip(&b.cpu)
                .map(|(x, y)| (y - x) / secs)
                .collect(),
        }
    }
}

/// The ApiServer requests of a window, by kind.
#[derive(Clone, Debug, Default)]
struct Requests {
    secs: f64,
    endpoints: usize,
    views: usize,
    election: usize,
    other: usize,
    /// Writes answered with something other than 2xx (409s of the election, say).
    failed: usize,
    reads: usize,
    /// View Lease writes per replica (user).
    views_by_replica: BTreeMap<String, usize>,
}

impl Requests {
    fn count(log: &[RecordedRequest], from: Instant, to: Instant) -> Self {
        let mut r = Requests {
            secs: (to - from).as_secs_f64(),
            ..Requests::default()
        };
        let view_prefix = format!("{ELECTION}-view-");
        for q in log.iter().filter(|q| {
            let at = q.at.into_std();
            at >= from && at < to
        }) {
            if !q.is_write() {
                r.reads += 1;
                continue;
            }
            if !q.status.is_some_and(|s| (200..300).contains(&s)) {
                r.failed += 1;
            }
            let name = q.path.rsplit('/').next().unwrap_or("");
            if q.path.contains("/endpoints/") {
                r.endpoints += 1;
            } else if q.path.contains("/leases/") && name.starts_with(&view_prefix) {
                r.views += 1;
                *r.views_by_replica
                    .entry(q.user().unwrap_or("-").to_owned())
                    .or_default() += 1;
            } else if q.path.contains("/leases/") && name == ELECTION {
                r.election += 1;
            } else {
                r.other += 1;
            }
        }
        r
    }

    fn writes(&self) -> usize {
        self.endpoints + self.views + self.election + self.other
    }

    fn per_minute(&self, n: usize) -> f64 {
        n as f64 * 60.0 / self.secs.max(1e-9)
    }
}

/// What a window measured.
struct Window {
    requests: Requests,
    load: Load,
}

async fn steady(
    api: &ApiServer,
    cluster: &mut Cluster,
    window: Duration,
    ticks: f64,
) -> Result<Window> {
    let s0 = cluster.snapshot(ticks).await?;
    let t0 = Instant::now();
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500).min(window - t0.elapsed())).await;
        cluster.check_alive()?;
    }
    let t1 = Instant::now();
    let s1 = cluster.snapshot(ticks).await?;
    Ok(Window {
        requests: Requests::count(&api.requests(), t0, t1),
        load: Load::between(&s0, &s1),
    })
}

/// What the outage window measured.
struct Outage {
    window: Window,
    /// From the break until every outage target was out of the ready addresses.
    all_out: Option<Duration>,
    /// From the heal until every outage target was back.
    all_back: Option<Duration>,
}

#[allow(clippy::too_many_arguments)]
async fn outage(
    api: &ApiServer,
    group: &Arc<ListenerGroup>,
    layout: &Layout,
    cluster: &mut Cluster,
    members: &[(usize, usize)],
    window: Duration,
    settings: &DaemonSettings,
    ticks: f64,
) -> Result<Outage> {
    let indices: Vec<usize> = members.iter().map(|&(s, t)| layout.index(s, t)).collect();
    let ips: Vec<(usize, String)> = members
        .iter()
        .map(|&(s, t)| (s, layout.ip(s, t).to_string()))
        .collect();
    let s0 = cluster.snapshot(ticks).await?;
    let t0 = Instant::now();
    set_modes(group, &indices, MemberMode::Refusing).await?;
    let mut all_out = None;
    while t0.elapsed() < window / 2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.check_alive()?;
        if all_out.is_none() && ready_among(api, layout, &ips) == 0 {
            all_out = Some(t0.elapsed());
        }
    }
    set_modes(group, &indices, MemberMode::Accepting).await?;
    let healed = Instant::now();
    let mut all_back = None;
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(200)).await;
        cluster.check_alive()?;
        if all_back.is_none() && ready_among(api, layout, &ips) == ips.len() {
            all_back = Some(healed.elapsed());
        }
    }
    let t1 = Instant::now();
    let s1 = cluster.snapshot(ticks).await?;
    // Past the window (not counted in it), wait for the rest to come back.
    let deadline = Instant::now() + settings.interval * 3 + TTL;
    while all_back.is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ready_among(api, layout, &ips) == ips.len() {
            all_back = Some(healed.elapsed());
        }
    }
    Ok(Outage {
        window: Window {
            requests: Requests::count(&api.requests(), t0, t1),
            load: Load::between(&s0, &s1),
        },
        all_out,
        all_back,
    })
}

/// Switches every member in `indices` to `mode`, all at once.
async fn set_modes(group: &Arc<ListenerGroup>, indices: &[usize], mode: MemberMode) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for &i in indices {
        let g = Arc::clone(group);
        tasks.spawn(async move { g.set_mode(i, mode).await });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

fn ready_ips(api: &ApiServer, layout: &Layout, s: usize) -> Vec<String> {
    api.get_object(Resource::Endpoints, NAMESPACE, &layout.service(s))
        .map(|o| fixtures::apiserver::endpoint_ips(&o, "addresses"))
        .unwrap_or_default()
}

/// How many of `ips` (service, address) are in their service's ready addresses now.
fn ready_among(api: &ApiServer, layout: &Layout, ips: &[(usize, String)]) -> usize {
    let mut by_service: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (s, ip) in ips {
        by_service.entry(*s).or_default().push(ip);
    }
    by_service
        .into_iter()
        .map(|(s, want)| {
            let ready = ready_ips(api, layout, s);
            want.iter()
                .filter(|ip| ready.iter().any(|r| r == *ip))
                .count()
        })
        .sum()
}

fn all_ready(api: &ApiServer, layout: &Layout) -> bool {
    (0..layout.services).all(|s| ready_ips(api, layout, s).len() == layout.per_service)
}

async fn wait_all_ready(api: &ApiServer, layout: &Layout, within: Duration) -> Result<()> {
    let started = Instant::now();
    while !all_ready(api, layout) {
        if started.elapsed() > within {
            return Err(format!(
                "not every target was back in its Endpoints {} s after the flips",
                within.as_secs()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// One target that started refusing.
struct FlipSample {
    /// Break → the removal write arrived, in seconds.
    detection: f64,
    /// Break → the deciding replica logged it down (the quorum-th replica with consensus, the
    /// writer without), in seconds.
    decided: Option<f64>,
    /// The deciding replica's "target down" → the removal write, in seconds.
    to_write: Option<f64>,
    /// Replicas that had logged it down before the removal write.
    seen_down_by: usize,
}

/// `n` flips, one at a time: a live target starts refusing, its removal write is awaited, it
/// accepts again (its restoration runs while the next flip starts).
#[allow(clippy::too_many_arguments)]
async fn flips(
    api: &ApiServer,
    group: &Arc<ListenerGroup>,
    layout: &Layout,
    cluster: &mut Cluster,
    settings: &DaemonSettings,
    n: usize,
    mode: usize,
    clock: &Clock,
) -> Result<(Vec<FlipSample>, usize)> {
    let within = settings.interval * 3 + TTL;
    let mut done: Vec<(usize, usize, Instant, RecordedRequest)> = Vec::new();
    let mut missing = 0;
    for j in 0..n {
        // Pauses spread over 0.3 – 1.3 s, the same in every run, so the breaks meet the probe
        // grid at varied phases.
        tokio::time::sleep(Duration::from_millis(300 + (j as u64 * 617) % 1000)).await;
        cluster.check_alive()?;
        let s = j % layout.services;
        let t = (mode * FLIP_SLOTS + j % FLIP_SLOTS) % layout.per_service;
        let member = layout.index(s, t);
        let ip = layout.ip(s, t).to_string();
        let path = format!(
            "/api/v1/namespaces/{NAMESPACE}/endpoints/{}",
            layout.service(s)
        );
        group.set_mode(member, MemberMode::Refusing).await?;
        let broke = Instant::now();
        let removal = api
            .wait_for(
                |q| {
                    q.method == "PUT"
                        && q.path == path
                        && q.status.is_some_and(|c| (200..300).contains(&c))
                        && q.at.into_std() >= broke
                        && q.body_json().is_some_and(|b| {
                            !fixtures::apiserver::endpoint_ips(&b, "addresses").contains(&ip)
                        })
                },
                within,
            )
            .await;
        group.set_mode(member, MemberMode::Accepting).await?;
        match removal {
            Ok(w) => done.push((s, t, broke, w)),
            Err(_) => {
                println!(
                    "    {} t{t:03}: no removal write within {} s",
                    layout.service(s),
                    within.as_secs()
                );
                missing += 1;
            }
        }
    }
    // The last transitions reach the logs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = cluster.events();
    let samples = done
        .iter()
        .map(|(s, t, broke, write)| {
            flip_sample(
                layout,
                *s,
                *t,
                *broke,
                write,
                &events,
                cluster.consensus,
                clock,
            )
        })
        .collect();
    Ok((samples, missing))
}

/// One flip's figures, with the replicas' "target down" lines from their logs.
#[allow(clippy::too_many_arguments)]
fn flip_sample(
    layout: &Layout,
    s: usize,
    t: usize,
    broke: Instant,
    write: &RecordedRequest,
    events: &[(String, Vec<LogEvent>)],
    consensus: bool,
    clock: &Clock,
) -> FlipSample {
    let put = write.at.into_std();
    let (broke_wall, put_wall) = (clock.wall(broke), clock.wall(put));
    let service = layout.service(s);
    let target = format!("t{t:03}");
    // Each replica's first "target down" for this target after the break.
    let down: Vec<(&str, SystemTime)> = events
        .iter()
        .filter_map(|(name, ev)| {
            ev.iter()
                .find(|e| {
                    e.message == "target down"
                        && e.field("service") == Some(service.as_str())
                        && e.field("target") == Some(target.as_str())
                        && secs_between(broke_wall, e.at) > -0.005
                })
                .map(|e| (name.as_str(), e.at))
        })
        .collect();
    let seen: Vec<SystemTime> = {
        let mut v: Vec<SystemTime> = down
            .iter()
            .map(|&(_, at)| at)
            .filter(|&at| secs_between(at, put_wall) > -0.005)
            .collect();
        v.sort();
        v
    };
    let deciding = if consensus {
        // A majority of the three views.
        seen.get(REPLICAS / 2).copied()
    } else {
        let writer = write.user().unwrap_or("");
        down.iter()
            .find(|&&(name, _)| name == writer)
            .map(|&(_, at)| at)
    };
    FlipSample {
        detection: (put - broke).as_secs_f64(),
        decided: deciding.map(|at| secs_between(broke_wall, at)),
        to_write: deciding.map(|at| secs_between(at, put_wall)),
        seen_down_by: seen.len(),
    }
}

fn secs(q: Option<f64>) -> String {
    q.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
}

fn diff(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => format!("{:+.2}", a - b),
        _ => "-".to_owned(),
    }
}

fn report(
    o: &Options,
    layout: &Layout,
    settings: &DaemonSettings,
    outage_targets: usize,
    results: &[ModeResult],
) {
    let name = |r: &ModeResult| {
        if r.consensus {
            "consensus on"
        } else {
            "consensus off"
        }
    };
    println!();
    println!(
        "{} targets ({} services x {}), {REPLICAS} replicas; probe interval {} ms, timeout {} ms, \
         rise {}, fall {}, fast_interval {} ms, concurrency {}",
        layout.targets(),
        layout.services,
        layout.per_service,
        settings.interval.as_millis(),
        settings.timeout.as_millis(),
        settings.rise,
        settings.fall,
        settings.fast_interval.as_millis(),
        settings.concurrency
    );
    println!(
        "leader election: lease {} / renew {} / retry {} ms; consensus: heartbeat {} ms, ttl {} ms, \
         read_interval {} ms, quorum a majority",
        LEASE_DURATION.as_millis(),
        RENEW_DEADLINE.as_millis(),
        RETRY_PERIOD.as_millis(),
        HEARTBEAT.as_millis(),
        TTL.as_millis(),
        READ_INTERVAL.as_millis()
    );
    println!();
    println!(
        "{:<40} {:>7} {:>10} {:>11} {:>12} {:>7} {:>8} {:>9} {:>10}",
        "ApiServer requests per minute",
        "window",
        "Endpoints",
        "view Lease",
        "elect. Lease",
        "other",
        "writes",
        "(failed)",
        "reads"
    );
    let row = |label: String, w: &Window| {
        let q = &w.requests;
        println!(
            "{:<40} {:>6.0}s {:>10.1} {:>11.1} {:>12.1} {:>7.1} {:>8.1} {:>9.1} {:>10.1}",
            label,
            q.secs,
            q.per_minute(q.endpoints),
            q.per_minute(q.views),
            q.per_minute(q.election),
            q.per_minute(q.other),
            q.per_minute(q.writes()),
            q.per_minute(q.failed),
            q.per_minute(q.reads)
        );
    };
    for r in results {
        row(format!("steady, {}", name(r)), &r.steady);
    }
    for r in results {
        row(
            format!("{outage_targets}-target outage, {}", name(r)),
            &r.outage.window,
        );
    }
    println!();
    for r in results {
        for (what, w) in [("steady", &r.steady), ("outage", &r.outage.window)] {
            let by: Vec<String> = w
                .requests
                .views_by_replica
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let cores: Vec<String> = w.load.cores.iter().map(|c| format!("{c:.3}")).collect();
            println!(
                "{} {what}: {:.0} probes/s over all replicas ({:.0} scheduled), {} slots \
                 skipped, CPU cores per replica [{}]{}",
                name(r),
                w.load.probes_per_sec,
                (REPLICAS * layout.targets()) as f64 / settings.interval.as_secs_f64(),
                w.load.skipped,
                cores.join(", "),
                if by.is_empty() {
                    String::new()
                } else {
                    format!("; view Lease writes by replica: {}", by.join(", "))
                }
            );
        }
        println!(
            "{} outage: all {outage_targets} out of the Endpoints {} s after the break; all back \
             {} s after the heal{}",
            name(r),
            secs(r.outage.all_out.map(|d| d.as_secs_f64())),
            secs(r.outage.all_back.map(|d| d.as_secs_f64())),
            if r.outage.all_back.is_some_and(|d| {
                r.outage.window.requests.secs < (o.window / 2 + d).as_secs_f64()
            }) {
                " (after the window's end: the window misses some restoring writes)"
            } else {
                ""
            }
        );
    }
    println!();
    println!(
        "{:<44} {:>6} {:>9} {:>9} {:>18} {:>18}",
        "refuse -> out of the Endpoints (s)",
        "flips",
        "median",
        "max",
        "-> deciding down",
        "deciding -> write"
    );
    let stats = |r: &ModeResult| {
        let d: Vec<f64> = r.flips.iter().map(|f| f.detection).collect();
        let dec: Vec<f64> = r.flips.iter().filter_map(|f| f.decided).collect();
        let tw: Vec<f64> = r.flips.iter().filter_map(|f| f.to_write).collect();
        (
            median(&d),
            quantile(&d, 1.0),
            median(&dec),
            median(&tw),
            quantile(&tw, 1.0),
        )
    };
    for r in results {
        let (med, max, dec, tw, tw_max) = stats(r);
        let label = if r.consensus {
            format!("{} ({REPLICAS} replicas, 2nd replica decides)", name(r))
        } else {
            format!("{} ({REPLICAS} replicas, the leader decides)", name(r))
        };
        println!(
            "{:<44} {:>6} {:>9} {:>9} {:>18} {:>18}",
            label,
            format!("{}{}", r.flips.len(), if r.missing > 0 { "*" } else { "" }),
            secs(med),
            secs(max),
            format!("{} med", secs(dec)),
            format!("{} med/{} max", secs(tw), secs(tw_max))
        );
    }
    if let [on, off] = results {
        let (a, b) = (stats(on), stats(off));
        println!(
            "{:<44} {:>6} {:>9} {:>9} {:>18} {:>18}",
            "difference (on - off)",
            "",
            diff(a.0, b.0),
            diff(a.1, b.1),
            format!("{} med", diff(a.2, b.2)),
            format!("{} med/{} max", diff(a.3, b.3), diff(a.4, b.4))
        );
        let least = on.flips.iter().map(|f| f.seen_down_by).min();
        println!(
            "consensus on: replicas that had logged the target down before its removal write: \
             at least {} of {REPLICAS} in every flip (a majority is {})",
            least.map_or_else(|| "-".to_owned(), |n| n.to_string()),
            REPLICAS / 2 + 1
        );
    }
    for r in results.iter().filter(|r| r.missing > 0) {
        println!(
            "* {}: {} flips had no removal write in time and are left out",
            name(r),
            r.missing
        );
    }
    println!();
    let extra = if o.args.is_empty() {
        String::new()
    } else {
        format!(" -- {}", o.args.join(" "))
    };
    println!(
        "command: cargo build --release -p epcheck-cli && cargo bench -p epcheck-benches --bench \
         consensus{extra}"
    );
}
