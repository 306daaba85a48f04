//! The exec probe: run a check script, exit status 0 means up.
//!
//! Conventions are keepalived's `vrrp_script` and OpenShift's check scripts, run through
//! [`crate::child`]:
//!
//! - the program runs directly from its `argv`, no shell, with stdin from `/dev/null`;
//! - its environment is clean: `PATH` ([`crate::child::PATH`]) and `EPCHECK_SERVICE`,
//!   `EPCHECK_TARGET`, `EPCHECK_IP`, `EPCHECK_PORT`, nothing of the daemon's own environment
//!   (which holds secrets);
//! - stdout and stderr are read (so the script never blocks on a full pipe) but only the first
//!   4 KiB of each are kept; the first non-empty line of stderr (else stdout) goes into the failure
//!   message, cut at 200 characters;
//! - on Unix the program runs in a process group of its own, and *the whole group* gets `SIGKILL`
//!   when the timeout ends, when the program exits leaving something running (on Linux), and
//!   when the probe is dropped (the daemon shutting down), so a script's children (`curl`,
//!   `redis-cli`, a background `sleep`) die with it instead of piling up every interval.

use std::time::Duration;

use crate::check::ExecCheck;
use crate::child::{ChildCommand, ChildExit, describe, run};
use crate::outcome::{FailureKind, ProbeError, ProbeOutcome};
use crate::target::Target;

/// Characters of output quoted in a failure message.
const QUOTE_CHARS: usize = 200;

/// Runs `check` for `target`.
pub(crate) async fn probe(target: &Target, check: &ExecCheck) -> ProbeOutcome {
    let Some((program, args)) = check.command.split_first() else {
        return ProbeOutcome::down(
            Duration::ZERO,
            ProbeError::new(FailureKind::Other, "exec check has no command"),
        );
    };
    let command = ChildCommand {
        args: args.iter().map(Into::into).collect(),
        env: vec![
            ("EPCHECK_SERVICE".into(), target.service.to_string()),
            ("EPCHECK_TARGET".into(), target.name.to_string()),
            ("EPCHECK_IP".into(), target.ip.to_string()),
            ("EPCHECK_PORT".into(), target.port.to_string()),
        ],
        ..ChildCommand::new(program, check.timeout)
    };
    let output = match run(&command).await {
        Ok(output) => output,
        Err(e) => {
            return ProbeOutcome::down(
                Duration::ZERO,
                ProbeError::new(FailureKind::Other, format!("cannot run {program:?}: {e}")),
            );
        }
    };
    let latency = output.elapsed;
    match output.exit {
        ChildExit::Exited(status) if status.success() => ProbeOutcome::up(latency),
        ChildExit::Exited(status) => {
            let mut message = describe(status);
            if let Some(line) = first_line(&output.stderr).or_else(|| first_line(&output.stdout)) {
                message.push_str(": ");
                message.push_str(&line);
            }
            ProbeOutcome::down(latency, ProbeError::new(FailureKind::ExitStatus, message))
        }
        ChildExit::WaitFailed(e) => ProbeOutcome::down(
            latency,
            ProbeError::new(
                FailureKind::Other,
                format!("waiting for {program:?} failed: {e}"),
            ),
        ),
        ChildExit::TimedOut => {
            let message = format!(
                "timed out after {} ms; killed the check's process group",
                check.timeout.as_millis()
            );
            ProbeOutcome::down(latency, ProbeError::new(FailureKind::Timeout, message))
        }
    }
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
}
