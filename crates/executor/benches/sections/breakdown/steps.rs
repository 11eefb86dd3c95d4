//! Section B's measurements: one launch done step by step as `launch.rs`
//! does it (validate, plan, record, `Vmm::spawn`, `wait_started`, exit,
//! finish), each step's wall and CPU time, and raw-VMM runs with their CPU.

use std::time::{Duration, Instant};

use fcexec::lifecycle::Phase;
use fcexec::plan::VmPlan;
use fcexec::record::{now_ms, ExecutionRecord, RECORD_VERSION};
use fcexec::{Event, FrameDecoder, Key, Mode};
use firecracker_api::{SpawnOptions, Vmm, VmmError};

use crate::support::context::{hi_job, Ctx, HI, RUN_LIMIT};
use crate::support::procfs;
use crate::support::raw::{day_delta, log_times, second_of_day, RawMode};

/// Wall and CPU time of one step.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cost {
    pub wall: Duration,
    /// CPU of this process (every thread) during the step.
    pub cpu: Duration,
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, other: Cost) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

/// Times consecutive steps: each `lap` is the cost since the previous one.
pub struct Laps {
    at: Instant,
    cpu: Duration,
}

impl Laps {
    pub fn start() -> Laps {
        Laps {
            at: Instant::now(),
            cpu: procfs::cpu_self().total(),
        }
    }

    pub fn lap(&mut self) -> Cost {
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
pub struct Steps {
    pub validate: Cost,
    pub files: Cost,
    pub records: Cost,
    /// Building the record (before the VMM is spawned).
    pub records_before_spawn: Cost,
    pub spawn: Cost,
    pub ready: Cost,
    pub exit: Cost,
    pub finish: Cost,
    pub total: Cost,
    /// CPU of the VMM process (reaped child).
    pub vmm_cpu: Duration,
    /// From `origin` (the batch's start) to the VMM spawned, and to the end.
    pub spawned_at: Duration,
    pub done_at: Duration,
    /// The VMM's last log line ("exiting") → its exit seen by `Vmm`.
    pub exit_seen: Cost,
    pub exited_before_ready: bool,
}

/// One launch with the executor's building blocks, timed step by step:
/// validate → plan files → record → `Vmm::spawn` → `wait_started` →
/// wait for the VMM's exit → decode, store, clean up.
pub async fn replica_once(ctx: &Ctx, origin: Instant) -> Result<Steps, String> {
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
