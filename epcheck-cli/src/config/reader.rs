//! Reading a parsed YAML tree key by key, collecting every problem with its key path and line.
//!
//! The file is parsed once into a `serde_yaml::Value` (the raw form); the checked types are then
//! built by walking that tree through a [`Reader`]. Walking by hand, rather than deriving
//! `Deserialize` for nested structs, is what lets `validate` report *every* error — a wrong type,
//! a missing key, an unknown key with the closest known one suggested — instead of stopping at
//! the first one serde meets.

use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::{Diagnostic, LineIndex, Severity};

/// Collects diagnostics while the checked config is built.
pub struct Reader {
    lines: LineIndex,
    /// Errors found so far.
    pub errors: Vec<Diagnostic>,
    /// Warnings found so far.
    pub warnings: Vec<Diagnostic>,
}

impl Reader {
    /// A reader for a file whose text was indexed into `lines`.
    pub fn new(lines: LineIndex) -> Self {
        Reader {
            lines,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// Records an error at `key`.
    pub fn error(&mut self, key: &str, message: impl Into<String>) {
        let d = self.diag(Severity::Error, key, message.into());
        self.errors.push(d);
    }

    /// Records a warning at `key`.
    pub fn warn(&mut self, key: &str, message: impl Into<String>) {
        let d = self.diag(Severity::Warning, key, message.into());
        self.warnings.push(d);
    }

    /// A warning of a `kind` that can repeat (once per target); logs group them.
    pub fn warn_kind(&mut self, kind: &'static str, key: &str, message: impl Into<String>) {
        let mut d = self.diag(Severity::Warning, key, message.into());
        d.kind = Some(kind);
        self.warnings.push(d);
    }

    fn diag(&self, severity: Severity, key: &str, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            key: key.to_string(),
            line: self.lines.line_of(key),
            message,
            kind: None,
        }
    }

    /// `value` as a mapping whose keys must be in `known`; unknown keys are errors with the
    /// closest known key suggested. `None` (after an error) when it is not a mapping; a null
    /// value is an empty mapping.
    pub fn mapping<'v>(
        &mut self,
        value: &'v Value,
        path: &str,
        known: &[&str],
    ) -> Option<&'v Mapping> {
        static EMPTY: std::sync::OnceLock<Mapping> = std::sync::OnceLock::new();
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => EMPTY.get_or_init(Mapping::new),
            other => {
                self.error(
                    path,
                    format!("expected a map of keys, found {}", describe(other)),
                );
                return None;
            }
        };
        for key in map.keys() {
            let name = key_text(key);
            if !known.contains(&name.as_str()) {
                let child = join(path, &name);
                let name = if name.is_empty() {
                    "\"\"".to_string()
                } else {
                    name
                };
                let msg = match closest(&name, known) {
                    Some(s) => format!("unknown key `{name}`; did you mean `{s}`?"),
                    None => format!(
                        "unknown key `{name}`; known keys here: {}",
                        known.join(", ")
                    ),
                };
                self.error(&child, msg);
            }
        }
        Some(map)
    }

    /// A map whose keys are free-form names (service keys), with values of any shape.
    pub fn named_entries<'v>(&mut self, value: &'v Value, path: &str) -> Vec<(String, &'v Value)> {
        match value {
            Value::Mapping(m) => m.iter().map(|(k, v)| (key_text(k), v)).collect(),
            Value::Null => Vec::new(),
            other => {
                self.error(
                    path,
                    format!("expected a map of names, found {}", describe(other)),
                );
                Vec::new()
            }
        }
    }

    /// `value` as a list; null is an empty list.
    pub fn sequence<'v>(&mut self, value: &'v Value, path: &str) -> Option<&'v [Value]> {
        match value {
            Value::Sequence(s) => Some(s),
            Value::Null => Some(&[]),
            other => {
                self.error(path, format!("expected a list, found {}", describe(other)));
                None
            }
        }
    }

    /// A scalar as text: strings as written, numbers and booleans printed back (the original
    /// format has `password: 123`). `None` for null or absent; an error for lists and maps.
    pub fn text(&mut self, value: Option<&Value>, path: &str) -> Option<String> {
        match value? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.error(
                    path,
                    format!("expected a single value, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// A non-negative integer within `min..=max`; strings of digits are accepted.
    pub fn integer(
        &mut self,
        value: Option<&Value>,
        path: &str,
        min: u64,
        max: u64,
    ) -> Option<u64> {
        let v = value?;
        let parsed = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                self.error(path, format!("{n} is out of range; expected {min}..={max}"));
                None
            }
            None => {
                self.error(
                    path,
                    format!(
                        "expected a whole number in {min}..={max}, found {}",
                        describe(v)
                    ),
                );
                None
            }
        }
    }

    /// A duration in milliseconds, > 0.
    pub fn millis(&mut self, value: Option<&Value>, path: &str) -> Option<Duration> {
        self.integer(value, path, 1, 86_400_000)
            .map(Duration::from_millis)
    }

    /// A number within `min..=max`.
    pub fn float(&mut self, value: Option<&Value>, path: &str, min: f64, max: f64) -> Option<f64> {
        let v = value?;
        let parsed = match v {
            Value::Null => return None,
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match parsed {
            Some(x) if x >= min && x <= max => Some(x),
            _ => {
                self.error(
                    path,
                    format!("expected a number in {min}..={max}, found {}", describe(v)),
                );
                None
            }
        }
    }

    /// A boolean (`true`/`false`).
    pub fn boolean(&mut self, value: Option<&Value>, path: &str) -> Option<bool> {
        match value? {
            Value::Null => None,
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" || s == "false" => Some(s == "true"),
            other => {
                self.error(
                    path,
                    format!("expected true or false, found {}", describe(other)),
                );
                None
            }
        }
    }

    /// One of `allowed` (case-sensitive), e.g. `keep|drop`.
    pub fn choice<'a>(
        &mut self,
        value: Option<&Value>,
        path: &str,
        allowed: &[&'a str],
    ) -> Option<&'a str> {
        let text = self.text(value, path)?;
        match allowed.iter().find(|a| **a == text) {
            Some(a) => Some(a),
            None => {
                let hint = closest(&text, allowed)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                self.error(
                    path,
                    format!(
                        "unsupported value {text:?}; expected one of: {}{hint}",
                        allowed.join(", ")
                    ),
                );
                None
            }
        }
    }
}

/// Looks `key` up in an optional mapping.
pub fn get<'v>(map: Option<&'v Mapping>, key: &str) -> Option<&'v Value> {
    map?.get(key)
}

/// `parent.key`, or `key` at the top; an empty key is shown as `""` so the path still names it.
pub fn join(parent: &str, key: &str) -> String {
    let key = if key.is_empty() { "\"\"" } else { key };
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// A mapping key as text.
pub fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "~".to_string(),
        other => describe(other),
    }
}

/// A short description of a value for messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_string(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the text {s:?}"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a map".to_string(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// The known name closest to `name`, if close enough to be a plausible typo.
pub fn closest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (k, strsim::normalized_damerau_levenshtein(&lower, k)))
        .filter(|(_, score)| *score >= 0.5)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(k, _)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_keys_only() {
        let known = ["interval", "pingtimeout", "endpointapi"];
        assert_eq!(closest("intervall", &known), Some("interval"));
        assert_eq!(closest("pingtimout", &known), Some("pingtimeout"));
        assert_eq!(closest("endpointApi", &known), Some("endpointapi"));
        assert_eq!(closest("zzz", &known), None);
    }

    #[test]
    fn integer_reports_range_and_type() {
        let mut r = Reader::new(LineIndex::default());
        assert_eq!(r.integer(Some(&Value::from(5)), "a", 1, 10), Some(5));
        assert_eq!(r.integer(Some(&Value::from("7")), "a", 1, 10), Some(7));
        assert_eq!(r.integer(Some(&Value::from(70000)), "port", 0, 65535), None);
        assert_eq!(r.integer(Some(&Value::from(-1)), "b", 1, 10), None);
        assert_eq!(r.integer(Some(&Value::from("x")), "c", 1, 10), None);
        assert_eq!(r.errors.len(), 3);
        assert!(r.errors[0].message.contains("out of range"));
        assert_eq!(r.errors[2].key, "c");
    }

    #[test]
    fn text_accepts_numbers_as_written() {
        let mut r = Reader::new(LineIndex::default());
        assert_eq!(r.text(Some(&Value::from(123)), "p"), Some("123".into()));
        assert_eq!(r.text(Some(&Value::Null), "p"), None);
        assert!(r.errors.is_empty());
    }
}
