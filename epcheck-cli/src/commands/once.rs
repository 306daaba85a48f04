//! `epcheck once [--dry-run]`: probe every target once, reconcile every service once, report.

use std::path::Path;

use k8s_endpoints::{ReconcileAction, ReconcileMode};

use crate::apiserver::{connect, server_policy};
use crate::cli::{OnceArgs, OutputFormat};
use crate::config::{Environment, load_logged};
use crate::report::{Action, Report, ServiceReport, TargetReport};
use crate::round::{failsafe_holds, probe_all};
use k8s_endpoints::writer::ObjectWriter;

impl From<ReconcileAction> for Action {
    fn from(a: ReconcileAction) -> Self {
        match a {
            ReconcileAction::Unchanged => Action::Unchanged,
            ReconcileAction::Updated => Action::Updated,
            ReconcileAction::Created => Action::Created,
            ReconcileAction::WouldUpdate => Action::WouldUpdate,
            ReconcileAction::WouldCreate => Action::WouldCreate,
        }
    }
}

/// Runs `once`; returns the exit code: 0 if every service was reconciled (or would be), 1
/// otherwise (a failure, or the fail-safe holding every write).
pub async fn run(
    args: &OnceArgs,
    path: &Path,
    cwd: &Path,
    env: &dyn Environment,
) -> anyhow::Result<u8> {
    let config = load_logged(path, env)?;
    if config.consensus.enabled && !args.dry_run {
        tracing::warn!(
            "consensus.enabled applies to `epcheck run`: `once` writes what this host alone \
             sees, without the other replicas' views"
        );
    }
    let client = connect(&config, cwd, env)?;
    let mode = if args.dry_run {
        ReconcileMode::DryRun
    } else {
        ReconcileMode::Apply
    };
    let concurrency = crate::effective_concurrency(config.concurrency);
    let (round, server) = tokio::join!(probe_all(&config, concurrency), server_policy(&client));
    let held = failsafe_holds(&config, &round);
    if held {
        tracing::error!(
            "fail-safe: every probe failed; nothing is written (epcheck's own network is the \
             likelier fault than every backend at once)"
        );
    }
    let mut services = Vec::new();
    for probes in &round {
        let Some(service) = config.services.get(probes.index) else {
            continue;
        };
        let (ready, not_ready) = (probes.ready(), probes.not_ready());
        let mut report = ServiceReport {
            service: service.key.clone(),
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            action: Action::Held,
            ready: ready.clone(),
            not_ready: not_ready.clone(),
            error: None,
            targets: probes
                .results
                .iter()
                .map(|(t, o)| TargetReport::new(t, o))
                .collect(),
            endpoints: None,
            endpoint_slices: None,
        };
        if held {
            report.error = Some("fail-safe: every probe failed; nothing written".into());
        } else {
            let outcome = match config
                .renderer(service, server.not_ready(service.not_ready))
                .and_then(|r| ObjectWriter::new(r, config.mode, server))
            {
                Ok(writer) => writer.reconcile(&client, &ready, &not_ready, mode).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(o) => {
                    if let Some(unmatched) = &o.unmatched_ports {
                        tracing::warn!(service = %service.key, "{unmatched}");
                    }
                    if o.action.is_write() {
                        tracing::info!(
                            service = %service.key,
                            object = %format!("{}/{}", service.namespace, service.name),
                            action = %o.action,
                            change = %o.change,
                            "endpoints reconciled"
                        );
                    }
                    report.action = o.action.into();
                }
                Err(e) => {
                    tracing::error!(service = %service.key, error = %e, "reconcile failed");
                    report.action = Action::Failed;
                    report.error = Some(format!("{e:#}"));
                }
            }
        }
        services.push(report);
    }
    let report = Report::sorted(services);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", report.to_text()),
    }
    let ok = report
        .services
        .iter()
        .all(|s| !matches!(s.action, Action::Failed | Action::Held));
    Ok(if ok { 0 } else { 1 })
}
