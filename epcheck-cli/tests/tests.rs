//! Tests of the `epcheck` binary: each runs the real, built binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod util;

mod consensus;
mod daemon;
mod faultrun;
mod khcheck;
mod lab;
mod lab_consensus;
mod leader;
mod manifests;
mod once;
mod plan;
mod probe;
mod prune;
mod scrape;
mod secrets;
mod slices;
mod ux;
mod validate;
