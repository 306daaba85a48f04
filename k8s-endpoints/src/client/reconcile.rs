//! Reconciling one service: the unit the daemon calls after a transition and on every resync
//! (SPEC §5.3).
//!
//! 1. `GET` the Service. A Service with a selector is refused ([`Error::SelectorOwned`]): the
//!    endpoints controller owns its Endpoints. A missing Service is allowed, with a warning
//!    (an Endpoints object without a Service is harmless, but nothing uses it).
//! 2. `GET` the Endpoints. Missing: render the object and create it.
//! 3. Otherwise render from the live object (its ports win), compare by meaning
//!    ([`diff`](crate::diff())), and when something differs write the live object with only
//!    `subsets` replaced ([`apply_to_live`]) and its `resourceVersion`, so labels,
//!    annotations and unknown fields survive and a concurrent writer gets `409`.
//! 4. On `409 Conflict` (or `AlreadyExists` when creating, or the object vanishing before the
//!    update), read again and redo steps 2-3, a few times with short jittered waits
//!    ([`ClientConfig::conflict_retry`](super::ClientConfig::conflict_retry)).
//!
//! Nothing is written when any read fails, so an error never leaves a partial or empty
//! object behind. [`ReconcileMode::DryRun`] reads and reports what it would write.

use std::fmt;
use std::net::IpAddr;

use super::Client;
use super::error::ApiErrorKind;
use super::retry::Backoff;
use super::service::ServiceInfo;
use crate::diff::{EndpointsDiff, diff};
use crate::error::Error;
use crate::instance::check_instance;
use crate::render::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, Renderer, apply_to_live};
use crate::types::Endpoints;

/// Whether to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReconcileMode {
    /// Write what differs.
    #[default]
    Apply,
    /// Read only; report what would be written.
    DryRun,
}

/// What a reconcile did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReconcileAction {
    /// The live object already matched: nothing written.
    Unchanged,
    /// The live object was replaced.
    Updated,
    /// The object did not exist and was created.
    Created,
    /// Dry run: the live object would be replaced.
    WouldUpdate,
    /// Dry run: the object would be created.
    WouldCreate,
}

impl ReconcileAction {
    /// `unchanged`, `updated`, `created`, `would-update`, `would-create` (the `action` of
    /// `epcheck once -o json`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unchanged => "unchanged",
            Self::Updated => "updated",
            Self::Created => "created",
            Self::WouldUpdate => "would-update",
            Self::WouldCreate => "would-create",
        }
    }

    /// Whether something was (or would be) written.
    pub const fn is_write(self) -> bool {
        !matches!(self, Self::Unchanged)
    }
}

impl fmt::Display for ReconcileAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of [`reconcile()`].
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileOutcome {
    /// What was done.
    pub action: ReconcileAction,
    /// What changed (or would), from the live object (or from nothing, for a create).
    pub diff: EndpointsDiff,
    /// The object as the ApiServer returned it after the write; the live object when
    /// unchanged; the body that would be sent in a dry run.
    pub object: Endpoints,
    /// The Service, when it exists.
    pub service: Option<ServiceInfo>,
    /// How many `409`s were met (and retried) on the way.
    pub conflicts: u32,
}

/// Brings one service's Endpoints object to the desired state; see the module docs.
///
/// # Errors
///
/// [`Error::SelectorOwned`] for a Service with a selector; [`Error::ConflictRetriesExhausted`]
/// when every write lost a race; otherwise the first error of a request (after that request's
/// own retries), with nothing written after it.
pub async fn reconcile(
    client: &Client,
    renderer: &Renderer,
    ready: &[IpAddr],
    not_ready: &[IpAddr],
    mode: ReconcileMode,
) -> Result<ReconcileOutcome, Error> {
    let (namespace, name) = (renderer.namespace(), renderer.name());
    let service = client.get_service(namespace, name).await?;
    match &service {
        Some(svc) if svc.has_selector() => {
            return Err(Error::SelectorOwned {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                selector: svc.selector_text(),
                cleanup: None,
            });
        }
        Some(_) => {}
        None => tracing::warn!(
            namespace,
            name,
            "no Service of this name: the Endpoints object is kept up to date but nothing uses it until a selector-less Service named like it exists"
        ),
    }

    let mut backoff = Backoff::new(client.conflict_retry());
    let mut conflicts = 0u32;
    loop {
        let attempt = match client.get_endpoints(namespace, name).await? {
            None => create(client, renderer, ready, not_ready, mode).await,
            Some(live) => update(client, renderer, ready, not_ready, mode, live).await,
        };
        match attempt {
            Ok((action, diff, object)) => {
                return Ok(ReconcileOutcome {
                    action,
                    diff,
                    object,
                    service,
                    conflicts,
                });
            }
            Err(Race(error)) => {
                conflicts += 1;
                let Some(delay) = backoff.next_delay(None) else {
                    return Err(Error::ConflictRetriesExhausted {
                        object: format!("{namespace}/{name}"),
                        attempts: conflicts,
                        source: Box::new(error),
                    });
                };
                tracing::info!(
                    namespace, name, error = %error,
                    "Endpoints changed while epcheck was writing it; reading it again"
                );
                tokio::time::sleep(delay).await;
            }
            Err(Fatal(error)) => return Err(error),
        }
    }
}

/// Why one read-compute-write pass failed.
enum Failure {
    /// Lost a race with another writer: read again.
    Race(Error),
    /// Anything else.
    Fatal(Error),
}
use Failure::{Fatal, Race};

type Pass = Result<(ReconcileAction, EndpointsDiff, Endpoints), Failure>;

async fn create(
    client: &Client,
    renderer: &Renderer,
    ready: &[IpAddr],
    not_ready: &[IpAddr],
    mode: ReconcileMode,
) -> Pass {
    let desired = renderer.render(ready, not_ready, None);
    // Compare with nothing, labelled, so the diff lists what the object brings, not the label.
    let mut nothing = Endpoints::new(renderer.namespace(), renderer.name());
    nothing
        .metadata
        .labels
        .insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned());
    let changes = diff(&nothing, &desired);
    if mode == ReconcileMode::DryRun {
        return Ok((ReconcileAction::WouldCreate, changes, desired));
    }
    match client
        .create_endpoints(renderer.namespace(), renderer.name(), &desired)
        .await
    {
        Ok(written) => {
            tracing::debug!(object = %desired.key(), changes = %changes, "created Endpoints");
            Ok((ReconcileAction::Created, changes, written))
        }
        Err(e) if e.api_kind() == Some(ApiErrorKind::AlreadyExists) => Err(Race(e)),
        Err(e) => Err(Fatal(e)),
    }
}

async fn update(
    client: &Client,
    renderer: &Renderer,
    ready: &[IpAddr],
    not_ready: &[IpAddr],
    mode: ReconcileMode,
    live: Endpoints,
) -> Pass {
    check_instance(
        "Endpoints",
        || live.key(),
        &live.metadata.labels,
        renderer.instance(),
    )
    .map_err(Fatal)?;
    let desired = renderer.render(ready, not_ready, Some(&live));
    let changes = diff(&live, &desired);
    if changes.is_empty() {
        return Ok((ReconcileAction::Unchanged, changes, live));
    }
    let body = apply_to_live(&live, &desired);
    if mode == ReconcileMode::DryRun {
        return Ok((ReconcileAction::WouldUpdate, changes, body));
    }
    match client
        .replace_endpoints(renderer.namespace(), renderer.name(), &body)
        .await
    {
        Ok(written) => {
            tracing::debug!(object = %body.key(), changes = %changes, "updated Endpoints");
            Ok((ReconcileAction::Updated, changes, written))
        }
        // 409: someone wrote since the read. 404: someone deleted it since the read.
        Err(e) if e.is_conflict() || e.is_not_found() => Err(Race(e)),
        Err(e) => Err(Fatal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_names() {
        let all = [
            ReconcileAction::Unchanged,
            ReconcileAction::Updated,
            ReconcileAction::Created,
            ReconcileAction::WouldUpdate,
            ReconcileAction::WouldCreate,
        ];
        let names: Vec<String> = all.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "unchanged",
                "updated",
                "created",
                "would-update",
                "would-create"
            ]
        );
        assert!(!ReconcileAction::Unchanged.is_write());
        assert!(ReconcileAction::WouldCreate.is_write());
        assert_eq!(ReconcileMode::default(), ReconcileMode::Apply);
    }
}
