//! `epcheck prune [--dry-run]`: hand back the objects this instance wrote for Services that are
//! no longer in the config (SPEC §9), like `kubectl apply --prune`: its EndpointSlices are
//! deleted, its Endpoints objects keep their addresses and lose epcheck's labels.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use k8s_endpoints::client::{PruneAction, Unconfigured};
use k8s_endpoints::escape_control;
use serde::Serialize;
use tokio::time::Instant;

use crate::apiserver::connect;
use crate::cli::{OutputFormat, PruneArgs};
use crate::config::{Environment, load_logged};
use crate::report::count;

/// The report (`-o json`).
#[derive(Debug, Serialize)]
pub struct PruneReport {
    /// This deployment's instance (`epcheck.io/instance`).
    pub instance: String,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Every object found, Endpoints before slices within a namespace.
    pub objects: Vec<PrunedObject>,
    /// Namespaces that could not be searched.
    pub errors: Vec<NamespaceError>,
}

/// One object and what became of it.
#[derive(Debug, Serialize)]
pub struct PrunedObject {
    /// `Endpoints` or `EndpointSlice`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The Service it was written for.
    pub service: String,
    /// `would-release`, `would-delete`, `released`, `deleted`, `gone`, `waiting` (a slice
    /// kept until the mirroring controller shows its endpoints; prune again later) or
    /// `failed`.
    pub action: &'static str,
    /// Why it failed.
    pub error: Option<String>,
}

/// A namespace that could not be searched.
#[derive(Debug, Serialize)]
pub struct NamespaceError {
    /// The namespace.
    pub namespace: String,
    /// Why.
    pub error: String,
}

/// Runs `prune`; returns 0 when every object was handed back (or would be) and every namespace
/// searched, 1 otherwise (a failure, or a slice still waiting for the mirroring controller).
pub async fn run(
    args: &PruneArgs,
    path: &Path,
    cwd: &Path,
    env: &dyn Environment,
) -> anyhow::Result<u8> {
    let config = load_logged(path, env)?;
    let client = connect(&config, cwd, env)?;
    let (namespaces, configured) = (config.namespaces(), config.service_objects());
    let found = client
        .find_unconfigured(&config.instance, &namespaces, &configured)
        .await;
    let mut rows: Vec<PrunedObject> = found
        .objects
        .iter()
        .map(|o| PrunedObject::new(o, would(o), None))
        .collect();
    if !args.dry_run {
        // A slice waits for the mirroring controller to mirror the Endpoints object just
        // handed back; look again for a while, as the daemon would at its next resyncs.
        let deadline = Instant::now() + MIRROR_WAIT;
        let mut objects = found.objects;
        loop {
            let results = client.prune(&config.instance, &objects).await;
            for (o, r) in objects.iter().zip(&results) {
                let row = match r {
                    Ok(a) => PrunedObject::new(o, a.as_str(), None),
                    Err(e) => PrunedObject::new(o, "failed", Some(e.to_string())),
                };
                match rows.iter_mut().find(|x| x.same(&row)) {
                    Some(x) => *x = row,
                    None => rows.push(row),
                }
            }
            let waiting = results
                .iter()
                .any(|r| matches!(r, Ok(PruneAction::Waiting)));
            if !waiting || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            objects = client
                .find_unconfigured(&config.instance, &namespaces, &configured)
                .await
                .objects;
        }
    }
    let report = PruneReport {
        instance: config.instance.clone(),
        dry_run: args.dry_run,
        objects: rows,
        errors: found
            .errors
            .iter()
            .map(|(ns, e)| NamespaceError {
                namespace: ns.clone(),
                error: e.to_string(),
            })
            .collect(),
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", text(&report)),
    }
    let failed = !report.errors.is_empty()
        || report
            .objects
            .iter()
            .any(|o| o.error.is_some() || o.action == PruneAction::Waiting.as_str());
    Ok(u8::from(failed))
}

/// How long `prune` waits for the mirroring controller before it leaves a slice for later.
const MIRROR_WAIT: Duration = Duration::from_secs(20);

impl PrunedObject {
    fn new(o: &Unconfigured, action: &'static str, error: Option<String>) -> Self {
        PrunedObject {
            kind: o.kind(),
            namespace: o.namespace().to_owned(),
            name: o.name().to_owned(),
            service: o.service().to_owned(),
            action,
            error,
        }
    }

    fn same(&self, other: &PrunedObject) -> bool {
        (self.kind, &self.namespace, &self.name) == (other.kind, &other.namespace, &other.name)
    }
}

fn would(object: &Unconfigured) -> &'static str {
    match object {
        Unconfigured::Endpoints(_) => "would-release",
        Unconfigured::Slice(_) => "would-delete",
    }
}

/// The human table. Names and errors came from the ApiServer: control characters are escaped.
pub fn text(report: &PruneReport) -> String {
    let mut out = String::new();
    if !report.objects.is_empty() {
        let rows: Vec<[String; 4]> = report
            .objects
            .iter()
            .map(|o| {
                [
                    o.kind.to_owned(),
                    escape_control(&format!("{}/{}", o.namespace, o.name)).into_owned(),
                    escape_control(&o.service).into_owned(),
                    match &o.error {
                        Some(e) => format!("{}: {}", o.action, escape_control(e)),
                        None => o.action.to_owned(),
                    },
                ]
            })
            .collect();
        let header = ["KIND", "OBJECT", "SERVICE", "ACTION"];
        let width = |c: usize| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        };
        let (w0, w1, w2) = (width(0), width(1), width(2));
        for row in std::iter::once(header.map(str::to_owned)).chain(rows) {
            let _ = writeln!(
                out,
                "{:w0$}  {:w1$}  {:w2$}  {}",
                row[0], row[1], row[2], row[3]
            );
        }
    }
    for e in &report.errors {
        let _ = writeln!(
            out,
            "namespace {}: {}",
            e.namespace,
            escape_control(&e.error)
        );
    }
    let n = count(report.objects.len(), "object");
    let summary = match (report.objects.is_empty(), report.dry_run) {
        (true, _) => format!(
            "no object of epcheck instance {:?} is left for a Service outside the config",
            report.instance
        ),
        (false, true) => format!(
            "{n} of epcheck instance {:?} would be handed back (dry run: nothing changed)",
            report.instance
        ),
        (false, false) => format!(
            "{n} of epcheck instance {:?} whose Service is not in the config",
            report.instance
        ),
    };
    let _ = writeln!(out, "{summary}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(kind: &'static str, name: &str, action: &'static str) -> PrunedObject {
        PrunedObject {
            kind,
            namespace: "apps".into(),
            name: name.into(),
            service: "alpha".into(),
            action,
            error: None,
        }
    }

    #[test]
    fn table_lines_up_and_says_what_happened() {
        let report = PruneReport {
            instance: "team-a".into(),
            dry_run: true,
            objects: vec![
                object("Endpoints", "alpha", "would-release"),
                object("EndpointSlice", "alpha-epcheck-ipv4-0", "would-delete"),
            ],
            errors: vec![],
        };
        assert_eq!(
            text(&report),
            "KIND           OBJECT                     SERVICE  ACTION\n\
             Endpoints      apps/alpha                 alpha    would-release\n\
             EndpointSlice  apps/alpha-epcheck-ipv4-0  alpha    would-delete\n\
             2 objects of epcheck instance \"team-a\" would be handed back (dry run: nothing changed)\n"
        );
    }

    #[test]
    fn nothing_found_is_one_line() {
        let report = PruneReport {
            instance: "epcheck".into(),
            dry_run: false,
            objects: vec![],
            errors: vec![],
        };
        assert_eq!(
            text(&report),
            "no object of epcheck instance \"epcheck\" is left for a Service outside the config\n"
        );
    }
}
