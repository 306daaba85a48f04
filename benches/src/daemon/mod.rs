//! Pieces of the daemon benchmark (`cargo bench -p epcheck-benches --bench daemon`): the
//! layout of the loopback targets and the config that probes them, the reference connect loop
//! that runs as a process of its own, reading a process's CPU time and memory from `/proc`,
//! scraping the metrics endpoint, parsing the daemon's JSON log, and the statistics reported.
//!
//! The benchmark itself (`benches/daemon.rs`) only orchestrates these and prints the table.

pub mod haproxy;
pub mod layout;
pub mod log;
pub mod process;
pub mod reference;
pub mod scrape;
pub mod stats;
