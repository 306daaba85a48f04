//! Witness probes: when a target goes down while the fail-safe cannot yet tell its failure from
//! the checker's, a few healthy targets are probed at once; one success proves the checker's
//! network works, so the removal is written without waiting for their next scheduled probes.

use std::sync::Arc;

use rand::Rng as _;
use tokio::sync::mpsc;
use tokio::time::Instant;

use probe_core::{Check, Health, Prober, ProberOptions, Target};

use super::Engine;

/// A witness probe's result: target slot, start time, success.
pub(super) type WitnessResult = (usize, Instant, bool);

/// Witness probes (see [`probe_core::failsafe`]): when a target goes down while the fail-safe cannot
/// yet tell its failure from the checker's, a few healthy targets are probed at once; one
/// success proves the checker's network works, so the removal is written without waiting for
/// their next scheduled probes.
pub(super) struct Witnesses {
    pub(super) prober: Prober,
    pub(super) tx: mpsc::Sender<WitnessResult>,
    pub(super) rx: mpsc::Receiver<WitnessResult>,
    pub(super) in_flight: usize,
}

impl Witnesses {
    /// Witness probes with the probe `timeout`.
    pub(super) fn new(timeout: std::time::Duration) -> Self {
        let (tx, rx) = mpsc::channel(64);
        Witnesses {
            prober: Prober::new(ProberOptions {
                timeout,
                concurrency: WITNESSES * 4,
            }),
            tx,
            rx,
            in_flight: 0,
        }
    }
}

/// How many healthy targets one confirmation probes.
pub(super) const WITNESSES: usize = 3;

impl Engine {
    /// Probes up to [`WITNESSES`] healthy targets other than `failing` right now.
    pub(super) fn probe_witnesses(&mut self, failing: usize) {
        if self.witness.in_flight > 0 {
            return;
        }
        let start = rand::rng().random_range(0..self.targets.len().max(1));
        let picks: Vec<(usize, Target)> = (0..self.targets.len())
            .map(|k| (start + k) % self.targets.len())
            .filter(|&i| i != failing)
            .filter_map(|i| self.targets.get(i).map(|s| (i, s)))
            .filter(|(_, s)| {
                s.health == Health::Up && s.failing_since.is_none() && s.failsafe_index.is_some()
            })
            .take(WITNESSES)
            .map(|(i, s)| (i, s.target.clone()))
            .collect();
        for (i, target) in picks {
            self.witness.in_flight += 1;
            let prober = self.witness.prober.clone();
            let tx = self.witness.tx.clone();
            let check = self
                .services
                .get(self.targets.get(i).map_or(0, |s| s.service))
                .map_or_else(|| Arc::new(Check::tcp()), |s| s.check.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                let outcome = prober.probe(&target, &check).await;
                let _ = tx.send((i, started, outcome.up)).await;
            });
        }
    }

    pub(super) fn on_witness(&mut self, slot: usize, started: Instant, ok: bool) {
        self.witness.in_flight = self.witness.in_flight.saturating_sub(1);
        if let Some(i) = self.targets.get(slot).and_then(|s| s.failsafe_index) {
            self.failsafe.observe(i, ok, started);
        }
        if ok {
            let waiting: Vec<usize> = self
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.awaiting_confirmation || s.dirty)
                .map(|(i, _)| i)
                .collect();
            for i in waiting {
                self.mark_dirty(i);
            }
        }
        self.update_hold();
    }
}
