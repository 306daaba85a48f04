//! Which loopback address each target of the daemon benchmark has, what it does, and the
//! `epcheck` config that probes them.
//!
//! Targets are grouped in services of `per_service` backends that share one health-check port
//! and differ by IP, as in a real config: target `t` of service `s` is
//! `127.(10 + s / 256).(s % 256).(t + 1)`. In each service the last two targets are broken from
//! the start: the second to last hangs (its connects never complete), the last refuses. The
//! others accept; the first ones are the candidates for the flips that measure detection.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use fixtures::targets::MemberMode;

/// Targets per service: at most 254 (the last octet of the address is `t + 1`).
pub const MAX_PER_SERVICE: usize = 254;

/// The services and targets of one benchmark run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Number of services.
    pub services: usize,
    /// Targets per service (3..=254).
    pub per_service: usize,
}

impl Layout {
    /// `targets` targets in services of `per_service` (rounded up to whole services).
    pub fn new(targets: usize, per_service: usize) -> Self {
        let per_service = per_service.clamp(3, MAX_PER_SERVICE);
        Self {
            services: targets.div_ceil(per_service).max(1),
            per_service,
        }
    }

    /// All targets.
    pub fn targets(&self) -> usize {
        self.services * self.per_service
    }

    /// The index of target `t` of service `s` in [`ips`](Self::ips).
    pub fn index(&self, s: usize, t: usize) -> usize {
        s * self.per_service + t
    }

    /// The address of target `t` of service `s`.
    pub fn ip(&self, s: usize, t: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, (10 + s / 256) as u8, (s % 256) as u8, (t + 1) as u8)
    }

    /// Every target's address, service by service.
    pub fn ips(&self) -> Vec<IpAddr> {
        (0..self.services)
            .flat_map(|s| (0..self.per_service).map(move |t| IpAddr::V4(self.ip(s, t))))
            .collect()
    }

    /// What target `t` of any service does from the start.
    pub fn initial_mode(&self, t: usize) -> MemberMode {
        if t + 2 == self.per_service {
            MemberMode::Hanging
        } else if t + 1 == self.per_service {
            MemberMode::Refusing
        } else {
            MemberMode::Accepting
        }
    }

    /// The name of service `s` (also its Endpoints object's name).
    pub fn service(&self, s: usize) -> String {
        format!("s{s:04}")
    }

    /// The service index of a service name made by [`service`](Self::service).
    pub fn service_index(&self, name: &str) -> Option<usize> {
        name.strip_prefix('s')?
            .parse()
            .ok()
            .filter(|&s| s < self.services)
    }

    /// Service `s`'s (ready, not ready) addresses when every target is in its initial mode.
    pub fn initial_sets(&self, s: usize) -> (Vec<String>, Vec<String>) {
        let mut ready = Vec::new();
        let mut not_ready = Vec::new();
        for t in 0..self.per_service {
            let ip = self.ip(s, t).to_string();
            match self.initial_mode(t) {
                MemberMode::Accepting => ready.push(ip),
                _ => not_ready.push(ip),
            }
        }
        (ready, not_ready)
    }
}

/// The daemon settings the benchmark runs with (HAProxy's `inter 2s rise 2 fall 3` and
/// `fastinter 200ms` by default).
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// `interval`.
    pub interval: Duration,
    /// `pingtimeout`.
    pub timeout: Duration,
    /// `probe.rise`.
    pub rise: u32,
    /// `probe.fall`.
    pub fall: u32,
    /// `probe.fast_interval`.
    pub fast_interval: Duration,
    /// `probe.concurrency`.
    pub concurrency: usize,
    /// `probe.jitter`; `None` leaves the key out (the daemon's default).
    pub jitter: Option<f64>,
    /// `resync_interval`.
    pub resync_interval: Duration,
    /// `probe.half_open`.
    pub half_open: bool,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
            fast_interval: Duration::from_millis(200),
            concurrency: 1024,
            jitter: None,
            resync_interval: Duration::from_secs(30),
            half_open: false,
        }
    }
}

/// The `epcheck` config for `layout` on health-check port `port`, writing to the ApiServer at
/// `url` with the token in `token_file`, serving metrics on `metrics`.
pub fn config_yaml(
    layout: &Layout,
    settings: &DaemonSettings,
    port: u16,
    url: &str,
    token_file: &Path,
    metrics: &str,
) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "interval: {}", settings.interval.as_millis());
    let _ = writeln!(y, "pingtimeout: {}", settings.timeout.as_millis());
    let _ = writeln!(y, "url: {url}");
    y.push_str("endpointapi: /api/v1/namespaces/myNameSpaces/endpoints/myEndPoints\n");
    y.push_str("content_type: application/json\n");
    let _ = writeln!(y, "token_file: {}", token_file.display());
    let _ = writeln!(
        y,
        "resync_interval: {}",
        settings.resync_interval.as_millis()
    );
    let _ = writeln!(y, "metrics:\n  listen: {metrics}");
    let _ = writeln!(
        y,
        "probe:\n  rise: {}\n  fall: {}\n  fast_interval: {}\n  concurrency: {}",
        settings.rise,
        settings.fall,
        settings.fast_interval.as_millis(),
        settings.concurrency
    );
    if let Some(j) = settings.jitter {
        let _ = writeln!(y, "  jitter: {j}");
    }
    if settings.half_open {
        y.push_str("  half_open: true\n");
    }
    y.push_str("service_info:\n");
    for s in 0..layout.services {
        let name = layout.service(s);
        let _ = writeln!(y, "  {name}: {{namespace: default, name: {name}}}");
    }
    y.push_str("service_healthcheck_list:\n");
    for s in 0..layout.services {
        let _ = writeln!(y, "  {}:\n    port: {port}\n    iplist:", layout.service(s));
        for t in 0..layout.per_service {
            let _ = writeln!(y, "      - {{name: t{t:03}, ip: {}}}", layout.ip(s, t));
        }
    }
    y.push_str(
        "endpoint_template:\n  kind: Endpoints\n  apiVersion: v1\n  subsets:\n    - ports:\n        \
         - port: 8080\n          protocol: TCP\n",
    );
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_loopback_distinct_and_invertible() {
        let l = Layout::new(10_000, 100);
        assert_eq!((l.services, l.per_service, l.targets()), (100, 100, 10_000));
        let ips = l.ips();
        let mut sorted = ips.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ips.len());
        assert!(ips.iter().all(IpAddr::is_loopback));
        assert_eq!(ips[l.index(42, 7)], IpAddr::V4(l.ip(42, 7)));
        assert_eq!(l.service_index(&l.service(42)), Some(42));
        let (ready, not_ready) = l.initial_sets(0);
        assert_eq!((ready.len(), not_ready.len()), (98, 2));
    }
}
