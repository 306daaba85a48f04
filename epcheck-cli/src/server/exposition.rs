//! The `/metrics` body: OpenMetrics text from `prometheus-client` for scrapers that ask for it
//! (Prometheus does), the Prometheus text format 0.0.4 for everyone else.
//!
//! `prometheus-client` only writes OpenMetrics. The two formats differ, for the families epcheck
//! has, in a few lines only: OpenMetrics names a counter family without its `_total` suffix
//! (`# TYPE epcheck_probes counter`, samples `epcheck_probes_total`), has `# UNIT` lines and
//! ends with `# EOF`. [`TextLines`] rewrites those line by line; samples are the same in both.
//!
//! # Streamed, in bounded memory
//!
//! At 100,000 targets the page is about 21 MB. [`stream`] never holds it whole: the registry is
//! encoded on a blocking thread into chunks of [`CHUNK`] bytes that go to the client as they
//! are made, at most [`QUEUE`] chunks ahead of it, converted to the Prometheus text format on
//! the way when that is the format asked for. So a scrape costs a few hundred KiB whatever the
//! page's size (SPEC §11; `tests/scrape.rs` pins it on the real binary).
//!
//! While it encodes a family, `prometheus-client` holds that family's read lock, and a series
//! created meanwhile (a new ApiServer status code, say) waits for it. So the encoder never waits
//! long for a slow client: once it has waited [`PATIENCE`] in all, it buffers the rest of that
//! page (as much memory as an unstreamed scrape) and hands it over after the locks are free. At
//! most [`MAX_SCRAPES`] pages are encoded at once; more scrapes wait for their turn.

use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tokio::runtime::Handle;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

/// The body of a `/metrics` answer: chunks as they are encoded, or an error that cuts the
/// answer short (so a scraper never takes a partial page for a whole one).
pub type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Size of one chunk of a streamed page (a line is never split: a chunk may be one line longer).
pub const CHUNK: usize = 64 * 1024;
/// Chunks encoded ahead of what the client has taken.
pub const QUEUE: usize = 4;
/// Longest time in all that the encoding of one page waits for its client (holding a family's
/// read lock) before it buffers the rest.
pub const PATIENCE: Duration = Duration::from_secs(1);
/// Pages encoded at once; further scrapes wait.
pub const MAX_SCRAPES: usize = 2;

/// `Content-Type` of an OpenMetrics 1.0 answer.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `Content-Type` of a Prometheus text 0.0.4 answer.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The exposition formats `/metrics` can answer with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text (what Prometheus asks for first).
    OpenMetrics,
    /// Prometheus text 0.0.4 (the default).
    PrometheusText,
}

impl Format {
    /// Picks the format from an `Accept` header, as Go's `client_golang` does: OpenMetrics when
    /// `application/openmetrics-text` is accepted at least as much as `text/plain` (Prometheus
    /// asks for it first), Prometheus text otherwise, including no header and `*/*` — so that
    /// `curl -s …/metrics | promtool check metrics` works (promtool 2.x reads the text format).
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let (mut om, mut text) = (None::<f32>, None::<f32>);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let slot = match media.as_str() {
                "application/openmetrics-text" => &mut om,
                "text/plain" => &mut text,
                _ => continue,
            };
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        match (om, text) {
            (Some(o), t) if o > 0.0 && o >= t.unwrap_or(0.0) => Format::OpenMetrics,
            _ => Format::PrometheusText,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }
}

/// Encodes `registry` in `format`, whole (for tests and small registries; `/metrics` streams).
pub fn render(registry: &Registry, format: Format) -> Result<String, fmt::Error> {
    let mut out = String::with_capacity(4096);
    match format {
        Format::OpenMetrics => encode(&mut out, registry)?,
        Format::PrometheusText => {
            let mut text = TextLines::new(&mut out);
            encode(&mut text, registry)?;
            text.finish()?;
        }
    }
    Ok(out)
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4 (see [`TextLines`]).
pub fn to_prometheus_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    let mut text = TextLines::new(&mut out);
    // Writing to a `String` cannot fail.
    let _ = text.write_str(om).and_then(|()| text.finish());
    out
}

/// Rewrites OpenMetrics text written into it as Prometheus text 0.0.4, line by line, into
/// `out`: counter families get their `_total` name, `info` families become gauges named
/// `…_info`, `unknown` becomes `untyped`, and the `# UNIT` and `# EOF` lines go. Other lines
/// are copied. A `# HELP` line waits for the `# TYPE` line that follows it, which decides its
/// name. Call [`finish`](Self::finish) at the end.
pub struct TextLines<W> {
    out: W,
    /// The start of a line whose end has not been written yet.
    partial: String,
    /// A `# HELP` line waiting for its family's `# TYPE` line.
    help: Option<String>,
}

impl<W: fmt::Write> TextLines<W> {
    /// A converter writing into `out`.
    pub fn new(out: W) -> Self {
        TextLines {
            out,
            partial: String::new(),
            help: None,
        }
    }

    /// Writes what is pending (a last line without its newline, a `# HELP` line without its
    /// `# TYPE`) and returns the writer.
    pub fn finish(mut self) -> Result<W, fmt::Error> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line)?;
        }
        self.flush_help()?;
        Ok(self.out)
    }

    fn flush_help(&mut self) -> fmt::Result {
        match self.help.take() {
            Some(help) => writeln!(self.out, "{help}"),
            None => Ok(()),
        }
    }

    fn line(&mut self, line: &str) -> fmt::Result {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            return Ok(());
        }
        if line.starts_with("# HELP ") {
            self.flush_help()?;
            self.help = Some(line.to_owned());
            return Ok(());
        }
        if let Some((name, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        {
            let renamed = match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                "info" => format!("{name}_info"),
                _ => name.to_owned(),
            };
            if let Some(help) = self.help.take() {
                let rest = help.strip_prefix("# HELP ").unwrap_or(&help);
                match rest.split_once(' ') {
                    Some((n, text)) if n == name => writeln!(self.out, "# HELP {renamed} {text}")?,
                    None if rest == name => writeln!(self.out, "# HELP {renamed} ")?,
                    _ => writeln!(self.out, "{help}")?,
                }
            }
            let kind = match kind {
                "info" | "stateset" => "gauge",
                "unknown" => "untyped",
                other => other,
            };
            return writeln!(self.out, "# TYPE {renamed} {kind}");
        }
        self.flush_help()?;
        writeln!(self.out, "{line}")
    }
}

impl<W: fmt::Write> fmt::Write for TextLines<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some((line, after)) = rest.split_once('\n') {
            if self.partial.is_empty() {
                self.line(line)?;
            } else {
                self.partial.push_str(line);
                let whole = std::mem::take(&mut self.partial);
                self.line(&whole)?;
            }
            rest = after;
        }
        self.partial.push_str(rest);
        Ok(())
    }
}

/// Where a streamed page's text goes: chunks of [`CHUNK`] bytes to the client, at most
/// [`QUEUE`] ahead of it, waiting for it [`PATIENCE`] at most in all.
struct Chunks {
    tx: mpsc::Sender<io::Result<Bytes>>,
    runtime: Handle,
    buf: String,
    patience: Duration,
    /// Chunks kept once the patience is spent, sent after the encoding.
    held: Vec<Bytes>,
}

impl Chunks {
    fn send(&mut self) -> fmt::Result {
        if self.buf.is_empty() {
            return Ok(());
        }
        // A copy of exactly the chunk's size; the buffer is reused (it stops growing after the
        // first chunks).
        let chunk = Bytes::copy_from_slice(self.buf.as_bytes());
        self.buf.clear();
        if !self.held.is_empty() {
            self.held.push(chunk);
            return Ok(());
        }
        let chunk = match self.tx.try_send(Ok(chunk)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(_)) => return Err(fmt::Error),
            Err(TrySendError::Full(chunk)) => chunk,
        };
        let waited = Instant::now();
        let room = self
            .runtime
            .block_on(tokio::time::timeout(self.patience, self.tx.reserve()));
        self.patience = self.patience.saturating_sub(waited.elapsed());
        match room {
            Ok(Ok(permit)) => {
                permit.send(chunk);
                Ok(())
            }
            Ok(Err(_closed)) => Err(fmt::Error),
            Err(_elapsed) => {
                if let Ok(chunk) = chunk {
                    self.held.push(chunk);
                }
                Ok(())
            }
        }
    }

    /// Sends the rest, the held chunks included (no registry lock is held any more).
    fn finish(mut self) {
        if !self.buf.is_empty() {
            self.held.push(Bytes::copy_from_slice(self.buf.as_bytes()));
        }
        for chunk in self.held {
            if self.tx.blocking_send(Ok(chunk)).is_err() {
                return;
            }
        }
    }
}

impl fmt::Write for Chunks {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.buf.push_str(s);
        if self.buf.len() >= CHUNK && self.buf.ends_with('\n') {
            self.send()?;
        }
        Ok(())
    }
}

/// Scrapes being encoded, at most [`MAX_SCRAPES`].
#[derive(Clone, Debug)]
pub struct Scrapes(Arc<Semaphore>);

impl Default for Scrapes {
    fn default() -> Self {
        Scrapes(Arc::new(Semaphore::new(MAX_SCRAPES)))
    }
}

/// Streams `registry` in `format` (see the module docs). Must be called within a Tokio
/// runtime.
pub fn stream(registry: Arc<Registry>, format: Format, scrapes: &Scrapes) -> Body {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(QUEUE);
    let runtime = Handle::current();
    let turn = Arc::clone(&scrapes.0);
    tokio::task::spawn_blocking(move || {
        let Ok(_turn) = runtime.block_on(turn.acquire_owned()) else {
            return;
        };
        let failed = tx.clone();
        let mut chunks = Chunks {
            tx,
            runtime,
            buf: String::with_capacity(CHUNK),
            patience: PATIENCE,
            held: Vec::new(),
        };
        let encoded = match format {
            Format::OpenMetrics => encode(&mut chunks, &registry).map(|()| chunks),
            Format::PrometheusText => {
                let mut text = TextLines::new(chunks);
                encode(&mut text, &registry).and_then(|()| text.finish())
            }
        };
        match encoded {
            Ok(chunks) => chunks.finish(),
            // The client left (nothing to tell), or encoding failed: cut the answer short.
            Err(fmt::Error) => {
                let _ = failed.try_send(Err(io::Error::other("encoding the metrics failed")));
            }
        }
    });
    let frames = futures::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((chunk.map(Frame::data), rx))
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use probe_core::Health;

    use super::*;

    #[test]
    fn negotiation_prefers_openmetrics_unless_text_is_asked_for() {
        use Format::*;
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            OpenMetrics
        );
        assert_eq!(Format::negotiate(None), PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), PrometheusText);
        assert_eq!(Format::negotiate(Some("text/plain")), PrometheusText);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4;q=0.9, */*;q=0.1")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, TEXT/PLAIN;q=0.8")),
            PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0, text/plain;q=0")),
            PrometheusText
        );
        assert_eq!(Format::negotiate(Some(";;,,q=x")), PrometheusText);
    }

    /// A registry with `targets` targets' series in 10 services: a page of about
    /// 250 bytes per target.
    fn big_registry(targets: usize) -> Arc<Registry> {
        let mut registry = Registry::default();
        let metrics = crate::metrics::Metrics::new();
        metrics.register(&mut registry);
        for s in 0..10 {
            let service = metrics.service(&format!("service-{s}"));
            for t in 0..targets / 10 {
                service
                    .target(&format!("backend-{t:05}"))
                    .set_health(Health::Up);
            }
        }
        Arc::new(registry)
    }

    async fn collect(body: Body) -> (Vec<usize>, Result<String, io::Error>) {
        let mut body = body;
        let mut sizes = Vec::new();
        let mut page = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        sizes.push(data.len());
                        page.extend_from_slice(&data);
                    }
                }
                Err(e) => return (sizes, Err(e)),
            }
        }
        (sizes, Ok(String::from_utf8(page).unwrap_or_default()))
    }

    #[test]
    fn text_lines_give_the_same_text_however_the_writes_are_split() {
        let om = "# HELP a_probes Probes.\n# TYPE a_probes counter\na_probes_total{x=\"1\"} 3\n\
                  # HELP a_build Build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n# EOF\n";
        let whole = to_prometheus_text(om);
        for cut in 0..om.len() {
            let mut out = String::new();
            let mut text = TextLines::new(&mut out);
            text.write_str(&om[..cut]).unwrap();
            text.write_str(&om[cut..]).unwrap();
            text.finish().unwrap();
            assert_eq!(out, whole, "cut at {cut}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_page_is_the_whole_page_in_bounded_chunks() {
        let registry = big_registry(3_000);
        let scrapes = Scrapes::default();
        for format in [Format::OpenMetrics, Format::PrometheusText] {
            let whole = render(&registry, format).unwrap();
            let (sizes, page) = collect(stream(Arc::clone(&registry), format, &scrapes)).await;
            let page = page.unwrap();
            assert_eq!(page, whole, "{format:?}");
            assert!(sizes.len() >= whole.len() / CHUNK, "{sizes:?}");
            // A chunk ends at a line's end, so it may pass CHUNK by one line.
            assert!(sizes.iter().all(|&n| n <= CHUNK + 512), "{sizes:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_stalls_still_gets_the_whole_page() {
        let registry = big_registry(3_000);
        let whole = render(&registry, Format::OpenMetrics).unwrap();
        let body = stream(
            Arc::clone(&registry),
            Format::OpenMetrics,
            &Scrapes::default(),
        );
        // The encoder waits PATIENCE at most, then holds the rest until the client reads.
        tokio::time::sleep(PATIENCE + Duration::from_millis(300)).await;
        let (_, page) = collect(body).await;
        assert_eq!(page.unwrap(), whole);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scrapes_that_are_abandoned_give_back_their_turn() {
        let registry = big_registry(3_000);
        let scrapes = Scrapes::default();
        for _ in 0..MAX_SCRAPES + 1 {
            let mut body = stream(Arc::clone(&registry), Format::PrometheusText, &scrapes);
            let first = body.frame().await;
            assert!(matches!(first, Some(Ok(_))));
            drop(body);
        }
        let whole = render(&registry, Format::PrometheusText).unwrap();
        let last = stream(Arc::clone(&registry), Format::PrometheusText, &scrapes);
        let (_, page) = tokio::time::timeout(Duration::from_secs(5), collect(last))
            .await
            .expect("a turn came free");
        assert_eq!(page.unwrap(), whole);
    }

    #[test]
    fn counters_units_and_eof_are_rewritten() {
        let om = "# HELP a_probes Probes.\n# TYPE a_probes counter\na_probes_total{x=\"1\"} 3\n\
                  # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds gauge\n# UNIT a_wait_seconds seconds\n\
                  a_wait_seconds 1.5\n# HELP a_build Build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_probes_total Probes.\n# TYPE a_probes_total counter\na_probes_total{x=\"1\"} 3\n\
             # HELP a_wait_seconds Wait.\n# TYPE a_wait_seconds gauge\na_wait_seconds 1.5\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n"
        );
    }
}
