//! What a large config costs apart from probing (issue 21): the log lines of a start and the
//! peak RSS one `/metrics` scrape adds, at 10,000 to 100,000 targets in services of 100.
//!
//! ```sh
//! cargo build --release -p epcheck-cli && cargo bench -p epcheck-benches --bench wide
//! cargo bench -p epcheck-benches --bench wide -- --targets 50000,100000
//! ```
//!
//! Every target is static (`port: 0`: in the Endpoints, never probed), so no target needs a
//! listener: this machine's hard open-file limit (20,000) leaves no room for 100,000 listeners,
//! and neither figure depends on probe results. Each target still has its series in `/metrics`
//! and its place in the start's logs (the first-probes summary of its service). For each size,
//! `epcheck run --log-format json` (the release binary, or `EPCHECK_BIN`) starts against the
//! stand-in ApiServer on loopback; once every Endpoints object is written and two intervals
//! have passed, the lines it logged are counted, then its peak RSS (VmHWM) is reset through
//! `/proc/<pid>/clear_refs` and one scrape in each format is made, each measured from a reset.
//! With `EPCHECK_BENCH_KEEP_LOG=F` the daemon's log of the last size is copied to `F`.

use std::error::Error;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use epcheck_benches::daemon::layout::{DaemonSettings, Layout, config_yaml};
use epcheck_benches::daemon::process::{ChildGuard, epcheck_binary, sample};
use fixtures::apiserver::{ApiServer, Permissions, Resource};

type Result<T> = std::result::Result<T, Box<dyn Error + Send + Sync>>;

const TOKEN: &str = "wide-bench-token";
const PER_SERVICE: usize = 100;

/// What one size measured.
struct Figures {
    targets: usize,
    services: usize,
    /// From exec until every Endpoints object was written.
    converged: Duration,
    log_lines: usize,
    rss_kib: u64,
    /// (format, page bytes, peak RSS rise in KiB) per scrape.
    scrapes: Vec<(&'static str, usize, u64)>,
}

fn main() -> ExitCode {
    let mut sizes = vec![10_000, 50_000, 100_000];
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--bench" => {}
            "--targets" => {
                let list = args.next().unwrap_or_default();
                let parsed: std::result::Result<Vec<usize>, _> =
                    list.split(',').map(|n| n.trim().parse::<usize>()).collect();
                match parsed {
                    Ok(v) if v.iter().all(|&n| n >= PER_SERVICE) => sizes = v,
                    _ => {
                        eprintln!(
                            "wide bench: --targets needs a comma-separated list of numbers of at least {PER_SERVICE}"
                        );
                        return ExitCode::FAILURE;
                    }
                }
            }
            other => {
                eprintln!("wide bench: unknown option {other}; use --targets N[,N...]");
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wide bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut all = Vec::new();
    for targets in sizes {
        match runtime.block_on(measure(targets)) {
            Ok(f) => all.push(f),
            Err(e) => {
                eprintln!("wide bench at {targets} targets: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    report(&all);
    ExitCode::SUCCESS
}

async fn measure(targets: usize) -> Result<Figures> {
    let exe = epcheck_binary()?;
    let layout = Layout::new(targets, PER_SERVICE);
    println!(
        "{} static targets in {} services ...",
        layout.targets(),
        layout.services
    );
    let dir = tempfile::tempdir()?;
    let api = ApiServer::builder().strict_ips(false).start().await?;
    api.add_token(TOKEN, Permissions::all());
    for s in 0..layout.services {
        api.put_service("default", &layout.service(s));
    }
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN)?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let config = dir.path().join("config.yaml");
    let settings = DaemonSettings::default();
    std::fs::write(
        &config,
        config_yaml(&layout, &settings, 0, &api.url(), &token_file, &metrics),
    )?;
    let log_path = dir.path().join("epcheck.log");
    let started = Instant::now();
    let mut daemon = spawn(&exe, &config, &log_path, dir.path())?;
    let pid = daemon.pid();

    let converged = loop {
        let written = (0..layout.services)
            .filter(|&s| {
                api.get_object(Resource::Endpoints, "default", &layout.service(s))
                    .is_some_and(|o| {
                        fixtures::apiserver::endpoint_ips(&o, "addresses").len()
                            == layout.per_service
                    })
            })
            .count();
        if written == layout.services {
            break started.elapsed();
        }
        if daemon.exited() || started.elapsed() > Duration::from_secs(300) {
            return Err(format!(
                "{written} of {} objects written; log:\n{}",
                layout.services,
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(settings.interval * 2).await;
    let log_lines = std::fs::read_to_string(&log_path)?.lines().count();
    let rss_kib = sample(pid, 100.0)?.rss_kib;

    let mut scrapes = Vec::new();
    for (format, accept) in [
        ("text", "text/plain"),
        ("OpenMetrics", "application/openmetrics-text;version=1.0.0"),
    ] {
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
        let before = sample(pid, 100.0)?.hwm_kib;
        let page = fixtures::http::get(&metrics, "/metrics", accept).await?;
        if page.status != 200 {
            return Err(format!("/metrics answered {}", page.status).into());
        }
        let after = sample(pid, 100.0)?.hwm_kib;
        scrapes.push((format, page.body.len(), after.saturating_sub(before)));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.terminate(Duration::from_secs(10));
    if let Some(keep) = std::env::var_os("EPCHECK_BENCH_KEEP_LOG") {
        std::fs::copy(&log_path, &keep)?;
    }
    api.shutdown().await;
    Ok(Figures {
        targets: layout.targets(),
        services: layout.services,
        converged,
        log_lines,
        rss_kib,
        scrapes,
    })
}

fn spawn(exe: &Path, config: &Path, log_path: &Path, cwd: &Path) -> Result<ChildGuard> {
    let log = std::fs::File::create(log_path)?;
    let child = Command::new(exe)
        .args(["run", "-f"])
        .arg(config)
        .args(["--log-format", "json"])
        .current_dir(cwd)
        .env_remove("EPCHECK_CONFIG")
        .env_remove("EPCHECK_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()?;
    Ok(ChildGuard::new(child))
}

fn report(all: &[Figures]) {
    println!();
    println!(
        "{:>8} {:>9} {:>10} {:>10} {:>9} {:>12} {:>10} {:>12} {:>10}",
        "targets",
        "services",
        "start (s)",
        "log lines",
        "RSS MiB",
        "text page MB",
        "text +MiB",
        "OM page MB",
        "OM +MiB"
    );
    for f in all {
        let scrape = |i: usize| {
            f.scrapes.get(i).map_or((0.0, 0.0), |&(_, page, rise)| {
                (page as f64 / 1e6, rise as f64 / 1024.0)
            })
        };
        let (text_page, text_rise) = scrape(0);
        let (om_page, om_rise) = scrape(1);
        println!(
            "{:>8} {:>9} {:>10.2} {:>10} {:>9.1} {:>12.1} {:>10.2} {:>12.1} {:>10.2}",
            f.targets,
            f.services,
            f.converged.as_secs_f64(),
            f.log_lines,
            f.rss_kib as f64 / 1024.0,
            text_page,
            text_rise,
            om_page,
            om_rise
        );
    }
    println!();
    println!(
        "targets: a start logs at most services + 100 lines (1,100 at 100,000 targets in 1,000 \
         services); one scrape raises the peak RSS by at most 5 MiB at 50,000 targets"
    );
    for f in all {
        let lines_ok = f.log_lines <= f.services + 100;
        let rise_ok = f.scrapes.iter().all(|&(_, _, rise)| rise <= 5 * 1024);
        println!(
            "  {} targets: log lines {} ({}), scrapes {}",
            f.targets,
            f.log_lines,
            if lines_ok { "ok" } else { "MISSED" },
            if rise_ok { "ok" } else { "MISSED" }
        );
    }
}
