//! Test helpers: a loopback HTTP receiver that records every request and answers from a script
//! of replies, and a tracing capture.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Check = Arc<dyn Fn(&Recorded) -> Option<(u16, String)> + Send + Sync>;

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<VecDeque<(u16, String)>>,
    default: (u16, String),
    delay: Duration,
    check: Option<Check>,
}

/// A loopback HTTP/1 server on `127.0.0.1:0`.
pub(crate) struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Answers with `replies` in turn, then `default` forever.
    pub async fn start(replies: &[(u16, &str)], default: (u16, &str)) -> Self {
        Self::build(replies, default, Duration::ZERO, None).await
    }

    /// Waits `delay` before every answer.
    pub async fn slow(delay: Duration) -> Self {
        Self::build(&[], (200, "{}"), delay, None).await
    }

    /// Lets `check` override the answer (for example, to refuse a bad signature).
    pub async fn checking(
        check: impl Fn(&Recorded) -> Option<(u16, String)> + Send + Sync + 'static,
    ) -> Self {
        Self::build(
            &[],
            (200, r#"{"errcode":0,"errmsg":"ok"}"#),
            Duration::ZERO,
            Some(Arc::new(check)),
        )
        .await
    }

    async fn build(
        replies: &[(u16, &str)],
        default: (u16, &str),
        delay: Duration,
        check: Option<Check>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            replies: Mutex::new(replies.iter().map(|(s, b)| (*s, (*b).to_owned())).collect()),
            default: (default.0, default.1.to_owned()),
            delay,
            check,
        });
        let s = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(Arc::clone(&s), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.requests.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let recorded = Recorded {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        at: Instant::now(),
    };
    let checked = shared.check.as_ref().and_then(|c| c(&recorded));
    shared.requests.lock().unwrap().push(recorded);
    let (status, body) = checked.unwrap_or_else(|| {
        shared
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| shared.default.clone())
    });
    if !shared.delay.is_zero() {
        tokio::time::sleep(shared.delay).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

/// A tracing subscriber writing into a shared buffer; keep the guard alive while capturing.
pub(crate) fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = Arc::clone(&buffer);
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || BufferWriter(Arc::clone(&writer)))
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufferWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
