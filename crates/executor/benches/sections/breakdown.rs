//! Section B: where one launch's time goes, step by step with the executor's
//! building blocks (the steps are in `breakdown/steps.rs`), sequentially and
//! with many launches started at once, next to the raw VMM's variants.

mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fcexec::Key;

use crate::support::context::Ctx;
use crate::support::raw::RawMode;
use crate::support::stats::{mean, ms, ms2, summarize};
use crate::support::table::Table;
use steps::{raw_costed, replica_once, Cost, Laps, Steps};

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
pub async fn breakdown(ctx: &Arc<Ctx>, runs: usize, at_once: usize) -> Result<(), String> {
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
