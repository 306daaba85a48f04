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
}
