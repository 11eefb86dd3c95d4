//! The shared handle of one execution: what callers observe (phase, result,
//! log progress) and the channel to its supervisor.
//!
//! The supervisor task is the only writer: it owns the VMM and drives the
//! [`Phase`] state machine. Everyone else subscribes to `watch` channels, so
//! any number of waiters and log followers cost nothing while idle, and a
//! dropped waiter affects no one else.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::lifecycle::Phase;
use crate::result::{ExecutionResult, ExecutionStatus};
use crate::spec::Mode;
use crate::state_dir::ExecPaths;

/// What a caller sees of an execution at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Where it is in its life.
    pub phase: Phase,
    /// The result, once terminal.
    pub result: Option<Arc<ExecutionResult>>,
}

/// How far the logs have been written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// Bytes of stdout stored.
    pub stdout: u64,
    /// Bytes of stderr stored.
    pub stderr: u64,
    /// True once no more output will come.
    pub done: bool,
}

/// A request to the supervisor; the reply says whether it was carried out.
#[derive(Debug)]
pub enum Command {
    /// Stop the VM and mark the execution killed.
    Cancel(oneshot::Sender<Result<(), String>>),
    /// Pause the VM.
    Pause(oneshot::Sender<Result<(), String>>),
    /// Resume the VM.
    Resume(oneshot::Sender<Result<(), String>>),
}

/// The shared handle of one execution.
#[derive(Debug)]
pub struct Execution {
    /// The execution id.
    pub id: String,
    /// The node's job id.
    pub job_id: String,
    /// Its files.
    pub paths: ExecPaths,
    /// Plain or agent mode.
    pub mode: Mode,
    /// Phase and result.
    state: watch::Sender<Snapshot>,
    /// Log progress.
    logs: watch::Sender<LogProgress>,
    /// To the supervisor; `None` once there is none (terminal at load).
    commands: Option<mpsc::Sender<Command>>,
}

impl Execution {
    /// A new handle in `phase`, with a command channel when a supervisor will run.
    pub fn new(
        id: String,
        job_id: String,
        paths: ExecPaths,
        mode: Mode,
        snapshot: Snapshot,
        commands: Option<mpsc::Sender<Command>>,
    ) -> Execution {
        Execution {
            id,
            job_id,
            paths,
            mode,
            state: watch::Sender::new(snapshot),
            logs: watch::Sender::new(LogProgress::default()),
            commands,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// The current status.
    pub fn status(&self) -> ExecutionStatus {
        match &self.state.borrow().result {
            Some(result) => result.status(),
            None => self.state.borrow().phase.status(),
        }
    }

    /// Subscribes to phase and result changes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Subscribes to log progress.
    pub fn log_progress(&self) -> watch::Receiver<LogProgress> {
        self.logs.subscribe()
    }

    /// Publishes a new snapshot (supervisor only).
    pub fn publish(&self, snapshot: Snapshot) {
        self.state.send_replace(snapshot);
    }

    /// Publishes log progress (supervisor only).
    pub fn publish_logs(&self, progress: LogProgress) {
        self.logs.send_replace(progress);
    }

    /// The supervisor's command channel, if it runs.
    pub fn commands(&self) -> Option<&mpsc::Sender<Command>> {
        self.commands.as_ref()
    }

    /// The file holding the workload's stdout: the serial console in plain mode.
    pub fn stdout_path(&self) -> PathBuf {
        match self.mode {
            Mode::Plain => self.paths.serial(),
            Mode::Agent => self.paths.stdout(),
        }
    }

    /// The file holding the workload's stderr (empty in plain mode).
    pub fn stderr_path(&self) -> PathBuf {
        self.paths.stderr()
    }
}
