//! The executor's errors: one enum, each message naming the execution and
//! what to do about it.

use std::path::PathBuf;

use crate::result::ExecutionStatus;
use crate::state_dir::StateDirError;
use crate::validate::ValidationError;

/// Why an executor operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// Firecracker is not installed where we look, or not usable.
    #[error("firecracker not found: {0}")]
    FirecrackerMissing(String),
    /// Firecracker's version is not supported.
    #[error(transparent)]
    FirecrackerVersion(#[from] firecracker_api::VersionError),
    /// `/dev/kvm` cannot be used.
    #[error("/dev/kvm is not usable: {0}; load the kvm module and give this user read-write access to /dev/kvm (e.g. add it to the kvm group)")]
    Kvm(std::io::Error),
    /// Jailing is on and cannot be set up (no jailer, no uid range, no cgroups).
    #[error("cannot jail VMMs: {0}")]
    Jail(#[source] crate::jail::JailError),
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The host's limits could not be read.
    #[error("cannot read this host's CPU and memory")]
    HostLimits(#[source] crate::resources::HostLimitsError),
    /// The request is invalid. (Not a `#[source]`: the message already holds
    /// it, so printing the cause chain does not repeat it.)
    #[error("invalid request: {0}")]
    Invalid(ValidationError),
    /// No execution has this id.
    #[error("no execution {0:?} in this executor")]
    NotFound(String),
    /// The execution was already started and is still live.
    #[error("execution {0:?} is already started")]
    AlreadyStarted(String),
    /// The execution already finished.
    #[error("execution {0:?} already finished; remove it before reusing its id")]
    AlreadyFinished(String),
    /// The VM could not be created.
    #[error("execution {id:?}: VM creation failed")]
    VmCreation {
        /// The execution.
        id: String,
        /// Why.
        #[source]
        source: LaunchError,
    },
    /// The execution's network could not be made (a host port taken, a
    /// `gateway_ip` outside the pool, a host without networking...).
    #[error("execution {id:?}: cannot make its network: {source}")]
    Network {
        /// The execution.
        id: String,
        /// Why.
        #[source]
        source: Box<fcexec_network::NetworkError>,
    },
    /// Starting it would take more than the executor's budget.
    #[error("execution {id:?} cannot start now: {reason}; wait for others to end, or raise ExecutorConfig::memory_budget_mib / max_live")]
    OverBudget {
        /// The execution.
        id: String,
        /// What is short.
        reason: String,
    },
    /// The execution's task ended without a result (a bug: the execution
    /// is failed with this reason rather than left hanging).
    #[error("execution {id:?}: internal error: {reason}")]
    Internal {
        /// The execution.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The operation does not apply to the execution's current status.
    #[error("cannot {op} execution {id:?}: {reason}")]
    WrongState {
        /// The execution.
        id: String,
        /// The operation.
        op: &'static str,
        /// Why not.
        reason: String,
    },
    /// `wait_for_status` gave up.
    #[error("execution {id:?} did not reach {wanted:?} within {timeout:?} (it is {now:?})")]
    StatusTimeout {
        /// The execution.
        id: String,
        /// The awaited status.
        wanted: ExecutionStatus,
        /// The current status.
        now: ExecutionStatus,
        /// The time given.
        timeout: std::time::Duration,
    },
    /// `wait_for_status` can never succeed: the execution ended in another status.
    #[error("execution {id:?} ended as {ended:?} and will never be {wanted:?}")]
    StatusUnreachable {
        /// The execution.
        id: String,
        /// The awaited status.
        wanted: ExecutionStatus,
        /// The status it ended in.
        ended: ExecutionStatus,
    },
    /// A file of the execution could not be written or removed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The executor is shutting down.
    #[error("the executor is shutting down")]
    ShuttingDown,
}

impl From<ValidationError> for ExecutorError {
    fn from(e: ValidationError) -> Self {
        ExecutorError::Invalid(e)
    }
}

/// Why a VM could not be created; the source of [`ExecutorError::VmCreation`].
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The execution's directory could not be created.
    #[error("cannot create the execution's directory")]
    CreateDir(#[source] std::io::Error),
    /// The VM's files (configuration, config drive, MMDS) could not be written.
    #[error("cannot write the VM's files")]
    Files(#[source] crate::config_drive::ConfigDriveError),
    /// The output files could not be opened.
    #[error("cannot open the output files")]
    Output(#[source] std::io::Error),
    /// The agent's key could not be made.
    #[error("cannot make the agent's key")]
    Key(#[from] crate::config_drive::ConfigDriveError),
    /// The VMM failed to spawn or to start the guest.
    #[error(transparent)]
    Vmm(#[from] firecracker_api::VmmError),
    /// The record could not be saved.
    #[error("cannot save the execution's record")]
    Record(#[source] std::io::Error),
    /// fcexec's guest agent initrd could not be had.
    #[error(transparent)]
    Initrd(#[from] crate::initrd::InitrdError),
    /// The VMM's jail could not be prepared.
    #[error(transparent)]
    Jail(#[from] crate::jail::JailError),
    /// The launch task failed.
    #[error("the launch task failed: {0}")]
    Task(String),
    /// The execution's network could not be handed to its jailed VMM.
    #[error("cannot give the network to the jailed VMM")]
    Network(#[source] Box<fcexec_network::NetworkError>),
    /// A launch hook failed this step (fault injection).
    #[error("launch step {step:?} failed: {reason}")]
    Injected {
        /// The step.
        step: crate::launch::LaunchStep,
        /// The hook's reason.
        reason: String,
    },
}

/// Every failure of [`crate::Executor::cleanup`], reported together.
#[derive(Debug, thiserror::Error)]
#[error("cleanup failed for {} execution(s): {}", .failures.len(), summary(.failures))]
pub struct CleanupError {
    /// Each execution that could not be cleaned up, with why.
    pub failures: Vec<(String, ExecutorError)>,
}

fn summary(failures: &[(String, ExecutorError)]) -> String {
    failures
        .iter()
        .map(|(id, why)| format!("{id}: {}", chain(why)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An error with its causes, joined by ": ".
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
