//! Reading and writing Endpoints objects: get, replace (`PUT` with the `resourceVersion`
//! read) and create (`PUT` to the object's own URL, falling back to `POST`).
//!
//! Every URL is made from the path template and the namespace and name the caller passes
//! (the configured ones), never from a body; every reply is checked to be that object
//! ([`ObjectRef`], SPEC §13).
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
use super::object_ref::ObjectRef;
use super::request::{Action, Request, Response};
use crate::codec;
use crate::error::Error;
use crate::types::{ENDPOINTS_KIND, Endpoints};

impl Client {
    /// Reads an Endpoints object; `None` when it does not exist.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidObjectName`] for a bad namespace or name; [`Error::Api`] for any
    /// answer but `200` and `404` (after the retries of transient failures);
    /// [`Error::Transport`]; [`Error::InvalidResponse`] when the body is not an Endpoints
    /// object; [`Error::UnexpectedObject`] when it is another one (another namespace or name).
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
            Ok(resp) => self
                .decode_checked(&req, &resp, ObjectRef::new(ENDPOINTS_KIND, namespace, name))
                .map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the Endpoints object `namespace/name` with `PUT` to its URL, made from the
    /// path template and these two values only. The body's `metadata.resourceVersion` (the
    /// one read) makes the ApiServer refuse the write with `409 Conflict` if someone else
    /// wrote in between.
    ///
    /// # Errors
    ///
    /// As [`get_endpoints`](Self::get_endpoints); `404` is an error here;
    /// [`Error::InvalidObjectName`] when the body's metadata names another object (nothing is
    /// sent).
    pub async fn replace_endpoints(
        &self,
        namespace: &str,
        name: &str,
        endpoints: &Endpoints,
    ) -> Result<Endpoints, Error> {
        ObjectRef::new(ENDPOINTS_KIND, namespace, name).check_body(&endpoints.metadata)?;
        if endpoints.metadata.resource_version.is_none() {
            tracing::debug!(
                namespace,
                name,
                "replacing Endpoints without a resourceVersion (unconditional update)"
            );
        }
        let req = Request {
            method: Method::PUT,
            path: self.inner.paths.object_path(namespace, name)?,
            body: Some(codec::encode(endpoints, self.inner.content_type)?),
            action: action("update", namespace, Some(name)),
        };
        let resp = self.execute(&req).await?;
        self.decode_checked(&req, &resp, ObjectRef::new(ENDPOINTS_KIND, namespace, name))
    }

    /// Creates the Endpoints object `namespace/name`: `PUT` to its own URL without a
    /// `resourceVersion`, then, if that is refused with `404`, `405` or `403`, `POST` to the
    /// collection path (both made from the path template and these two values only). Server
    /// metadata in the body (`resourceVersion`, `uid`) is dropped first.
    ///
    /// # Errors
    ///
    /// As [`replace_endpoints`](Self::replace_endpoints); [`ApiErrorKind::AlreadyExists`]
    /// when a `POST` finds the object there.
    pub async fn create_endpoints(
        &self,
        namespace: &str,
        name: &str,
        endpoints: &Endpoints,
    ) -> Result<Endpoints, Error> {
        ObjectRef::new(ENDPOINTS_KIND, namespace, name).check_body(&endpoints.metadata)?;
        let mut body = endpoints.clone();
        body.metadata.namespace = Some(namespace.to_owned());
        body.metadata.name = Some(name.to_owned());
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
                    tracing::warn!(
                        namespace,
                        name,
                        "Endpoints appeared while epcheck was creating it; it was replaced"
                    );
                }
                return self.decode_checked(
                    &put,
                    &resp,
                    ObjectRef::new(ENDPOINTS_KIND, namespace, name),
                );
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
            namespace, name, error = %refused,
            "creating Endpoints by PUT was refused; creating it with POST"
        );
        let post = Request {
            method: Method::POST,
            path: self.inner.paths.collection_path(namespace)?,
            body: Some(encoded),
            action: action("create", namespace, None),
        };
        let resp = self.execute(&post).await?;
        self.decode_checked(
            &post,
            &resp,
            ObjectRef::new(ENDPOINTS_KIND, namespace, name),
        )
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
                // The decoder quotes keys and values of the body: escape them.
                problem: super::error::escaped(&format!(
                    "{e}{detail} (body starts {:?})",
                    super::error::sanitize_snippet(&resp.body)
                )),
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
