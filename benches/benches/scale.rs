//! The large-scale probe benchmark of SPEC §11, run with
//! `cargo bench -p epcheck-benches --bench scale` (add `-- --quick` for a short run).
//!
//! 1. Throughput: a round of 10,000 accepting loopback targets at concurrency 1,024, probed by
//!    epcheck's prober and by a minimal tokio connect loop, alternately, in this one process run;
//!    the median rates and their ratio are printed (target: epcheck ≥ 70% of the loop).
//! 2. Hanging targets: a round of 1,000 targets of which 1% hang (connect never completes), at a
//!    1 s timeout; the round's wall time is printed as a multiple of the timeout (target ≤ 1.1).

use std::time::{Duration, Instant};

use epcheck_benches::{raw_connect_round, raw_connect_round_rst, spread, targets};
use fixtures::targets::{AcceptingPool, HangingTarget};
use probe_core::{Prober, ProberOptions};

struct Options {
    targets: usize,
    concurrency: usize,
    rounds: usize,
    hang_timeout: Duration,
}

fn options() -> Options {
    let quick = std::env::args().any(|a| a == "--quick");
    Options {
        targets: 10_000,
        concurrency: 1_024,
        rounds: if quick { 3 } else { 9 },
        hang_timeout: Duration::from_secs(1),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> std::io::Result<()> {
    let opts = options();
    let limit = probe_core::raise_nofile_limit()?;
    let concurrency = probe_core::effective_concurrency(opts.concurrency, &limit);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        throughput(&opts, concurrency).await?;
        hanging(&opts, concurrency).await
    })
}

async fn throughput(opts: &Options, concurrency: usize) -> std::io::Result<()> {
    let pool = AcceptingPool::start_on_thread(100)?;
    let addrs = spread(pool.addrs(), opts.targets);
    let items = targets(&addrs);
    let timeout = Duration::from_secs(3);
    let prober = Prober::new(ProberOptions {
        timeout,
        concurrency,
    });
    // Warm up both (listeners' accept queues, the runtime's worker threads, allocator).
    raw_connect_round(&addrs, concurrency, timeout).await;
    prober.probe_all(&items).await;

    // Three contenders, rotated each round so none always runs on a warmer machine.
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..opts.rounds {
        for k in 0..3 {
            let which = (round + k) % 3;
            let started = Instant::now();
            let up = match which {
                0 => raw_connect_round(&addrs, concurrency, timeout).await,
                1 => raw_connect_round_rst(&addrs, concurrency, timeout).await,
                _ => prober
                    .probe_all(&items)
                    .await
                    .iter()
                    .filter(|o| o.up)
                    .count(),
            };
            let rate = up as f64 / started.elapsed().as_secs_f64();
            assert_eq!(up, addrs.len(), "every target accepts; a probe failed");
            rates[which].push(rate);
        }
    }
    let [raw, raw_rst, ours] = rates.map(median);
    println!(
        "throughput: {} accepting targets, concurrency {concurrency}, {} rounds each (median)",
        opts.targets, opts.rounds
    );
    println!("  raw tokio connect loop            : {raw:>9.0} probes/s");
    println!("  raw tokio connect loop, RST close : {raw_rst:>9.0} probes/s");
    println!("  epcheck prober                    : {ours:>9.0} probes/s");
    println!(
        "  ratio epcheck/raw                 : {:>9.2}   (target >= 0.70)",
        ours / raw
    );
    println!(
        "  ratio epcheck/raw RST             : {:>9.2}   (same close as epcheck)",
        ours / raw_rst
    );
    pool.stop().await;
    Ok(())
}

async fn hanging(opts: &Options, concurrency: usize) -> std::io::Result<()> {
    let pool = AcceptingPool::start_on_thread(10)?;
    let mut hangers = Vec::new();
    for _ in 0..10 {
        hangers.push(HangingTarget::start().await?);
    }
    let mut addrs = spread(pool.addrs(), 990);
    // Spread the hanging ones through the list rather than at the end.
    for (i, h) in hangers.iter().enumerate() {
        addrs.insert(i * 99, h.addr());
    }
    let items = targets(&addrs);
    let prober = Prober::new(ProberOptions {
        timeout: opts.hang_timeout,
        concurrency,
    });
    let mut multiples = Vec::new();
    for _ in 0..opts.rounds.min(5) {
        let started = Instant::now();
        let outcomes = prober.probe_all(&items).await;
        let elapsed = started.elapsed();
        let down = outcomes.iter().filter(|o| !o.up).count();
        assert_eq!(down, hangers.len(), "exactly the hanging targets fail");
        multiples.push(elapsed.as_secs_f64() / opts.hang_timeout.as_secs_f64());
    }
    let m = median(multiples);
    println!(
        "hanging: 1,000 targets, 10 hanging, timeout {} ms, concurrency {concurrency}",
        opts.hang_timeout.as_millis()
    );
    println!(
        "  round wall time        : {:>9.3} x timeout   (target <= 1.10; a sequential checker: 10 x)",
        m
    );
    pool.stop().await;
    Ok(())
}
