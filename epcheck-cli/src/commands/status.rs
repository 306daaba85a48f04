//! `epcheck status`: what the store knows — each service's targets with state, since when and
//! the last error, and the recent transitions.

use std::path::Path;

use serde::Serialize;
use state_store::{AppliedRecord, TargetRecord, TransitionEvent};

use crate::cli::{OutputFormat, StatusArgs};
use crate::config::{Environment, Loaded, load};
use crate::store::{Connect, open};

/// The JSON report of `status`.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Which store was read (`redis` or `etcd`).
    pub store: String,
    /// One entry per configured service.
    pub services: Vec<ServiceStatus>,
}

/// One service.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// The service key.
    pub service: String,
    /// `namespace/name` of its Endpoints object.
    pub object: String,
    /// Each target's stored record.
    pub targets: Vec<TargetRecord>,
    /// What was last written.
    pub applied: Option<AppliedRecord>,
    /// The newest transitions, oldest first.
    pub recent_transitions: Vec<TransitionEvent>,
}

/// Runs `status`; returns the exit code.
pub async fn run(args: &StatusArgs, path: &Path, env: &dyn Environment) -> anyhow::Result<u8> {
    let Loaded { config, .. } = load(path, env)?;
    if config.redis.is_none() && config.etcd.is_none() {
        anyhow::bail!(
            "{} uses the in-memory store, which lives inside the running daemon: there is nothing \
             to read from another process. Configure `redis` or `etcd` to share state between \
             replicas and with `epcheck status`",
            path.display()
        );
    }
    let store = open(&config, Connect::Now).await?;
    let mut services = Vec::new();
    for svc in &config.services {
        services.push(ServiceStatus {
            service: svc.key.clone(),
            object: format!("{}/{}", svc.namespace, svc.name),
            targets: store.load_targets(&svc.key).await?,
            applied: store.load_applied(&svc.key).await?,
            recent_transitions: store.recent_events(Some(&svc.key), args.events).await?,
        });
    }
    let report = StatusReport {
        store: store.kind().to_string(),
        services,
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", to_text(&report)),
    }
    Ok(0)
}

fn ago(ms: u64) -> String {
    let secs = state_store::now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        _ => format!("{}h ago", secs / 3600),
    }
}

fn to_text(r: &StatusReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for s in &r.services {
        let up = s
            .targets
            .iter()
            .filter(|t| t.state == state_store::Health::Up)
            .count();
        let _ = writeln!(
            out,
            "{} ({}): {up}/{} up",
            s.service,
            s.object,
            s.targets.len()
        );
        if s.targets.is_empty() {
            let _ = writeln!(out, "  (no state recorded yet)");
        }
        for t in &s.targets {
            let _ = writeln!(
                out,
                "  {:<16} {:<40} {:<7} since {:<9} {}",
                t.name,
                std::net::SocketAddr::new(t.ip, t.port).to_string(),
                t.state.as_str(),
                ago(t.since),
                t.last_error.as_deref().unwrap_or("")
            );
        }
        if let Some(a) = &s.applied {
            let _ = writeln!(
                out,
                "  last written {}: ready [{}] not ready [{}]",
                ago(a.applied_at),
                a.ready.join(", "),
                a.not_ready.join(", ")
            );
        }
        for e in &s.recent_transitions {
            let _ = writeln!(
                out,
                "  {:>9}  {} {} -> {} {}",
                ago(e.at),
                e.target,
                e.from.as_str(),
                e.to.as_str(),
                e.error.as_deref().unwrap_or("")
            );
        }
    }
    out
}
