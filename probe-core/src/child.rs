//! Child programs (exec checks, and epcheck's notify scripts): one way to run them.
//!
//! [`run`] runs a [`ChildCommand`] the way keepalived runs its scripts, with three rules that
//! keep secrets in and processes from piling up:
//!
//! - **A clean environment**: the child gets [`PATH`] and the variables of
//!   [`ChildCommand::env`], nothing of the caller's environment (which holds
//!   `EPCHECK_REDIS_PASSWORD`, webhook secrets and whatever else the daemon was given).
//! - **Its own process group**, killed whole with `SIGKILL`:
//!   - when the timeout ends;
//!   - when the program exits while something it started is still running in its group (a
//!     backgrounded `sleep`, a `curl` left behind): the exit status is the answer, and leftovers
//!     would otherwise pile up, one per run. A program that really wants to leave a process
//!     running must start it in a session of its own (`setsid`);
//!   - when the future returned by [`run`] is dropped before the program was reaped (the
//!     daemon shutting down).
//! - **No stdin** (`/dev/null`); stdout (when asked for) and stderr are read so the program
//!   never blocks on a full pipe, and their first [`CAPTURE_BYTES`] are kept.
//!
//! Signalling a process group is only safe while its id cannot belong to anyone else. The
//! group's id is the program's pid, which stays reserved until the program is *reaped*; so on
//! Linux the end of the program is observed without reaping it (`waitid` with `WNOWAIT`, woken
//! by `SIGCHLD`), the group is killed, and only then is the program reaped. On other Unix
//! systems the program is reaped first and leftovers are not killed when it exits (only on
//! timeout and drop).
//!
//! ```no_run
//! use std::time::Duration;
//! use probe_core::child::{ChildCommand, ChildExit, run};
//!
//! # async fn demo() -> std::io::Result<()> {
//! let command = ChildCommand {
//!     env: vec![("EPCHECK_TARGET".into(), "node-1".into())],
//!     ..ChildCommand::new("/etc/epcheck/check.sh", Duration::from_secs(3))
//! };
//! let output = run(&command).await?;
//! if let ChildExit::Exited(status) = output.exit {
//!     println!("{status}, stderr: {}", String::from_utf8_lossy(&output.stderr));
//! }
//! # Ok(())
//! # }
//! ```

use std::ffi::OsString;
use std::io;
use std::pin::pin;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The only variable of the daemon's kind a child gets: a minimal `PATH` (Debian's default for
/// root), so `sh`, `curl` or `redis-cli` are found.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Bytes kept from each of stdout and stderr.
pub const CAPTURE_BYTES: usize = 4096;

/// After the program exited, how long to keep reading output that it wrote just before. A
/// process outside its group (`setsid`) that inherited the pipes can keep them open forever.
const PIPE_GRACE: Duration = Duration::from_millis(50);

/// After `SIGKILL`, how long to wait to reap the program before leaving it to tokio's
/// background reaper.
const REAP_GRACE: Duration = Duration::from_secs(1);

/// How often the end of the program is polled should a `SIGCHLD` be missed.
#[cfg(target_os = "linux")]
const EXIT_POLL: Duration = Duration::from_millis(100);

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The program, run directly (no shell).
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables set besides [`PATH`]; nothing else of the caller's environment is passed.
    pub env: Vec<(String, String)>,
    /// How long the program may run before its group is killed.
    pub timeout: Duration,
    /// Whether stdout is read (else it goes to `/dev/null`).
    pub capture_stdout: bool,
}

impl ChildCommand {
    /// `program` without arguments or variables, stdout captured.
    pub fn new(program: impl Into<OsString>, timeout: Duration) -> Self {
        ChildCommand {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            timeout,
            capture_stdout: true,
        }
    }
}

/// How the program ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChildExit {
    /// It exited (or was killed by a signal from elsewhere) with this status.
    Exited(ExitStatus),
    /// The timeout ended first; its process group was killed.
    TimedOut,
    /// Waiting for it failed.
    WaitFailed(io::Error),
}

/// What a run produced.
#[derive(Debug)]
pub struct ChildOutput {
    /// How it ended.
    pub exit: ChildExit,
    /// The first [`CAPTURE_BYTES`] of stdout (empty when not captured).
    pub stdout: Vec<u8>,
    /// The first [`CAPTURE_BYTES`] of stderr.
    pub stderr: Vec<u8>,
    /// From the start to the end of the program (or the timeout).
    pub elapsed: Duration,
}

/// Runs `command` (see the module docs); `Err` when it cannot be started.
pub async fn run(command: &ChildCommand) -> io::Result<ChildOutput> {
    let start = Instant::now();
    let mut cmd = Command::new(&command.program);
    cmd.args(&command.args)
        .env_clear()
        .env("PATH", PATH)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(if command.capture_stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);

    // Listen for SIGCHLD before the program can exit, so that its end is not missed.
    #[cfg(target_os = "linux")]
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();
    let mut child = cmd.spawn()?;
    // Armed until the program is reaped: dropping the future kills the group.
    let mut group = Group(child.id());
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Vec::new();
    let mut err = Vec::new();

    let mut exit: Option<io::Result<ExitStatus>> = None;
    let _ = tokio::time::timeout(command.timeout, async {
        let mut output = pin!(async {
            tokio::join!(
                capture(stdout.as_mut(), &mut out),
                capture(stderr.as_mut(), &mut err)
            )
        });
        let mut output_done = false;
        {
            #[cfg(target_os = "linux")]
            let ended = ended(&child, &mut sigchld);
            #[cfg(not(target_os = "linux"))]
            let ended = std::future::ready(());
            let mut ended = pin!(ended);
            tokio::select! {
                () = &mut ended => {}
                _ = &mut output => {
                    output_done = true;
                    ended.await;
                }
            }
        }
        // The program has ended but is not reaped yet, so its group id is still its own.
        group.kill_if_linux();
        exit = Some(reap(&mut child, &mut group).await);
        if !output_done {
            let _ = tokio::time::timeout(PIPE_GRACE, &mut output).await;
        }
    })
    .await;
    let elapsed = start.elapsed();

    let exit = match exit {
        Some(Ok(status)) => ChildExit::Exited(status),
        Some(Err(e)) => ChildExit::WaitFailed(e),
        None => {
            group.kill();
            let _ = child.start_kill();
            let _ = tokio::time::timeout(REAP_GRACE, reap(&mut child, &mut group)).await;
            ChildExit::TimedOut
        }
    };
    Ok(ChildOutput {
        exit,
        stdout: out,
        stderr: err,
        elapsed,
    })
}

/// Reaps `child`, disarming `group` once its id may belong to someone else.
async fn reap(child: &mut Child, group: &mut Group) -> io::Result<ExitStatus> {
    let status = child.wait().await;
    group.disarm();
    status
}

/// Resolves once `child` has ended, without reaping it (it stays a zombie, its pid and so its
/// process group id reserved).
#[cfg(target_os = "linux")]
async fn ended(child: &Child, sigchld: &mut Option<tokio::signal::unix::Signal>) {
    use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
    use nix::unistd::Pid;

    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => {}
            // Ended, or no longer ours to watch: reaping tells the rest.
            Ok(_) | Err(_) => return,
        }
        match sigchld {
            Some(signal) => {
                let _ = tokio::time::timeout(EXIT_POLL, signal.recv()).await;
            }
            None => tokio::time::sleep(EXIT_POLL / 10).await,
        }
    }
}

/// Reads `pipe` to its end, keeping the first [`CAPTURE_BYTES`] in `buf`.
async fn capture<R: AsyncRead + Unpin>(pipe: Option<&mut R>, buf: &mut Vec<u8>) {
    let Some(pipe) = pipe else { return };
    let mut chunk = [0u8; 1024];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = CAPTURE_BYTES.saturating_sub(buf.len());
                buf.extend_from_slice(chunk.get(..n.min(room)).unwrap_or(&[]));
            }
        }
    }
}

/// `exit status 3` or `killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
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

/// The program's process group: killed with `SIGKILL` when dropped while armed. Disarmed once
/// the program has been reaped, from when its id may belong to another group.
struct Group(Option<u32>);

impl Group {
    fn disarm(&mut self) {
        self.0 = None;
    }

    /// Kills the group where the program's end is observed without reaping it (Linux).
    fn kill_if_linux(&mut self) {
        #[cfg(target_os = "linux")]
        self.kill();
    }

    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => tracing::warn!(pgid, error = %e, "cannot kill a child's process group"),
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[cfg(unix)]
    #[test]
    fn describe_exit_and_signal() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by signal 9");
    }

    #[tokio::test]
    async fn output_is_captured_and_capped() {
        let command = ChildCommand {
            args: vec![
                "-c".into(),
                "head -c 100000 /dev/zero; echo oops >&2; exit 4".into(),
            ],
            ..ChildCommand::new("/bin/sh", Duration::from_secs(10))
        };
        let output = run(&command).await.unwrap();
        assert!(matches!(output.exit, ChildExit::Exited(s) if s.code() == Some(4)));
        assert_eq!(output.stdout.len(), CAPTURE_BYTES);
        assert_eq!(output.stderr, b"oops\n");
        let quiet = ChildCommand {
            capture_stdout: false,
            ..command
        };
        assert!(run(&quiet).await.unwrap().stdout.is_empty());
    }
}
