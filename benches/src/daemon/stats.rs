//! The statistics the daemon benchmark reports.

use std::time::{Duration, Instant};

/// The `q`-quantile (`0.0..=1.0`) of `values` by the nearest-rank method; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * v.len() as f64).ceil() as usize;
    v.get(rank.saturating_sub(1).min(v.len() - 1)).copied()
}

/// The median of `values` (the lower middle for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile(values, 0.5)
}

/// How probe starts are spread over the interval: a histogram of their offsets within the
/// interval (start time modulo the interval) in equal buckets.
#[derive(Clone, Debug, PartialEq)]
pub struct Spread {
    /// Starts counted.
    pub starts: usize,
    /// Bucket width.
    pub bucket: Duration,
    /// Starts per bucket, over one interval.
    pub counts: Vec<usize>,
    /// The shortest stretch of the interval (cyclically) that holds 99% of the starts.
    pub span99: Duration,
    /// Buckets in that stretch.
    pub span_buckets: usize,
}

impl Spread {
    /// The histogram of `starts` (taken relative to `origin`) over `interval` in `bucket`s.
    pub fn new(starts: &[Instant], origin: Instant, interval: Duration, bucket: Duration) -> Self {
        let n = (interval.as_nanos() / bucket.as_nanos().max(1)).max(1) as usize;
        let mut counts = vec![0usize; n];
        for &t in starts {
            let offset = t.saturating_duration_since(origin).as_nanos() % interval.as_nanos();
            let i = ((offset / bucket.as_nanos().max(1)) as usize).min(n - 1);
            counts[i] += 1;
        }
        let total = starts.len();
        let want = (total as f64 * 0.99).ceil() as usize;
        // The shortest cyclic window of whole buckets holding `want` starts (two pointers over
        // the histogram laid out twice).
        let mut best = n;
        if total > 0 {
            let mut sum = 0usize;
            let mut lo = 0usize;
            for hi in 0..2 * n {
                sum += counts[hi % n];
                while lo < hi && hi - lo + 1 > n {
                    sum -= counts[lo % n];
                    lo += 1;
                }
                while lo < hi && sum - counts[lo % n] >= want {
                    sum -= counts[lo % n];
                    lo += 1;
                }
                if sum >= want {
                    best = best.min(hi - lo + 1);
                }
            }
        }
        Self {
            starts: total,
            bucket,
            counts,
            span99: bucket * best as u32,
            span_buckets: best,
        }
    }

    /// The fullest bucket.
    pub fn max_bucket(&self) -> usize {
        self.counts.iter().copied().max().unwrap_or(0)
    }

    /// Fullest bucket over the mean bucket of the whole interval (1.0 = perfectly flat over the
    /// interval; 10 = everything within a tenth of it).
    pub fn peak_over_interval_mean(&self) -> f64 {
        let mean = self.starts as f64 / self.counts.len() as f64;
        if mean > 0.0 {
            self.max_bucket() as f64 / mean
        } else {
            0.0
        }
    }

    /// Fullest bucket over the mean bucket of the 99% stretch (1.0 = flat within the stretch
    /// the jitter spreads probes over; a burst shows as a large value).
    pub fn peak_over_span_mean(&self) -> f64 {
        let mean = self.starts as f64 * 0.99 / self.span_buckets.max(1) as f64;
        if mean > 0.0 {
            self.max_bucket() as f64 / mean
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), Some(50.0));
        assert_eq!(quantile(&v, 0.99), Some(99.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn spread_finds_the_occupied_stretch_across_the_wrap() {
        let origin = Instant::now();
        let interval = Duration::from_secs(2);
        // Uniform over [1.9 s, 2.1 s): a 200 ms stretch that wraps around the interval.
        let starts: Vec<Instant> = (0..2_000)
            .map(|i| origin + Duration::from_millis(1_900) + Duration::from_micros(i * 100))
            .collect();
        let s = Spread::new(&starts, origin, interval, Duration::from_millis(10));
        assert_eq!(s.counts.len(), 200);
        assert!(s.span99 <= Duration::from_millis(200), "{:?}", s.span99);
        assert!(s.span99 >= Duration::from_millis(190), "{:?}", s.span99);
        assert!((s.peak_over_interval_mean() - 10.0).abs() < 0.5);
        assert!(s.peak_over_span_mean() < 1.1);
    }
}
