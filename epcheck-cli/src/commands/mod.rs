//! The subcommands. Each returns the process exit code.

pub mod manifests;
pub mod once;
pub mod plan;
pub mod probe;
pub mod prune;
pub mod run;
pub mod status;
pub mod validate;
