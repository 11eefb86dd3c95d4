//! fcexec's benchmarks and endurance run, against the real Firecracker.
//!
//! ```text
//! cargo bench -p fcexec --bench executor                           # everything (~5 min)
//! FCEXEC_BENCH_QUICK=1 cargo bench -p fcexec --bench executor      # smoke pass (~1 min)
//! ```
//!
//! BENCHMARKS.md at the repository root explains every figure. The executor
//! runs in this process on a multi-threaded tokio runtime; the baseline is the
//! raw VMM (`firecracker --no-api --config-file`) booting the same VM
//! (`support::raw`).
//!
//! Transports: the raw VMM reads the serial console and decodes guest
//! protocol 1 frames, so its VMs, and every agent-mode execution the executor
//! runs to compare with it (sections 1, 2, 3, 5, B and the warm-up, through
//! `Ctx::request` and `exec_once`), send `"agent_transport": "serial"`: apples
//! to apples. Section C's raw VMM does too, while `fcexec run` uses the
//! default (the CLI has no switch). Sections without a raw baseline (4, E,
//! H) use the executor's default, protocol 2 over vsock; section T compares
//! the two transports.
//!
//! Sections, in the order they run:
//!
//! - 4: the executor's memory with 0 and N live executions (`Job::hang`), and the VMMs' memory;
//! - 1: one execution end to end, executor `run` vs raw VMM, interleaved A/B;
//! - 2: `start()` call to the first stdout chunk of `logs(follow)`;
//! - 5: the executor's CPU time per execution (`getrusage`);
//! - 3: N executions started at once, executor and raw VMM;
//! - B: a breakdown of one launch, step by step: the executor's own launch
//!   steps, timed through its `LaunchHook` (`ExecutorConfig::launch_hook`);
//! - T: throughput and the cost of the vsock path: 64 MiB of stdout over
//!   guest protocol 2 (vsock) and 256 KiB over protocol 1 (serial), MB/s and
//!   their ratio; the one-line job over each, A/B; the jitter of `logs(follow)`
//!   delivering lines the guest writes 100 ms apart;
//! - N: one execution with a network (`network: true`) vs the same without,
//!   interleaved A/B, `FCEXEC_BENCH_PAIRS` pairs (root only);
//! - E: endurance: sequential executions, then a batch at once, each removed,
//!   with fds, threads, memory, files, sockets and processes before and after;
//! - C: the CLI as users start it: `fcexec run` (demo guest) as a whole
//!   process vs the raw VMM on the same guest, and where its time goes;
//! - H: start-up, `fcexec ps` (and `ps -a`, `list`), `logs` and `run` with 0,
//!   1,000 and 10,000 finished executions in the data tree (runtime and data
//!   trees apart, as fcexec's defaults keep them).
//!
//! Environment (all optional):
//!
//! | variable | default (quick) | meaning |
//! |---|---|---|
//! | `FCEXEC_BENCH_QUICK=1` | off | small counts everywhere, no endurance |
//! | `FCEXEC_BENCH_PAIRS` | 30 (8) | A/B pairs of section 1 |
//! | `FCEXEC_BENCH_FIRST` | 30 (8) | runs of section 2 (and raw runs) |
//! | `FCEXEC_BENCH_CPU_RUNS` | 50 (10) | sequential runs of section 5 (each side) |
//! | `FCEXEC_BENCH_CONCURRENCY` | `1,10,50,200` (`1,10,50`) | batch sizes of section 3 |
//! | `FCEXEC_BENCH_LIVE` | 200 (50) | live executions of section 4 |
//! | `FCEXEC_BENCH_BREAKDOWN` | 30 (8) | launches of section B (and of each raw variant) |
//! | `FCEXEC_BENCH_BREAKDOWN_AT_ONCE` | 200 (50) | executions of section B started at once |
//! | `FCEXEC_BENCH_ENDURANCE` | 1 (0) | run the endurance part |
//! | `FCEXEC_BENCH_ENDURANCE_RUNS` | 1000 | its sequential executions |
//! | `FCEXEC_BENCH_ENDURANCE_BATCH` | 200 | its executions at once |
//! | `FCEXEC_BENCH_WORKERS` | 2 | tokio worker threads |
//! | `FCEXEC_BENCH_CLI_PAIRS` | 30 (8) | rounds of section C's A/B |
//! | `FCEXEC_BENCH_CLI_RUNS` | 15 (5) | rounds of section C's "where the time goes" |
//! | `FCEXEC_BENCH_HISTORY` | `0,1000,10000` (`0,1000`) | finished executions of section H |
//! | `FCEXEC_BENCH_HISTORY_RUNS` | 7 (3) | samples of each section H measurement per N |
//! | `FCEXEC_BENCH_CLI` | built | the `fcexec` binary of sections C and H; default: `cargo build --release -p fcexec-cli`, then `target/release/fcexec` |
//! | `FCEXEC_BENCH_THROUGHPUT_RUNS` | 5 (3) | bulk runs of section T, each transport |
//! | `FCEXEC_BENCH_VSOCK_BULK` | 67108864 (64 MiB) | bytes of stdout of section T's vsock bulk job |
//! | `FCEXEC_BENCH_SERIAL_BULK` | 262144 (65536) | bytes of stdout of section T's serial bulk job |
//! | `FCEXEC_BENCH_TRANSPORT_PAIRS` | 10 (4) | A/B pairs (vsock, serial) of section T's one-line job |
//! | `FCEXEC_BENCH_FOLLOW_RUNS` | 3 (1) | runs of section T's ticking job, each transport |
//! | `FCEXEC_BENCH_JAIL_PAIRS` | 30 (8) | A/B pairs of section J (jailed vs unjailed executor; needs root) |
//! | `FCEXEC_BENCH_SECTIONS` | all | only these sections, e.g. `1,5,B` (`E` runs endurance even in quick mode) |
//! | `FCEXEC_BENCH_DIR` | the system's temporary directory | where the bench's directory (state dir, images) goes |
//! | `FCEXEC_BENCH_GRACE_MS` | the executor's default | `ExecutorConfig::after_exit_grace`, for experiments |
//! | `FCEXEC_BENCH_BATCH_BIG=1` | off | section 3 runs the 1 KiB-output job of section 5 |
//! | `FCEXEC_BENCH_EVENT_INTERVAL` | tokio's (61) | the runtime's `event_interval`, for experiments |
//! | `FIRECRACKER_BIN` | `firecracker` on `PATH` | the VMM |
//!
//! Everything lives in a temporary directory that is removed at the end; every
//! VM is stopped at the end, also after a failure, a panic or Ctrl-C (the
//! executor's `cleanup`, then SIGKILL to any firecracker process still running
//! from that directory).
//!
//! Layout: this file is the entry point (the tokio runtime, setup, the order
//! of the sections, teardown, printing the report). The rest:
//!
//! - `support/config.rs`: [`Cfg`], the counts and switches above;
//! - `support/context.rs`: [`Ctx`], what every section shares, and running,
//!   checking and removing one execution;
//! - `support/report.rs`: the tables printed at the end;
//! - `support/{stats,procfs,raw,table}.rs`: statistics, `/proc` and
//!   `getrusage` readings, the raw-VMM baseline, table rendering;
//! - `sections/`: one module per section (`memory`, `end_to_end`,
//!   `first_output`, `cpu`, `concurrency`, `breakdown` with its `steps`,
//!   `throughput`, `endurance`, `cli` with its `anatomy`, `history` with its `fill`) and
//!   the warm-up;
//! - `support/process.rs`: whole processes reaped with `wait4`, and finding
//!   the CLI binary.

mod sections;
mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use sections::breakdown::breakdown;
use sections::cli::cli;
use sections::concurrency::concurrency;
use sections::cpu::cpu;
use sections::end_to_end::end_to_end;
use sections::endurance::endurance;
use sections::first_output::first_output;
use sections::history::history;
use sections::jail::jail;
use sections::memory::memory;
use sections::throughput::throughput;
use sections::warm_up;
use support::config::Cfg;
use support::context::Ctx;
use support::process::{describe, find_cli, CliBin};
use support::procfs;
use support::report::verdict;

fn main() {
    let cfg = Cfg::from_env();
    let (old, new) = procfs::raise_nofile();
    eprintln!("RLIMIT_NOFILE: soft limit {old} -> {new}");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.worker_threads(cfg.workers).enable_all();
    if let Some(n) = std::env::var("FCEXEC_BENCH_EVENT_INTERVAL")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        builder.event_interval(n);
    }
    let runtime = builder.build().expect("tokio runtime");
    let code = runtime.block_on(bench(cfg));
    runtime.shutdown_timeout(Duration::from_secs(5));
    std::process::exit(code);
}

/// Sets up, runs every section, and always tears down and prints the tables.
async fn bench(cfg: Cfg) -> i32 {
    let Some(firecracker) = testkit::find_binary("FIRECRACKER_BIN", "firecracker") else {
        eprintln!("SKIPPED: no firecracker (set FIRECRACKER_BIN or put it on PATH)");
        return 0;
    };
    if !testkit::kvm_usable() {
        eprintln!("SKIPPED: /dev/kvm is missing or not readable and writable");
        return 0;
    }
    let parent = std::env::var_os("FCEXEC_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = match tempfile::Builder::new()
        .prefix("fcexec-bench-")
        .tempdir_in(&parent)
    {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return 1;
        }
    };
    let ctx = match Ctx::new(dir.path(), firecracker).await {
        Ok(ctx) => Arc::new(ctx),
        Err(e) => {
            eprintln!("setup failed: {e}");
            sweep(dir.path());
            return 1;
        }
    };
    eprintln!(
        "fcexec bench: {} worker threads, {} host CPUs, state dir {}{}",
        cfg.workers,
        ctx.host.cpus,
        ctx.executor.state_dir().display(),
        if cfg.quick { " (quick)" } else { "" }
    );
    let body = AssertUnwindSafe(sections(&ctx, &cfg)).catch_unwind();
    let outcome = tokio::select! {
        outcome = body => match outcome {
            Ok(result) => result,
            Err(_) => Err("a section panicked".to_string()),
        },
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
    };
    teardown(&ctx).await;
    sweep(dir.path());
    ctx.report.lock().unwrap().print(&cfg, &ctx);
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench failed: {e}");
            1
        }
    }
}

async fn sections(ctx: &Arc<Ctx>, cfg: &Cfg) -> Result<(), String> {
    warm_up(ctx).await?;
    if cfg.wants("4") {
        memory(ctx, cfg.live).await?;
    }
    if cfg.wants("1") {
        end_to_end(ctx, cfg.pairs).await?;
    }
    if cfg.wants("2") {
        first_output(ctx, cfg.first).await?;
    }
    if cfg.wants("5") {
        cpu(ctx, cfg.cpu_runs).await?;
    }
    if cfg.wants("3") {
        for &n in &cfg.concurrency {
            concurrency(ctx, n).await?;
        }
    }
    let errors = ctx.remove_errors.load(Ordering::Relaxed);
    ctx.add(&[
        "-".into(),
        "`remove` calls (after `run`/`wait` returned) that failed, sections above".into(),
        errors.to_string(),
        String::new(),
        String::new(),
        "0".into(),
        verdict(errors == 0),
    ]);
    if cfg.wants("B") {
        breakdown(ctx, cfg.breakdown, cfg.breakdown_at_once).await?;
    }
    if cfg.wants("T") {
        throughput(ctx, cfg).await?;
    }
    if cfg.wants("N") {
        sections::network::network(ctx, cfg.pairs).await?;
    }
    if cfg.wants("J") {
        jail(ctx, cfg.jail_pairs).await?;
    }
    if cfg.wants("E") {
        endurance(ctx, cfg.endurance_runs, cfg.endurance_batch).await?;
    }
    let bin = if cfg.wants("C") || cfg.wants("H") {
        cli_bin(ctx).await
    } else {
        None
    };
    if cfg.wants("C") {
        match &bin {
            Some(bin) => cli(ctx, cfg.cli_pairs, cfg.cli_runs, bin).await?,
            None => eprintln!("C: skipped, no CLI binary"),
        }
    }
    if cfg.wants("H") {
        history(ctx, &cfg.history, cfg.history_runs, bin.as_ref()).await?;
    }
    Ok(())
}

/// The CLI binary of sections C and H (built if need be), noted in the
/// report; `None` (the CLI rows are skipped) when there is none.
async fn cli_bin(ctx: &Ctx) -> Option<CliBin> {
    let found = tokio::task::spawn_blocking(find_cli)
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    let path = match found {
        Ok(path) => path,
        Err(e) => {
            eprintln!("no CLI binary: {e}");
            return None;
        }
    };
    ctx.report
        .lock()
        .unwrap()
        .notes
        .push(format!("CLI measured: {}", describe(&path)));
    Some(CliBin {
        path,
        firecracker: ctx.firecracker.clone(),
    })
}

/// Stops whatever the executor still owns.
async fn teardown(ctx: &Ctx) {
    match tokio::time::timeout(Duration::from_secs(60), ctx.executor.cleanup()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("cleanup reported: {e}"),
        Err(_) => eprintln!("cleanup did not finish within 60 s"),
    }
}

/// Kills any firecracker process still running from `dir` (ours only).
fn sweep(dir: &Path) {
    let left = procfs::firecracker_pids(dir);
    if !left.is_empty() {
        eprintln!("killing {} leftover VMM process(es)", left.len());
        procfs::kill_all(&left);
    }
}
