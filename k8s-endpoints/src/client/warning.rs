//! The ApiServer's `Warning` response headers (`299 - "v1 Endpoints is deprecated in
//! v1.33+; use discovery.k8s.io/v1 EndpointSlice"`), logged once per distinct text.
//!
//! The ApiServer sends the same deprecation warning with every Endpoints request; logging it
//! each time would drown the log, so [`WarningLog`] remembers the texts it has logged.

use std::collections::HashSet;
use std::sync::Mutex;

/// The most distinct texts remembered; past that the set starts over (a server that invents
/// a new warning per request must not grow memory without bound).
const MAX_REMEMBERED: usize = 256;

/// Longest warning text logged.
const MAX_TEXT_CHARS: usize = 512;

/// Extracts the texts of one `Warning` header value (RFC 7234 §5.5: `warn-code SP
/// warn-agent SP warn-text [SP warn-date]`, several separated by commas). A value that does
/// not follow the format is returned whole, trimmed. Never panics.
pub fn parse_warning(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        match parse_one(rest) {
            Some((text, tail)) => {
                out.push(text);
                rest = tail.trim_start().trim_start_matches(',').trim_start();
            }
            None => {
                out.push(rest.to_owned());
                break;
            }
        }
    }
    out
}

/// One warning-value: returns its text and what follows.
fn parse_one(s: &str) -> Option<(String, &str)> {
    let (code, s) = s.split_once(' ')?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (_agent, s) = s.trim_start().split_once(' ')?;
    let (text, mut tail) = quoted(s.trim_start())?;
    // An optional quoted date.
    let t = tail.trim_start();
    if t.starts_with('"') {
        tail = quoted(t)?.1;
    }
    Some((text, tail))
}

/// A quoted-string with backslash escapes, and the rest.
fn quoted(s: &str) -> Option<(String, &str)> {
    let body = s.strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &body[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The texts of one raw `Warning` header value as they are logged: cut at
/// [`MAX_TEXT_CHARS`] and with control characters escaped
/// ([`escape_control`](super::escape_control)).
fn loggable(raw: &[u8]) -> Vec<String> {
    parse_warning(&String::from_utf8_lossy(raw))
        .into_iter()
        .map(|text| {
            let cut: String = text.chars().take(MAX_TEXT_CHARS).collect();
            super::error::escaped(&cut)
        })
        .collect()
}

/// The set of warning texts already logged.
#[derive(Debug, Default)]
pub(crate) struct WarningLog {
    seen: Mutex<HashSet<String>>,
}

impl WarningLog {
    /// Logs each text of `values` that was not logged before.
    pub(crate) fn observe<'a>(
        &self,
        values: impl Iterator<Item = &'a [u8]>,
        method: &str,
        path: &str,
    ) {
        for raw in values {
            for text in loggable(raw) {
                if self.first_time(&text) {
                    tracing::warn!(warning = %text, method, path, "the ApiServer sent a warning");
                }
            }
        }
    }

    /// Whether `text` is new (and remember it).
    pub(crate) fn first_time(&self, text: &str) -> bool {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(text) {
            return false;
        }
        if seen.len() >= MAX_REMEMBERED {
            seen.clear();
        }
        seen.insert(text.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn kubernetes_deprecation_warning() {
        assert_eq!(
            parse_warning(
                r#"299 - "v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice""#
            ),
            vec!["v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"]
        );
    }

    #[test]
    fn several_escapes_and_dates() {
        assert_eq!(
            parse_warning(
                r#"299 - "a \"b\", c", 299 agent "d" "Sat, 25 Aug 2012 23:34:45 GMT" ,199 - "e""#
            ),
            vec!["a \"b\", c", "d", "e"]
        );
    }

    #[test]
    fn odd_values_are_kept_whole() {
        assert_eq!(parse_warning("  just text "), vec!["just text"]);
        assert_eq!(
            parse_warning(r#"299 - "unterminated"#),
            vec![r#"299 - "unterminated"#]
        );
        assert_eq!(parse_warning(r#"29 - "x""#), vec![r#"29 - "x""#]);
        assert_eq!(parse_warning(r#"299 - "x" junk"#), vec!["x", "junk"]);
        assert!(parse_warning("").is_empty());
        assert_eq!(
            parse_warning(r#"299 - "ends with \"#),
            vec![r#"299 - "ends with \"#]
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        // A C1 control (U+009B, CSI) arrives as UTF-8 in obs-text; ESC cannot be in a header
        // value but can be in a quoted-pair.
        let raw = "299 - \"bad\u{9b}31m \\\u{1b}[2J\"".as_bytes().to_vec();
        let texts = loggable(&raw);
        assert_eq!(texts, [r"bad\xc2\x9b31m \x1b[2J"]);
        assert_eq!(loggable(b"299 - \"plain\""), ["plain"]);
    }

    #[test]
    fn dedup() {
        let log = WarningLog::default();
        assert!(log.first_time("a"));
        assert!(!log.first_time("a"));
        assert!(log.first_time("b"));
        for i in 0..MAX_REMEMBERED + 10 {
            log.first_time(&i.to_string());
        }
        assert!(log.seen.lock().unwrap().len() <= MAX_REMEMBERED);
    }
}
