//! Reading the daemon's `/metrics` (Prometheus text).

use std::io;

/// `GET path` from `addr` with `Accept: text/plain`; returns the body of a `200`.
///
/// # Errors
/// On a connection error, a timeout or a status other than 200.
pub async fn get(addr: &str, path: &str) -> io::Result<String> {
    let answer = fixtures::http::get(addr, path, "text/plain").await?;
    if answer.status != 200 {
        return Err(io::Error::other(format!(
            "GET {addr}{path}: {}",
            answer.head.lines().next().unwrap_or("")
        )));
    }
    Ok(answer.body)
}

/// The sum of every sample of the metric `name` (all label sets) in a Prometheus text scrape.
pub fn sum(scrape: &str, name: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The sum of the samples of `name` whose labels contain `label` (e.g. `result="up"`).
pub fn sum_with(scrape: &str, name: &str, label: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_a_family_over_labels() {
        let text = "# TYPE epcheck_probes_total counter\n\
                    epcheck_probes_total{service=\"a\",result=\"up\"} 10\n\
                    epcheck_probes_total{service=\"b\",result=\"refused\"} 2\n\
                    epcheck_probes_total_created{service=\"a\"} 99\n";
        assert_eq!(sum(text, "epcheck_probes_total"), 12.0);
        assert_eq!(
            sum_with(text, "epcheck_probes_total", "result=\"up\""),
            10.0
        );
    }
}
