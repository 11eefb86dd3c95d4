//! The shared handle of one execution: what callers observe (phase, result,
//! log progress) and the channel to its supervisor.
//!
//! The execution's task (launch, then supervision) is the only writer: it
//! owns the VMM and moves the [`Phase`] state machine through
//! [`Execution::transition`] and [`Execution::finish`], the one checked way
//! to change it. Everyone else subscribes to `watch` channels, so any number
//! of waiters and log followers cost nothing while idle, and a dropped waiter
//! affects no one else.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::lifecycle::{InvalidTransition, Phase};
use crate::result::{ExecutionResult, ExecutionStatus};
use crate::spec::Mode;
use crate::state_dir::ExecPaths;

/// What a caller sees of an execution at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Where it is in its life.
    pub phase: Phase,
    /// The result, once terminal (without its output: see [`crate::Executor::wait`]).
    pub result: Option<Arc<ExecutionResult>>,
}

impl Snapshot {
    /// The status the node's interface reports: the one place it is derived.
    pub fn status(&self) -> ExecutionStatus {
        match &self.result {
            Some(result) => result.status(),
            None => self.phase.status(),
        }
    }
}

/// How far the logs have been written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// Bytes of stdout stored.
    pub stdout: u64,
    /// Bytes of stderr stored.
    pub stderr: u64,
    /// Bytes of the console log (protocol 2) stored.
    pub console: u64,
    /// Protocol 2: an agent is connected (and said hello).
    pub attached: bool,
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
    /// Cancelled when the executor lets go of the execution (shutdown):
    /// waiters and followers in this process stop waiting.
    released: CancellationToken,
}

impl Execution {
    /// A new handle in `snapshot`, with a command channel when a supervisor
    /// will run, released when `released` is cancelled.
    pub fn new(
        id: String,
        job_id: String,
        paths: ExecPaths,
        mode: Mode,
        snapshot: Snapshot,
        commands: Option<mpsc::Sender<Command>>,
        released: CancellationToken,
    ) -> Execution {
        Execution {
            id,
            job_id,
            paths,
            mode,
            state: watch::Sender::new(snapshot),
            logs: watch::Sender::new(LogProgress::default()),
            commands,
            released,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.state.borrow().phase
    }

    /// The current status. One borrow of the channel: a second one taken
    /// while the first is held deadlocks against a waiting writer.
    pub fn status(&self) -> ExecutionStatus {
        self.state.borrow().status()
    }

    /// Subscribes to phase and result changes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// Subscribes to log progress.
    pub fn log_progress(&self) -> watch::Receiver<LogProgress> {
        self.logs.subscribe()
    }

    /// Resolves when the executor lets go of this execution.
    pub fn released(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.released.cancelled()
    }

    /// Moves to `to` (not a terminal phase: see [`Execution::finish`]) if
    /// the state machine allows it; a refused move changes and publishes nothing.
    pub fn transition(&self, to: Phase) -> Result<(), InvalidTransition> {
        self.change(to, None)
    }

    /// Ends the execution in `phase` with `result`, if it has not ended.
    pub fn finish(&self, phase: Phase, result: ExecutionResult) -> Result<(), InvalidTransition> {
        self.change(phase, Some(Arc::new(result)))
    }

    fn change(
        &self,
        to: Phase,
        result: Option<Arc<ExecutionResult>>,
    ) -> Result<(), InvalidTransition> {
        let mut refused = None;
        self.state
            .send_if_modified(|snapshot| match snapshot.phase.transition(to) {
                Ok(()) => {
                    snapshot.result = result;
                    true
                }
                Err(e) => {
                    refused = Some(e);
                    false
                }
            });
        match refused {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Publishes log progress (the execution's task only).
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn execution(phase: Phase) -> Execution {
        let dir = std::env::temp_dir().join("fcexec-execution-test");
        let paths = crate::state_dir::ExecPaths::for_tests(&dir);
        Execution::new(
            "e".into(),
            "j".into(),
            paths,
            Mode::Agent,
            Snapshot {
                phase,
                result: None,
            },
            None,
            CancellationToken::new(),
        )
    }

    /// Status readers and a publishing writer in a loop: with the old
    /// double borrow (`borrow()` twice in one expression) this deadlocked
    /// within a few thousand rounds once a writer queued between the two.
    #[test]
    fn status_readers_never_deadlock_with_a_writer() {
        let exec = Arc::new(execution(Phase::Running));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (exec, stop) = (exec.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _ = exec.status();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        let writer = {
            let exec = exec.clone();
            std::thread::spawn(move || {
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    let _ = exec.transition(Phase::Paused);
                    let _ = exec.transition(Phase::Running);
                }
            })
        };
        // A deadlock shows as the writer never finishing.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !writer.is_finished() {
            assert!(
                Instant::now() < deadline,
                "status reader and writer deadlocked"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(reads > 0);
    }

    #[test]
    fn a_refused_transition_publishes_nothing() {
        let exec = execution(Phase::Running);
        let mut rx = exec.subscribe();
        rx.mark_unchanged();
        assert!(exec.transition(Phase::Pending).is_err());
        assert!(!rx.has_changed().unwrap());
        exec.finish(Phase::Succeeded, ExecutionResult::new(0))
            .unwrap();
        assert!(rx.has_changed().unwrap());
        let err = exec
            .finish(Phase::Failed, ExecutionResult::failed("late"))
            .unwrap_err();
        assert_eq!(err.from, Phase::Succeeded);
        assert_eq!(exec.status(), ExecutionStatus::Success);
    }
}
