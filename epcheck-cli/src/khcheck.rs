//! Kuberhealthy mode (SPEC §8.3): `epcheck khcheck` as a Kuberhealthy external check.
//!
//! Kuberhealthy starts the check pod with three variables: `KH_REPORTING_URL` (where to POST
//! the result), `KH_RUN_UUID` (sent back, exactly, as the `kh-run-uuid` header; a report with
//! another UUID is rejected) and `KH_CHECK_RUN_DEADLINE` (Unix seconds; a report after it is
//! lost). The check probes every target once and POSTs
//!
//! ```json
//! {"OK": false, "Errors": ["redis/node-02 198.51.100.11:38080: connection refused"]}
//! ```
//!
//! (`{"OK": true, "Errors": []}` when every target is up). The keys are Kuberhealthy v2's
//! spelling; v3 decodes keys case-insensitively, so the same body serves both. At most
//! [`MAX_ERRORS`] errors are listed; the last one then says how many more there were.
//!
//! Time: everything finishes before the deadline. The probe round gets the time left minus a
//! reserve for the report (half of it, between 1.5 and 3 s); the report's requests must end
//! [`DEADLINE_MARGIN`] before the deadline; with less than [`MIN_REMAINING`] left, nothing is
//! tried and an error says so at once.
//!
//! ```no_run
//! # async fn demo(config: epcheck::config::Config) -> anyhow::Result<u8> {
//! use epcheck::khcheck::{KhEnv, run_khcheck};
//!
//! let env = KhEnv::from_env(&|name| std::env::var(name).ok())?;
//! run_khcheck(&config, &env).await
//! # }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::config::Config;
use crate::notify::{
    RetryPolicy, http_client, parse_url, post_json, quoted, redact, retryable_status,
};
use crate::round::{ServiceProbes, probe_all};

/// With less time than this before the deadline, no report is attempted.
pub const MIN_REMAINING: Duration = Duration::from_secs(1);

/// The report's last request ends at least this long before the deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(500);

/// Errors listed in one report at most.
pub const MAX_ERRORS: usize = 100;

/// Most of the time left kept back from the probe round for the report (it keeps half the time
/// left, at least [`MIN_REMAINING`] + [`DEADLINE_MARGIN`], at most this).
const REPORT_RESERVE: Duration = Duration::from_secs(3);

/// Report attempts at most (connect errors, timeouts, 5xx and 429 are retried while time is
/// left).
const REPORT_ATTEMPTS: u32 = 3;

/// Longest single report request.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The header carrying the run's UUID, spelled as Kuberhealthy reads it.
const UUID_HEADER: &str = "kh-run-uuid";

const VARIABLES: [&str; 3] = ["KH_REPORTING_URL", "KH_RUN_UUID", "KH_CHECK_RUN_DEADLINE"];

/// What Kuberhealthy told the check pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KhEnv {
    /// `KH_REPORTING_URL`: where to POST the report.
    pub reporting_url: String,
    /// `KH_RUN_UUID`: this run's id, sent back verbatim.
    pub run_uuid: String,
    /// `KH_CHECK_RUN_DEADLINE`: the report must arrive before this.
    pub deadline: SystemTime,
}

/// Why Kuberhealthy mode failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KhError {
    /// Variables missing or invalid.
    #[error(
        "{}; `epcheck khcheck` is meant to run as a Kuberhealthy external check, whose pod \
         Kuberhealthy starts with KH_REPORTING_URL, KH_RUN_UUID and KH_CHECK_RUN_DEADLINE set",
        problems.join("; ")
    )]
    Env {
        /// One entry per bad variable, each naming it.
        problems: Vec<String>,
    },
    /// The deadline is past or too close to send a report in time.
    #[error(
        "the Kuberhealthy deadline (KH_CHECK_RUN_DEADLINE) {when}: too close to send a report \
         (at least {} ms are needed); raise the check's spec.timeout",
        MIN_REMAINING.as_millis()
    )]
    Deadline {
        /// `is 400 ms away` or `passed 3 s ago`.
        when: String,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up TLS for the Kuberhealthy report")]
    Tls(#[from] probe_core::Error),
    /// No reply accepted the report before the deadline.
    #[error("could not deliver the report to {url}: {message}")]
    Send {
        /// The reporting URL without its query.
        url: String,
        /// The last attempt's error.
        message: String,
    },
    /// Kuberhealthy answered with an error status.
    #[error("Kuberhealthy at {url} refused the report: HTTP {status}{body}")]
    Rejected {
        /// The reporting URL without its query.
        url: String,
        /// The status code.
        status: u16,
        /// `: <first line of the reply>` or empty.
        body: String,
    },
}

/// The report body, with Kuberhealthy's key spelling.
#[derive(Debug, Serialize)]
struct Report<'a> {
    #[serde(rename = "OK")]
    ok: bool,
    #[serde(rename = "Errors")]
    errors: &'a [String],
}

impl KhEnv {
    /// Reads the three variables through `get` (`|name| std::env::var(name).ok()` in the
    /// binary).
    ///
    /// # Errors
    ///
    /// [`KhError::Env`] naming every variable that is missing, empty or invalid.
    pub fn from_env(get: &dyn Fn(&str) -> Option<String>) -> Result<Self, KhError> {
        let [url_var, uuid_var, deadline_var] = VARIABLES;
        let mut problems = Vec::new();
        let mut read = |name: &str| match get(name) {
            Some(v) if !v.trim().is_empty() => Some(v),
            Some(_) => {
                problems.push(format!("{name} is empty"));
                None
            }
            None => {
                problems.push(format!("{name} is not set"));
                None
            }
        };
        let url = read(url_var);
        let uuid = read(uuid_var);
        let deadline = read(deadline_var);
        if let Some(u) = &url
            && let Err(e) = parse_url(u.trim())
        {
            problems.push(format!("{url_var} {e}"));
        }
        if let Some(u) = &uuid
            && HeaderValue::from_str(u).is_err()
        {
            problems.push(format!("{uuid_var} cannot be sent as an HTTP header"));
        }
        let deadline = deadline.and_then(|d| match d.trim().parse::<u64>() {
            Ok(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
            Err(_) => {
                problems.push(format!(
                    "{deadline_var} is {d:?}, not a Unix time in whole seconds"
                ));
                None
            }
        });
        match (url, uuid, deadline) {
            (Some(url), Some(run_uuid), Some(deadline)) if problems.is_empty() => Ok(Self {
                reporting_url: url.trim().to_owned(),
                run_uuid,
                deadline,
            }),
            _ => Err(KhError::Env { problems }),
        }
    }

    /// Time left before the deadline at `now`, if at least [`MIN_REMAINING`].
    ///
    /// # Errors
    ///
    /// [`KhError::Deadline`] when less is left.
    pub fn remaining(&self, now: SystemTime) -> Result<Duration, KhError> {
        match self.deadline.duration_since(now) {
            Ok(left) if left >= MIN_REMAINING => Ok(left),
            Ok(left) => Err(KhError::Deadline {
                when: format!("is {} ms away", left.as_millis()),
            }),
            Err(past) => Err(KhError::Deadline {
                when: format!("passed {} ms ago", past.duration().as_millis()),
            }),
        }
    }
}

/// POSTs `{"OK": ok, "Errors": errors}` to Kuberhealthy with the `kh-run-uuid` header, retrying
/// connect errors, timeouts, 5xx and 429 while time is left; every request ends
/// [`DEADLINE_MARGIN`] before the deadline.
///
/// # Errors
///
/// [`KhError::Deadline`] at once when less than [`MIN_REMAINING`] is left;
/// [`KhError::Rejected`] for a 4xx reply; [`KhError::Send`] when no attempt got through in time.
pub async fn report(env: &KhEnv, ok: bool, errors: Vec<String>) -> Result<(), KhError> {
    let left = env.remaining(SystemTime::now())?;
    let until = tokio::time::Instant::now() + left.saturating_sub(DEADLINE_MARGIN);
    let uri = parse_url(&env.reporting_url).map_err(|e| KhError::Env {
        problems: vec![format!("KH_REPORTING_URL {e}")],
    })?;
    let url = redact(&uri);
    let uuid = HeaderValue::from_str(&env.run_uuid).map_err(|_| KhError::Env {
        problems: vec!["KH_RUN_UUID cannot be sent as an HTTP header".to_owned()],
    })?;
    let headers = [(HeaderName::from_static(UUID_HEADER), uuid)];
    let body = serde_json::to_vec(&Report {
        ok,
        errors: &errors,
    })
    .map(Bytes::from)
    .map_err(|e| KhError::Send {
        url: url.clone(),
        message: format!("cannot encode the report: {e}"),
    })?;
    let client = http_client(left.min(ATTEMPT_TIMEOUT))?;
    let policy = RetryPolicy::default();
    let mut last = String::from("no time left for a request");
    let mut attempts = 0;
    while attempts < REPORT_ATTEMPTS {
        let budget = until.saturating_duration_since(tokio::time::Instant::now());
        if budget.is_zero() {
            break;
        }
        attempts += 1;
        let timeout = budget.min(ATTEMPT_TIMEOUT);
        match post_json(&client, &uri, &headers, body.clone(), timeout).await {
            Ok(reply) if reply.status.is_success() => {
                tracing::info!(url = %url, ok, errors = errors.len(), "reported to Kuberhealthy");
                return Ok(());
            }
            Ok(reply) if !retryable_status(reply.status) => {
                return Err(KhError::Rejected {
                    url,
                    status: reply.status.as_u16(),
                    body: quoted(&reply.body),
                });
            }
            Ok(reply) => last = format!("HTTP {}", reply.status),
            Err(e) => last = e.to_string(),
        }
        tracing::warn!(url = %url, attempt = attempts, error = %last, "report to Kuberhealthy failed");
        let pause = policy.backoff(attempts);
        if tokio::time::Instant::now() + pause >= until {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Err(KhError::Send {
        url,
        message: format!("{last} ({attempts} attempt(s) before the deadline)"),
    })
}

/// The report for one probe round: OK when every target is up, else one error per down target
/// (`redis/node-02 198.51.100.11:38080: connection refused`), at most [`MAX_ERRORS`].
pub fn summarize(round: &[ServiceProbes]) -> (bool, Vec<String>) {
    let down: Vec<String> = round
        .iter()
        .flat_map(|s| s.results.iter())
        .filter(|(_, o)| !o.up)
        .map(|(t, o)| match &o.error {
            Some(e) => format!("{t}: {e}"),
            None => format!("{t}: down"),
        })
        .collect();
    let ok = down.is_empty();
    let total = down.len();
    let mut errors: Vec<String> = down.into_iter().take(MAX_ERRORS).collect();
    if total > MAX_ERRORS {
        errors.truncate(MAX_ERRORS - 1);
        errors.push(format!(
            "… and {} more targets down",
            total - (MAX_ERRORS - 1)
        ));
    }
    (ok, errors)
}

/// `epcheck khcheck`: probes every target of `config` once within the deadline, reports to
/// Kuberhealthy, and returns exit code 0 once the report was delivered (whether it says OK or
/// not).
///
/// # Errors
///
/// A [`KhError`] (exit code 1) when the deadline is too close or the report was not delivered.
pub async fn run_khcheck(config: &Config, env: &KhEnv) -> anyhow::Result<u8> {
    let left = env.remaining(SystemTime::now())?;
    // The report needs at least MIN_REMAINING (plus its margin) once the probes are done.
    let reserve = (left / 2).clamp(MIN_REMAINING + DEADLINE_MARGIN, REPORT_RESERVE);
    let probe_budget = left.saturating_sub(reserve);
    let concurrency = crate::effective_concurrency(config.concurrency);
    let (ok, errors) =
        match tokio::time::timeout(probe_budget, probe_all(config, concurrency)).await {
            Ok(round) => summarize(&round),
            Err(_) => (
                false,
                vec![format!(
                    "epcheck: the probe round did not finish within {} ms, before the Kuberhealthy \
                 deadline; lower pingtimeout or raise the check's spec.timeout",
                    probe_budget.as_millis()
                )],
            ),
        };
    tracing::info!(
        targets = config.target_count(),
        ok,
        errors = errors.len(),
        "khcheck probe round done"
    );
    report(env, ok, errors).await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashMap;
    use std::time::Instant;

    use probe_core::{FailureKind, ProbeError, ProbeOutcome, Target};

    use super::*;
    use crate::notify::testing::Receiver;

    fn env_of(vars: &[(&str, &str)]) -> Result<KhEnv, KhError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KhEnv::from_env(&|k| map.get(k).cloned())
    }

    fn kh_env(url: String, in_ms: u64) -> KhEnv {
        KhEnv {
            reporting_url: url,
            run_uuid: "0c6a4f9e-3b1d-4c7e-9a51-2f7d8e6b1a90".into(),
            deadline: SystemTime::now() + Duration::from_millis(in_ms),
        }
    }

    #[test]
    fn missing_variables_are_each_named() {
        let e = env_of(&[]).unwrap_err().to_string();
        for name in VARIABLES {
            assert!(e.contains(&format!("{name} is not set")), "{e}");
        }
        assert!(e.contains("Kuberhealthy external check"), "{e}");

        let e = env_of(&[
            ("KH_REPORTING_URL", "ftp://kh/"),
            ("KH_RUN_UUID", " "),
            ("KH_CHECK_RUN_DEADLINE", "soon"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("KH_REPORTING_URL must start with http://"),
            "{e}"
        );
        assert!(e.contains("KH_RUN_UUID is empty"), "{e}");
        assert!(
            e.contains("KH_CHECK_RUN_DEADLINE is \"soon\", not a Unix time"),
            "{e}"
        );
    }

    #[test]
    fn variables_are_read() {
        let url = "http://kuberhealthy.kuberhealthy.svc/check";
        let vars = [
            ("KH_REPORTING_URL", url),
            ("KH_RUN_UUID", "abc-123"),
            ("KH_CHECK_RUN_DEADLINE", "1700000000"),
        ];
        let env = env_of(&vars).unwrap();
        let deadline = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!((env.reporting_url.as_str(), env.deadline), (url, deadline));
        assert_eq!(env.run_uuid, "abc-123");
    }

    #[tokio::test]
    async fn the_report_has_the_exact_header_and_keys() {
        let rx = Receiver::start(&[], (200, "")).await;
        let env = kh_env(rx.url("/externalCheckStatusReport"), 5_000);
        let errors = vec!["redis/node-02 198.51.100.11:38080: connection refused".to_owned()];
        report(&env, false, errors.clone()).await.unwrap();
        let got = rx.requests();
        assert_eq!(got.len(), 1);
        let r = &got[0];
        assert_eq!(r.method, http::Method::POST);
        assert_eq!(r.uri.path(), "/externalCheckStatusReport");
        assert_eq!(r.header("kh-run-uuid"), Some(env.run_uuid.as_str()));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            std::str::from_utf8(&r.body).unwrap(),
            r#"{"OK":false,"Errors":["redis/node-02 198.51.100.11:38080: connection refused"]}"#
        );
        assert!(SystemTime::now() < env.deadline);

        report(&env, true, Vec::new()).await.unwrap();
        assert_eq!(
            rx.requests()[1].json(),
            serde_json::json!({"OK": true, "Errors": []})
        );
    }

    #[tokio::test]
    async fn a_close_or_past_deadline_fails_fast() {
        let rx = Receiver::start(&[], (200, "")).await;
        let start = Instant::now();
        let e = report(&kh_env(rx.url("/"), 500), true, Vec::new())
            .await
            .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        assert!(matches!(e, KhError::Deadline { .. }), "{e}");
        assert!(e.to_string().contains("ms away"), "{e}");
        let mut past = kh_env(rx.url("/"), 0);
        past.deadline = SystemTime::now() - Duration::from_secs(3);
        let e = report(&past, true, Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("passed"), "{e}");
        assert!(rx.requests().is_empty());
    }

    #[tokio::test]
    async fn a_hanging_receiver_cannot_hold_the_report_past_the_deadline() {
        let rx = Receiver::slow(Duration::from_secs(30)).await;
        let env = kh_env(rx.url("/"), 1_800);
        let start = Instant::now();
        let e = report(&env, true, Vec::new()).await.unwrap_err();
        let took = start.elapsed();
        assert!(took < Duration::from_millis(1_500), "{took:?}");
        assert!(matches!(e, KhError::Send { .. }), "{e}");
        assert!(SystemTime::now() < env.deadline);
    }

    #[tokio::test]
    async fn server_errors_are_retried_rejections_are_not() {
        let rx = Receiver::start(&[(503, ""), (400, "bad uuid")], (200, "")).await;
        let e = report(&kh_env(rx.url("/"), 5_000), true, Vec::new())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("refused the report: HTTP 400: bad uuid"), "{e}");
        assert_eq!(rx.requests().len(), 2, "503 retried, 400 not");
    }

    #[test]
    fn errors_are_capped() {
        let down = ProbeOutcome::down(
            Duration::ZERO,
            ProbeError::new(FailureKind::Refused, "connection refused"),
        );
        let results = (0..150)
            .map(|i| {
                let t = Target::new("web", format!("n{i}"), "127.0.0.2".parse().unwrap(), 80);
                (t, down.clone())
            })
            .collect();
        let (ok, errors) = summarize(&[ServiceProbes { index: 0, results }]);
        assert!(!ok);
        assert_eq!(errors.len(), MAX_ERRORS);
        assert_eq!(errors[0], "web/n0 127.0.0.2:80: connection refused");
        assert_eq!(errors[MAX_ERRORS - 1], "… and 51 more targets down");
        assert_eq!(summarize(&[]), (true, Vec::new()));
    }
}
