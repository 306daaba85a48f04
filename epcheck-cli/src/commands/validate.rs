//! `epcheck validate`: check the config file, and that the token and CA files are there.

use std::path::Path;

use k8s_endpoints::{TokenLocation, read_token};
use serde::Serialize;

use crate::cli::{OutputFormat, ValidateArgs};
use crate::config::{ConfigError, Diagnostic, Environment, Loaded, Severity, load};
use crate::report::count;

#[derive(Serialize)]
struct ValidateReport<'a> {
    file: String,
    valid: bool,
    services: usize,
    targets: usize,
    errors: &'a [Diagnostic],
    warnings: &'a [Diagnostic],
}

/// Runs `validate` on the file at `path`; returns the exit code (0 valid, 2 invalid).
pub fn run(
    args: &ValidateArgs,
    path: &Path,
    cwd: &Path,
    env: &dyn Environment,
) -> anyhow::Result<u8> {
    let (errors, mut warnings, counts) = match load(path, env) {
        Ok(Loaded { config, warnings }) => {
            let counts = (config.services.len(), config.target_count());
            let mut warnings = warnings;
            let (errors, more): (Vec<_>, Vec<_>) = check_files(&config, cwd)
                .into_iter()
                .partition(|d| d.severity == Severity::Error);
            warnings.extend(more);
            (errors, warnings, counts)
        }
        Err(ConfigError::Invalid {
            errors, warnings, ..
        }) => (errors, warnings, (0, 0)),
        Err(e) => return Err(e.into()),
    };
    warnings.sort_by_key(|d| d.line);
    let fails_strict = args.strict && !warnings.is_empty();
    let valid = errors.is_empty() && !fails_strict;
    match args.output {
        OutputFormat::Json => {
            let report = ValidateReport {
                file: path.display().to_string(),
                valid,
                services: counts.0,
                targets: counts.1,
                errors: &errors,
                warnings: &warnings,
            };
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        OutputFormat::Text => {
            for d in errors.iter().chain(&warnings) {
                println!("{}", d.display_with(path));
            }
            if errors.is_empty() {
                println!(
                    "{}: valid ({}, {}, {}{})",
                    path.display(),
                    count(counts.0, "service"),
                    count(counts.1, "target"),
                    count(warnings.len(), "warning"),
                    if args.strict && !warnings.is_empty() {
                        "; --strict fails on warnings"
                    } else {
                        ""
                    }
                );
            } else {
                println!(
                    "{}: invalid ({})",
                    path.display(),
                    count(errors.len(), "error")
                );
            }
        }
    }
    Ok(if valid { 0 } else { 2 })
}

/// Checks that the token file and the CA file can be read (and that the CA file holds a
/// certificate).
///
/// A file the config names explicitly (`token_file: /path`, `ca_file: /path`) that cannot be
/// used is an **error**: it is a typo or a missing mount, and the daemon would fail. A token at
/// a default location (`token_file` empty: the service-account token; `token_file: default`:
/// `./token` or `./conf/token`) that is missing is a **warning**, because `validate` is often
/// run off-cluster before those files exist; `--strict` fails on it like on any warning.
fn check_files(config: &crate::config::Config, cwd: &Path) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let location = TokenLocation::from_setting(&config.token_file);
    if let Err(e) = read_token(&location, cwd) {
        let (severity, hint) = match location {
            TokenLocation::Path(_) => (
                Severity::Error,
                "the daemon needs it to talk to the ApiServer: fix the path or create the file",
            ),
            _ => (
                Severity::Warning,
                "needed to talk to the ApiServer; a default location, so only a warning here \
                 (`validate --strict` fails)",
            ),
        };
        out.push(Diagnostic {
            severity,
            key: "token_file".into(),
            line: None,
            message: format!("{e} ({hint})"),
            kind: None,
        });
    }
    if let Some(ca) = &config.ca_file {
        let problem = match std::fs::read(ca) {
            Err(e) => Some(format!(
                "cannot read {}: {e} (fix the path, or remove ca_file to use the \
                 service-account CA)",
                ca.display()
            )),
            Ok(bytes) => k8s_endpoints::client::parse_ca_pem(ca, &bytes)
                .err()
                .map(|e| e.to_string()),
        };
        if let Some(message) = problem {
            out.push(Diagnostic {
                severity: Severity::Error,
                key: "ca_file".into(),
                line: None,
                message,
                kind: None,
            });
        }
    }
    out
}
