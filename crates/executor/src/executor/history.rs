//! The executor's history: executions found at start-up. Live ones get a
//! supervisor at once; finished ones are loaded lazily (by id, by `list`, or
//! by a background task that enforces their retention), so start-up does not
//! grow with history; and one task forgets them when their retention runs out.

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
use crate::registry::Registry;
use crate::result::ExecutionResult;
use crate::spec::Mode;
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

    /// Loads one deferred finished execution (blocking, small).
    pub(super) fn load(&self, id: &str) {
        let firecracker = &self.ctx.launcher.firecracker;
        let found = crate::recovery::load_one(&self.state, id, self.config.max_output, firecracker);
        settle(&self.registry, &self.ctx.stop, id, found);
    }

    /// Loads every finished execution not loaded yet (for `list`).
    pub(super) fn load_all(&self) {
        loop {
            let batch = self.registry.deferred_batch(256);
            if batch.is_empty() {
                return;
            }
            for id in batch {
                self.load(&id);
            }
        }
    }

    /// Loads the finished executions found at start-up in the background,
    /// so that their retention is enforced without start-up paying for them.
    /// It starts after [`HISTORY_DELAY`]: a short-lived command (most CLI
    /// runs) never pays for it.
    pub(super) fn spawn_history_loader(&self) {
        let (registry, stop) = (self.registry.clone(), self.ctx.stop.clone());
        let (state, max_output) = (Arc::new(self.state.view()), self.config.max_output);
        let firecracker = self.ctx.launcher.firecracker.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(HISTORY_DELAY) => {}
                _ = stop.cancelled() => return,
            }
            while !stop.is_cancelled() {
                let batch = registry.deferred_batch(64);
                if batch.is_empty() {
                    return;
                }
                let (state, firecracker) = (state.clone(), firecracker.clone());
                let loaded = tokio::task::spawn_blocking(move || {
                    batch
                        .into_iter()
                        .map(|id| {
                            let found =
                                crate::recovery::load_one(&state, &id, max_output, &firecracker);
                            (id, found)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for (id, found) in loaded {
                    settle(&registry, &stop, &id, found);
                }
            }
        });
    }

    /// Forgets finished executions, and deletes their files, as their
    /// retention runs out: one task for all of them.
    pub(super) fn spawn_expiry(&self) {
        let (registry, stop) = (self.registry.clone(), self.ctx.stop.clone());
        self.tasks.spawn(async move {
            loop {
                let (expired, next) = registry.take_expired(now_ms());
                for exec in expired {
                    tracing::debug!(id = %exec.id, "retention ran out; removing the execution");
                    let paths = exec.paths.clone();
                    let _ = tokio::task::spawn_blocking(move || paths.remove()).await;
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

/// How long after start-up the finished executions not asked for are loaded.
const HISTORY_DELAY: Duration = Duration::from_secs(2);

/// Registers a deferred finished execution just loaded (`None`: it expired
/// or vanished), unless another caller registered it first.
fn settle(
    registry: &Registry,
    released: &tokio_util::sync::CancellationToken,
    id: &str,
    found: Option<Found>,
) {
    let Some(found) = found else {
        registry.drop_deferred(id);
        return;
    };
    // A record that says live without a runtime directory: its VMM is gone
    // with that directory (a host restart clears /run).
    if let Some((id, paths, mut record, _, _)) = adopt_settled(registry, released, found, true) {
        tracing::warn!(%id, "an execution recorded as live has no runtime directory; its VMM is gone");
        record.phase = Phase::Failed;
        record.result = Some(ExecutionResult::failed(
            "the VMM is gone: the execution's runtime directory was removed (did the host restart?)",
        ));
        let state = FoundState::Finished(record);
        adopt_settled(registry, released, Found { id, paths, state }, true);
    }
}

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

/// Registers an execution found at start-up that needs no supervisor (it
/// ended, or its record is corrupt); hands a live one back.
fn adopt_settled(
    registry: &Registry,
    released: &tokio_util::sync::CancellationToken,
    found: Found,
    deferred: bool,
) -> Option<LiveFound> {
    let register = |exec: Arc<Execution>| {
        if deferred {
            registry.settle_deferred(exec)
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
