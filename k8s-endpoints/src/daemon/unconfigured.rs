//! Objects this instance wrote for Services no longer in its config (SPEC §9): looked for at
//! start-up and at every resync, each reported once by name, and handed back only with
//! `prune: true` (by the replica that leads).

use std::collections::BTreeSet;
use std::time::Duration;

use std::sync::Arc;

use super::observe::Observer;
use super::spec::DaemonSpec;
use crate::client::{PruneAction, Unconfigured};
use crate::election::LeaderState;
use crate::{Client, Error};
use probe_core::backoff::RetryPolicy;
use tokio::sync::watch;

/// What the daemon needs to look for this instance's unconfigured objects.
pub(super) struct Sweeper {
    client: Client,
    instance: String,
    namespaces: BTreeSet<String>,
    configured: BTreeSet<(String, String)>,
    prune: bool,
    every: Duration,
    leadership: watch::Receiver<LeaderState>,
    observers: Arc<dyn Observer>,
    /// Objects already reported (`kind namespace/name`), so each is logged once.
    reported: BTreeSet<String>,
    /// Namespaces whose listing failed and was logged, so a lasting `403` is logged once.
    failing: BTreeSet<String>,
    /// Objects whose prune failed and was logged, likewise.
    prune_failing: BTreeSet<String>,
}

impl Sweeper {
    pub(super) fn new(
        spec: &DaemonSpec,
        client: Client,
        leadership: watch::Receiver<LeaderState>,
        observers: Arc<dyn Observer>,
    ) -> Self {
        Sweeper {
            // One attempt per listing: a failed look is retried at the next resync, so an
            // ApiServer outage costs it one request per namespace and resync, outside the
            // reconciles' budget of about one a second.
            client: client.with_request_retry(RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::REQUEST
            }),
            instance: spec.instance.clone(),
            namespaces: spec.services.iter().map(|s| s.namespace.clone()).collect(),
            configured: spec
                .services
                .iter()
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .collect(),
            prune: spec.prune,
            every: spec.resync_interval,
            leadership,
            observers,
            reported: BTreeSet::new(),
            failing: BTreeSet::new(),
            prune_failing: BTreeSet::new(),
        }
    }

    /// Looks now and then at every resync, forever (the daemon aborts the task on shutdown).
    pub(super) async fn run(mut self) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep().await;
        }
    }

    async fn sweep(&mut self) {
        let report = self
            .client
            .find_unconfigured(&self.instance, &self.namespaces, &self.configured)
            .await;
        let failed: BTreeSet<String> = report.errors.iter().map(|(ns, _)| ns.clone()).collect();
        for (ns, error) in &report.errors {
            if !self.failing.contains(ns) {
                tracing::warn!(
                    namespace = %ns, %error,
                    "could not look for objects of this epcheck instance whose Service left the config"
                );
            }
        }
        self.failing = failed;
        let mut left = report.objects;
        if self.prune && !left.is_empty() && self.leads() {
            let mut failing = BTreeSet::new();
            left = self
                .prune(left)
                .await
                .into_iter()
                .map(|(object, error)| {
                    if let Some(error) = error {
                        let k = key(&object);
                        if !self.prune_failing.contains(&k) {
                            tracing::warn!(object = %object, %error, "could not prune; trying again at every resync");
                        }
                        failing.insert(k);
                    }
                    object
                })
                .collect();
            self.prune_failing = failing;
        }
        let now: BTreeSet<String> = left.iter().map(key).collect();
        for object in &left {
            if !self.reported.contains(&key(object)) {
                tracing::warn!(
                    object = %object, instance = %self.instance,
                    "this epcheck instance wrote this object, but its Service is no longer in the config: nothing keeps it current any more; `epcheck prune` hands it back (or set prune: true)"
                );
            }
        }
        self.reported = now;
        self.observers.unconfigured(left.len());
    }

    /// Hands `objects` back unless leadership is lost meanwhile; returns those left, each
    /// with the error that kept it, if any.
    async fn prune(&self, objects: Vec<Unconfigured>) -> Vec<(Unconfigured, Option<Error>)> {
        let mut leadership = self.leadership.clone();
        let lost = async move {
            loop {
                if leadership.changed().await.is_err() {
                    // No election (or it ended with the daemon): nothing more can change.
                    std::future::pending::<()>().await;
                }
                if !leadership.borrow().is_leader {
                    return;
                }
            }
        };
        let results = tokio::select! {
            results = self.client.prune(&self.instance, &objects) => results,
            () = lost => {
                tracing::info!("leadership lost: pruning stopped");
                return objects.into_iter().map(|o| (o, None)).collect();
            }
        };
        objects
            .into_iter()
            .zip(results)
            .filter_map(|(object, result)| match result {
                // Kept until the mirroring controller shows its endpoints: the next resync.
                Ok(PruneAction::Waiting) => Some((object, None)),
                Ok(_) => None,
                Err(error) => Some((object, Some(error))),
            })
            .collect()
    }

    fn leads(&self) -> bool {
        self.leadership
            .borrow()
            .leads_at(tokio::time::Instant::now())
    }
}

fn key(object: &Unconfigured) -> String {
    format!("{} {}/{}", object.kind(), object.namespace(), object.name())
}
