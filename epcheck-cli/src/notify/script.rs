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
//! and a clean environment: `PATH` ([`probe_core::child::PATH`]) and these variables (the values
//! spelled as in the JSON event, lower case), nothing of epcheck's own environment (which holds
//! secrets such as `EPCHECK_REDIS_PASSWORD`):
//!
//! - `EPCHECK_KIND` (`target`/`service`), `EPCHECK_SERVICE`, `EPCHECK_FROM`, `EPCHECK_TO`,
//!   `EPCHECK_TIME` (RFC 3339, UTC);
//! - target events: `EPCHECK_TARGET`, `EPCHECK_IP`, `EPCHECK_PORT`, and `EPCHECK_ERROR` when
//!   the target went down with an error;
//! - service events: `EPCHECK_READY`, `EPCHECK_TOTAL` (`EPCHECK_FROM` is empty for the first
//!   state reported).
//!
//! stdin is `/dev/null`, stdout is discarded, stderr is read (its first line goes into the
//! failure message). The script runs through [`probe_core::child`], like exec checks: in a
//! process group of its own, killed whole with `SIGKILL` when its timeout ends, when the
//! notifier is shut down while it runs, and when the script exits leaving something running in
//! its group (start what must outlive it with `setsid`). A non-zero exit status is a failure;
//! it is not retried (the script is expected to do its own retrying if it wants any).

use std::path::PathBuf;
use std::time::Duration;

use probe_core::child::{ChildCommand, ChildExit, describe, run};

use super::event::{NotifyEvent, rfc3339};
use super::webhook::snippet;

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
            if let Some(a) = &t.agreed {
                v.push(("EPCHECK_AGREED", a.clone()));
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
        let command = ChildCommand {
            args: args(event).into_iter().map(Into::into).collect(),
            env: vars(event)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            capture_stdout: false,
            ..ChildCommand::new(&self.program, self.timeout)
        };
        let output = run(&command)
            .await
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        match output.exit {
            ChildExit::Exited(status) if status.success() => Ok(()),
            ChildExit::Exited(status) => {
                let line = snippet(&output.stderr);
                Err(if line.is_empty() {
                    describe(status)
                } else {
                    format!("{}: {line}", describe(status))
                })
            }
            ChildExit::TimedOut => Err(format!(
                "timed out after {} ms; killed its process group",
                self.timeout.as_millis()
            )),
            ChildExit::WaitFailed(e) => Err(format!("waiting for the script failed: {e}")),
            _ => Err("the script ended abnormally".to_owned()),
        }
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
            agreed: None,
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

    /// Issue 18: the script got the daemon's whole environment (EPCHECK_REDIS_PASSWORD, webhook
    /// secrets, ...). It gets PATH and its EPCHECK_* variables only.
    #[tokio::test]
    async fn the_environment_is_clean() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = script(dir.path(), "notify.sh", &format!("env > {out:?}"));
        ScriptSink::new(s, Duration::from_secs(5))
            .run(&target_event())
            .await
            .unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        let names: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .filter(|k| !matches!(*k, "PWD" | "OLDPWD" | "SHLVL" | "_"))
            .filter(|k| *k != "PATH" && !k.starts_with("EPCHECK_"))
            .collect();
        assert!(names.is_empty(), "inherited: {names:?}\n{env}");
        assert!(env.contains(&format!("PATH={}\n", probe_core::child::PATH)));
    }

    /// Issue 18: what a script leaves running in its group is killed when it exits.
    #[tokio::test]
    async fn what_a_script_leaves_running_is_killed_when_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let s = script(
            dir.path(),
            "bg.sh",
            &format!("sleep 30 & echo $! > {pids:?}; exit 0"),
        );
        ScriptSink::new(s, Duration::from_secs(5))
            .run(&target_event())
            .await
            .unwrap();
        let pid = std::fs::read_to_string(&pids).unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while alive(pid.trim()) {
            assert!(Instant::now() < deadline, "the script's child survived");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
