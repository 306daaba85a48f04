//! The notify script, keepalived's `notify` convention (SPEC §8.2).
//!
//! The script is run directly (no shell) with three arguments:
//!
//! | | target event | service event |
//! | --- | --- | --- |
//! | `$1` | `TARGET` | `SERVICE` |
//! | `$2` | `svc/node` | `svc` |
//! | `$3` | `UP` or `DOWN` | `HEALTHY`, `DEGRADED` or `DOWN` |
//!
//! and these variables added to epcheck's own environment (the values spelled as in the JSON
//! event, lower case):
//!
//! - `EPCHECK_KIND` (`target`/`service`), `EPCHECK_SERVICE`, `EPCHECK_FROM`, `EPCHECK_TO`,
//!   `EPCHECK_TIME` (RFC 3339, UTC);
//! - target events: `EPCHECK_TARGET`, `EPCHECK_IP`, `EPCHECK_PORT`, and `EPCHECK_ERROR` when
//!   the target went down with an error;
//! - service events: `EPCHECK_READY`, `EPCHECK_TOTAL` (`EPCHECK_FROM` is empty for the first
//!   state reported).
//!
//! Variables that do not apply to the event are removed, so an inherited `EPCHECK_TARGET` never
//! reaches a service event. stdin is `/dev/null`, stdout is discarded, stderr is read (its first
//! line goes into the failure message). The script runs in a process group of its own; when its
//! timeout ends, or when the notifier is shut down while it runs, the whole group gets `SIGKILL`.
//! A non-zero exit status is a failure; it is not retried (the script is expected to do its own
//! retrying if it wants any).

use std::path::PathBuf;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::event::{NotifyEvent, rfc3339};
use super::webhook::snippet;

/// Bytes of stderr kept.
const CAPTURE_BYTES: usize = 4096;

/// After the script exited, how long to keep reading what it wrote just before (a background
/// child holding the pipe open must not hold the lane).
const PIPE_GRACE: Duration = Duration::from_millis(50);

/// After `SIGKILL`, how long to wait to reap the script.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// Every variable the script may get; those not set for an event are removed.
const VARS: [&str; 11] = [
    "EPCHECK_KIND",
    "EPCHECK_SERVICE",
    "EPCHECK_TARGET",
    "EPCHECK_IP",
    "EPCHECK_PORT",
    "EPCHECK_FROM",
    "EPCHECK_TO",
    "EPCHECK_ERROR",
    "EPCHECK_TIME",
    "EPCHECK_READY",
    "EPCHECK_TOTAL",
];

/// The configured script.
pub(crate) struct ScriptSink {
    program: PathBuf,
    timeout: Duration,
}

/// The three arguments for `event`.
pub(crate) fn args(event: &NotifyEvent) -> [String; 3] {
    [
        event.kind().to_ascii_uppercase(),
        event.name(),
        event.state(),
    ]
}

/// The `EPCHECK_*` variables for `event`.
pub(crate) fn vars(event: &NotifyEvent) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("EPCHECK_KIND", event.kind().to_owned()),
        ("EPCHECK_TIME", rfc3339(event.at())),
    ];
    match event {
        NotifyEvent::Target(t) => {
            v.extend([
                ("EPCHECK_SERVICE", t.service.clone()),
                ("EPCHECK_TARGET", t.target.clone()),
                ("EPCHECK_IP", t.ip.to_string()),
                ("EPCHECK_PORT", t.port.to_string()),
                ("EPCHECK_FROM", t.from.as_str().to_owned()),
                ("EPCHECK_TO", t.to.as_str().to_owned()),
            ]);
            if let Some(e) = &t.error {
                v.push(("EPCHECK_ERROR", e.clone()));
            }
        }
        NotifyEvent::Service(s) => v.extend([
            ("EPCHECK_SERVICE", s.service.clone()),
            (
                "EPCHECK_FROM",
                s.from.map(|f| f.as_str().to_owned()).unwrap_or_default(),
            ),
            ("EPCHECK_TO", s.to.as_str().to_owned()),
            ("EPCHECK_READY", s.ready.to_string()),
            ("EPCHECK_TOTAL", s.total.to_string()),
        ]),
    }
    v
}

impl ScriptSink {
    pub(crate) fn new(program: PathBuf, timeout: Duration) -> Self {
        Self { program, timeout }
    }

    /// Runs the script for `event`; `Err` says why it failed.
    pub(crate) async fn run(&self, event: &NotifyEvent) -> Result<(), String> {
        let mut command = Command::new(&self.program);
        command
            .args(args(event))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in VARS {
            command.env_remove(name);
        }
        command.envs(vars(event));
        #[cfg(unix)]
        command.process_group(0);

        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        // Armed until the script is reaped: dropping this future (shutdown) kills the group.
        let mut group = GroupGuard(child.id());
        let mut stderr = child.stderr.take();
        let mut err = Vec::new();

        let mut exited: Option<std::io::Result<ExitStatus>> = None;
        let _ = tokio::time::timeout(self.timeout, async {
            let mut output = pin!(capture(stderr.as_mut(), &mut err));
            let mut wait = pin!(child.wait());
            tokio::select! {
                status = &mut wait => {
                    group.disarm();
                    exited = Some(status);
                    let _ = tokio::time::timeout(PIPE_GRACE, &mut output).await;
                }
                _ = &mut output => {
                    let status = wait.await;
                    group.disarm();
                    exited = Some(status);
                }
            }
        })
        .await;

        match exited {
            Some(Ok(status)) => {
                if status.success() {
                    Ok(())
                } else {
                    let line = snippet(&err);
                    Err(if line.is_empty() {
                        describe(status)
                    } else {
                        format!("{}: {line}", describe(status))
                    })
                }
            }
            Some(Err(e)) => Err(format!("waiting for the script failed: {e}")),
            None => {
                group.kill();
                let _ = child.start_kill();
                let _ = tokio::time::timeout(REAP_GRACE, child.wait()).await;
                Err(format!(
                    "timed out after {} ms; killed its process group",
                    self.timeout.as_millis()
                ))
            }
        }
    }
}

/// Reads `from` to its end, keeping the first [`CAPTURE_BYTES`].
async fn capture<R: AsyncRead + Unpin>(from: Option<&mut R>, into: &mut Vec<u8>) {
    let Some(from) = from else { return };
    let mut buf = [0u8; 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = CAPTURE_BYTES.saturating_sub(into.len());
                into.extend_from_slice(buf.get(..n.min(room)).unwrap_or(&[]));
            }
        }
    }
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// Kills the script's process group when dropped while armed. Disarmed once the script has been
/// reaped: from then on its group id may belong to someone else.
struct GroupGuard(Option<u32>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Instant, SystemTime};

    use probe_core::Health;

    use super::*;
    use crate::notify::event::{ServiceEvent, ServiceHealth, TargetEvent};

    pub(crate) fn target_event() -> NotifyEvent {
        NotifyEvent::Target(TargetEvent {
            service: "redis".into(),
            target: "node-02".into(),
            ip: "198.51.100.11".parse().unwrap(),
            port: 38080,
            from: Health::Up,
            to: Health::Down,
            error: Some("connection refused".into()),
            at: SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_787_045),
        })
    }

    /// An executable shell script in `dir`.
    pub(crate) fn script(dir: &std::path::Path, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[tokio::test]
    async fn args_and_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = script(
            dir.path(),
            "notify.sh",
            &format!(
                "echo \"$#|$1|$2|$3\" >> {out:?}; env | grep ^EPCHECK_ | sort >> {out:?}",
                out = out
            ),
        );
        let sink = ScriptSink::new(s, Duration::from_secs(5));
        sink.run(&target_event()).await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "3|TARGET|redis/node-02|DOWN\n\
             EPCHECK_ERROR=connection refused\n\
             EPCHECK_FROM=up\n\
             EPCHECK_IP=198.51.100.11\n\
             EPCHECK_KIND=target\n\
             EPCHECK_PORT=38080\n\
             EPCHECK_SERVICE=redis\n\
             EPCHECK_TARGET=node-02\n\
             EPCHECK_TIME=2025-01-02T03:04:05.000Z\n\
             EPCHECK_TO=down\n"
        );

        std::fs::remove_file(&out).unwrap();
        let service = NotifyEvent::Service(ServiceEvent {
            service: "redis".into(),
            from: Some(ServiceHealth::Healthy),
            to: ServiceHealth::Degraded,
            ready: 2,
            total: 3,
            at: SystemTime::UNIX_EPOCH,
        });
        sink.run(&service).await.unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "3|SERVICE|redis|DEGRADED\n\
             EPCHECK_FROM=healthy\n\
             EPCHECK_KIND=service\n\
             EPCHECK_READY=2\n\
             EPCHECK_SERVICE=redis\n\
             EPCHECK_TIME=1970-01-01T00:00:00.000Z\n\
             EPCHECK_TO=degraded\n\
             EPCHECK_TOTAL=3\n"
        );
    }

    #[tokio::test]
    async fn failures_quote_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let s = script(
            dir.path(),
            "fail.sh",
            "echo 'pager unreachable' >&2; exit 3",
        );
        let e = ScriptSink::new(s, Duration::from_secs(5))
            .run(&target_event())
            .await
            .unwrap_err();
        assert_eq!(e, "exit status 3: pager unreachable");
        let e = ScriptSink::new(dir.path().join("missing.sh"), Duration::from_secs(5))
            .run(&target_event())
            .await
            .unwrap_err();
        assert!(
            e.starts_with("cannot run ") && e.contains("missing.sh"),
            "{e}"
        );
    }

    fn alive(pid: &str) -> bool {
        // A killed child of the script is reparented and reaped by init (or left a zombie in a
        // container without one): count a zombie as dead.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn a_hanging_script_is_killed_with_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let s = script(
            dir.path(),
            "hang.sh",
            &format!("sleep 30 & echo $! > {pids:?}; echo $$ >> {pids:?}; wait"),
        );
        let start = Instant::now();
        let e = ScriptSink::new(s, Duration::from_millis(300))
            .run(&target_event())
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(e, "timed out after 300 ms; killed its process group");
        let pids = std::fs::read_to_string(&pids).unwrap();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        assert_eq!(pids.len(), 2);
        tokio::time::sleep(Duration::from_millis(100)).await;
        for pid in pids {
            assert!(!alive(pid), "process {pid} survived the group kill");
        }
    }
}
