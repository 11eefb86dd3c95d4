//! `fcexec run`: start an execution, stream its output live, and exit with
//! the workload's exit code.
//!
//! 1. The request: read whole from `--request FILE` ([`request::from_file`];
//!    a file that cannot be read or decoded exits 2, like a bad option), or
//!    built from the options ([`request::build`]); without `--kernel` the
//!    demo's images are written first. `--id` and `--timeout` apply to both.
//! 2. SIGINT and SIGTERM handlers are installed *before* the executor is
//!    opened, and from then on every stage answers them, exiting 130
//!    (SIGINT) or 143 (SIGTERM):
//!    - while the executor is being opened: fcexec leaves at once;
//!    - while the execution is being started (validated, then launched):
//!      the start is given up; if the execution got registered meanwhile it
//!      is cancelled and its (killed) result awaited, otherwise nothing ran.
//!      A validation stuck on a host path is left to the blocking pool, which
//!      the exit does not wait for;
//!    - while it runs: see 5.
//! 3. The executor is opened (waiting briefly for a lock held by a
//!    short-lived `fcexec ps` or `logs`), with `--max-output` as its output
//!    cap, and the execution started. The cap is the executor's, so it also
//!    covers executions left running by earlier runs that this process
//!    re-attaches while it owns the executor.
//! 4. `--detach`: print the id and leave; the VM runs on, and a later `logs
//!    -f`, `wait` or `cancel` re-attaches. Otherwise the output is copied to
//!    the terminal as it comes (or, with `--json`, the result printed at the
//!    end) while waiting for the result.
//! 5. A signal meanwhile cancels the execution, waits for its (killed)
//!    result, and exits 130 (SIGINT) or 143 (SIGTERM).
//!
//! Test seam, in debug builds only: `FCEXEC_TEST_STUCK_PATH=<file>` makes the
//! validation of a request naming that file block before opening it, as on
//! a file system that does not answer (`tests/signals.rs`).

use std::time::Duration;

use anyhow::Context as _;
use fcexec::{ExecutionRequest, ExecutionResult, Executor, LogOptions};
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::request;
use crate::args::RunArgs;
use crate::context::{Context, LOCK_PATIENCE};
use crate::demo;
use crate::exit::Exit;
use crate::output;
use crate::stream::{Copier, Source};

/// How long `--rm` gives a VM to stop (it has ended already, normally).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `fcexec run`.
pub async fn run(ctx: &Context, args: RunArgs) -> anyhow::Result<Exit> {
    let request = match &args.request {
        Some(file) => match request::from_file(&args, file) {
            Ok(request) => request,
            Err(e) => {
                // The input is wrong, like an option: exit 2, not 125.
                eprintln!("fcexec: {}", output::error_chain(&e));
                return Ok(Exit::Usage);
            }
        },
        None => from_options(ctx, &args)?,
    };
    let id = request.execution_id.clone();
    crate::context::check_execution_id(&id)?;
    let mut signals = Signals::new()?;
    let executor = tokio::select! {
        executor = open(ctx, args.max_output) => executor?,
        exit = signals.recv() => {
            eprintln!("fcexec: interrupted before execution {id} started");
            return Ok(exit);
        }
    };
    let exit = run_on(&executor, &request, &args, &mut signals).await;
    // Supervisors finish their step and let go of the VMs before the
    // runtime goes (a detached VM runs on for a later `logs` or `wait`).
    executor.shutdown().await;
    exit
}

/// Starts `request` on `executor` and follows it as the options say.
async fn run_on(
    executor: &Executor,
    request: &ExecutionRequest,
    args: &RunArgs,
    signals: &mut Signals,
) -> anyhow::Result<Exit> {
    let id = request.execution_id.clone();
    let started = tokio::select! {
        started = executor.start(request) => started,
        exit = signals.recv() => return interrupted_start(executor, &id, args, exit).await,
    };
    started.with_context(|| format!("cannot start execution {id}"))?;
    if args.detach {
        println!("{id}");
        return Ok(Exit::Success);
    }
    let (result, interrupted) = tokio::select! {
        result = attach(executor, &id, args.json) => (result?, None),
        exit = signals.recv() => (cancel(executor, &id).await?, Some(exit)),
    };
    finish(executor, &id, args, &result, interrupted).await
}

/// A signal arrived while `id` was being started: cancels it if it got
/// registered, and exits as the signal says.
async fn interrupted_start(
    executor: &Executor,
    id: &str,
    args: &RunArgs,
    exit: Exit,
) -> anyhow::Result<Exit> {
    if executor.status(id).is_err() {
        eprintln!("fcexec: interrupted before execution {id} started");
        return Ok(exit);
    }
    let result = cancel(executor, id).await?;
    finish(executor, id, args, &result, Some(exit)).await
}

/// Prints the result as the options say, removes the execution with
/// `--rm`, and returns the exit: the signal's when `interrupted`.
async fn finish(
    executor: &Executor,
    id: &str,
    args: &RunArgs,
    result: &ExecutionResult,
    interrupted: Option<Exit>,
) -> anyhow::Result<Exit> {
    if args.json {
        output::print_json(result)?;
    }
    if args.rm {
        executor
            .remove(id, REMOVE_TIMEOUT)
            .await
            .with_context(|| format!("cannot remove execution {id}"))?;
    }
    if let Some(exit) = interrupted {
        eprintln!("fcexec: execution {id} cancelled");
        return Ok(exit);
    }
    Ok(report(id, result))
}

/// The request built from the options (the demo's, without `--kernel`).
fn from_options(ctx: &Context, args: &RunArgs) -> anyhow::Result<ExecutionRequest> {
    let id = match &args.id {
        Some(id) => id.clone(),
        None => request::new_execution_id(),
    };
    crate::context::check_execution_id(&id)?;
    let images = match args.kernel {
        Some(_) => None,
        None => Some(demo::prepare(&ctx.root)?),
    };
    request::build(args, &id, images.as_ref())
}

/// Opens the executor, with `max_output` (`--max-output`) as its output
/// cap when given.
async fn open(ctx: &Context, max_output: Option<u64>) -> anyhow::Result<Executor> {
    let mut config = ctx.config();
    if let Some(max_output) = max_output {
        config.max_output = max_output;
    }
    #[cfg(debug_assertions)]
    stuck_path_seam(&mut config);
    ctx.open_patiently(config, LOCK_PATIENCE).await
}

/// Test seam (debug builds): with `FCEXEC_TEST_STUCK_PATH=<file>`, the
/// validation of a request naming that file blocks (for an hour) right
/// before opening it, as on a file system that does not answer.
#[cfg(debug_assertions)]
fn stuck_path_seam(config: &mut fcexec::ExecutorConfig) {
    let Some(raw) = std::env::var_os("FCEXEC_TEST_STUCK_PATH") else {
        return;
    };
    let stuck = std::fs::canonicalize(&raw).unwrap_or_else(|_| raw.into());
    config.validation_hook = Some(fcexec::validate::OpenHook::new(move |field, path| {
        if path == stuck {
            eprintln!("fcexec: test seam: {field} blocks");
            std::thread::sleep(Duration::from_secs(3600));
        }
    }));
}

/// The exit of a result, printing why it failed when it did.
pub fn report(id: &str, result: &ExecutionResult) -> Exit {
    let (exit, message) = Exit::of_result(id, result);
    if let Some(message) = message {
        eprintln!("fcexec: {message}");
    }
    exit
}

/// Streams the output (unless `quiet`) and waits for the result.
async fn attach(executor: &Executor, id: &str, quiet: bool) -> anyhow::Result<ExecutionResult> {
    if !quiet {
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let logs = executor.logs(id, options)?;
        Copier::new().copy(&mut Source::Owner(logs)).await?;
    }
    Ok(executor.wait(id).await?)
}

/// Cancels the execution and returns its result.
async fn cancel(executor: &Executor, id: &str) -> anyhow::Result<ExecutionResult> {
    if let Err(e) = executor.cancel(id).await {
        // It may have ended on its own meanwhile; its result says so.
        tracing::info!(%id, error = %e, "cancel after a signal");
    }
    executor
        .wait(id)
        .await
        .with_context(|| format!("cannot wait for execution {id} after cancelling it"))
}

/// The signals that cancel a run.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    /// Installs the handlers; from now on these signals no longer kill fcexec.
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// Resolves at the next signal, with the exit it calls for.
    async fn recv(&mut self) -> Exit {
        tokio::select! {
            _ = self.interrupt.recv() => Exit::Interrupted,
            _ = self.terminate.recv() => Exit::Terminated,
        }
    }
}
