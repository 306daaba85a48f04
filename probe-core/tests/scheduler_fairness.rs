//! Rule 7 of the scheduler (fair under overload), with the scripted fake probe in paused time:
//! when the probes cannot keep up, every service loses about the same share of its probes, and
//! every skipped slot is reported.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod scheduler_fake;

use probe_core::HealthTracker;
use scheduler_fake::{Act, Fake, MS, opts, run_for, scheduler};

/// Ten services of 100 targets each (ports 1–1,000, in config order), 50 ms probes every 2 s
/// with the default jitter 0.1, so every round arrives in a 200 ms burst; concurrency 12 fits
/// about 480 probes per interval, under half of what is asked. Over 30 s each service gets
/// between 0.9 and 1.1 times the mean share (the first-in-first-out queue gave the first
/// services all their probes and the last ones half), and each target's regular slots are
/// either probed or reported as skipped.
#[tokio::test(start_paused = true)]
async fn overload_is_shared_by_every_service() {
    const SERVICES: u16 = 10;
    const PER_SERVICE: u16 = 100;
    let fake = Fake::default();
    let ports = 1..=SERVICES * PER_SERVICE;
    for port in ports.clone() {
        fake.set(port, Act::Up(50 * MS));
    }
    let s = scheduler(
        &fake,
        12,
        ports.clone(),
        &HealthTracker::new(2, 3),
        opts(2000, 200, 0.1, 1000),
    );
    let events = run_for(s, 30_000 * MS).await;

    let mut per_service = vec![0usize; usize::from(SERVICES)];
    for e in &events {
        per_service[usize::from((e.target.port - 1) / PER_SERVICE)] += 1;
    }
    let mean = per_service.iter().sum::<usize>() as f64 / f64::from(SERVICES);
    let shares: Vec<f64> = per_service.iter().map(|&n| n as f64 / mean).collect();
    eprintln!("probes per service {per_service:?}, share of the mean {shares:.3?}");
    // About half of the 15 slots per target over 30 s fit.
    let asked = 15.0 * f64::from(PER_SERVICE);
    assert!(mean > 0.4 * asked && mean < 0.6 * asked, "mean {mean}");
    for (service, share) in shares.iter().enumerate() {
        assert!(
            (0.9..=1.1).contains(share),
            "service {service} got {share:.3} of the mean share: {per_service:?}"
        );
    }

    // Each target, too, gets its share within one probe (7.19 on average).
    let mut per_target = vec![0usize; usize::from(SERVICES * PER_SERVICE)];
    for e in &events {
        per_target[usize::from(e.target.port - 1)] += 1;
    }
    let (min, max) = (
        per_target.iter().min().unwrap(),
        per_target.iter().max().unwrap(),
    );
    eprintln!("probes per target: {min} to {max}");
    assert!(*min >= 6 && *max <= 8, "{min} to {max}");

    // Every regular slot of a target is either probed or reported as skipped (the last one or
    // two may still wait for a permit when the run ends).
    let skipped: u64 = events.iter().map(|e| u64::from(e.skipped_slots)).sum();
    let accounted = events.len() as u64 + skipped;
    let slots = 15 * u64::from(SERVICES * PER_SERVICE);
    eprintln!(
        "{} probes + {skipped} skipped of {slots} slots",
        events.len()
    );
    assert!(skipped > slots / 3, "skipped {skipped}");
    assert!(
        accounted <= slots && accounted + 2 * u64::from(SERVICES * PER_SERVICE) >= slots,
        "{accounted} of {slots}"
    );
}

/// Without overload nothing is skipped.
#[tokio::test(start_paused = true)]
async fn nothing_is_skipped_when_probes_keep_up() {
    let fake = Fake::default();
    for port in 1..=200 {
        fake.set(port, Act::Up(5 * MS));
    }
    let s = scheduler(
        &fake,
        16,
        1..=200,
        &HealthTracker::new(2, 3),
        opts(1000, 100, 0.1, 500),
    );
    let events = run_for(s, 10_000 * MS).await;
    assert_eq!(events.len(), 2000);
    assert!(events.iter().all(|e| e.skipped_slots == 0));
}
