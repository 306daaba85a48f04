//! `epcheck probe` against loopback targets that accept, refuse and hang.

use std::time::{Duration, Instant};

use fixtures::targets::{AcceptingTarget, HangingTarget, RefusingTarget};

use crate::util::Epcheck;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_each_target_and_takes_about_one_timeout() {
    let up = AcceptingTarget::start().await.unwrap();
    let refused = RefusingTarget::new().unwrap();
    let hanging = HangingTarget::start().await.unwrap();
    let hanging2 = HangingTarget::start().await.unwrap();
    let e = Epcheck::new();
    let (a, b, c, d) = (
        up.addr().to_string(),
        refused.addr().to_string(),
        hanging.addr().to_string(),
        hanging2.addr().to_string(),
    );
    let started = Instant::now();
    let r = e
        .run_async(&["probe", "--timeout-ms", "700", "-o", "json", &a, &b, &c, &d])
        .await;
    let took = started.elapsed();
    assert_eq!(r.code, 1, "{}", r.all());
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t.len(), 4);
    assert_eq!(t[0]["addr"], a.as_str());
    assert_eq!(t[0]["up"], true);
    assert!(t[0]["error"].is_null());
    assert_eq!(t[1]["up"], false);
    assert!(
        t[1]["error"].as_str().unwrap().contains("refused"),
        "{}",
        t[1]
    );
    for h in &t[2..] {
        assert_eq!(h["up"], false);
        assert!(h["error"].as_str().unwrap().contains("timed out"), "{h}");
    }
    assert_eq!(v["up"], 1);
    assert_eq!(v["down"], 3);
    // Two hanging targets cost one timeout, not two (plus process start-up).
    assert!(took < Duration::from_millis(1400), "took {took:?}");
    let elapsed_ms = v["elapsed_ms"].as_f64().unwrap();
    assert!(
        (650.0..1300.0).contains(&elapsed_ms),
        "elapsed_ms {elapsed_ms}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_up_exits_0_with_a_text_table() {
    let a = AcceptingTarget::start().await.unwrap();
    let b = AcceptingTarget::start().await.unwrap();
    let e = Epcheck::new();
    let r = e
        .run_async(&["probe", &a.addr().to_string(), &b.addr().to_string()])
        .await;
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("2 up, 0 down"), "{}", r.stdout);
    assert!(a.accepted() >= 1 && b.accepted() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_file_and_send_expect() {
    let pong = AcceptingTarget::with_reply(b"+PONG\r\n").await.unwrap();
    let e = Epcheck::new();
    let file = e.write("targets.txt", &format!("# redis\n{} node-1\n", pong.addr()));
    let f = file.to_str().unwrap();
    let ok = e
        .run_async(&[
            "probe",
            "--targets",
            f,
            "--send",
            "PING\\r\\n",
            "--expect",
            "+PONG",
        ])
        .await;
    assert_eq!(ok.code, 0, "{}", ok.all());
    let bad = e
        .run_async(&[
            "probe",
            "--targets",
            f,
            "--send",
            "PING\\r\\n",
            "--expect",
            "role:master",
            "--timeout-ms",
            "500",
        ])
        .await;
    assert_eq!(bad.code, 1, "{}", bad.all());
}

#[test]
fn bad_addresses_are_usage_errors() {
    let e = Epcheck::new();
    let r = e.run(&["probe", "localhost:80"]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("\"localhost:80\""), "{}", r.stderr);
    let file = e.write("t.txt", "127.0.0.1:1\n127.0.0.1\n");
    let r = e.run(&["probe", "--targets", file.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("t.txt:2"), "{}", r.stderr);
    let r = e.run(&["probe"]);
    assert_eq!(r.code, 2, "{}", r.all());
}
