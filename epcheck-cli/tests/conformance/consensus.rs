//! Multi-vantage consensus on a real ApiServer (SPEC §9.1): three `epcheck run` replicas, with
//! only the Role `epcheck manifests` prints, publish their views in Leases of their own; the
//! leader lists them by label, removes a backend every replica sees down, removes the view
//! Lease of a replica that was killed once it has been stale for ten TTLs, and each replica
//! deletes its own at a clean shutdown.

use std::time::Duration;

use serde_json::Value;

use super::{Daemon, NET4, WebService, endpoint_ips, endpoints_path, eventually, get, web_service};

const NS: &str = "consent";
const VIEWS: &str = "/apis/coordination.k8s.io/v1/namespaces/consent/leases?labelSelector=epcheck.io%2Fview-of%3Depcheck";

async fn views() -> Vec<Value> {
    get(VIEWS).await["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn ready() -> Vec<String> {
    endpoint_ips(&get(&endpoints_path(NS, "web")).await).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "runs inside the conformance network namespace (test `real_apiserver`)"]
async fn replicas_publish_views_in_leases_and_remove_a_backend_together() {
    let ips: Vec<String> = (81..=83).map(|n| format!("{NET4}{n}")).collect();
    let WebService { backends, s, cfg } = web_service(
        NS,
        &ips,
        3,
        "content_type: application/json\n\
         leader_election: {enabled: true, namespace: consent, name: epcheck, \
         lease_duration: 3000, renew_deadline: 2000, retry_period: 500}\n\
         consensus: {enabled: true, heartbeat: 500, ttl: 1500, read_interval: 300}",
    )
    .await;
    let mut daemons: Vec<Option<Daemon>> = (0..3)
        .map(|n| {
            let pod = format!("replica-{n}");
            Some(Daemon::epcheck(&s, &cfg, &[("POD_NAME", &pod)]))
        })
        .collect();
    let logs = |d: &[Option<Daemon>]| {
        d.iter()
            .flatten()
            .map(Daemon::log)
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    eventually(
        Duration::from_secs(30),
        "three voting view Leases",
        || async {
            let v = views().await;
            let voting = v.iter().filter(|l| {
                let text = l["metadata"]["annotations"]["epcheck.io/view"]
                    .as_str()
                    .unwrap_or_default();
                text.contains("\"v\":1") && !text.contains("abstain")
            });
            (voting.count() == 3).then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(20), "every backend ready", || async {
        (ready().await.len() == 3).then_some(())
    })
    .await;
    let holder = get("/apis/coordination.k8s.io/v1/namespaces/consent/leases/epcheck").await
        ["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let leader = (0..3)
        .find(|n| holder.starts_with(&format!("replica-{n}_")))
        .unwrap_or_else(|| panic!("holder {holder:?}:\n{}", logs(&daemons)));
    let leader_log = || {
        daemons[leader]
            .as_ref()
            .map(Daemon::log)
            .unwrap_or_default()
    };
    eventually(
        Duration::from_secs(10),
        "both other views count",
        || async {
            (leader_log()
                .matches("consensus: a replica's view counts")
                .count()
                >= 2)
                .then_some(())
        },
    )
    .await;

    // A backend every replica sees down leaves, by their agreement.
    backends.down(&ips[0], 18080).await;
    eventually(
        Duration::from_secs(10),
        "the down backend removed",
        || async { (!ready().await.contains(&ips[0])).then_some(()) },
    )
    .await;
    assert!(
        leader_log().contains("see it down"),
        "no agreement logged:\n{}",
        leader_log()
    );

    // A follower killed outright: its view goes stale, and after ten TTLs its Lease is gone.
    let follower = (0..3).find(|&n| n != leader).unwrap_or_default();
    if let Some(d) = daemons[follower].as_mut() {
        let _ = d.child.start_kill();
    }
    eventually(
        Duration::from_secs(40),
        "the dead replica's view Lease removed",
        || async { (views().await.len() == 2).then_some(()) },
    )
    .await;
    // The two left still decide.
    backends.up(&ips[0], 18080).await;
    eventually(Duration::from_secs(10), "the backend restored", || async {
        (ready().await.len() == 3).then_some(())
    })
    .await;
    for (n, d) in daemons.iter_mut().enumerate() {
        if n != follower
            && let Some(d) = d.as_mut()
        {
            assert_eq!(d.terminate().await, Some(0), "{}", d.log());
        }
    }
    eventually(Duration::from_secs(5), "the views withdrawn", || async {
        views().await.is_empty().then_some(())
    })
    .await;
    drop(daemons.iter_mut().map(Option::take).collect::<Vec<_>>());
}
