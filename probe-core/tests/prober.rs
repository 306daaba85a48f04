//! Rounds of many targets: order, bounded concurrency, and hanging targets costing one timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fixtures::targets::{AcceptingTarget, HangingTarget, RefusingTarget};
use probe_core::{Check, FailureKind, Prober, ProberOptions, Target};

fn item(name: String, addr: std::net::SocketAddr, check: &Arc<Check>) -> (Target, Arc<Check>) {
    (
        Target::new("svc", name, addr.ip(), addr.port()),
        Arc::clone(check),
    )
}

/// 100 accepting targets and 5 hanging ones at a 300 ms timeout: the hanging ones cost one
/// timeout together, not five. A behaviour check, not a benchmark: the bound is 2 × timeout.
async fn hanging_cost_one_timeout() {
    let timeout = Duration::from_millis(300);
    let accepting = AcceptingTarget::start().await.unwrap();
    let mut hanging = Vec::new();
    for _ in 0..5 {
        hanging.push(HangingTarget::start().await.unwrap());
    }
    let check = Arc::new(Check::tcp());
    let mut items: Vec<_> = (0..100)
        .map(|i| item(format!("up-{i}"), accepting.addr(), &check))
        .collect();
    for (i, h) in hanging.iter().enumerate() {
        items.insert(i * 20, item(format!("hang-{i}"), h.addr(), &check));
    }
    let prober = Prober::new(ProberOptions {
        timeout,
        concurrency: 1024,
    });

    let started = Instant::now();
    let outcomes = prober.probe_all(&items).await;
    let elapsed = started.elapsed();

    assert!(elapsed < timeout * 2, "round took {elapsed:?}");
    assert_eq!(outcomes.len(), items.len());
    for ((target, _), outcome) in items.iter().zip(&outcomes) {
        if target.name.starts_with("hang-") {
            assert_eq!(
                outcome.failure_kind(),
                Some(FailureKind::Timeout),
                "{target}"
            );
        } else {
            assert!(outcome.up, "{target}: {outcome:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_targets_cost_one_timeout_multi_thread() {
    hanging_cost_one_timeout().await;
}

#[tokio::test(flavor = "current_thread")]
async fn hanging_targets_cost_one_timeout_current_thread() {
    hanging_cost_one_timeout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_follow_input_order() {
    let up = AcceptingTarget::start().await.unwrap();
    let refused = RefusingTarget::new().unwrap();
    let check = Arc::new(Check::tcp());
    let static_check = Arc::new(Check::Static);
    let items: Vec<_> = (0..300)
        .map(|i| match i % 3 {
            0 => item(format!("up-{i}"), up.addr(), &check),
            1 => item(format!("refused-{i}"), refused.addr(), &check),
            _ => item(
                format!("static-{i}"),
                "127.0.0.1:0".parse().unwrap(),
                &static_check,
            ),
        })
        .collect();
    let prober = Prober::new(ProberOptions {
        timeout: Duration::from_secs(2),
        concurrency: 8,
    });
    let outcomes = prober.probe_all(&items).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match i % 3 {
            1 => assert_eq!(outcome.failure_kind(), Some(FailureKind::Refused), "{i}"),
            _ => assert!(outcome.up, "{i}: {outcome:?}"),
        }
    }
}

/// With concurrency 2, six hanging targets need three timeouts: the limit holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_probes_in_flight() {
    let timeout = Duration::from_millis(200);
    let mut hanging = Vec::new();
    for _ in 0..6 {
        hanging.push(HangingTarget::start().await.unwrap());
    }
    let check = Arc::new(Check::tcp());
    let items: Vec<_> = hanging
        .iter()
        .enumerate()
        .map(|(i, h)| item(format!("hang-{i}"), h.addr(), &check))
        .collect();
    let prober = Prober::new(ProberOptions {
        timeout,
        concurrency: 2,
    });
    let started = Instant::now();
    let outcomes = prober.probe_all(&items).await;
    assert!(started.elapsed() >= timeout * 3, "{:?}", started.elapsed());
    assert!(outcomes.iter().all(|o| !o.up));
}

/// Clones share one limit: a single probe waits while a round fills every slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_share_the_limit() {
    let timeout = Duration::from_millis(200);
    let hanging = HangingTarget::start().await.unwrap();
    let up = AcceptingTarget::start().await.unwrap();
    let check = Arc::new(Check::tcp());
    let prober = Prober::new(ProberOptions {
        timeout,
        concurrency: 1,
    });
    let clone = prober.clone();
    let items = vec![item("hang".into(), hanging.addr(), &check)];
    let round = tokio::spawn(async move { clone.probe_all(&items).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let target = Target::new("svc", "up", up.addr().ip(), up.addr().port());
    assert!(prober.probe(&target, &check).await.up);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "{:?}",
        started.elapsed()
    );
    assert!(!round.await.unwrap()[0].up);
}
