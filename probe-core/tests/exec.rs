//! The exec probe: exit status, environment, output capture and the process-group kill.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use probe_core::{Check, ExecCheck, FailureKind, Prober, ProberOptions, Target};

fn target() -> Target {
    Target::new("redis", "node-1", "127.0.0.1".parse().unwrap(), 6379)
}

fn sh(script: &str, timeout: Duration) -> Check {
    let command = vec!["/bin/sh".into(), "-c".into(), script.into()];
    Check::Exec(ExecCheck::new(command, timeout).unwrap())
}

fn prober() -> Prober {
    Prober::new(ProberOptions::default())
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn exit_zero_is_up() {
    let outcome = prober().probe(&target(), &sh("exit 0", LONG)).await;
    assert!(outcome.up, "{outcome:?}");
    assert!(outcome.latency > Duration::ZERO);
}

#[tokio::test]
async fn exit_one_is_down_with_first_stderr_line() {
    let script = "echo ignored on stdout; echo; echo 'redis not ready' >&2; echo more >&2; exit 1";
    let outcome = prober().probe(&target(), &sh(script, LONG)).await;
    assert!(!outcome.up);
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, FailureKind::ExitStatus);
    assert_eq!(error.message, "exit status 1: redis not ready");
}

#[tokio::test]
async fn stdout_line_when_stderr_is_empty() {
    let outcome = prober()
        .probe(&target(), &sh("echo 'role:slave'; exit 2", LONG))
        .await;
    assert_eq!(outcome.error.unwrap().message, "exit status 2: role:slave");
}

#[tokio::test]
async fn environment_names_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!(
        "printf '%s\\n' \"$EPCHECK_SERVICE\" \"$EPCHECK_TARGET\" \"$EPCHECK_IP\" \"$EPCHECK_PORT\" > '{}'",
        out.display()
    );
    let outcome = prober().probe(&target(), &sh(&script, LONG)).await;
    assert!(outcome.up, "{outcome:?}");
    assert_eq!(
        std::fs::read_to_string(out).unwrap(),
        "redis\nnode-1\n127.0.0.1\n6379\n"
    );
}

#[tokio::test]
async fn stdin_is_null() {
    // `read` fails at once on /dev/null; with an inherited terminal or pipe it could block.
    let outcome = prober()
        .probe(&target(), &sh("read line; test $? -ne 0", LONG))
        .await;
    assert!(outcome.up, "{outcome:?}");
}

#[tokio::test]
async fn large_output_does_not_block_the_script() {
    let outcome = prober()
        .probe(
            &target(),
            &sh(
                "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; exit 3",
                LONG,
            ),
        )
        .await;
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, FailureKind::ExitStatus);
    assert!(
        error.message.starts_with("exit status 3"),
        "{}",
        error.message
    );
    assert!(error.message.len() < 300, "{}", error.message);
}

#[tokio::test]
async fn missing_program_is_other() {
    let check = Check::Exec(ExecCheck::new(vec!["/nonexistent/check.sh".into()], LONG).unwrap());
    let outcome = prober().probe(&target(), &check).await;
    let error = outcome.error.unwrap();
    assert_eq!(error.kind, FailureKind::Other);
    assert!(
        error
            .message
            .starts_with("cannot run \"/nonexistent/check.sh\"")
    );
}

#[tokio::test]
async fn background_child_holding_the_pipes_does_not_delay_the_result() {
    let started = Instant::now();
    let outcome = prober()
        .probe(&target(), &sh("sleep 2 & exit 0", LONG))
        .await;
    assert!(outcome.up, "{outcome:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

/// Whether `pid` is gone (or a zombie: killed, waiting for a parent that may never reap it in a
/// container whose PID 1 does not).
fn is_dead(pid: i32) -> bool {
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesized command name.
        return stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            == Some("Z");
    }
    if std::path::Path::new("/proc/self/stat").exists() {
        return true;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
    let timeout = Duration::from_millis(300);

    let started = Instant::now();
    let outcome = prober().probe(&target(), &sh(&script, timeout)).await;
    let elapsed = started.elapsed();

    let error = outcome.error.unwrap();
    assert_eq!(error.kind, FailureKind::Timeout);
    assert!(
        error.message.starts_with("timed out after 300 ms"),
        "{}",
        error.message
    );
    assert!(
        elapsed >= timeout && elapsed < timeout * 2 + Duration::from_millis(500),
        "{elapsed:?}"
    );

    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_dead(pid) {
        assert!(
            Instant::now() < deadline,
            "background child {pid} survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads the pid a script wrote to `pidfile`, waiting for it to appear.
async fn pid_from(pidfile: &std::path::Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(text) = std::fs::read_to_string(pidfile)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            pidfile.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn assert_dies(pid: i32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !is_dead(pid) {
        assert!(Instant::now() < deadline, "{what} ({pid}) is still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 18: a check that backgrounds a child and exits left the child running, one orphan per
/// check run. What the check left in its process group is killed once it exits.
#[tokio::test]
async fn what_a_check_leaves_running_is_killed_when_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > '{}'; exit 0", pidfile.display());
    let outcome = prober().probe(&target(), &sh(&script, LONG)).await;
    assert!(outcome.up, "{outcome:?}");
    assert_dies(pid_from(&pidfile).await, "the check's background child").await;
}

/// Issue 18: stopping the daemon left a running check's children behind. A probe that is
/// dropped (the daemon shutting down) kills the check's whole process group.
#[tokio::test]
async fn a_dropped_probe_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > '{}'; wait", pidfile.display());
    let check = sh(&script, LONG);
    let probe = tokio::spawn(async move { prober().probe(&target(), &check).await });
    let pid = pid_from(&pidfile).await;
    probe.abort();
    let _ = probe.await;
    assert_dies(pid, "the check's background child").await;
}

/// Issue 18 (and SPEC §13): a check got the daemon's whole environment, secrets included. It
/// gets a minimal PATH and its EPCHECK_* variables, nothing else.
#[tokio::test]
async fn the_environment_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env");
    let script = format!("env > '{}'", out.display());
    let outcome = prober().probe(&target(), &sh(&script, LONG)).await;
    assert!(outcome.up, "{outcome:?}");
    let env = std::fs::read_to_string(out).unwrap();
    let mut names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        // Set by the shell itself.
        .filter(|k| !matches!(*k, "PWD" | "OLDPWD" | "SHLVL" | "_"))
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "EPCHECK_IP",
            "EPCHECK_PORT",
            "EPCHECK_SERVICE",
            "EPCHECK_TARGET",
            "PATH"
        ],
        "{env}"
    );
    assert!(
        env.contains(&format!("PATH={}\n", probe_core::child::PATH)),
        "{env}"
    );
}
