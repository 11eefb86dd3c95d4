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
//!
//! `start.rs` is the start (in a task of its own), `history.rs` what is found
//! at start-up (live executions re-supervised), finished ones loaded by id
//! on demand, and their expiry.

mod history;
mod start;

use start::Starter;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::capture::read_tail;
use crate::config::ExecutorConfig;
use crate::error::{CleanupError, ExecutorError};
use crate::execution::{Command, Execution};
use crate::execution_task::TaskContext;
use crate::launch::{Launcher, LAUNCH_SLOTS};
use crate::lifecycle::Phase;
use crate::logs::{LogOptions, Logs};
use crate::plan::PlanSettings;
use crate::record::ExecutionRecord;
use crate::registry::{Budget, Registry};
use crate::request::ExecutionRequest;
use crate::resources::HostLimits;
use crate::result::{ExecutionResult, ExecutionStatus, ListItem};
use crate::state_dir::StateDir;
use crate::supervisor::Settings;
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
    /// previous executor with this id left running. Finished executions are
    /// not read here (it stays flat as history grows): each is loaded when
    /// asked for by id.
    pub async fn new(id: &str, config: ExecutorConfig) -> Result<Executor, ExecutorError> {
        let firecracker = find_firecracker(config.firecracker.as_deref())?;
        crate::state_dir::check_id("executor id", id)?;
        let (run_root, data_root) = config.roots()?;
        let probed = crate::version_cache::check(&firecracker, &run_root.join(id)).await?;
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
        let jail = crate::jail::Jailer::new(&config.jail, &state, &firecracker)
            .map_err(ExecutorError::Jail)?
            .map(Arc::new);
        if let Some(answer) = probed {
            crate::version_cache::remember(state.runtime_path(), &answer);
        }
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
                plan: PlanSettings {
                    heartbeat: config.heartbeat_interval,
                    cancel_grace: config.cancel_grace,
                    agent_initrd: None,
                },
                agent_binary: config.agent_binary.clone(),
                // Executor ids never start with a dot, so this is no executor's.
                cache_dir: data_root.join(".cache"),
                image_cache_limit: config.image_cache_limit,
                agent_initrd: tokio::sync::OnceCell::new(),
                networks: Arc::new(crate::network::Networks::new(
                    config.network.clone(),
                    config.network_by_default,
                    state.runtime_path(),
                )),
                jail,
            }),
            registry: registry.clone(),
            settings: Settings {
                stop: config.stop_policy,
                after_exit_grace: config.after_exit_grace,
                heartbeat_timeout: (!config.heartbeat_interval.is_zero())
                    .then_some(config.heartbeat_timeout),
                cancel_grace: config.cancel_grace,
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
        let jail = executor.ctx.launcher.jail.clone();
        let found = tokio::task::spawn_blocking(move || {
            let scan = crate::recovery::scan(&state, max_output, &firecracker);
            if let Some(jail) = jail {
                jail.sweep(&scan.live_jails());
            }
            scan
        })
        .await
        .map_err(|e| ExecutorError::Internal {
            id: id.to_string(),
            reason: format!("recovery failed: {e}"),
        })?;
        // Networks of live executions are kept; those of executions gone
        // (a crash, a launch that died half way) are swept.
        let mut kept = Vec::new();
        for f in &found.found {
            if let crate::recovery::FoundState::Live {
                record:
                    ExecutionRecord {
                        network: Some(net), ..
                    },
                ..
            } = &f.state
            {
                executor.ctx.launcher.networks.adopt(net).await;
                kept.push(net.id.clone());
            }
        }
        executor.ctx.launcher.networks.sweep(&kept).await;
        for f in found.found {
            executor.adopt(f);
        }
        executor.spawn_expiry();
        executor.spawn_retention_sweep();
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
            // Without the lock: a start outliving its executor must not hold it.
            state: Arc::new(self.state.view()),
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

    /// Every execution this executor knows, with its status. It reads every
    /// finished execution kept on disk (O(history)).
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

    /// Protocol 2: waits, at most `limit`, until the agent of a running
    /// execution is connected and has sent what it held while no executor
    /// listened (no new output for 100 ms). Returns at once for other
    /// executions. `fcexec logs` calls it after re-attaching to a VM left
    /// running, so that it prints the output the guest kept meanwhile.
    pub async fn settle_output(&self, id: &str, limit: Duration) {
        let Ok(exec) = self.get(id) else { return };
        let port = fcexec_guest_protocol::DEFAULT_PORT;
        if exec.phase().is_terminal() || !exec.paths.agent_socket(port).exists() {
            return;
        }
        let mut progress = exec.log_progress();
        let settled = async {
            loop {
                let now = *progress.borrow_and_update();
                if now.done {
                    return;
                }
                let quiet = Duration::from_millis(100);
                match now.attached {
                    true => match tokio::time::timeout(quiet, progress.changed()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) | Err(_) => return,
                    },
                    false => {
                        if progress.changed().await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(limit, settled).await;
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
        // The files go first: while they are there, the execution stays
        // registered, so a lookup by id meanwhile does not load it again.
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
            })?;
        self.registry.remove(&exec);
        Ok(())
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
        // Whatever of this executor's jails is still about (an execution
        // that ended while no executor watched it) goes with them.
        if let Some(jail) = self.ctx.launcher.jail.clone() {
            let live: Vec<String> = self
                .registry
                .all()
                .iter()
                .filter(|e| !e.phase().is_terminal())
                // The jail it got (`<base>/<exec name>/<jail id>/root`), so
                // that a jail named by an earlier version is still its own.
                .map(|e| {
                    e.paths
                        .chroot()
                        .and_then(|root| root.parent()?.file_name())
                        .map(|name| name.to_string_lossy().into_owned())
                        .unwrap_or_else(|| jail.jail_id(&e.id))
                })
                .collect();
            let _ = tokio::task::spawn_blocking(move || jail.sweep(&live)).await;
        }
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

    /// The execution with this id, loading it from disk first when it is a
    /// finished one not loaded yet.
    fn get(&self, id: &str) -> Result<Arc<Execution>, ExecutorError> {
        if let ok @ Ok(_) = self.registry.get(id) {
            return ok;
        }
        self.load(id);
        self.registry.get(id)
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Supervisors let their VMs run on; a new executor with this id re-attaches.
        self.tasks.begin_shutdown();
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
