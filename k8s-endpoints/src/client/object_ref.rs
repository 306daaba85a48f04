//! Which object a request is about, and the checks that keep every write on it (SPEC §13).
//!
//! The URL of a write comes from the config alone: the namespace and name an [`ObjectRef`]
//! holds are the configured ones, never values read back from the ApiServer. A reply that
//! names another kind, namespace or name than the one asked for is refused
//! ([`Error::UnexpectedObject`]) before anything is written from it, and a body whose
//! metadata names another object than the URL is never sent.

use std::fmt;

use serde::de::DeserializeOwned;

use super::request::{Request, Response};
use super::{Client, Lease};
use crate::error::Error;
use crate::slices::EndpointSlice;
use crate::types::{Endpoints, ObjectMeta};

/// An object type a reply is decoded into and checked against an [`ObjectRef`].
pub(crate) trait Object: DeserializeOwned {
    /// The reply's `kind` (empty when it had none).
    fn kind(&self) -> &str;
    /// The reply's metadata.
    fn meta(&self) -> &ObjectMeta;
}

macro_rules! object {
    ($($t:ty),*) => {$(
        impl Object for $t {
            fn kind(&self) -> &str {
                &self.kind
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
        }
    )*};
}

object!(Endpoints, EndpointSlice, Lease);

impl Client {
    /// Decodes a reply and checks that it is `target` (kind, namespace and name).
    pub(crate) fn decode_checked<T: Object>(
        &self,
        req: &Request,
        resp: &Response,
        target: ObjectRef<'_>,
    ) -> Result<T, Error> {
        let obj: T = self.decode(req, resp)?;
        target.check_reply(self, req, Some(obj.kind()), obj.meta())?;
        Ok(obj)
    }
}

/// One object, as the config names it: its kind, namespace and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjectRef<'a> {
    pub kind: &'static str,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl fmt::Display for ObjectRef<'_> {
    /// `Endpoints default/redis`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

impl<'a> ObjectRef<'a> {
    pub(crate) const fn new(kind: &'static str, namespace: &'a str, name: &'a str) -> Self {
        Self {
            kind,
            namespace,
            name,
        }
    }

    /// Checks the body of a write: its metadata may leave the namespace or name out (the
    /// URL's are used) but must not name another object.
    pub(crate) fn check_body(&self, meta: &ObjectMeta) -> Result<(), Error> {
        let differs = |field: &Option<String>, want: &str| {
            field.as_deref().is_some_and(|v| !v.is_empty() && v != want)
        };
        if differs(&meta.namespace, self.namespace) || differs(&meta.name, self.name) {
            return Err(Error::InvalidObjectName {
                what: "object to write",
                value: described(self.kind, meta),
                problem: format!(
                    "its metadata names another object than {self}, the one the config names; nothing was sent"
                ),
            });
        }
        Ok(())
    }

    /// Checks that a reply is this object: same kind (when `kind` is `Some`: list items come
    /// without one), namespace and name.
    pub(crate) fn check_reply(
        &self,
        client: &Client,
        req: &Request,
        kind: Option<&str>,
        meta: &ObjectMeta,
    ) -> Result<(), Error> {
        self.check_names(
            client,
            req,
            kind,
            meta.namespace.as_deref(),
            meta.name.as_deref(),
        )
    }

    /// [`check_reply`](Self::check_reply) for a reply decoded without an [`ObjectMeta`].
    pub(crate) fn check_names(
        &self,
        client: &Client,
        req: &Request,
        kind: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Result<(), Error> {
        let same = kind.is_none_or(|k| k == self.kind)
            && namespace == Some(self.namespace)
            && name == Some(self.name);
        if same {
            return Ok(());
        }
        let got_kind = kind.map_or(self.kind, |k| if k.is_empty() { "?" } else { k });
        Err(unexpected(
            client,
            req,
            self.to_string(),
            described_as(got_kind, namespace, name),
        ))
    }
}

/// [`Error::UnexpectedObject`] for `req`.
pub(crate) fn unexpected(client: &Client, req: &Request, asked: String, got: String) -> Error {
    Error::UnexpectedObject {
        method: req.method.to_string(),
        url: client.inner.base.join(&req.path),
        asked,
        got: crate::escape_control(&got).into_owned(),
    }
}

/// `Kind namespace/name` of what a reply holds; missing parts are `?`.
pub(crate) fn described_as(kind: &str, namespace: Option<&str>, name: Option<&str>) -> String {
    let part = |v: Option<&str>| v.filter(|s| !s.is_empty()).unwrap_or("?").to_owned();
    format!("{kind} {}/{}", part(namespace), part(name))
}

fn described(kind: &str, meta: &ObjectMeta) -> String {
    let text = described_as(kind, meta.namespace.as_deref(), meta.name.as_deref());
    crate::escape_control(&text).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn meta(ns: Option<&str>, name: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: ns.map(str::to_owned),
            name: name.map(str::to_owned),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn bodies_may_leave_names_out_but_not_name_others() {
        let r = ObjectRef::new("Endpoints", "default", "redis");
        assert_eq!(r.to_string(), "Endpoints default/redis");
        assert!(r.check_body(&meta(None, None)).is_ok());
        assert!(r.check_body(&meta(Some("default"), Some("redis"))).is_ok());
        let e = r
            .check_body(&meta(Some("kube-system"), Some("redis")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Endpoints kube-system/redis"), "{e}");
        assert!(e.contains("Endpoints default/redis"), "{e}");
        assert!(r.check_body(&meta(None, Some("other"))).is_err());
    }
}
