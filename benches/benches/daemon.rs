//! The daemon benchmark of SPEC §11: `epcheck run` against 10,000 loopback targets, measured as
//! a process, next to a minimal connect loop probing the same targets as a process of its own.
//!
//! ```sh
//! cargo build --release -p epcheck-cli && cargo bench -p epcheck-benches --bench daemon
//! ```
//!
//! Options after `--`: `--targets N` (10,000), `--duration S` (60: the steady window, and the
//! reference loop's total measured time), `--flips N` (50 per kind; 0 for none), `--jitter F`
//! (the daemon's default when absent), `--concurrency N` (`probe.concurrency`, 1,024),
//! `--outage S` (after the flips, the stand-in answers every request with 500 for S seconds
//! while two backends break), `--no-haproxy` (leave the HAProxy contender out), `--half-open`
//! (`probe.half_open: true`: the targets then accept no probe, so the figures read from their
//! accepts — probe starts, the grid, probes per target — are empty; CPU, memory, detection and
//! the HAProxy ratio stand), `--quick` (2,000 targets, 20 s, 10 flips: a smoke run). The binary is
//! `target/release/epcheck` of this workspace, or `EPCHECK_BIN`. With `EPCHECK_BENCH_KEEP_LOG=F`
//! the daemon's log is copied to `F` at the end; with `EPCHECK_BENCH_WRAP="perf record -o F --"`
//! the daemon runs under that command (for a profile; the figures then mean little).
//!
//! What runs, all on loopback, started and stopped by this process:
//! - the targets: 100 services × 100 backends on `127.10.S.T`, one port shared by all, one
//!   listener per address on two accept threads; per service one backend hangs (a full accept
//!   queue: connects never complete) and one refuses (nothing listens);
//! - the stand-in ApiServer (`fixtures::apiserver`, loopback IPs allowed), in this process;
//! - `epcheck run --log-format json` with interval 2 s, timeout 1 s, rise 2, fall 3,
//!   fast_interval 200 ms, concurrency 1,024, resync 30 s, metrics on a loopback port (under
//!   `timeout -s KILL`, so it dies even if this process is killed);
//! - the reference: this binary re-executed with `--raw-loop`, a tokio connect loop doing a
//!   round over the same addresses every 2 s (concurrency 1,024, timeout 1 s, reset on close),
//!   half of its measured rounds before the daemon runs and half after, so drift of a noisy
//!   machine hits both alike;
//! - HAProxy (Debian's `haproxy`, installed with `apt-get` when missing): layer-4 `check` lines
//!   over the same targets with the same interval, timeout, rise, fall and fast interval, run
//!   for half the window before the daemon and half after, its checks counted at the targets
//!   like the daemon's ([`epcheck_benches::daemon::haproxy`]).
//!
//! Phases: reference (first half) → daemon start-up until every Endpoints object is written →
//! steady window (CPU, memory, probes, probe start times, ApiServer requests) → flips (live
//! backends start refusing / dropping packets, one after another, then come back) → SIGTERM →
//! reference (second half) → the table. Every figure is printed next to its SPEC §11 target.
//! A second table gives the figures of issue 21: each service's share of the probes in the
//! steady window (fair under overload), the peak RSS one `/metrics` scrape adds (the peak is
//! reset through `/proc/<pid>/clear_refs` first), the log lines of the start, and, with
//! `--outage`, the requests and log lines of the outage and how soon after it the changes
//! were written.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use epcheck_benches::daemon::haproxy::{self, HaproxyResult};
use epcheck_benches::daemon::layout::{DaemonSettings, Layout, config_yaml};
use epcheck_benches::daemon::log::{Clock, LogEvent, parse, secs_between, tail};
use epcheck_benches::daemon::process::{
    ChildGuard, ProcSample, clock_ticks, epcheck_binary, load_average, sample, tcp_active_opens,
};
use epcheck_benches::daemon::reference::{self, LoopResult, LoopSettings};
use epcheck_benches::daemon::scrape;
use epcheck_benches::daemon::stats::{Spread, median, quantile};
use fixtures::apiserver::{ApiServer, Fault, FaultRule, Permissions, RecordedRequest, Resource};
use fixtures::targets::{ListenerGroup, MemberMode};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const TOKEN: &str = "daemon-bench-token";
const NAMESPACE: &str = "default";
/// Backends per service.
const PER_SERVICE: usize = 100;
/// Accept threads of the targets.
const ACCEPT_THREADS: usize = 2;
/// Width of a bucket of the probe start histogram.
const BUCKET: Duration = Duration::from_millis(10);
/// Least pause between two flips of the same kind (each pause adds up to as much again).
const FLIP_GAP_MS: u64 = 60;
/// A probe start further than this from its target's grid is an extra (confirming) probe.
const OFF_GRID: Duration = Duration::from_millis(50);
/// Slack allowed on the detection bounds (scheduling on a loaded 2-core machine, the request).
const DETECTION_SLACK: Duration = Duration::from_millis(250);

struct Options {
    targets: usize,
    duration: Duration,
    flips: usize,
    jitter: Option<f64>,
    concurrency: Option<usize>,
    /// Seconds of ApiServer outage after the flips (`--outage S`).
    outage: Option<Duration>,
    /// Whether HAProxy runs as a contender (`--no-haproxy` leaves it out).
    haproxy: bool,
    /// `probe.half_open: true` (`--half-open`).
    half_open: bool,
}

fn options(args: &[String]) -> Result<Options> {
    let mut o = Options {
        targets: 10_000,
        duration: Duration::from_secs(60),
        flips: 50,
        jitter: None,
        concurrency: None,
        outage: None,
        haproxy: true,
        half_open: false,
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| -> Result<f64> {
            it.next()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("{name} needs a number").into())
        };
        match a.as_str() {
            "--bench" => {}
            "--quick" => {
                o.targets = 2_000;
                o.duration = Duration::from_secs(20);
                o.flips = 10;
            }
            "--targets" => o.targets = value("--targets")? as usize,
            "--duration" => o.duration = Duration::from_secs_f64(value("--duration")?),
            "--flips" => o.flips = value("--flips")? as usize,
            "--jitter" => o.jitter = Some(value("--jitter")?),
            "--concurrency" => o.concurrency = Some(value("--concurrency")? as usize),
            "--outage" => o.outage = Some(Duration::from_secs_f64(value("--outage")?)),
            "--no-haproxy" => o.haproxy = false,
            "--half-open" => o.half_open = true,
            other => {
                return Err(format!(
                    "unknown option {other}; use --targets N, --duration S, --flips N, \
                     --jitter F, --concurrency N, --outage S, --no-haproxy, --half-open or --quick"
                )
                .into());
            }
        }
    }
    if o.targets < 2 * PER_SERVICE {
        return Err(format!("--targets must be at least {}", 2 * PER_SERVICE).into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(reference::CHILD_FLAG) {
        return match reference::run_child(&args[2..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reference loop: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
            eprintln!("daemon bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(o: Options) -> Result<()> {
    let exe = epcheck_binary()?;
    let limit = probe_core::raise_nofile_limit()?;
    let need = o.targets as u64 + 2_000;
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
        jitter: o.jitter,
        concurrency: o
            .concurrency
            .unwrap_or(DaemonSettings::default().concurrency),
        half_open: o.half_open,
        ..DaemonSettings::default()
    };
    let ticks = clock_ticks();
    let clock = Clock::now();
    let dir = tempfile::tempdir()?;
    println!(
        "daemon bench: {} targets ({} services x {}), steady window {} s, {} flips per kind",
        layout.targets(),
        layout.services,
        layout.per_service,
        o.duration.as_secs(),
        o.flips.min(layout.services / 2)
    );

    // Targets.
    let group = Arc::new(ListenerGroup::start_shared_port(
        &layout.ips(),
        ACCEPT_THREADS,
    )?);
    let port = group.addrs()[0].port();
    let mut switches = Vec::new();
    for s in 0..layout.services {
        for t in 0..layout.per_service {
            let mode = layout.initial_mode(t);
            if mode != MemberMode::Accepting {
                let group = Arc::clone(&group);
                let i = layout.index(s, t);
                switches.push(tokio::spawn(async move { group.set_mode(i, mode).await }));
            }
        }
    }
    for s in switches {
        s.await??;
    }
    let addrs_file = dir.path().join("addrs.txt");
    let addrs_text: String = group.addrs().iter().map(|a| format!("{a}\n")).collect();
    std::fs::write(&addrs_file, addrs_text)?;

    // Reference, first half.
    let rounds = (o.duration.as_secs_f64() / settings.interval.as_secs_f64()).round() as u32;
    let loop_settings = |rounds: u32| LoopSettings {
        interval: settings.interval,
        timeout: settings.timeout,
        concurrency: settings.concurrency,
        warmup_rounds: 2,
        rounds,
    };
    let self_exe = std::env::current_exe()?;
    println!("reference loop, first half ({} rounds) ...", rounds / 2);
    let first = {
        let (exe, file, s) = (
            self_exe.clone(),
            addrs_file.clone(),
            loop_settings(rounds / 2),
        );
        tokio::task::spawn_blocking(move || reference::measure(&exe, &file, &s, ticks)).await??
    };

    // HAProxy, first half.
    let haproxy = if o.haproxy { haproxy::binary() } else { None };
    let haproxy_config = dir.path().join("haproxy.cfg");
    std::fs::write(
        &haproxy_config,
        haproxy::config(&layout, &settings, port, &dir.path().join("haproxy.sock")),
    )?;
    let half = o.duration / 2;
    let haproxy_first = match &haproxy {
        Some(bin) => {
            println!("HAProxy, first half ({} s) ...", half.as_secs());
            Some(haproxy::measure(bin, &haproxy_config, &settings, half, ticks).await?)
        }
        None => None,
    };

    // The daemon.
    let api = ApiServer::builder().strict_ips(false).start().await?;
    api.add_token(TOKEN, Permissions::all());
    for s in 0..layout.services {
        api.put_service(NAMESPACE, &layout.service(s));
    }
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let metrics = free_loopback_port()?.to_string();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(&layout, &settings, port, &api.url(), &token_file, &metrics),
    )?;
    let log_path = dir.path().join("epcheck.log");
    // The backstop: the whole daemon phase plus generous slack.
    let backstop = o.duration.as_secs() + if wrapped() { 2_400 } else { 600 };
    let started = Instant::now();
    let mut daemon = spawn_daemon(&exe, &config, &log_path, dir.path(), backstop)?;
    let pid = daemon.pid();
    println!("epcheck run (pid {pid}) starting ...");
    let converged = wait_converged(&api, &layout, &mut daemon, &log_path, started).await?;
    println!(
        "  every Endpoints object written {:.2} s after the start",
        converged.as_secs_f64()
    );
    // Let the start-up writes and the first regular rounds settle.
    tokio::time::sleep(settings.interval * 2).await;
    // The start, logged: every line until here.
    let startup_log_lines = count_lines(&log_path);

    println!("steady window ({} s) ...", o.duration.as_secs());
    let steady = steady_window(&api, &group, &layout, pid, &metrics, &settings, &o, ticks).await?;

    let scrape = scrape_rise(pid, &metrics).await?;
    let kinds = if o.flips == 0 {
        Vec::new()
    } else {
        flips(&api, &group, &layout, &settings, o.flips, &clock, &log_path).await?
    };
    let outage = match o.outage {
        Some(secs) => Some(outage(&api, &group, &layout, secs, &log_path).await?),
        None => None,
    };
    let peak = sample(pid, ticks)?;
    let stop = tokio::task::spawn_blocking(move || {
        // A profiler wrapping the daemon needs time to write its data after the daemon exits.
        let took = daemon.terminate(Duration::from_secs(if wrapped() { 120 } else { 5 }));
        (daemon, took)
    })
    .await?;
    let shutdown = stop.1;
    drop(stop.0);

    // HAProxy, second half.
    let haproxy_second = match &haproxy {
        Some(bin) => {
            println!("HAProxy, second half ({} s) ...", half.as_secs());
            Some(haproxy::measure(bin, &haproxy_config, &settings, half, ticks).await?)
        }
        None => None,
    };

    // Reference, second half.
    println!(
        "reference loop, second half ({} rounds) ...",
        rounds - rounds / 2
    );
    let second = {
        let (exe, file, s) = (self_exe, addrs_file, loop_settings(rounds - rounds / 2));
        tokio::task::spawn_blocking(move || reference::measure(&exe, &file, &s, ticks)).await??
    };

    if let Some(keep) = std::env::var_os("EPCHECK_BENCH_KEEP_LOG") {
        std::fs::copy(&log_path, &keep)?;
    }
    report(
        &layout, &settings, &o, &steady, &kinds, &first, &second, &peak, converged, shutdown,
    );
    if let (Some(a), Some(b)) = (&haproxy_first, &haproxy_second) {
        report_haproxy(&steady, a, b);
    }
    report_scale(&layout, &steady, startup_log_lines, scrape, outage.as_ref());
    if let Ok(g) = Arc::try_unwrap(group) {
        g.stop().await;
    }
    api.shutdown().await;
    Ok(())
}

/// Whether the daemon runs under a profiler (`EPCHECK_BENCH_WRAP`).
fn wrapped() -> bool {
    std::env::var("EPCHECK_BENCH_WRAP").is_ok_and(|w| !w.trim().is_empty())
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Starts `epcheck run` under `timeout -s KILL` (when there is one) and, for profiling, under
/// the command in `EPCHECK_BENCH_WRAP` (e.g. `perf record -g -o /tmp/perf.data --`).
fn spawn_daemon(
    exe: &Path,
    config: &Path,
    log_path: &Path,
    cwd: &Path,
    backstop_secs: u64,
) -> Result<ChildGuard> {
    let log = std::fs::File::create(log_path)?;
    let mut argv: Vec<String> = Vec::new();
    let has_timeout = Command::new("timeout")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if has_timeout {
        argv.extend(["timeout", "-s", "KILL"].map(String::from));
        argv.push(backstop_secs.to_string());
    }
    let wrap = std::env::var("EPCHECK_BENCH_WRAP").unwrap_or_default();
    if wrapped() {
        println!("  (wrapped in `{wrap}`: the figures are not representative)");
    }
    argv.extend(wrap.split_whitespace().map(String::from));
    argv.push(exe.to_string_lossy().into_owned());
    argv.extend(
        [
            "run",
            "-f",
            &config.to_string_lossy(),
            "--log-format",
            "json",
        ]
        .map(String::from),
    );
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .env_remove("EPCHECK_CONFIG")
        .env_remove("EPCHECK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let child = cmd.spawn()?;
    Ok(if argv.len() > 1 && argv[0] != exe.to_string_lossy() {
        ChildGuard::wrapped(child, exe)?
    } else {
        ChildGuard::new(child)
    })
}

fn ips_of(body: &serde_json::Value, key: &str) -> Vec<String> {
    let mut ips = fixtures::apiserver::endpoint_ips(body, key);
    ips.sort();
    ips
}

/// Waits until every service's Endpoints object holds its initial ready and not-ready sets.
async fn wait_converged(
    api: &ApiServer,
    layout: &Layout,
    daemon: &mut ChildGuard,
    log_path: &Path,
    started: Instant,
) -> Result<Duration> {
    let want: Vec<(Vec<String>, Vec<String>)> = (0..layout.services)
        .map(|s| {
            let (mut r, mut n) = layout.initial_sets(s);
            r.sort();
            n.sort();
            (r, n)
        })
        .collect();
    let mut done = vec![false; layout.services];
    // A profiler slows the daemon's start down many times over.
    let within = if wrapped() {
        Duration::from_secs(900)
    } else {
        Duration::from_secs(60)
    };
    while started.elapsed() < within {
        for (s, d) in done.iter_mut().enumerate().filter(|(_, d)| !**d) {
            if let Some(obj) = api.get_object(Resource::Endpoints, NAMESPACE, &layout.service(s)) {
                *d = (ips_of(&obj, "addresses"), ips_of(&obj, "notReadyAddresses")) == want[s];
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(started.elapsed());
        }
        if daemon.exited() {
            return Err(format!("epcheck exited:\n{}", tail(log_path, 20)).into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!(
        "{} of {} Endpoints objects were not written within {} s; log tail:\n{}",
        done.iter().filter(|d| !**d).count(),
        layout.services,
        within.as_secs(),
        tail(log_path, 20)
    )
    .into())
}

/// What the steady window measured.
struct Steady {
    window: Duration,
    cpu_secs: f64,
    probes: f64,
    probes_up: f64,
    scheduled: f64,
    rss_median_kib: u64,
    /// The daemon's counters at the end of the window.
    end: ProcSample,
    /// The daemon's context switches in the window.
    ctx_switches: u64,
    /// CPU seconds this process (the targets' accept threads, the stand-in) used in the window.
    targets_cpu_secs: f64,
    /// The machine's 1-minute load average at the end of the window.
    load: Option<f64>,
    /// Accepts per accepting target in the window: min, max.
    per_target: (u64, u64),
    /// Accepting targets with fewer than `window / interval - 1` accepts.
    starved: usize,
    /// Accepting targets.
    accepting: usize,
    /// Median and p99 distance of a target's probe starts from its own grid (its first start
    /// in the window plus whole intervals), in ms.
    grid_dev_ms: (f64, f64),
    /// Probe starts more than `OFF_GRID` from their target's grid (extra probes).
    off_grid: usize,
    /// Targets with at least one such start.
    off_grid_targets: usize,
    spread: Spread,
    reads: usize,
    writes: usize,
    endpoint_writes_metric: f64,
    /// Start of each burst of reads, in seconds from the window start.
    read_bursts: Vec<f64>,
    /// Reads per service: min and max.
    reads_per_service: (usize, usize),
    /// Probes in the window that took longer than 10 ms, 100 ms and 250 ms (the daemon's
    /// `epcheck_probe_duration_seconds`, the hanging targets' included).
    slow: [f64; 3],
    /// Probes of each service's accepting targets in the window, over the mean: min and max.
    service_share: (f64, f64),
    /// `epcheck_probe_slots_skipped_total` over the window.
    skipped: f64,
    /// Connects the machine began in the window (`ActiveOpens`): the daemon's probes,
    /// counted as HAProxy's checks are.
    connects: u64,
}

#[allow(clippy::too_many_arguments)]
async fn steady_window(
    api: &ApiServer,
    group: &ListenerGroup,
    layout: &Layout,
    pid: u32,
    metrics: &str,
    settings: &DaemonSettings,
    o: &Options,
    ticks: f64,
) -> Result<Steady> {
    let before = scrape::get(metrics, "/metrics").await?;
    let cpu0 = sample(pid, ticks)?;
    let opens0 = tcp_active_opens()?;
    let own0 = sample(std::process::id(), ticks)?;
    let _ = group.take_recording();
    group.start_recording();
    let acc0: Vec<u64> = (0..group.len()).map(|i| group.accepted(i)).collect();
    let t0 = cpu0.at;
    let mut rss = Vec::new();
    let mut next = t0;
    while next.elapsed() < o.duration {
        next += Duration::from_secs(1);
        tokio::time::sleep_until(next.into()).await;
        if next.duration_since(t0) >= o.duration {
            break;
        }
        rss.push(sample(pid, ticks)?.rss_kib as f64);
    }
    let cpu1 = sample(pid, ticks)?;
    let opens1 = tcp_active_opens()?;
    let own1 = sample(std::process::id(), ticks)?;
    let acc1: Vec<u64> = (0..group.len()).map(|i| group.accepted(i)).collect();
    let times = group.take_recording();
    let after = scrape::get(metrics, "/metrics").await?;
    let t1 = cpu1.at;
    let window = t1 - t0;

    let probes =
        scrape::sum(&after, "epcheck_probes_total") - scrape::sum(&before, "epcheck_probes_total");
    let up = |s: &str| scrape::sum_with(s, "epcheck_probes_total", "result=\"up\"");
    let writes_metric = |s: &str| scrape::sum(s, "epcheck_endpoint_writes_total");
    let slower = |le: &str| {
        let within = |s: &str| {
            scrape::sum_with(
                s,
                "epcheck_probe_duration_seconds_bucket",
                &format!("le=\"{le}\""),
            )
        };
        probes - (within(&after) - within(&before))
    };

    let interval = settings.interval;
    let expected = window.as_secs_f64() / interval.as_secs_f64();
    let mut per_target = (u64::MAX, 0u64);
    let mut starved = 0;
    let mut accepting = 0;
    for s in 0..layout.services {
        for t in 0..layout.per_service {
            if layout.initial_mode(t) != MemberMode::Accepting {
                continue;
            }
            let i = layout.index(s, t);
            let n = acc1[i] - acc0[i];
            accepting += 1;
            per_target = (per_target.0.min(n), per_target.1.max(n));
            if (n as f64) < expected.floor() - 1.0 {
                starved += 1;
            }
        }
    }
    let mut first: HashMap<usize, Instant> = HashMap::new();
    let mut devs = Vec::new();
    let mut off_grid = 0;
    let mut off_targets = std::collections::HashSet::new();
    let i_secs = interval.as_secs_f64();
    for &(i, at) in &times {
        let origin = *first.entry(i).or_insert(at);
        let offset = at.duration_since(origin).as_secs_f64() % i_secs;
        let dev = offset.min(i_secs - offset);
        devs.push(dev * 1e3);
        if dev > OFF_GRID.as_secs_f64() {
            off_grid += 1;
            off_targets.insert(i);
        }
    }
    let starts: Vec<Instant> = times.iter().map(|&(_, at)| at).collect();
    let spread = Spread::new(&starts, t0, interval, BUCKET);

    let in_window: Vec<RecordedRequest> = api
        .requests()
        .into_iter()
        .filter(|r| {
            let at = r.at.into_std();
            at >= t0 && at <= t1
        })
        .collect();
    let reads: Vec<&RecordedRequest> = in_window.iter().filter(|r| !r.is_write()).collect();
    let writes = in_window.iter().filter(|r| r.is_write()).count();
    let mut read_bursts = Vec::new();
    let mut prev: Option<Instant> = None;
    for r in &reads {
        let at = r.at.into_std();
        if prev.is_none_or(|p| at.duration_since(p) > Duration::from_secs(1)) {
            read_bursts.push(at.duration_since(t0).as_secs_f64());
        }
        prev = Some(at);
    }
    let mut per_service: BTreeMap<String, usize> = (0..layout.services)
        .map(|s| (layout.service(s), 0))
        .collect();
    for r in &reads {
        if let Some(name) = r.path.rsplit('/').next()
            && let Some(n) = per_service.get_mut(name)
        {
            *n += 1;
        }
    }
    let rps = (
        per_service.values().copied().min().unwrap_or(0),
        per_service.values().copied().max().unwrap_or(0),
    );
    Ok(Steady {
        window,
        cpu_secs: cpu1.cpu_secs - cpu0.cpu_secs,
        probes,
        probes_up: up(&after) - up(&before),
        scheduled: layout.targets() as f64 * expected,
        end: cpu1,
        ctx_switches: cpu1.ctx_switches - cpu0.ctx_switches,
        targets_cpu_secs: own1.cpu_secs - own0.cpu_secs,
        load: load_average(),
        rss_median_kib: {
            let half = &rss[rss.len() / 2..];
            median(half).unwrap_or(0.0) as u64
        },
        per_target,
        starved,
        accepting,
        off_grid,
        off_grid_targets: off_targets.len(),
        grid_dev_ms: (
            median(&devs).unwrap_or(0.0),
            quantile(&devs, 0.99).unwrap_or(0.0),
        ),
        spread,
        reads: reads.len(),
        writes,
        endpoint_writes_metric: writes_metric(&after) - writes_metric(&before),
        read_bursts,
        reads_per_service: rps,
        slow: [slower("0.01"), slower("0.1"), slower("0.25")],
        service_share: service_share(layout, &acc0, &acc1),
        connects: opens1.saturating_sub(opens0),
        skipped: scrape::sum(&after, "epcheck_probe_slots_skipped_total")
            - scrape::sum(&before, "epcheck_probe_slots_skipped_total"),
    })
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Refusing,
    Dropping,
}

/// One backend that broke and came back.
struct Flip {
    service: usize,
    target: usize,
    member: usize,
    ip: String,
    broke: Instant,
    /// Arrival of the write that took it out of `addresses`.
    removed: Option<RecordedRequest>,
    healed: Option<Instant>,
    /// Arrival of the write that put it back.
    restored: Option<RecordedRequest>,
}

/// What the flips of one kind measured.
struct KindResult {
    kind: Kind,
    /// Break → removal write arrived, in seconds.
    detection: Vec<f64>,
    /// Heal → write that re-adds it arrived, in seconds.
    recovery: Vec<f64>,
    /// Logged transition → the reconcile's write (`PUT`) arrived, in seconds.
    to_write: Vec<f64>,
    /// Logged transition → the reconcile's first request arrived, in seconds.
    to_first_request: Vec<f64>,
    missing: usize,
}

async fn flips(
    api: &ApiServer,
    group: &ListenerGroup,
    layout: &Layout,
    settings: &DaemonSettings,
    per_kind: usize,
    clock: &Clock,
    log_path: &Path,
) -> Result<Vec<KindResult>> {
    let per_kind = per_kind.min(layout.services / 2).max(1);
    let mut results = Vec::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (k, kind) in [Kind::Refusing, Kind::Dropping].into_iter().enumerate() {
        println!("flips: {per_kind} live backends start {kind:?} ...");
        let mut flips: Vec<Flip> = (0..per_kind)
            .map(|j| {
                let service = k * per_kind + j;
                // Any live backend of the service, so the flips meet the probe grid at random.
                let target = rng.below(layout.per_service - 2);
                Flip {
                    service,
                    target,
                    member: layout.index(service, target),
                    ip: layout.ip(service, target).to_string(),
                    broke: Instant::now(),
                    removed: None,
                    healed: None,
                    restored: None,
                }
            })
            .collect();
        let mode = match kind {
            Kind::Refusing => MemberMode::Refusing,
            Kind::Dropping => MemberMode::Hanging,
        };
        for f in &mut flips {
            tokio::time::sleep(rng.gap()).await;
            group.set_mode(f.member, mode).await?;
            f.broke = Instant::now();
        }
        let within = detection_bound(settings, kind) * 2 + Duration::from_secs(5);
        wait_writes(api, layout, &mut flips, true, within).await;
        // Down and settled (no confirming probe still pending) before it comes back.
        tokio::time::sleep(settings.interval + settings.timeout).await;
        for f in &mut flips {
            tokio::time::sleep(rng.gap()).await;
            group.set_mode(f.member, MemberMode::Accepting).await?;
            f.healed = Some(Instant::now());
        }
        let within = recovery_bound(settings) * 2 + Duration::from_secs(5);
        wait_writes(api, layout, &mut flips, false, within).await;
        // Give the log a moment to reach the file.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let events = parse(&std::fs::read_to_string(log_path)?);
        results.push(measure_flips(kind, &flips, layout, api, &events, clock));
    }
    Ok(results)
}

/// A small deterministic generator (xorshift64*): every run flips the same backends at the
/// same pace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// The pause before the next flip: `FLIP_GAP_MS` plus up to as much again.
    fn gap(&mut self) -> Duration {
        Duration::from_millis(FLIP_GAP_MS + self.next() % FLIP_GAP_MS)
    }
}

fn detection_bound(s: &DaemonSettings, kind: Kind) -> Duration {
    let confirm = s.fast_interval * s.fall.saturating_sub(1);
    match kind {
        Kind::Refusing => s.interval + confirm,
        Kind::Dropping => s.interval + s.timeout + confirm,
    }
}

fn recovery_bound(s: &DaemonSettings) -> Duration {
    s.interval + s.fast_interval * s.rise.saturating_sub(1)
}

fn endpoints_path(layout: &Layout, s: usize) -> String {
    format!(
        "/api/v1/namespaces/{NAMESPACE}/endpoints/{}",
        layout.service(s)
    )
}

/// Waits until each flip's removal (`down`) or re-adding write has arrived, or `within`.
async fn wait_writes(
    api: &ApiServer,
    layout: &Layout,
    flips: &mut [Flip],
    down: bool,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let requests = api.requests();
        let mut pending = 0;
        for f in flips.iter_mut() {
            let (since, slot) = if down {
                (Some(f.broke), &mut f.removed)
            } else {
                (f.healed, &mut f.restored)
            };
            let Some(since) = since else { continue };
            if slot.is_some() {
                continue;
            }
            let path = endpoints_path(layout, f.service);
            *slot = requests
                .iter()
                .filter(|r| r.method == "PUT" && r.path == path && r.at.into_std() >= since)
                .find(|r| {
                    r.body_json().is_some_and(|b| {
                        let ready = ips_of(&b, "addresses").contains(&f.ip);
                        ready != down
                    })
                })
                .cloned();
            pending += usize::from(slot.is_none());
        }
        if pending == 0 || Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn measure_flips(
    kind: Kind,
    flips: &[Flip],
    layout: &Layout,
    api: &ApiServer,
    events: &[LogEvent],
    clock: &Clock,
) -> KindResult {
    let requests = api.requests();
    let mut r = KindResult {
        kind,
        detection: Vec::new(),
        recovery: Vec::new(),
        to_write: Vec::new(),
        to_first_request: Vec::new(),
        missing: 0,
    };
    for f in flips {
        let service = layout.service(f.service);
        for (down, since, write) in [
            (true, Some(f.broke), &f.removed),
            (false, f.healed, &f.restored),
        ] {
            let (Some(since), Some(write)) = (since, write) else {
                r.missing += 1;
                continue;
            };
            let put = write.at.into_std();
            let secs = put.duration_since(since).as_secs_f64();
            if std::env::var_os("DAEMON_BENCH_VERBOSE").is_some() {
                eprintln!(
                    "{kind:?} {service} down={down} since->put {:.0} ms",
                    secs * 1e3
                );
            }
            if down {
                r.detection.push(secs);
            } else {
                r.recovery.push(secs);
            }
            // The transition as the daemon logged it, between the flip and the write.
            let message = if down { "target down" } else { "target up" };
            let (since_wall, put_wall) = (clock.wall(since), clock.wall(put));
            let logged = events.iter().find(|e| {
                e.message == message
                    && e.field("service") == Some(service.as_str())
                    && e.field("target") == Some(format!("t{:03}", f.target).as_str())
                    && secs_between(since_wall, e.at) > -0.005
                    && secs_between(e.at, put_wall) > -0.005
            });
            let Some(logged) = logged else {
                r.missing += 1;
                continue;
            };
            r.to_write.push(secs_between(logged.at, put_wall));
            let prefix_svc = format!("/api/v1/namespaces/{NAMESPACE}/services/{service}");
            let path = endpoints_path(layout, f.service);
            let first = requests
                .iter()
                .filter(|q| q.path == prefix_svc || q.path == path)
                .map(|q| q.at.into_std())
                .filter(|&at| at <= put && secs_between(logged.at, clock.wall(at)) > -0.005)
                .min();
            if let Some(first) = first {
                r.to_first_request
                    .push(secs_between(logged.at, clock.wall(first)));
            }
        }
    }
    r
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(q: Option<f64>) -> String {
    q.map_or_else(|| "-".to_owned(), |s| format!("{:.0} ms", s * 1e3))
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

#[allow(clippy::too_many_arguments)]
fn report(
    layout: &Layout,
    settings: &DaemonSettings,
    o: &Options,
    steady: &Steady,
    kinds: &[KindResult],
    first: &LoopResult,
    second: &LoopResult,
    peak: &ProcSample,
    converged: Duration,
    shutdown: Option<Duration>,
) {
    let loop_cpu = first.cpu_secs + second.cpu_secs;
    let loop_probes = (first.probes + second.probes) as f64;
    let loop_per_k = loop_cpu / (loop_probes / 1000.0);
    let ours_per_k = steady.cpu_secs / (steady.probes / 1000.0);
    let ratio = ours_per_k / loop_per_k;
    let w = steady.window.as_secs_f64();
    let minutes = w / 60.0;
    let resyncs = w / settings.resync_interval.as_secs_f64();
    println!();
    println!(
        "== epcheck run: {} targets ({} services x {}; per service {} accepting, 1 hanging, 1 refusing)",
        layout.targets(),
        layout.services,
        layout.per_service,
        layout.per_service - 2
    );
    println!(
        "   interval {} ms, timeout {} ms, rise {}, fall {}, fast_interval {} ms, concurrency {}, \
         jitter {}, resync {} s; steady window {:.1} s",
        settings.interval.as_millis(),
        settings.timeout.as_millis(),
        settings.rise,
        settings.fall,
        settings.fast_interval.as_millis(),
        settings.concurrency,
        o.jitter
            .map_or_else(|| "default".to_owned(), |j| j.to_string()),
        settings.resync_interval.as_secs(),
        w
    );
    println!();
    let row = |figure: &str, measured: String, target: String, note: String| {
        println!("{figure:<44} {measured:>18}   {target:<26} {note}");
    };
    row(
        "figure",
        "measured".to_owned(),
        "target".to_owned(),
        "reference / note".to_owned(),
    );
    row(
        "CPU per 1,000 probes",
        format!("{ours_per_k:.4} s"),
        format!("<= 1.25 x loop ({})", verdict(ratio <= 1.25)),
        format!(
            "loop {loop_per_k:.4} s (halves {:.4} / {:.4}); ratio {ratio:.2}",
            first.cpu_secs / (first.probes as f64 / 1000.0),
            second.cpu_secs / (second.probes as f64 / 1000.0)
        ),
    );
    row(
        "CPU, share of one core",
        format!("{:.1} %", 100.0 * steady.cpu_secs / w),
        String::new(),
        format!(
            "loop {:.1} % ({:.1} CPU-s over {:.1} s)",
            100.0 * loop_cpu / (first.window + second.window).as_secs_f64(),
            loop_cpu,
            (first.window + second.window).as_secs_f64()
        ),
    );
    row(
        "context switches per 1,000 probes",
        format!(
            "{:.0}",
            steady.ctx_switches as f64 / (steady.probes / 1000.0)
        ),
        String::new(),
        format!(
            "loop {:.0} (wake-ups: what spreading probes costs)",
            (first.ctx_switches + second.ctx_switches) as f64 / (loop_probes / 1000.0)
        ),
    );
    row(
        "RSS, steady (median of 2nd half)",
        format!("{:.1} MiB", mib(steady.rss_median_kib)),
        format!(
            "<= 32 MiB ({})",
            verdict(steady.rss_median_kib <= 32 * 1024)
        ),
        format!(
            "loop {:.1} MiB; at the window's end {:.1} MiB anon + {:.1} MiB file",
            mib(first.rss_kib.max(second.rss_kib)),
            mib(steady.end.anon_kib),
            mib(steady.end.file_kib)
        ),
    );
    row(
        "RSS, peak (VmHWM, whole run)",
        format!("{:.1} MiB", mib(peak.hwm_kib)),
        format!("<= 32 MiB ({})", verdict(peak.hwm_kib <= 32 * 1024)),
        format!("loop {:.1} MiB", mib(first.hwm_kib.max(second.hwm_kib))),
    );
    row(
        "probes performed / scheduled",
        format!("{:.0} / {:.0}", steady.probes, steady.scheduled),
        format!(
            "ratio ~1.00 ({})",
            verdict((steady.probes / steady.scheduled - 1.0).abs() <= 0.02)
        ),
        format!(
            "{:.4}; {:.0} up (accepting share {:.3})",
            steady.probes / steady.scheduled,
            steady.probes_up,
            steady.probes_up / steady.probes.max(1.0)
        ),
    );
    row(
        "probes slower than 10 / 100 / 250 ms",
        format!(
            "{:.0} / {:.0} / {:.0}",
            steady.slow[0], steady.slow[1], steady.slow[2]
        ),
        String::new(),
        format!(
            "hanging targets alone: {:.0} (a pending probe older than fast_interval is doubt)",
            (layout.services as f64) * w / settings.interval.as_secs_f64()
        ),
    );
    row(
        "probes per accepting target: min / max",
        format!("{} / {}", steady.per_target.0, steady.per_target.1),
        format!("none starved ({})", verdict(steady.starved == 0)),
        format!(
            "expected {:.1}; {} of {} below {:.0}",
            w / settings.interval.as_secs_f64(),
            steady.starved,
            steady.accepting,
            (w / settings.interval.as_secs_f64()).floor() - 1.0
        ),
    );
    row(
        "accept vs. its target's grid: p50/p99",
        format!(
            "{:.1} / {:.1} ms",
            steady.grid_dev_ms.0, steady.grid_dev_ms.1
        ),
        "fixed grid, no extra".to_owned(),
        format!(
            "{} starts off the grid by > {} ms (extra probes), at {} targets",
            steady.off_grid,
            OFF_GRID.as_millis(),
            steady.off_grid_targets
        ),
    );
    let sp = &steady.spread;
    row(
        "probe starts (accepts): 99% within",
        format!("{} ms", sp.span99.as_millis()),
        format!(
            "jitter x I = {} ms",
            (settings.interval.as_secs_f64() * o.jitter.unwrap_or(0.1) * 1e3).round()
        ),
        format!(
            "of each {} ms interval; {} starts",
            settings.interval.as_millis(),
            sp.starts
        ),
    );
    row(
        "probe starts (accepts): peak/mean 10 ms",
        format!("{:.2}", sp.peak_over_span_mean()),
        "~1 within the span".to_owned(),
        format!(
            "peak {:.0} starts per 10 ms per interval; peak / mean of the interval {:.1}",
            sp.max_bucket() as f64 / (w / settings.interval.as_secs_f64()),
            sp.peak_over_interval_mean()
        ),
    );
    row(
        "ApiServer writes in steady state",
        format!("{}", steady.writes),
        format!("0 ({})", verdict(steady.writes == 0)),
        format!(
            "epcheck_endpoint_writes_total delta {:.0}",
            steady.endpoint_writes_metric
        ),
    );
    let reads_per = steady.reads as f64 / layout.services as f64 / minutes;
    row(
        "ApiServer reads per service per minute",
        format!("{reads_per:.2}"),
        format!(
            "{:.1} (2 per resync)",
            2.0 * 60.0 / settings.resync_interval.as_secs_f64()
        ),
        format!(
            "{} reads in {} bursts at {} s ({:.1} resyncs expected); per service {}..{}",
            steady.reads,
            steady.read_bursts.len(),
            if steady.read_bursts.is_empty() {
                "-".to_owned()
            } else {
                steady
                    .read_bursts
                    .iter()
                    .map(|b| format!("{b:.1}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            resyncs,
            steady.reads_per_service.0,
            steady.reads_per_service.1
        ),
    );
    for k in kinds {
        let bound = detection_bound(settings, k.kind);
        let max = quantile(&k.detection, 1.0);
        let haproxy = match k.kind {
            Kind::Refusing => "HAProxy 4.5-6 s",
            Kind::Dropping => "HAProxy 10.5-12 s",
        };
        row(
            &format!("detection, {:?}: median / p99", k.kind),
            format!(
                "{} / {}",
                ms(median(&k.detection)),
                ms(quantile(&k.detection, 0.99))
            ),
            format!(
                "<= {} ms + slack ({})",
                bound.as_millis(),
                verdict(max.is_some_and(|m| m <= (bound + DETECTION_SLACK).as_secs_f64()))
            ),
            format!(
                "max {}, n {}; {haproxy}; slack {} ms",
                ms(max),
                k.detection.len(),
                DETECTION_SLACK.as_millis()
            ),
        );
    }
    let recovery: Vec<f64> = kinds.iter().flat_map(|k| k.recovery.clone()).collect();
    let rb = recovery_bound(settings);
    row(
        "recovery (back to accepting): median / p99",
        format!(
            "{} / {}",
            ms(median(&recovery)),
            ms(quantile(&recovery, 0.99))
        ),
        format!(
            "<= {} ms + slack ({})",
            rb.as_millis(),
            verdict(
                quantile(&recovery, 1.0).is_some_and(|m| m <= (rb + DETECTION_SLACK).as_secs_f64())
            )
        ),
        format!("max {}, n {}", ms(quantile(&recovery, 1.0)), recovery.len()),
    );
    let to_write: Vec<f64> = kinds.iter().flat_map(|k| k.to_write.clone()).collect();
    let to_first: Vec<f64> = kinds
        .iter()
        .flat_map(|k| k.to_first_request.clone())
        .collect();
    row(
        "transition -> write arrives: median / p99",
        format!(
            "{} / {}",
            ms(median(&to_write)),
            ms(quantile(&to_write, 0.99))
        ),
        format!(
            "<= 100 ms + request ({})",
            verdict(quantile(&to_write, 0.99).is_some_and(|p| p <= 0.1))
        ),
        format!(
            "max {}, n {}; first request of the reconcile: median {} / p99 {}",
            ms(quantile(&to_write, 1.0)),
            to_write.len(),
            ms(median(&to_first)),
            ms(quantile(&to_first, 0.99))
        ),
    );
    let missing: usize = kinds.iter().map(|k| k.missing).sum();
    if missing > 0 {
        println!("  ({missing} flip measurements missing: no write, or no log line, in time)");
    }
    println!();
    println!(
        "this process (targets' accept threads, stand-in ApiServer) used {:.1} % of one core in \
         the window; 1-minute load average at its end {}",
        100.0 * steady.targets_cpu_secs / w,
        steady
            .load
            .map_or_else(|| "-".to_owned(), |l| format!("{l:.2}"))
    );
    println!(
        "start-up: every Endpoints object written {:.2} s after exec; SIGTERM -> exit {}",
        converged.as_secs_f64(),
        shutdown.map_or_else(
            || "NOT within 5 s".to_owned(),
            |d| format!("{} ms", d.as_millis())
        )
    );
    println!(
        "reference loop: {:.0} connects in {:.1} s ({:.0} succeeded), {:.2} CPU-s; \
         one round takes {:.0} ms (the hanging targets' timeout included)",
        loop_probes,
        (first.window + second.window).as_secs_f64(),
        (first.succeeded + second.succeeded) as f64,
        loop_cpu,
        (first.round_secs + second.round_secs) / 2.0 * 1e3
    );
}

/// Probes (accepts) of each service's accepting targets between `acc0` and `acc1`, over the
/// mean of the services: (min, max).
fn service_share(layout: &Layout, acc0: &[u64], acc1: &[u64]) -> (f64, f64) {
    let per_service: Vec<f64> = (0..layout.services)
        .map(|s| {
            (0..layout.per_service)
                .filter(|&t| layout.initial_mode(t) == MemberMode::Accepting)
                .map(|t| {
                    let i = layout.index(s, t);
                    acc1[i].saturating_sub(acc0[i]) as f64
                })
                .sum()
        })
        .collect();
    let mean = per_service.iter().sum::<f64>() / per_service.len().max(1) as f64;
    if mean <= 0.0 {
        return (0.0, 0.0);
    }
    let min = per_service.iter().copied().fold(f64::INFINITY, f64::min);
    let max = per_service.iter().copied().fold(0.0, f64::max);
    (min / mean, max / mean)
}

fn count_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// One `/metrics` scrape (Prometheus text) and how much it raised the daemon's peak RSS: the
/// peak (VmHWM) is reset through `/proc/<pid>/clear_refs` just before. Returns (page bytes,
/// rise in KiB); `None` when the peak cannot be reset here.
async fn scrape_rise(pid: u32, metrics: &str) -> Result<Option<(usize, u64)>> {
    if std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_err() {
        return Ok(None);
    }
    let before = sample(pid, 100.0)?.hwm_kib;
    let page = scrape::get(metrics, "/metrics").await?;
    let after = sample(pid, 100.0)?.hwm_kib;
    Ok(Some((page.len(), after.saturating_sub(before))))
}

/// What an ApiServer outage cost.
struct Outage {
    secs: f64,
    /// Requests that reached the stand-in during the outage (every one answered 500).
    requests: usize,
    /// Those requests by method and path, an object's name left out, most first.
    by_kind: Vec<(String, usize)>,
    /// Lines the daemon logged during the outage.
    log_lines: usize,
    /// From the ApiServer's return until both services changed during the outage were written.
    converged: Option<Duration>,
}

/// The stand-in answers every request with 500 for `secs`; meanwhile one backend of each of
/// the first two services starts refusing. Counts the requests and log lines of the outage and
/// the time from its end until both removals are written, then heals the backends.
async fn outage(
    api: &ApiServer,
    group: &ListenerGroup,
    layout: &Layout,
    secs: Duration,
    log_path: &Path,
) -> Result<Outage> {
    println!("ApiServer outage ({} s) ...", secs.as_secs());
    let victims: Vec<(usize, usize)> = (0..2.min(layout.services)).map(|s| (s, 0)).collect();
    api.push_fault(FaultRule::new(Fault::Status500).always());
    let start = Instant::now();
    let lines0 = count_lines(log_path);
    for &(s, t) in &victims {
        group
            .set_mode(layout.index(s, t), MemberMode::Refusing)
            .await?;
    }
    tokio::time::sleep(secs).await;
    let during: Vec<RecordedRequest> = api
        .requests()
        .into_iter()
        .filter(|r| r.at.into_std() >= start)
        .collect();
    let requests = during.len();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for r in &during {
        let mut path = r.path.clone();
        if let Some(name) = layout.service_index(r.path.rsplit('/').next().unwrap_or("")) {
            path = path.replace(&layout.service(name), "{service}");
        }
        let query = if r.query.is_some() { "?…" } else { "" };
        *kinds
            .entry(format!("{} {path}{query}", r.method))
            .or_default() += 1;
    }
    let mut by_kind: Vec<(String, usize)> = kinds.into_iter().collect();
    by_kind.sort_by_key(|k| std::cmp::Reverse(k.1));
    let log_lines = count_lines(log_path) - lines0;
    api.clear_faults();
    let back = Instant::now();
    let mut converged = None;
    while back.elapsed() < Duration::from_secs(60) {
        let removed = victims.iter().all(|&(s, t)| {
            api.get_object(Resource::Endpoints, NAMESPACE, &layout.service(s))
                .is_some_and(|o| !ips_of(&o, "addresses").contains(&layout.ip(s, t).to_string()))
        });
        if removed {
            converged = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &(s, t) in &victims {
        group
            .set_mode(layout.index(s, t), MemberMode::Accepting)
            .await?;
    }
    Ok(Outage {
        secs: (back - start).as_secs_f64(),
        requests,
        by_kind,
        log_lines,
        converged,
    })
}

/// The figures of issue 21: fairness under overload, the cost of a scrape, logs by event and
/// the outage budget.
fn report_scale(
    layout: &Layout,
    steady: &Steady,
    startup_log_lines: usize,
    scrape: Option<(usize, u64)>,
    outage: Option<&Outage>,
) {
    println!();
    println!("== at scale (issue 21)");
    let (lo, hi) = steady.service_share;
    println!(
        "probes per service over the mean, steady window: {lo:.3} .. {hi:.3} (target 0.9 .. 1.1: {}); \
         {:.0} slots skipped (epcheck_probe_slots_skipped_total), {:.0} probes",
        verdict(lo >= 0.9 && hi <= 1.1),
        steady.skipped,
        steady.probes
    );
    match scrape {
        Some((page, rise)) => println!(
            "one /metrics scrape (text): page {:.1} MB, peak RSS rose {:.2} MiB \
             (target <= 5 MiB at 50,000 targets: {})",
            page as f64 / 1e6,
            mib(rise),
            verdict(rise <= 5 * 1024)
        ),
        None => println!("one /metrics scrape: the peak RSS could not be reset (clear_refs)"),
    }
    println!(
        "log lines from exec until two intervals after every object was written: {startup_log_lines} for {} services \
         (target at 100,000 targets in 1,000 services: <= 1,100: {})",
        layout.services,
        verdict(startup_log_lines <= layout.services + 100)
    );
    if let Some(o) = outage {
        println!(
            "ApiServer outage of {:.1} s: {} requests ({:.2}/s; target about 1/s: {}), {} log lines; \
             both changed services written {} after it ended (target <= 3 s: {})",
            o.secs,
            o.requests,
            o.requests as f64 / o.secs,
            verdict(o.requests as f64 / o.secs <= 1.5),
            o.log_lines,
            o.converged.map_or_else(
                || "NOT within 60 s".to_owned(),
                |d| format!("{} ms", d.as_millis())
            ),
            verdict(o.converged.is_some_and(|d| d <= Duration::from_secs(3)))
        );
        for (kind, n) in &o.by_kind {
            println!("    {n:>5}  {kind}");
        }
    }
}

/// epcheck against HAProxy: CPU per 1,000 checks (connects begun, every target's), HAProxy's
/// halves before and after the daemon.
fn report_haproxy(steady: &Steady, first: &HaproxyResult, second: &HaproxyResult) {
    let per_k = |cpu: f64, checks: u64| cpu / (checks.max(1) as f64 / 1000.0);
    let ours = per_k(steady.cpu_secs, steady.connects);
    let theirs = per_k(
        first.cpu_secs + second.cpu_secs,
        first.checks + second.checks,
    );
    let ratio = ours / theirs;
    println!();
    println!(
        "== against HAProxy (issue 15): CPU per 1,000 checks (connects begun, /proc/net/snmp)"
    );
    println!(
        "epcheck {ours:.4} s ({} checks in {:.1} s), HAProxy {theirs:.4} s (halves {:.4} / {:.4}; \
         {} checks in {:.1} s): ratio {ratio:.2} (target <= 0.90: {})",
        steady.connects,
        steady.window.as_secs_f64(),
        per_k(first.cpu_secs, first.checks),
        per_k(second.cpu_secs, second.checks),
        first.checks + second.checks,
        (first.window + second.window).as_secs_f64(),
        verdict(ratio <= 0.9)
    );
    println!(
        "context switches per 1,000 checks: epcheck {:.0}, HAProxy {:.0}; RSS: epcheck {:.1} MiB, HAProxy {:.1} MiB",
        steady.ctx_switches as f64 / (steady.connects.max(1) as f64 / 1000.0),
        (first.ctx_switches + second.ctx_switches) as f64
            / ((first.checks + second.checks).max(1) as f64 / 1000.0),
        mib(steady.rss_median_kib),
        mib(first.rss_kib.max(second.rss_kib))
    );
}
