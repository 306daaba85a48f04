//! What is wrong with a config file, and where.

use std::fmt;
use std::path::{Path, PathBuf};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as intended (`validate --strict` fails on these).
    Warning,
}

/// One finding: the key path, the line when known, and what is wrong and expected.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Key path such as `service_healthcheck_list.redis.iplist[1].ip` (empty for the whole file).
    pub key: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, and what is expected.
    pub message: String,
    /// The kind of a finding that can repeat once per target (a loopback address, say), so
    /// that logs show one line per kind ([`log_warnings`]); `None` for one-off findings.
    #[serde(skip)]
    pub kind: Option<&'static str>,
}

impl Diagnostic {
    /// Formats the finding with the file name in front, compiler style:
    /// `config.yaml:12: service_info.redis.name: ...`.
    pub fn display_with<'a>(&'a self, file: &'a Path) -> impl fmt::Display + 'a {
        DiagnosticInFile { diag: self, file }
    }
}

struct DiagnosticInFile<'a> {
    diag: &'a Diagnostic,
    file: &'a Path,
}

impl fmt::Display for DiagnosticInFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.diag;
        write!(f, "{}", self.file.display())?;
        if let Some(line) = d.line {
            write!(f, ":{line}")?;
        }
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: ")?;
        if !d.key.is_empty() {
            write!(f, "{}: ", d.key)?;
        }
        f.write_str(&d.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No `-f` was given and none of the default places has a file.
    #[error(
        "no config file found; tried {}. Pass one with -f/--config or EPCHECK_CONFIG",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// Every place looked at, in order.
        tried: Vec<PathBuf>,
    },
    /// The file exists but cannot be read. The I/O error is part of the message (not a
    /// `source`), so that a printed chain does not say it twice.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file was read and has errors (all of them are listed).
    #[error("{}", render_invalid(file, errors))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every error found.
        errors: Vec<Diagnostic>,
        /// Warnings found along the way.
        warnings: Vec<Diagnostic>,
    },
}

/// How many examples a grouped warning line shows.
const EXAMPLES: usize = 3;

/// Logs `warnings` of `file` at warning level: one line per finding, except that findings of
/// one [`kind`](Diagnostic::kind) become one line with their count and the first three (a
/// config of 10,000 loopback targets logs one line, not 10,000). `validate` prints them all.
pub fn log_warnings(warnings: &[Diagnostic], file: &Path) {
    for line in warning_lines(warnings, file) {
        tracing::warn!("{line}");
    }
}

/// The lines [`log_warnings`] logs: a warning of a kind that repeats (one per target), or the
/// same message for several keys (one per service), is one line with a count and the first
/// examples; the rest one line each, in the order first found.
pub fn warning_lines(warnings: &[Diagnostic], file: &Path) -> Vec<String> {
    #[derive(PartialEq)]
    enum Group<'a> {
        Kind(&'static str),
        Message(&'a str),
    }
    let mut groups: Vec<(Group<'_>, Vec<&Diagnostic>)> = Vec::new();
    for w in warnings {
        let group = match w.kind {
            Some(kind) => Group::Kind(kind),
            None => Group::Message(&w.message),
        };
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, list)) => list.push(w),
            None => groups.push((group, vec![w])),
        }
    }
    let mut out = Vec::new();
    for (group, list) in groups {
        if let [only] = list.as_slice() {
            out.push(only.display_with(file).to_string());
            continue;
        }
        let more = list.len().saturating_sub(EXAMPLES);
        let more = if more > 0 {
            format!("; and {more} more (`epcheck validate` lists them all)")
        } else {
            String::new()
        };
        let at = |d: &Diagnostic| d.line.map(|l| format!("line {l}: ")).unwrap_or_default();
        let line = match group {
            Group::Kind(kind) => {
                let examples: Vec<String> = list
                    .iter()
                    .take(EXAMPLES)
                    .map(|d| format!("{}{}: {}", at(d), d.key, d.message))
                    .collect();
                format!(
                    "{}: warning: {} findings of one kind ({kind}), e.g. {}{more}",
                    file.display(),
                    list.len(),
                    examples.join("; "),
                )
            }
            Group::Message(message) => {
                let examples: Vec<String> = list
                    .iter()
                    .take(EXAMPLES)
                    .map(|d| format!("{}{}", at(d), d.key))
                    .collect();
                format!(
                    "{}: warning: {} keys: {message}; e.g. {}{more}",
                    file.display(),
                    list.len(),
                    examples.join("; "),
                )
            }
        };
        out.push(line);
    }
    out
}

fn render_invalid(file: &Path, errors: &[Diagnostic]) -> String {
    let mut out = format!(
        "{} has {} error{}:",
        file.display(),
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        out.push_str(&format!("\n  {}", e.display_with(file)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_file_line_key_and_message() {
        let d = Diagnostic {
            severity: Severity::Error,
            key: "redis.ipport".into(),
            line: Some(7),
            message: "expected host:port".into(),
            kind: None,
        };
        assert_eq!(
            d.display_with(Path::new("c.yaml")).to_string(),
            "c.yaml:7: error: redis.ipport: expected host:port"
        );
    }

    #[test]
    fn not_found_lists_every_place() {
        let e = ConfigError::NotFound {
            tried: vec!["./config.yaml".into(), "./config/config.yaml".into()],
        };
        let s = e.to_string();
        assert!(s.contains("./config.yaml, ./config/config.yaml"), "{s}");
    }

    #[test]
    fn warnings_of_one_kind_are_one_line_with_a_count_and_three_examples() {
        let w = |kind, line: usize| Diagnostic {
            severity: Severity::Warning,
            key: format!("service_healthcheck_list.web.iplist[{line}].ip"),
            line: Some(line),
            message: format!("127.0.0.{line} is a loopback address"),
            kind,
        };
        let loopback = Some("addresses the ApiServer rejects in Endpoints");
        let mut all: Vec<Diagnostic> = (1..=5).map(|l| w(loopback, l)).collect();
        all.push(w(None, 9));
        all.push(w(Some("addresses listed twice in one service"), 7));
        let lines = warning_lines(&all, Path::new("c.yaml"));
        assert_eq!(lines.len(), 3, "{lines:#?}");
        assert!(lines[1].starts_with("c.yaml:9: warning:"), "{}", lines[1]);
        assert!(lines[2].starts_with("c.yaml:7: warning:"), "{}", lines[2]);
        let grouped = &lines[0];
        assert!(
            grouped.starts_with(
                "c.yaml: warning: 5 findings of one kind (addresses the ApiServer rejects in Endpoints), e.g. line 1: "
            ),
            "{grouped}"
        );
        assert!(grouped.contains("127.0.0.3 is a loopback") && !grouped.contains("127.0.0.4"));
        assert!(grouped.ends_with("and 2 more (`epcheck validate` lists them all)"));
    }

    #[test]
    fn the_same_warning_for_many_keys_is_one_line() {
        let w = |service: usize| Diagnostic {
            severity: Severity::Warning,
            key: format!("service_healthcheck_list.s{service}.port"),
            line: Some(service * 10),
            message: "port 0 disables the TCP probe".to_owned(),
            kind: None,
        };
        let mut all: Vec<Diagnostic> = (1..=1000).map(w).collect();
        all.push(Diagnostic {
            message: "another warning".to_owned(),
            ..w(2000)
        });
        let lines = warning_lines(&all, Path::new("c.yaml"));
        assert_eq!(lines.len(), 2, "{lines:#?}");
        assert_eq!(
            lines[0],
            "c.yaml: warning: 1000 keys: port 0 disables the TCP probe; e.g. line 10: \
             service_healthcheck_list.s1.port; line 20: service_healthcheck_list.s2.port; line 30: \
             service_healthcheck_list.s3.port; and 997 more (`epcheck validate` lists them all)"
        );
        assert_eq!(
            lines[1],
            "c.yaml:20000: warning: service_healthcheck_list.s2000.port: another warning"
        );
    }
}
