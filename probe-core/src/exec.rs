//! The exec probe: run a check script, exit status 0 means up.
//!
//! Conventions are keepalived's `vrrp_script` and OpenShift's check scripts:
//!
//! - the program runs directly from its `argv`, no shell, with stdin from `/dev/null`;
//! - `EPCHECK_SERVICE`, `EPCHECK_TARGET`, `EPCHECK_IP` and `EPCHECK_PORT` are added to the
//!   environment the daemon itself runs with;
//! - stdout and stderr are read (so the script never blocks on a full pipe) but only the first
//!   4 KiB of each are kept; the first non-empty line of stderr (else stdout) goes into the failure
//!   message, cut at 200 characters;
//! - on Unix the program runs in a process group of its own (`setpgid(0, 0)`), and when the timeout
//!   ends *the whole group* gets `SIGKILL`, so a script's children (`curl`, `redis-cli`, a
//!   background `sleep`) die with it instead of piling up every interval.
//!
//! When the program exits by itself, anything it left running in the background is *not* killed:
//! once the program has been reaped its process group id may be reused by another process group
//! (for instance the next check's), so signalling it would be unsafe. Such leftovers only lose
//! their stdout/stderr readers after a short grace period. A check script should not leave
//! processes behind.

use std::io;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::Instant;

use crate::check::ExecCheck;
use crate::outcome::{FailureKind, ProbeError, ProbeOutcome};
use crate::target::Target;

/// Bytes kept from each of stdout and stderr.
const CAPTURE_BYTES: usize = 4096;

/// Characters of output quoted in a failure message.
const QUOTE_CHARS: usize = 200;

/// After the program exited, how long to keep reading output that it wrote just before. A
/// background child that inherited the pipes can keep them open forever; this bounds the wait.
const PIPE_GRACE: Duration = Duration::from_millis(50);

/// After `SIGKILL`, how long to wait for the kernel to let us reap the program before leaving it
/// to tokio's background reaper.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// Runs `check` for `target`.
pub(crate) async fn probe(target: &Target, check: &ExecCheck) -> ProbeOutcome {
    let start = Instant::now();
    let Some((program, args)) = check.command.split_first() else {
        return ProbeOutcome::down(
            Duration::ZERO,
            ProbeError::new(FailureKind::Other, "exec check has no command"),
        );
    };

    let mut command = Command::new(program);
    command
        .args(args)
        .env("EPCHECK_SERVICE", &*target.service)
        .env("EPCHECK_TARGET", &*target.name)
        .env("EPCHECK_IP", target.ip.to_string())
        .env("EPCHECK_PORT", target.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    command.process_group(0);

    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return ProbeOutcome::down(
                start.elapsed(),
                ProbeError::new(FailureKind::Other, format!("cannot run {program:?}: {e}")),
            );
        }
    };
    let pid = child.id();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();

    // Set once the program has been reaped; from then on its process group id must not be used.
    let mut exited: Option<io::Result<ExitStatus>> = None;
    let _ = tokio::time::timeout(check.timeout, async {
        let mut output = pin!(async {
            tokio::join!(
                capture(stdout.as_mut(), &mut out),
                capture(stderr.as_mut(), &mut err)
            )
        });
        let mut wait = pin!(child.wait());
        tokio::select! {
            status = &mut wait => {
                exited = Some(status);
                let _ = tokio::time::timeout(PIPE_GRACE, &mut output).await;
            }
            _ = &mut output => exited = Some(wait.await),
        }
    })
    .await;
    let latency = start.elapsed();

    match exited {
        Some(Ok(status)) if status.success() => ProbeOutcome::up(latency),
        Some(Ok(status)) => {
            let mut message = describe(status);
            if let Some(line) = first_line(&err).or_else(|| first_line(&out)) {
                message.push_str(": ");
                message.push_str(&line);
            }
            ProbeOutcome::down(latency, ProbeError::new(FailureKind::ExitStatus, message))
        }
        Some(Err(e)) => ProbeOutcome::down(
            latency,
            ProbeError::new(
                FailureKind::Other,
                format!("waiting for {program:?} failed: {e}"),
            ),
        ),
        None => {
            kill_group(pid, program);
            let _ = child.start_kill();
            if tokio::time::timeout(REAP_GRACE, child.wait())
                .await
                .is_err()
            {
                tracing::warn!(program = %program, pid, "exec check still running after SIGKILL; leaving it to the background reaper");
            }
            let message = format!(
                "timed out after {} ms; killed the check's process group",
                check.timeout.as_millis()
            );
            ProbeOutcome::down(latency, ProbeError::new(FailureKind::Timeout, message))
        }
    }
}

/// Sends `SIGKILL` to the process group led by `pid`. Only called while the leader has not been
/// reaped, so the group id still belongs to it.
#[cfg(unix)]
fn kill_group(pid: Option<u32>, program: &str) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    let Some(pgid) = pid.and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {
            tracing::debug!(program = %program, pgid, "exec check timed out; killed its process group");
        }
        Err(e) => {
            tracing::warn!(program = %program, pgid, error = %e, "cannot kill the process group of a timed-out exec check");
        }
    }
}

#[cfg(not(unix))]
fn kill_group(_pid: Option<u32>, _program: &str) {}

/// Reads `pipe` to its end, keeping the first [`CAPTURE_BYTES`] in `buf` and discarding the rest.
async fn capture<R: AsyncRead + Unpin>(pipe: Option<&mut R>, buf: &mut Vec<u8>) {
    let Some(pipe) = pipe else { return };
    let mut chunk = [0u8; 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let keep = n.min(CAPTURE_BYTES - buf.len());
                buf.extend_from_slice(&chunk[..keep]);
            }
        }
    }
}

/// `exit status 3` or `killed by signal 9`.
fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    status.to_string()
}

/// The first non-blank line of `output`, trimmed and cut at [`QUOTE_CHARS`] characters.
fn first_line(output: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(output);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let mut quoted: String = line.chars().take(QUOTE_CHARS).collect();
    if quoted.len() < line.len() {
        quoted.push_str("...");
    }
    Some(quoted)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn first_line_skips_blanks_and_truncates() {
        assert_eq!(
            first_line(b"\n  \n  redis down \nmore"),
            Some("redis down".into())
        );
        assert_eq!(first_line(b""), None);
        assert_eq!(first_line(b" \n"), None);
        let long = "é".repeat(QUOTE_CHARS + 5);
        let line = first_line(long.as_bytes()).unwrap();
        assert_eq!(line.chars().count(), QUOTE_CHARS + 3);
        assert!(line.ends_with("..."));
    }

    #[cfg(unix)]
    #[test]
    fn describe_exit_and_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
    }
}
