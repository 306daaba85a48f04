//! `epcheck plan`: probe every target once and print the Endpoints objects that would be
//! written, without contacting the ApiServer.
//!
//! With no ApiServer there is no Service to read, so two things are said instead of shown, as
//! YAML comments above each service's objects: the port names the Service must have for
//! kube-proxy to route to these endpoints (it matches ports by name; `once --dry-run` and the
//! daemon check them against the Service, SPEC §9), and, for EndpointSlices, that the owner
//! reference to the Service is added when epcheck writes them (it needs the Service's uid).

use std::path::Path;

use k8s_endpoints::slices::SliceRenderer;
use k8s_endpoints::{EndpointPort, to_yaml};

use crate::cli::{PlanArgs, PlanFormat};
use crate::config::{Environment, Mode, load_logged};
use crate::report::{Action, Report, ServiceReport, TargetReport};
use crate::round::{failsafe_holds, probe_all};

/// Runs `plan`; returns the exit code (0).
pub async fn run(args: &PlanArgs, path: &Path, env: &dyn Environment) -> anyhow::Result<u8> {
    let config = load_logged(path, env)?;
    let concurrency = crate::effective_concurrency(config.concurrency);
    let round = probe_all(&config, concurrency).await;
    let held = failsafe_holds(&config, &round);
    let mut services = Vec::new();
    // By service key: the report may list services in another order than the config.
    let mut notes = std::collections::BTreeMap::new();
    for probes in &round {
        let Some(service) = config.services.get(probes.index) else {
            continue;
        };
        let renderer = config.renderer(service, service.not_ready)?;
        let ready = probes.ready();
        let not_ready = probes.not_ready();
        notes.insert(
            service.key.clone(),
            offline_notes(
                &service.namespace,
                &service.name,
                renderer.ports(),
                config.mode == Mode::EndpointSlice,
            ),
        );
        let endpoints = renderer.render(&ready, &not_ready, None);
        // Offline there is no Service to own the slices: no owner reference (an empty uid
        // leaves it out; the daemon adds it with the live Service's uid).
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
                let notes = notes.get(&s.service).map_or("", String::as_str);
                if let Some(e) = &s.endpoints {
                    print!("---\n{notes}{}", to_yaml(e)?);
                }
                for slice in s.endpoint_slices.iter().flatten() {
                    print!("---\n{notes}{}", to_yaml(slice)?);
                }
            }
        }
    }
    Ok(0)
}

/// What `plan` cannot check or fill in without the Service, as YAML comment lines.
fn offline_notes(namespace: &str, name: &str, ports: &[EndpointPort], slices: bool) -> String {
    // Port names are checked RFC 1123 labels, required when there are several ports.
    let names: Vec<&str> = ports.iter().filter_map(|p| p.name.as_deref()).collect();
    let needs = match names.as_slice() {
        [] | [""] => "one port without a name".to_owned(),
        names => format!("ports named {}", names.join(", ")),
    };
    let mut out = format!(
        "# Service {namespace}/{name} needs {needs} (kube-proxy matches ports by name); plan \
         reads no Service, `epcheck once --dry-run` checks it\n"
    );
    if slices {
        out.push_str(&format!(
            "# ownerReferences: added when epcheck writes the slice, naming Service \
             {namespace}/{name} by its uid (plan reads no Service)\n"
        ));
    }
    out
}
