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
//! `405 Method Not Allowed`; an unknown path is `404`. Request bodies are never read. Each
//! connection must send its request head within 10 s and lives at most 5 minutes; at most 64
//! connections are served at once (more are closed at once), so a misbehaving client cannot
//! take the file descriptors that probes need.
//!
//! ```no_run
//! use std::sync::Arc;
//! use prometheus_client::registry::Registry;
//! use epcheck::http::{HttpState, Readiness, StatusSnapshot, serve};
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

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

pub use exposition::Format;
pub use readiness::Readiness;
pub use status::{ServiceStatus, StatusSnapshot, StatusSource, TargetStatus};

/// Connections served at once; more are closed as soon as they are accepted.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send a request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest life of one (keep-alive) connection before it is closed gracefully.
pub const MAX_CONNECTION_AGE: Duration = Duration::from_secs(300);
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

/// Serves `listener` until `shutdown` resolves, then stops accepting, lets responses in progress
/// finish for up to [`SHUTDOWN_GRACE`] and returns. Accept errors (such as running out of file
/// descriptors) are logged and retried after a short pause; they never end the server.
pub async fn serve(listener: TcpListener, state: HttpState, shutdown: impl Future<Output = ()>) {
    let state = Arc::new(state);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match limit.clone().try_acquire_owned() {
                    Ok(permit) => {
                        connections.spawn(connection(stream, state.clone(), stop_rx.clone(), permit));
                    }
                    Err(_) => tracing::debug!(%peer, "metrics server busy; connection closed"),
                },
                Err(error) => {
                    tracing::warn!(%error, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
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
    _permit: OwnedSemaphorePermit,
) {
    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
        std::future::ready(Ok::<_, Infallible>(handle(&state, &req)))
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(16 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let age = tokio::time::sleep(MAX_CONNECTION_AGE);
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
fn handle<B>(state: &HttpState, req: &Request<B>) -> Response<Full<Bytes>> {
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
            match exposition::render(&state.registry, format) {
                Ok(body) => reply(StatusCode::OK, format.content_type(), body),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT_PLAIN,
                    "encoding the metrics failed\n",
                ),
            }
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

fn reply(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests;
