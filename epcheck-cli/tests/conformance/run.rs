//! `epcheck run` against the real ApiServer: a backend going down and up changes what the API
//! serves (and what the mirroring controller derives), and steady state writes nothing.

use std::time::Duration;

use super::{
    Daemon, NET4, endpoint_ips, endpoints_path, epcheck_events, eventually, get, slice_view,
    slices_of,
};
use super::{WebService, web_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn run_follows_backends_and_is_quiet_in_steady_state() {
    let ns = "run";
    let ips: Vec<String> = (61..=63).map(|n| format!("{NET4}{n}")).collect();
    let WebService { backends, s, cfg } = web_service(
        ns,
        &ips,
        3,
        "content_type: application/json\nresync_interval: 2000",
    )
    .await;
    let mut d = Daemon::epcheck(&s, &cfg, &[]);
    let path = endpoints_path(ns, "web");
    let want = |ready: Vec<String>, not_ready: Vec<String>| {
        let path = path.clone();
        async move {
            let obj = get(&path).await;
            (!obj.is_null() && endpoint_ips(&obj) == (ready, not_ready)).then_some(())
        }
    };
    let limit = Duration::from_secs(15);
    eventually(limit, "all three ready", || want(ips.clone(), vec![])).await;

    // Down: the API serves it as not ready, and so do the mirrored slices.
    backends.down(&ips[1], 18080).await;
    let (up, down) = (vec![ips[0].clone(), ips[2].clone()], vec![ips[1].clone()]);
    eventually(limit, "the stopped backend not ready", || {
        want(up.clone(), down.clone())
    })
    .await;
    eventually(limit, "kube-proxy's view follows", || async {
        (slice_view(&slices_of(ns, "web").await) == (up.clone(), down.clone())).then_some(())
    })
    .await;

    // Up again: ready again.
    backends.up(&ips[1], 18080).await;
    eventually(limit, "the backend ready again", || {
        want(ips.clone(), vec![])
    })
    .await;

    // Steady state over several resyncs (2 s each): reads, no write.
    let reads = steady_state_reads(ns, "endpoints", "get", &d).await;
    // Every Endpoints response carried the deprecation warning; the log shows it once.
    let log = d.log();
    assert_eq!(
        log.matches("v1 Endpoints is deprecated").count(),
        1,
        "the Warning header is not logged exactly once over {reads} resync reads:\n{log}"
    );
    assert_eq!(d.terminate().await, Some(0), "{}", d.log());
}

/// The daemon in slice mode over several resyncs: what the real server stores (with its
/// defaults) compares equal to what epcheck wants, so nothing is rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn run_in_slice_mode_is_quiet_in_steady_state() {
    let ns = "run-slices";
    let ips: Vec<String> = (241..=243).map(|n| format!("{NET4}{n}")).collect();
    let WebService {
        backends: _b,
        s,
        cfg,
    } = web_service(
        ns,
        &ips,
        2,
        "content_type: application/json\nresync_interval: 2000\nmode: endpointslice",
    )
    .await;
    let mut d = Daemon::epcheck(&s, &cfg, &[]);
    let want = (vec![ips[0].clone(), ips[1].clone()], vec![ips[2].clone()]);
    eventually(
        Duration::from_secs(15),
        "the slices hold the healthy set",
        || async { (slice_view(&slices_of(ns, "web").await) == want).then_some(()) },
    )
    .await;
    steady_state_reads(ns, "endpointslices", "list", &d).await;
    assert_eq!(d.terminate().await, Some(0), "{}", d.log());
}

/// Watches epcheck's requests in `ns` for 7 s of steady state (after 2 s to settle, so several
/// 2 s resyncs): it reads (`verb` on `resource`) and writes nothing. Returns the reads.
async fn steady_state_reads(ns: &str, resource: &str, verb: &str, d: &Daemon) -> usize {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mark = super::audit().len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let events = epcheck_events(mark, ns);
    let reads = events
        .iter()
        .filter(|e| e.resource == resource && e.verb == verb)
        .count();
    assert!(
        reads >= 2,
        "no resync read in 7 s: {events:#?}\n{}",
        d.log()
    );
    let writes: Vec<_> = events.iter().filter(|e| e.is_write()).collect();
    assert!(writes.is_empty(), "steady state wrote: {writes:#?}");
    reads
}
