//! Webhooks: POST each event as JSON (the schema is in [`super::event`]) or as a DingTalk robot
//! message, with retries.
//!
//! One delivery makes up to [`RetryPolicy::attempts`] requests. It retries after a connect error,
//! a timeout, or a 5xx or 429 reply, pausing with exponential backoff and jitter; it stops at the
//! first success, at any other 4xx, and (DingTalk) at a 200 reply whose `errcode` is not 0.
//! The URL is logged only as `scheme://host/path`: its query may hold an access token.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Uri;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use super::delivery::{
    HttpClient, RetryPolicy, parse_url, post_json, redact, retryable_status, split_userinfo,
};
use super::{ChannelStats, NotifyEvent, dingtalk};
use crate::config::{Webhook, WebhookFormat};

/// Characters of a reply body quoted in an error.
const QUOTE_CHARS: usize = 200;

/// One configured webhook.
pub(crate) struct WebhookSink {
    uri: Uri,
    /// `Authorization` from the URL's user info, if any.
    headers: Vec<(HeaderName, HeaderValue)>,
    format: WebhookFormat,
    secret: Option<SecretString>,
    client: HttpClient,
    retry: RetryPolicy,
}

/// What one attempt came to.
enum Verdict {
    Done,
    Retry(String),
    Fail(String),
}

impl WebhookSink {
    /// Checks the URL; the error says what is wrong without repeating it.
    pub(crate) fn new(
        hook: &Webhook,
        client: HttpClient,
        retry: RetryPolicy,
    ) -> Result<Self, String> {
        let (uri, auth) = split_userinfo(parse_url(&hook.url)?)?;
        Ok(Self {
            uri,
            headers: auth.map(|a| (AUTHORIZATION, a)).into_iter().collect(),
            format: hook.format,
            secret: hook.secret.clone(),
            client,
            retry,
        })
    }

    /// `json` or `dingtalk`.
    pub(crate) fn kind(&self) -> &'static str {
        match self.format {
            WebhookFormat::Json => "json",
            WebhookFormat::DingTalk => "dingtalk",
        }
    }

    /// The URL without query, safe to log.
    pub(crate) fn redacted(&self) -> String {
        redact(&self.uri)
    }

    /// Delivers `event`, retrying as the policy allows; counts each request in `stats.attempts`.
    pub(crate) async fn deliver(
        &self,
        event: &NotifyEvent,
        stats: &ChannelStats,
    ) -> Result<(), String> {
        let body = match self.format {
            WebhookFormat::Json => serde_json::to_vec(event),
            WebhookFormat::DingTalk => serde_json::to_vec(&dingtalk::message(event)),
        }
        .map_err(|e| format!("cannot encode the event: {e}"))?;
        let body = Bytes::from(body);
        let attempts = self.retry.attempts.max(1);
        let mut last = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                tokio::time::sleep(self.retry.backoff(attempt - 1)).await;
            }
            stats.attempts.fetch_add(1, Ordering::Relaxed);
            match self.attempt(body.clone()).await {
                Verdict::Done => return Ok(()),
                Verdict::Fail(e) => return Err(e),
                Verdict::Retry(e) => {
                    tracing::debug!(
                        endpoint = %self.redacted(), attempt, error = %e,
                        "webhook attempt failed; will retry if attempts remain"
                    );
                    last = e;
                }
            }
        }
        Err(format!("{last} (gave up after {attempts} attempts)"))
    }

    async fn attempt(&self, body: Bytes) -> Verdict {
        let uri = match (&self.format, &self.secret) {
            (WebhookFormat::DingTalk, Some(secret)) => {
                // Signed per attempt: DingTalk wants the timestamp within an hour of now.
                match dingtalk::signed_uri(&self.uri, secret.expose_secret(), now_ms()) {
                    Ok(u) => u,
                    Err(e) => return Verdict::Fail(e),
                }
            }
            _ => self.uri.clone(),
        };
        match post_json(&self.client, &uri, &self.headers, body, self.retry.timeout).await {
            Ok(reply) if reply.status.is_success() => match self.format {
                WebhookFormat::Json => Verdict::Done,
                WebhookFormat::DingTalk => match dingtalk::check_reply(&reply.body) {
                    Ok(()) => Verdict::Done,
                    Err(e) => Verdict::Fail(e),
                },
            },
            Ok(reply) => {
                let e = format!("HTTP {}{}", reply.status, quoted(&reply.body));
                if retryable_status(reply.status) {
                    Verdict::Retry(e)
                } else {
                    Verdict::Fail(e)
                }
            }
            Err(e) => Verdict::Retry(e.to_string()),
        }
    }
}

/// Unix time in milliseconds.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `: <first line of body>` or nothing.
pub(crate) fn quoted(body: &[u8]) -> String {
    let s = snippet(body);
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// The first non-empty line of `bytes`, lossily decoded, control characters dropped, cut at 200
/// characters.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let mut out: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(QUOTE_CHARS)
        .collect();
    if line.chars().count() > QUOTE_CHARS {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn snippets_are_short_single_lines() {
        assert_eq!(snippet(b"\n  first line \nsecond"), "first line");
        assert_eq!(snippet(b""), "");
        let long = "x".repeat(500);
        assert_eq!(snippet(long.as_bytes()).chars().count(), QUOTE_CHARS + 1);
        assert_eq!(quoted(b"oops"), ": oops");
        assert_eq!(quoted(b""), "");
    }

    #[test]
    fn bad_urls_are_refused_without_echo() {
        let client = crate::notify::delivery::client(std::time::Duration::from_secs(1));
        let Ok(client) = client else { return };
        let hook = Webhook {
            url: "ftp://host/?access_token=SECRET".into(),
            format: WebhookFormat::Json,
            secret: None,
        };
        let e = WebhookSink::new(&hook, client, RetryPolicy::default())
            .err()
            .unwrap();
        assert!(!e.contains("SECRET"), "{e}");
    }
}
