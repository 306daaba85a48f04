//! Connecting to the ApiServer as the config says: URL or in-cluster, token file, CA, body format.

use std::path::Path;

use k8s_endpoints::client::default_ca_file;
use k8s_endpoints::{Client, ClientConfig, NotReadyPolicy, TokenLocation, TokenSource};

use crate::config::{Config, Environment};

/// The client configuration for `config`: `url`, else the in-cluster environment
/// (`KUBERNETES_SERVICE_HOST`/`_PORT`); the token located by `token_file` relative to `cwd`;
/// `ca_file`, else the service-account CA when present.
///
/// # Errors
/// When `url` is empty and the in-cluster variables are missing.
pub fn client_config(
    config: &Config,
    cwd: &Path,
    env: &dyn Environment,
) -> Result<ClientConfig, k8s_endpoints::Error> {
    let mut cc = match &config.url {
        Some(url) => ClientConfig::from_url(url.clone()),
        None => ClientConfig::incluster(&|k| env.var(k))?,
    };
    cc.token = TokenSource::File {
        location: TokenLocation::from_setting(&config.token_file),
        base_dir: cwd.to_path_buf(),
    };
    cc.ca_file = config.ca_file.clone().or_else(default_ca_file);
    cc.insecure_skip_tls_verify = config.insecure_skip_tls_verify;
    cc.content_type = config.content_type;
    cc.paths = config.endpoint_api.clone();
    Ok(cc)
}

/// Builds the client for `config`.
///
/// # Errors
/// As [`client_config`], or when the TLS configuration cannot be built (e.g. a CA file that
/// does not parse).
pub fn connect(
    config: &Config,
    cwd: &Path,
    env: &dyn Environment,
) -> Result<Client, k8s_endpoints::Error> {
    Client::new(client_config(config, cwd, env)?)
}

/// What the cluster's version allows, read once from `/version`. An unknown version (the
/// request failed) allows everything: the configured behaviour is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerPolicy {
    /// `notReadyAddresses` may be written (SPEC §5.4): before 1.22 kube-proxy mirrored them
    /// into EndpointSlices as ready (kubernetes#102683), so `not_ready: keep` falls back to
    /// `drop` there, with a warning.
    pub not_ready_addresses: bool,
    /// The server keeps EndpointSlice `serving` and `terminating` (SPEC §9): before 1.22 it
    /// drops them, so slices carry `ready` only and compare equal to what is stored.
    pub slice_serving_terminating: bool,
}

impl Default for ServerPolicy {
    fn default() -> Self {
        Self {
            not_ready_addresses: true,
            slice_serving_terminating: true,
        }
    }
}

impl ServerPolicy {
    /// The policy to use for a service's `not_ready`.
    pub fn not_ready(self, configured: NotReadyPolicy) -> NotReadyPolicy {
        if self.not_ready_addresses {
            configured
        } else {
            NotReadyPolicy::Drop
        }
    }
}

/// Reads the ApiServer's version once and says what it allows (see [`ServerPolicy`]).
pub async fn server_policy(client: &Client) -> ServerPolicy {
    match client.server_version().await {
        Ok(v) => {
            let policy = ServerPolicy {
                not_ready_addresses: v.not_ready_addresses_safe() != Some(false),
                slice_serving_terminating: v.keeps_slice_serving_terminating() != Some(false),
            };
            if !policy.not_ready_addresses {
                tracing::warn!(
                    version = %v,
                    "ApiServer older than 1.22: failing targets are dropped instead of being \
                     written as notReadyAddresses (kubernetes#102683)"
                );
            }
            policy
        }
        Err(e) => {
            tracing::debug!(error = %e, "could not read the ApiServer version; keeping not_ready as configured");
            ServerPolicy::default()
        }
    }
}
