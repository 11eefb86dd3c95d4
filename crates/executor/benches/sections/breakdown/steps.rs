//! Section B's measurements: a [`LaunchHook`] that records the time of each
//! step of the executor's own launches, one execution through an executor
//! that has it installed, and raw-VMM runs with their CPU.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fcexec::{Executor, LaunchHook, LaunchStep};

use crate::support::context::{check_output, hi_job, Ctx, HI, RUN_LIMIT};
use crate::support::procfs;
use crate::support::raw::RawMode;

/// Removing one execution (not timed).
const REMOVE_LIMIT: Duration = Duration::from_secs(10);

/// One step of one launch, as the hook saw it.
#[derive(Debug, Clone, Copy)]
pub struct StepTime {
    pub step: LaunchStep,
    /// The executor's own measure of the step (`took`).
    pub wall: Duration,
    /// CPU of this process (every thread) from `before` to `after`:
    /// meaningful only when one launch runs at a time.
    pub cpu: Duration,
    /// When the step ended.
    pub ended: Instant,
}

/// Records every step of every launch, by execution id.
#[derive(Debug, Default)]
pub struct Recorder {
    launches: Mutex<HashMap<String, Launch>>,
}

/// What the hook has seen of one launch.
#[derive(Debug, Default)]
struct Launch {
    /// Process CPU when the current step began.
    cpu_before: Duration,
    steps: Vec<StepTime>,
}

impl LaunchHook for Recorder {
    fn before(&self, id: &str, _step: LaunchStep) -> Result<(), String> {
        let cpu = procfs::cpu_self().total();
        let mut launches = self.launches.lock().unwrap();
        launches.entry(id.to_string()).or_default().cpu_before = cpu;
        Ok(())
    }

    fn after(&self, id: &str, step: LaunchStep, took: Duration) {
        let (ended, cpu) = (Instant::now(), procfs::cpu_self().total());
        let mut launches = self.launches.lock().unwrap();
        let launch = launches.entry(id.to_string()).or_default();
        launch.steps.push(StepTime {
            step,
            wall: took,
            cpu: cpu.saturating_sub(launch.cpu_before),
            ended,
        });
    }
}

impl Recorder {
    /// Takes (and forgets) the steps recorded for `id`.
    fn take(&self, id: &str) -> Vec<StepTime> {
        self.launches
            .lock()
            .unwrap()
            .remove(id)
            .map(|l| l.steps)
            .unwrap_or_default()
    }
}

/// One execution through the hooked executor.
#[derive(Debug, Clone, Default)]
pub struct Timed {
    /// The launch's steps, in the order they ran.
    pub steps: Vec<StepTime>,
    /// From `origin` (the call, or the batch's start) to each step's end.
    pub step_at: Vec<(LaunchStep, Duration)>,
    /// `start()`, call to return.
    pub start: Duration,
    /// Process CPU during `start()` (meaningful only one at a time).
    pub start_cpu: Duration,
    /// `wait()` after `start()` returned.
    pub wait: Duration,
    /// From `origin` to `wait()` returning: `run`'s time when `origin` is the call.
    pub run: Duration,
    /// CPU of the reaped VMM (meaningful only one at a time).
    pub vmm_cpu: Duration,
}

impl Timed {
    /// The recorded wall time of `step`, if it ran.
    pub fn step(&self, step: LaunchStep) -> Option<Duration> {
        self.steps.iter().find(|s| s.step == step).map(|s| s.wall)
    }

    /// The recorded CPU time of `step`, if it ran.
    pub fn step_cpu(&self, step: LaunchStep) -> Option<Duration> {
        self.steps.iter().find(|s| s.step == step).map(|s| s.cpu)
    }

    /// From `origin` to the end of `step`, if it ran.
    pub fn at(&self, step: LaunchStep) -> Option<Duration> {
        self.step_at.iter().find(|s| s.0 == step).map(|s| s.1)
    }
}

/// One execution of the one-line job: `start()` (timed on its own) then
/// `wait()` — `Executor::run` is exactly these two calls — checked, then
/// removed (not timed). `origin` is the call, or the start of a batch.
pub async fn timed_run(
    ctx: &Ctx,
    executor: &Executor,
    recorder: &Recorder,
    origin: Instant,
) -> Result<Timed, String> {
    let request = ctx.request("b", &hi_job());
    let id = request.execution_id.clone();
    let (cpu0, children0) = (procfs::cpu_self(), procfs::cpu_children());
    let began = Instant::now();
    let run = async {
        executor.start(&request).await?;
        let started = Instant::now();
        let start = (started - began, procfs::cpu_self().since(cpu0).total());
        let result = executor.wait(&id).await?;
        Ok::<_, fcexec::ExecutorError>((start, started.elapsed(), result))
    };
    let outcome = tokio::time::timeout(RUN_LIMIT, run).await;
    let run = origin.elapsed();
    let (start, outcome) = match outcome {
        Ok(Ok((start, wait, result))) => (Some((start, wait)), Ok(Ok(result))),
        Ok(Err(e)) => (None, Ok(Err(e))),
        Err(elapsed) => (None, Err(elapsed)),
    };
    let removed = match executor.remove(&id, REMOVE_LIMIT).await {
        Err(e) if !matches!(e, fcexec::ExecutorError::NotFound(_)) => {
            Err(format!("remove({id}): {e}"))
        }
        _ => Ok(()),
    };
    let vmm_cpu = procfs::cpu_children().since(children0).total();
    let steps = recorder.take(&id);
    check_output(outcome, HI)?;
    removed?;
    let ((start, start_cpu), wait) = start.unwrap_or_default();
    Ok(Timed {
        step_at: steps
            .iter()
            .map(|s| (s.step, s.ended.saturating_duration_since(origin)))
            .collect(),
        steps,
        start,
        start_cpu,
        wait,
        run,
        vmm_cpu,
    })
}

/// A raw run with the VMM's CPU time (sequential runs only).
pub async fn raw_costed(ctx: &Ctx, mode: RawMode) -> Option<(Duration, Duration)> {
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
