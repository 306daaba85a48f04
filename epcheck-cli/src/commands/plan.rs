//! `epcheck plan`: probe every target once and print the Endpoints objects that would be
//! written, without contacting the ApiServer.

use std::path::Path;

use k8s_endpoints::slices::SliceRenderer;
use k8s_endpoints::{Renderer, to_yaml};

use crate::cli::{PlanArgs, PlanFormat};
use crate::config::{Environment, Loaded, Mode, load};
use crate::report::{Action, Report, ServiceReport, TargetReport};
use crate::round::{failsafe_holds, probe_all};

/// Runs `plan`; returns the exit code (0).
pub async fn run(args: &PlanArgs, path: &Path, env: &dyn Environment) -> anyhow::Result<u8> {
    let Loaded { config, warnings } = load(path, env)?;
    for w in &warnings {
        tracing::warn!("{}", w.display_with(path));
    }
    let concurrency = crate::effective_concurrency(config.concurrency);
    let round = probe_all(&config, concurrency).await;
    let held = failsafe_holds(&config, &round);
    let mut services = Vec::new();
    for probes in &round {
        let Some(service) = config.services.get(probes.index) else {
            continue;
        };
        let renderer = Renderer::new(
            &config.endpoint_template,
            &service.namespace,
            &service.name,
            service.ports.clone(),
            service.not_ready,
        )?;
        let ready = probes.ready();
        let not_ready = probes.not_ready();
        let endpoints = renderer.render(&ready, &not_ready, None);
        // Offline there is no Service to own the slices: the owner reference's uid is left
        // empty (the daemon fills it in from the live Service).
        let endpoint_slices = match config.mode {
            Mode::EndpointSlice => {
                Some(SliceRenderer::from_renderer(&renderer)?.render("", &ready, &not_ready, &[]))
            }
            Mode::Endpoints => None,
        };
        services.push(ServiceReport {
            service: service.key.clone(),
            namespace: service.namespace.clone(),
            name: service.name.clone(),
            action: if held { Action::Held } else { Action::Planned },
            ready,
            not_ready,
            error: held.then(|| {
                "fail-safe: every probe failed; epcheck would write nothing (its own network is \
                 the likelier fault)"
                    .to_string()
            }),
            targets: probes
                .results
                .iter()
                .map(|(t, o)| TargetReport::new(t, o))
                .collect(),
            endpoints: endpoint_slices.is_none().then_some(endpoints),
            endpoint_slices,
        });
    }
    let report = Report::sorted(services);
    match args.output {
        PlanFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        PlanFormat::Text => print!("{}", report.to_text()),
        PlanFormat::Yaml => {
            if held {
                tracing::error!(
                    "fail-safe: every probe failed; the daemon would hold these writes"
                );
            }
            for s in &report.services {
                if let Some(e) = &s.endpoints {
                    print!("---\n{}", to_yaml(e)?);
                }
                for slice in s.endpoint_slices.iter().flatten() {
                    print!("---\n{}", to_yaml(slice)?);
                }
            }
        }
    }
    Ok(0)
}
