//! Child processes of the benchmark: CPU time and memory read from `/proc/<pid>`, and a guard
//! that kills the child when the benchmark ends, panics included.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// A process's counters at one moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcSample {
    /// When it was read.
    pub at: Instant,
    /// User plus system CPU time of all its threads, in seconds (`utime + stime` of
    /// `/proc/<pid>/stat`, so with the resolution of a clock tick, 10 ms).
    pub cpu_secs: f64,
    /// Resident memory (`VmRSS`), in KiB.
    pub rss_kib: u64,
    /// Peak resident memory so far (`VmHWM`), in KiB.
    pub hwm_kib: u64,
    /// Resident anonymous memory (`RssAnon`: heap, stacks), in KiB.
    pub anon_kib: u64,
    /// Resident file-backed memory (`RssFile`: mostly the binary's code), in KiB.
    pub file_kib: u64,
    /// Context switches of all its threads so far (voluntary and not): how often it slept and
    /// was woken.
    pub ctx_switches: u64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be run).
pub fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// Reads `pid`'s CPU time and memory.
///
/// # Errors
/// When the process is gone or `/proc` cannot be parsed.
pub fn sample(pid: u32, ticks_per_sec: f64) -> io::Result<ProcSample> {
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces; count after it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("no ')' in /proc/<pid>/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the name.
    let field = |i: usize| -> io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad /proc/{pid}/stat: {stat}")))
    };
    let ticks = field(11)? + field(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |key: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        at,
        cpu_secs: ticks as f64 / ticks_per_sec,
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
        anon_kib: kib("RssAnon:"),
        file_kib: kib("RssFile:"),
        ctx_switches: ctx_switches(pid),
    })
}

/// Context switches summed over the threads of `pid` (0 if `/proc` cannot tell).
fn ctx_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The 1-minute load average of the machine (`/proc/loadavg`), if readable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The `epcheck` binary to benchmark: `EPCHECK_BIN`, else `target/release/epcheck` in the
/// workspace.
///
/// # Errors
/// When it does not exist, with the command that builds it.
pub fn epcheck_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("EPCHECK_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/epcheck"),
        PathBuf::from,
    );
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the epcheck binary is missing at {}: build it first with \
             `cargo build --release -p epcheck-cli` (or point EPCHECK_BIN at one)",
            path.display()
        ))
    }
}

/// A child process that is killed when this is dropped (normal end, early return or panic).
///
/// The child may be a wrapper (`timeout`, the backstop that kills the daemon even if the
/// benchmark itself is killed, or a profiler); [`pid`](Self::pid) is then the wrapped process's.
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
    pid: u32,
}

impl ChildGuard {
    /// Guards `child`, whose measured process is `child` itself.
    pub fn new(child: Child) -> Self {
        let pid = child.id();
        Self {
            child: Some(child),
            pid,
        }
    }

    /// Guards a wrapper `child` (`timeout …`, a profiler) whose measured process is the
    /// descendant running `exe`, found in `/proc`.
    ///
    /// # Errors
    /// When no such process shows up within ten seconds (the wrapper is then killed).
    pub fn wrapped(child: Child, exe: &Path) -> io::Result<Self> {
        let mut guard = Self::new(child);
        let want = std::fs::canonicalize(exe)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let mut stack = vec![guard.pid];
            while let Some(pid) = stack.pop() {
                if std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == want) {
                    guard.pid = pid;
                    return Ok(guard);
                }
                let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                    .unwrap_or_default();
                stack.extend(
                    children
                        .split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(io::Error::other(format!(
            "no process running {} under pid {}",
            want.display(),
            guard.pid
        )))
    }

    /// The measured process's id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the child has exited (then it is reaped).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    /// Sends SIGTERM to the measured process and waits up to `grace` for the child to exit,
    /// then kills it. Returns how long the exit took, if it came in time.
    pub fn terminate(&mut self, grace: Duration) -> Option<Duration> {
        let started = Instant::now();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        while started.elapsed() < grace {
            if self.exited() {
                self.child = None;
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
        None
    }

    /// Kills the child (and, for a wrapper, the wrapped process) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.pid != child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the child to exit by itself.
    ///
    /// # Errors
    /// As [`Child::wait`].
    pub fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        match self.child.take() {
            Some(mut c) => c.wait(),
            None => Err(io::Error::other("the child was already reaped")),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The machine's count of TCP connects begun (`ActiveOpens` in `/proc/net/snmp`, this network
/// namespace). Over a window in which one process probes and nothing else connects, its delta
/// is that process's checks, however they end: the only count that works for HAProxy, whose
/// layer-4 checks reset the connection before their handshake completes on the target's side,
/// so the target never accepts them.
///
/// # Errors
/// When `/proc/net/snmp` cannot be read or has no `ActiveOpens`.
pub fn tcp_active_opens() -> io::Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
        return Err(io::Error::other("/proc/net/snmp has no Tcp lines"));
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "ActiveOpens")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| io::Error::other("/proc/net/snmp has no Tcp ActiveOpens"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id(), clock_ticks()).unwrap();
        assert!(s.rss_kib > 0 && s.hwm_kib >= s.rss_kib);
        assert!(s.cpu_secs >= 0.0);
    }
}
