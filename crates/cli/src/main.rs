//! `fcexec`: runs jobs inside Firecracker microVMs and reports their results.
//!
//! A thin binary over the [`fcexec`] library. Layout:
//!
//! - [`args`]: the command line (clap);
//! - [`context`]: the state directory, opening the executor, and the
//!   read-only fallback when another process owns it;
//! - `commands`: one module per subcommand; [`doctor`]: host checks;
//! - [`demo`]: the built-in test guest that `fcexec run` boots by default;
//! - [`stream`], [`output`]: copying guest output and printing results;
//! - [`exit`]: every outcome as one [`exit::Exit`], turned into an exit code
//!   here and nowhere else.

mod args;
mod commands;
mod context;
mod demo;
mod doctor;
mod exit;
mod fault;
mod output;
mod progress;
mod stream;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::args::Cli;
use crate::exit::Exit;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed.
            let _ = e.print();
            let exit = if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Success
            };
            return ExitCode::from(exit.code());
        }
    };
    init_logging(cli.global.verbose);
    let on_error = if cli.command.reports_workload() {
        Exit::ExecutionFailed
    } else {
        Exit::Failure
    };
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| {
            let outcome = runtime.block_on(commands::execute(cli));
            runtime.shutdown_timeout(Duration::from_secs(1));
            outcome
        });
    let exit = outcome.unwrap_or_else(|e| {
        eprintln!("fcexec: {}", output::error_chain(&e));
        on_error
    });
    ExitCode::from(exit.code())
}

/// Logs to stderr: warnings by default, more with each `-v`; `RUST_LOG`
/// overrides both. netlink-packet-route warns on every link listing of a
/// kernel newer than it knows (attributes it does not decode, harmless):
/// only its errors are shown.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},netlink_packet_route=error")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
