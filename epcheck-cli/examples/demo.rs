//! `cargo run -p epcheck-cli --example demo [-- SECONDS]`: the real daemon on a machine with no
//! cluster and no Redis.
//!
//! It starts, all on loopback:
//! - four backends of a service `web` on one port: two that accept, one that refuses (nothing
//!   listens), and one that stops accepting after 6 s and comes back after 14 s;
//! - the stand-in ApiServer from `fixtures`, with its loopback-address rule relaxed (a real
//!   ApiServer rejects 127.0.0.0/8 in Endpoints) and a selector-less Service `demo/web`;
//! - epcheck's daemon (`epcheck::daemon::run`, what `epcheck run` runs) with the in-memory store;
//!
//! and prints every write that reaches the ApiServer, for 25 s by default (or until Ctrl-C).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use epcheck::config::{ProcessEnv, check};
use fixtures::apiserver::{ApiServer, Permissions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const TOKEN: &str = "demo-token";

/// A backend at `ip:port` that accepts and drops connections until aborted.
fn accept_on(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if listener.accept().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    })
}

/// Binds `ip:port` with address reuse, so a backend can come back on its port at once.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

/// A port that is free on every address in `ips`.
fn free_port(ips: &[IpAddr]) -> std::io::Result<u16> {
    for _ in 0..50 {
        let probe = std::net::TcpListener::bind((ips[0], 0))?;
        let port = probe.local_addr()?.port();
        drop(probe);
        if ips
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok())
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no port free on every demo address"))
}

fn config_text(url: &str, port: u16) -> String {
    format!(
        "interval: 1000
pingtimeout: 500
url: {url}
endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints
content_type: application/yaml
token_file: token
probe:
  rise: 2
  fall: 2
  fast_interval: 200
failsafe:
  min_targets: 3
service_info:
  web:
    namespace: demo
    name: web
service_healthcheck_list:
  web:
    port: {port}
    iplist:
      - name: node-1
        ip: 127.0.0.11
      - name: node-2
        ip: 127.0.0.12
      - name: node-3
        ip: 127.0.0.13
      - name: node-4
        ip: 127.0.0.14
endpoint_template:
  kind: Endpoints
  apiVersion: v1
  metadata:
    name: web
    namespace: demo
  subsets:
    - ports:
        - port: 8080
          protocol: TCP
"
    )
}

fn summarize(body: &serde_json::Value) -> String {
    let ips = |key: &str| -> String {
        body["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s[key].as_array().into_iter().flatten())
            .filter_map(|a| a["ip"].as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "ready [{}]  not ready [{}]",
        ips("addresses"),
        ips("notReadyAddresses")
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EPCHECK_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let ips: Vec<IpAddr> = (11..=14)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, 0, 0, d)))
        .collect();
    let port = free_port(&ips)?;
    let addr = |i: usize| SocketAddr::new(ips[i], port);
    let node1 = accept_on(bind(addr(0))?);
    let node2 = accept_on(bind(addr(1))?);
    // node-3 (127.0.0.13) has no listener: connections are refused.
    let mut node4 = Some(accept_on(bind(addr(3))?));

    let api = ApiServer::builder().strict_ips(false).start().await?;
    api.add_token(TOKEN, Permissions::all());
    api.put_service("demo", "web");

    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    let config_path = dir.path().join("config.yaml");
    std::fs::write(&config_path, config_text(&api.url(), port))?;
    let loaded = check(
        &std::fs::read_to_string(&config_path)?,
        &config_path,
        &ProcessEnv,
    )?;
    let client = epcheck::apiserver::connect(&loaded.config, dir.path(), &ProcessEnv)?;
    let store = Arc::new(state_store::MemoryStore::new());

    println!(
        "demo: backends on 127.0.0.11-14:{port} (node-3 refuses; node-4 stops at 6 s, returns at 14 s)"
    );
    println!(
        "demo: stand-in ApiServer at {}; running the daemon for {seconds} s",
        api.url()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = tokio::spawn(k8s_endpoints::daemon::run(
        loaded.config.daemon_spec(),
        store,
        client,
        async move {
            let _ = stop_rx.await;
        },
    ));

    let start = Instant::now();
    let mut seen = 0usize;
    let mut flapped = false;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let t = start.elapsed();
        if t >= Duration::from_secs(6) && !flapped {
            if let Some(task) = node4.take() {
                task.abort();
                println!("demo: {:>5.1}s  node-4 stops accepting", t.as_secs_f64());
            }
            flapped = true;
        }
        if t >= Duration::from_secs(14) && node4.is_none() {
            node4 = Some(accept_on(bind(addr(3))?));
            println!("demo: {:>5.1}s  node-4 accepts again", t.as_secs_f64());
        }
        let writes = api.writes();
        for w in writes.iter().skip(seen) {
            let body = w.body_json().unwrap_or_default();
            println!(
                "demo: {:>5.1}s  {} {} -> {}  {}",
                t.as_secs_f64(),
                w.method,
                w.path,
                w.status.map_or("-".to_string(), |s| s.to_string()),
                summarize(&body)
            );
        }
        seen = writes.len();
    }
    let _ = stop_tx.send(());
    let _ = daemon.await;
    println!(
        "demo: done: {} requests reached the ApiServer, {} of them writes",
        api.requests().len(),
        seen
    );
    for t in [node1, node2] {
        t.abort();
    }
    Ok(())
}
