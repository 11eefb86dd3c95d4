//! The executor: the node's contract (start, wait, cancel, run, cleanup,
//! list, status, wait_for_status, pause, resume, remove, logs) over the
//! executions its [`Registry`] holds.
//!
//! Ownership, one way: the executor validates a request, reserves the
//! execution in the registry, and spawns the execution's task
//! ([`crate::execution_task`]: launch, then supervision) into its tracked
//! task set. Recovery returns what it found; the executor registers it.
//! Nothing else spawns tasks or writes the registry, except an execution's
//! task giving its budget back and scheduling its expiry.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::capture::read_tail;
use crate::config::ExecutorConfig;
use crate::error::{CleanupError, ExecutorError};
use crate::execution::{Command, Execution, LogProgress, Snapshot};
use crate::execution_task::{launch_and_supervise, supervise_recovered, TaskContext};
use crate::launch::{Launcher, LAUNCH_SLOTS};
use crate::lifecycle::Phase;
use crate::logs::{LogOptions, Logs};
use crate::record::now_ms;
use crate::recovery::{Found, FoundState};
use crate::registry::{Budget, Registry};
use crate::request::ExecutionRequest;
use crate::resources::HostLimits;
use crate::result::{ExecutionResult, ExecutionStatus, ListItem};
use crate::spec::Mode;
use crate::state_dir::StateDir;
use crate::supervisor::{Deadlines, Settings};
use crate::tasks::Tasks;

/// Runs executions in Firecracker microVMs. See the crate docs.
///
/// Dropping it stops supervision and lets the VMs run on (a new executor
/// with the same id re-attaches to them); [`Executor::shutdown`] does the
/// same and waits until every task has ended.
#[derive(Debug)]
pub struct Executor {
    id: String,
    host: HostLimits,
    state: Arc<StateDir>,
    registry: Arc<Registry>,
    tasks: Tasks,
    ctx: TaskContext,
    config: Arc<ExecutorConfig>,
}

impl Executor {
    /// Builds an executor: checks firecracker (present, supported version) and
    /// `/dev/kvm`, locks its state directory, and re-attaches to the VMs a
    /// previous executor with this id left running.
    pub async fn new(id: &str, config: ExecutorConfig) -> Result<Executor, ExecutorError> {
        let firecracker = find_firecracker(config.firecracker.as_deref())?;
        crate::state_dir::check_id("executor id", id)?;
        let (run_root, data_root) = config.roots()?;
        crate::version_cache::check(&firecracker, &run_root.join(id)).await?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(ExecutorError::Kvm)?;
        let host = match config.host_limits {
            Some(h) => h,
            None => HostLimits::detect().map_err(ExecutorError::HostLimits)?,
        };
        let state = Arc::new(StateDir::open(&run_root, &data_root, id)?);
        let registry = Arc::new(Registry::new(Budget {
            memory_mib: config
                .memory_budget_mib
                .unwrap_or_else(|| ExecutorConfig::default_memory_budget(host.mem_mib)),
            live: config.max_live,
        }));
        let tasks = Tasks::new();
        let ctx = TaskContext {
            launcher: Arc::new(Launcher {
                firecracker,
                ready_timeout: config.ready_timeout,
                max_output: config.max_output,
                slots: tokio::sync::Semaphore::new(LAUNCH_SLOTS),
                hook: config.launch_hook.clone(),
            }),
            registry: registry.clone(),
            settings: Settings {
                stop: config.stop_policy,
                after_exit_grace: config.after_exit_grace,
            },
            stop: tasks.stop_token().clone(),
        };
        let executor = Executor {
            id: id.to_string(),
            host,
            state,
            registry,
            tasks,
            ctx,
            config: Arc::new(config),
        };
        let (state, max_output) = (executor.state.clone(), executor.config.max_output);
        let firecracker = executor.ctx.launcher.firecracker.clone();
        let found = tokio::task::spawn_blocking(move || {
            crate::recovery::scan(&state, max_output, &firecracker)
        })
        .await
        .map_err(|e| ExecutorError::Internal {
            id: id.to_string(),
            reason: format!("recovery failed: {e}"),
        })?;
        for f in found.found {
            executor.adopt(f);
        }
        executor.registry.defer(found.finished);
        executor.spawn_expiry();
        executor.spawn_history_loader();
        tracing::info!(executor = id, dir = %executor.state.path().display(), "executor ready");
        Ok(executor)
    }

    /// This executor's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The directory holding this executor's executions' records and
    /// output (`<data root>/<executor id>`).
    pub fn state_dir(&self) -> &std::path::Path {
        self.state.path()
    }

    /// The directory holding this executor's lock, sockets and VM files
    /// (`<runtime root>/<executor id>`).
    pub fn runtime_dir(&self) -> &std::path::Path {
        self.state.runtime_path()
    }

    /// The budget executions are started against.
    pub fn budget(&self) -> Budget {
        self.registry.budget()
    }

    /// Creates and boots the VM of `request`. Returns once the VM runs.
    ///
    /// Dropping the returned future does not abandon a launch half way (which
    /// could leave a VM without a supervisor): the launch runs in the
    /// execution's own task and the execution goes on; `status` or `wait`
    /// find it.
    pub async fn start(&self, request: &ExecutionRequest) -> Result<(), ExecutorError> {
        if self.tasks.is_stopping() {
            return Err(ExecutorError::ShuttingDown);
        }
        // A finished execution with this id, not loaded yet, is refused as such.
        let _ = self.get(&request.execution_id);
        let starter = Starter {
            host: self.host,
            config: self.config.clone(),
            state: self.state.clone(),
            registry: self.registry.clone(),
            ctx: self.ctx.clone(),
            tasks: self.tasks.clone(),
        };
        let id = request.execution_id.clone();
        match self.tasks.track(starter.start(request.clone())) {
            Some(started) => started.await.map_err(|e| ExecutorError::Internal {
                id,
                reason: format!("the start task failed: {e}"),
            })?,
            None => Err(ExecutorError::ShuttingDown),
        }
    }

    /// Resolves with the result once the execution ends. Cancel-safe: a
    /// dropped or timed-out wait affects no one else; any number may wait.
    ///
    /// The result carries at most the last `ExecutorConfig::result_output`
    /// bytes of each stream (`stdout_truncated` / `stderr_truncated` say
    /// when there was more); [`Executor::logs`] has all of it.
    pub async fn wait(&self, id: &str) -> Result<ExecutionResult, ExecutorError> {
        let exec = self.get(id)?;
        let mut rx = exec.subscribe();
        let result = tokio::select! {
            snapshot = rx.wait_for(|s| s.result.is_some()) => snapshot
                .map_err(|_| ExecutorError::ShuttingDown)?
                .result
                .clone()
                .ok_or(ExecutorError::ShuttingDown)?,
            _ = exec.released() => return Err(ExecutorError::ShuttingDown),
        };
        Ok(with_output(&exec, &result, self.config.result_output).await)
    }

    /// Starts the execution, then waits for its result.
    pub async fn run(&self, request: &ExecutionRequest) -> Result<ExecutionResult, ExecutorError> {
        self.start(request).await?;
        self.wait(&request.execution_id).await
    }

    /// Stops the execution's VM; its result says `killed`.
    pub async fn cancel(&self, id: &str) -> Result<(), ExecutorError> {
        self.command(id, "cancel", Command::Cancel).await
    }

    /// Pauses the execution's VM.
    pub async fn pause(&self, id: &str) -> Result<(), ExecutorError> {
        self.command(id, "pause", Command::Pause).await
    }

    /// Resumes the execution's paused VM.
    pub async fn resume(&self, id: &str) -> Result<(), ExecutorError> {
        self.command(id, "resume", Command::Resume).await
    }

    async fn command(
        &self,
        id: &str,
        op: &'static str,
        make: fn(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), ExecutorError> {
        let exec = self.get(id)?;
        let wrong = |reason: String| ExecutorError::WrongState {
            id: id.to_string(),
            op,
            reason,
        };
        let snapshot = exec.snapshot();
        if snapshot.phase.is_terminal() {
            return Err(wrong(format!(
                "it already ended ({})",
                snapshot.status().as_str()
            )));
        }
        if snapshot.phase == Phase::Stopping {
            return Err(wrong("it is being cancelled".into()));
        }
        let commands = exec.commands().ok_or(ExecutorError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        commands
            .send(make(reply))
            .await
            .map_err(|_| ExecutorError::ShuttingDown)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(wrong(reason)),
            Err(_) => Err(wrong("it ended meanwhile".into())),
        }
    }

    /// Every execution this executor knows, with its status.
    pub fn list(&self) -> Vec<ListItem> {
        self.load_all();
        let mut items: Vec<ListItem> = self
            .registry
            .all()
            .iter()
            .map(|e| ListItem::new(e.id.clone(), e.status()))
            .collect();
        items.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
        items
    }

    /// The execution's status.
    pub fn status(&self, id: &str) -> Result<ExecutionStatus, ExecutorError> {
        Ok(self.get(id)?.status())
    }

    /// Resolves once the execution has `wanted` status; fails at `timeout`, or
    /// at once when it ended in another status.
    pub async fn wait_for_status(
        &self,
        id: &str,
        wanted: ExecutionStatus,
        timeout: Duration,
    ) -> Result<(), ExecutorError> {
        let exec = self.get(id)?;
        let mut rx = exec.subscribe();
        let reached = async {
            rx.wait_for(|s| s.status() == wanted || s.result.is_some())
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(s)) if s.status() == wanted => Ok(()),
            Ok(Ok(s)) => Err(ExecutorError::StatusUnreachable {
                id: id.to_string(),
                wanted,
                ended: s.status(),
            }),
            Ok(Err(_)) => Err(ExecutorError::ShuttingDown),
            Err(_) => Err(ExecutorError::StatusTimeout {
                id: id.to_string(),
                wanted,
                now: exec.status(),
                timeout,
            }),
        }
    }

    /// Streams the execution's output (see [`LogOptions`]).
    pub fn logs(&self, id: &str, options: LogOptions) -> Result<Logs, ExecutorError> {
        Ok(Logs::open(self.get(id)?, options))
    }

    /// Stops the execution if it runs (within `timeout`), then forgets it and
    /// deletes its files.
    pub async fn remove(&self, id: &str, timeout: Duration) -> Result<(), ExecutorError> {
        let exec = self.get(id)?;
        if exec.phase().is_live() {
            let stopped = async {
                let _ = self.cancel(id).await;
                self.wait(id).await
            };
            tokio::time::timeout(timeout, stopped).await.map_err(|_| {
                ExecutorError::WrongState {
                    id: id.to_string(),
                    op: "remove",
                    reason: format!("its VM did not stop within {timeout:?}"),
                }
            })??;
        }
        self.registry.remove(&exec);
        let paths = exec.paths.clone();
        tokio::task::spawn_blocking(move || paths.remove())
            .await
            .map_err(|e| ExecutorError::Internal {
                id: id.to_string(),
                reason: format!("removal failed: {e}"),
            })?
            .map_err(|source| ExecutorError::Io {
                context: "cannot remove",
                path: exec.paths.dir().to_path_buf(),
                source,
            })
    }

    /// Stops and removes every VM this executor owns and deletes their
    /// sockets and files. Every failure is reported, together.
    pub async fn cleanup(&self) -> Result<(), CleanupError> {
        let policy = self.config.stop_policy;
        let timeout = policy.sigterm
            + policy.sigkill
            + policy.ctrl_alt_del.unwrap_or_default()
            + Duration::from_secs(1);
        self.load_all();
        let removals = self
            .registry
            .all()
            .into_iter()
            .map(|e| async move { (e.id.clone(), self.remove(&e.id, timeout).await) });
        let failures: Vec<(String, ExecutorError)> = futures_util::future::join_all(removals)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e)))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CleanupError { failures })
        }
    }

    /// Stops supervising: accepts no more work, lets each supervisor finish
    /// its current step, leaves the VMs running (a new executor with this id
    /// re-attaches to them), and returns once every task has ended.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    /// Registers an execution found at start-up and, when it was live,
    /// starts its supervisor.
    fn adopt(&self, found: Found) {
        let Some((id, paths, record, vmm, capture)) =
            adopt_settled(&self.registry, &self.ctx.stop, found)
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
        let found = (vmm, record, capture);
        let task = supervise_recovered(self.ctx.clone(), exec, found, receiver, deadlines);
        self.tasks.spawn(task);
    }

    /// The execution with this id, loading it first when it is a finished
    /// one not loaded yet.
    fn get(&self, id: &str) -> Result<Arc<Execution>, ExecutorError> {
        if let ok @ Ok(_) = self.registry.get(id) {
            return ok;
        }
        if self.registry.take_deferred(id) {
            self.load(id);
        }
        self.registry.get(id)
    }

    /// Loads one deferred finished execution (blocking, small).
    fn load(&self, id: &str) {
        let firecracker = &self.ctx.launcher.firecracker;
        let found = crate::recovery::load_one(&self.state, id, self.config.max_output, firecracker);
        if let Some(found) = found {
            self.adopt(found);
        }
    }

    /// Loads every finished execution not loaded yet (for `list`).
    fn load_all(&self) {
        loop {
            let batch = self.registry.take_deferred_batch(256);
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
    fn spawn_history_loader(&self) {
        let (registry, stop) = (self.registry.clone(), self.ctx.stop.clone());
        let (state, max_output) = (self.state.clone(), self.config.max_output);
        let firecracker = self.ctx.launcher.firecracker.clone();
        self.tasks.spawn(async move {
            while !stop.is_cancelled() {
                let batch = registry.take_deferred_batch(64);
                if batch.is_empty() {
                    return;
                }
                let (state, firecracker) = (state.clone(), firecracker.clone());
                let loaded = tokio::task::spawn_blocking(move || {
                    batch
                        .iter()
                        .filter_map(|id| {
                            crate::recovery::load_one(&state, id, max_output, &firecracker)
                        })
                        .collect::<Vec<_>>()
                })
                .await
                .unwrap_or_default();
                for found in loaded {
                    if adopt_settled(&registry, &stop, found).is_some() {
                        tracing::warn!("a finished execution's record says it is live; it is left to the next start");
                    }
                }
            }
        });
    }

    /// Forgets finished executions, and deletes their files, as their
    /// retention runs out: one task for all of them.
    fn spawn_expiry(&self) {
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

impl Drop for Executor {
    fn drop(&mut self) {
        // Supervisors let their VMs run on; a new executor with this id re-attaches.
        self.tasks.begin_shutdown();
    }
}

/// What a start needs of the executor, owned, so that it runs in a task of
/// its own and goes on when its caller gives up.
struct Starter {
    host: HostLimits,
    config: Arc<ExecutorConfig>,
    state: Arc<StateDir>,
    registry: Arc<Registry>,
    ctx: TaskContext,
    tasks: Tasks,
}

impl Starter {
    /// Validates `request`, reserves the execution, and spawns its task
    /// (launch, then supervision); resolves once the guest runs.
    async fn start(self, request: ExecutionRequest) -> Result<(), ExecutorError> {
        let validated = crate::validate::validate_within(request, self.host, &self.config);
        let mut valid = tokio::select! {
            valid = validated => valid?,
            // Shutdown does not wait for a validation that is stuck.
            _ = self.ctx.stop.cancelled() => return Err(ExecutorError::ShuttingDown),
        };
        valid.timeout = valid.timeout.or(self.config.default_timeout);
        if valid.persist_logs.is_zero() {
            valid.persist_logs = self.config.default_retention.unwrap_or_default();
        }
        let paths = self.state.execution(&valid.execution_id)?;
        let (commands, receiver) = mpsc::channel(8);
        let exec = Arc::new(Execution::new(
            valid.execution_id.clone(),
            valid.job_id.clone(),
            paths,
            valid.mode,
            Snapshot {
                phase: Phase::Pending,
                result: None,
            },
            Some(commands),
            self.ctx.stop.clone(),
        ));
        self.registry
            .reserve(exec.clone(), u64::from(valid.mem_mib))?;
        let deadlines = Deadlines {
            boot: valid.boot_timeout,
            end: valid.timeout.map(|t| (tokio::time::Instant::now() + t, t)),
        };
        let (ready, launched) = oneshot::channel();
        let task = launch_and_supervise(
            self.ctx.clone(),
            exec.clone(),
            valid,
            receiver,
            ready,
            deadlines,
        );
        if !self.tasks.spawn(task) {
            self.registry.remove(&exec);
            return Err(ExecutorError::ShuttingDown);
        }
        launched.await.unwrap_or_else(|_| {
            Err(ExecutorError::Internal {
                id: exec.id.clone(),
                reason: "the launch task ended without an answer".into(),
            })
        })
    }
}

/// A live execution found at start-up: what its supervisor needs.
type LiveFound = (
    String,
    crate::state_dir::ExecPaths,
    crate::record::ExecutionRecord,
    Option<firecracker_api::Vmm>,
    crate::capture::Capture,
);

/// Registers an execution found at start-up that needs no supervisor (it
/// ended, or its record is corrupt); hands a live one back.
fn adopt_settled(
    registry: &Registry,
    released: &tokio_util::sync::CancellationToken,
    found: Found,
) -> Option<LiveFound> {
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
            registry.insert_recovered(exec, 0);
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
                done: true,
            });
            if let Some(at) = record.expires_ms() {
                registry.expire_at(&exec, at);
            }
            registry.insert_recovered(exec, 0);
            None
        }
        FoundState::Live {
            record,
            vmm,
            capture,
        } => Some((id, paths, record, vmm, capture)),
    }
}

/// `result` with the tails of the execution's output, read off the runtime.
async fn with_output(exec: &Execution, result: &ExecutionResult, limit: u64) -> ExecutionResult {
    let (out, err) = (exec.stdout_path(), exec.stderr_path());
    let read =
        tokio::task::spawn_blocking(move || (read_tail(&out, limit), read_tail(&err, limit)));
    let ((stdout, stdout_truncated), (stderr, stderr_truncated)) = read.await.unwrap_or_default();
    ExecutionResult {
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        ..result.clone()
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The firecracker binary: given, `$FIRECRACKER_BIN`, or on `PATH`.
pub fn find_firecracker(given: Option<&std::path::Path>) -> Result<PathBuf, ExecutorError> {
    let candidate = given
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("FIRECRACKER_BIN").map(PathBuf::from));
    if let Some(path) = candidate {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ExecutorError::FirecrackerMissing(format!(
                "{} does not exist; install the Firecracker v1.16.1 release or fix FIRECRACKER_BIN",
                path.display()
            )))
        };
    }
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .map(|d| d.join("firecracker"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            ExecutorError::FirecrackerMissing(
                "no `firecracker` on PATH; install the v1.16.1 release from \
                 https://github.com/firecracker-microvm/firecracker/releases or set FIRECRACKER_BIN"
                    .into(),
            )
        })
}
