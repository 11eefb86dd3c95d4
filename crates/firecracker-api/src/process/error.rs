//! Why a VMM could not be started, reached or stopped.

use std::path::PathBuf;
use std::time::Duration;

use super::MAX_SOCKET_PATH;
use crate::exit::VmmExit;
use crate::watch::WatchError;

/// Why a VMM could not be started, reached or stopped.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The socket path is longer than a Unix socket address can hold.
    #[error("socket path {path} is {len} bytes long, the kernel allows at most {MAX_SOCKET_PATH}; use a shorter state directory")]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
    },
    /// The instance id is not one Firecracker accepts.
    #[error("instance id {0:?} is invalid: use 1 to 64 characters from A-Z, a-z, 0-9 and '-'")]
    InvalidInstanceId(String),
    /// A live VMM already listens on the socket.
    #[error("socket {0} is in use by a running VMM; stop it or pick another path")]
    SocketInUse(PathBuf),
    /// `--no-api` without a config file cannot boot anything.
    #[error("a VMM without an API socket needs a config file")]
    NoApiNoConfig,
    /// A file or directory the VMM needs could not be prepared.
    #[error("cannot prepare {path}: {source}")]
    Prepare {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The binary could not be started.
    #[error("cannot start {binary}: {source}; install the Firecracker v1.16 release and put it on PATH, or set FIRECRACKER_BIN / JAILER_BIN")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The spawn error.
        #[source]
        source: std::io::Error,
    },
    /// The VMM exited before its API was ready.
    #[error("the VMM {exit} before its API socket was ready; its log ends with: {log_tail}")]
    ExitedEarly {
        /// How it ended.
        exit: VmmExit,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The API socket did not appear in time.
    #[error("the VMM's API socket {socket} did not appear within {deadline:?}")]
    NotReady {
        /// The socket.
        socket: PathBuf,
        /// The deadline.
        deadline: Duration,
    },
    /// The VMM's log did not say it started the guest in time.
    #[error("the VMM did not start the guest within {deadline:?}")]
    NotStarted {
        /// The deadline.
        deadline: Duration,
    },
    /// Waiting for the socket failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// Waiting for the process failed.
    #[error("cannot wait for VMM process {pid}: {source}")]
    Wait {
        /// Its pid.
        pid: u32,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The VMM did not die even after SIGKILL.
    #[error("VMM process {pid} is still running {waited:?} after SIGKILL")]
    Unkillable {
        /// Its pid.
        pid: u32,
        /// How long we waited.
        waited: Duration,
    },
}
