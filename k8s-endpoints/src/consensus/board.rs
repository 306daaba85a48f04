//! Where the views are published: a Lease per replica, or a Redis key per replica.

use std::sync::Mutex;
use std::time::Duration;

use crate::client::{Client, Lease};
use crate::election::MicroTime;
use crate::error::Error;

use super::View;

/// The label that groups the view Leases of one consensus group (value: the group name).
pub const VIEW_LABEL: &str = "epcheck.io/view-of";

/// The annotation that holds a view's JSON text.
pub const VIEW_ANNOTATION: &str = "epcheck.io/view";

/// One view as read from a board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posted {
    /// What the board calls it (a Lease name, a replica in the Redis set).
    pub id: String,
    /// The replica that published it.
    pub replica: String,
    /// The view, or why it cannot be read.
    pub view: Result<View, String>,
    /// For a board whose entries do not expire by themselves: a token that changes with every
    /// write (the `resourceVersion`); the reader times freshness on its own clock from when it
    /// saw the token change. `None` where the board expires entries itself.
    pub change: Option<String>,
    /// The board says it expired (its TTL ran out).
    pub expired: bool,
}

/// A place every replica publishes its [`View`] and the leader reads them all. Every error
/// means "unknown", never "no views".
#[async_trait::async_trait]
pub trait ViewBoard: Send + Sync + 'static {
    /// Publishes `view` (as [`View::encode`] gives it), valid for `ttl`.
    async fn publish(&self, view: &View, ttl: Duration) -> Result<(), Error>;

    /// Every view on the board, this replica's included.
    async fn read(&self) -> Result<Vec<Posted>, Error>;

    /// Removes `replica`'s own view (a clean shutdown), so it stops counting at once.
    async fn withdraw(&self, replica: &str) -> Result<(), Error>;

    /// Removes a view that has been stale for long (a replica that died without withdrawing);
    /// a view refreshed since it was read stays.
    async fn forget(&self, posted: &Posted) -> Result<(), Error>;

    /// The board for messages (`Leases labelled epcheck.io/view-of=epcheck in default`).
    fn describe(&self) -> String;
}

/// Views in Leases, one per replica, named `<group>-view-<replica>` and labelled
/// `epcheck.io/view-of=<group>` in one namespace: the holder is the replica, `renewTime` its
/// last publication, the annotation `epcheck.io/view` the view. The leader lists them with the
/// label selector.
#[derive(Debug)]
pub struct LeaseBoard {
    client: Client,
    namespace: String,
    group: String,
    label: String,
    /// The `resourceVersion` of this replica's own Lease, as last written.
    own: Mutex<Option<(String, String)>>,
}

impl LeaseBoard {
    /// The board of group `group` (the election's Lease name) in `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>, group: impl Into<String>) -> Self {
        let group = group.into();
        LeaseBoard {
            client,
            namespace: namespace.into(),
            label: bounded(&group, 63),
            group,
            own: Mutex::new(None),
        }
    }

    fn own(&self) -> Option<(String, String)> {
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_own(&self, value: Option<(String, String)>) {
        *self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = value;
    }

    fn lease(&self, name: &str, view: &View, ttl: Duration) -> Lease {
        let mut lease = Lease::new(&self.namespace, name);
        lease
            .metadata
            .labels
            .insert(VIEW_LABEL.to_owned(), self.label.clone());
        lease
            .metadata
            .annotations
            .insert(VIEW_ANNOTATION.to_owned(), view.encode());
        lease.spec.holder_identity = Some(view.replica.clone());
        lease.spec.lease_duration_seconds =
            Some(i32::try_from(ttl.as_secs().max(1)).unwrap_or(i32::MAX));
        lease.spec.renew_time = Some(MicroTime::now());
        lease
    }
}

#[async_trait::async_trait]
impl ViewBoard for LeaseBoard {
    async fn publish(&self, view: &View, ttl: Duration) -> Result<(), Error> {
        let name = lease_name(&self.group, &view.replica);
        let mut lease = self.lease(&name, view, ttl);
        // The version last written, else the live one (after a restart with the same name).
        let version = match self.own() {
            Some((n, rv)) if n == name => Some(rv),
            _ => self
                .client
                .get_lease(&self.namespace, &name)
                .await?
                .and_then(|l| l.metadata.resource_version),
        };
        let written = match version {
            Some(rv) => {
                lease.metadata.resource_version = Some(rv);
                self.client
                    .update_lease(&self.namespace, &name, &lease)
                    .await
            }
            None => {
                self.client
                    .create_lease(&self.namespace, &name, &lease)
                    .await
            }
        };
        match written {
            Ok(l) => {
                self.set_own(l.metadata.resource_version.map(|rv| (name, rv)));
                Ok(())
            }
            Err(e) => {
                // Read it again next time (a conflict, a deletion, a lost reply).
                self.set_own(None);
                Err(e)
            }
        }
    }

    async fn read(&self) -> Result<Vec<Posted>, Error> {
        let leases = self
            .client
            .list_leases(&self.namespace, VIEW_LABEL, &self.label)
            .await?;
        Ok(leases
            .into_iter()
            .map(|l| {
                let id = l.metadata.name.clone().unwrap_or_default();
                let holder = l.spec.holder_identity.clone().unwrap_or_else(|| id.clone());
                let view = match l.metadata.annotations.get(VIEW_ANNOTATION) {
                    Some(text) => for_replica(View::decode(text), &holder),
                    None => Err(format!("no {VIEW_ANNOTATION} annotation")),
                };
                Posted {
                    id,
                    replica: shown_replica(&holder),
                    view,
                    change: l.metadata.resource_version.clone(),
                    expired: false,
                }
            })
            .collect())
    }

    async fn withdraw(&self, replica: &str) -> Result<(), Error> {
        let name = lease_name(&self.group, replica);
        self.set_own(None);
        self.client
            .delete_lease(&self.namespace, &name, None)
            .await
            .map(|_| ())
    }

    async fn forget(&self, posted: &Posted) -> Result<(), Error> {
        self.client
            .delete_lease(&self.namespace, &posted.id, posted.change.as_deref())
            .await
            .map(|_| ())
    }

    fn describe(&self) -> String {
        format!(
            "Leases labelled {VIEW_LABEL}={} in namespace {}",
            self.label, self.namespace
        )
    }
}

/// Checks a replica name read from a board: text from the network is logged and shown, so it
/// must be a plain identity (letters, digits, `-`, `_`, `.`; at most 253 characters). The
/// error shows it escaped.
fn checked_replica(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if plain {
        Ok(())
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(format!("replica name {shown:?} is not a plain identity"))
    }
}

/// The name under which a replica is shown: itself when it is plain, else escaped.
fn shown_replica(name: &str) -> String {
    match checked_replica(name) {
        Ok(()) => name.to_owned(),
        Err(_) => name
            .chars()
            .take(80)
            .flat_map(char::escape_default)
            .collect(),
    }
}

/// `view` as read for `replica`: refused when the name is not plain or differs from the
/// view's own.
fn for_replica(view: Result<View, String>, replica: &str) -> Result<View, String> {
    checked_replica(replica)?;
    let view = view?;
    if view.replica == replica {
        Ok(view)
    } else {
        Err(format!(
            "the view names replica {:?} but was published as {replica:?}",
            view.replica.chars().take(80).collect::<String>()
        ))
    }
}

/// The name of `replica`'s view Lease in group `group`: `<group>-view-<replica>` made a valid
/// object name (lower case; anything but letters, digits, `-` and `.` becomes `-`), with a hash
/// in place of what does not fit in 253 characters.
pub fn lease_name(group: &str, replica: &str) -> String {
    let slug: String = replica
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let slug = slug.trim_matches(|c| c == '-' || c == '.');
    let name = format!("{group}-view-{}", if slug.is_empty() { "x" } else { slug });
    bounded(&name, 253)
}

/// `text` if it fits in `max` characters, else its first characters, `-` and a hash of all of
/// it (so two long names that share a beginning stay apart).
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    // FNV-1a: stable across builds and platforms, unlike the std hasher.
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let keep: String = text.chars().take(max.saturating_sub(9)).collect();
    let keep = keep.trim_end_matches(['-', '.']);
    format!("{keep}-{:08x}", hash & 0xffff_ffff)
}

/// A store's views that expire by themselves: Redis keys with a TTL
/// ([`state_store::RedisViews`], feature `redis`) or etcd keys bound to a lease
/// ([`state_store::EtcdViews`], feature `etcd`). Freshness is kept by the store's clock.
#[cfg(any(feature = "redis", feature = "etcd"))]
#[async_trait::async_trait]
pub trait ExpiringViews: std::fmt::Debug + Send + Sync + 'static {
    /// Publishes `replica`'s view, expiring `ttl` from now.
    async fn publish(&self, replica: &str, text: &str, ttl: Duration) -> state_store::Result<()>;
    /// Every replica that published, with its view unless it expired.
    async fn read(&self) -> state_store::Result<Vec<state_store::PostedView>>;
    /// Removes `replica`'s view and name.
    async fn withdraw(&self, replica: &str) -> state_store::Result<()>;
    /// Drops `replica`'s name if its view expired.
    async fn forget(&self, replica: &str) -> state_store::Result<bool>;
    /// The keys, for messages.
    fn describe(&self) -> String;
}

/// Implements [`ExpiringViews`] for a store's views type by calling its own methods.
#[cfg(any(feature = "redis", feature = "etcd"))]
macro_rules! expiring_views {
    ($views:ty, $describe:expr) => {
        #[async_trait::async_trait]
        impl ExpiringViews for $views {
            async fn publish(
                &self,
                replica: &str,
                text: &str,
                ttl: Duration,
            ) -> state_store::Result<()> {
                <$views>::publish(self, replica, text, ttl).await
            }
            async fn read(&self) -> state_store::Result<Vec<state_store::PostedView>> {
                <$views>::read(self).await
            }
            async fn withdraw(&self, replica: &str) -> state_store::Result<()> {
                <$views>::withdraw(self, replica).await
            }
            async fn forget(&self, replica: &str) -> state_store::Result<bool> {
                <$views>::forget(self, replica).await
            }
            fn describe(&self) -> String {
                let describe: fn(&$views) -> String = $describe;
                describe(self)
            }
        }
    };
}

#[cfg(feature = "redis")]
expiring_views!(state_store::RedisViews, |v| format!(
    "Redis keys named in {}",
    v.set_key()
));
#[cfg(feature = "etcd")]
expiring_views!(state_store::EtcdViews, |v| format!(
    "etcd keys under {}",
    v.prefix()
));

/// Views in a store that expires them by itself (`leader_election.backend: redis` or `etcd`):
/// `ExpiringBoard(redis_store.views(name))`. A replica named without a view has expired.
#[cfg(any(feature = "redis", feature = "etcd"))]
#[derive(Debug, Clone)]
pub struct ExpiringBoard<V>(pub V);

#[cfg(any(feature = "redis", feature = "etcd"))]
impl<V: ExpiringViews> ExpiringBoard<V> {
    fn fail(&self, op: &str, e: state_store::Error) -> Error {
        Error::Lock {
            lock: self.0.describe(),
            problem: format!("{op} failed"),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(any(feature = "redis", feature = "etcd"))]
#[async_trait::async_trait]
impl<V: ExpiringViews> ViewBoard for ExpiringBoard<V> {
    async fn publish(&self, view: &View, ttl: Duration) -> Result<(), Error> {
        let r = self.0.publish(&view.replica, &view.encode(), ttl).await;
        r.map_err(|e| self.fail("publishing the view", e))
    }

    async fn read(&self) -> Result<Vec<Posted>, Error> {
        let posted = self.0.read().await;
        let posted = posted.map_err(|e| self.fail("reading the views", e))?;
        Ok(posted
            .into_iter()
            .map(|p| {
                let expired = p.text.is_none();
                let view = match p.text {
                    Some(text) => for_replica(View::decode(&text), &p.replica),
                    None => Err("expired".to_owned()),
                };
                Posted {
                    replica: shown_replica(&p.replica),
                    id: p.replica,
                    view,
                    change: None,
                    expired,
                }
            })
            .collect())
    }

    async fn withdraw(&self, replica: &str) -> Result<(), Error> {
        let r = self.0.withdraw(replica).await;
        r.map_err(|e| self.fail("withdrawing the view", e))
    }

    async fn forget(&self, posted: &Posted) -> Result<(), Error> {
        let r = self.0.forget(&posted.id).await;
        r.map(|_| ()).map_err(|e| self.fail("forgetting a view", e))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn lease_names_are_valid_and_bounded() {
        assert_eq!(
            lease_name("epcheck", "epcheck-7d9f-x2v4q_a1B2c3"),
            "epcheck-view-epcheck-7d9f-x2v4q-a1b2c3"
        );
        assert_eq!(lease_name("epcheck", "__"), "epcheck-view-x");
        let long = lease_name("epcheck", &"a".repeat(400));
        assert_eq!(long.len(), 253);
        assert_ne!(long, lease_name("epcheck", &"a".repeat(401)));
        assert!(crate::path::check_name(&long).is_ok(), "{long}");
        let label = bounded(&"g".repeat(70), 63);
        assert_eq!(label.len(), 63);
    }

    #[test]
    fn replica_names_from_the_network_are_plain_or_refused_and_escaped() {
        let view = |r: &str| Ok(View::voting(r, Default::default()));
        assert!(for_replica(view("pod-1_ab.c"), "pod-1_ab.c").is_ok());
        let forged = "a\nlevel=error msg=\"forged\"";
        let err = for_replica(view(forged), forged).unwrap_err();
        assert!(
            err.contains("not a plain identity") && !err.contains('\n'),
            "{err}"
        );
        assert!(!shown_replica(forged).contains('\n'));
        assert_eq!(shown_replica("pod-1"), "pod-1");
        let err = for_replica(view("pod-2"), "pod-1").unwrap_err();
        assert!(err.contains("published as \"pod-1\""), "{err}");
        assert!(for_replica(view(""), "").is_err());
    }
}
