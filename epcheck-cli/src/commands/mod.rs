//! The subcommands. Each returns the process exit code.

pub mod plan;
pub mod probe;
pub mod validate;
