//! The cost curve of issue 15: `epcheck run` at 1,000 / 10,000 / 50,000 / 100,000 targets —
//! CPU per 1,000 probes, RSS per target, the start to the first complete write, and how
//! evenly probe starts spread over the interval.
//!
//! ```sh
//! cargo build --release -p epcheck-cli && cargo bench -p epcheck-benches --bench curve
//! ```
//!
//! Options after `--`: `--sizes 1000,10000,50000,100000`, `--interval MS` (10,000: the same
//! interval at every size, so 100,000 targets are 10,000 probes a second, what this 2-core
//! machine can carry beside the targets), `--window S` (30, the steady window), `--half-open`
//! (`probe.half_open: true`). The binary is `target/release/epcheck`, or `EPCHECK_BIN`.
//!
//! Why a network namespace: this machine's hard open-file limit is 20,000, so 100,000 targets
//! cannot each have a listener. The benchmark re-executes itself under `unshare --net` (root),
//! brings up that namespace's own loopback, and serves every target from one listener on
//! `0.0.0.0:PORT` there: the namespace has no other interface, so nothing outside it can reach
//! the listener, and every probe goes to a loopback address (`127.10.S.T`) inside it. The
//! namespace's `/proc/net/snmp` then counts this run's connects only (`ActiveOpens`): the
//! probes, sampled every 20 ms for the spread. Two threads take and drop each accepted
//! connection. The stand-in ApiServer runs in this process on `127.0.0.1`, inside the
//! namespace too.

use std::error::Error;
use std::io::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use epcheck_benches::daemon::layout::{DaemonSettings, Layout, config_yaml};
use epcheck_benches::daemon::process::{
    ChildGuard, clock_ticks, epcheck_binary, sample, tcp_active_opens,
};
use epcheck_benches::daemon::stats::Spread;
use fixtures::apiserver::{ApiServer, Permissions, Resource};

const TOKEN: &str = "curve-bench-token";
const NAMESPACE: &str = "default";
const PER_SERVICE: usize = 100;
const INSIDE: &str = "EPCHECK_CURVE_NETNS";

struct Options {
    sizes: Vec<usize>,
    interval: Duration,
    window: Duration,
    half_open: bool,
}

fn options() -> Result<Options, Box<dyn Error>> {
    let mut o = Options {
        sizes: vec![1_000, 10_000, 50_000, 100_000],
        interval: Duration::from_secs(10),
        window: Duration::from_secs(30),
        half_open: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--sizes" => {
                o.sizes = value("--sizes")?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()?;
            }
            "--interval" => o.interval = Duration::from_millis(value("--interval")?.parse()?),
            "--window" => o.window = Duration::from_secs(value("--window")?.parse()?),
            "--half-open" => o.half_open = true,
            // cargo bench passes --bench.
            "--bench" => {}
            other => {
                return Err(format!(
                    "unknown option {other}; use --sizes A,B,…, --interval MS, --window S, \
                     --half-open"
                )
                .into());
            }
        }
    }
    if o.sizes
        .iter()
        .any(|n| !(2 * PER_SERVICE..=250_000).contains(n))
    {
        return Err(format!("sizes must be {}..=250,000", 2 * PER_SERVICE).into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let result = if std::env::var(INSIDE).is_ok() {
        inside()
    } else {
        enter_namespace()
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("curve: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs this binary again in a network namespace of its own.
fn enter_namespace() -> Result<(), Box<dyn Error>> {
    options()?;
    let exe = std::env::current_exe()?;
    let status = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(INSIDE, "1")
        .status()
        .map_err(|e| format!("cannot run `unshare --net` (util-linux, as root): {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("the run in its namespace failed: {status}").into())
    }
}

struct Point {
    targets: usize,
    startup: Duration,
    probes: u64,
    cpu_secs: f64,
    rss_kib: u64,
    hwm_kib: u64,
    spread: Spread,
}

fn inside() -> Result<(), Box<dyn Error>> {
    let o = options()?;
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err("cannot bring up the namespace's loopback (`ip link set lo up`)".into());
    }
    // This namespace's own queue limits (they are per namespace): room for the bursts.
    for (path, value) in [
        ("/proc/sys/net/core/somaxconn", "65535"),
        ("/proc/sys/net/ipv4/tcp_max_syn_backlog", "65535"),
    ] {
        std::fs::write(path, value).map_err(|e| format!("cannot set {path}: {e}"))?;
    }
    let exe = epcheck_binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut points = Vec::new();
    for &n in &o.sizes {
        eprintln!("curve: {n} targets …");
        points.push(runtime.block_on(run_one(&o, &exe, n))?);
    }
    print_table(&o, &points);
    Ok(())
}

/// One listener for every target (see the module docs), with two threads that accept and drop
/// (blocking accepts, and a queue of 65,535: a sleeping poll loop and the default queue of 128
/// overflowed in the bursts, and the dropped SYNs showed up as failed probes and re-probes).
/// The threads end with the process.
fn serve_targets() -> Result<u16, Box<dyn Error>> {
    // A deep accept queue: the jitter puts a tenth of the interval's probes in each burst.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())?;
    socket.listen(65_535)?;
    let listener: TcpListener = socket.into();
    let port = listener.local_addr()?.port();
    for _ in 0..2 {
        let listener = listener.try_clone()?;
        std::thread::spawn(move || {
            loop {
                if let Ok((socket, _)) = listener.accept() {
                    drop(socket);
                }
            }
        });
    }
    Ok(port)
}

async fn run_one(o: &Options, exe: &Path, n: usize) -> Result<Point, Box<dyn Error>> {
    let layout = Layout::new(n, PER_SERVICE);
    let port = serve_targets()?;
    let api = ApiServer::builder().strict_ips(false).start().await?;
    api.add_token(TOKEN, Permissions::all());
    for s in 0..layout.services {
        api.put_service(NAMESPACE, &layout.service(s));
    }
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN)?;
    let settings = DaemonSettings {
        interval: o.interval,
        half_open: o.half_open,
        ..DaemonSettings::default()
    };
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(&layout, &settings, port, &api.url(), &token, "off"),
    )?;
    let log = std::fs::File::create(dir.path().join("epcheck.log"))?;
    let started = Instant::now();
    let child = Command::new(exe)
        .args(["run", "-f"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("EPCHECK_CONFIG")
        .env_remove("EPCHECK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()?;
    let mut daemon = ChildGuard::new(child);

    // The start: until every service's Endpoints object holds all its targets.
    let startup = loop {
        let written = api
            .list_objects(Resource::Endpoints, Some(NAMESPACE))
            .iter()
            .filter(|e| {
                fixtures::apiserver::endpoint_ips(e, "addresses").len() == layout.per_service
            })
            .count();
        if written == layout.services {
            break started.elapsed();
        }
        if daemon.exited() || started.elapsed() > Duration::from_secs(300) {
            let text = std::fs::read_to_string(dir.path().join("epcheck.log")).unwrap_or_default();
            return Err(format!(
                "{n} targets: {written} of {} services written after {:?}; log tail:\n{}",
                layout.services,
                started.elapsed(),
                text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // Settle for one interval, then the steady window.
    tokio::time::sleep(o.interval).await;
    let ticks = clock_ticks();
    let before = sample(daemon.pid(), ticks)?;
    let opens_before = tcp_active_opens()?;
    let origin = Instant::now();
    let mut starts = Vec::new();
    let mut last = opens_before;
    while origin.elapsed() < o.window {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = tcp_active_opens()?;
        let at = Instant::now();
        starts.extend(std::iter::repeat_n(at, (now - last) as usize));
        last = now;
    }
    let after = sample(daemon.pid(), ticks)?;
    let probes = last - opens_before;
    daemon.terminate(Duration::from_secs(10));
    Ok(Point {
        targets: layout.targets(),
        startup,
        probes,
        cpu_secs: after.cpu_secs - before.cpu_secs,
        rss_kib: after.rss_kib,
        hwm_kib: after.hwm_kib,
        spread: Spread::new(
            &starts,
            origin,
            o.interval,
            Duration::from_millis(100).min(o.interval / 10),
        ),
    })
}

fn print_table(o: &Options, points: &[Point]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\ncost curve: interval {} ms, window {} s, {}, {} targets per service",
        o.interval.as_millis(),
        o.window.as_secs(),
        if o.half_open {
            "half-open checks"
        } else {
            "full handshake"
        },
        PER_SERVICE
    );
    let _ = writeln!(
        out,
        "| targets | start to all written | probes/s | CPU / 1,000 probes | RSS (peak) | RSS per target | 99 % of probe starts within | busiest 100 ms over the mean |"
    );
    let _ = writeln!(out, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    for p in points {
        let per_sec = p.probes as f64 / o.window.as_secs_f64();
        let per_1000 = if p.probes > 0 {
            p.cpu_secs * 1000.0 / p.probes as f64
        } else {
            f64::NAN
        };
        let _ = writeln!(
            out,
            "| {} | {:.2} s | {:.0} | {:.4} s | {:.1} MiB ({:.1}) | {:.2} KiB | {} ms of {} | {:.2} |",
            p.targets,
            p.startup.as_secs_f64(),
            per_sec,
            per_1000,
            p.rss_kib as f64 / 1024.0,
            p.hwm_kib as f64 / 1024.0,
            p.rss_kib as f64 / p.targets as f64,
            p.spread.span99.as_millis(),
            o.interval.as_millis(),
            p.spread.peak_over_interval_mean()
        );
    }
    let base = points.iter().find(|p| p.targets == 10_000);
    if let Some(base) = base {
        let _ = writeln!(out, "\nagainst 10,000 targets (flat = within 1.3 ×):");
        for p in points.iter().filter(|p| p.targets > 10_000) {
            let cpu = |q: &Point| q.cpu_secs / q.probes.max(1) as f64;
            let rss = |q: &Point| q.rss_kib as f64 / q.targets as f64;
            let _ = writeln!(
                out,
                "  {} targets: CPU per probe {:.2} ×, RSS per target {:.2} ×",
                p.targets,
                cpu(p) / cpu(base),
                rss(p) / rss(base)
            );
        }
    }
}
