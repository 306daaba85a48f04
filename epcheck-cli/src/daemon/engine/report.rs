//! What the engine reports: service gauges, service notifications and the `/status` document.

use std::time::SystemTime;

use probe_core::Health;

use super::Engine;
use crate::notify::NotifyEvent;
use crate::server::{ServiceStatus, StatusSnapshot, TargetStatus};

impl Engine {
    /// Sets a service's ready/configured gauges from its targets' health, and notifies a change
    /// of its HEALTHY/DEGRADED/DOWN state once every target's health is known.
    pub(super) fn update_service_gauges(&mut self, service: usize) {
        let Some(s) = self.services.get(service) else {
            return;
        };
        let health = s
            .targets
            .iter()
            .filter_map(|&i| self.targets.get(i))
            .map(|t| t.health);
        let (mut ready, mut unknown) = (0, 0);
        for h in health {
            ready += usize::from(h == Health::Up);
            unknown += usize::from(h == Health::Unknown);
        }
        let total = s.targets.len();
        s.metrics.set_endpoints(ready, total);
        if unknown == 0
            && let Some(event) =
                self.service_health
                    .observe(&s.key, ready, total, SystemTime::now())
        {
            self.telemetry.notifier.notify(NotifyEvent::Service(event));
        }
    }

    /// Publishes the `/status` document.
    pub(super) fn publish_status(&mut self) {
        self.status_dirty = false;
        let services = self
            .services
            .iter()
            .map(|s| {
                let targets: Vec<TargetStatus> = s
                    .targets
                    .iter()
                    .filter_map(|&i| self.targets.get(i))
                    .map(|t| TargetStatus {
                        name: t.target.name.to_string(),
                        ip: t.target.ip,
                        port: t.target.port,
                        state: t.health,
                        since: Some(t.since),
                        last_error: t.last_error.clone(),
                        last_probe: t.last_probe,
                    })
                    .collect();
                ServiceStatus {
                    service: s.key.clone(),
                    namespace: s.writer.namespace().to_string(),
                    name: s.writer.name().to_string(),
                    ready: targets.iter().filter(|t| t.state == Health::Up).count(),
                    configured: targets.len(),
                    last_reconcile: s.last_reconcile,
                    error: s.last_error.clone(),
                    targets,
                }
            })
            .collect();
        let leadership = self.telemetry.leadership.borrow().clone();
        self.telemetry.status.send_replace(StatusSnapshot {
            identity: self.telemetry.identity.clone(),
            leader: leadership.leader.clone(),
            is_leader: leadership.is_leader,
            failsafe_active: self.holding,
            services,
        });
    }
}
