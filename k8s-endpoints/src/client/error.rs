//! The ApiServer's errors: a response's `Status` body turned into a typed [`ApiError`], and
//! the kinds of transport failure ([`TransportKind`]).
//!
//! Parsing never panics. A body that is not a `Status` (an HTML page from a proxy, a plain
//! `Too many requests` from the priority-and-fairness filter, garbage) gives an error with the
//! HTTP status text and a short, sanitized snippet of the body: no markup, no control
//! characters, at most [`SNIPPET_CHARS`] characters.
//!
//! Text the ApiServer sends (a `Status` message, reason and causes; `Warning` headers; names
//! and values quoted back from a reply) goes through [`escape_control`] before it is kept in
//! an error or logged, so that a newline or a terminal escape sequence from the network can
//! neither forge a log line nor reach a terminal raw (SPEC §13).

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use crate::types::{Status, StatusCause};

/// Longest body snippet kept in an error.
pub const SNIPPET_CHARS: usize = 160;

/// What kind of error the ApiServer answered, from the HTTP code and the `Status` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorKind {
    /// `400`: a malformed request (e.g. the body's name differs from the URL's).
    BadRequest,
    /// `401`: the bearer token was not accepted.
    Unauthorized,
    /// `403`: RBAC does not allow the request.
    Forbidden,
    /// `404`: the object (or its namespace) does not exist.
    NotFound,
    /// `405`: the method is not allowed on this URL.
    MethodNotAllowed,
    /// `409` with reason `Conflict`: the `resourceVersion` sent is stale.
    Conflict,
    /// `409` with reason `AlreadyExists`: a create found the object there.
    AlreadyExists,
    /// `410`: the resource version is too old.
    Gone,
    /// `415`: the body's `Content-Type` is not accepted.
    UnsupportedMediaType,
    /// `422`: the object failed validation; see [`ApiError::causes`].
    Invalid,
    /// `429`: rate limited; see [`ApiError::retry_after`].
    TooManyRequests,
    /// `5xx`: the ApiServer (or something in front of it) failed.
    ServerError,
    /// Anything else.
    Other,
}

impl ApiErrorKind {
    /// Classifies an HTTP code and a `Status` reason (which tells `Conflict` from
    /// `AlreadyExists`, both `409`).
    pub fn of(code: u16, reason: Option<&str>) -> Self {
        match code {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            409 if reason == Some("AlreadyExists") => Self::AlreadyExists,
            409 => Self::Conflict,
            410 => Self::Gone,
            415 => Self::UnsupportedMediaType,
            422 => Self::Invalid,
            429 => Self::TooManyRequests,
            500..=599 => Self::ServerError,
            _ => Self::Other,
        }
    }
}

/// An error response from the ApiServer.
///
/// Its `Display` is one line: the request, the code and reason, the message, each cause as
/// `field: message`, how many attempts were made, and what to do (the `hint`).
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP method of the request.
    pub method: String,
    /// The path of the request (no query, no host).
    pub path: String,
    /// The HTTP status code.
    pub code: u16,
    /// The `Status` reason (`NotFound`, `Conflict`, `Invalid`, …); for a body that is not a
    /// `Status`, the HTTP status text (`Bad Gateway`).
    pub reason: String,
    /// The `Status` message; for a body that is not a `Status`, a sanitized snippet of it.
    pub message: String,
    /// `details.causes`: one per invalid field for `422`.
    pub causes: Vec<StatusCause>,
    /// How long the server asked to wait: the `Retry-After` header (seconds), else
    /// `details.retryAfterSeconds`.
    pub retry_after: Option<Duration>,
    /// The parsed `Status`, when the body was one.
    pub status: Option<Status>,
    /// How many times the request was sent before giving up (1 when it was not retried).
    pub attempts: u32,
    /// What the operator can do; empty when there is nothing specific to say.
    pub hint: String,
}

impl ApiError {
    /// Builds the error from a response: its code, headers and body. Never panics, whatever
    /// the body holds.
    pub fn from_response(
        method: &str,
        path: &str,
        code: u16,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let status = parse_status(body);
        let http_text = StatusCode::from_u16(code)
            .ok()
            .and_then(|c| c.canonical_reason())
            .unwrap_or("Unknown Status");
        let header_retry = headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let (reason, message, causes, body_retry) = match &status {
            Some(st) => {
                let details = st.details.as_ref();
                (
                    st.reason
                        .as_deref()
                        .filter(|r| !r.is_empty())
                        .map_or_else(|| http_text.to_owned(), escaped),
                    st.message.as_deref().map(escaped).unwrap_or_default(),
                    details
                        .map(|d| d.causes.iter().map(escaped_cause).collect())
                        .unwrap_or_default(),
                    details
                        .and_then(|d| d.retry_after_seconds)
                        .and_then(|s| u64::try_from(s).ok())
                        .filter(|s| *s > 0)
                        .map(Duration::from_secs),
                )
            }
            None => {
                let snippet = sanitize_snippet(body);
                let message = if snippet.is_empty() {
                    "(empty body)".to_owned()
                } else {
                    format!("response body is not a Kubernetes Status: {snippet:?}")
                };
                (http_text.to_owned(), message, Vec::new(), None)
            }
        };
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            code,
            reason,
            message,
            causes,
            retry_after: header_retry.or(body_retry),
            status,
            attempts: 1,
            hint: String::new(),
        }
    }

    /// The kind of error.
    pub fn kind(&self) -> ApiErrorKind {
        ApiErrorKind::of(self.code, Some(self.reason.as_str()))
    }

    /// The causes as `field: message`, in order.
    pub fn cause_lines(&self) -> Vec<String> {
        self.causes
            .iter()
            .map(|c| match (c.field.as_deref(), c.message.as_deref()) {
                (Some(f), Some(m)) if !f.is_empty() => format!("{f}: {m}"),
                (_, Some(m)) => m.to_owned(),
                (Some(f), None) => format!("{f}: {}", c.reason.as_deref().unwrap_or("invalid")),
                (None, None) => c.reason.clone().unwrap_or_default(),
            })
            .collect()
    }

    /// Replaces `secret` wherever it appears in the texts that came from the server, so a
    /// proxy that echoes request headers cannot put the token into a log.
    pub(crate) fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let r = |s: &mut String| {
            if s.contains(secret) {
                *s = s.replace(secret, "[REDACTED]");
            }
        };
        r(&mut self.message);
        r(&mut self.reason);
        for cause in &mut self.causes {
            if let Some(m) = cause.message.as_mut() {
                r(m);
            }
        }
        if let Some(st) = self.status.as_mut()
            && let Some(m) = st.message.as_mut()
        {
            r(m);
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} {}",
            self.method, self.path, self.code, self.reason
        )?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        let causes = self.cause_lines();
        // The ApiServer's 422 message already lists the causes; repeat them only when not.
        let missing: Vec<&String> = causes
            .iter()
            .filter(|c| !self.message.contains(c.as_str()))
            .collect();
        if !missing.is_empty() {
            let joined: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            write!(f, " (causes: {})", joined.join("; "))?;
        }
        if self.attempts > 1 {
            write!(f, "; gave up after {} attempts", self.attempts)?;
        }
        if !self.hint.is_empty() {
            write!(f, "; {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// What went wrong below HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// No connection within the connect timeout.
    ConnectTimeout,
    /// No complete response within the request timeout.
    Timeout,
    /// The server refused the connection (nothing listens there).
    ConnectionRefused,
    /// The connection closed or was reset before the response was complete.
    ConnectionDropped,
    /// The TLS handshake failed (usually: the server's certificate is not signed by the
    /// configured CA, or is not valid for the host in the URL).
    Tls,
    /// The host name could not be resolved.
    Dns,
    /// Anything else.
    Other,
}

impl fmt::Display for TransportKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ConnectTimeout => "could not connect to the ApiServer within the connect timeout",
            Self::Timeout => "no complete response from the ApiServer within the request timeout",
            Self::ConnectionRefused => "connection refused by the ApiServer's address",
            Self::ConnectionDropped => {
                "the connection to the ApiServer closed before a complete response"
            }
            Self::Tls => "TLS handshake with the ApiServer failed",
            Self::Dns => "cannot resolve the ApiServer's host name",
            Self::Other => "request to the ApiServer failed",
        })
    }
}

/// Escapes the control characters of text that came from the network, so that it can go
/// into a log line, an error or a report: a newline cannot start a forged log line and an
/// escape sequence (`ESC [ 31 m`, or a C1 control such as U+009B) cannot reach a terminal.
///
/// Text without control characters is returned as it is. Otherwise the whole text is escaped
/// the way probe replies are (`<[u8]>::escape_ascii`: `\n`, `\r`, `\t`, `\x1b`, quotes and
/// bytes outside printable ASCII as `\"` and `\xNN`), so one escaping serves every text from
/// outside and a reader sees the same form wherever it came from.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if text.chars().any(char::is_control) {
        Cow::Owned(text.as_bytes().escape_ascii().to_string())
    } else {
        Cow::Borrowed(text)
    }
}

/// [`escape_control`] into an owned `String`.
pub(crate) fn escaped(text: &str) -> String {
    escape_control(text).into_owned()
}

/// A `Status` cause with its texts escaped.
fn escaped_cause(c: &StatusCause) -> StatusCause {
    StatusCause {
        reason: c.reason.as_deref().map(escaped),
        message: c.message.as_deref().map(escaped),
        field: c.field.as_deref().map(escaped),
        ..c.clone()
    }
}

/// Parses a body as a `Status` (`kind: Status`, or at least a `code` or `reason`). Anything
/// else — not JSON, JSON of another shape, an object — is `None`.
pub fn parse_status(body: &[u8]) -> Option<Status> {
    let status: Status = serde_json::from_slice(body).ok()?;
    let looks_like_status =
        status.kind == "Status" || status.code.is_some() || status.reason.is_some();
    looks_like_status.then_some(status)
}

/// Parses `Retry-After` in its delay-seconds form (the form the ApiServer sends). An HTTP
/// date or anything unparsable is `None`.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A short, printable excerpt of a body that is not a `Status`: markup removed, control
/// characters and runs of whitespace turned into one space, at most [`SNIPPET_CHARS`]
/// characters (with `…` when cut).
pub fn sanitize_snippet(body: &[u8]) -> String {
    // Only the beginning matters; do not scan megabytes of HTML.
    let head = &body[..body.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let mut out = String::new();
    let mut in_tag = false;
    let mut last_space = true;
    let mut count = 0usize;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                if !last_space {
                    out.push(' ');
                    last_space = true;
                    count += 1;
                }
            }
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => {
                if !last_space {
                    out.push(' ');
                    last_space = true;
                    count += 1;
                }
            }
            c => {
                out.push(c);
                last_space = false;
                count += 1;
            }
        }
        if count >= SNIPPET_CHARS {
            out = out.trim_end().to_owned();
            out.push('…');
            return out;
        }
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use http::HeaderValue;

    fn err(code: u16, body: &str) -> ApiError {
        ApiError::from_response("PUT", "/p", code, &HeaderMap::new(), body.as_bytes())
    }

    #[test]
    fn kinds() {
        assert_eq!(
            ApiErrorKind::of(409, Some("Conflict")),
            ApiErrorKind::Conflict
        );
        assert_eq!(ApiErrorKind::of(409, None), ApiErrorKind::Conflict);
        assert_eq!(
            ApiErrorKind::of(409, Some("AlreadyExists")),
            ApiErrorKind::AlreadyExists
        );
        assert_eq!(ApiErrorKind::of(503, None), ApiErrorKind::ServerError);
        assert_eq!(ApiErrorKind::of(418, None), ApiErrorKind::Other);
    }

    #[test]
    fn invalid_with_causes() {
        let e = err(
            422,
            r#"{"kind":"Status","apiVersion":"v1","status":"Failure",
            "message":"Endpoints \"r\" is invalid: subsets[0].addresses[0].ip: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)",
            "reason":"Invalid","details":{"name":"r","kind":"Endpoints","causes":[
              {"reason":"FieldValueInvalid","message":"Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)","field":"subsets[0].addresses[0].ip"},
              {"reason":"FieldValueRequired","message":"Required value","field":"subsets[0].ports[0].port"}]},
            "code":422}"#,
        );
        assert_eq!(e.kind(), ApiErrorKind::Invalid);
        assert_eq!(e.causes.len(), 2);
        let lines = e.cause_lines();
        assert!(lines[0].starts_with("subsets[0].addresses[0].ip: Invalid value"));
        let text = e.to_string();
        assert!(
            text.starts_with("PUT /p: 422 Invalid: Endpoints \"r\" is invalid"),
            "{text}"
        );
        // The first cause is in the message already, the second is added.
        assert!(
            text.contains("(causes: subsets[0].ports[0].port: Required value)"),
            "{text}"
        );
    }

    #[test]
    fn already_exists_vs_conflict() {
        let e = err(
            409,
            r#"{"kind":"Status","reason":"AlreadyExists","code":409,"message":"x"}"#,
        );
        assert_eq!(e.kind(), ApiErrorKind::AlreadyExists);
        let e = err(
            409,
            r#"{"kind":"Status","reason":"Conflict","code":409,"message":"x"}"#,
        );
        assert_eq!(e.kind(), ApiErrorKind::Conflict);
    }

    #[test]
    fn retry_after_from_header_or_details() {
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, HeaderValue::from_static("7"));
        let e = ApiError::from_response(
            "GET",
            "/p",
            429,
            &h,
            b"Too many requests, please try again later.\n",
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.reason, "Too Many Requests");
        assert!(
            e.message
                .contains("Too many requests, please try again later.")
        );
        let e = err(
            429,
            r#"{"kind":"Status","reason":"TooManyRequests","code":429,"details":{"retryAfterSeconds":3}}"#,
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let e = err(
            429,
            r#"{"kind":"Status","code":429,"details":{"retryAfterSeconds":-3}}"#,
        );
        assert_eq!(e.retry_after, None);
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
    }

    #[test]
    fn html_from_a_proxy() {
        let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\n<body>\x07<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>";
        let e = err(502, body);
        assert_eq!(e.kind(), ApiErrorKind::ServerError);
        assert_eq!(e.reason, "Bad Gateway");
        assert_eq!(
            e.message,
            "response body is not a Kubernetes Status: \"502 Bad Gateway 502 Bad Gateway nginx\""
        );
        assert!(e.status.is_none());
    }

    #[test]
    fn snippets_are_short_and_clean() {
        let long = "a".repeat(10_000);
        let s = sanitize_snippet(long.as_bytes());
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 1);
        assert!(s.ends_with('…'));
        assert_eq!(sanitize_snippet(b"\x00\x01 x \n\t y \xff"), "x y \u{fffd}");
        assert_eq!(sanitize_snippet(b""), "");
        assert_eq!(err(500, "").message, "(empty body)");
        assert_eq!(err(599, "{}").reason, "Unknown Status");
        // JSON that is not a Status is shown as a snippet.
        assert!(err(500, r#"{"a":1}"#).message.contains(r#"{\"a\":1}"#));
    }

    #[test]
    fn server_text_is_escaped() {
        let e = err(
            422,
            r#"{"kind":"Status","code":422,"reason":"Invalid\u001b[0m",
                "message":"Endpoints \"r\" is invalid\nE0101 forged log line \u001b[31mred\u009b2J",
                "details":{"causes":[{"reason":"FieldValueInvalid","field":"subsets\r[0]",
                                      "message":"bad\u0007"}]}}"#,
        );
        let text = e.to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(
            text.contains(
                r#"Endpoints \"r\" is invalid\nE0101 forged log line \x1b[31mred\xc2\x9b2J"#
            ),
            "{text}"
        );
        assert!(text.contains(r"subsets\r[0]: bad\x07"), "{text}");
        assert_eq!(e.reason, r"Invalid\x1b[0m");
        // Clean text is left as it is.
        let e = err(
            409,
            r#"{"kind":"Status","code":409,"message":"endpoints \"r\" \u00e9"}"#,
        );
        assert_eq!(e.message, "endpoints \"r\" \u{e9}");
        assert_eq!(escape_control("plain"), Cow::Borrowed("plain"));
    }

    #[test]
    fn redaction() {
        let mut e = err(
            401,
            r#"{"kind":"Status","code":401,"message":"bad token s3cr3t"}"#,
        );
        e.redact("s3cr3t");
        assert_eq!(e.message, "bad token [REDACTED]");
        assert!(!format!("{e:?}").contains("s3cr3t"));
    }

    #[test]
    fn display_with_attempts_and_hint() {
        let mut e = err(
            500,
            r#"{"kind":"Status","code":500,"reason":"InternalError","message":"boom"}"#,
        );
        e.attempts = 4;
        e.hint = "check the ApiServer".into();
        assert_eq!(
            e.to_string(),
            "PUT /p: 500 InternalError: boom; gave up after 4 attempts; check the ApiServer"
        );
    }
}
