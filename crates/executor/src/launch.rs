//! Launching: from a request to a booted VM under supervision.
//!
//! request → validate → plan → write the plan's files → spawn firecracker
//! with `--config-file` (it boots at once) → wait for its log to say the
//! guest started → hand the VMM to a supervisor. A failure on the way removes
//! everything the attempt created and reports "VM creation failed" with the
//! VMM's own words.

use std::sync::{Arc, Weak};
use std::time::Duration;

use firecracker_api::{SpawnOptions, StopPolicy, Vmm, VmmError};
use tokio::sync::mpsc;

use crate::capture::Sink;
use crate::config_drive::Key;
use crate::error::ExecutorError;
use crate::execution::{Execution, Snapshot};
use crate::executor::Shared;
use crate::lifecycle::Phase;
use crate::plan::VmPlan;
use crate::record::{now_ms, ExecutionRecord, OutputCopy, RECORD_VERSION};
use crate::request::ExecutionRequest;
use crate::spec::Mode;
use crate::supervisor::Supervisor;
use crate::validate::{validate, DriveRole, ValidatedRequest};

/// Starts `request` (see the module doc).
pub(crate) async fn start(
    shared: &Arc<Shared>,
    request: &ExecutionRequest,
) -> Result<(), ExecutorError> {
    let id = request.execution_id.clone();
    if let Some(existing) = shared.lock().get(&id) {
        return Err(if existing.snapshot().phase.is_terminal() {
            ExecutorError::AlreadyFinished(id)
        } else {
            ExecutorError::AlreadyStarted(id)
        });
    }
    let valid = validate(request, &shared.host)?;
    let paths = shared.state.execution(&valid.execution_id)?;
    let key = match valid.mode {
        Mode::Agent => Some(Key::generate().map_err(|e| creation(&id, e.to_string()))?),
        Mode::Plain => None,
    };
    let (commands, receiver) = mpsc::channel(8);
    let exec = Arc::new(Execution::new(
        id.clone(),
        valid.job_id.clone(),
        paths.clone(),
        valid.mode,
        Snapshot {
            phase: Phase::Pending,
            result: None,
        },
        Some(commands),
    ));
    // Reserve the id before touching the disk, so two starts cannot race.
    {
        let mut map = shared.lock();
        if map.contains_key(&id) {
            return Err(ExecutorError::AlreadyStarted(id));
        }
        map.insert(id.clone(), exec.clone());
    }
    let launched = launch(shared, &exec, &valid, key.clone()).await;
    let (vmm, record) = match launched {
        Ok(ok) => ok,
        Err(e) => {
            shared.lock().remove(&id);
            let _ = paths.remove();
            return Err(e);
        }
    };
    let sink = match key {
        Some(key) => Sink::agent(key, &paths.stdout(), &paths.stderr()),
        None => Ok(Sink::plain()),
    }
    .map_err(|e| creation(&id, format!("cannot create the output files: {e}")))?;
    supervise(
        shared,
        exec,
        Some(vmm),
        record,
        sink,
        receiver,
        valid.boot_timeout,
    );
    Ok(())
}

/// Plans, writes and boots the VM; returns its VMM and record.
async fn launch(
    shared: &Shared,
    exec: &Arc<Execution>,
    valid: &ValidatedRequest,
    key: Option<Key>,
) -> Result<(Vmm, ExecutionRecord), ExecutorError> {
    let id = &exec.id;
    let plan = VmPlan::new(valid, &exec.paths, key.clone());
    let record = new_record(valid, key.as_ref());
    // Files and fork/exec block; on a worker thread they would delay every
    // other execution's supervision (seen as ~1 s of lag at 200 at once).
    let (firecracker, exec2) = (shared.firecracker.clone(), exec.clone());
    let slot = shared
        .launch_slots
        .acquire()
        .await
        .map_err(|_| ExecutorError::ShuttingDown)?;
    let spawned =
        tokio::task::spawn_blocking(move || spawn_vmm(&firecracker, &exec2, &plan, record)).await;
    drop(slot);
    let (mut vmm, mut record) =
        spawned.map_err(|e| creation(id, format!("the launch task failed: {e}")))??;

    // Booted once the VMM's log says so. No API request here: see
    // `Vmm::wait_started` for the Firecracker deadlock this avoids.
    match vmm.wait_started(shared.config.ready_timeout).await {
        Ok(()) => {}
        // A guest that ran and ended first is not a creation failure: the
        // supervisor settles its result.
        Err(VmmError::ExitedEarly { .. }) if vmm.has_started() => return Ok((vmm, record)),
        Err(e) => return Err(abandon(vmm, id, e.to_string()).await),
    }
    set_phase(exec, &mut record, Phase::Running);
    Ok((vmm, record))
}

/// Creates the execution's directory and files, spawns the VMM and writes
/// the record. Blocking: runs on tokio's blocking pool.
fn spawn_vmm(
    firecracker: &std::path::Path,
    exec: &Execution,
    plan: &VmPlan,
    mut record: ExecutionRecord,
) -> Result<(Vmm, ExecutionRecord), ExecutorError> {
    let (id, paths) = (&exec.id, &exec.paths);
    paths.create().map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            ExecutorError::AlreadyStarted(id.clone())
        } else {
            ExecutorError::Io {
                context: "cannot create",
                path: paths.dir().to_path_buf(),
                source,
            }
        }
    })?;
    let metadata = plan.write(paths).map_err(|e| creation(id, e.to_string()))?;
    let spawn = Vmm::spawn(SpawnOptions {
        firecracker: firecracker.to_path_buf(),
        id: vmm_id(id),
        api_socket: Some(paths.api_socket()),
        config_file: Some(paths.vm_config()),
        metadata,
        serial_output: paths.serial(),
        log_path: paths.vmm_log(),
        extra_sockets: vec![],
        jailer: None,
    });
    let mut vmm = tokio::runtime::Handle::current()
        .block_on(spawn)
        .map_err(|e| creation(id, e.to_string()))?;
    vmm.set_kill_on_drop(false);
    record.pid = Some(vmm.pid());
    record.pid_start_time = firecracker_api::attach::start_time(vmm.pid());
    set_phase(exec, &mut record, Phase::Booting);
    // The one write of the record: from here on, a restarted executor finds this VM.
    if let Err(e) = save(&record, exec) {
        // Without a record no one could find the VM again: do not leave it running.
        vmm.set_kill_on_drop(true);
        return Err(e);
    }
    Ok((vmm, record))
}

/// Stops a VMM whose launch failed and builds the error.
async fn abandon(mut vmm: Vmm, id: &str, reason: String) -> ExecutorError {
    let policy = StopPolicy {
        ctrl_alt_del: None,
        ..StopPolicy::default()
    };
    if let Err(e) = vmm.stop(policy).await {
        tracing::error!(error = %e, "cannot stop a VMM that failed to launch");
    }
    creation(id, reason)
}

/// Hands a VMM (or a dead one, `None`) to a new supervisor task.
pub(crate) fn supervise(
    shared: &Arc<Shared>,
    exec: Arc<Execution>,
    vmm: Option<Vmm>,
    record: ExecutionRecord,
    sink: Sink,
    commands: mpsc::Receiver<Command>,
    boot_timeout: Option<Duration>,
) {
    let supervisor = Supervisor::new(
        exec.clone(),
        vmm,
        record,
        sink,
        commands,
        shared.shutdown.subscribe(),
        shared.settings(),
        boot_timeout,
    );
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        if let Some(expires_ms) = supervisor.run().await {
            expire(weak, exec, expires_ms).await;
        }
    });
}

use crate::execution::Command;

/// Forgets a finished execution and deletes its files once its
/// `persist_logs_duration` has passed (unless the executor went first).
pub(crate) async fn expire(shared: Weak<Shared>, exec: Arc<Execution>, expires_ms: u64) {
    let wait = Duration::from_millis(expires_ms.saturating_sub(now_ms()));
    let mut shutdown = match shared.upgrade() {
        Some(s) => s.shutdown.subscribe(),
        None => return,
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = shutdown.changed() => return,
    }
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let mut map = shared.lock();
    if map.get(&exec.id).is_some_and(|e| Arc::ptr_eq(e, &exec)) {
        map.remove(&exec.id);
        drop(map);
        tracing::debug!(id = %exec.id, "persist_logs_duration passed; removing the execution");
        let _ = exec.paths.remove();
    }
}

fn new_record(valid: &ValidatedRequest, key: Option<&Key>) -> ExecutionRecord {
    let outputs = match &valid.results_dir {
        Some(dir) => valid
            .outputs()
            .filter_map(|d| match &d.role {
                DriveRole::Output { index, target } => Some(OutputCopy {
                    image: d.path.display().to_string(),
                    destination: dir
                        .join(output_name(*index, target, &d.path))
                        .display()
                        .to_string(),
                }),
                _ => None,
            })
            .collect(),
        None => Vec::new(),
    };
    ExecutionRecord {
        version: RECORD_VERSION,
        job_id: valid.job_id.clone(),
        execution_id: valid.execution_id.clone(),
        phase: Phase::Pending,
        mode: valid.mode,
        key: key.map(|k| k.to_hex()),
        pid: None,
        pid_start_time: None,
        cancel_requested: false,
        outputs,
        results_dir: valid.results_dir.as_ref().map(|d| d.display().to_string()),
        created_ms: now_ms(),
        finished_ms: None,
        persist_ms: valid.persist_logs.as_millis() as u64,
        result: None,
    }
}

/// The file name an output image gets under `results_dir`: the last
/// component of its target, else of its image, prefixed by its index.
pub fn output_name(index: usize, target: &str, image: &std::path::Path) -> String {
    let from_target = target
        .rsplit('/')
        .find(|c| !c.is_empty() && *c != "." && *c != "..");
    let from_image = image.file_name().and_then(|n| n.to_str());
    let base = from_target.or(from_image).unwrap_or("output");
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{index}-{safe}")
}

/// Firecracker's `--id` allows only `[A-Za-z0-9-]` (it aborts on anything
/// else); execution ids also allow `.` and `_`, which become `-`. The id only
/// names the VMM in its own log, so two ids mapping alike is harmless.
fn vmm_id(execution_id: &str) -> String {
    execution_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

fn set_phase(exec: &Execution, record: &mut ExecutionRecord, to: Phase) {
    let mut phase = exec.snapshot().phase;
    if phase.transition(to).is_ok() {
        record.phase = phase;
        exec.publish(Snapshot {
            phase,
            result: None,
        });
    }
}

fn save(record: &ExecutionRecord, exec: &Execution) -> Result<(), ExecutorError> {
    let path = exec.paths.record();
    record.save(&path).map_err(|source| ExecutorError::Io {
        context: "cannot write",
        path,
        source,
    })
}

fn creation(id: &str, reason: String) -> ExecutorError {
    ExecutorError::VmCreation {
        id: id.to_string(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn vmm_ids_are_what_firecracker_accepts() {
        assert_eq!(vmm_id("job_1.retry-2"), "job-1-retry-2");
        assert!(firecracker_api::process::check_instance_id(&vmm_id("a_b.c")).is_ok());
    }

    #[test]
    fn output_names_are_safe_and_unique() {
        assert_eq!(output_name(0, "/mnt/out", Path::new("/x/o.img")), "0-out");
        assert_eq!(output_name(1, "", Path::new("/x/o.img")), "1-o.img");
        assert_eq!(output_name(2, "/a/../..", Path::new("/x/o.img")), "2-a");
        assert_eq!(output_name(3, "we ird", Path::new("/x/o.img")), "3-we_ird");
    }
}
