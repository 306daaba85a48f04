//! Leader election on a real Lease: three `epcheck run` replicas and a client-go
//! `leaderelection` candidate (built into the control plane's program) contend for one Lease.
//! No two ever lead at once, and killing the leader hands over within about one lease duration.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::{Daemon, INSIDE_ENV, NET4, eventually, get, plane};
use super::{WebService, web_service};

const LEASE: Duration = Duration::from_millis(3000);
const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/elect/leases/epcheck";

/// One contender: its process, how to tell its lines, and when it was killed.
struct Contender {
    name: String,
    daemon: Daemon,
    starts: &'static str,
    stops: &'static str,
    killed: Option<Instant>,
}

impl Contender {
    /// Its leadership intervals, an open one closed at its kill or at `now`.
    fn intervals(&self, now: Instant) -> Vec<(Instant, Instant)> {
        let mut out = Vec::new();
        let mut open = None;
        for (at, line) in self.daemon.lines() {
            if line.contains(self.starts) {
                open = Some(at);
            } else if line.contains(self.stops)
                && let Some(start) = open.take()
            {
                out.push((start, at));
            }
        }
        if let Some(start) = open {
            out.push((start, self.killed.unwrap_or(now)));
        }
        out
    }

    fn kill(&mut self) {
        let _ = self.daemon.child.start_kill();
        self.killed = Some(Instant::now());
    }
}

async fn holder() -> String {
    get(LEASE_PATH).await["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for a holder that is alive and says it leads; returns its index.
async fn leader(contenders: &[Contender], limit: Duration) -> usize {
    eventually(limit, "a live contender leads", || async {
        let h = holder().await;
        let now = Instant::now();
        contenders.iter().position(|c| {
            c.killed.is_none()
                && h.starts_with(&c.name)
                && c.intervals(now).last().is_some_and(|(_, end)| *end == now)
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn epcheck_replicas_and_client_go_never_lead_together() {
    let ns = "elect";
    let ips: Vec<String> = (71..=72).map(|n| format!("{NET4}{n}")).collect();
    let WebService {
        backends: _b,
        s,
        cfg,
    } = web_service(
        ns,
        &ips,
        2,
        "content_type: application/json\n\
         leader_election: {enabled: true, namespace: elect, name: epcheck, \
         lease_duration: 3000, renew_deadline: 2000, retry_period: 500}",
    )
    .await;

    let mut contenders = Vec::new();
    for n in 0..3 {
        let name = format!("replica-{n}");
        contenders.push(Contender {
            daemon: Daemon::epcheck(&s, &cfg, &[("POD_NAME", &name)]),
            name,
            starts: "became leader",
            stops: "stopped leading",
            killed: None,
        });
    }
    let admin_token = s.e.write("admin-token", &plane().info().admin_token);
    let binary = PathBuf::from(std::env::var_os(INSIDE_ENV).expect("inside"));
    let mut go = tokio::process::Command::new(binary);
    go.arg("elect")
        .args(["-server", plane().url()])
        .arg("-ca-file")
        .arg(&plane().info().ca_file)
        .arg("-token-file")
        .arg(&admin_token)
        .args([
            "-namespace",
            ns,
            "-name",
            "epcheck",
            "-identity",
            "client-go",
        ])
        .args([
            "-lease-duration",
            "3s",
            "-renew-deadline",
            "2s",
            "-retry-period",
            "500ms",
        ]);
    contenders.push(Contender {
        name: "client-go".into(),
        daemon: Daemon::spawn(go, false),
        starts: "leading ",
        stops: "stopped ",
        killed: None,
    });

    let first = leader(&contenders, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Kill the leader twice over: each time another contender takes over within about a lease.
    let mut handovers = Vec::new();
    let mut current = first;
    for _ in 0..2 {
        contenders[current].kill();
        let killed_at = Instant::now();
        let next = leader(&contenders, Duration::from_secs(20)).await;
        handovers.push((
            contenders[current].name.clone(),
            contenders[next].name.clone(),
            killed_at.elapsed(),
        ));
        current = next;
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    let now = Instant::now();
    let mut all = Vec::new();
    for c in &contenders {
        for (start, end) in c.intervals(now) {
            all.push((c.name.clone(), start, end));
        }
    }
    for (i, (a, a0, a1)) in all.iter().enumerate() {
        for (b, b0, b1) in &all[i + 1..] {
            assert!(
                a == b || a1 <= b0 || b1 <= a0,
                "{a} and {b} led at the same time"
            );
        }
    }
    eprintln!("leadership handovers (killed, next, time): {handovers:?}");
    for (from, to, took) in &handovers {
        assert!(
            *took < LEASE + Duration::from_millis(2500),
            "{from} -> {to} took {took:?}, more than about one lease duration ({LEASE:?})"
        );
    }
    for c in &mut contenders {
        if c.killed.is_none() {
            let code = c.daemon.terminate().await;
            assert_eq!(
                code,
                Some(0),
                "{} did not exit cleanly:\n{}",
                c.name,
                c.daemon.log()
            );
        }
    }
}
