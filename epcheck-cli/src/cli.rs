//! Command-line flags (SPEC §7), parsed by clap. Turning them into checked values happens in the
//! commands, which report bad values with exit code 2.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// epcheck keeps the Endpoints of selector-less Services equal to the backends that pass their
/// health checks.
#[derive(Debug, Parser)]
#[command(name = "epcheck", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file; default: ./config.yaml, ./config/config.yaml, then the same next to the binary.
    #[arg(short = 'f', long = "config", env = "EPCHECK_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Less log output (-q errors only, -qq nothing).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, conflicts_with = "verbose")]
    pub quiet: u8,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Report format of `probe`, `plan`, `once`, `prune` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A human table.
    Text,
    /// The documented JSON schema.
    Json,
}

/// Report format of `plan` (YAML objects by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// The Endpoints objects, as YAML documents.
    Yaml,
    /// The documented JSON schema, with each object.
    Json,
    /// A human table.
    Text,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: probe, track health, keep every Endpoints object equal to the healthy
    /// set, until SIGTERM/SIGINT.
    Run(RunArgs),
    /// Check the config file (and that the token and CA files exist); exit 0 valid, 2 invalid.
    Validate(ValidateArgs),
    /// Probe addresses once; exit 0 if all are up, 1 if any is down (a keepalived check script).
    Probe(ProbeArgs),
    /// Probe every configured target once and print the Endpoints objects that would be written,
    /// without contacting the ApiServer.
    Plan(PlanArgs),
    /// Probe every target once and reconcile every service once; exit 0 if all were reconciled.
    Once(OnceArgs),
    /// Hand back the objects this epcheck instance wrote for Services no longer in the config:
    /// delete its EndpointSlices and remove its labels from Endpoints objects (which keep their
    /// addresses); exit 0 if every one was handed back (or would be, with --dry-run).
    Prune(PruneArgs),
    /// Show the health state recorded in the store (Redis).
    Status(StatusArgs),
    /// Kuberhealthy external-check mode: probe once and report to KH_REPORTING_URL before
    /// KH_CHECK_RUN_DEADLINE; exit 0 if the report was delivered.
    Khcheck,
    /// Print the Kubernetes objects that deploy epcheck for this config, as a YAML stream.
    Manifests(ManifestsArgs),
}

/// `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Threads that run the probes and the daemon. One thread probes about 30,000 TCP targets a
    /// second on a 2-vCPU machine at the least CPU per probe (a second thread adds wake-ups
    /// between threads and contention on the kernel's lists for every probe); raise it when the
    /// log warns that probes do not keep up and CPU is to spare.
    #[arg(long, env = "EPCHECK_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
}

/// `manifests`.
#[derive(Debug, Args)]
pub struct ManifestsArgs {
    /// Namespace epcheck runs in.
    #[arg(long, default_value = "epcheck")]
    pub namespace: String,
    /// Container image (default: `ghcr.io/epcheck/epcheck:<this version>`).
    #[arg(long)]
    pub image: Option<String>,
    /// Deployment replicas [default: 3 with consensus, 2 with leader election, else 1]; more than one needs
    /// leader election.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub replicas: Option<u32>,
    /// Also emit a ServiceMonitor (Prometheus Operator).
    #[arg(long)]
    pub service_monitor: bool,
    /// Also emit a PrometheusRule with the shipped alert rules.
    #[arg(long)]
    pub prometheus_rule: bool,
    /// Also emit a KuberhealthyCheck that runs `epcheck khcheck`.
    #[arg(long)]
    pub kuberhealthy: bool,
}

/// `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many recent transitions to show per service.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `once`.
#[derive(Debug, Args)]
pub struct OnceArgs {
    /// Read from the ApiServer but write nothing; show what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// List what would be handed back; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Fail (exit 2) on warnings too.
    #[arg(long)]
    pub strict: bool,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

/// `probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Addresses to probe: `ip:port`, IPv6 as `[fd00::1]:6379`.
    #[arg(value_name = "ADDR", required_unless_present = "targets")]
    pub addrs: Vec<String>,
    /// Read addresses from a file, one `ip:port` per line (`#` comments and further columns
    /// ignored); `-` reads standard input.
    #[arg(long, value_name = "FILE")]
    pub targets: Option<PathBuf>,
    /// Timeout of one probe, in milliseconds.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub timeout_ms: u64,
    /// Probes in flight at once (also capped by the open-file limit).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub concurrency: u64,
    /// Text to write after connecting (escapes \r \n \t \\ are understood).
    #[arg(long)]
    pub send: Option<String>,
    /// Require the reply to contain this text.
    #[arg(long, conflicts_with = "expect_regex")]
    pub expect: Option<String>,
    /// Require the reply to match this regular expression.
    #[arg(long)]
    pub expect_regex: Option<String>,
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Not used: `probe` takes its addresses and settings from the command line alone. It is
    /// accepted, hidden from `--help` and ignored with a warning, so that a script passing the
    /// global `-f` to every command keeps working.
    #[arg(short = 'f', long = "config", hide = true, value_name = "CONFIG")]
    pub config: Option<PathBuf>,
}

/// `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Report format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = PlanFormat::Yaml)]
    pub output: PlanFormat,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }
}
