//! Section B: where one launch's time goes, step by step, next to the raw
//! VMM's variants.
//!
//! The steps are the executor's own: a second executor (state under
//! `<bench dir>/b`, otherwise configured as the bench's) carries a
//! [`LaunchHook`](fcexec::LaunchHook) that records every [`LaunchStep`] of
//! every launch (`breakdown/steps.rs`), and the section runs the one-line job
//! through it (`start` then `wait`, which is what `run` is): `runs` times one
//! after another, then `at_once` started together. So the rows follow the
//! launch as it is; a new step fails to compile here until it is described.
//!
//! Each step's wall time is the executor's own `took`. Its CPU is this
//! process's (every thread, `getrusage`) from the hook's `before` to its
//! `after`, in sequential runs only: with one launch at a time that is the
//! step's, plus whatever the idle runtime does meanwhile (most visible in
//! `WaitStarted`, which is a wait). With launches at once the process's CPU
//! cannot be split per step, so those columns have wall times only.

mod steps;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fcexec::{Executor, Key, LaunchStep};

use crate::support::context::Ctx;
use crate::support::procfs;
use crate::support::raw::RawMode;
use crate::support::stats::{mean, ms, ms2, summarize};
use crate::support::table::Table;
use steps::{raw_costed, timed_run, Recorder, Timed};

/// Cleaning up the breakdown's executor at the end.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);

/// What each step does, for the table.
fn what(step: LaunchStep) -> &'static str {
    match step {
        LaunchStep::CreateDir => "create the execution's directory",
        LaunchStep::WriteFiles => "write vm.json, the MMDS contents and the config drive",
        LaunchStep::OpenOutput => "open stdout/stderr and the serial file, start the capture",
        LaunchStep::SaveRecord => "write record.json (and the key), flushed to the disk",
        LaunchStep::Spawn => "`Vmm::spawn`: fork/exec firecracker with `--config-file`",
        LaunchStep::SaveVmm => "write vmm.json: the VMM's pid and start time",
        LaunchStep::WaitStarted => "until the VMM's log says it started the guest",
    }
}

/// Samples of one row: sequential wall, sequential CPU, wall at once.
#[derive(Default)]
struct Samples {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
    conc: Vec<Duration>,
}

impl Samples {
    /// `wall` over both sets of runs, `cpu` over the sequential ones.
    fn of(
        seq: &[Timed],
        conc: &[Timed],
        wall: impl Fn(&Timed) -> Option<Duration>,
        cpu: impl Fn(&Timed) -> Option<Duration>,
    ) -> Samples {
        Samples {
            wall: seq.iter().filter_map(&wall).collect(),
            cpu: seq.iter().filter_map(cpu).collect(),
            conc: conc.iter().filter_map(wall).collect(),
        }
    }
}

/// One row: wall p50/p95 and mean CPU of sequential runs, wall p50/p95 at
/// once; blank where there are no samples.
fn step_row(t: &mut Table, name: &str, s: &Samples, what: &str) {
    let cell = |v: &[Duration], d: Duration| if v.is_empty() { String::new() } else { ms2(d) };
    let (seq, conc) = (summarize(&s.wall), summarize(&s.conc));
    t.row(&[
        name.to_string(),
        cell(&s.wall, seq.p50),
        cell(&s.wall, seq.p95),
        cell(&s.cpu, mean(&s.cpu)),
        cell(&s.conc, conc.p50),
        cell(&s.conc, conc.p95),
        what.to_string(),
    ]);
}

/// Section B: opens the hooked executor, measures, and always cleans it up.
pub async fn breakdown(ctx: &Arc<Ctx>, runs: usize, at_once: usize) -> Result<(), String> {
    eprintln!("B: breakdown, {runs} runs of each variant, then {at_once} launches at once");
    let recorder = Arc::new(Recorder::default());
    let config = fcexec::ExecutorConfig {
        launch_hook: Some(recorder.clone()),
        ..ctx.executor_config("b")
    };
    let executor = Arc::new(
        Executor::new("breakdown", config)
            .await
            .map_err(|e| format!("Executor::new (breakdown): {e}"))?,
    );
    let measured = measure(ctx, &executor, &recorder, runs, at_once).await;
    match tokio::time::timeout(CLEANUP_LIMIT, executor.cleanup()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("breakdown cleanup reported: {e}"),
        Err(_) => eprintln!("breakdown cleanup did not finish within {CLEANUP_LIMIT:?}"),
    }
    executor.shutdown().await;
    measured
}

/// The runs, sequential (interleaved with the raw VMM) then at once, and the table.
async fn measure(
    ctx: &Arc<Ctx>,
    executor: &Arc<Executor>,
    recorder: &Arc<Recorder>,
    runs: usize,
    at_once: usize,
) -> Result<(), String> {
    let (mut seq, mut no_api, mut api) = (Vec::new(), Vec::new(), Vec::new());
    let (mut seq_failures, mut drive_writes) = (0, Vec::new());
    let scratch = ctx.dir.join("drive-scratch.img");
    for i in 0..runs {
        // Rotate the order so no variant always follows another.
        for variant in (0..3).map(|k| (i + k) % 3) {
            match variant {
                0 => match timed_run(ctx, executor, recorder, Instant::now()).await {
                    Ok(timed) => seq.push(timed),
                    Err(e) => {
                        seq_failures += 1;
                        eprintln!("breakdown run failed: {e}");
                    }
                },
                1 => no_api.extend(raw_costed(ctx, RawMode::NoApi).await),
                _ => api.extend(raw_costed(ctx, RawMode::ApiSocket).await),
            }
        }
        let (key, began, cpu) = (Key::from_bytes([7; 16]), Instant::now(), procfs::cpu_self());
        fcexec::config_drive::write_config_drive(&scratch, &key, None, None, None)
            .map_err(|e| e.to_string())?;
        drive_writes.push((began.elapsed(), procfs::cpu_self().since(cpu).total()));
    }
    let _ = std::fs::remove_file(&scratch);

    // The same launches, all at once: which step grows under load?
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..at_once)
        .map(|_| {
            let (ctx, executor, recorder) = (ctx.clone(), executor.clone(), recorder.clone());
            tokio::spawn(async move { timed_run(&ctx, &executor, &recorder, t0).await })
        })
        .collect();
    let (mut conc, mut conc_failures) = (Vec::new(), 0);
    for result in futures_util::future::join_all(tasks).await {
        match result.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(timed) => conc.push(timed),
            Err(e) => {
                conc_failures += 1;
                eprintln!("breakdown run (at once) failed: {e}");
            }
        }
    }
    let conc_wall = t0.elapsed();

    let mut t = Table::new(&[
        "step",
        "wall p50",
        "wall p95",
        "CPU mean",
        &format!("wall p50, {at_once} at once"),
        &format!("wall p95, {at_once} at once"),
        "what it is",
    ]);
    for step in LaunchStep::ALL {
        let s = Samples::of(&seq, &conc, |r| r.step(step), |r| r.step_cpu(step));
        step_row(&mut t, &format!("`{step:?}`"), &s, what(step));
        if step == LaunchStep::WriteFiles {
            let drive = Samples {
                wall: drive_writes.iter().map(|d| d.0).collect(),
                cpu: drive_writes.iter().map(|d| d.1).collect(),
                conc: Vec::new(),
            };
            step_row(
                &mut t,
                "  of which the config drive alone",
                &drive,
                "`write_config_drive` to a scratch file, measured apart (not in the sums)",
            );
        }
    }
    let none = |_: &Timed| None;
    let sum = |r: &Timed| Some(r.steps.iter().map(|s| s.wall).sum::<Duration>());
    step_row(
        &mut t,
        "sum of the steps",
        &Samples::of(&seq, &conc, sum, |r| {
            Some(r.steps.iter().map(|s| s.cpu).sum())
        }),
        "",
    );
    step_row(
        &mut t,
        "`start()` outside the steps",
        &Samples::of(&seq, &conc, |r| Some(r.start.saturating_sub(sum(r)?)), none),
        "validate (blocking pool), key and plan, registry, launch task, wait for one of the 16 launch slots, the answer",
    );
    step_row(
        &mut t,
        "`start()`",
        &Samples::of(&seq, &conc, |r| Some(r.start), |r| Some(r.start_cpu)),
        "the whole call; CPU is this process's across it",
    );
    step_row(
        &mut t,
        "  call → VMM spawned (at once: batch start → VMM spawned)",
        &Samples::of(&seq, &conc, |r| r.at(LaunchStep::Spawn), none),
        "how late the VMM starts; at once, includes the wait for a runtime worker",
    );
    step_row(
        &mut t,
        "`wait()` after `start()`",
        &Samples::of(&seq, &conc, |r| Some(r.wait), none),
        "the guest's work, the VMM's exit, the result",
    );
    step_row(
        &mut t,
        "`run` = `start` + `wait` (at once: batch start → done)",
        &Samples::of(&seq, &conc, |r| Some(r.run), none),
        "end to end",
    );
    t.row(&[
        format!("{at_once} launches at once: wall; throughput; failures"),
        String::new(),
        String::new(),
        String::new(),
        format!(
            "{}; {:.1}/s; {conc_failures}",
            ms(conc_wall),
            conc.len() as f64 / conc_wall.as_secs_f64()
        ),
        String::new(),
        format!("compare with section 3 at the same N; sequential failures: {seq_failures}"),
    ]);
    let vmm_cpu: Vec<Duration> = seq.iter().map(|r| r.vmm_cpu).collect();
    t.row(&[
        "VMM CPU, executor `run`".to_string(),
        String::new(),
        String::new(),
        ms2(mean(&vmm_cpu)),
        String::new(),
        String::new(),
        "getrusage CHILDREN across `run` and `remove` (the firecracker process)".to_string(),
    ]);
    let raw = |v: &[(Duration, Duration)]| Samples {
        wall: v.iter().map(|r| r.0).collect(),
        cpu: v.iter().map(|r| r.1).collect(),
        conc: Vec::new(),
    };
    step_row(
        &mut t,
        "raw VMM, --no-api",
        &raw(&no_api),
        "spawn → reaped; CPU is the VMM's (getrusage CHILDREN)",
    );
    step_row(
        &mut t,
        "raw VMM, --api-sock, no API call",
        &raw(&api),
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
    ctx.report.lock().unwrap().breakdown = t;
    Ok(())
}
