//! HAProxy as a contender in the daemon benchmark (issue 15): Debian's `haproxy` with plain
//! layer-4 `check` lines over the same targets, with the same interval, timeout, rise, fall and
//! fast interval as epcheck, run as a process of its own and measured from `/proc` like the
//! daemon. Its checks are counted as the connects the machine began in its window
//! ([`tcp_active_opens`]): HAProxy resets a check's connection as soon as the target's SYN-ACK
//! arrives, before its own ACK goes out, so the targets never accept one and cannot count them.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::layout::{DaemonSettings, Layout};
use super::process::{ChildGuard, ProcSample, sample, tcp_active_opens};

/// What one HAProxy window cost.
#[derive(Clone, Debug)]
pub struct HaproxyResult {
    /// CPU seconds in the window.
    pub cpu_secs: f64,
    /// Connects begun in the window (HAProxy's checks, every target's).
    pub checks: u64,
    /// Wall time of the window.
    pub window: Duration,
    /// Resident memory at the window's end, in KiB.
    pub rss_kib: u64,
    /// Context switches in the window.
    pub ctx_switches: u64,
}

/// The `haproxy` binary: on the `PATH`, or installed with `apt-get` (as root) when missing.
/// `None` (with the reason printed) when neither works.
pub fn binary() -> Option<String> {
    let found = || {
        Command::new("haproxy")
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found() {
        return Some("haproxy".to_owned());
    }
    println!("haproxy is missing: installing Debian's (apt-get install -y haproxy) ...");
    let installed = Command::new("sh")
        .args([
            "-c",
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null 2>&1 || \
             (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if installed && found() {
        Some("haproxy".to_owned())
    } else {
        println!("  could not install haproxy: the HAProxy contender is left out");
        None
    }
}

/// An HAProxy config with one backend per service and one `server … check` line per target on
/// health-check port `port`: layer-4 checks every `interval`, `fastinter` while a state is in
/// doubt, `rise`/`fall`, the check timeout `timeout`. HAProxy will not start without a
/// listener: its one frontend listens on the Unix socket `socket`, and nothing connects to it.
pub fn config(layout: &Layout, settings: &DaemonSettings, port: u16, socket: &Path) -> String {
    let ms = |d: Duration| d.as_millis();
    let mut c = String::new();
    let _ = writeln!(
        c,
        "global\n  maxconn 2048\n  ulimit-n 8192\n  nbthread 1\n\n\
         defaults\n  mode tcp\n  timeout connect {t}ms\n  timeout check {t}ms\n  \
         timeout client 5s\n  timeout server 5s\n  default-server check inter {i}ms \
         fastinter {f}ms downinter {i}ms rise {r} fall {fa}\n",
        t = ms(settings.timeout),
        i = ms(settings.interval),
        f = ms(settings.fast_interval),
        r = settings.rise,
        fa = settings.fall
    );
    let _ = writeln!(
        c,
        "frontend idle\n  bind unix@{}\n  default_backend {}\n",
        socket.display(),
        layout.service(0)
    );
    for s in 0..layout.services {
        let _ = writeln!(c, "backend {}", layout.service(s));
        for t in 0..layout.per_service {
            let _ = writeln!(c, "  server t{t:03} {}:{port}", layout.ip(s, t));
        }
        c.push('\n');
    }
    c
}

/// Runs `haproxy` on `config_path` for a warm-up of two intervals plus `window`, and measures
/// the window: CPU and memory from `/proc/<pid>`, checks from [`tcp_active_opens`].
///
/// # Errors
/// When haproxy does not start or exits early, or `/proc` cannot be read.
pub async fn measure(
    haproxy: &str,
    config_path: &Path,
    settings: &DaemonSettings,
    window: Duration,
    ticks: f64,
) -> Result<HaproxyResult, Box<dyn std::error::Error + Send + Sync>> {
    let check = Command::new(haproxy)
        .arg("-c")
        .arg("-q")
        .arg("-f")
        .arg(config_path)
        .output()?;
    if !check.status.success() {
        return Err(format!(
            "haproxy -c refused the config: {}",
            String::from_utf8_lossy(&check.stderr)
        )
        .into());
    }
    let child = Command::new(haproxy)
        .arg("-db")
        .arg("-f")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let mut child = ChildGuard::new(child);
    let pid = child.pid();
    tokio::time::sleep(settings.interval * 2 + settings.timeout).await;
    if child.exited() {
        return Err("haproxy exited during its warm-up".into());
    }
    let a0 = tcp_active_opens()?;
    let s0: ProcSample = sample(pid, ticks)?;
    tokio::time::sleep(window).await;
    let s1 = sample(pid, ticks)?;
    let a1 = tcp_active_opens()?;
    child.terminate(Duration::from_secs(5));
    Ok(HaproxyResult {
        cpu_secs: s1.cpu_secs - s0.cpu_secs,
        checks: a1.saturating_sub(a0),
        window: s1.at - s0.at,
        rss_kib: s1.rss_kib,
        ctx_switches: s1.ctx_switches - s0.ctx_switches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_backend_per_service_and_one_checked_server_per_target() {
        let layout = Layout::new(300, 100);
        let c = config(
            &layout,
            &DaemonSettings::default(),
            4242,
            Path::new("/tmp/h.sock"),
        );
        assert_eq!(c.matches("\nbackend ").count(), 3);
        assert_eq!(c.matches("  server t").count(), 300);
        assert!(c.contains(
            "default-server check inter 2000ms fastinter 200ms downinter 2000ms rise 2 fall 3"
        ));
        assert!(c.contains("timeout check 1000ms"));
        assert!(c.contains("bind unix@/tmp/h.sock"));
        assert!(c.contains(&format!("  server t000 {}:4242", layout.ip(0, 0))));
    }
}
