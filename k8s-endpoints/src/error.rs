//! The crate's one error type.
//!
//! Every message says what failed, on what (a path, a key, a value) and, where there is one
//! obvious fix, what to do. Causes are kept as `#[source]` and are *not* repeated in the
//! message, so that `anyhow`'s `{:#}` prints each part of the chain once.
//!
//! No variant ever carries a token: token errors name the file, never its contents.

use std::path::PathBuf;

/// A boxed cause from a codec, so that the concrete YAML library stays private to
/// [`crate::codec`] and can be swapped without changing this type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No candidate token file exists.
    #[error(
        "no bearer token file found for token_file {setting}; tried {}; {hint}",
        display_paths(tried)
    )]
    TokenNotFound {
        /// How `token_file` was set, for the message (`"(empty: platform default)"`,
        /// `"default"` or the configured path).
        setting: String,
        /// Every path that was looked at, in order.
        tried: Vec<PathBuf>,
        /// What the operator can do about it.
        hint: String,
    },

    /// The first existing token file is empty or holds only whitespace.
    #[error(
        "bearer token file {} is empty (tried {}); write the service-account token into it or point token_file at a file that holds one",
        path.display(),
        display_paths(tried)
    )]
    TokenEmpty {
        /// The empty file.
        path: PathBuf,
        /// Every path that was looked at, in order, ending with `path`.
        tried: Vec<PathBuf>,
    },

    /// A token file exists but could not be read.
    #[error(
        "cannot read bearer token file {}; check that it is a readable file (tried {})",
        path.display(),
        display_paths(tried)
    )]
    TokenRead {
        /// The file that failed.
        path: PathBuf,
        /// Every path that was looked at, in order, ending with `path`.
        tried: Vec<PathBuf>,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A token file was read but its contents cannot be a bearer token. The message never
    /// includes the contents.
    #[error("bearer token file {} is not usable: {problem}", path.display())]
    TokenInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, without the value.
        problem: String,
    },

    /// The `endpointapi` path template is malformed.
    #[error(
        "invalid endpointapi path template {template:?}: {problem}; expected the form {expected:?}",
        expected = crate::path::EXAMPLE_TEMPLATE
    )]
    InvalidPathTemplate {
        /// The template as configured.
        template: String,
        /// What is wrong with it.
        problem: String,
    },

    /// A namespace or object name that must not be put into a URL path.
    #[error("invalid {what} {value:?}: {problem}")]
    InvalidObjectName {
        /// `"namespace"` or `"Endpoints name"`.
        what: &'static str,
        /// The rejected value.
        value: String,
        /// What is expected instead.
        problem: String,
    },

    /// The desired object cannot be rendered for this Endpoints object: the template or the
    /// configured ports would be rejected by the ApiServer.
    #[error("cannot render Endpoints {object}: {problem}")]
    InvalidTemplate {
        /// `namespace/name` of the object.
        object: String,
        /// What is wrong and what is expected.
        problem: String,
    },

    /// A `content_type` value that is neither JSON nor YAML.
    #[error(
        "unsupported content_type {value:?}; allowed values are \"application/yaml\" and \"application/json\""
    )]
    InvalidContentType {
        /// The rejected value.
        value: String,
    },

    /// A `not_ready` value that is neither `keep` nor `drop`.
    #[error("unsupported not_ready policy {value:?}; allowed values are \"keep\" and \"drop\"")]
    InvalidNotReadyPolicy {
        /// The rejected value.
        value: String,
    },

    /// A value could not be encoded.
    #[error("cannot encode {what} as {format}")]
    Encode {
        /// `"JSON"` or `"YAML"`.
        format: &'static str,
        /// The type being encoded, e.g. `"Endpoints"`.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// A document could not be decoded.
    #[error("cannot decode {what} from {format} at {}", if path.is_empty() { "the top level" } else { path.as_str() })]
    Decode {
        /// `"JSON"` or `"YAML"`.
        format: &'static str,
        /// The type being decoded, e.g. `"Endpoints"`.
        what: &'static str,
        /// The key path where decoding failed (`metadata.labels`), empty at the top level.
        path: String,
        /// The codec's error.
        #[source]
        source: BoxError,
    },

    /// The ApiServer client configuration cannot be used (a bad URL, missing in-cluster
    /// environment variables, …).
    #[error("invalid ApiServer client configuration: {problem}")]
    ClientConfig {
        /// What is wrong and what to do.
        problem: String,
    },

    /// The CA file cannot be read or holds no usable certificate.
    #[error("cannot use CA file {}: {problem}", path.display())]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// What is wrong and what to do.
        problem: String,
        /// The I/O error, when reading failed.
        #[source]
        source: Option<std::io::Error>,
    },

    /// The TLS client configuration could not be built.
    #[error("cannot build the TLS configuration for the ApiServer client: {problem}")]
    Tls {
        /// What failed.
        problem: String,
    },

    /// The ApiServer answered with an error status. Boxed: the error carries the `Status`
    /// and the request it answered.
    #[error("{0}")]
    Api(Box<crate::client::ApiError>),

    /// The request did not get an answer: connection refused or dropped, TLS failure,
    /// timeout. The message says which, on what URL, and what to check.
    #[error("{method} {url}: {kind}{}{hint}", if hint.is_empty() { "" } else { "; " })]
    Transport {
        /// The HTTP method.
        method: String,
        /// The URL (never with credentials).
        url: String,
        /// What kind of failure.
        kind: crate::client::TransportKind,
        /// What to check; may be empty.
        hint: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },

    /// A successful response whose body is not what was expected (not JSON, too large, the
    /// wrong shape).
    #[error("{method} {url}: unusable response from the ApiServer: {problem}")]
    InvalidResponse {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// What is wrong, with a short sanitized snippet of the body where useful.
        problem: String,
    },

    /// The ApiServer answered a request about one object with another: another kind,
    /// namespace or name (or, for a list of EndpointSlices, an item that is not one of
    /// epcheck's for the Service). Writes go only to the objects the config names, so nothing
    /// is written from such a reply (SPEC §13).
    #[error(
        "{method} {url}: asked for {asked} but the ApiServer's reply is {got}; epcheck writes only to the objects its config names, so nothing was written from this reply; check that the ApiServer URL (and any proxy in front of it) reaches the cluster's kube-apiserver"
    )]
    UnexpectedObject {
        /// The HTTP method.
        method: String,
        /// The URL.
        url: String,
        /// What was asked for (`Endpoints default/redis`, or for a list what its items must be).
        asked: String,
        /// What came back, control characters escaped.
        got: String,
    },

    /// The Service has a selector, so its endpoints belong to the cluster's controllers (the
    /// endpoints and endpointslice controllers), and epcheck does not manage it (SPEC §5.3,
    /// §9). In `mode: endpointslice` the EndpointSlices epcheck wrote for it are deleted
    /// first, so kube-proxy stops routing to the addresses epcheck probed.
    #[error("{}", selector_owned_text(namespace, name, selector, cleanup.as_deref()))]
    SelectorOwned {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
        /// The selector, as `k=v,k2=v2`.
        selector: String,
        /// In `mode: endpointslice`, what became of epcheck's own slices of the Service.
        cleanup: Option<Box<SliceCleanup>>,
    },

    /// Every attempt to write the object lost a race with another writer (`409 Conflict`
    /// each time, after re-reading it).
    #[error(
        "Endpoints {object} kept changing under epcheck: {attempts} writes in a row got 409 Conflict after re-reading it; another writer is updating the same object (is a second epcheck running without leader election, or does a controller own it?)"
    )]
    ConflictRetriesExhausted {
        /// `namespace/name`.
        object: String,
        /// How many writes were attempted.
        attempts: u32,
        /// The last conflict.
        #[source]
        source: Box<Error>,
    },

    /// `mode: endpointslice` found no Service of this name: EndpointSlices need it (SPEC §9).
    #[error(
        "EndpointSlice mode needs the Service {namespace}/{name} to exist: epcheck's EndpointSlices carry an owner reference to it (and are garbage-collected with it), and kube-proxy only routes to slices of an existing Service; create a selector-less Service {name:?} in namespace {namespace:?}, or use mode: endpoints"
    )]
    SliceServiceMissing {
        /// Namespace of the Service.
        namespace: String,
        /// Name of the Service.
        name: String,
    },

    /// Every attempt to write a Service's EndpointSlices lost a race with another writer.
    #[error(
        "the EndpointSlices of Service {service} kept changing under epcheck: {attempts} passes in a row were refused (409 Conflict or AlreadyExists, or a slice vanished) after re-reading them; another writer is changing them (is a second epcheck running without leader election?), or an EndpointSlice without epcheck's labels already has one of the names epcheck uses (<service>-epcheck-ipv4-<n>, <service>-epcheck-ipv6-<n>)"
    )]
    SliceConflictRetriesExhausted {
        /// `namespace/name` of the Service.
        service: String,
        /// How many passes were attempted.
        attempts: u32,
        /// The last refusal.
        #[source]
        source: Box<Error>,
    },

    /// Going from `mode: endpointslice` back to `mode: endpoints`, the Endpoints object was
    /// written but a request about the EndpointSlices epcheck left for the Service failed
    /// (SPEC §9). Those slices stay, kept as current as the failure allows, and the hand-over
    /// is tried again at the next reconcile.
    #[error(
        "Endpoints {service} was written, but handing the Service over from mode: endpointslice failed while {step}: {source}; epcheck's EndpointSlices for it (labelled endpointslice.kubernetes.io/managed-by=epcheck.io) stay and the hand-over is retried at the next reconcile; if this persists, fix the cause, or delete those slices by hand once the mirroring controller's slices for the Service show its healthy backends"
    )]
    SliceHandOver {
        /// `namespace/name` of the Service.
        service: String,
        /// What was being done, e.g. `listing the Service's EndpointSlices`.
        step: &'static str,
        /// The failure.
        #[source]
        source: Box<Error>,
    },

    /// The object carries `epcheck.io/instance` naming another epcheck deployment: that one
    /// manages it, and this one never writes it (SPEC §9).
    #[error(
        "{kind} {object} belongs to epcheck instance {theirs:?} (label epcheck.io/instance), not to this one ({ours:?}): two epcheck deployments must not manage the same Service; remove the Service from one of the two configs (the other then takes it over once `epcheck prune` or `prune: true` releases it), or give both the same instance if they are replicas of one deployment"
    )]
    OtherInstance {
        /// `Endpoints` or `EndpointSlice`.
        kind: &'static str,
        /// `namespace/name` of the object.
        object: String,
        /// The instance the object names (control characters escaped).
        theirs: String,
        /// This deployment's instance.
        ours: String,
    },

    /// Pruning kept an EndpointSlice because handing back the Endpoints object of its Service
    /// failed first: while that object keeps epcheck's skip-mirror label the mirroring
    /// controller would not replace the slice.
    #[error(
        "EndpointSlice {slice} was kept: handing back the Endpoints object {endpoints} failed (see its error), and until it is handed back the mirroring controller would not replace the slice; fix that error and prune again"
    )]
    PruneHeldBack {
        /// `namespace/name` of the slice.
        slice: String,
        /// `namespace/name` of the Endpoints object.
        endpoints: String,
    },

    /// Leader-election settings that cannot work (SPEC §9).
    #[error("invalid leader election settings: {problem}")]
    ElectionConfig {
        /// What is wrong and what is expected.
        problem: String,
    },

    /// Consensus settings that cannot work (SPEC §9.1).
    #[error("invalid consensus settings: {problem}")]
    ConsensusConfig {
        /// What is wrong and what is expected.
        problem: String,
    },

    /// A leader-election lock other than a Lease (e.g. a Redis key) failed.
    #[error("leader election lock {lock}: {problem}")]
    Lock {
        /// The lock, as its `describe()` says.
        lock: String,
        /// What failed.
        problem: String,
        /// The backend's error.
        #[source]
        source: Option<BoxError>,
    },
}

impl Error {
    /// The ApiServer's error, when this is one.
    pub fn api(&self) -> Option<&crate::client::ApiError> {
        match self {
            Self::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The kind of the ApiServer's error, when this is one.
    pub fn api_kind(&self) -> Option<crate::client::ApiErrorKind> {
        self.api().map(crate::client::ApiError::kind)
    }

    /// Whether this is a `404 Not Found` from the ApiServer.
    pub fn is_not_found(&self) -> bool {
        self.api_kind() == Some(crate::client::ApiErrorKind::NotFound)
    }

    /// Whether this is a `409 Conflict` (a stale `resourceVersion`), not `AlreadyExists`.
    pub fn is_conflict(&self) -> bool {
        self.api_kind() == Some(crate::client::ApiErrorKind::Conflict)
    }

    /// Whether this is [`Error::SelectorOwned`]: the Service belongs to the cluster's
    /// controllers and epcheck stands aside until its selector is removed.
    pub fn is_selector_owned(&self) -> bool {
        matches!(self, Self::SelectorOwned { .. })
    }

    /// Whether a write lost a race with another writer: `409 Conflict` (the object changed
    /// since it was read), `409 AlreadyExists` (a create found it there), or the `422` a
    /// create by `PUT` gets when the object appeared since it was read and its type needs a
    /// `resourceVersion` on update (a Lease: `metadata.resourceVersion: Invalid value: 0: must
    /// be specified for an update`; the value is not matched, its spelling differs between
    /// releases). An ordinary retry, not a fault.
    pub fn is_lost_race(&self) -> bool {
        use crate::client::ApiErrorKind as K;
        let Some(api) = self.api() else {
            return false;
        };
        const FIELD: &str = "metadata.resourceVersion";
        const NEEDED: &str = "must be specified for an update";
        match api.kind() {
            K::AlreadyExists | K::Conflict => true,
            K::Invalid => {
                api.causes.iter().any(|c| {
                    c.field.as_deref() == Some(FIELD)
                        && c.message.as_deref().is_some_and(|m| m.contains(NEEDED))
                }) || (api.causes.is_empty()
                    && api.message.contains(FIELD)
                    && api.message.contains(NEEDED))
            }
            _ => false,
        }
    }
}

/// What became of epcheck's own EndpointSlices of a Service found to have a selector
/// ([`Error::SelectorOwned`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SliceCleanup {
    /// The names of the slices deleted (in a dry run: that would be).
    pub deleted: Vec<String>,
    /// Why deleting them failed, when it did (the next pass tries again).
    pub error: Option<String>,
    /// A dry run: nothing was deleted.
    pub dry_run: bool,
}

/// The message of [`Error::SelectorOwned`].
fn selector_owned_text(
    namespace: &str,
    name: &str,
    selector: &str,
    cleanup: Option<&SliceCleanup>,
) -> String {
    let none = SliceCleanup::default();
    let SliceCleanup {
        deleted,
        error: cleanup_error,
        dry_run,
    } = cleanup.unwrap_or(&none);
    let mut text = format!(
        "Service {namespace}/{name} has a selector ({selector}): its endpoints belong to the cluster's controllers (the endpoints controller and the endpointslice controller), so epcheck does not manage it"
    );
    if !deleted.is_empty() {
        let verb = if *dry_run { "would delete" } else { "deleted" };
        text.push_str(&format!(
            "; epcheck {verb} its own EndpointSlices for it ({}) so that kube-proxy routes only to what the controllers list",
            deleted.join(", ")
        ));
    }
    if let Some(e) = cleanup_error {
        text.push_str(&format!(
            "; deleting epcheck's own EndpointSlices for it failed ({e}), the next pass tries again"
        ));
    }
    text.push_str("; remove the selector from the Service (epcheck manages selector-less Services) or configure another name");
    text
}

/// Joins paths for messages: `"/a/token", "/b/token"`.
fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "no path".to_owned();
    }
    paths
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_not_found_names_every_path() {
        let err = Error::TokenNotFound {
            setting: "default".into(),
            tried: vec![PathBuf::from("/w/token"), PathBuf::from("/w/conf/token")],
            hint: "create one".into(),
        };
        let msg = err.to_string();
        assert!(msg.contains("\"/w/token\", \"/w/conf/token\""), "{msg}");
        assert!(msg.contains("create one"), "{msg}");
    }

    #[test]
    fn empty_path_list_is_readable() {
        assert_eq!(display_paths(&[]), "no path");
    }

    #[test]
    fn decode_at_top_level() {
        let err = Error::Decode {
            format: "JSON",
            what: "Endpoints",
            path: String::new(),
            source: "boom".into(),
        };
        assert_eq!(
            err.to_string(),
            "cannot decode Endpoints from JSON at the top level"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn path_template_error_shows_expected_form() {
        let err = Error::InvalidPathTemplate {
            template: "/x".into(),
            problem: "missing".into(),
        };
        assert!(
            err.to_string()
                .contains("/api/v1/namespaces/myNameSpaces/endpoints/myEndPoints")
        );
    }
}
