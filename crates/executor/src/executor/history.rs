//! The executor's history: executions found at start-up, and finished ones
//! kept on disk.
//!
//! - Live ones (found from the runtime tree, which holds no others) get a
//!   supervisor at start-up.
//! - Finished ones are not listed or read at start-up: one is loaded by id
//!   when asked for (`status`, `wait`, `logs`, `remove`, a `start` reusing
//!   its id), and all of them by `list` and `cleanup`. So start-up, and a
//!   short command that asks for one id, do not grow with history.
//! - Their retention: [`HISTORY_DELAY`] after start-up, a background sweep
//!   reads the records of those not loaded and schedules their expiry by
//!   id; one task deletes whatever expires, loaded or not.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Executor;
use crate::execution::{Execution, LogProgress, Snapshot};
use crate::execution_task::supervise_recovered;
use crate::inspect::file_len;
use crate::lifecycle::Phase;
use crate::record::now_ms;
use crate::recovery::{Found, FoundState};
use crate::registry::{Expired, Registry};
use crate::result::ExecutionResult;
use crate::spec::Mode;
use crate::state_dir::StateDir;
use crate::supervisor::Deadlines;

impl Executor {
    /// Registers an execution found at start-up and, when it was live,
    /// starts its supervisor.
    pub(super) fn adopt(&self, found: Found) {
        let Some((id, paths, record, vmm, output)) =
            adopt_settled(&self.registry, &self.ctx.stop, found, false)
        else {
            return;
        };
        let (commands, receiver) = mpsc::channel(8);
        let exec = Arc::new(Execution::new(
            id,
            record.job_id.clone(),
            paths,
            record.mode,
            Snapshot {
                phase: record.phase,
                result: None,
            },
            Some(commands),
            self.ctx.stop.clone(),
        ));
        self.registry.insert_recovered(exec.clone(), record.mem_mib);
        let deadlines = Deadlines {
            boot: None,
            end: record.timeout_ms.map(|ms| {
                let left = (record.created_ms + ms).saturating_sub(now_ms());
                (
                    tokio::time::Instant::now() + Duration::from_millis(left),
                    Duration::from_millis(ms),
                )
            }),
        };
        let found = (vmm, record, output);
        let task = supervise_recovered(self.ctx.clone(), exec, found, receiver, deadlines);
        self.tasks.spawn(task);
    }

    /// Loads the finished execution `id` from disk, if there is one, and
    /// registers it unless one with its id is registered meanwhile
    /// (blocking, small: a stat and one record read).
    pub(super) fn load(&self, id: &str) {
        if let Some(found) = crate::recovery::load_finished(&self.state, id) {
            adopt_settled(&self.registry, &self.ctx.stop, found, true);
        }
    }

    /// Loads every execution on disk not registered yet (for `list` and
    /// `cleanup`, which are O(history) by nature).
    pub(super) fn load_all(&self) {
        for id in self.state.execution_ids() {
            if !self.registry.contains(&id) {
                self.load(&id);
            }
        }
    }

    /// Schedules the retention of the finished executions on disk: after
    /// [`HISTORY_DELAY`] (a short-lived command, most CLI runs, never pays
    /// for it), lists the data tree and reads the record of each execution
    /// not registered, in batches on the blocking pool, scheduling its
    /// expiry by id. Nothing is loaded into the registry.
    pub(super) fn spawn_retention_sweep(&self) {
        let (registry, stop) = (self.registry.clone(), self.ctx.stop.clone());
        let state = Arc::new(self.state.view());
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(HISTORY_DELAY) => {}
                _ = stop.cancelled() => return,
            }
            let listed = state.clone();
            let ids = tokio::task::spawn_blocking(move || listed.execution_ids());
            let ids = ids.await.unwrap_or_default();
            for batch in ids.chunks(SWEEP_BATCH) {
                if stop.is_cancelled() {
                    return;
                }
                let batch: Vec<String> = batch
                    .iter()
                    .filter(|id| !registry.contains(id))
                    .cloned()
                    .collect();
                let state = state.clone();
                let due = tokio::task::spawn_blocking(move || {
                    batch
                        .into_iter()
                        .filter_map(|id| Some((crate::recovery::expiry_of(&state, &id)?, id)))
                        .collect::<Vec<_>>()
                });
                for (at, id) in due.await.unwrap_or_default() {
                    registry.expire_on_disk(id, at);
                }
            }
        });
    }

    /// Forgets finished executions, and deletes their files, as their
    /// retention runs out: one task for all of them.
    pub(super) fn spawn_expiry(&self) {
        let (registry, stop) = (self.registry.clone(), self.ctx.stop.clone());
        let state = Arc::new(self.state.view());
        self.tasks.spawn(async move {
            loop {
                let (expired, next) = registry.take_expired(now_ms());
                for due in expired {
                    let (state, registry) = (state.clone(), registry.clone());
                    let _ =
                        tokio::task::spawn_blocking(move || expire(&registry, &state, due)).await;
                }
                let sleep = next.map(|at| Duration::from_millis(at.saturating_sub(now_ms())));
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = registry.expiry_changed() => {}
                    _ = sleep_for(sleep) => {}
                }
            }
        });
    }
}

/// Deletes the files of an execution whose retention ran out, then (when
/// it was loaded) forgets it: registered until its files are gone, it
/// keeps its id taken meanwhile. Blocking.
fn expire(registry: &Registry, state: &StateDir, due: Expired) {
    match due {
        Expired::Loaded(exec) => {
            tracing::debug!(id = %exec.id, "retention ran out; removing the execution");
            if let Err(e) = exec.paths.remove() {
                tracing::warn!(id = %exec.id, error = %e, "cannot delete an expired execution");
            }
            registry.remove(&exec);
        }
        Expired::OnDisk(id) => {
            let removed = registry.unless_registered(&id, || {
                crate::recovery::remove_if_expired(state, &id, now_ms())
            });
            if removed == Some(true) {
                tracing::debug!(%id, "retention ran out; removed the execution");
            }
        }
    }
}

/// How long after start-up the retention of the finished executions not
/// asked for is scheduled.
const HISTORY_DELAY: Duration = Duration::from_secs(2);

/// How many records the retention sweep reads per blocking task.
const SWEEP_BATCH: usize = 64;

/// A live execution found at start-up: what its supervisor needs.
type LiveFound = (
    String,
    crate::state_dir::ExecPaths,
    crate::record::ExecutionRecord,
    Option<firecracker_api::Vmm>,
    (
        crate::capture::Capture,
        Option<crate::agent_link::LinkParts>,
    ),
);

/// Registers an execution found at start-up (`on_demand` false) or loaded
/// on demand that needs no supervisor (it ended, or its record is corrupt);
/// hands a live one back. One loaded on demand is registered only when its
/// id is free.
fn adopt_settled(
    registry: &Registry,
    released: &tokio_util::sync::CancellationToken,
    found: Found,
    on_demand: bool,
) -> Option<LiveFound> {
    let register = |exec: Arc<Execution>| {
        if on_demand {
            registry.insert_loaded(exec).1
        } else {
            registry.insert_recovered(exec, 0);
            true
        }
    };
    let Found { id, paths, state } = found;
    let settled = |job_id: String, mode: Mode, phase: Phase, result: ExecutionResult| {
        Arc::new(Execution::new(
            id.clone(),
            job_id,
            paths.clone(),
            mode,
            Snapshot {
                phase,
                result: Some(Arc::new(result)),
            },
            None,
            released.clone(),
        ))
    };
    match state {
        FoundState::Corrupt(reason) => {
            let result = ExecutionResult::failed(format!("corrupt execution: {reason}"));
            let exec = settled(String::new(), Mode::Plain, Phase::Failed, result);
            register(exec);
            None
        }
        FoundState::Finished(record) => {
            let result = record.result.clone().unwrap_or_else(|| {
                ExecutionResult::failed("the execution ended without a recorded result")
            });
            let exec = settled(record.job_id.clone(), record.mode, record.phase, result);
            exec.publish_logs(LogProgress {
                stdout: file_len(&exec.stdout_path()),
                stderr: file_len(&exec.stderr_path()),
                console: file_len(&exec.paths.console()),
                attached: false,
                done: true,
            });
            if register(exec.clone()) {
                if let Some(at) = record.expires_ms() {
                    registry.expire_at(&exec, at);
                }
            }
            None
        }
        FoundState::Live {
            record,
            vmm,
            output,
        } => Some((id, paths, record, vmm, output)),
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
