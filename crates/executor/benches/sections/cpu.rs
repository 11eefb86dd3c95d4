//! Section 5: CPU time per execution (`getrusage` of this process and of the
//! VMM), sequential runs interleaved with the raw VMM, for a one-line job and
//! a 1 KiB-output job.

use std::time::Duration;

use test_guest::Job;

use crate::support::context::{big_output, check_output, hi_job, remove, Ctx, HI, RUN_LIMIT};
use crate::support::procfs;
use crate::support::raw::{RawMode, RawVmm};
use crate::support::report::verdict;
use crate::support::stats::{dratio, mean, ms2, summarize};

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
pub async fn cpu(ctx: &Ctx, runs: usize) -> Result<(), String> {
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
