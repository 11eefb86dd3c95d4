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
//! (`support::raw`). Sections, in the order they run:
//!
//! - 4: the executor's memory with 0 and N live executions (`Job::hang`), and the VMMs' memory;
//! - 1: one execution end to end, executor `run` vs raw VMM, interleaved A/B;
//! - 2: `start()` call to the first stdout chunk of `logs(follow)`;
//! - 5: the executor's CPU time per execution (`getrusage`);
//! - 3: N executions started at once, executor and raw VMM;
//! - B: a breakdown of one launch, step by step, with the executor's own
//!   building blocks (validate, plan, record, `Vmm::spawn`, `wait_started`,
//!   exit);
//! - E: endurance: sequential executions, then a batch at once, each removed,
//!   with fds, threads, memory, files, sockets and processes before and after.
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
//! | `FCEXEC_BENCH_BREAKDOWN_AT_ONCE` | 200 (50) | step-by-step launches of section B started at once |
//! | `FCEXEC_BENCH_ENDURANCE` | 1 (0) | run the endurance part |
//! | `FCEXEC_BENCH_ENDURANCE_RUNS` | 1000 | its sequential executions |
//! | `FCEXEC_BENCH_ENDURANCE_BATCH` | 200 | its executions at once |
//! | `FCEXEC_BENCH_WORKERS` | 2 | tokio worker threads |
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

mod support;

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fcexec::lifecycle::Phase;
use fcexec::plan::VmPlan;
use fcexec::record::{now_ms, ExecutionRecord, RECORD_VERSION};
use fcexec::state_dir::StateDir;
use fcexec::{
    Event, ExecutionRequest, ExecutionResult, Executor, ExecutorConfig, FrameDecoder, HostLimits,
    Key, LogOptions, LogStream, Mode,
};
use firecracker_api::{SpawnOptions, Vmm, VmmError};
use futures_util::FutureExt;
use serde_json::json;
use support::procfs;
use support::raw::{day_delta, log_times, second_of_day, RawMode, RawRun, RawVmm};
use support::stats::{dratio, ms, ms2, ratio, summarize, Summary};
use support::table::Table;
use test_guest::Job;

/// What every benchmarked job prints.
const HI: &str = "hi\n";
/// The longest one execution may take before it counts as failed.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Removing one execution.
const REMOVE_LIMIT: Duration = Duration::from_secs(10);

/// The job of every timed execution: print a line, exit 0.
fn hi_job() -> Job {
    Job::new().out(HI).exit(0)
}

/// Counts and switches, from the environment.
#[derive(Debug, Clone)]
struct Cfg {
    quick: bool,
    pairs: usize,
    first: usize,
    cpu_runs: usize,
    concurrency: Vec<usize>,
    live: usize,
    breakdown: usize,
    breakdown_at_once: usize,
    endurance: bool,
    endurance_runs: usize,
    endurance_batch: usize,
    workers: usize,
    /// Sections to run (`FCEXEC_BENCH_SECTIONS`, e.g. `1,B`); empty: all.
    sections: Vec<String>,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_flag(name: &str) -> Option<bool> {
    std::env::var(name)
        .ok()
        .map(|v| !matches!(v.trim(), "" | "0" | "false" | "no"))
}

impl Cfg {
    fn from_env() -> Cfg {
        let quick = env_flag("FCEXEC_BENCH_QUICK").unwrap_or(false);
        let q = |full: usize, small: usize| if quick { small } else { full };
        let concurrency = std::env::var("FCEXEC_BENCH_CONCURRENCY")
            .ok()
            .map(|v| {
                v.split(',')
                    .filter_map(|n| n.trim().parse().ok())
                    .filter(|&n| n > 0)
                    .collect::<Vec<usize>>()
            })
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                if quick {
                    vec![1, 10, 50]
                } else {
                    vec![1, 10, 50, 200]
                }
            });
        Cfg {
            quick,
            pairs: env_usize("FCEXEC_BENCH_PAIRS", q(30, 8)).max(1),
            first: env_usize("FCEXEC_BENCH_FIRST", q(30, 8)).max(1),
            cpu_runs: env_usize("FCEXEC_BENCH_CPU_RUNS", q(50, 10)).max(1),
            concurrency,
            live: env_usize("FCEXEC_BENCH_LIVE", q(200, 50)).max(1),
            breakdown: env_usize("FCEXEC_BENCH_BREAKDOWN", q(30, 8)).max(1),
            breakdown_at_once: env_usize("FCEXEC_BENCH_BREAKDOWN_AT_ONCE", q(200, 50)),
            endurance: env_flag("FCEXEC_BENCH_ENDURANCE").unwrap_or(!quick),
            endurance_runs: env_usize("FCEXEC_BENCH_ENDURANCE_RUNS", 1000),
            endurance_batch: env_usize("FCEXEC_BENCH_ENDURANCE_BATCH", 200),
            workers: env_usize("FCEXEC_BENCH_WORKERS", 2).max(1),
            sections: std::env::var("FCEXEC_BENCH_SECTIONS")
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_uppercase())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// True when section `name` should run.
    fn wants(&self, name: &str) -> bool {
        if name == "E" && !self.sections.iter().any(|s| s == "E") && !self.endurance {
            return false;
        }
        self.sections.is_empty() || self.sections.iter().any(|s| s == name)
    }
}

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
    if cfg.wants("E") {
        endurance(ctx, cfg.endurance_runs, cfg.endurance_batch).await?;
    }
    Ok(())
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

/// Everything the sections share.
struct Ctx {
    kernel: PathBuf,
    rootfs: PathBuf,
    firecracker: PathBuf,
    host: HostLimits,
    executor: Arc<Executor>,
    raw: RawVmm,
    /// The raw VMM running section 5's larger job.
    raw_big: RawVmm,
    /// State directory of the breakdown's step-by-step launches.
    replica: StateDir,
    seq: AtomicU64,
    report: Mutex<Report>,
    /// `remove` calls that failed.
    remove_errors: AtomicUsize,
    /// Leave what a failed `remove` left (endurance), instead of deleting it.
    keep_leftovers: AtomicBool,
}

impl Ctx {
    async fn new(dir: &Path, firecracker: PathBuf) -> Result<Ctx, String> {
        let kernel = test_guest::write_kernel(dir).map_err(|e| e.to_string())?;
        let rootfs = dir.join("rootfs.img");
        std::fs::write(&rootfs, vec![0u8; 64 * 1024]).map_err(|e| e.to_string())?;
        let host = HostLimits::detect().map_err(|e| e.to_string())?;
        let mut config = ExecutorConfig {
            state_root: Some(dir.join("s")),
            firecracker: Some(firecracker.clone()),
            ..ExecutorConfig::default()
        };
        if let Some(ms) = std::env::var("FCEXEC_BENCH_GRACE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.after_exit_grace = Duration::from_millis(ms);
        }
        let executor = Executor::new("bench", config)
            .await
            .map_err(|e| format!("Executor::new: {e}"))?;
        let template = agent_request(&kernel, &rootfs, "t0", &hi_job());
        let raw = RawVmm::prepare(
            &dir.join("r"),
            &firecracker,
            &template,
            &host,
            HI.as_bytes(),
        )?;
        let big = big_output();
        let template = agent_request(&kernel, &rootfs, "t1", &Job::new().out(&big).exit(0));
        let raw_big = RawVmm::prepare(
            &dir.join("rb"),
            &firecracker,
            &template,
            &host,
            big.as_bytes(),
        )?;
        Ok(Ctx {
            kernel,
            rootfs,
            firecracker,
            host,
            executor: Arc::new(executor),
            raw,
            raw_big,
            replica: StateDir::open(&dir.join("x"), "replica").map_err(|e| e.to_string())?,
            seq: AtomicU64::new(0),
            report: Mutex::new(Report::new()),
            remove_errors: AtomicUsize::new(0),
            keep_leftovers: AtomicBool::new(false),
        })
    }

    /// A fresh execution id.
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    /// An agent-mode request running `job`, with a fresh id.
    fn request(&self, prefix: &str, job: &Job) -> ExecutionRequest {
        agent_request(&self.kernel, &self.rootfs, &self.id(prefix), job)
    }

    fn add(&self, cells: &[String]) {
        self.report.lock().unwrap().main.row(cells);
    }
}

/// An agent-mode request running `job` in the test guest, shaped as the
/// node sends it (as in `tests/common/mod.rs`).
fn agent_request(kernel: &Path, rootfs: &Path, id: &str, job: &Job) -> ExecutionRequest {
    serde_json::from_value(json!({
        "job_id": format!("job-{id}"),
        "execution_id": id,
        "engine_spec": {"type": "firecracker", "params": {
            "kernel_image": kernel,
            "root_file_system": rootfs,
            "agent": true,
            "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg()),
        }},
        "resources": {"cpu": {"cores": 1}, "ram": {"size": 32u64 << 20}},
    }))
    .expect("a valid request")
}

/// The tables printed at the end.
struct Report {
    main: Table,
    breakdown: Table,
    endurance: Table,
    notes: Vec<String>,
    /// Section 1's executor and raw summaries, for the breakdown.
    e2e: Option<(Summary, Summary)>,
}

impl Report {
    fn new() -> Report {
        Report {
            main: Table::new(&[
                "#",
                "measurement",
                "executor",
                "raw VMM",
                "exec/raw",
                "target",
                "result",
            ]),
            breakdown: Table::default(),
            endurance: Table::default(),
            notes: Vec::new(),
            e2e: None,
        }
    }

    fn print(&self, cfg: &Cfg, ctx: &Ctx) {
        let version = std::process::Command::new(&ctx.firecracker)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default();
        println!();
        println!(
            "fcexec executor benchmark: {version}; {} host CPUs; {} tokio workers; kernel {}; source {}{}",
            ctx.host.cpus,
            cfg.workers,
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim(),
            source_revision(),
            if cfg.quick {
                "; QUICK (small counts)"
            } else {
                ""
            }
        );
        println!();
        if !self.main.is_empty() {
            print!("{}", self.main.render());
            println!();
        }
        if !self.breakdown.is_empty() {
            println!(
                "Where one launch's time goes (step by step with the executor's building blocks):"
            );
            println!();
            print!("{}", self.breakdown.render());
            println!();
        }
        if !self.endurance.is_empty() {
            println!("Endurance:");
            println!();
            print!("{}", self.endurance.render());
            println!();
        }
        for note in &self.notes {
            println!("note: {note}");
        }
    }
}

/// The git commit measured, `+changes` when the executor's or the API
/// crate's sources differ from it.
fn source_revision() -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short", "HEAD"]) else {
        return "unknown".into();
    };
    let changed = git(&[
        "status",
        "--porcelain",
        "--",
        "src",
        "../firecracker-api/src",
    ])
    .is_some_and(|s| !s.is_empty());
    format!("{head}{}", if changed { "+changes" } else { "" })
}

fn verdict(ok: bool) -> String {
    if ok { "met" } else { "MISSED" }.to_string()
}

fn kib(v: f64) -> String {
    if v.abs() >= 10.0 * 1024.0 {
        format!("{:.1} MiB", v / 1024.0)
    } else {
        format!("{v:.0} KiB")
    }
}

fn pair(a: Duration, b: Duration) -> String {
    format!(
        "{:.1} / {:.1} ms",
        a.as_secs_f64() * 1e3,
        b.as_secs_f64() * 1e3
    )
}

/// One execution through the executor: `run`, checked, then removed (the
/// removal is not timed). Returns the time of `run`.
async fn exec_once(ctx: &Ctx, job: &Job) -> Result<Duration, String> {
    exec_checked(ctx, job, HI).await
}

/// [`exec_once`] of a job that prints `expected`.
async fn exec_checked(ctx: &Ctx, job: &Job, expected: &str) -> Result<Duration, String> {
    let request = ctx.request("e", job);
    let started = Instant::now();
    let result = tokio::time::timeout(RUN_LIMIT, ctx.executor.run(&request)).await;
    let took = started.elapsed();
    let checked = check_output(result, expected);
    remove(ctx, &request.execution_id).await;
    checked.map(|()| took)
}

/// Turns a timed-out, failed or unexpected result of a job that prints
/// `expected` into an error.
fn check_output(
    result: Result<Result<ExecutionResult, fcexec::ExecutorError>, tokio::time::error::Elapsed>,
    expected: &str,
) -> Result<(), String> {
    match result {
        Err(_) => Err(format!("no result within {RUN_LIMIT:?}")),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(r)) if r.exit_code != 0 || r.stdout != expected => Err(format!(
            "unexpected result: exit {} stdout {:.60?} error {:?}",
            r.exit_code, r.stdout, r.error_msg
        )),
        Ok(Ok(_)) => Ok(()),
    }
}

/// `remove`s an execution. A failure is counted and reported once (with what
/// was left in its directory); outside the endurance part the bench then
/// deletes the directory itself, so that later sections start clean.
async fn remove(ctx: &Ctx, id: &str) {
    let Err(e) = ctx.executor.remove(id, REMOVE_LIMIT).await else {
        return;
    };
    if matches!(e, fcexec::ExecutorError::NotFound(_)) {
        // A start that failed already removed its execution.
        return;
    }
    let dir = ctx.executor.state_dir().join(id);
    let left: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let n = ctx.remove_errors.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        ctx.report.lock().unwrap().notes.push(format!(
            "remove({id}) failed: {e}; left in its directory a moment later: {left:?}"
        ));
    }
    if !ctx.keep_leftovers.load(Ordering::Relaxed) {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Execution directories left in the state directory although the executor
/// knows no execution (a failed `remove`/`cleanup`); deleted unless
/// `keep_leftovers`. Returns how many there were.
fn leftover_dirs(ctx: &Ctx) -> usize {
    let known: Vec<String> = ctx
        .executor
        .list()
        .into_iter()
        .map(|i| i.execution_id)
        .collect();
    let mut count = 0;
    for entry in std::fs::read_dir(ctx.executor.state_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() && !known.contains(&name) {
            count += 1;
            if !ctx.keep_leftovers.load(Ordering::Relaxed) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    count
}

async fn warm_up(ctx: &Ctx) -> Result<(), String> {
    eprintln!("warm-up");
    for _ in 0..3 {
        exec_once(ctx, &hi_job()).await?;
        if let Some(e) = ctx.raw.run(RawMode::NoApi).await.error {
            return Err(format!("raw VMM: {e}"));
        }
    }
    Ok(())
}

/// Section 1: `run` vs the raw VMM, interleaved, alternating which goes first.
async fn end_to_end(ctx: &Ctx, pairs: usize) -> Result<(), String> {
    eprintln!("1: end to end, {pairs} interleaved pairs");
    let (mut exec, mut raw) = (Vec::new(), Vec::new());
    let (mut exec_fail, mut raw_fail) = (0, 0);
    for i in 0..pairs {
        for side in [i % 2, 1 - i % 2] {
            if side == 0 {
                match exec_once(ctx, &hi_job()).await {
                    Ok(d) => exec.push(d),
                    Err(e) => {
                        exec_fail += 1;
                        eprintln!("executor run failed: {e}");
                    }
                }
            } else {
                let run = ctx.raw.run(RawMode::NoApi).await;
                match run.error {
                    None => raw.push(run.total),
                    Some(e) => {
                        raw_fail += 1;
                        eprintln!("raw run failed: {e}");
                    }
                }
            }
        }
    }
    let (e, r) = (summarize(&exec), summarize(&raw));
    let median_ratio = dratio(e.p50, r.p50);
    ctx.add(&[
        "1".into(),
        format!("end to end, one `run` (print a line, exit 0): median ({pairs} A/B pairs)"),
        ms(e.p50),
        ms(r.p50),
        format!("{median_ratio:.2}"),
        "≤ 1.25".into(),
        verdict(median_ratio <= 1.25),
    ]);
    ctx.add(&[
        "1".into(),
        "end to end: p95".into(),
        ms(e.p95),
        ms(r.p95),
        format!("{:.2}", dratio(e.p95, r.p95)),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "1".into(),
        "end to end: failures".into(),
        exec_fail.to_string(),
        raw_fail.to_string(),
        String::new(),
        "0".into(),
        verdict(exec_fail == 0),
    ]);
    ctx.report.lock().unwrap().e2e = Some((e, r));
    Ok(())
}

/// Section 2: `start()` call to the first stdout chunk of `logs(follow)`.
async fn first_output(ctx: &Ctx, runs: usize) -> Result<(), String> {
    eprintln!("2: first output, {runs} runs each");
    let (mut started, mut first, mut raw_first) = (Vec::new(), Vec::new(), Vec::new());
    let mut already = 0;
    for i in 0..runs {
        for side in [i % 2, 1 - i % 2] {
            if side == 1 {
                let run = ctx.raw.run(RawMode::FirstOutput).await;
                match (run.error, run.first_stdout) {
                    (None, Some(d)) => raw_first.push(d),
                    (e, _) => eprintln!("raw first-output run failed: {e:?}"),
                }
                continue;
            }
            let request = ctx.request("f", &hi_job());
            let id = request.execution_id.clone();
            let t0 = Instant::now();
            let measured = async {
                ctx.executor
                    .start(&request)
                    .await
                    .map_err(|e| e.to_string())?;
                let returned = t0.elapsed();
                let mut logs = ctx
                    .executor
                    .logs(
                        &id,
                        LogOptions {
                            follow: true,
                            tail: None,
                        },
                    )
                    .map_err(|e| e.to_string())?;
                loop {
                    match logs.next().await {
                        Some(Ok(chunk)) if chunk.stream == LogStream::Stdout => {
                            return Ok::<_, String>((returned, t0.elapsed(), chunk.data));
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(e.to_string()),
                        None => return Err("the logs ended without stdout".into()),
                    }
                }
            };
            match tokio::time::timeout(RUN_LIMIT, measured).await {
                Ok(Ok((returned, at, data))) => {
                    started.push(returned);
                    first.push(at);
                    // The whole line in the first chunk means it was already
                    // stored when `logs` was opened.
                    if data == HI.as_bytes() && ctx.executor.status(&id).is_ok() {
                        already +=
                            usize::from(at.saturating_sub(returned) < Duration::from_micros(300));
                    }
                }
                Ok(Err(e)) => eprintln!("first-output run failed: {e}"),
                Err(_) => eprintln!("first-output run timed out"),
            }
            let _ = tokio::time::timeout(RUN_LIMIT, ctx.executor.wait(&id)).await;
            remove(ctx, &id).await;
        }
    }
    let (s, f, r) = (
        summarize(&started),
        summarize(&first),
        summarize(&raw_first),
    );
    ctx.add(&[
        "2".into(),
        format!(
            "`start()` call → it returns (VM running): p50 / p95 (n={})",
            s.n
        ),
        pair(s.p50, s.p95),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "2".into(),
        format!(
            "`start()` call → first stdout chunk of `logs(follow)`: p50 / p95 (n={}; raw: spawn → first decoded stdout frame on a pipe)",
            f.n
        ),
        pair(f.p50, f.p95),
        pair(r.p50, r.p95),
        format!("{:.2}", dratio(f.p50, r.p50)),
        String::new(),
        String::new(),
    ]);
    ctx.report.lock().unwrap().notes.push(format!(
        "section 2: in {already} of {} executor runs the first chunk came within 0.3 ms of `start()` returning, i.e. the guest had printed before `start()` returned",
        f.n
    ));
    Ok(())
}

/// CPU of one sequential execution: this process during `run` and during
/// `remove`, and the VMM (reaped child).
#[derive(Debug, Clone, Copy, Default)]
struct RunCpu {
    run: Duration,
    remove: Duration,
    vmm: Duration,
    user: Duration,
    sys: Duration,
}

/// One execution of `job` through the executor, with its CPU.
async fn exec_cpu_once(ctx: &Ctx, job: &Job, expected: &str) -> Result<RunCpu, String> {
    let request = ctx.request("p", job);
    let (c0, v0) = (procfs::cpu_self(), procfs::cpu_children());
    let result = tokio::time::timeout(RUN_LIMIT, ctx.executor.run(&request)).await;
    let c1 = procfs::cpu_self();
    remove(ctx, &request.execution_id).await;
    let (c2, v2) = (procfs::cpu_self(), procfs::cpu_children());
    check_output(result, expected)?;
    let all = c2.since(c0);
    Ok(RunCpu {
        run: c1.since(c0).total(),
        remove: c2.since(c1).total(),
        vmm: v2.since(v0).total(),
        user: all.user,
        sys: all.sys,
    })
}

/// One raw run with its CPU: this process's (`run`), the VMM's.
async fn raw_cpu_once(raw: &RawVmm) -> Result<(RunCpu, usize), String> {
    let (c0, v0) = (procfs::cpu_self(), procfs::cpu_children());
    let run = raw.run(RawMode::NoApi).await;
    let (c1, v1) = (procfs::cpu_self(), procfs::cpu_children());
    if let Some(e) = run.error {
        return Err(e);
    }
    let all = c1.since(c0);
    Ok((
        RunCpu {
            run: all.total(),
            remove: Duration::ZERO,
            vmm: v1.since(v0).total(),
            user: all.user,
            sys: all.sys,
        },
        run.serial_bytes,
    ))
}

/// Per-run CPU samples of both sides, interleaved A/B.
#[derive(Default)]
struct CpuSamples {
    exec: Vec<RunCpu>,
    raw: Vec<RunCpu>,
    serial_bytes: usize,
    failures: usize,
}

impl CpuSamples {
    /// Median of `f` over one side.
    fn median(side: &[RunCpu], f: fn(&RunCpu) -> Duration) -> Duration {
        summarize(&side.iter().map(f).collect::<Vec<_>>()).p50
    }
}

async fn cpu_ab(ctx: &Ctx, runs: usize, job: &Job, raw: &RawVmm, expected: &str) -> CpuSamples {
    let mut samples = CpuSamples::default();
    for i in 0..runs {
        for side in [i % 2, 1 - i % 2] {
            if side == 0 {
                match exec_cpu_once(ctx, job, expected).await {
                    Ok(c) => samples.exec.push(c),
                    Err(e) => {
                        samples.failures += 1;
                        eprintln!("executor run failed: {e}");
                    }
                }
            } else {
                match raw_cpu_once(raw).await {
                    Ok((c, bytes)) => {
                        samples.raw.push(c);
                        samples.serial_bytes = samples.serial_bytes.max(bytes);
                    }
                    Err(e) => {
                        samples.failures += 1;
                        eprintln!("raw run failed: {e}");
                    }
                }
            }
        }
    }
    samples
}

/// Section 5: CPU time per execution, sequential runs, interleaved with the
/// raw VMM; medians of per-run `getrusage` deltas (robust to the machine's
/// noise), with the means alongside.
async fn cpu(ctx: &Ctx, runs: usize) -> Result<(), String> {
    eprintln!("5: CPU per execution, {runs} sequential runs each");
    let med = CpuSamples::median;
    let total = |c: &RunCpu| c.run + c.remove;
    let mean_of =
        |side: &[RunCpu], f: fn(&RunCpu) -> Duration| mean(&side.iter().map(f).collect::<Vec<_>>());
    let small = cpu_ab(ctx, runs, &hi_job(), &ctx.raw, HI).await;
    let (e, r) = (&small.exec, &small.raw);
    let exec_cpu = med(e, total);
    ctx.add(&[
        "5".into(),
        format!("CPU per execution of this process, `run` + `remove`: median (mean) of {runs} sequential runs, interleaved (getrusage SELF, tokio runtime included; raw: tokio spawn + wait + check)"),
        format!(
            "{} ({}; user {} + sys {})",
            ms2(exec_cpu),
            ms2(mean_of(e, total)),
            ms2(mean_of(e, |c| c.user)),
            ms2(mean_of(e, |c| c.sys))
        ),
        format!("{} ({})", ms2(med(r, total)), ms2(mean_of(r, total))),
        format!("{:.2}", dratio(exec_cpu, med(r, total))),
        "≤ 2 ms".into(),
        verdict(exec_cpu <= Duration::from_millis(2)),
    ]);
    ctx.add(&[
        "5".into(),
        "  of which during `run`; during `remove` (medians)".into(),
        format!("{}; {}", ms2(med(e, |c| c.run)), ms2(med(e, |c| c.remove))),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "5".into(),
        "CPU per execution of the VMM process (getrusage CHILDREN): median (mean)".into(),
        format!(
            "{} ({})",
            ms2(med(e, |c| c.vmm)),
            ms2(mean_of(e, |c| c.vmm))
        ),
        format!(
            "{} ({})",
            ms2(med(r, |c| c.vmm)),
            ms2(mean_of(r, |c| c.vmm))
        ),
        format!("{:.2}", dratio(med(e, |c| c.vmm), med(r, |c| c.vmm))),
        String::new(),
        String::new(),
    ]);
    // The same with more output: the VMM writes the serial console one byte
    // per write(2), and the executor follows the file with inotify.
    let big = big_output();
    let large = cpu_ab(ctx, runs, &Job::new().out(&big).exit(0), &ctx.raw_big, &big).await;
    let (eb, rb) = (&large.exec, &large.raw);
    ctx.add(&[
        "5".into(),
        format!(
            "the same, job printing {} bytes ({} bytes of serial output, vs {}): this process; the VMM (medians)",
            big.len(),
            large.serial_bytes,
            small.serial_bytes
        ),
        format!("{}; {}", ms2(med(eb, total)), ms2(med(eb, |c| c.vmm))),
        format!("{}; {}", ms2(med(rb, total)), ms2(med(rb, |c| c.vmm))),
        format!("{:.2}", dratio(med(eb, total), med(rb, total))),
        String::new(),
        String::new(),
    ]);
    let extra = large.serial_bytes.saturating_sub(small.serial_bytes).max(1) as f64;
    let slope = |a: Duration, b: Duration| (a.as_secs_f64() - b.as_secs_f64()) * 1e6 / extra;
    ctx.add(&[
        "5".into(),
        "  hence CPU per byte of serial output: this process; the VMM".into(),
        format!(
            "{:.1} µs; {:.1} µs",
            slope(med(eb, total), exec_cpu),
            slope(med(eb, |c| c.vmm), med(e, |c| c.vmm))
        ),
        format!(
            "{:.1} µs; {:.1} µs",
            slope(med(rb, total), med(r, total)),
            slope(med(rb, |c| c.vmm), med(r, |c| c.vmm))
        ),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let failed = small.failures + large.failures;
    if failed > 0 {
        ctx.report.lock().unwrap().notes.push(format!(
            "section 5: {failed} runs failed (left out of the figures)"
        ));
    }
    Ok(())
}

/// The output of section 5's larger job: 1 KiB of text.
fn big_output() -> String {
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(16)
}

/// What one batch of executions started at once gave.
struct Batch {
    wall: Duration,
    latency: Summary,
    failures: usize,
    /// CPU of this process and of the VMMs during the batch.
    cpu: procfs::Cpu,
    vmm_cpu: procfs::Cpu,
    /// Batch start → each VMM started, and each VMM's lifetime, from its log.
    vmm_started: Vec<Duration>,
    vmm_lifetime: Vec<Duration>,
    /// Executor only: VMM exit (last log line) → the supervisor's
    /// `finished_ms` in the record, and `finished_ms` → `run` returned.
    exit_to_finish: Vec<Duration>,
    finish_to_caller: Vec<Duration>,
}

/// The start offsets and lifetimes of VMMs from their log times.
fn vmm_timeline(origin: f64, times: &[(f64, f64)]) -> (Vec<Duration>, Vec<Duration>) {
    times
        .iter()
        .map(|&(first, last)| (day_delta(origin, first), day_delta(first, last)))
        .unzip()
}

/// `FCEXEC_BENCH_BATCH_BIG=1`: section 3's batches run section 5's larger
/// job (1 KiB of output) instead of `hi_job`, to see what output costs at scale.
fn batch_big() -> bool {
    env_flag("FCEXEC_BENCH_BATCH_BIG").unwrap_or(false)
}

/// `n` executions through the executor, each in its own task, all at once;
/// latency is from the batch's start to each result. All removed afterwards.
async fn exec_batch(ctx: &Arc<Ctx>, n: usize, prefix: &str) -> Batch {
    let big = batch_big();
    let (job, expected) = if big {
        (Job::new().out(big_output()).exit(0), big_output())
    } else {
        (hi_job(), HI.to_string())
    };
    let requests: Vec<ExecutionRequest> = (0..n).map(|_| ctx.request(prefix, &job)).collect();
    let (c0, v0) = (procfs::cpu_self(), procfs::cpu_children());
    let origin = second_of_day(std::time::SystemTime::now());
    let t0 = Instant::now();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let executor = ctx.executor.clone();
            let expected = expected.clone();
            tokio::spawn(async move {
                let result = tokio::time::timeout(RUN_LIMIT, executor.run(&request)).await;
                let returned_ms = now_ms();
                (t0.elapsed(), check_output(result, &expected), returned_ms)
            })
        })
        .collect();
    let results = futures_util::future::join_all(tasks).await;
    let wall = t0.elapsed();
    let (cpu, vmm_cpu) = (
        procfs::cpu_self().since(c0),
        procfs::cpu_children().since(v0),
    );
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut first_error = None;
    let mut returned = std::collections::HashMap::new();
    for (result, request) in results.into_iter().zip(&requests) {
        if let Ok((_, _, at)) = &result {
            returned.insert(request.execution_id.clone(), *at);
        }
        match result {
            Ok((took, Ok(()), _)) => latencies.push(took),
            Ok((_, Err(e), _)) => {
                failures += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("{failures} of {n} executions failed; the first: {e}");
    }
    let times: Vec<(f64, f64)> = requests
        .iter()
        .filter_map(|r| {
            log_times(
                &ctx.executor
                    .state_dir()
                    .join(&r.execution_id)
                    .join("firecracker.log"),
            )
        })
        .collect();
    let (vmm_started, vmm_lifetime) = vmm_timeline(origin, &times);
    let (mut exit_to_finish, mut finish_to_caller) = (Vec::new(), Vec::new());
    for r in &requests {
        let dir = ctx.executor.state_dir().join(&r.execution_id);
        let (Some((_, exited)), Ok(record), Some(back)) = (
            log_times(&dir.join("firecracker.log")),
            ExecutionRecord::load(&dir.join("record.json")),
            returned.get(&r.execution_id),
        ) else {
            continue;
        };
        let Some(finished_ms) = record.finished_ms else {
            continue;
        };
        let finished = (finished_ms % 86_400_000) as f64 / 1e3;
        exit_to_finish.push(day_delta(exited, finished));
        finish_to_caller.push(Duration::from_millis(back.saturating_sub(finished_ms)));
    }
    let removals = requests.iter().map(|r| remove(ctx, &r.execution_id));
    futures_util::future::join_all(removals).await;
    Batch {
        wall,
        latency: summarize(&latencies),
        failures,
        cpu,
        vmm_cpu,
        vmm_started,
        vmm_lifetime,
        exit_to_finish,
        finish_to_caller,
    }
}

/// `n` raw VMMs, all at once.
async fn raw_batch(ctx: &Arc<Ctx>, n: usize) -> Batch {
    let (c0, v0) = (procfs::cpu_self(), procfs::cpu_children());
    let origin = second_of_day(std::time::SystemTime::now());
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let raw = if batch_big() { &ctx.raw_big } else { &ctx.raw };
                let run: RawRun = raw.run(RawMode::NoApi).await;
                (t0.elapsed(), run.error, run.vmm_times)
            })
        })
        .collect();
    let results = futures_util::future::join_all(tasks).await;
    let wall = t0.elapsed();
    let (cpu, vmm_cpu) = (
        procfs::cpu_self().since(c0),
        procfs::cpu_children().since(v0),
    );
    let mut latencies = Vec::new();
    let mut failures = 0;
    let mut times = Vec::new();
    for result in results {
        if let Ok((_, _, Some(t))) = &result {
            times.push(*t);
        }
        match result {
            Ok((took, None, _)) => latencies.push(took),
            Ok((_, Some(e), _)) => {
                failures += 1;
                eprintln!("raw run failed: {e}");
            }
            Err(e) => {
                failures += 1;
                eprintln!("raw task failed: {e}");
            }
        }
    }
    let (vmm_started, vmm_lifetime) = vmm_timeline(origin, &times);
    Batch {
        wall,
        latency: summarize(&latencies),
        failures,
        cpu,
        vmm_cpu,
        vmm_started,
        vmm_lifetime,
        exit_to_finish: Vec::new(),
        finish_to_caller: Vec::new(),
    }
}

/// Section 3: `n` at once, executor then raw VMM.
async fn concurrency(ctx: &Arc<Ctx>, n: usize) -> Result<(), String> {
    eprintln!("3: {n} at once");
    let e = exec_batch(ctx, n, "c").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = raw_batch(ctx, n).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let tput = |b: &Batch| (n - b.failures) as f64 / b.wall.as_secs_f64();
    let big = n >= 200;
    let tratio = tput(&e) / tput(&r);
    ctx.add(&[
        "3".into(),
        format!("N={n} at once: wall until every result; throughput"),
        format!("{}; {:.1}/s", ms(e.wall), tput(&e)),
        format!("{}; {:.1}/s", ms(r.wall), tput(&r)),
        format!("{tratio:.2} (throughput)"),
        if big {
            "≥ 0.70".into()
        } else {
            String::new()
        },
        if big {
            verdict(tratio >= 0.7)
        } else {
            String::new()
        },
    ]);
    ctx.add(&[
        "3".into(),
        format!("N={n}: per-execution latency p50 / p99 (batch start → result)"),
        pair(e.latency.p50, e.latency.p99),
        pair(r.latency.p50, r.latency.p99),
        ratio(e.latency.p50.as_secs_f64(), r.latency.p50.as_secs_f64()),
        String::new(),
        String::new(),
    ]);
    let used = |b: &Batch| {
        (b.cpu.total() + b.vmm_cpu.total()).as_secs_f64()
            / (b.wall.as_secs_f64() * ctx.host.cpus.max(1) as f64)
    };
    ctx.add(&[
        "3".into(),
        format!("N={n}: CPU busy during the batch (this process + VMMs) / (wall × host CPUs)"),
        format!("{:.0}%", used(&e) * 100.0),
        format!("{:.0}%", used(&r) * 100.0),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let cpu = |b: &Batch| {
        format!(
            "{}; {}",
            ms2(b.cpu.total() / n as u32),
            ms2(b.vmm_cpu.total() / n as u32)
        )
    };
    ctx.add(&[
        "3".into(),
        format!("N={n}: CPU per execution during the batch: this process; the VMMs"),
        cpu(&e),
        cpu(&r),
        format!(
            "{:.2} (sum)",
            dratio(
                e.cpu.total() + e.vmm_cpu.total(),
                r.cpu.total() + r.vmm_cpu.total()
            )
        ),
        String::new(),
        String::new(),
    ]);
    let spread = |b: &Batch| {
        let s = summarize(&b.vmm_started);
        format!(
            "{}; last {}",
            pair(s.p50, s.p95),
            ms(s.p99
                .max(*b.vmm_started.iter().max().unwrap_or(&Duration::ZERO)))
        )
    };
    ctx.add(&[
        "3".into(),
        format!("N={n}: batch start → VMM started (first line of its log): p50 / p95; last"),
        spread(&e),
        spread(&r),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let life = |b: &Batch| {
        let s = summarize(&b.vmm_lifetime);
        pair(s.p50, s.p95)
    };
    ctx.add(&[
        "3".into(),
        format!("N={n}: VMM lifetime (first to last line of its log): p50 / p95"),
        life(&e),
        life(&r),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let (a, b) = (summarize(&e.exit_to_finish), summarize(&e.finish_to_caller));
    ctx.add(&[
        "3".into(),
        format!("N={n}: executor: VMM exit (last log line) → result recorded (record.finished_ms) → `run` returned: p50 / p95 each (ms clock)"),
        format!("{}; {}", pair(a.p50, a.p95), pair(b.p50, b.p95)),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "3".into(),
        format!("N={n}: failures"),
        e.failures.to_string(),
        r.failures.to_string(),
        String::new(),
        if big { "0".into() } else { String::new() },
        if big {
            verdict(e.failures == 0)
        } else {
            String::new()
        },
    ]);
    Ok(())
}

/// Memory of this process.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: u64,
    heap: Option<u64>,
    fds: usize,
    threads: u64,
}

impl Mem {
    fn now() -> Mem {
        Mem {
            rss: procfs::rss_kib(None),
            heap: procfs::heap_in_use(),
            fds: procfs::open_fds(),
            threads: procfs::threads(),
        }
    }
}

/// Section 4: memory with 0 and `n` live (hanging) executions.
async fn memory(ctx: &Arc<Ctx>, n: usize) -> Result<(), String> {
    eprintln!("4: memory with {n} live executions");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = Mem::now();
    let requests: Vec<ExecutionRequest> = (0..n)
        .map(|_| ctx.request("m", &Job::new().hang()))
        .collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let executor = ctx.executor.clone();
            tokio::spawn(async move { executor.start(&request).await.map_err(|e| e.to_string()) })
        })
        .collect();
    let mut failures = 0;
    for result in futures_util::future::join_all(tasks).await {
        if let Err(e) = result.map_err(|e| e.to_string()).and_then(|r| r) {
            failures += 1;
            eprintln!("start failed: {e}");
        }
    }
    let all_started = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = Mem::now();
    let running = ctx
        .executor
        .list()
        .iter()
        .filter(|i| i.status == fcexec::ExecutionStatus::Running)
        .count();
    let pids = procfs::firecracker_pids(ctx.executor.state_dir());
    let vmm_rss: Vec<u64> = pids.iter().map(|&p| procfs::rss_kib(Some(p))).collect();
    let vmm_pss: Vec<u64> = pids.iter().filter_map(|&p| procfs::pss_kib(p)).collect();
    let t1 = Instant::now();
    let cleaned = ctx.executor.cleanup().await;
    let cleanup_took = t1.elapsed();
    if let Err(e) = &cleaned {
        eprintln!("cleanup: {e}");
    }
    let left = leftover_dirs(ctx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = Mem::now();
    let live_n = running.max(1);
    let per = |a: u64, b: u64| (a as f64 - b as f64) / live_n as f64;
    let rss_per = per(live.rss, before.rss);
    ctx.add(&[
        "4".into(),
        "executor RSS (VmRSS of this process): 0 live → N live → after cleanup()".into(),
        format!(
            "{} → {} → {}",
            kib(before.rss as f64),
            kib(live.rss as f64),
            kib(after.rss as f64)
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "4".into(),
        format!("executor RSS per live execution ({n} started at once: {running} running, {failures} failed to start)"),
        kib(rss_per),
        String::new(),
        String::new(),
        "≤ 100 KiB".into(),
        verdict(rss_per <= 100.0),
    ]);
    if let (Some(h0), Some(h1), Some(h2)) = (before.heap, live.heap, after.heap) {
        ctx.add(&[
            "4".into(),
            "executor heap in use (mallinfo2) per live execution; after cleanup()".into(),
            format!(
                "{}; {:+.0} KiB",
                kib(per(h1, h0) / 1024.0),
                (h2 as f64 - h0 as f64) / 1024.0
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    ctx.add(&[
        "4".into(),
        "executor fds and threads per live execution".into(),
        format!(
            "{:.1} fds ({} → {}), {:+} threads",
            per(live.fds as u64, before.fds as u64),
            before.fds,
            live.fds,
            live.threads as i64 - before.threads as i64
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let sum: u64 = vmm_rss.iter().sum();
    let pss: u64 = vmm_pss.iter().sum();
    let count = vmm_rss.len().max(1) as f64;
    ctx.add(&[
        "4".into(),
        format!(
            "VMM processes' memory, {} live: RSS sum / avg; PSS avg",
            vmm_rss.len()
        ),
        format!(
            "{} / {}; {}",
            kib(sum as f64),
            kib(sum as f64 / count),
            kib(pss as f64 / vmm_pss.len().max(1) as f64)
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "4".into(),
        format!("time to start N={n} hanging executions at once; `cleanup()` of them"),
        format!("{}; {}", ms(all_started), ms(cleanup_took)),
        String::new(),
        String::new(),
        String::new(),
        match &cleaned {
            Ok(()) => String::new(),
            Err(e) => format!("cleanup failed for {}, {left} dirs left", e.failures.len()),
        },
    ]);
    Ok(())
}

/// Wall and CPU time of one step.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    wall: Duration,
    /// CPU of this process (every thread) during the step.
    cpu: Duration,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// Times consecutive steps: each `lap` is the cost since the previous one.
struct Laps {
    at: Instant,
    cpu: Duration,
}

impl Laps {
    fn start() -> Laps {
        Laps {
            at: Instant::now(),
            cpu: procfs::cpu_self().total(),
        }
    }

    fn lap(&mut self) -> Cost {
        let (at, cpu) = (Instant::now(), procfs::cpu_self().total());
        let cost = Cost {
            wall: at - self.at,
            cpu: cpu.saturating_sub(self.cpu),
        };
        (self.at, self.cpu) = (at, cpu);
        cost
    }
}

/// The steps of one launch, done one by one as `launch.rs` does them.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    validate: Cost,
    files: Cost,
    records: Cost,
    /// Building the record (before the VMM is spawned).
    records_before_spawn: Cost,
    spawn: Cost,
    ready: Cost,
    exit: Cost,
    finish: Cost,
    total: Cost,
    /// CPU of the VMM process (reaped child).
    vmm_cpu: Duration,
    /// From `origin` (the batch's start) to the VMM spawned, and to the end.
    spawned_at: Duration,
    done_at: Duration,
    /// The VMM's last log line ("exiting") → its exit seen by `Vmm`.
    exit_seen: Cost,
    exited_before_ready: bool,
}

/// One launch with the executor's building blocks, timed step by step:
/// validate → plan files → record → `Vmm::spawn` → `wait_started` →
/// wait for the VMM's exit → decode, store, clean up.
async fn replica_once(ctx: &Ctx, origin: Instant) -> Result<Steps, String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let request = ctx.request("x", &hi_job());
    let mut st = Steps::default();
    let children = procfs::cpu_children();
    let mut whole = Laps::start();
    let mut laps = Laps::start();

    let valid = fcexec::validate(&request, &ctx.host).map_err(|e| s(&e))?;
    let paths = ctx
        .replica
        .execution(&valid.execution_id)
        .map_err(|e| s(&e))?;
    let key = Key::generate().map_err(|e| s(&e))?;
    st.validate = laps.lap();

    paths.create().map_err(|e| s(&e))?;
    let metadata = VmPlan::new(&valid, &paths, Some(key.clone()))
        .write(&paths)
        .map_err(|e| s(&e))?;
    st.files = laps.lap();

    let mut record = ExecutionRecord {
        version: RECORD_VERSION,
        job_id: valid.job_id.clone(),
        execution_id: valid.execution_id.clone(),
        phase: Phase::Pending,
        mode: Mode::Agent,
        key: Some(key.to_hex()),
        pid: None,
        pid_start_time: None,
        cancel_requested: false,
        outputs: Vec::new(),
        results_dir: None,
        created_ms: now_ms(),
        finished_ms: None,
        persist_ms: 0,
        result: None,
    };
    st.records_before_spawn = laps.lap();

    let mut vmm = Vmm::spawn(SpawnOptions {
        firecracker: ctx.firecracker.clone(),
        id: valid.execution_id.replace('.', "_"),
        api_socket: Some(paths.api_socket()),
        config_file: Some(paths.vm_config()),
        metadata,
        serial_output: paths.serial(),
        log_path: paths.vmm_log(),
        extra_sockets: vec![],
        jailer: None,
    })
    .await
    .map_err(|e| s(&e))?;
    st.spawn = laps.lap();
    st.spawned_at = origin.elapsed();

    record.pid = Some(vmm.pid());
    record.pid_start_time = firecracker_api::attach::start_time(vmm.pid());
    record.phase = Phase::Booting;
    record.save(&paths.record()).map_err(|e| s(&e))?;
    st.records += laps.lap();

    // As `launch` does since 08a5845: wait for the VMM's log to say the
    // guest started; no API request.
    let ready = vmm.wait_started(Duration::from_secs(10)).await;
    st.ready = laps.lap();
    let mut seen = second_of_day(std::time::SystemTime::now());
    match ready {
        Ok(()) => {}
        Err(VmmError::ExitedEarly { .. }) if vmm.has_started() => st.exited_before_ready = true,
        Err(e) => return Err(e.to_string()),
    }
    record.phase = Phase::Running;

    // Dropping the handle on a timeout kills the VMM.
    let exit = match tokio::time::timeout(RUN_LIMIT, vmm.wait()).await {
        Ok(exit) => {
            if !st.exited_before_ready {
                seen = second_of_day(std::time::SystemTime::now());
            }
            exit.map_err(|e| s(&e))?
        }
        Err(_) => {
            return Err(format!(
                "the VMM did not exit within {RUN_LIMIT:?}; its log ends with: {}",
                firecracker_api::exit::log_tail(&paths.vmm_log(), 2)
            ))
        }
    };
    st.exit = laps.lap();

    let serial = std::fs::read(paths.serial()).map_err(|e| s(&e))?;
    let mut decoder = FrameDecoder::new(key);
    let mut events = decoder.push(&serial);
    events.extend(decoder.finish());
    let (mut out, mut code) = (Vec::new(), None);
    for event in events {
        match event {
            Event::Stdout(d) => out.extend(d),
            Event::Exit(c) => code = Some(c),
            _ => {}
        }
    }
    std::fs::write(paths.stdout(), &out).map_err(|e| s(&e))?;
    std::fs::write(paths.stderr(), b"").map_err(|e| s(&e))?;
    let _ = firecracker_api::exit::log_tail(&paths.vmm_log(), 12);
    vmm.cleanup();
    for path in [paths.vm_config(), paths.config_drive(), paths.api_socket()] {
        let _ = std::fs::remove_file(path);
    }
    record.phase = Phase::Succeeded;
    record.finished_ms = Some(now_ms());
    record.save_outcome(&paths.record()).map_err(|e| s(&e))?;
    st.finish = laps.lap();
    st.total = whole.lap();
    st.done_at = origin.elapsed();
    if let Some((_, exited)) = log_times(&paths.vmm_log()) {
        st.exit_seen = Cost {
            wall: day_delta(exited, seen),
            cpu: Duration::ZERO,
        };
    }
    st.vmm_cpu = procfs::cpu_children().since(children).total();
    let _ = paths.remove();
    if code != Some(0)
        || out != HI.as_bytes()
        || !matches!(exit, firecracker_api::VmmExit::Exited(0))
    {
        return Err(format!(
            "unexpected outcome: {exit:?}, exit {code:?}, stdout {:?}",
            String::from_utf8_lossy(&out)
        ));
    }
    Ok(st)
}

/// A raw run with the VMM's CPU time (sequential runs only).
async fn raw_costed(ctx: &Ctx, mode: RawMode) -> Option<(Duration, Duration)> {
    let children = procfs::cpu_children();
    let run = ctx.raw.run(mode).await;
    let cpu = procfs::cpu_children().since(children).total();
    match run.error {
        None => Some((run.total, cpu)),
        Some(e) => {
            eprintln!("raw run failed: {e}");
            None
        }
    }
}

fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        Duration::ZERO
    } else {
        samples.iter().sum::<Duration>() / samples.len() as u32
    }
}

/// A breakdown row: its name, the step it shows, what the step is.
type StepRow = (&'static str, fn(&Steps) -> Cost, &'static str);

/// One row of the breakdown: wall p50/p95 and mean CPU of sequential
/// launches, and wall p50/p95 of launches all started at once.
fn step_row(t: &mut Table, name: &str, seq: &[Cost], conc: &[Cost], what: &str) {
    let wall = |c: &[Cost]| summarize(&c.iter().map(|c| c.wall).collect::<Vec<_>>());
    let (w, wc) = (wall(seq), wall(conc));
    let cpu = mean(&seq.iter().map(|c| c.cpu).collect::<Vec<_>>());
    let blank_if_none = |c: &[Cost], d: Duration| {
        if c.is_empty() {
            String::new()
        } else {
            ms2(d)
        }
    };
    t.row(&[
        name.to_string(),
        blank_if_none(seq, w.p50),
        blank_if_none(seq, w.p95),
        blank_if_none(seq, cpu),
        blank_if_none(conc, wc.p50),
        blank_if_none(conc, wc.p95),
        what.to_string(),
    ]);
}

/// Section B: where one launch's time goes, sequentially and with
/// `at_once` launches started together.
async fn breakdown(ctx: &Arc<Ctx>, runs: usize, at_once: usize) -> Result<(), String> {
    eprintln!(
        "B: breakdown, {runs} runs of each variant, then {at_once} step-by-step launches at once"
    );
    let (mut steps, mut no_api, mut api) = (Vec::new(), Vec::new(), Vec::new());
    let mut drive_writes = Vec::new();
    let scratch = ctx.replica.path().join("drive-scratch.img");
    for i in 0..runs {
        // Rotate the order so no variant always follows another.
        for variant in (0..3).map(|k| (i + k) % 3) {
            match variant {
                0 => match replica_once(ctx, Instant::now()).await {
                    Ok(st) => steps.push(st),
                    Err(e) => {
                        eprintln!("step-by-step launch failed: {e}");
                    }
                },
                1 => no_api.extend(raw_costed(ctx, RawMode::NoApi).await),
                _ => api.extend(raw_costed(ctx, RawMode::ApiSocket).await),
            }
        }
        let key = Key::from_bytes([7; 16]);
        let mut laps = Laps::start();
        fcexec::config_drive::write_config_drive(&scratch, &key, None)
            .map_err(|e| e.to_string())?;
        drive_writes.push(laps.lap());
    }
    let _ = std::fs::remove_file(&scratch);

    // The same launches, all at once: which step grows under load?
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..at_once)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { replica_once(&ctx, t0).await })
        })
        .collect();
    let mut conc = Vec::new();
    let mut conc_failures = 0;
    for result in futures_util::future::join_all(tasks).await {
        match result.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(st) => conc.push(st),
            Err(e) => {
                conc_failures += 1;
                eprintln!("step-by-step launch (at once) failed: {e}");
            }
        }
    }
    let conc_wall = t0.elapsed();
    for dir in std::fs::read_dir(ctx.replica.path())
        .into_iter()
        .flatten()
        .flatten()
    {
        if dir.path().is_dir() {
            let _ = std::fs::remove_dir_all(dir.path());
        }
    }

    let early = steps.iter().filter(|s| s.exited_before_ready).count();
    let mut t = Table::new(&[
        "step",
        "wall p50",
        "wall p95",
        "CPU mean",
        &format!("wall p50, {at_once} at once"),
        &format!("wall p95, {at_once} at once"),
        "what it is",
    ]);
    let col = |v: &[Steps], f: fn(&Steps) -> Cost| v.iter().map(f).collect::<Vec<_>>();
    let rows: [StepRow; 12] = [
        (
            "validate + key",
            |s| s.validate,
            "`validate`, `StateDir::execution`, `Key::generate`",
        ),
        (
            "plan files",
            |s| s.files,
            "mkdir, `VmPlan::write`: vm.json and the config drive",
        ),
        (
            "record save (x1)",
            |s| s.records,
            "record.json written and renamed once, after the spawn (as `launch` does since 9e935ff)",
        ),
        (
            "`Vmm::spawn`",
            |s| s.spawn,
            "stale-socket check, open serial + log, fork/exec firecracker",
        ),
        (
            "`wait_started`",
            |s| s.ready,
            "`Vmm::wait_started`: until the VMM's log says it started the guest (or the VMM exits)",
        ),
        (
            "guest runs → VMM reaped",
            |s| s.exit,
            "`Vmm::wait` after that: the rest of the guest's work and the VMM's exit",
        ),
        (
            "finish",
            |s| s.finish,
            "decode serial, write stdout/stderr, remove VMM files, write the result file",
        ),
        (
            "total, step by step",
            |s| s.total,
            "all of the above in sequence, in one task",
        ),
        (
            "  time to reach `Vmm::spawn` (start of the VMM)",
            |s| {
                let mut c = s.validate;
                c += s.files;
                c += s.records_before_spawn;
                c
            },
            "validate + plan files: how late the VMM starts",
        ),
        (
            "  launch start → VMM spawned (at once: batch start → VMM spawned)",
            |s| Cost {
                wall: s.spawned_at,
                cpu: Duration::ZERO,
            },
            "includes, at once, the wait for a runtime worker to first poll the task",
        ),
        (
            "  VMM's last log line (exiting) → its exit seen by `Vmm`",
            |s| s.exit_seen,
            "`Vmm::wait` (tokio's pidfd reaper) noticing the exit; `wait_started` when the VMM ended first",
        ),
        (
            "  launch start → done (at once: batch start → done)",
            |s| Cost {
                wall: s.done_at,
                cpu: Duration::ZERO,
            },
            "",
        ),
    ];
    for (i, (name, f, what)) in rows.iter().enumerate() {
        step_row(&mut t, name, &col(&steps, *f), &col(&conc, *f), what);
        if i == 1 {
            step_row(
                &mut t,
                "  of which the config drive alone",
                &drive_writes,
                &[],
                "`write_config_drive` to a scratch file (not in the total)",
            );
        }
    }
    t.row(&[
        format!("{at_once} step-by-step launches at once: wall; throughput; failures"),
        String::new(),
        String::new(),
        String::new(),
        format!(
            "{}; {:.1}/s; {conc_failures}",
            ms(conc_wall),
            conc.len() as f64 / conc_wall.as_secs_f64()
        ),
        String::new(),
        "compare with section 3 at the same N".to_string(),
    ]);
    let stepwise_vmm: Vec<Duration> = steps.iter().map(|s| s.vmm_cpu).collect();
    t.row(&[
        "VMM CPU, step-by-step launch".to_string(),
        String::new(),
        String::new(),
        ms2(mean(&stepwise_vmm)),
        String::new(),
        String::new(),
        "getrusage CHILDREN across the launch (the firecracker process)".to_string(),
    ]);
    let costs = |v: &[(Duration, Duration)]| {
        v.iter()
            .map(|&(wall, cpu)| Cost { wall, cpu })
            .collect::<Vec<_>>()
    };
    step_row(
        &mut t,
        "raw VMM, --no-api",
        &costs(&no_api),
        &[],
        "spawn → reaped; CPU is the VMM's (getrusage CHILDREN)",
    );
    step_row(
        &mut t,
        "raw VMM, --api-sock, no API call",
        &costs(&api),
        &[],
        "what giving the VMM an API socket alone costs; CPU is the VMM's",
    );
    let e2e = ctx.report.lock().unwrap().e2e;
    if let Some((e, r)) = e2e {
        t.row(&[
            "executor `run`; raw VMM (section 1)".to_string(),
            format!("{}; {}", ms2(e.p50), ms2(r.p50)),
            format!("{}; {}", ms2(e.p95), ms2(r.p95)),
            String::new(),
            String::new(),
            String::new(),
            "for comparison".to_string(),
        ]);
    }
    let mut report = ctx.report.lock().unwrap();
    report.breakdown = t;
    report.notes.push(format!(
        "breakdown: in {early} of {} sequential step-by-step launches the VMM had already exited when `wait_started` returned",
        steps.len()
    ));
    Ok(())
}

/// This process and the state directory at one moment.
#[derive(Debug, Clone, Copy)]
struct Census {
    fds: usize,
    threads: u64,
    rss: u64,
    heap: Option<u64>,
    dirs: usize,
    files: usize,
    sockets: usize,
    children: usize,
    zombies: usize,
    vmms: usize,
}

impl Census {
    fn take(ctx: &Ctx) -> Census {
        let (files, sockets) = procfs::files_and_sockets(ctx.executor.state_dir());
        let dirs = std::fs::read_dir(ctx.executor.state_dir())
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        let children = procfs::children();
        Census {
            fds: procfs::open_fds(),
            threads: procfs::threads(),
            rss: procfs::rss_kib(None),
            heap: procfs::heap_in_use(),
            dirs,
            files,
            sockets,
            children: children.len(),
            zombies: children.iter().filter(|(_, s)| *s == 'Z').count(),
            vmms: procfs::firecracker_pids(ctx.executor.state_dir()).len(),
        }
    }
}

/// Endurance: `runs` sequential executions, then `batch` at once, each removed.
async fn endurance(ctx: &Arc<Ctx>, runs: usize, batch: usize) -> Result<(), String> {
    eprintln!("E: endurance, {runs} sequential then {batch} at once");
    leftover_dirs(ctx);
    ctx.keep_leftovers.store(true, Ordering::Relaxed);
    let errors_before = ctx.remove_errors.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Census::take(ctx);
    let mut latencies = Vec::with_capacity(runs);
    let mut failures = 0;
    let t0 = Instant::now();
    for i in 0..runs {
        match exec_once(ctx, &hi_job()).await {
            Ok(d) => latencies.push(d),
            Err(e) => {
                failures += 1;
                eprintln!("endurance run {i} failed: {e}");
            }
        }
        if (i + 1) % 100 == 0 {
            eprintln!("  {} done, {:.0?} elapsed", i + 1, t0.elapsed());
        }
    }
    let seq_wall = t0.elapsed();
    let seq_errors = ctx.remove_errors.load(Ordering::Relaxed) - errors_before;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mid = Census::take(ctx);
    let b = exec_batch(ctx, batch, "b").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = Census::take(ctx);
    let batch_errors = ctx.remove_errors.load(Ordering::Relaxed) - errors_before - seq_errors;
    let left = leftover_dirs(ctx);
    ctx.keep_leftovers.store(false, Ordering::Relaxed);
    leftover_dirs(ctx);

    let mut t = Table::new(&[
        "measure",
        "before",
        &format!("after {runs} sequential"),
        &format!("after {batch} at once"),
        "growth",
    ]);
    let mut row = |name: &str, f: &dyn Fn(&Census) -> i64, unit: &str| {
        let (b0, b1, b2) = (f(&before), f(&mid), f(&after));
        t.row(&[
            name.to_string(),
            format!("{b0}{unit}"),
            format!("{b1}{unit}"),
            format!("{b2}{unit}"),
            format!("{:+}{unit}", b2 - b0),
        ]);
    };
    row("open fds (/proc/self/fd)", &|c| c.fds as i64, "");
    row("threads (/proc/self/status)", &|c| c.threads as i64, "");
    row("RSS (VmRSS)", &|c| c.rss as i64, " KiB");
    if before.heap.is_some() {
        row(
            "heap in use (mallinfo2)",
            &|c| (c.heap.unwrap_or(0) / 1024) as i64,
            " KiB",
        );
    }
    row("execution dirs in the state dir", &|c| c.dirs as i64, "");
    row("files in the state dir", &|c| c.files as i64, "");
    row("sockets in the state dir", &|c| c.sockets as i64, "");
    row("child processes (PPid = us)", &|c| c.children as i64, "");
    row("  of which zombies", &|c| c.zombies as i64, "");
    row(
        "firecracker processes of the state dir",
        &|c| c.vmms as i64,
        "",
    );
    let s = summarize(&latencies);
    let window = (latencies.len() / 10).max(1);
    let first = summarize(&latencies[..window.min(latencies.len())]);
    let last = summarize(&latencies[latencies.len().saturating_sub(window)..]);
    t.row(&[
        format!("{runs} sequential: failures; wall; latency p50 / p99"),
        String::new(),
        format!(
            "{failures}; {:.1} s; {}",
            seq_wall.as_secs_f64(),
            pair(s.p50, s.p99)
        ),
        String::new(),
        String::new(),
    ]);
    t.row(&[
        format!("median of the first vs last {window} sequential runs"),
        String::new(),
        format!("{} vs {}", ms(first.p50), ms(last.p50)),
        String::new(),
        String::new(),
    ]);
    t.row(&[
        "`remove` calls that failed (their directories stay)".to_string(),
        String::new(),
        seq_errors.to_string(),
        batch_errors.to_string(),
        format!("{left} dirs left"),
    ]);
    t.row(&[
        format!("{batch} at once: failures; wall; latency p50 / p99"),
        String::new(),
        String::new(),
        format!(
            "{}; {:.1} s; {}",
            b.failures,
            b.wall.as_secs_f64(),
            pair(b.latency.p50, b.latency.p99)
        ),
        String::new(),
    ]);
    ctx.report.lock().unwrap().endurance = t;
    Ok(())
}
