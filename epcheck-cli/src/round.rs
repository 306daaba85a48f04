//! One probe round over every configured target: what `plan` and `once` start with.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use probe_core::{Check, ProbeOutcome, Prober, ProberOptions, Target};

use crate::config::{Config, FailsafeMode, ServiceConfig};

/// The probe results of one service.
#[derive(Debug, Clone)]
pub struct ServiceProbes {
    /// Index of the service in [`Config::services`].
    pub index: usize,
    /// Each target with its outcome, in config order.
    pub results: Vec<(Target, ProbeOutcome)>,
}

impl ServiceProbes {
    /// IPs of targets that passed.
    pub fn ready(&self) -> Vec<IpAddr> {
        self.results
            .iter()
            .filter(|(_, o)| o.up)
            .map(|(t, _)| t.ip)
            .collect()
    }

    /// IPs of targets that failed.
    pub fn not_ready(&self) -> Vec<IpAddr> {
        self.results
            .iter()
            .filter(|(_, o)| !o.up)
            .map(|(t, _)| t.ip)
            .collect()
    }
}

/// The targets of one service, ready to probe.
pub fn service_targets(service: &ServiceConfig) -> Vec<Target> {
    let key: Arc<str> = Arc::from(service.key.as_str());
    service
        .targets
        .iter()
        .map(|t| Target::new(key.clone(), t.name.as_str(), t.ip, service.port))
        .collect()
}

/// Probes every target of every service once, `concurrency` at a time overall. Services with
/// their own `probe.timeout` are probed with it.
pub async fn probe_all(config: &Config, concurrency: usize) -> Vec<ServiceProbes> {
    // One prober per distinct timeout, all running at once; the concurrency budget is shared
    // out in proportion to the number of targets.
    let mut by_timeout: BTreeMap<Duration, Vec<(usize, Target, Arc<Check>)>> = BTreeMap::new();
    for (index, service) in config.services.iter().enumerate() {
        let check = Arc::new(service.probe.check.clone());
        for target in service_targets(service) {
            by_timeout.entry(service.probe.timeout).or_default().push((
                index,
                target,
                check.clone(),
            ));
        }
    }
    let total = config.target_count().max(1);
    let rounds = by_timeout.into_iter().map(|(timeout, items)| {
        let share = (concurrency * items.len()).div_ceil(total).max(1);
        async move {
            let prober = Prober::new(ProberOptions {
                timeout,
                concurrency: share,
            });
            let requests: Vec<(Target, Arc<Check>)> = items
                .iter()
                .map(|(_, t, c)| (t.clone(), c.clone()))
                .collect();
            let outcomes = prober.probe_all(&requests).await;
            items
                .into_iter()
                .zip(outcomes)
                .map(|((index, target, _), outcome)| (index, target, outcome))
                .collect::<Vec<_>>()
        }
    });
    let mut out: Vec<ServiceProbes> = (0..config.services.len())
        .map(|index| ServiceProbes {
            index,
            results: Vec::new(),
        })
        .collect();
    for batch in futures::future::join_all(rounds).await {
        for (index, target, outcome) in batch {
            if let Some(s) = out.get_mut(index) {
                s.results.push((target, outcome));
            }
        }
    }
    out
}

/// Whether the fail-safe holds every write after this round (SPEC §5.4): every probed target of
/// every service failed and there are at least `min_targets` of them — the checker's own network
/// is then the likelier fault. Targets without a probe (`port: 0`) do not count either way.
pub fn failsafe_holds(config: &Config, round: &[ServiceProbes]) -> bool {
    let probed = round
        .iter()
        .filter(|s| {
            config
                .services
                .get(s.index)
                .is_some_and(|svc| !matches!(svc.probe.check, Check::Static))
        })
        .flat_map(|s| s.results.iter().map(|(_, o)| o.up));
    probe_core::failsafe::FailSafe::holds_after_round(
        config.failsafe.mode == FailsafeMode::Hold,
        config.failsafe.min_targets,
        probed,
    )
}
