//! `epcheck probe`: ad-hoc probes of addresses, usable as a keepalived or OpenShift check script.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use probe_core::{Check, Expect, ProbeOutcome, Prober, ProberOptions, Target, TcpCheck};
use serde::Serialize;

use crate::UsageError;
use crate::cli::{OutputFormat, ProbeArgs};
use crate::report::millis;

/// The JSON report of `probe` (SPEC §7).
#[derive(Debug, Serialize)]
pub struct ProbeReport {
    /// One entry per address, in input order.
    pub targets: Vec<ProbeLine>,
    /// How many were up.
    pub up: usize,
    /// How many were down.
    pub down: usize,
    /// Wall time of the whole round.
    pub elapsed_ms: f64,
}

/// One address.
#[derive(Debug, Serialize)]
pub struct ProbeLine {
    /// `ip:port`.
    pub addr: SocketAddr,
    /// Whether the probe succeeded.
    pub up: bool,
    /// Probe latency in milliseconds.
    pub latency_ms: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Parses one `ip:port` (IPv6 as `[addr]:port`); `origin` says where it came from for errors.
pub fn parse_addr(text: &str, origin: &str) -> Result<SocketAddr, UsageError> {
    text.parse::<SocketAddr>().map_err(|_| {
        UsageError(format!(
            "{origin}: {text:?} is not ip:port (e.g. 10.0.0.1:6379, or [fd00::1]:6379 for IPv6); \
             host names are not resolved"
        ))
    })
}

/// Reads a `--targets` file: one `ip:port` per line, `#` comments and further columns ignored.
pub fn parse_targets_file(text: &str, name: &str) -> Result<Vec<SocketAddr>, UsageError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default();
        if let Some(first) = line.split_whitespace().next() {
            out.push(parse_addr(first, &format!("{name}:{}", i + 1))?);
        }
    }
    Ok(out)
}

/// Turns `\r`, `\n`, `\t` and `\\` escapes typed on a command line into bytes.
pub fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn read_targets(path: &Path) -> Result<Vec<SocketAddr>, UsageError> {
    let (text, name) = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| UsageError(format!("cannot read targets from standard input: {e}")))?;
        (s, "<stdin>".to_string())
    } else {
        let s = std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!(
                "cannot read --targets file {}: {e}",
                path.display()
            ))
        })?;
        (s, path.display().to_string())
    };
    parse_targets_file(&text, &name)
}

/// Builds the check from the flags.
fn check_from(args: &ProbeArgs) -> Result<Check, UsageError> {
    let expect = match (&args.expect, &args.expect_regex) {
        (Some(s), _) => {
            Some(Expect::contains(unescape(s)).map_err(|e| UsageError(format!("--expect: {e}")))?)
        }
        (None, Some(re)) => {
            Some(Expect::regex(re).map_err(|e| UsageError(format!("--expect-regex: {e}")))?)
        }
        (None, None) => None,
    };
    let tcp = TcpCheck::send_expect(args.send.as_deref().map(unescape), expect)
        .map_err(|e| UsageError(format!("--send/--expect: {e}")))?;
    Ok(Check::Tcp(tcp))
}

/// Runs `probe`; returns the exit code (0 all up, 1 any down).
pub async fn run(args: &ProbeArgs) -> anyhow::Result<u8> {
    if let Some(path) = &args.config {
        tracing::warn!(
            config = %path.display(),
            "probe does not read a config file: the addresses and settings come from the command line"
        );
    }
    let mut addrs = Vec::new();
    for a in &args.addrs {
        addrs.push(parse_addr(a, "argument")?);
    }
    if let Some(path) = &args.targets {
        addrs.extend(read_targets(path)?);
    }
    if addrs.is_empty() {
        return Err(
            UsageError("no addresses to probe: give ADDR... or --targets FILE".into()).into(),
        );
    }
    let check = Arc::new(check_from(args)?);
    let items: Vec<(Target, Arc<Check>)> = addrs
        .iter()
        .map(|a| {
            (
                Target::new("probe", a.to_string(), a.ip(), a.port()),
                check.clone(),
            )
        })
        .collect();
    let concurrency = crate::effective_concurrency(args.concurrency as usize);
    let prober = Prober::new(ProberOptions {
        timeout: Duration::from_millis(args.timeout_ms),
        concurrency,
    });
    let started = Instant::now();
    let outcomes = prober.probe_all(&items).await;
    let elapsed = started.elapsed();
    let report = build_report(&addrs, &outcomes, elapsed);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", render_text(&report)),
    }
    Ok(if report.down == 0 { 0 } else { 1 })
}

fn build_report(addrs: &[SocketAddr], outcomes: &[ProbeOutcome], elapsed: Duration) -> ProbeReport {
    let targets: Vec<ProbeLine> = addrs
        .iter()
        .zip(outcomes)
        .map(|(addr, o)| ProbeLine {
            addr: *addr,
            up: o.up,
            latency_ms: millis(o.latency),
            error: o.error.as_ref().map(|e| e.to_string()),
        })
        .collect();
    let up = targets.iter().filter(|t| t.up).count();
    ProbeReport {
        down: targets.len() - up,
        up,
        targets,
        elapsed_ms: millis(elapsed),
    }
}

fn render_text(r: &ProbeReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for t in &r.targets {
        let _ = writeln!(
            out,
            "{:<42} {:<5} {:>9.3} ms  {}",
            t.addr.to_string(),
            if t.up { "up" } else { "DOWN" },
            t.latency_ms,
            t.error.as_deref().unwrap_or("")
        );
    }
    let _ = writeln!(
        out,
        "{} up, {} down in {:.1} ms",
        r.up, r.down, r.elapsed_ms
    );
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn targets_file_skips_comments_and_extra_columns() {
        let text = "# backends\n127.0.0.1:80 web-1 extra\n\n  [::1]:6379   # redis\n";
        let got = parse_targets_file(text, "t.txt").unwrap();
        assert_eq!(
            got,
            vec![
                "127.0.0.1:80".parse().unwrap(),
                "[::1]:6379".parse().unwrap()
            ]
        );
    }

    #[test]
    fn bad_line_names_file_and_line() {
        let e = parse_targets_file("127.0.0.1:80\nredis:6379\n", "t.txt").unwrap_err();
        assert!(e.0.contains("t.txt:2"), "{}", e.0);
        assert!(e.0.contains("redis:6379"), "{}", e.0);
    }

    #[test]
    fn unescape_understands_common_escapes() {
        assert_eq!(unescape(r"PING\r\n"), "PING\r\n");
        assert_eq!(unescape(r"a\\b\q"), "a\\b\\q");
    }
}
