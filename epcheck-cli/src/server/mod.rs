//! The metrics and health server on `metrics.listen` (SPEC §8.1), mini-redis style: the caller
//! binds the listener and owns the shutdown signal, [`serve`] owns the accept loop.
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /metrics` | the registry: OpenMetrics text when the `Accept` header asks for it (Prometheus does), Prometheus text 0.0.4 otherwise ([`exposition`]) |
//! | `GET /healthz` | `200 ok` while the process runs (liveness) |
//! | `GET /readyz` | `503` and what is missing until the [`Readiness`] latch opens, then `200 ok` |
//! | `GET /status` | the daemon's [`StatusSnapshot`] as JSON (schema in [`status`]) |
//!
//! `HEAD` is answered like `GET` without a body; another method on a known path is
//! `405 Method Not Allowed`; an unknown path is `404`. Request bodies are never read.
//!
//! [`Limits`] keep a misbehaving client from taking the file descriptors that probes need, or
//! from starving the health checks: each connection must send its request head within 5 s (an
//! idle keep-alive connection is closed after the same time) and lives at most 5 minutes; at
//! most 64 connections are open at once, and when one more arrives the *oldest* is closed to
//! make room (see [`serve_with`] for why the oldest).
//!
//! ```no_run
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use epcheck::server::{HttpState, Readiness, StatusSnapshot, serve};
//! use epcheck::metrics::Metrics;
//!
//! # async fn demo() -> std::io::Result<()> {
//! let mut registry = Registry::default();
//! let metrics = Metrics::new();
//! metrics.register(&mut registry);
//! let readiness = Readiness::new();
//! readiness.set_config_loaded();
//! let (status_tx, status_rx) = tokio::sync::watch::channel(StatusSnapshot::default());
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9087").await?;
//! let state = HttpState::new(Arc::new(registry), readiness.clone(), Arc::new(status_rx));
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! tokio::spawn(serve(listener, state, shutdown));
//! // ... the daemon: readiness.set_first_cycle_done(); status_tx.send_replace(...); ...
//! # drop(status_tx);
//! # Ok(())
//! # }
//! ```

pub mod exposition;
mod readiness;
pub mod status;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

pub use exposition::{Body, Format};
pub use readiness::Readiness;
pub use status::{ServiceStatus, StatusSnapshot, StatusSource, TargetStatus};

/// Connections open at once; one more closes the oldest.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head, counted from the connection's start or the end
/// of its previous response. Kubelet and Prometheus send theirs at once.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest life of one (keep-alive) connection before it is closed gracefully.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);

/// How often at most the server warns that it is closing connections to stay under its cap.
const CAP_WARNING_EVERY: Duration = Duration::from_secs(60);

/// The server's limits; [`Limits::default`] is the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once ([`MAX_CONNECTIONS`]); at least 1.
    pub max_connections: usize,
    /// Time a client has to send a request head ([`HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// Longest life of one connection ([`MAX_CONNECTION_AGE`]).
    pub max_connection_age: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: MAX_CONNECTIONS,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connection_age: MAX_CONNECTION_AGE,
        }
    }
}
/// How long shutdown (or a connection past its age) waits for a response in progress.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

/// What the server answers from. Cheap to clone.
#[derive(Clone)]
pub struct HttpState {
    /// The registry `/metrics` encodes; register everything before building the state.
    pub registry: Arc<Registry>,
    /// The latch `/readyz` reports.
    pub readiness: Readiness,
    /// Where `/status` gets its document.
    pub status: Arc<dyn StatusSource>,
    /// The scrapes being encoded (at most [`exposition::MAX_SCRAPES`] at once).
    pub scrapes: exposition::Scrapes,
}

impl HttpState {
    /// Bundles the three parts.
    pub fn new(
        registry: Arc<Registry>,
        readiness: Readiness,
        status: Arc<dyn StatusSource>,
    ) -> Self {
        HttpState {
            registry,
            readiness,
            status,
            scrapes: exposition::Scrapes::default(),
        }
    }
}

impl fmt::Debug for HttpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpState")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

/// Serves `listener` with the default [`Limits`] until `shutdown` resolves (see [`serve_with`]).
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: impl Future<Output = ()>) {
    serve_with(listener, state, Limits::default(), shutdown).await;
}

/// One open connection, in the accept-order queue.
struct Open {
    task: AbortHandle,
    peer: SocketAddr,
    since: Instant,
}

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets responses in progress
/// finish for up to [`SHUTDOWN_GRACE`] and returns. Accept errors (such as running out of file
/// descriptors) are logged and retried after a short pause; they never end the server.
///
/// At the connection cap, a new connection closes the **oldest** open one instead of being
/// refused. Refusing new ones is what let a client that opens connections and sends nothing
/// starve `/healthz` (and get the pod restarted by its liveness probe). Kubelet and Prometheus
/// send their request as soon as they connect and are answered within milliseconds, so they are
/// always among the youngest; the oldest is a connection that has sent nothing yet (it dies at
/// the header deadline anyway), an idle keep-alive connection (its client reconnects), or a
/// client reading its answer very slowly. Reserving room would not work: which path a client
/// wants is only known after its request has been read.
pub async fn serve_with(
    listener: TcpListener,
    state: HttpState,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let state = Arc::new(state);
    let max = limits.max_connections.max(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut open: VecDeque<Open> = VecDeque::with_capacity(max);
    let mut last_warning: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    while open.len() >= max {
                        let Some(oldest) = open.pop_front() else { break };
                        oldest.task.abort();
                        tracing::debug!(
                            peer = %oldest.peer,
                            open_for = ?oldest.since.elapsed(),
                            "metrics server at its connection cap; oldest connection closed"
                        );
                        if last_warning.is_none_or(|t| t.elapsed() >= CAP_WARNING_EVERY) {
                            last_warning = Some(Instant::now());
                            tracing::warn!(
                                max,
                                newest_peer = %peer,
                                "metrics server at its connection cap: closing the oldest \
                                 connections to keep /healthz answering (a client may be opening \
                                 connections and sending nothing)"
                            );
                        }
                    }
                    let task = connections.spawn(connection(stream, state.clone(), stop_rx.clone(), limits));
                    open.push_back(Open { task, peer, since: Instant::now() });
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(done) = connections.join_next_with_id(), if !connections.is_empty() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                };
                open.retain(|c| c.task.id() != id);
            }
        }
    }
    // Close the listening socket first so that no new connection is queued while we drain.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(100), drained).await;
    connections.abort_all();
}

async fn connection(
    stream: TcpStream,
    state: Arc<HttpState>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, Infallible>(handle(&state, &req)))
    });
    let mut builder = http1::Builder::new();
    // hyper starts the header deadline when it starts waiting for a head: at once on a new
    // connection (one that sends nothing is closed too) and after each response.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(limits.max_connection_age);
    tokio::pin!(age);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "metrics server: connection ended with an error");
            }
            return;
        }
        _ = stop.wait_for(|stopped| *stopped) => {}
        () = &mut age => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
}

/// Answers one request; never fails, never panics.
fn handle<B>(state: &HttpState, req: &Request<B>) -> Response<Body> {
    let path = req.uri().path();
    if !matches!(path, "/metrics" | "/healthz" | "/readyz" | "/status") {
        return reply(StatusCode::NOT_FOUND, TEXT_PLAIN, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT_PLAIN,
            "method not allowed\n",
        );
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match path {
        "/metrics" => {
            let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            if req.method() == Method::HEAD {
                return reply(StatusCode::OK, format.content_type(), Bytes::new());
            }
            // Streamed in chunks (`exposition`): the page is never held whole.
            let body = exposition::stream(Arc::clone(&state.registry), format, &state.scrapes);
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            resp
        }
        "/healthz" => reply(StatusCode::OK, TEXT_PLAIN, "ok\n"),
        "/readyz" => {
            if state.readiness.is_ready() {
                reply(StatusCode::OK, TEXT_PLAIN, "ok\n")
            } else {
                let body = format!("not ready: {}\n", state.readiness.missing().join(", "));
                reply(StatusCode::SERVICE_UNAVAILABLE, TEXT_PLAIN, body)
            }
        }
        _ => match serde_json::to_vec(&state.status.snapshot()) {
            Ok(mut body) => {
                body.push(b'\n');
                reply(StatusCode::OK, JSON, body)
            }
            Err(_) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT_PLAIN,
                "encoding the status failed\n",
            ),
        },
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let body = Full::new(body.into()).map_err(|never| match never {});
    let mut resp = Response::new(BodyExt::boxed_unsync(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests;
