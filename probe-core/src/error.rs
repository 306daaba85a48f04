//! The crate's error type.

/// Everything that can go wrong when building checks with this crate.
///
/// Probe *failures* are not errors: a refused connection or a script that exits 1 is a normal
/// result and comes back as a [`ProbeOutcome`](crate::ProbeOutcome) with
/// [`up == false`](crate::ProbeOutcome::up). This type is for invalid input, found once when the
/// configuration is turned into checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An `expect` regular expression does not compile.
    #[error("invalid expect regex {pattern:?}: {source}")]
    BadRegex {
        /// The pattern as given (without the surrounding `/`).
        pattern: String,
        /// Why the regex crate rejected it.
        #[source]
        source: regex::Error,
    },
    /// A check is incomplete or contradictory; the message says what to change.
    #[error("invalid check: {0}")]
    InvalidCheck(String),
    /// rustls refused to build a client configuration (the text is rustls's).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    /// [`Verify::System`](crate::tls::Verify::System) found no usable CA certificate.
    #[error("no system CA certificates found; install ca-certificates")]
    NoSystemRoots,
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::error::Error as _;

    #[test]
    fn bad_regex_keeps_its_source() {
        let pattern = String::from("a{2,1}");
        let source = regex::Regex::new(&pattern).unwrap_err();
        let e = Error::BadRegex { pattern, source };
        assert!(
            e.to_string()
                .starts_with("invalid expect regex \"a{2,1}\": ")
        );
        assert!(e.source().is_some());
    }
}
