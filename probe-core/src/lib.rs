//! Health probes for epcheck: what a target is, how it is probed, many at once, and how results
//! become a health state.
//!
//! - [`Target`]: one backend (`service/name ip:port`), cheap to clone.
//! - [`Check`]: how to probe it: [`TcpCheck`] (connect, optional `send`/[`Expect`]),
//!   [`HttpCheck`] (`GET path`, expected status, optionally over TLS), [`ExecCheck`] (a check
//!   script), or [`Check::Static`] (always up).
//! - [`Prober`]: runs probes with a timeout and at most `concurrency` in flight; a round of
//!   thousands of targets with a few hanging ones costs about one timeout.
//! - [`ProbeOutcome`]: up or down, latency, and a classified [`ProbeError`]
//!   ([`FailureKind::Refused`], [`Timeout`](FailureKind::Timeout),
//!   [`Unreachable`](FailureKind::Unreachable), …), serializable for JSON output.
//! - [`HealthTracker`]: the rise/fall state machine ([`Health::Unknown`] → `Up`/`Down`), pure
//!   logic that takes the time of each observation as an argument.
//! - [`Scheduler`]: the daemon's probing loop: every target once per interval (spread by jitter),
//!   fast re-probes of targets in doubt, each result fed to its tracker and sent as a
//!   [`ProbeEvent`]; the exact timing rules are in the [`scheduler`] module docs.
//! - [`raise_nofile_limit`] and [`effective_concurrency`]: make room for many sockets and stay
//!   below the open-file limit.
//! - [`backoff`]: exponential backoff with jitter, the one every epcheck crate retries with.
//! - [`tls`]: the one builder of rustls client configurations (ring) and pooled HTTPS clients.
//!
//! This crate knows nothing of Kubernetes or of the state store. Probes never log; they return
//! outcomes, and the caller decides what is worth a `tracing` event.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use probe_core::{
//!     Check, Expect, HealthTracker, Prober, ProberOptions, TcpCheck, Target,
//!     effective_concurrency, raise_nofile_limit,
//! };
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let limit = raise_nofile_limit()?;
//! let prober = Prober::new(ProberOptions {
//!     timeout: Duration::from_millis(3000),
//!     concurrency: effective_concurrency(1024, &limit),
//! });
//!
//! // Every target of a service shares one check.
//! let redis = Arc::new(Check::Tcp(TcpCheck::send_expect(
//!     Some("PING\r\n".into()),
//!     Some(Expect::parse("+PONG")?),
//! )?));
//! let items = vec![
//!     (Target::new("redis", "node-1", "127.0.0.1".parse()?, 6379), Arc::clone(&redis)),
//!     (Target::new("redis", "node-2", "127.0.0.1".parse()?, 6380), Arc::clone(&redis)),
//! ];
//!
//! let mut trackers: Vec<_> = items.iter().map(|_| HealthTracker::new(2, 3)).collect();
//! let outcomes = prober.probe_all(&items).await;
//! let now = tokio::time::Instant::now();
//! for (((target, _), outcome), tracker) in items.iter().zip(&outcomes).zip(&mut trackers) {
//!     if let Some(t) = tracker.observe(outcome.up, now) {
//!         println!("{target}: {} -> {}", t.from, t.to);
//!     }
//!     if let Some(error) = &outcome.error {
//!         println!("{target}: {} ({})", error, error.kind);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Decisions
//!
//! - **TCP connections are closed with a reset** (`SO_LINGER` 0), as HAProxy's health checks do:
//!   closing with a `FIN` would leave every probe's socket in `TIME_WAIT` for 60 s, and 10,000
//!   targets every 2 s would exhaust the ephemeral ports.
//! - **The whole TCP probe is bounded by one timeout**: connect, `send` and reading the reply
//!   together. Replies are read up to [`MAX_REPLY_BYTES`].
//! - **HTTP checks** use one connection per probe (no pool), read only the response head and close
//!   with a reset like TCP probes. With TLS, certificates are not verified, as in Kubernetes' own
//!   HTTPS probes (see [`HttpCheck`] for why).
//! - **Exec checks** run without a shell, with a clean environment, in their own process group,
//!   which is killed as a whole when their own timeout ([`ExecCheck::timeout`]) ends, when the
//!   check exits leaving something running, and when the probe is dropped ([`child`], which
//!   epcheck's notify scripts use too).
//! - **Failure kinds**: the four of SPEC §5.1 (refused, timeout, unreachable, other) plus
//!   [`FailureKind::UnexpectedReply`] (connected, wrong answer) and [`FailureKind::ExitStatus`]
//!   (the script said no), so that a dashboard tells "the backend answered wrongly" and "the
//!   script failed" from "the script could not run".
//! - **`expect`**: `"/…/"` is a regex, anything else a substring ([`Expect::parse`]); matching is
//!   on bytes.

pub mod backoff;
mod check;
pub mod child;
mod error;
mod exec;
pub mod failsafe;
mod health;
mod http_probe;
mod limits;
mod outcome;
mod prober;
pub mod scheduler;
mod target;
mod tcp;
pub mod tls;

pub use check::{Check, ExecCheck, Expect, HttpCheck, TcpCheck};
pub use error::{Error, Result};
pub use health::{Health, HealthTracker, Transition};
pub use limits::{
    FDS_PER_PROBE, NoFileLimit, RESERVED_FDS, current_nofile_limit, effective_concurrency,
    raise_nofile_limit,
};
pub use outcome::{FailureKind, ProbeError, ProbeOutcome};
pub use prober::{Prober, ProberOptions};
pub use scheduler::{Probe, ProbeEvent, ProbeFn, ScheduleOptions, Scheduler, TargetId, probe_fn};
pub use target::Target;
pub use tcp::MAX_REPLY_BYTES;

/// Compiles the README's example as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
