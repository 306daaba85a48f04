//! The `epcheck` binary: parses flags, installs logging, runs a command, maps errors to exit codes
//! (2 for usage and config errors, 1 for other failures).

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use epcheck::UsageError;
use epcheck::cli::{Cli, Command, GlobalArgs, LogFormat};
use epcheck::commands;
use epcheck::config::{ConfigError, ProcessEnv, locate};
use tracing_subscriber::EnvFilter;

/// jemalloc instead of glibc's malloc: it hands pages freed after start-up (parsing a large
/// config) and after each burst of probes back to the OS, where glibc's per-thread arenas keep
/// them resident (BENCHMARKS.md, "memory").
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The daemon's thread count is a flag (`run --threads`); the one-shot commands take one
    // worker per CPU, which their rounds of probes use (one shard per worker).
    if let Command::Run(args) = &cli.command {
        builder.worker_threads(usize::from(args.threads));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("epcheck: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // On a worker thread, not the main thread: the daemon's loop is then woken by the
    // scheduler's tasks without a cross-thread wake-up for every probe result.
    let outcome = runtime.block_on(async {
        tokio::spawn(run(cli))
            .await
            .unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => Err(anyhow::anyhow!("the main task was cancelled: {e}")),
            })
    });
    match outcome {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let usage = e.downcast_ref::<UsageError>().is_some()
                || e.chain().any(|c| c.downcast_ref::<ConfigError>().is_some());
            eprintln!("epcheck: {e:#}");
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let cwd = std::env::current_dir().context("cannot read the working directory")?;
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    let config_path = || locate(cli.global.config.as_deref(), &cwd, exe_dir.as_deref());
    match &cli.command {
        Command::Run(_) => {
            let shutdown = commands::run::shutdown_signal();
            commands::run::run(&config_path()?, &cwd, &ProcessEnv, shutdown).await
        }
        Command::Status(args) => commands::status::run(args, &config_path()?, &ProcessEnv).await,
        Command::Khcheck => {
            let kh = epcheck::khcheck::KhEnv::from_env(&|k| std::env::var(k).ok())?;
            let loaded = epcheck::config::load(&config_path()?, &ProcessEnv)?;
            epcheck::khcheck::run_khcheck(&loaded.config, &kh).await
        }
        Command::Manifests(args) => commands::manifests::run(args, &config_path()?, &ProcessEnv),
        Command::Validate(args) => {
            commands::validate::run(args, &config_path()?, &cwd, &ProcessEnv)
        }
        Command::Probe(args) => commands::probe::run(args).await,
        Command::Plan(args) => commands::plan::run(args, &config_path()?, &ProcessEnv).await,
        Command::Once(args) => commands::once::run(args, &config_path()?, &cwd, &ProcessEnv).await,
        Command::Prune(args) => {
            commands::prune::run(args, &config_path()?, &cwd, &ProcessEnv).await
        }
    }
}

fn init_logging(global: &GlobalArgs) {
    let level = match (global.quiet, global.verbose) {
        (q, _) if q >= 2 => "off",
        (1, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let env = std::env::var("EPCHECK_LOG").ok();
    let filter =
        EnvFilter::builder().parse_lossy(epcheck::logging::directives(level, env.as_deref()));
    // Colours only on a terminal: logs piped to a file or a collector stay plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
