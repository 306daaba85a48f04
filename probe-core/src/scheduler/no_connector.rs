//! Off Linux there is no connector: every probe runs as a future of the [`Probe`](super::Probe).
//! The type exists so that the shard compiles the same everywhere; it has no values.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::timetable::{Done, Launch};

/// Never made.
pub(super) enum Connector {}

impl Connector {
    pub(super) fn is_empty(&self) -> bool {
        match *self {}
    }

    pub(super) fn start(
        &mut self,
        _: SocketAddr,
        _: bool,
        _: Launch,
        _: Duration,
        _: OwnedSemaphorePermit,
    ) -> Option<Done> {
        match *self {}
    }

    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        match *self {}
    }

    pub(super) fn expire(&mut self, _: Instant, _: &mut Vec<Done>) {
        match *self {}
    }

    pub(super) async fn collect(&mut self, _: &mut Vec<Done>) -> io::Result<()> {
        match *self {}
    }
}
