//! Where each endpoint of a family goes (the placement step of
//! [`SliceRenderer::render`](super::SliceRenderer::render)).
//!
//! 1. **Sticky**: an endpoint stays in the live slice that holds it (the first one, should two
//!    hold it), so a target that appears, disappears or changes state rewrites one slice, not
//!    every slice after it, as with the endpointslice controller.
//! 2. **Fill**: new endpoints, in address order, fill live slices with room (in slice order),
//!    then new slices of up to [`MAX_ENDPOINTS_PER_SLICE`].
//! 3. **Compact**: while more slices are used than `ceil(endpoints / 100)`, the smallest slice
//!    is emptied into the fullest ones with room. Endpoints thus only ever move *out of*
//!    slices that are then dropped (and deleted last by the reconcile), never out of a slice
//!    that stays.
//!
//! Slices left empty are dropped.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::slices::render::{AddressFamily, MAX_ENDPOINTS_PER_SLICE};
use crate::slices::types::EndpointSlice;

/// One slice being filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bin {
    pub name: String,
    pub family: AddressFamily,
    pub ips: BTreeSet<IpAddr>,
}

impl Bin {
    pub(crate) fn new(name: String, family: AddressFamily) -> Self {
        Self {
            name,
            family,
            ips: BTreeSet::new(),
        }
    }

    fn is_full(&self) -> bool {
        self.ips.len() >= MAX_ENDPOINTS_PER_SLICE
    }
}

/// Places one family's endpoints `eps` given that family's live slices (in slice order);
/// `new_name` names each new slice. Returns the non-empty slices.
pub(crate) fn place(
    family: AddressFamily,
    eps: &BTreeSet<IpAddr>,
    live: &[&EndpointSlice],
    mut new_name: impl FnMut() -> String,
) -> Vec<Bin> {
    let mut placed: BTreeSet<IpAddr> = BTreeSet::new();
    let mut bins: Vec<Bin> = Vec::new();
    for slice in live {
        let mut bin = Bin::new(slice.name().to_owned(), family);
        for ep in &slice.endpoints {
            let Some(ip) = ep.addresses.first().and_then(|a| a.parse::<IpAddr>().ok()) else {
                continue;
            };
            let ip = ip.to_canonical();
            if !bin.is_full() && eps.contains(&ip) && placed.insert(ip) {
                bin.ips.insert(ip);
            }
        }
        bins.push(bin);
    }
    let mut cursor = 0;
    for ip in eps.iter().filter(|ip| !placed.contains(ip)) {
        while bins.get(cursor).is_some_and(Bin::is_full) {
            cursor += 1;
        }
        if cursor == bins.len() {
            bins.push(Bin::new(new_name(), family));
        }
        if let Some(bin) = bins.get_mut(cursor) {
            bin.ips.insert(*ip);
        }
    }
    bins.retain(|b| !b.ips.is_empty());
    compact(&mut bins, eps.len().div_ceil(MAX_ENDPOINTS_PER_SLICE));
    bins
}

/// Empties the smallest slices (ties: the last) into the fullest ones with room (ties: the
/// first) until at most `need` remain. Always possible: with `k > need` slices holding
/// `n <= 100 × need` endpoints, the other `k - 1 >= need` slices have room for the smallest
/// one's.
fn compact(bins: &mut Vec<Bin>, need: usize) {
    while bins.len() > need.max(1) {
        let Some(source) = (0..bins.len()).rev().min_by_key(|&i| bins[i].ips.len()) else {
            return;
        };
        let moving = std::mem::take(&mut bins[source].ips);
        for ip in moving {
            let target = (0..bins.len())
                .filter(|&i| i != source && !bins[i].is_full())
                .max_by_key(|&i| (bins[i].ips.len(), std::cmp::Reverse(i)));
            match target {
                Some(t) => {
                    bins[t].ips.insert(ip);
                }
                None => {
                    // Cannot happen (see above); keep the endpoint where it was.
                    bins[source].ips.insert(ip);
                }
            }
        }
        if !bins[source].ips.is_empty() {
            return;
        }
        bins.remove(source);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::render::NotReadyPolicy;
    use crate::slices::render::SliceRenderer;
    use crate::types::EndpointPort;

    fn v4(n: u32) -> IpAddr {
        IpAddr::V4(std::net::Ipv4Addr::from(0xC633_6400 + n)) // 198.51.100.0 + n
    }

    fn renderer(policy: NotReadyPolicy) -> SliceRenderer {
        let port = EndpointPort {
            port: 6379,
            ..EndpointPort::default()
        };
        SliceRenderer::new("default", "redis", &[port], policy).unwrap()
    }

    fn counts(slices: &[EndpointSlice]) -> Vec<(String, usize)> {
        slices
            .iter()
            .map(|s| (s.name().to_owned(), s.endpoints.len()))
            .collect()
    }

    fn bin(name: &str, ips: std::ops::Range<u32>) -> Bin {
        let mut b = Bin::new(name.to_owned(), AddressFamily::V4);
        b.ips = ips.map(v4).collect();
        b
    }

    #[test]
    fn compaction_reaches_the_minimum() {
        let mut bins = vec![bin("a", 0..60), bin("b", 60..90), bin("c", 90..150)];
        compact(&mut bins, 2);
        let sizes: Vec<(&str, usize)> = bins
            .iter()
            .map(|b| (b.name.as_str(), b.ips.len()))
            .collect();
        assert_eq!(sizes, [("a", 90), ("c", 60)]);
        let mut bins = vec![bin("a", 0..100), bin("b", 100..200)];
        compact(&mut bins, 2);
        assert_eq!(bins.len(), 2);
        let mut none: Vec<Bin> = Vec::new();
        compact(&mut none, 0);
        assert!(none.is_empty());
    }

    #[test]
    fn placement_is_sticky_and_compacts() {
        let r = renderer(NotReadyPolicy::Drop);
        let all: Vec<IpAddr> = (1..=250).map(v4).collect();
        let live = r.render("u", &all, &[], &[]);
        // Replacing one target rewrites one slice only.
        let mut changed = all.clone();
        changed[150] = v4(251);
        let out = r.render("u", &changed, &[], &live);
        assert_eq!(out[0], live[0]);
        assert_eq!(out[2], live[2]);
        assert_ne!(out[1], live[1]);
        // Every fifth target kept: 50 endpoints end in one slice, the fullest-first target.
        let few: Vec<IpAddr> = (1..=250).step_by(5).map(v4).collect();
        let out = r.render("u", &few, &[], &live);
        assert_eq!(counts(&out), [("redis-epcheck-ipv4-0".to_owned(), 50)]);
        // Nothing at all: the first live slice stays as an empty placeholder.
        let out = r.render("u", &[], &[], &live);
        assert_eq!(counts(&out), [("redis-epcheck-ipv4-0".to_owned(), 0)]);
        let out = r.render("u", &[], &[], &[]);
        assert_eq!(counts(&out), [("redis-epcheck-ipv4-0".to_owned(), 0)]);
    }

    #[test]
    fn new_endpoints_fill_room_then_new_names() {
        let r = renderer(NotReadyPolicy::Drop);
        let first: Vec<IpAddr> = (1..=150).map(v4).collect();
        let mut live = r.render("u", &first, &[], &[]);
        live.swap(0, 1); // order of the list does not matter
        let more: Vec<IpAddr> = (1..=260).map(v4).collect();
        let out = r.render("u", &more, &[], &live);
        assert_eq!(
            counts(&out),
            [
                ("redis-epcheck-ipv4-0".to_owned(), 100),
                ("redis-epcheck-ipv4-1".to_owned(), 100),
                ("redis-epcheck-ipv4-2".to_owned(), 60)
            ]
        );
        // Foreign slices are ignored, and their names are not taken into account.
        let mut foreign = live[0].clone();
        foreign.metadata.labels.clear();
        let out = r.render("u", &first, &[], &[foreign]);
        assert_eq!(out.len(), 2);
    }
}
