//! What the engine reports: each service's targets after a change, and the status document.

use std::sync::Arc;

use probe_core::Health;

use super::Engine;
use super::consensus::Vote;
use crate::daemon::status::{ServiceStatus, StatusSnapshot, TargetStatus};

impl Engine {
    /// Tells the observers how many of a service's targets are up (and not probed yet).
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
        self.observers
            .service_targets(service, &s.key, ready, total, unknown);
    }

    /// Publishes the status document to the observers.
    pub(super) fn publish_status(&mut self) {
        self.status_dirty = false;
        self.publish_view();
        self.report_consensus();
        let leads = self.leadership.borrow().is_leader;
        // The others' views are read by the leader only.
        let consensus = self.consensus.as_ref().filter(|_| leads);
        let abstaining = self.abstaining();
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
                        views: consensus.map(|link| {
                            link.voters(
                                &s.key,
                                t.target.ip,
                                Vote::of(t.health, abstaining.is_some()),
                            )
                        }),
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
        let leadership = self.leadership.borrow().clone();
        self.observers.status(&Arc::new(StatusSnapshot {
            identity: self.identity.clone(),
            leader: leadership.leader.clone(),
            is_leader: leadership.is_leader,
            failsafe_active: self.holding,
            consensus: self.consensus.as_ref().map(|link| {
                let mut status = link.status(abstaining);
                if !leads {
                    // A follower reads no views: it knows only its own.
                    status.fresh.truncate(1);
                    status.stale.clear();
                    status.holding = None;
                }
                status
            }),
            services,
        }));
    }
}
