//! `epcheck manifests`: the Kubernetes objects that deploy epcheck for the config (SPEC §10).

use std::path::Path;

use anyhow::Context as _;

use crate::UsageError;
use crate::cli::ManifestsArgs;
use crate::config::{Environment, check};
use crate::manifests::{ALERT_RULES, ManifestOptions, manifests, notes, to_yaml_stream};

/// Prints the manifests for the config at `path` on stdout, notes on stderr; returns 0.
pub fn run(args: &ManifestsArgs, path: &Path, env: &dyn Environment) -> anyhow::Result<u8> {
    k8s_endpoints::validate_namespace(&args.namespace)
        .map_err(|e| UsageError(format!("--namespace {:?}: {e}", args.namespace)))?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = check(&text, path, env)?.config;
    let mut opts = ManifestOptions::for_config(&config, text);
    opts.namespace = args.namespace.clone();
    if let Some(image) = &args.image {
        opts.image = image.clone();
    }
    if let Some(replicas) = args.replicas {
        opts.replicas = replicas;
    }
    opts.service_monitor = args.service_monitor;
    opts.prometheus_rule = args.prometheus_rule.then(|| ALERT_RULES.to_string());
    opts.kuberhealthy = args.kuberhealthy;
    for note in notes(&config, &opts) {
        eprintln!("epcheck: note: {note}");
    }
    print!("{}", to_yaml_stream(&manifests(&config, &opts)));
    Ok(0)
}
