//! The crate's error type.
//!
//! Messages name the Redis address as `host:port` and etcd by its endpoints (never a URL with credentials, never the
//! password), the command and key, and what to do. The backend's own message is kept as the
//! [`source`](std::error::Error::source), with the password scrubbed from it should the server
//! ever echo it.

use std::time::Duration;

/// What a store operation can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A record could not be encoded as JSON (a bug, not an operational problem).
    #[error("cannot encode the {what} record as JSON")]
    Encode {
        /// Which record: `target`, `applied` or `event`.
        what: &'static str,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },

    /// The Redis address does not parse.
    #[error(
        "invalid Redis address {address:?}: {reason}; expected host:port, \
         redis://[user[:password]@]host[:port][/db] or rediss://… (check redis.ipport)"
    )]
    InvalidAddress {
        /// The address with any credentials removed.
        address: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A Redis option is out of range.
    #[error("invalid Redis option {option}: {reason}")]
    InvalidOption {
        /// The option's name (`db`, `key_prefix`, `ttl`, …).
        option: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },

    /// TLS for Redis could not be set up (CA file unreadable or empty, no usable roots).
    #[error("TLS setup for Redis at {address} failed: {reason}")]
    Tls {
        /// `host:port`.
        address: String,
        /// What failed and what to check.
        reason: String,
    },

    /// The first connection to Redis failed (refused, unreachable, TLS handshake, timeout).
    #[error(
        "cannot connect to Redis at {address} (check that Redis runs and is reachable from here: \
         redis.ipport, redis.tls)"
    )]
    Connect {
        /// `host:port`.
        address: String,
        /// The connect timeout that applied.
        timeout: Duration,
        /// The client's error.
        #[source]
        source: BackendError,
    },

    /// Redis refused the credentials (`WRONGPASS`, `NOAUTH`, ACL denial).
    #[error(
        "Redis at {address} refused the credentials: check redis.password, redis.password_file or \
         EPCHECK_REDIS_PASSWORD, and redis.username (the password is never shown)"
    )]
    Auth {
        /// `host:port`.
        address: String,
        /// The server's reply.
        #[source]
        source: BackendError,
    },

    /// Redis is not connected right now; the client keeps reconnecting in the background.
    #[error(
        "Redis at {address} is unavailable ({op} {key}): not connected; the client reconnects by \
         itself, check that Redis is running"
    )]
    Unavailable {
        /// `host:port`.
        address: String,
        /// The Redis command (`HSET`, `XADD`, …).
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The client's error.
        #[source]
        source: BackendError,
    },

    /// A command got no reply within the command timeout.
    #[error(
        "Redis {op} {key} at {address} timed out after {timeout:?}; is Redis overloaded or unreachable?"
    )]
    Timeout {
        /// `host:port`.
        address: String,
        /// The Redis command.
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The command timeout.
        timeout: Duration,
    },

    /// Redis answered with an error (wrong type at the key, out of memory, …).
    #[error(
        "Redis {op} {key} at {address} failed: check the key prefix (redis.key_prefix) and the server's state"
    )]
    Command {
        /// `host:port`.
        address: String,
        /// The Redis command.
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The server's or client's error.
        #[source]
        source: BackendError,
    },

    /// An etcd option is invalid (endpoints, TLS files, key prefix, timeouts).
    #[error("invalid etcd option {option}: {reason}")]
    EtcdOption {
        /// The option's name (`endpoints`, `ca_file`, `key_prefix`, …).
        option: &'static str,
        /// What is wrong and what is expected.
        reason: String,
    },

    /// etcd refused the credentials (wrong user or password, or authentication not set up).
    #[error(
        "etcd at {endpoints} refused the credentials: check etcd.username and etcd.password, \
         etcd.password_file or EPCHECK_ETCD_PASSWORD (the password is never shown)"
    )]
    EtcdAuth {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The server's reply.
        #[source]
        source: BackendError,
    },

    /// etcd could not be reached, or a call got no answer within the command timeout; the
    /// client keeps reconnecting by itself.
    #[error(
        "etcd at {endpoints} is unavailable ({op} {key}): check that etcd runs and is reachable \
         from here (etcd.endpoints, and etcd.ca_file, cert_file, key_file for TLS); the client \
         reconnects by itself"
    )]
    EtcdUnavailable {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The etcd call (`Range`, `Txn`, `LeaseGrant`, …).
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The client's error.
        #[source]
        source: BackendError,
    },

    /// etcd answered with an error (permission denied on the key, request too large, …).
    #[error(
        "etcd {op} {key} at {endpoints} failed: check the key prefix (etcd.key_prefix), the \
         user's permissions on it and the server's state"
    )]
    EtcdCommand {
        /// The endpoints, comma-separated.
        endpoints: String,
        /// The etcd call.
        op: &'static str,
        /// The key it was for.
        key: String,
        /// The server's or client's error.
        #[source]
        source: BackendError,
    },
}

impl Error {
    /// Whether retrying later may succeed without anyone changing anything (Redis down,
    /// reconnecting or slow). The daemon logs these rate-limited and carries on from memory.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. }
                | Error::Unavailable { .. }
                | Error::Timeout { .. }
                | Error::EtcdUnavailable { .. }
        )
    }
}

/// The error of the backend under a store error: its kind and message, with any password
/// removed. Kept as a plain value so that the store's error does not expose the client
/// library's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    kind: String,
    message: String,
}

impl BackendError {
    /// A backend error of `kind` (e.g. `IO`, `Auth`) with `message`. Store implementations
    /// outside this crate, and tests forcing a failure through `MockStateStore`, use this.
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        BackendError {
            kind: kind.into(),
            message: message.into(),
        }
    }

    /// The same error with every occurrence of `secret` replaced by `***`.
    pub fn redacted(mut self, secret: Option<&str>) -> Self {
        if let Some(secret) = secret.filter(|s| !s.is_empty()) {
            self.message = self.message.replace(secret, "***");
            self.kind = self.kind.replace(secret, "***");
        }
        self
    }

    /// The kind, as the backend names it.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for BackendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for BackendError {}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_address_and_action() {
        let err = Error::Unavailable {
            address: "127.0.0.1:6379".into(),
            op: "HSET",
            key: "epcheck:redis:targets".into(),
            source: BackendError::new("IO", "Connection refused"),
        };
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:6379") && text.contains("HSET"),
            "{text}"
        );
        assert!(text.contains("reconnects"), "{text}");
        assert_eq!(err.source().unwrap().to_string(), "IO: Connection refused");
        assert!(err.is_transient());

        let err = Error::Auth {
            address: "a:1".into(),
            source: BackendError::new("Auth", "WRONGPASS"),
        };
        assert!(!err.is_transient());
    }

    #[test]
    fn redaction_removes_the_secret() {
        let e =
            BackendError::new("Auth", "bad password hunter2 for hunter2").redacted(Some("hunter2"));
        assert_eq!(e.message(), "bad password *** for ***");
        let e = BackendError::new("Auth", "x").redacted(Some(""));
        assert_eq!(e.message(), "x");
        assert_eq!(e.kind(), "Auth");
    }
}
