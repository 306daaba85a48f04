//! Reading and writing Endpoints objects: get, replace (`PUT` with the `resourceVersion`
//! read) and create (`PUT` to the object's own URL, falling back to `POST`).
//!
//! Creating with a `PUT` to the named URL and no `resourceVersion` works because the
//! ApiServer creates Endpoints on update; it is authorised as a `create` *of that name*, so
//! RBAC can restrict epcheck's `create` with `resourceNames` (SPEC §10), which a `POST` to
//! the collection cannot be. When the `PUT` is refused (`404`, `405` or `403` — an ApiServer
//! or proxy that does not allow create-on-update), the object is created with a `POST`.

use http::Method;
use serde::de::DeserializeOwned;

use super::Client;
use super::error::ApiErrorKind;
use super::request::{Action, Request, Response};
use crate::codec;
use crate::error::Error;
use crate::types::Endpoints;

impl Client {
    /// Reads an Endpoints object; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::Api`] for any
    /// answer but `200` and `404` (after the retries of transient failures);
    /// [`Error::Transport`]; [`Error::InvalidResponse`] when the body is not an Endpoints
    /// object.
    pub async fn get_endpoints(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Endpoints>, Error> {
        let path = self.inner.paths.object_path(namespace, name)?;
        let req = Request {
            method: Method::GET,
            path,
            body: None,
            action: action("get", namespace, Some(name)),
        };
        match self.execute(&req).await {
            Ok(resp) => self.decode(&req, &resp).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces an Endpoints object with `PUT` to its URL. The body's
    /// `metadata.resourceVersion` (the one read) makes the ApiServer refuse the write with
    /// `409 Conflict` if someone else wrote in between.
    ///
    /// # Errors
    ///
    /// As [`get_endpoints`](Self::get_endpoints); `404` is an error here.
    pub async fn replace_endpoints(&self, endpoints: &Endpoints) -> Result<Endpoints, Error> {
        let (namespace, name) = names(endpoints)?;
        if endpoints.metadata.resource_version.is_none() {
            tracing::debug!(object = %endpoints.key(), "replacing Endpoints without a resourceVersion (unconditional update)");
        }
        let req = Request {
            method: Method::PUT,
            path: self.inner.paths.object_path(namespace, name)?,
            body: Some(codec::encode(endpoints, self.inner.content_type)?),
            action: action("update", namespace, Some(name)),
        };
        let resp = self.execute(&req).await?;
        self.decode(&req, &resp)
    }

    /// Creates an Endpoints object: `PUT` to its own URL without a `resourceVersion`, then,
    /// if that is refused with `404`, `405` or `403`, `POST` to the collection path. Server
    /// metadata in the body (`resourceVersion`, `uid`) is dropped first.
    ///
    /// # Errors
    ///
    /// As [`get_endpoints`](Self::get_endpoints); [`ApiErrorKind::AlreadyExists`] when a
    /// `POST` finds the object there.
    pub async fn create_endpoints(&self, endpoints: &Endpoints) -> Result<Endpoints, Error> {
        let (namespace, name) = names(endpoints)?;
        let mut body = endpoints.clone();
        body.metadata.resource_version = None;
        body.metadata.uid = None;
        let encoded = codec::encode(&body, self.inner.content_type)?;
        let put = Request {
            method: Method::PUT,
            path: self.inner.paths.object_path(namespace, name)?,
            body: Some(encoded.clone()),
            action: action("create", namespace, Some(name)),
        };
        let refused = match self.execute(&put).await {
            Ok(resp) => {
                if resp.status == http::StatusCode::OK {
                    // 200 instead of 201: the object appeared after it was read as missing,
                    // and this PUT (unconditional) replaced it.
                    tracing::warn!(object = %body.key(), "Endpoints appeared while epcheck was creating it; it was replaced");
                }
                return self.decode(&put, &resp);
            }
            Err(e) => match e.api_kind() {
                Some(
                    ApiErrorKind::NotFound
                    | ApiErrorKind::MethodNotAllowed
                    | ApiErrorKind::Forbidden,
                ) => e,
                _ => return Err(e),
            },
        };
        tracing::info!(
            object = %body.key(), error = %refused,
            "creating Endpoints by PUT was refused; creating it with POST"
        );
        let post = Request {
            method: Method::POST,
            path: self.inner.paths.collection_path(namespace)?,
            body: Some(encoded),
            action: action("create", namespace, None),
        };
        let resp = self.execute(&post).await?;
        self.decode(&post, &resp)
    }

    /// Decodes a JSON response body.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        req: &Request,
        resp: &Response,
    ) -> Result<T, Error> {
        codec::from_json(&resp.body).map_err(|e| {
            let detail = std::error::Error::source(&e)
                .map(|s| format!(": {s}"))
                .unwrap_or_default();
            Error::InvalidResponse {
                method: req.method.to_string(),
                url: self.inner.base.join(&req.path),
                problem: format!(
                    "{e}{detail} (body starts {:?})",
                    super::error::sanitize_snippet(&resp.body)
                ),
            }
        })
    }
}

fn action(verb: &'static str, namespace: &str, name: Option<&str>) -> Action {
    Action {
        verb,
        resource: "endpoints",
        namespace: Some(namespace.to_owned()),
        name: name.map(str::to_owned),
    }
}

/// The namespace and name of an object to write.
fn names(endpoints: &Endpoints) -> Result<(&str, &str), Error> {
    let missing = |what: &'static str| Error::InvalidObjectName {
        what,
        value: String::new(),
        problem: "the object to write has none in its metadata".to_owned(),
    };
    let ns = endpoints
        .metadata
        .namespace
        .as_deref()
        .ok_or_else(|| missing("namespace"))?;
    let name = endpoints
        .metadata
        .name
        .as_deref()
        .ok_or_else(|| missing("Endpoints name"))?;
    Ok((ns, name))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn names_are_required() {
        let mut ep = Endpoints::new("default", "redis");
        assert_eq!(names(&ep).unwrap(), ("default", "redis"));
        ep.metadata.name = None;
        let msg = names(&ep).unwrap_err().to_string();
        assert!(msg.contains("Endpoints name"), "{msg}");
        ep.metadata.namespace = None;
        assert!(names(&ep).unwrap_err().to_string().contains("namespace"));
    }
}
