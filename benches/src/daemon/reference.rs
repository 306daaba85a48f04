//! The CPU reference of the daemon benchmark: a minimal tokio connect loop that probes the same
//! targets at the same rate as the daemon — a round over every address every interval, with the
//! same concurrency and timeout, each connection closed with a reset like epcheck's probes
//! ([`raw_connect_round_rst`]) — run as a process of its own so its CPU time is read from
//! `/proc/<pid>/stat` exactly as the daemon's is.
//!
//! The benchmark re-executes itself with `--raw-loop` to run it ([`run_child`]); the child prints
//! `done <round> <connects> <succeeded> <round ms>` after each round, and the parent ([`measure`]) reads the
//! child's CPU time at the end of the warm-up rounds and at the end of the last round, when the
//! loop sits idle until the next round, so the window holds whole rounds only.

use std::io::{self, BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::process::{ChildGuard, ProcSample, sample};
use crate::raw_connect_round_rst;

/// The first argument that makes the benchmark binary run the loop instead.
pub const CHILD_FLAG: &str = "--raw-loop";

/// How the loop runs.
#[derive(Clone, Debug)]
pub struct LoopSettings {
    /// Time between the starts of two rounds.
    pub interval: Duration,
    /// Timeout of one connect.
    pub timeout: Duration,
    /// Connects in flight at most.
    pub concurrency: usize,
    /// Rounds before the measurement starts.
    pub warmup_rounds: u32,
    /// Rounds measured.
    pub rounds: u32,
}

/// What one run of the loop cost.
#[derive(Clone, Debug)]
pub struct LoopResult {
    /// CPU seconds over the measured rounds.
    pub cpu_secs: f64,
    /// Connects attempted in the measured rounds.
    pub probes: u64,
    /// Connects that succeeded in the measured rounds.
    pub succeeded: u64,
    /// Wall time of the measured rounds.
    pub window: Duration,
    /// Median resident memory at the end of each measured round, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory, in KiB.
    pub hwm_kib: u64,
    /// Context switches over the measured rounds.
    pub ctx_switches: u64,
    /// Median wall time of one measured round (its burst), in seconds.
    pub round_secs: f64,
}

/// Runs the loop in a child process (`exe --raw-loop …`) over the addresses in `addrs_file` and
/// measures it. Blocks until the child is done (call it from a blocking thread).
///
/// # Errors
/// When the child cannot be started, says something unexpected, or exits before the end.
pub fn measure(
    exe: &Path,
    addrs_file: &Path,
    settings: &LoopSettings,
    ticks_per_sec: f64,
) -> io::Result<LoopResult> {
    let total_rounds = settings.warmup_rounds + settings.rounds;
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_FLAG)
        .arg(addrs_file)
        .arg(settings.interval.as_millis().to_string())
        .arg(total_rounds.to_string())
        .arg(settings.timeout.as_millis().to_string())
        .arg(settings.concurrency.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd.spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| io::Error::other("no stdout"))?;
    let mut guard = ChildGuard::new(child);
    let pid = guard.pid();
    let mut start: Option<(ProcSample, u64, u64)> = None;
    let mut end: Option<(ProcSample, u64, u64)> = None;
    let mut rss = Vec::new();
    let mut rounds = Vec::new();
    for line in io::BufReader::new(stdout).lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some("done"), Some(k), Some(n), Some(ok), Some(ms)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(io::Error::other(format!("reference loop said: {line}")));
        };
        let parse = |s: &str| {
            s.parse::<u64>()
                .map_err(|e| io::Error::other(format!("{line}: {e}")))
        };
        let (k, n, ok, ms) = (parse(k)?, parse(n)?, parse(ok)?, parse(ms)?);
        let s = sample(pid, ticks_per_sec)?;
        if k == u64::from(settings.warmup_rounds) {
            start = Some((s, n, ok));
        } else if k > u64::from(settings.warmup_rounds) {
            rss.push(s.rss_kib as f64);
            rounds.push(ms as f64 / 1e3);
        }
        if k == u64::from(total_rounds) {
            end = Some((s, n, ok));
            break;
        }
    }
    let _ = guard.wait();
    let (Some((s0, n0, ok0)), Some((s1, n1, ok1))) = (start, end) else {
        return Err(io::Error::other(
            "the reference loop exited before its last round",
        ));
    };
    Ok(LoopResult {
        cpu_secs: s1.cpu_secs - s0.cpu_secs,
        ctx_switches: s1.ctx_switches - s0.ctx_switches,
        probes: n1 - n0,
        succeeded: ok1 - ok0,
        window: s1.at.duration_since(s0.at),
        rss_kib: super::stats::median(&rss).unwrap_or(0.0) as u64,
        hwm_kib: s1.hwm_kib,
        round_secs: super::stats::median(&rounds).unwrap_or(0.0),
    })
}

/// The child's side: `args` are the addresses file, the interval in ms, the number of rounds,
/// the timeout in ms and the concurrency. Rounds start on a fixed grid, `interval` apart.
///
/// # Errors
/// When the arguments or the addresses file are wrong, or the runtime cannot start.
pub fn run_child(args: &[String]) -> io::Result<()> {
    let bad = |what: &str| io::Error::other(format!("{CHILD_FLAG}: bad {what} in {args:?}"));
    let file = args.first().ok_or_else(|| bad("addresses file"))?;
    let num = |i: usize, what: &str| -> io::Result<u64> {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| bad(what))
    };
    let interval = Duration::from_millis(num(1, "interval")?);
    let rounds = num(2, "rounds")?;
    let timeout = Duration::from_millis(num(3, "timeout")?);
    let concurrency = num(4, "concurrency")? as usize;
    let addrs: Vec<SocketAddr> = std::fs::read_to_string(file)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse().map_err(|_| bad("address")))
        .collect::<io::Result<_>>()?;
    let _ = probe_core::raise_nofile_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut total, mut ok) = (0u64, 0u64);
        for k in 1..=rounds {
            ticks.tick().await;
            let started = std::time::Instant::now();
            ok += raw_connect_round_rst(&addrs, concurrency, timeout).await as u64;
            total += addrs.len() as u64;
            let ms = started.elapsed().as_millis();
            let mut out = io::stdout().lock();
            writeln!(out, "done {k} {total} {ok} {ms}")?;
            out.flush()?;
        }
        Ok(())
    })
}
