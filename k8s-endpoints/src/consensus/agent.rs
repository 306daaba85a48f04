//! The task that publishes this replica's view and, while it leads, reads everyone's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};

use super::{ConsensusSettings, Posted, View, ViewBoard};
use crate::election::LeaderState;

/// After a publication, the least time before the next one (changes in a burst make one write).
const MIN_GAP: Duration = Duration::from_millis(200);

/// After a failed publication or read, the wait before the next try (at most).
const RETRY: Duration = Duration::from_secs(1);

/// A view stale for this many TTLs is removed from the board by the leader.
const FORGET_AFTER_TTLS: u32 = 10;

/// How long a withdrawal at shutdown may take.
const WITHDRAW_TIMEOUT: Duration = Duration::from_secs(1);

/// What the leader knows of the other replicas' views.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Views {
    /// The fresh views of the other replicas, by replica.
    pub fresh: Vec<View>,
    /// Replicas whose views do not count, and why (stale, unreadable).
    pub stale: Vec<(String, String)>,
    /// The board has not been read within the TTL (or never): nothing is known of the others,
    /// so no decision may be made from this replica's view alone.
    pub unknown: Option<String>,
}

impl Views {
    /// Nothing read yet.
    pub fn not_read() -> Self {
        Views {
            unknown: Some("the views have not been read yet".to_owned()),
            ..Views::default()
        }
    }
}

/// When this reader first saw a view's current version, and since when it has been stale.
#[derive(Debug)]
struct Seen {
    change: Option<String>,
    at: Instant,
    stale_since: Option<Instant>,
    /// Seen to change at least once by this reader.
    changed: bool,
}

/// Publishes this replica's [`View`] on change and every heartbeat; while this replica leads,
/// reads the board every `read_interval` and hands the others' views to the daemon.
pub struct Agent {
    board: Arc<dyn ViewBoard>,
    settings: ConsensusSettings,
    identity: String,
    seen: HashMap<String, Seen>,
    /// The last successful read, and what it found.
    read_ok: Option<Instant>,
    last: Views,
    /// Whether the last publication failed (logged once per run of failures).
    publish_failing: bool,
    read_failing: bool,
}

impl Agent {
    /// An agent for `identity` on `board`.
    pub fn new(board: Arc<dyn ViewBoard>, settings: ConsensusSettings, identity: String) -> Self {
        Agent {
            board,
            settings,
            identity,
            seen: HashMap::new(),
            read_ok: None,
            last: Views::not_read(),
            publish_failing: false,
            read_failing: false,
        }
    }

    /// Runs until `own`'s sender is dropped (the daemon stopped), then withdraws this
    /// replica's view. `out` receives the others' views after every read while leading.
    pub async fn run(
        mut self,
        mut own: watch::Receiver<View>,
        mut leadership: watch::Receiver<LeaderState>,
        out: watch::Sender<Arc<Views>>,
    ) {
        let now = Instant::now();
        let mut publish_at = now;
        let mut last_publish = now.checked_sub(MIN_GAP).unwrap_or(now);
        let mut read_at = now;
        tracing::info!(
            board = %self.board.describe(),
            heartbeat_ms = self.settings.heartbeat.as_millis() as u64,
            ttl_ms = self.settings.ttl.as_millis() as u64,
            "consensus on: publishing this replica's view"
        );
        loop {
            let leading = leadership.borrow().is_leader;
            let next_read = if leading {
                read_at
            } else {
                Instant::now() + Duration::from_secs(3600)
            };
            tokio::select! {
                changed = own.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    // Soon, but not more often than every MIN_GAP.
                    publish_at = publish_at.min((last_publish + MIN_GAP).max(Instant::now()));
                }
                Ok(()) = leadership.changed() => {
                    if leadership.borrow_and_update().is_leader {
                        read_at = Instant::now();
                    } else {
                        self.read_ok = None;
                        let _ = out.send(Arc::new(Views::not_read()));
                    }
                }
                () = sleep_until(publish_at) => {
                    let view = own.borrow_and_update().clone();
                    last_publish = Instant::now();
                    publish_at = last_publish + self.publish(&view).await;
                }
                () = sleep_until(next_read) => {
                    let views = self.read().await;
                    read_at = Instant::now() + self.settings.read_interval;
                    out.send_if_modified(|cur| {
                        if **cur == views {
                            false
                        } else {
                            *cur = Arc::new(views);
                            true
                        }
                    });
                }
            }
        }
        match timeout(WITHDRAW_TIMEOUT, self.board.withdraw(&self.identity)).await {
            Ok(Ok(())) => tracing::info!("consensus: this replica's view withdrawn"),
            Ok(Err(e)) => tracing::warn!(
                error = %crate::election::error_chain(&e),
                "consensus: cannot withdraw this replica's view; it stops counting when its TTL runs out"
            ),
            Err(_) => tracing::warn!(
                "consensus: withdrawing this replica's view timed out; it stops counting when its TTL runs out"
            ),
        }
    }

    /// Publishes `view`; how long until the next publication.
    async fn publish(&mut self, view: &View) -> Duration {
        match self.board.publish(view, self.settings.ttl).await {
            Ok(()) => {
                if std::mem::take(&mut self.publish_failing) {
                    tracing::info!("consensus: this replica's view is published again");
                }
                self.settings.heartbeat
            }
            Err(e) => {
                if !std::mem::replace(&mut self.publish_failing, true) {
                    tracing::warn!(
                        board = %self.board.describe(),
                        error = %crate::election::error_chain(&e),
                        "consensus: cannot publish this replica's view; retrying (the leader stops counting it when its TTL runs out)"
                    );
                }
                RETRY.min(self.settings.heartbeat)
            }
        }
    }

    /// Reads the board and sorts the views into fresh and stale.
    async fn read(&mut self) -> Views {
        let now = Instant::now();
        match self.board.read().await {
            Ok(posted) => {
                if std::mem::take(&mut self.read_failing) {
                    tracing::info!("consensus: the views are read again");
                }
                self.read_ok = Some(now);
                self.sort(posted, now).await
            }
            Err(e) => {
                let text = crate::election::error_chain(&e);
                if !std::mem::replace(&mut self.read_failing, true) {
                    tracing::warn!(
                        board = %self.board.describe(),
                        error = %text,
                        "consensus: cannot read the views; decisions hold once the last read is older than the TTL"
                    );
                }
                match self.read_ok {
                    Some(ok) if now.duration_since(ok) < self.settings.ttl => {
                        // Keep the last picture for now (its views age on the next read).
                        self.last.clone()
                    }
                    _ => Views {
                        unknown: Some(format!("the views cannot be read: {text}")),
                        ..Views::default()
                    },
                }
            }
        }
    }

    /// Sorts what was read into fresh and stale views (this replica's own is left out: the
    /// daemon has it live), and removes views stale for long.
    async fn sort(&mut self, posted: Vec<Posted>, now: Instant) -> Views {
        let ttl = self.settings.ttl;
        let mut views = Views::default();
        let mut present = HashSet::new();
        let mut forget = Vec::new();
        for p in posted {
            if p.replica == self.identity {
                continue;
            }
            present.insert(p.id.clone());
            let seen = self.seen.entry(p.id.clone()).or_insert_with(|| Seen {
                change: p.change.clone(),
                at: now,
                stale_since: None,
                changed: false,
            });
            if seen.change != p.change {
                seen.change.clone_from(&p.change);
                seen.at = now;
                seen.changed = true;
            }
            let unchanged_for = now.duration_since(seen.at);
            let why = if p.expired {
                Some("its TTL ran out".to_owned())
            } else if p.change.is_some() && unchanged_for >= ttl {
                Some(format!(
                    "unchanged for {} ms, over the {} ms TTL",
                    unchanged_for.as_millis(),
                    ttl.as_millis()
                ))
            } else {
                p.view.as_ref().err().cloned()
            };
            match (why, &p.view) {
                (None, Ok(view)) => {
                    seen.stale_since = None;
                    if p.change.is_some() && !seen.changed {
                        // First seen by this reader: it may be the last word of a replica
                        // that died long ago. It counts as a view but votes only once it is
                        // seen to change (within a heartbeat for a live replica).
                        views.fresh.push(View::abstaining(
                            view.replica.clone(),
                            "not yet seen to change by this leader",
                        ));
                    } else {
                        views.fresh.push(view.clone());
                    }
                }
                (why, _) => {
                    let since = *seen.stale_since.get_or_insert(now);
                    if now.duration_since(since) >= ttl * FORGET_AFTER_TTLS {
                        forget.push(p.clone());
                    }
                    views
                        .stale
                        .push((p.replica.clone(), why.unwrap_or_default()));
                }
            }
        }
        self.seen.retain(|id, _| present.contains(id));
        for p in forget {
            match self.board.forget(&p).await {
                Ok(()) => tracing::info!(
                    replica = %p.replica,
                    "consensus: removed a view stale for {FORGET_AFTER_TTLS} TTLs (a replica that stopped without withdrawing it)"
                ),
                Err(e) => tracing::debug!(
                    replica = %p.replica,
                    error = %crate::election::error_chain(&e),
                    "consensus: cannot remove a stale view"
                ),
            }
        }
        views.fresh.sort_by(|a, b| a.replica.cmp(&b.replica));
        views.stale.sort();
        self.log_changes(&views);
        self.last = views.clone();
        views
    }

    /// Logs replicas whose views became stale or fresh since the last read.
    fn log_changes(&self, views: &Views) {
        let was_fresh: HashSet<&str> = self.last.fresh.iter().map(|v| v.replica.as_str()).collect();
        let was_stale: HashSet<&str> = self.last.stale.iter().map(|(r, _)| r.as_str()).collect();
        for (replica, why) in &views.stale {
            if !was_stale.contains(replica.as_str()) {
                tracing::warn!(replica = %replica, reason = %why, "consensus: a replica's view does not count");
            }
        }
        for v in &views.fresh {
            if !was_fresh.contains(v.replica.as_str()) {
                tracing::info!(replica = %v.replica, "consensus: a replica's view counts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;
    use crate::error::Error;

    /// A board in memory: `posted` is what a read returns, or an error when `None`.
    #[derive(Default)]
    struct MemBoard {
        posted: Mutex<Option<Vec<Posted>>>,
        published: Mutex<Vec<View>>,
        forgotten: Mutex<Vec<String>>,
        withdrawn: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl ViewBoard for MemBoard {
        async fn publish(&self, view: &View, _ttl: Duration) -> Result<(), Error> {
            self.published.lock().unwrap().push(view.clone());
            Ok(())
        }
        async fn read(&self) -> Result<Vec<Posted>, Error> {
            self.posted.lock().unwrap().clone().ok_or(Error::Lock {
                lock: "mem".into(),
                problem: "down".into(),
                source: None,
            })
        }
        async fn withdraw(&self, replica: &str) -> Result<(), Error> {
            self.withdrawn.lock().unwrap().push(replica.to_owned());
            Ok(())
        }
        async fn forget(&self, posted: &Posted) -> Result<(), Error> {
            self.forgotten.lock().unwrap().push(posted.id.clone());
            if let Some(list) = self.posted.lock().unwrap().as_mut() {
                list.retain(|p| p.id != posted.id);
            }
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    fn settings() -> ConsensusSettings {
        ConsensusSettings {
            quorum: None,
            heartbeat: Duration::from_millis(400),
            ttl: Duration::from_millis(1500),
            read_interval: Duration::from_millis(200),
        }
    }

    fn view_of(replica: &str, down: &[&str]) -> View {
        let ips = down.iter().map(|i| i.parse().unwrap()).collect();
        View::voting(replica, BTreeMap::from([("web".to_owned(), ips)]))
    }

    fn posted(replica: &str, view: View, change: Option<&str>, expired: bool) -> Posted {
        Posted {
            id: format!("id-{replica}"),
            replica: replica.to_owned(),
            view: Ok(view),
            change: change.map(str::to_owned),
            expired,
        }
    }

    struct Running {
        board: Arc<MemBoard>,
        own: watch::Sender<View>,
        out: watch::Receiver<Arc<Views>>,
        _leader: watch::Sender<LeaderState>,
        task: tokio::task::JoinHandle<()>,
    }

    fn run(board: Arc<MemBoard>) -> Running {
        let (own, own_rx) = watch::channel(View::abstaining("me", "starting"));
        let (leader, leader_rx) = watch::channel(LeaderState::standalone("me"));
        let (out_tx, out) = watch::channel(Arc::new(Views::not_read()));
        let agent = Agent::new(board.clone(), settings(), "me".into());
        let task = tokio::spawn(agent.run(own_rx, leader_rx, out_tx));
        Running {
            board,
            own,
            out,
            _leader: leader,
            task,
        }
    }

    async fn after(ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_view_votes_once_seen_to_change_and_goes_stale_after_the_ttl() {
        let board = Arc::new(MemBoard::default());
        let b = view_of("b", &["198.51.100.1"]);
        *board.posted.lock().unwrap() = Some(vec![
            posted("b", b.clone(), Some("1"), false),
            // This replica's own view is left out: the daemon has it live.
            posted("me", view_of("me", &[]), Some("9"), false),
        ]);
        let r = run(board.clone());
        after(50).await;
        let views = r.out.borrow().clone();
        assert_eq!(views.unknown, None);
        assert_eq!(views.fresh.len(), 1);
        assert_eq!(
            views.fresh[0].abstain.as_deref(),
            Some("not yet seen to change by this leader"),
            "a view first seen may be a dead replica's last word"
        );
        // Its next heartbeat changes the version: now it votes.
        *board.posted.lock().unwrap() = Some(vec![posted("b", b.clone(), Some("2"), false)]);
        after(250).await;
        assert_eq!(r.out.borrow().fresh, vec![b.clone()]);
        // No change for a TTL on this reader's clock: stale (at the first read past it).
        after(1600).await;
        let views = r.out.borrow().clone();
        assert!(views.fresh.is_empty());
        assert_eq!(views.stale.len(), 1);
        assert!(
            views.stale[0].1.contains("over the 1500 ms TTL"),
            "{:?}",
            views.stale
        );
        assert!(r.board.forgotten.lock().unwrap().is_empty());
        // Stale for ten TTLs: removed from the board.
        after(15_200).await;
        assert_eq!(*r.board.forgotten.lock().unwrap(), vec!["id-b".to_owned()]);
        drop(r.own);
        r.task.await.unwrap();
        assert_eq!(*board.withdrawn.lock().unwrap(), vec!["me".to_owned()]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_redis_view_counts_while_its_key_lives() {
        let board = Arc::new(MemBoard::default());
        let b = view_of("b", &[]);
        *board.posted.lock().unwrap() = Some(vec![posted("b", b.clone(), None, false)]);
        let r = run(board.clone());
        after(50).await;
        assert_eq!(
            r.out.borrow().fresh,
            vec![b.clone()],
            "the key's TTL is Redis's to keep"
        );
        let mut gone = posted("b", b, None, true);
        gone.view = Err("expired".into());
        *board.posted.lock().unwrap() = Some(vec![gone]);
        after(250).await;
        let views = r.out.borrow().clone();
        assert!(views.fresh.is_empty());
        assert_eq!(
            views.stale,
            vec![("b".to_owned(), "its TTL ran out".to_owned())]
        );
        drop(r.own);
        r.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_is_published_on_change_and_every_heartbeat() {
        let board = Arc::new(MemBoard::default());
        *board.posted.lock().unwrap() = Some(Vec::new());
        let r = run(board.clone());
        after(50).await;
        assert_eq!(
            board.published.lock().unwrap().len(),
            1,
            "published at start"
        );
        // Unchanged: one write per heartbeat.
        after(1200).await;
        assert_eq!(board.published.lock().unwrap().len(), 4);
        // Three changes in a burst: published together, after at most the minimum gap.
        for down in [
            &["198.51.100.1"][..],
            &["198.51.100.1", "198.51.100.2"],
            &["198.51.100.2"],
        ] {
            r.own.send_replace(view_of("me", down));
        }
        after(210).await;
        let published = board.published.lock().unwrap().clone();
        assert_eq!(published.len(), 5, "{published:?}");
        assert_eq!(published[4], view_of("me", &["198.51.100.2"]));
        drop(r.own);
        r.task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn unreadable_views_hold_decisions_once_the_last_read_is_a_ttl_old() {
        let board = Arc::new(MemBoard::default());
        let b = view_of("b", &[]);
        *board.posted.lock().unwrap() = Some(vec![posted("b", b.clone(), None, false)]);
        let r = run(board.clone());
        after(50).await;
        assert_eq!(r.out.borrow().fresh.len(), 1);
        *board.posted.lock().unwrap() = None;
        after(1000).await;
        assert_eq!(
            r.out.borrow().fresh,
            vec![b],
            "a short failure keeps the last picture"
        );
        after(700).await;
        let views = r.out.borrow().clone();
        assert!(views.fresh.is_empty());
        assert!(
            views
                .unknown
                .as_deref()
                .unwrap_or_default()
                .contains("cannot be read"),
            "{views:?}"
        );
        drop(r.own);
        r.task.await.unwrap();
    }
}
