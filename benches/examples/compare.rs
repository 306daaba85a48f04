//! One round of N loopback targets (default 2,000) with epcheck's prober and with the raw tokio
//! connect loop: `cargo run --release -p epcheck-benches --example compare -- 5000`.

use std::time::{Duration, Instant};

use epcheck_benches::{raw_connect_round, spread, targets};
use fixtures::targets::AcceptingPool;
use probe_core::{Prober, ProberOptions};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let limit = probe_core::raise_nofile_limit()?;
    let concurrency = probe_core::effective_concurrency(1_024, &limit);
    let pool = AcceptingPool::start_on_thread(50)?;
    let addrs = spread(pool.addrs(), n);
    let items = targets(&addrs);
    let timeout = Duration::from_secs(2);
    let prober = Prober::new(ProberOptions {
        timeout,
        concurrency,
    });
    let started = Instant::now();
    let raw = raw_connect_round(&addrs, concurrency, timeout).await;
    let raw_time = started.elapsed();
    let started = Instant::now();
    let ours = prober
        .probe_all(&items)
        .await
        .iter()
        .filter(|o| o.up)
        .count();
    let our_time = started.elapsed();
    println!("raw tokio loop: {raw}/{n} up in {raw_time:?}");
    println!("epcheck prober: {ours}/{n} up in {our_time:?}");
    pool.stop().await;
    Ok(())
}
