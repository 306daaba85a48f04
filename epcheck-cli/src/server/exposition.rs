//! The `/metrics` body: OpenMetrics text from `prometheus-client` for scrapers that ask for it
//! (Prometheus does), the Prometheus text format 0.0.4 for everyone else.
//!
//! `prometheus-client` only writes OpenMetrics. The two formats differ, for the families epcheck
//! has, in a few lines only: OpenMetrics names a counter family without its `_total` suffix
//! (`# TYPE epcheck_probes counter`, samples `epcheck_probes_total`), has `# UNIT` lines and
//! ends with `# EOF`. [`to_prometheus_text`] rewrites those; samples are the same in both.

use std::collections::HashMap;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

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

/// Encodes `registry` in `format`.
pub fn render(registry: &Registry, format: Format) -> Result<String, std::fmt::Error> {
    let mut om = String::with_capacity(4096);
    encode(&mut om, registry)?;
    Ok(match format {
        Format::OpenMetrics => om,
        Format::PrometheusText => to_prometheus_text(&om),
    })
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families get their `_total`
/// name, `info` families become gauges named `…_info`, `unknown` becomes `untyped`, and the
/// `# UNIT` and `# EOF` lines go. Other lines are copied.
pub fn to_prometheus_text(om: &str) -> String {
    let types: HashMap<&str, &str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split_once(' '))
        .collect();
    let renamed = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") if !name.ends_with("_total") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_owned(),
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            out.push_str(&renamed(name));
            out.push(' ');
            out.push_str(help);
        } else if let Some((name, kind)) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.split_once(' '))
        {
            let kind = match kind {
                "info" | "stateset" => "gauge",
                "unknown" => "untyped",
                other => other,
            };
            out.push_str("# TYPE ");
            out.push_str(&renamed(name));
            out.push(' ');
            out.push_str(kind);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
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
