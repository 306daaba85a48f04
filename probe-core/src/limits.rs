//! The open-file limit and how much probing concurrency it allows.
//!
//! Every in-flight TCP probe holds a socket, every exec probe two pipes and (on Linux) a pidfd. A
//! daemon that probes 10,000 targets with concurrency 1,024 needs far more than the 1,024 files a
//! container often starts with, so the soft limit is raised to the hard limit at start (SPEC §5.1)
//! and concurrency is capped below what remains.

use std::io;

/// File descriptors kept for everything that is not a probe: stdio, the tokio driver, the
/// metrics server and its clients, the ApiServer and Redis connections, log files.
pub const RESERVED_FDS: u64 = 64;

/// File descriptors budgeted per in-flight probe.
///
/// A TCP probe needs one, but an exec probe holds up to three (stdout and stderr pipes and a
/// pidfd) and briefly more while spawning, and in tests and benchmarks the accepting side of a
/// loopback target lives in the same process and holds one per connection too. Two is the
/// compromise: it can never be too few for a TCP-only daemon and is not wasteful with the usual
/// raised limits (a hard limit of 1,048,576 allows 524,256 probes in flight).
pub const FDS_PER_PROBE: u64 = 2;

/// The `RLIMIT_NOFILE` limits of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoFileLimit {
    /// The soft limit, the one that applies (`u64::MAX` if unlimited or unknown).
    pub soft: u64,
    /// The hard limit, the most the soft limit can be raised to without privileges.
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard limit and returns both limits as they are then.
///
/// On macOS the soft limit is also capped at `kern.maxfilesperproc`. On platforms without
/// `RLIMIT_NOFILE` (Windows) nothing changes and both limits are reported as `u64::MAX`.
///
/// # Errors
/// When the limit cannot be read or set; the caller should log it and go on with
/// [`current_nofile_limit`] (if that fails too, with a conservative guess such as 1,024).
pub fn raise_nofile_limit() -> io::Result<NoFileLimit> {
    rlimit::increase_nofile_limit(u64::MAX)?;
    current_nofile_limit()
}

/// The current open-file limits, without changing them.
///
/// # Errors
/// When `getrlimit(2)` fails.
pub fn current_nofile_limit() -> io::Result<NoFileLimit> {
    #[cfg(unix)]
    {
        let (soft, hard) = rlimit::Resource::NOFILE.get()?;
        Ok(NoFileLimit { soft, hard })
    }
    #[cfg(not(unix))]
    {
        Ok(NoFileLimit {
            soft: u64::MAX,
            hard: u64::MAX,
        })
    }
}

/// How many probes may be in flight: `requested`, capped at
/// `(soft − RESERVED_FDS) / FDS_PER_PROBE`, and never 0 (a limit too small to leave room still
/// allows one probe at a time, and a request of 0 is read as 1).
///
/// ```
/// use probe_core::{NoFileLimit, effective_concurrency};
///
/// let small = NoFileLimit { soft: 1024, hard: 1024 };
/// assert_eq!(effective_concurrency(1024, &small), 480); // (1024 - 64) / 2
/// let large = NoFileLimit { soft: 1 << 20, hard: 1 << 20 };
/// assert_eq!(effective_concurrency(1024, &large), 1024);
/// ```
pub fn effective_concurrency(requested: usize, limit: &NoFileLimit) -> usize {
    let budget = limit.soft.saturating_sub(RESERVED_FDS) / FDS_PER_PROBE;
    let budget = usize::try_from(budget).unwrap_or(usize::MAX);
    requested.min(budget).max(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn limit(soft: u64) -> NoFileLimit {
        NoFileLimit { soft, hard: soft }
    }

    #[test]
    fn caps_and_floors() {
        assert_eq!(effective_concurrency(1024, &limit(1024)), 480);
        assert_eq!(effective_concurrency(100, &limit(1024)), 100);
        assert_eq!(effective_concurrency(1024, &limit(64)), 1);
        assert_eq!(effective_concurrency(1024, &limit(0)), 1);
        assert_eq!(effective_concurrency(0, &limit(1 << 20)), 1);
        let unlimited =
            usize::try_from((u64::MAX - RESERVED_FDS) / FDS_PER_PROBE).unwrap_or(usize::MAX);
        assert_eq!(
            effective_concurrency(usize::MAX, &limit(u64::MAX)),
            unlimited
        );
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let before = current_nofile_limit().unwrap();
        let after = raise_nofile_limit().unwrap();
        assert_eq!(after.hard, before.hard);
        assert!(after.soft >= before.soft);
        #[cfg(target_os = "linux")]
        assert_eq!(after.soft, after.hard);
    }
}
