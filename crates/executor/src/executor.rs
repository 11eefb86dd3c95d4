//! The executor: the node's contract (start, wait, cancel, run, cleanup,
//! list, status, wait_for_status, pause, resume, remove, logs) over the
//! lifecycle that the supervisor (`supervisor.rs`) drives.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firecracker_api::StopPolicy;
use tokio::sync::{oneshot, watch};

use crate::error::{CleanupError, ExecutorError};
use crate::execution::{Command, Execution};
use crate::launch;
use crate::logs::{LogOptions, Logs};
use crate::request::ExecutionRequest;
use crate::resources::HostLimits;
use crate::result::{ExecutionResult, ExecutionStatus, ListItem};
use crate::state_dir::{default_root, StateDir};
use crate::supervisor::Settings;

/// How an executor is set up. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Root of the state directory; default `/run/fcexec` (root) or
    /// `$XDG_RUNTIME_DIR/fcexec`.
    pub state_root: Option<PathBuf>,
    /// The firecracker binary; default `$FIRECRACKER_BIN`, then `firecracker` on `PATH`.
    pub firecracker: Option<PathBuf>,
    /// How cancel, remove and cleanup stop a VM.
    pub stop_policy: StopPolicy,
    /// How long a new VMM gets to start its guest.
    pub ready_timeout: Duration,
    /// How long a guest gets to power off after its agent reported the end.
    pub after_exit_grace: Duration,
    /// The host's CPUs and memory; default: detected.
    pub host_limits: Option<HostLimits>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            state_root: None,
            firecracker: None,
            stop_policy: StopPolicy::default(),
            ready_timeout: Duration::from_secs(10),
            after_exit_grace: Duration::from_secs(2),
            host_limits: None,
        }
    }
}

/// Runs executions in Firecracker microVMs. See the crate docs.
#[derive(Debug)]
pub struct Executor {
    /// Everything the executor's methods share.
    pub(crate) shared: Arc<Shared>,
}

/// The state behind an [`Executor`].
#[derive(Debug)]
pub(crate) struct Shared {
    /// The executor id.
    pub id: String,
    /// The firecracker binary.
    pub firecracker: PathBuf,
    /// CPUs and memory requests are checked against.
    pub host: HostLimits,
    /// The locked state directory.
    pub state: StateDir,
    /// Known executions by id.
    pub executions: Mutex<HashMap<String, Arc<Execution>>>,
    /// Dropped (or set) when the executor goes: supervisors let their VMs run on.
    pub shutdown: watch::Sender<bool>,
    /// Timeouts and policies.
    pub config: ExecutorConfig,
    /// Bounds the launches doing blocking work (files, fork/exec) at once, so
    /// a burst of starts borrows a few blocking-pool threads, not hundreds.
    pub launch_slots: tokio::sync::Semaphore,
}

/// Launches doing their blocking part at once.
pub(crate) const LAUNCH_SLOTS: usize = 16;

impl Shared {
    /// Settings for supervisors.
    pub fn settings(&self) -> Settings {
        Settings {
            stop: self.config.stop_policy,
            after_exit_grace: self.config.after_exit_grace,
        }
    }

    /// The execution with this id.
    pub fn get(&self, id: &str) -> Result<Arc<Execution>, ExecutorError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ExecutorError::NotFound(id.to_string()))
    }

    /// The execution map, even if a panicking thread poisoned its lock.
    pub fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Execution>>> {
        self.executions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Executor {
    /// Builds an executor: checks firecracker (present, supported version) and
    /// `/dev/kvm`, locks its state directory, and re-attaches to the VMs a
    /// previous executor with this id left running.
    pub async fn new(id: &str, config: ExecutorConfig) -> Result<Executor, ExecutorError> {
        let firecracker = find_firecracker(config.firecracker.as_deref())?;
        firecracker_api::version::check(&firecracker).await?;
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .map_err(ExecutorError::Kvm)?;
        let host = match config.host_limits {
            Some(h) => h,
            None => HostLimits::detect().map_err(|e| ExecutorError::HostLimits(e.to_string()))?,
        };
        let root = match &config.state_root {
            Some(root) => root.clone(),
            None => default_root()?,
        };
        let state = StateDir::open(&root, id)?;
        let shared = Arc::new(Shared {
            id: id.to_string(),
            firecracker,
            host,
            state,
            executions: Mutex::new(HashMap::new()),
            shutdown: watch::Sender::new(false),
            config,
            launch_slots: tokio::sync::Semaphore::new(LAUNCH_SLOTS),
        });
        crate::recovery::recover(&shared);
        tracing::info!(executor = id, dir = %shared.state.path().display(), "executor ready");
        Ok(Executor { shared })
    }

    /// This executor's id.
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The directory holding this executor's executions.
    pub fn state_dir(&self) -> &std::path::Path {
        self.shared.state.path()
    }

    /// Creates and boots the VM of `request`. Returns once the VM runs.
    ///
    /// Dropping the returned future does not abandon a launch half way (which
    /// could leave a VM without a supervisor): the launch runs in its own task
    /// and the execution goes on; `status` or `wait` find it.
    pub async fn start(&self, request: &ExecutionRequest) -> Result<(), ExecutorError> {
        let (shared, owned) = (self.shared.clone(), request.clone());
        tokio::spawn(async move { launch::start(&shared, &owned).await })
            .await
            .map_err(|e| ExecutorError::VmCreation {
                id: request.execution_id.clone(),
                reason: format!("the launch task failed: {e}"),
            })?
    }

    /// Resolves with the result once the execution ends. Cancel-safe: a
    /// dropped or timed-out wait affects no one else; any number may wait.
    pub async fn wait(&self, id: &str) -> Result<ExecutionResult, ExecutorError> {
        let exec = self.shared.get(id)?;
        let mut rx = exec.subscribe();
        let snapshot = rx
            .wait_for(|s| s.result.is_some())
            .await
            .map_err(|_| ExecutorError::ShuttingDown)?;
        match &snapshot.result {
            Some(result) => Ok(ExecutionResult::clone(result)),
            None => Err(ExecutorError::ShuttingDown),
        }
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
        let exec = self.shared.get(id)?;
        let wrong = |reason: String| ExecutorError::WrongState {
            id: id.to_string(),
            op,
            reason,
        };
        let phase = exec.snapshot().phase;
        if phase.is_terminal() {
            return Err(wrong(format!(
                "it already ended ({})",
                exec.status().as_str()
            )));
        }
        if phase == crate::lifecycle::Phase::Stopping {
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
        let mut items: Vec<ListItem> = self
            .shared
            .lock()
            .values()
            .map(|e| ListItem::new(e.id.clone(), e.status()))
            .collect();
        items.sort_by(|a, b| a.execution_id.cmp(&b.execution_id));
        items
    }

    /// The execution's status.
    pub fn status(&self, id: &str) -> Result<ExecutionStatus, ExecutorError> {
        Ok(self.shared.get(id)?.status())
    }

    /// Resolves once the execution has `wanted` status; fails at `timeout`, or
    /// at once when it ended in another status.
    pub async fn wait_for_status(
        &self,
        id: &str,
        wanted: ExecutionStatus,
        timeout: Duration,
    ) -> Result<(), ExecutorError> {
        let exec = self.shared.get(id)?;
        let mut rx = exec.subscribe();
        let status_of = |s: &crate::execution::Snapshot| match &s.result {
            Some(r) => r.status(),
            None => s.phase.status(),
        };
        let reached = async {
            rx.wait_for(|s| status_of(s) == wanted || s.result.is_some())
                .await
                .map(|s| s.clone())
        };
        match tokio::time::timeout(timeout, reached).await {
            Ok(Ok(s)) if status_of(&s) == wanted => Ok(()),
            Ok(Ok(s)) => Err(ExecutorError::StatusUnreachable {
                id: id.to_string(),
                wanted,
                ended: status_of(&s),
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
        Ok(Logs::open(self.shared.get(id)?, options))
    }

    /// Stops the execution if it runs (within `timeout`), then forgets it and
    /// deletes its files.
    pub async fn remove(&self, id: &str, timeout: Duration) -> Result<(), ExecutorError> {
        let exec = self.shared.get(id)?;
        if exec.snapshot().phase.is_live() {
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
        self.shared.lock().remove(id);
        exec.paths.remove().map_err(|source| ExecutorError::Io {
            context: "cannot remove",
            path: exec.paths.dir().to_path_buf(),
            source,
        })
    }

    /// Stops and removes every VM this executor owns and deletes their
    /// sockets and files. Every failure is reported, together.
    pub async fn cleanup(&self) -> Result<(), CleanupError> {
        let all: Vec<Arc<Execution>> = self.shared.lock().values().cloned().collect();
        let timeout = self.shared.config.stop_policy.sigterm
            + self.shared.config.stop_policy.sigkill
            + self
                .shared
                .config
                .stop_policy
                .ctrl_alt_del
                .unwrap_or_default()
            + Duration::from_secs(1);
        let removals = all
            .iter()
            .map(|e| async move { (e.id.clone(), self.remove(&e.id, timeout).await) });
        let failures: Vec<(String, String)> = futures_util::future::join_all(removals)
            .await
            .into_iter()
            .filter_map(|(id, r)| r.err().map(|e| (id, e.to_string())))
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CleanupError { failures })
        }
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Supervisors let their VMs run on; a new executor with this id re-attaches.
        self.shared.shutdown.send_replace(true);
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
