//! `LeaderElector` over an in-memory `Lock`, with tokio's clock paused: the timing rules of
//! SPEC §9 checked to the millisecond, including a leader whose lock calls hang.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_endpoints::Error;
use k8s_endpoints::election::{
    ElectionConfig, LeaderElector, LeaderRecord, LeaderState, Lock, TtlElector, TtlLock, Version,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const LEASE: Duration = Duration::from_secs(2);
const RENEW: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_millis(200);

/// One stored record with a version counter, shared by every candidate's handle.
#[derive(Default)]
struct Store {
    record: Option<(LeaderRecord, u64)>,
    /// Identities whose calls never return.
    hung: HashSet<String>,
    /// Successful writes: (when, record).
    writes: Vec<(Instant, LeaderRecord)>,
}

#[derive(Clone)]
struct MemLock {
    store: Arc<Mutex<Store>>,
    identity: String,
}

impl MemLock {
    async fn hang_if_cut(&self) {
        let hung = self.store.lock().unwrap().hung.contains(&self.identity);
        if hung {
            std::future::pending::<()>().await;
        }
    }

    fn write(&self, record: &LeaderRecord, expect: Option<u64>) -> Result<Version, Error> {
        let mut s = self.store.lock().unwrap();
        let current = s.record.as_ref().map(|(_, v)| *v);
        if current != expect {
            return Err(Error::Lock {
                lock: "mem".into(),
                problem: format!("version {current:?} is not {expect:?}"),
                source: None,
            });
        }
        let v = current.unwrap_or(0) + 1;
        s.record = Some((record.clone(), v));
        s.writes.push((Instant::now(), record.clone()));
        Ok(Version(v.to_string()))
    }
}

impl Lock for MemLock {
    async fn get(&self) -> Result<Option<(LeaderRecord, Version)>, Error> {
        self.hang_if_cut().await;
        let s = self.store.lock().unwrap();
        Ok(s.record
            .as_ref()
            .map(|(r, v)| (r.clone(), Version(v.to_string()))))
    }

    async fn create(&self, record: &LeaderRecord) -> Result<Version, Error> {
        self.hang_if_cut().await;
        self.write(record, None)
    }

    async fn update(&self, record: &LeaderRecord, version: &Version) -> Result<Version, Error> {
        self.hang_if_cut().await;
        self.write(record, Some(version.0.parse().unwrap()))
    }

    fn identity(&self) -> &str {
        &self.identity
    }

    fn describe(&self) -> String {
        "memory lock".into()
    }
}

struct Candidate {
    rx: watch::Receiver<LeaderState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

fn start(store: &Arc<Mutex<Store>>, identity: &str) -> Candidate {
    let lock = MemLock {
        store: Arc::clone(store),
        identity: identity.into(),
    };
    let config = ElectionConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..ElectionConfig::new(identity)
    };
    let elector = LeaderElector::new(lock, config).unwrap();
    let rx = elector.subscribe();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(elector.run(async {
        let _ = stopped.await;
    }));
    Candidate {
        rx,
        stop: Some(stop),
        task,
    }
}

/// Waits until `c` reports `is_leader == want`; returns when (the state's `since`).
async fn until_leader(c: &mut Candidate, want: bool) -> Instant {
    let state =
        c.rx.wait_for(|s| s.is_leader == want)
            .await
            .expect("the elector is running");
    state.since
}

fn last_write_by(store: &Arc<Mutex<Store>>, who: &str) -> (Instant, LeaderRecord) {
    let s = store.lock().unwrap();
    s.writes
        .iter()
        .rev()
        .find(|(_, r)| r.holder_identity == who)
        .cloned()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_acquire_time_and_transitions() {
    let store = Arc::new(Mutex::new(Store::default()));
    let t0 = Instant::now();
    let mut a = start(&store, "a");
    let since = until_leader(&mut a, true).await;
    assert_eq!(since, t0, "a free lock is taken at once");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = store.lock().unwrap();
    assert!(
        s.writes.len() >= 15,
        "renewed every retry_period: {}",
        s.writes.len()
    );
    let first = &s.writes[0].1;
    assert_eq!(first.lease_duration_seconds, 2);
    for (_, r) in &s.writes {
        assert_eq!(r.holder_identity, "a");
        assert_eq!(r.acquire_time, first.acquire_time);
        assert_eq!(r.lease_transitions, 0);
    }
    assert!(a.rx.borrow().leads_at(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_hung_leader_stops_before_the_lease_can_expire() {
    let store = Arc::new(Mutex::new(Store::default()));
    let mut a = start(&store, "a");
    until_leader(&mut a, true).await;
    let mut b = start(&store, "b");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.rx.borrow().is_leader);
    assert_eq!(b.rx.borrow().leader.as_deref(), Some("a"));

    // Every call of a's now hangs, the renewal in flight included.
    store.lock().unwrap().hung.insert("a".into());
    let a_false = until_leader(&mut a, false).await;
    let b_true = until_leader(&mut b, true).await;
    let (last_renew, _) = last_write_by(&store, "a");
    // The term ends exactly renew_deadline after the last renewal started (paused clock:
    // the write happened at the instant it started).
    assert_eq!(a_false - last_renew, RENEW);
    assert!(b_true > a_false);
    assert!(b_true - last_renew >= LEASE, "{:?}", b_true - last_renew);
    // b saw the last renewal within one jittered retry, and tries again within another.
    assert!(b_true - last_renew <= LEASE + RETRY.mul_f64(2.4));
    let (_, taken) = last_write_by(&store, "b");
    assert_eq!(taken.lease_transitions, 1);
    assert!(!a.rx.borrow().leads_at(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_killed_leader_is_replaced_after_one_lease_duration() {
    let store = Arc::new(Mutex::new(Store::default()));
    let mut a = start(&store, "a");
    until_leader(&mut a, true).await;
    let mut b = start(&store, "b");
    let mut c = start(&store, "c");
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.task.abort();
    let killed = Instant::now();
    let (last_renew, _) = last_write_by(&store, "a");
    let next = tokio::select! {
        t = until_leader(&mut b, true) => t,
        t = until_leader(&mut c, true) => t,
    };
    assert!(next - last_renew >= LEASE);
    assert!(
        next - killed <= LEASE + RETRY.mul_f64(2.4),
        "{:?}",
        next - killed
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(b.rx.borrow().is_leader ^ c.rx.borrow().is_leader);
}

#[tokio::test(start_paused = true)]
async fn release_hands_over_within_a_retry_period() {
    let store = Arc::new(Mutex::new(Store::default()));
    let mut a = start(&store, "a");
    until_leader(&mut a, true).await;
    let mut b = start(&store, "b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let transitions = last_write_by(&store, "a").1.lease_transitions;
    a.stop.take().unwrap().send(()).unwrap();
    a.task.await.unwrap();
    let a_false = a.rx.borrow().since;
    assert!(!a.rx.borrow().is_leader);
    let released = store.lock().unwrap().record.clone().unwrap().0;
    assert_eq!(released.holder(), None);
    assert_eq!(released.lease_duration_seconds, 1);
    let b_true = until_leader(&mut b, true).await;
    assert!(
        b_true - a_false <= RETRY.mul_f64(1.2),
        "{:?}",
        b_true - a_false
    );
    let (_, taken) = last_write_by(&store, "b");
    assert_eq!(taken.lease_transitions, transitions + 1);
    assert_ne!(taken.acquire_time, None);
    // b does not release what it does not hold after a failed shutdown of a: nothing else
    // was written by a.
    assert_eq!(
        store
            .lock()
            .unwrap()
            .writes
            .iter()
            .filter(|(_, r)| r.holder().is_none())
            .count(),
        1
    );
    drop(b.stop.take());
}

/// A key with a time-to-live on the (paused) tokio clock, like a Redis lock key.
#[derive(Default)]
struct TtlState {
    /// `(holder, expires)`.
    key: Option<(String, Instant)>,
    /// Successful takes and renewals: (when, who).
    writes: Vec<(Instant, String)>,
    /// Identities whose calls hang.
    hung: HashSet<String>,
}

#[derive(Clone, Default)]
struct TtlKey {
    state: Arc<Mutex<TtlState>>,
}

struct TtlHandle(TtlKey);

impl TtlHandle {
    async fn call<T>(&self, id: &str, f: impl FnOnce(&mut Option<(String, Instant)>) -> T) -> T {
        let hung = self.0.state.lock().unwrap().hung.contains(id);
        if hung {
            std::future::pending::<()>().await;
        }
        let mut s = self.0.state.lock().unwrap();
        let now = Instant::now();
        if s.key.as_ref().is_some_and(|(_, exp)| *exp <= now) {
            s.key = None;
        }
        f(&mut s.key)
    }

    fn log(&self, id: &str) {
        let mut s = self.0.state.lock().unwrap();
        s.writes.push((Instant::now(), id.to_owned()));
    }
}

impl TtlLock for TtlHandle {
    async fn acquire(&self, id: &str, ttl: Duration) -> Result<bool, Error> {
        let now = Instant::now();
        let ok = self
            .call(id, |k| match k {
                Some((h, _)) if h != id => false,
                _ => {
                    *k = Some((id.to_owned(), now + ttl));
                    true
                }
            })
            .await;
        if ok {
            self.log(id);
        }
        Ok(ok)
    }

    async fn renew(&self, id: &str, ttl: Duration) -> Result<bool, Error> {
        let now = Instant::now();
        let ok = self
            .call(id, |k| match k {
                Some((h, exp)) if h == id => {
                    *exp = now + ttl;
                    true
                }
                _ => false,
            })
            .await;
        if ok {
            self.log(id);
        }
        Ok(ok)
    }

    async fn release(&self, id: &str) -> Result<bool, Error> {
        Ok(self
            .call(id, |k| {
                let mine = k.as_ref().is_some_and(|(h, _)| h == id);
                if mine {
                    *k = None;
                }
                mine
            })
            .await)
    }

    async fn holder(&self) -> Result<Option<String>, Error> {
        Ok(self.call("", |k| k.as_ref().map(|(h, _)| h.clone())).await)
    }

    fn describe(&self) -> String {
        "ttl key".into()
    }
}

fn start_ttl(key: &TtlKey, id: &str) -> (watch::Receiver<LeaderState>, JoinHandle<()>) {
    let config = ElectionConfig {
        lease_duration: LEASE,
        renew_deadline: RENEW,
        retry_period: RETRY,
        ..ElectionConfig::new(id)
    };
    let elector = TtlElector::new(TtlHandle(key.clone()), config).unwrap();
    let rx = elector.subscribe();
    (rx, tokio::spawn(elector.run(std::future::pending())))
}

#[tokio::test(start_paused = true)]
async fn a_hung_ttl_lock_holder_stops_before_its_key_expires() {
    let key = TtlKey::default();
    let (mut a, _a) = start_ttl(&key, "a");
    a.wait_for(|s| s.is_leader).await.unwrap();
    let (mut b, _b) = start_ttl(&key, "b");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.borrow().leader.as_deref(), Some("a"));
    key.state.lock().unwrap().hung.insert("a".into());
    let a_false = a.wait_for(|s| !s.is_leader).await.unwrap().since;
    let b_true = b.wait_for(|s| s.is_leader).await.unwrap().since;
    let last = key
        .state
        .lock()
        .unwrap()
        .writes
        .iter()
        .rev()
        .find(|(_, h)| h == "a")
        .unwrap()
        .0;
    assert_eq!(a_false - last, RENEW);
    assert!(b_true - last >= LEASE, "{:?}", b_true - last);
    assert!(b_true - last <= LEASE + RETRY.mul_f64(1.2));
}
