//! The executor's state directory: where every execution's record, logs,
//! sockets and VM files live, and the lock that keeps a second process out.
//!
//! Layout (every directory mode 0700):
//!
//! ```text
//! <root>/                       /run/fcexec, or $XDG_RUNTIME_DIR/fcexec when not root
//!   <executor id>/
//!     lock                      flock(2)ed by the executor that owns the directory
//!     <execution id>/
//!       record.json             the persisted execution record
//!       vm.json                 the VMM's configuration file
//!       metadata.json           MMDS contents, when given
//!       config.img              the agent-mode config drive
//!       serial.log              the guest's serial console (the VMM's stdout)
//!       stdout, stderr          the workload's output (agent mode)
//!       firecracker.log         the VMM's own log
//!       api.sock                the VMM's API socket
//! ```
//!
//! Every path comes from [`StateDir::execution`], which accepts only ids that
//! cannot escape the directory and rejects those that would make the socket
//! path longer than a Unix socket address can hold.

use std::fs::{DirBuilder, File};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use firecracker_api::process::MAX_SOCKET_PATH;

/// Why the state directory or a path in it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// An id that is empty, too long, or could escape the directory.
    #[error("{field}: {id:?} is not a valid id; use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'")]
    InvalidId {
        /// The field holding the id.
        field: &'static str,
        /// The id.
        id: String,
    },
    /// An id that would make the API socket path too long.
    #[error("{field}: {id:?} makes the socket path {path} {len} bytes long, more than the {MAX_SOCKET_PATH} a Unix socket allows; use a shorter id or state directory")]
    SocketPathTooLong {
        /// The field holding the id.
        field: &'static str,
        /// The id.
        id: String,
        /// The socket path.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// No state directory was given and none could be chosen.
    #[error("no state directory: not root and XDG_RUNTIME_DIR is not set; pass one explicitly")]
    NoDefault,
    /// The directory could not be created or secured.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another executor process holds the directory.
    #[error("state directory {0} is in use by another fcexec executor (its lock is held); stop it or use another executor id or directory")]
    Locked(PathBuf),
}

/// The default root: `/run/fcexec` for root, `$XDG_RUNTIME_DIR/fcexec` otherwise.
pub fn default_root() -> Result<PathBuf, StateDirError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/run/fcexec"));
    }
    std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| PathBuf::from(d).join("fcexec"))
        .ok_or(StateDirError::NoDefault)
}

/// Checks an id used as a path component.
pub fn check_id(field: &'static str, id: &str) -> Result<(), StateDirError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StateDirError::InvalidId {
            field,
            id: id.to_string(),
        })
    }
}

/// One executor's directory, locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    /// `<root>/<executor id>`.
    dir: PathBuf,
    /// The open, flock(2)ed lock file; closing it releases the lock.
    _lock: File,
}

impl StateDir {
    /// Creates (mode 0700) and locks `<root>/<executor_id>`.
    pub fn open(root: &Path, executor_id: &str) -> Result<StateDir, StateDirError> {
        check_id("executor id", executor_id)?;
        let dir = root.join(executor_id);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateDirError::Io { path, source }
        };
        make_private_dir(root).map_err(io(root))?;
        make_private_dir(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on an fd we own; non-blocking.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(StateDirError::Locked(dir));
        }
        Ok(StateDir { dir, _lock: lock })
    }

    /// `<root>/<executor id>`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The paths of one execution, after checking its id.
    pub fn execution(&self, execution_id: &str) -> Result<ExecPaths, StateDirError> {
        check_id("execution_id", execution_id)?;
        let paths = ExecPaths {
            dir: self.dir.join(execution_id),
        };
        let socket = paths.api_socket();
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(StateDirError::SocketPathTooLong {
                field: "execution_id",
                id: execution_id.to_string(),
                path: socket,
                len,
            });
        }
        Ok(paths)
    }

    /// The ids of the execution directories present.
    pub fn execution_ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|id| check_id("execution_id", id).is_ok())
            .collect();
        ids.sort();
        ids
    }
}

/// Creates a directory with mode 0700, or tightens an existing one to 0700.
fn make_private_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
}

/// The files of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPaths {
    /// `<root>/<executor id>/<execution id>`.
    dir: PathBuf,
}

impl ExecPaths {
    /// Paths under `dir`, for unit tests that never create them.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path) -> ExecPaths {
        ExecPaths {
            dir: dir.to_path_buf(),
        }
    }

    /// The execution's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the directory (mode 0700).
    pub fn create(&self) -> std::io::Result<()> {
        DirBuilder::new().mode(0o700).create(&self.dir)
    }

    /// Removes the directory and everything in it; absent is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The persisted record.
    pub fn record(&self) -> PathBuf {
        self.dir.join("record.json")
    }

    /// The VMM's configuration file.
    pub fn vm_config(&self) -> PathBuf {
        self.dir.join("vm.json")
    }

    /// The MMDS contents file.
    pub fn metadata(&self) -> PathBuf {
        self.dir.join("metadata.json")
    }

    /// The agent-mode config drive.
    pub fn config_drive(&self) -> PathBuf {
        self.dir.join("config.img")
    }

    /// The guest's serial console output.
    pub fn serial(&self) -> PathBuf {
        self.dir.join("serial.log")
    }

    /// The workload's stdout (agent mode).
    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }

    /// The workload's stderr (agent mode).
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }

    /// The VMM's own log.
    pub fn vmm_log(&self) -> PathBuf {
        self.dir.join("firecracker.log")
    }

    /// The VMM's API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_escape_are_rejected() {
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            ".hidden",
            "a b",
            "a\0b",
            &"x".repeat(65),
        ] {
            assert!(check_id("execution_id", bad).is_err(), "{bad:?}");
        }
        for good in ["a", "exec-1", "job_2.retry", &"x".repeat(64)] {
            assert!(check_id("execution_id", good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn directory_is_private_and_locked() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(root.path(), "ex1").unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let err = StateDir::open(root.path(), "ex1").unwrap_err();
        assert!(matches!(err, StateDirError::Locked(_)), "{err}");
        drop(dir);
        StateDir::open(root.path(), "ex1").unwrap();
    }

    #[test]
    fn long_ids_that_overflow_the_socket_path_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60));
        let dir = StateDir::open(&deep, "ex").unwrap();
        let err = dir.execution(&"e".repeat(64)).unwrap_err();
        assert!(
            matches!(err, StateDirError::SocketPathTooLong { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("execution_id"));
        let ok = dir.execution("short").unwrap();
        assert!(ok.api_socket().starts_with(dir.path()));
    }

    #[test]
    fn lists_execution_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(root.path(), "ex").unwrap();
        for id in ["b", "a"] {
            dir.execution(id).unwrap().create().unwrap();
        }
        assert_eq!(dir.execution_ids(), ["a", "b"]);
    }
}
