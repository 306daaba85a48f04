//! Probe backends and keep a Service's Endpoints equal to the healthy ones, with the library
//! crates only (no config file):
//!
//! ```sh
//! cargo run -p k8s-endpoints --example keep_endpoints -- \
//!     --url https://127.0.0.1:6443 --token-file ./token --service default/redis \
//!     --port 6379 [--redis 127.0.0.1:6379] [--seconds 30] 127.0.0.1:16379 127.0.0.2:16379
//! ```
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use k8s_endpoints::daemon::{Daemon, DaemonSpec, ServiceSpec};
use k8s_endpoints::{
    Client, ClientConfig, EndpointPort, EndpointSubset, Endpoints, TokenLocation, TokenSource,
};
use probe_core::Target;
use state_store::{MemoryStore, RedisOptions, RedisStore, StateStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: VecDeque<String> = std::env::args().skip(1).collect();
    let (mut url, mut token, mut service, mut port) = (None, None, None, 80u16);
    let (mut redis, mut seconds, mut backends) = (None, None, Vec::new());
    while let Some(arg) = args.pop_front() {
        let mut value = || args.pop_front().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = Some(value()?),
            "--token-file" => token = Some(value()?),
            "--service" => service = Some(value()?),
            "--port" => port = value()?.parse()?,
            "--redis" => redis = Some(value()?),
            "--seconds" => seconds = Some(value()?.parse::<u64>()?),
            _ => backends.push(arg.parse::<std::net::SocketAddr>()?),
        }
    }
    let service = service.ok_or("--service namespace/name is required")?;
    let (namespace, name) = service.split_once('/').ok_or("--service is ns/name")?;

    // Who is probed, and the object that carries them.
    let targets = (backends.iter().enumerate())
        .map(|(i, a)| Target::new(name, format!("node-{i}"), a.ip(), a.port()))
        .collect();
    let mut template = Endpoints::new(namespace, name);
    template.subsets.push(EndpointSubset {
        ports: vec![EndpointPort::tcp(port)],
        ..EndpointSubset::default()
    });
    let service = ServiceSpec::new(name, namespace, name, targets);
    let spec = DaemonSpec::new(template, vec![service]);

    // Where it is written, and where state is kept (in memory, or Redis to survive restarts).
    let mut config = ClientConfig::from_url(url.ok_or("--url is required")?);
    if let Some(path) = token {
        let (location, base_dir) = (TokenLocation::from_setting(&path), ".".into());
        config.token = TokenSource::File { location, base_dir };
    }
    let store: Arc<dyn StateStore> = match redis {
        Some(address) => Arc::new(RedisStore::connect(RedisOptions::new(address)).await?),
        None => Arc::new(MemoryStore::new()),
    };

    let stop = async move {
        match seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => drop(tokio::signal::ctrl_c().await),
        }
    };
    let client = Client::new(config)?;
    Daemon::new(spec, store, client).run(stop).await;
    Ok(())
}
