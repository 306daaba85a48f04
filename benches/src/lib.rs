//! Shared pieces of epcheck's benchmarks: the reference connect loop that epcheck's prober is
//! measured against, helpers to spread many targets over a few loopback listeners, and the
//! pieces of the daemon benchmark ([`daemon`]).
//!
//! Benchmarks only ever send traffic to loopback listeners they start themselves.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! let pool = fixtures::targets::AcceptingPool::start(4).await?;
//! let addrs = epcheck_benches::spread(pool.addrs(), 1_000);
//! let up = epcheck_benches::raw_connect_round(&addrs, 256, Duration::from_secs(1)).await;
//! assert_eq!(up, 1_000);
//! # Ok(()) }
//! ```

pub mod daemon;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use probe_core::{Check, Target};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// `n` target addresses spread round-robin over `listeners`.
pub fn spread(listeners: &[SocketAddr], n: usize) -> Vec<SocketAddr> {
    if listeners.is_empty() {
        return Vec::new();
    }
    (0..n).map(|i| listeners[i % listeners.len()]).collect()
}

/// The probe requests epcheck's prober takes for `addrs`, all with one shared TCP check.
pub fn targets(addrs: &[SocketAddr]) -> Vec<(Target, Arc<Check>)> {
    let check = Arc::new(Check::tcp());
    let service: Arc<str> = Arc::from("bench");
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                Target::new(service.clone(), format!("t{i}"), a.ip(), a.port()),
                check.clone(),
            )
        })
        .collect()
}

/// The reference: a minimal tokio connect loop — one task per connect, at most `concurrency` in
/// flight (a semaphore), each connect under `timeout`, the stream dropped at once. Returns how
/// many connects succeeded. This is the floor any prober built on tokio pays; epcheck's prober
/// is measured as a ratio of it, in the same process run.
pub async fn raw_connect_round(
    addrs: &[SocketAddr],
    concurrency: usize,
    timeout: Duration,
) -> usize {
    connect_round(addrs, concurrency, timeout, false).await
}

/// [`raw_connect_round`] closing each connection with a reset (`SO_LINGER` 0), as epcheck's
/// prober does: the stricter reference, since a reset skips the `FIN` exchange and leaves no
/// `TIME_WAIT` socket behind.
pub async fn raw_connect_round_rst(
    addrs: &[SocketAddr],
    concurrency: usize,
    timeout: Duration,
) -> usize {
    connect_round(addrs, concurrency, timeout, true).await
}

async fn connect_round(
    addrs: &[SocketAddr],
    concurrency: usize,
    timeout: Duration,
    rst: bool,
) -> usize {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for &addr in addrs {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        tasks.spawn(async move {
            let ok = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    if rst {
                        let _ = stream.set_zero_linger();
                    }
                    true
                }
                _ => false,
            };
            drop(permit);
            ok
        });
    }
    let mut up = 0;
    while let Some(r) = tasks.join_next().await {
        up += usize::from(matches!(r, Ok(true)));
    }
    up
}
