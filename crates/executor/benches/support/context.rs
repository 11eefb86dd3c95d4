//! What every section shares: the [`Ctx`] (executor, raw VMMs, report), the
//! benchmarked jobs, and running, checking and removing one execution.
//!
//! Transports: the raw-VMM baseline (`support/raw.rs`) reads the serial
//! console and decodes guest protocol 1, so its VMs and every execution
//! compared with it (sections 1, 2, 3, 5, B and the warm-up) send
//! `"agent_transport": "serial"` ([`Ctx::request`], [`exec_once`]). Sections
//! without a raw baseline (4, E, H) run the executor's default, protocol 2
//! over vsock ([`Ctx::request_default`], [`exec_over`]); section T compares
//! the two.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fcexec::spec::Transport;
use fcexec::{ExecutionRequest, ExecutionResult, Executor, ExecutorConfig, HostLimits};
use serde_json::json;
use test_guest::Job;

use super::raw::RawVmm;
use super::report::Report;

/// What every benchmarked job prints.
pub const HI: &str = "hi\n";
/// The longest one execution may take before it counts as failed.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);
/// Removing one execution.
const REMOVE_LIMIT: Duration = Duration::from_secs(10);

/// The job of every timed execution: print a line, exit 0.
pub fn hi_job() -> Job {
    Job::new().out(HI).exit(0)
}

/// The output of section 5's larger job: 1 KiB of text.
pub fn big_output() -> String {
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n".repeat(16)
}

/// Everything the sections share.
pub struct Ctx {
    kernel: PathBuf,
    rootfs: PathBuf,
    pub firecracker: PathBuf,
    pub host: HostLimits,
    pub executor: Arc<Executor>,
    pub raw: RawVmm,
    /// The raw VMM running section 5's larger job.
    pub raw_big: RawVmm,
    /// The bench's directory (state directories, images, scratch files).
    pub dir: PathBuf,
    seq: AtomicU64,
    pub report: Mutex<Report>,
    /// `remove` calls that failed.
    pub remove_errors: AtomicUsize,
    /// Leave what a failed `remove` left (endurance), instead of deleting it.
    pub keep_leftovers: AtomicBool,
}

impl Ctx {
    pub async fn new(dir: &Path, firecracker: PathBuf) -> Result<Ctx, String> {
        let kernel = test_guest::write_kernel(dir).map_err(|e| e.to_string())?;
        let rootfs = dir.join("rootfs.img");
        std::fs::write(&rootfs, vec![0u8; 64 * 1024]).map_err(|e| e.to_string())?;
        let host = HostLimits::detect().map_err(|e| e.to_string())?;
        let config = executor_config(&dir.join("s"), &firecracker);
        let executor = Executor::new("bench", config)
            .await
            .map_err(|e| format!("Executor::new: {e}"))?;
        let template = agent_request(&kernel, &rootfs, "t0", &hi_job(), BASELINE);
        let raw = RawVmm::prepare(
            &dir.join("r"),
            &firecracker,
            &template,
            &host,
            HI.as_bytes(),
        )?;
        let big = big_output();
        let job = Job::new().out(&big).exit(0);
        let template = agent_request(&kernel, &rootfs, "t1", &job, BASELINE);
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
            dir: dir.to_path_buf(),
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

    /// An agent-mode request running `job`, with a fresh id, over the raw
    /// baseline's transport ([`BASELINE`]: protocol 1 on the serial console).
    pub fn request(&self, prefix: &str, job: &Job) -> ExecutionRequest {
        self.request_over(prefix, job, BASELINE)
    }

    /// An agent-mode request running `job`, with a fresh id, over the
    /// executor's default transport (`agent_transport` left out: protocol 2
    /// over vsock).
    pub fn request_default(&self, prefix: &str, job: &Job) -> ExecutionRequest {
        self.request_over(prefix, job, None)
    }

    /// An agent-mode request running `job`, with a fresh id: `Some(t)` sends
    /// `"agent_transport": t`, `None` leaves the param out (the default).
    pub fn request_over(
        &self,
        prefix: &str,
        job: &Job,
        transport: Option<Transport>,
    ) -> ExecutionRequest {
        agent_request(&self.kernel, &self.rootfs, &self.id(prefix), job, transport)
    }

    /// The configuration of the bench's executor, with its state under
    /// `self.dir/<root>` (for a second executor, e.g. one with a launch hook).
    pub fn executor_config(&self, root: &str) -> ExecutorConfig {
        executor_config(&self.dir.join(root), &self.firecracker)
    }

    pub fn add(&self, cells: &[String]) {
        self.report.lock().unwrap().main.row(cells);
    }
}

/// The bench's executor configuration: state under `state_root`, this
/// firecracker, `FCEXEC_BENCH_GRACE_MS` if set, the defaults otherwise.
fn executor_config(state_root: &Path, firecracker: &Path) -> ExecutorConfig {
    let mut config = ExecutorConfig {
        state_root: Some(state_root.to_path_buf()),
        firecracker: Some(firecracker.to_path_buf()),
        ..ExecutorConfig::default()
    };
    if let Some(ms) = std::env::var("FCEXEC_BENCH_GRACE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.after_exit_grace = Duration::from_millis(ms);
    }
    config
}

/// The transport of the raw-VMM baseline, and so of every execution
/// compared with it: protocol 1 on the serial console, the only one
/// `support/raw.rs` decodes (a raw VMM planned for vsock has no host end to
/// report to).
pub const BASELINE: Option<Transport> = Some(Transport::Serial);

/// An agent-mode request running `job` in the test guest, shaped as the
/// node sends it (as in `tests/common/mod.rs`); `transport` as in
/// [`Ctx::request_over`].
fn agent_request(
    kernel: &Path,
    rootfs: &Path,
    id: &str,
    job: &Job,
    transport: Option<Transport>,
) -> ExecutionRequest {
    let mut params = json!({
        "kernel_image": kernel,
        "root_file_system": rootfs,
        "agent": true,
        "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg()),
    });
    if let Some(t) = transport {
        params["agent_transport"] = json!(t.as_str());
    }
    serde_json::from_value(json!({
        "job_id": format!("job-{id}"),
        "execution_id": id,
        "engine_spec": {"type": "firecracker", "params": params},
        "resources": {"cpu": {"cores": 1}, "ram": {"size": 32u64 << 20}},
    }))
    .expect("a valid request")
}

/// One execution through the executor over the baseline's transport
/// ([`BASELINE`]): `run`, checked (it must print [`HI`]), then removed (the
/// removal is not timed). Returns the time of `run`.
pub async fn exec_once(ctx: &Ctx, job: &Job) -> Result<Duration, String> {
    exec_over(ctx, job, BASELINE).await
}

/// [`exec_once`] over `transport` (`None`: the executor's default, vsock).
pub async fn exec_over(
    ctx: &Ctx,
    job: &Job,
    transport: Option<Transport>,
) -> Result<Duration, String> {
    exec_checked(ctx, job, HI, transport).await
}

/// One execution of a job that prints `expected`, as [`exec_once`].
async fn exec_checked(
    ctx: &Ctx,
    job: &Job,
    expected: &str,
    transport: Option<Transport>,
) -> Result<Duration, String> {
    let request = ctx.request_over("e", job, transport);
    let started = Instant::now();
    let result = tokio::time::timeout(RUN_LIMIT, ctx.executor.run(&request)).await;
    let took = started.elapsed();
    let checked = check_output(result, expected);
    remove(ctx, &request.execution_id).await;
    checked.map(|()| took)
}

/// Turns a timed-out, failed or unexpected result of a job that prints
/// `expected` into an error.
pub fn check_output(
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
pub async fn remove(ctx: &Ctx, id: &str) {
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
pub fn leftover_dirs(ctx: &Ctx) -> usize {
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
