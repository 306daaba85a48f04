//! Multi-vantage consensus in the daemon (SPEC §9.1): this replica's [`View`] from its own
//! targets, and — while it leads — a [`Verdict`] per target from every fresh view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use probe_core::Health;
use tokio::sync::watch;

use crate::consensus::{Tally, Verdict, View, Views};
use crate::daemon::status::{ConsensusStatus, TargetViews};

/// This replica's own vote on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vote {
    Up,
    Down,
    Abstain,
}

impl Vote {
    /// The vote of a target in `health`, by a replica that abstains or not.
    pub(super) fn of(health: Health, abstaining: bool) -> Vote {
        match health {
            _ if abstaining => Vote::Abstain,
            Health::Up => Vote::Up,
            Health::Down => Vote::Down,
            Health::Unknown => Vote::Abstain,
        }
    }
}

/// The daemon's end of the consensus [`Agent`](crate::consensus::Agent).
pub(crate) struct Link {
    identity: String,
    quorum: Option<usize>,
    own: watch::Sender<View>,
    views: watch::Receiver<Arc<Views>>,
    current: Arc<Views>,
    /// Why every decision holds, as last logged.
    holding: Option<String>,
}

impl Link {
    /// The daemon's end: it sends its view on `own` and receives the others' on `views`.
    pub(crate) fn new(
        identity: String,
        quorum: Option<usize>,
        own: watch::Sender<View>,
        views: watch::Receiver<Arc<Views>>,
    ) -> Self {
        let current = views.borrow().clone();
        Link {
            identity,
            quorum,
            own,
            views,
            current,
            holding: None,
        }
    }

    /// Resolves when the agent has new views (never, once the agent is gone).
    pub(super) async fn changed(link: &mut Option<Link>) {
        if let Some(l) = link
            && l.views.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }

    /// Takes the new views; logs when decisions start or stop holding for lack of views.
    pub(super) fn take_views(&mut self) {
        self.current = self.views.borrow_and_update().clone();
        let reason = self.hold_reason();
        if reason != self.holding {
            match &reason {
                Some(r) => tracing::warn!(
                    reason = %r,
                    "consensus: holding the last written state of every target until enough views count"
                ),
                None => tracing::info!(
                    fresh_views = self.current.fresh.len() + 1,
                    "consensus: enough views count again; decisions resume"
                ),
            }
            self.holding = reason;
        }
    }

    /// Why no target may change now, if so: the views are unknown, or fewer are fresh than a
    /// configured quorum.
    pub(super) fn hold_reason(&self) -> Option<String> {
        if let Some(why) = &self.current.unknown {
            return Some(why.clone());
        }
        let fresh = self.current.fresh.len() + 1;
        match self.quorum {
            Some(q) if q > fresh => Some(format!(
                "{fresh} fresh views (this replica's included), fewer than consensus.quorum {q}"
            )),
            _ => None,
        }
    }

    /// The votes on `ip` of `service`; `local` is this replica's.
    pub(super) fn tally(&self, service: &str, ip: IpAddr, local: Vote) -> Tally {
        let mut t = Tally {
            views: 1,
            ..Tally::default()
        };
        match local {
            Vote::Up => t.up += 1,
            Vote::Down => t.down += 1,
            Vote::Abstain => t.abstain += 1,
        }
        for v in &self.current.fresh {
            if v.abstain.is_some() {
                t.views += 1;
                t.abstain += 1;
            } else if let Some(down) = v.down.get(service) {
                t.views += 1;
                if down.contains(&ip) {
                    t.down += 1;
                    t.remote_down += 1;
                } else {
                    t.up += 1;
                }
            }
        }
        t
    }

    /// The verdict on `ip`, holding when [`hold_reason`](Self::hold_reason) says so.
    pub(super) fn verdict(&self, tally: &Tally, holding: bool) -> Verdict {
        if holding {
            Verdict::Hold
        } else {
            tally.verdict(self.quorum)
        }
    }

    /// Which replicas see `ip` of `service` up, down, or abstain.
    pub(super) fn voters(&self, service: &str, ip: IpAddr, local: Vote) -> TargetViews {
        let mut out = TargetViews::default();
        let mut put = |replica: &str, vote: Vote| {
            let list = match vote {
                Vote::Up => &mut out.up,
                Vote::Down => &mut out.down,
                Vote::Abstain => &mut out.abstain,
            };
            list.push(replica.to_owned());
        };
        put(&self.identity, local);
        for v in &self.current.fresh {
            if v.abstain.is_some() {
                put(&v.replica, Vote::Abstain);
            } else if let Some(down) = v.down.get(service) {
                put(
                    &v.replica,
                    if down.contains(&ip) {
                        Vote::Down
                    } else {
                        Vote::Up
                    },
                );
            }
        }
        out
    }

    /// The consensus part of the status document.
    pub(super) fn status(&self, abstaining: Option<&str>) -> ConsensusStatus {
        let mut fresh = vec![self.identity.clone()];
        let mut abstain = Vec::new();
        if let Some(why) = abstaining {
            abstain.push(format!("{}: {why}", self.identity));
        }
        for v in &self.current.fresh {
            fresh.push(v.replica.clone());
            if let Some(why) = &v.abstain {
                abstain.push(format!("{}: {why}", v.replica));
            }
        }
        ConsensusStatus {
            quorum: self.quorum,
            fresh,
            abstaining: abstain,
            stale: self
                .current
                .stale
                .iter()
                .map(|(r, why)| format!("{r}: {why}"))
                .collect(),
            holding: self.hold_reason(),
        }
    }

    /// How many fresh views there are (this replica's included), how many abstain, how many
    /// are stale.
    pub(super) fn counts(&self, abstaining: bool) -> (usize, usize, usize) {
        let remote_abstain = self
            .current
            .fresh
            .iter()
            .filter(|v| v.abstain.is_some())
            .count();
        (
            self.current.fresh.len() + 1,
            remote_abstain + usize::from(abstaining),
            self.current.stale.len(),
        )
    }

    /// Hands this replica's view to the agent if it changed.
    pub(super) fn publish(
        &self,
        abstain: Option<String>,
        down: BTreeMap<String, BTreeSet<IpAddr>>,
    ) {
        let view = match abstain {
            Some(why) => View::abstaining(self.identity.clone(), why),
            None => View::voting(self.identity.clone(), down),
        };
        self.own.send_if_modified(|cur| {
            if *cur == view {
                false
            } else {
                *cur = view;
                true
            }
        });
    }
}
