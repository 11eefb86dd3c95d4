//! Section 3: N executions started at once, executor then raw VMM: wall,
//! throughput, latency, CPU, and the VMMs' timeline from their logs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fcexec::record::{now_ms, ExecutionRecord};
use fcexec::spec::Transport;
use fcexec::ExecutionRequest;
use test_guest::Job;

use crate::support::config::env_flag;
use crate::support::context::{
    big_output, check_output, hi_job, remove, Ctx, BASELINE, HI, RUN_LIMIT,
};
use crate::support::procfs;
use crate::support::raw::{day_delta, log_times, second_of_day, RawMode, RawRun};
use crate::support::report::{pair, verdict};
use crate::support::stats::{dratio, ms, ms2, ratio, summarize, Summary};

/// What one batch of executions started at once gave.
pub struct Batch {
    pub wall: Duration,
    pub latency: Summary,
    pub failures: usize,
    /// CPU of this process and of the VMMs during the batch.
    pub cpu: procfs::Cpu,
    pub vmm_cpu: procfs::Cpu,
    /// Batch start → each VMM started, and each VMM's lifetime, from its log.
    pub vmm_started: Vec<Duration>,
    pub vmm_lifetime: Vec<Duration>,
    /// Executor only: VMM exit (last log line) → the supervisor's
    /// `finished_ms` in the record, and `finished_ms` → `run` returned.
    pub exit_to_finish: Vec<Duration>,
    pub finish_to_caller: Vec<Duration>,
}

/// The start offsets and lifetimes of VMMs from their log times.
fn vmm_timeline(origin: f64, times: &[(f64, f64)]) -> (Vec<Duration>, Vec<Duration>) {
    times
        .iter()
        .map(|&(first, last)| (day_delta(origin, first), day_delta(first, last)))
        .unzip()
}

/// CPU used so far by this process and by its reaped children (the VMMs).
fn cpu_now() -> (procfs::Cpu, procfs::Cpu) {
    (procfs::cpu_self(), procfs::cpu_children())
}

/// CPU of this process and of the VMMs since `cpu_now()` gave `(c0, v0)`.
fn cpu_since((c0, v0): (procfs::Cpu, procfs::Cpu)) -> (procfs::Cpu, procfs::Cpu) {
    (
        procfs::cpu_self().since(c0),
        procfs::cpu_children().since(v0),
    )
}

/// `FCEXEC_BENCH_BATCH_BIG=1`: section 3's batches run section 5's larger
/// job (1 KiB of output) instead of `hi_job`, to see what output costs at scale.
fn batch_big() -> bool {
    env_flag("FCEXEC_BENCH_BATCH_BIG").unwrap_or(false)
}

/// `n` executions through the executor, each in its own task, all at once,
/// over `transport` (as [`Ctx::request_over`]); latency is from the batch's
/// start to each result. All removed afterwards.
pub async fn exec_batch(
    ctx: &Arc<Ctx>,
    n: usize,
    prefix: &str,
    transport: Option<Transport>,
) -> Batch {
    let big = batch_big();
    let (job, expected) = if big {
        (Job::new().out(big_output()).exit(0), big_output())
    } else {
        (hi_job(), HI.to_string())
    };
    let requests: Vec<ExecutionRequest> = (0..n)
        .map(|_| ctx.request_over(prefix, &job, transport))
        .collect();
    let cpu0 = cpu_now();
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
    let (cpu, vmm_cpu) = cpu_since(cpu0);
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
    let cpu0 = cpu_now();
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
    let (cpu, vmm_cpu) = cpu_since(cpu0);
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
pub async fn concurrency(ctx: &Arc<Ctx>, n: usize) -> Result<(), String> {
    eprintln!("3: {n} at once");
    let e = exec_batch(ctx, n, "c", BASELINE).await;
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
