//! The [`Lock`] on a `coordination.k8s.io/v1` Lease, as client-go's `resourcelock.LeaseLock`.

use std::sync::{Mutex, PoisonError};

use super::{LeaderRecord, Lock, Version};
use crate::client::{Client, Lease};
use crate::error::Error;
use crate::path::{check_name, check_namespace};

/// A leader lock kept in one Lease, written through [`Client`].
///
/// The last Lease read or written is kept, so an update starts from the live object and keeps
/// the fields the election does not own (labels, annotations, `spec.strategy`, …).
#[derive(Debug)]
pub struct LeaseLock {
    client: Client,
    namespace: String,
    name: String,
    identity: String,
    last: Mutex<Option<Lease>>,
}

impl LeaseLock {
    /// The lock `namespace/name` for the candidate `identity`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] when the namespace or name cannot be a Lease's.
    pub fn new(
        client: Client,
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Result<Self, Error> {
        let namespace = namespace.into();
        let name = name.into();
        check_namespace(&namespace)?;
        check_name(&name)?;
        Ok(Self {
            client,
            namespace,
            name,
            identity: identity.into(),
            last: Mutex::new(None),
        })
    }

    /// The Lease's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn remember(&self, lease: &Lease) {
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(lease.clone());
    }

    /// The version of a Lease the ApiServer returned.
    fn version_of(&self, lease: &Lease, method: &str) -> Result<Version, Error> {
        match lease.metadata.resource_version.as_deref() {
            Some(rv) if !rv.is_empty() => Ok(Version(rv.to_owned())),
            _ => Err(Error::InvalidResponse {
                method: method.to_owned(),
                url: format!(
                    "{}/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
                    self.client.base_url(),
                    self.namespace,
                    self.name
                ),
                problem: "the Lease has no metadata.resourceVersion".to_owned(),
            }),
        }
    }
}

impl Lock for LeaseLock {
    async fn get(&self) -> Result<Option<(LeaderRecord, Version)>, Error> {
        let Some(lease) = self.client.get_lease(&self.namespace, &self.name).await? else {
            return Ok(None);
        };
        let version = self.version_of(&lease, "GET")?;
        let record = LeaderRecord::from_spec(&lease.spec);
        self.remember(&lease);
        Ok(Some((record, version)))
    }

    async fn create(&self, record: &LeaderRecord) -> Result<Version, Error> {
        let mut lease = Lease::new(&self.namespace, &self.name);
        record.apply_to(&mut lease.spec);
        let created = self
            .client
            .create_lease(&self.namespace, &self.name, &lease)
            .await?;
        let version = self.version_of(&created, "PUT")?;
        self.remember(&created);
        Ok(version)
    }

    async fn update(&self, record: &LeaderRecord, version: &Version) -> Result<Version, Error> {
        let cached = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut lease = cached
            .filter(|l| l.metadata.resource_version.as_deref() == Some(version.0.as_str()))
            .unwrap_or_else(|| Lease::new(&self.namespace, &self.name));
        // The object as read, only with our record and the version we read.
        lease.metadata.namespace = Some(self.namespace.clone());
        lease.metadata.name = Some(self.name.clone());
        lease.metadata.resource_version = Some(version.0.clone());
        lease.metadata.managed_fields.clear();
        record.apply_to(&mut lease.spec);
        let updated = self
            .client
            .update_lease(&self.namespace, &self.name, &lease)
            .await?;
        let new_version = self.version_of(&updated, "PUT")?;
        self.remember(&updated);
        Ok(new_version)
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn describe(&self) -> String {
        format!("Lease {}/{}", self.namespace, self.name)
    }
}
