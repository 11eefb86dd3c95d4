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
    /// The state directory cannot be used.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// The host's limits could not be read.
    #[error("cannot read this host's CPU and memory: {0}")]
    HostLimits(String),
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
    #[error("execution {id:?}: VM creation failed: {reason}")]
    VmCreation {
        /// The execution.
        id: String,
        /// Why.
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

/// Every failure of [`crate::Executor::cleanup`], reported together.
#[derive(Debug, thiserror::Error)]
#[error("cleanup failed for {} execution(s): {}", .failures.len(), summary(.failures))]
pub struct CleanupError {
    /// Each execution that could not be cleaned up, with why.
    pub failures: Vec<(String, String)>,
}

fn summary(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(id, why)| format!("{id}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}
