//! criterion: probing N loopback targets, epcheck's prober next to a minimal tokio connect loop.
//! `cargo bench -p epcheck-benches --bench probe`.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use epcheck_benches::{raw_connect_round, spread, targets};
use fixtures::targets::AcceptingPool;
use probe_core::{Prober, ProberOptions};

fn probe_rounds(c: &mut Criterion) {
    let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    else {
        eprintln!("cannot start a tokio runtime");
        return;
    };
    let _ = probe_core::raise_nofile_limit();
    let Ok(pool) = AcceptingPool::start_on_thread(20) else {
        eprintln!("cannot start loopback listeners");
        return;
    };
    let timeout = Duration::from_secs(2);
    let mut group = c.benchmark_group("probe_round");
    group.sample_size(20);
    for n in [100usize, 1_000] {
        let addrs = spread(pool.addrs(), n);
        let items = targets(&addrs);
        let prober = Prober::new(ProberOptions {
            timeout,
            concurrency: 256,
        });
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("epcheck", n), &n, |b, _| {
            b.to_async(&runtime).iter(|| prober.probe_all(&items));
        });
        group.bench_with_input(BenchmarkId::new("raw_tokio", n), &n, |b, _| {
            b.to_async(&runtime)
                .iter(|| raw_connect_round(&addrs, 256, timeout));
        });
    }
    group.finish();
}

criterion_group!(benches, probe_rounds);
criterion_main!(benches);
