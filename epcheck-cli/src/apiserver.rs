//! Connecting to the ApiServer as the config says: URL or in-cluster, token file, CA, body format.

use std::path::Path;

use k8s_endpoints::client::default_ca_file;
use k8s_endpoints::{Client, ClientConfig, TokenLocation, TokenSource};

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

pub use k8s_endpoints::writer::ServerPolicy;

/// Reads the ApiServer's version once and says what it allows (see [`ServerPolicy`]).
pub async fn server_policy(client: &Client) -> ServerPolicy {
    ServerPolicy::read(client).await
}
