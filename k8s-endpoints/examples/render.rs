//! Renders an Endpoints object offline and prints it as YAML (or JSON).
//!
//! ```text
//! cargo run -p k8s-endpoints --example render -- 198.51.100.1 198.51.100.2 down:198.51.100.3
//! cargo run -p k8s-endpoints --example render -- --json --drop 198.51.100.1 down:198.51.100.3
//! ```
//!
//! Plain IPs are ready backends; `down:IP` marks a failing one. The template is the
//! `endpoint_template` of the original tool's documented config.

use std::net::IpAddr;
use std::process::ExitCode;

use k8s_endpoints::{ContentType, Endpoints, NotReadyPolicy, PathTemplate, Renderer, codec};

const TEMPLATE: &str = "\
kind: Endpoints
apiVersion: v1
metadata:
  name: ceph
  namespace: default
subsets:
  - addresses:
      - ip: 10.0.0.71
    ports:
      - port: 8080
        protocol: TCP
";

fn main() -> ExitCode {
    match run(std::env::args().skip(1)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: impl Iterator<Item = String>) -> Result<(), Box<dyn std::error::Error>> {
    let mut format = ContentType::Yaml;
    let mut policy = NotReadyPolicy::Keep;
    let (mut ready, mut down) = (Vec::<IpAddr>::new(), Vec::<IpAddr>::new());
    for arg in args {
        match arg.as_str() {
            "--json" => format = ContentType::Json,
            "--drop" => policy = NotReadyPolicy::Drop,
            other => match other.strip_prefix("down:") {
                Some(ip) => down.push(ip.parse().map_err(|e| format!("{ip:?}: {e}"))?),
                None => ready.push(other.parse().map_err(|e| format!("{other:?}: {e}"))?),
            },
        }
    }

    let template: Endpoints = codec::from_yaml(TEMPLATE)?;
    let renderer = Renderer::new(&template, "default", "redis", None, policy)?;
    let desired = renderer.render(&ready, &down, None);

    let path = PathTemplate::default().object_path(renderer.namespace(), renderer.name())?;
    eprintln!("# PUT {path} ({format})");
    let body = codec::encode(&desired, format)?;
    println!("{}", String::from_utf8_lossy(&body).trim_end());
    Ok(())
}
