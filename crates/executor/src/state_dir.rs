//! The executor's state directories: where every execution's record, logs,
//! sockets and VM files live, and the lock that keeps a second process out.
//!
//! Two trees, so that what grows and must survive a reboot is not kept in
//! memory-backed `/run`: the *runtime* directory holds sockets, the VMM's
//! configuration and the lock; the *data* directory holds records, results
//! and output. (Given only a state root, both trees are that root.)
//! Every directory is mode 0700:
//!
//! ```text
//! <runtime root>/               /run/fcexec, or $XDG_RUNTIME_DIR/fcexec when not root
//!   <executor id>/
//!     lock                      flock(2)ed by the executor that owns the directory
//!     <execution id>/
//!       vm.json                 the VMM's configuration file
//!       metadata.json           MMDS contents, when given
//!       config.img              the agent-mode config drive
//!       api.sock                the VMM's API socket
//! <data root>/                  /var/lib/fcexec, or $XDG_STATE_HOME/fcexec
//!   <executor id>/                (~/.local/state/fcexec) when not root
//!     <execution id>/
//!       record.json             the persisted execution record (result.json, cancel: its end)
//!       serial.log              the guest's serial console (the VMM's stdout)
//!       stdout, stderr          the workload's output (agent mode)
//!       firecracker.log         the VMM's own log
//! ```
//!
//! Every path comes from [`StateDir::execution`], which accepts only ids that
//! cannot escape the directory and rejects those that would make the socket
//! path longer than a Unix socket address can hold.

use std::fs::{DirBuilder, File};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use firecracker_api::process::{JAILED_SOCKET as JAILED_API_SOCKET, MAX_SOCKET_PATH};

/// A jailed VMM's vsock `uds_path`, as it sees it (in the jail's `run/`,
/// which belongs to its uid).
pub const JAILED_VSOCK: &str = "/run/v.sock";

/// Why the state directory or a path in it cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// An id that is empty, too long, or could escape the directory.
    #[error("{field}: {id:?} is not a valid id; use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.' or '-'")]
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
    #[error("no state directory: not root and XDG_RUNTIME_DIR (for the runtime directory) or HOME (for the data directory) is not set; pass one explicitly")]
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
    /// The directory exists but cannot be trusted with executions' state.
    #[error("state directory {path} {problem}: another user could change what fcexec reads and writes there; {fix}")]
    Untrusted {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
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

/// The default data root: `/var/lib/fcexec` for root, else
/// `$XDG_STATE_HOME/fcexec` (default `~/.local/state/fcexec`).
pub fn default_data_root() -> Result<PathBuf, StateDirError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(PathBuf::from("/var/lib/fcexec"));
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("fcexec"));
    }
    std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".local/state/fcexec"))
        .ok_or(StateDirError::NoDefault)
}

/// Checks an id used as a path component.
pub fn check_id(field: &'static str, id: &str) -> Result<(), StateDirError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        // Not an option to a program that gets the id as an argument.
        && !id.starts_with('-')
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

/// One executor's directories, locked for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    /// `<runtime root>/<executor id>`.
    run: PathBuf,
    /// `<data root>/<executor id>`.
    data: PathBuf,
    /// The open, flock(2)ed lock file; closing it releases the lock.
    /// `None` in a [`StateDir::view`].
    _lock: Option<File>,
}

impl StateDir {
    /// Creates (mode 0700) `<run_root>/<executor_id>` and
    /// `<data_root>/<executor_id>`, and locks the first.
    pub fn open(
        run_root: &Path,
        data_root: &Path,
        executor_id: &str,
    ) -> Result<StateDir, StateDirError> {
        check_id("executor id", executor_id)?;
        let (run, data) = (run_root.join(executor_id), data_root.join(executor_id));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StateDirError::Io { path, source }
        };
        for dir in [run_root, &run, data_root, &data] {
            private_dir(dir)?;
        }
        let lock_path = run.join("lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        if !lock_briefly_patient(&lock) {
            return Err(StateDirError::Locked(run));
        }
        Ok(StateDir {
            run,
            data,
            _lock: Some(lock),
        })
    }

    /// The same directories, without the lock: for work that may outlive
    /// the owner for a moment (a background task) and must not keep the
    /// lock from the next owner.
    pub fn view(&self) -> StateDir {
        StateDir {
            run: self.run.clone(),
            data: self.data.clone(),
            _lock: None,
        }
    }

    /// `<data root>/<executor id>`: the executions' records and output.
    pub fn path(&self) -> &Path {
        &self.data
    }

    /// `<runtime root>/<executor id>`: the lock, sockets and VM files.
    pub fn runtime_path(&self) -> &Path {
        &self.run
    }

    /// The paths of one execution, after checking its id. A new execution's
    /// paths are then checked for its socket: [`ExecPaths::checked`] when
    /// its VMM runs unjailed, [`ExecPaths::jailed`] otherwise.
    pub fn execution(&self, execution_id: &str) -> Result<ExecPaths, StateDirError> {
        check_id("execution_id", execution_id)?;
        Ok(ExecPaths {
            run: self.run.join(execution_id),
            data: self.data.join(execution_id),
            chroot: None,
        })
    }

    /// The ids of every execution directory present (in the data tree),
    /// sorted: one entry per execution ever kept, so O(history); for
    /// `list`, `cleanup` and the retention sweep, never for start-up.
    pub fn execution_ids(&self) -> Vec<String> {
        let mut ids = dir_ids(&self.data);
        ids.sort();
        ids
    }

    /// The ids of the executions that may be live, found without reading a
    /// record (see [`live_ids`]).
    pub fn live_ids(&self) -> Vec<String> {
        live_ids(&self.run, &self.data)
    }
}

/// The ids of the executions under `runtime_dir` (`<runtime root>/<executor
/// id>`) and `data_dir` (`<data root>/<executor id>`) that may be live,
/// sorted, without reading a record. Where the trees are apart, those with
/// a directory in the runtime tree: an execution's runtime directory goes
/// only after its result is saved, so that tree holds live ones only and
/// the answer does not grow with history. In one tree, the directories
/// without a `result.json` (one name listing, one `stat` each).
pub fn live_ids(runtime_dir: &Path, data_dir: &Path) -> Vec<String> {
    let mut ids = dir_ids(runtime_dir);
    if runtime_dir == data_dir {
        ids.retain(|id| !data_dir.join(id).join("result.json").exists());
    }
    ids.sort();
    ids
}

/// The names of the directories in `dir` that are valid execution ids
/// (which leaves out `.cache`, `.jail` and the lock); none when `dir` is
/// missing.
fn dir_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id("execution_id", id).is_ok())
        .collect()
}

/// Takes the lock, trying for up to 200 ms: a lock its owner just released
/// can still be held for a moment by a child process forked in between
/// (until it execs and its close-on-exec descriptors go).
fn lock_briefly_patient(lock: &File) -> bool {
    use std::os::fd::AsRawFd;
    for _ in 0..20 {
        // SAFETY: flock on an fd we own; non-blocking.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Creates a directory with mode 0700, or checks that an existing one can
/// be trusted: a real directory (not a symbolic link), owned by this user,
/// writable by no one else. Someone else's directory is refused, never
/// changed.
fn private_dir(path: &Path) -> Result<(), StateDirError> {
    let io = |source| StateDirError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_trusted(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(io)?;
            // Checked again: something else may have been put there meanwhile.
            check_trusted(path, &std::fs::symlink_metadata(path).map_err(io)?)
        }
        Err(e) => Err(io(e)),
    }
}

/// Why `meta` (of `path`) is not a directory fcexec may keep its state in.
fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), StateDirError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |problem: String, fix: String| StateDirError::Untrusted {
        path: path.to_path_buf(),
        problem,
        fix,
    };
    let shown = path.display();
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.file_type().is_symlink() {
        return Err(untrusted(
            "is a symbolic link".into(),
            format!("give the directory it points to instead, or remove the link {shown}"),
        ));
    }
    if !meta.is_dir() {
        return Err(untrusted(
            "is not a directory".into(),
            format!("remove {shown} or choose another directory"),
        ));
    }
    if meta.uid() != me {
        return Err(untrusted(
            format!(
                "is owned by uid {}, not by this user (uid {me})",
                meta.uid()
            ),
            "remove it if it is not in use, or choose a directory of your own".to_string(),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(untrusted(
            format!(
                "is writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ),
            format!("chmod 700 {shown}"),
        ));
    }
    Ok(())
}

/// The files of one execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPaths {
    /// `<runtime root>/<executor id>/<execution id>`.
    run: PathBuf,
    /// `<data root>/<executor id>/<execution id>`.
    data: PathBuf,
    /// A jailed VMM's chroot: its sockets are inside it.
    chroot: Option<PathBuf>,
}

impl ExecPaths {
    /// Paths under `dir` (one tree), for unit tests.
    #[cfg(test)]
    pub(crate) fn for_tests(dir: &Path) -> ExecPaths {
        ExecPaths {
            run: dir.to_path_buf(),
            data: dir.to_path_buf(),
            chroot: None,
        }
    }

    /// The execution's data directory (records and output).
    pub fn dir(&self) -> &Path {
        &self.data
    }

    /// The execution's runtime directory (sockets and VM files).
    pub fn runtime_dir(&self) -> &Path {
        &self.run
    }

    /// Creates the directories (mode 0700); fails with `AlreadyExists` when
    /// the data directory exists, creating nothing.
    pub fn create(&self) -> std::io::Result<()> {
        DirBuilder::new().mode(0o700).create(&self.data)?;
        if self.run != self.data {
            if let Err(e) = DirBuilder::new().mode(0o700).create(&self.run) {
                // A runtime directory left from before (a crash) is reused.
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = std::fs::remove_dir(&self.data);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Removes the directories and everything in them; absent is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        for dir in [&self.run, &self.data] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the runtime directory (what the VMM needed while it ran).
    pub fn remove_runtime(&self) -> std::io::Result<()> {
        if self.run == self.data {
            for path in [
                self.vm_config(),
                self.config_drive(),
                self.metadata(),
                self.api_socket(),
                self.vsock(),
                self.agent_socket(fcexec_guest_protocol::DEFAULT_PORT),
            ] {
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            return Ok(());
        }
        match std::fs::remove_dir_all(&self.run) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The persisted record.
    pub fn record(&self) -> PathBuf {
        self.data.join("record.json")
    }

    /// The VMM's configuration file.
    pub fn vm_config(&self) -> PathBuf {
        self.run.join("vm.json")
    }

    /// The MMDS contents file.
    pub fn metadata(&self) -> PathBuf {
        self.run.join("metadata.json")
    }

    /// The agent-mode config drive.
    pub fn config_drive(&self) -> PathBuf {
        self.run.join("config.img")
    }

    /// The guest's serial console output.
    pub fn serial(&self) -> PathBuf {
        self.data.join("serial.log")
    }

    /// The workload's stdout (agent mode).
    pub fn stdout(&self) -> PathBuf {
        self.data.join("stdout")
    }

    /// The workload's stderr (agent mode).
    pub fn stderr(&self) -> PathBuf {
        self.data.join("stderr")
    }

    /// The VMM's own log.
    pub fn vmm_log(&self) -> PathBuf {
        self.data.join("firecracker.log")
    }

    /// The VMM's API socket (in its chroot when jailed).
    pub fn api_socket(&self) -> PathBuf {
        match &self.chroot {
            Some(root) => root.join(JAILED_API_SOCKET.trim_start_matches('/')),
            None => self.run.join("api.sock"),
        }
    }

    /// The vsock device's `uds_path` (protocol 2), on the host: Firecracker
    /// listens on it for host-initiated connections.
    pub fn vsock(&self) -> PathBuf {
        match &self.chroot {
            Some(root) => root.join(JAILED_VSOCK.trim_start_matches('/')),
            None => self.run.join("v.sock"),
        }
    }

    /// Where the executor listens for the agent's connection to `port`
    /// (`<uds_path>_<port>`, Firecracker's naming).
    pub fn agent_socket(&self, port: u32) -> PathBuf {
        let mut path = self.vsock().into_os_string();
        path.push(format!("_{port}"));
        PathBuf::from(path)
    }

    /// The same paths for a VMM jailed in `chroot` (host path of its `/`):
    /// its sockets are inside the chroot. Fails when the API socket's path
    /// would be too long for a Unix socket.
    pub fn jailed(mut self, chroot: PathBuf) -> Result<ExecPaths, StateDirError> {
        self.chroot = Some(chroot);
        self.checked()
    }

    /// These paths, when the longest socket path of the execution (the
    /// VMM's API socket, or the agent's vsock listener) fits in a Unix
    /// socket's.
    pub fn checked(self) -> Result<ExecPaths, StateDirError> {
        let socket = [
            self.api_socket(),
            self.agent_socket(fcexec_guest_protocol::DEFAULT_PORT),
        ]
        .into_iter()
        .max_by_key(|p| p.as_os_str().len())
        .unwrap_or_default();
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(StateDirError::SocketPathTooLong {
                field: "execution_id",
                id: self
                    .data
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: socket,
                len,
            });
        }
        Ok(self)
    }

    /// The jailed VMM's chroot, if jailed.
    pub fn chroot(&self) -> Option<&Path> {
        self.chroot.as_deref()
    }

    /// The guest's console (serial) when the agent reports over vsock: a
    /// diagnostic log, never mixed into stdout.
    pub fn console(&self) -> PathBuf {
        self.data.join("console.log")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

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
            "-x",
            "--help",
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
        let dir = StateDir::open(root.path(), root.path(), "ex1").unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let err = StateDir::open(root.path(), root.path(), "ex1").unwrap_err();
        assert!(matches!(err, StateDirError::Locked(_)), "{err}");
        drop(dir);
        StateDir::open(root.path(), root.path(), "ex1").unwrap();
    }

    #[test]
    fn untrusted_directories_are_refused_and_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let open = |root: &Path| StateDir::open(root, root, "ex");
        // World-writable: refused, not chmod-ed.
        let open_dir = tmp.path().join("open");
        std::fs::create_dir(&open_dir).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open(&open_dir).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        let mode = std::fs::metadata(&open_dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o777);
        // A symbolic link in place of the root.
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = open(&link).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        // A file in place of the executor's directory.
        std::fs::write(real.join("ex"), b"").unwrap();
        let err = open(&real).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: needs root to chown a directory to another user");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let theirs = tmp.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let err = StateDir::open(&theirs, &theirs, "ex").unwrap_err();
        assert!(err.to_string().contains("owned by uid 65534"), "{err}");
    }

    #[test]
    fn long_ids_that_overflow_the_socket_path_are_rejected() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("d".repeat(60));
        let dir = StateDir::open(&deep, &deep, "ex").unwrap();
        let err = dir
            .execution(&"e".repeat(64))
            .unwrap()
            .checked()
            .unwrap_err();
        assert!(
            matches!(err, StateDirError::SocketPathTooLong { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("execution_id"));
        let ok = dir.execution("short").unwrap().checked().unwrap();
        assert!(ok.api_socket().starts_with(dir.path()));
    }

    #[test]
    fn lists_execution_directories() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::open(root.path(), root.path(), "ex").unwrap();
        for id in ["b", "a"] {
            dir.execution(id).unwrap().create().unwrap();
        }
        assert_eq!(dir.execution_ids(), ["a", "b"]);
        // In one tree, an execution with a result is not live.
        std::fs::write(dir.execution("a").unwrap().dir().join("result.json"), b"{}").unwrap();
        assert_eq!(dir.live_ids(), ["b"]);
    }

    #[test]
    fn runtime_and_data_are_apart_and_both_go_on_remove() {
        let (run, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let dir = StateDir::open(run.path(), data.path(), "ex").unwrap();
        assert!(run.path().join("ex/lock").exists());
        let paths = dir.execution("e").unwrap();
        paths.create().unwrap();
        assert!(paths.api_socket().starts_with(run.path()));
        assert!(paths.serial().starts_with(data.path()));
        assert!(paths.record().starts_with(data.path()));
        assert_eq!(
            paths.create().unwrap_err().kind(),
            std::io::ErrorKind::AlreadyExists
        );
        assert_eq!(dir.execution_ids(), ["e"]);
        assert_eq!(dir.live_ids(), ["e"]);
        paths.remove_runtime().unwrap();
        assert!(dir.live_ids().is_empty());
        assert!(!run.path().join("ex/e").exists() && data.path().join("ex/e").exists());
        paths.remove().unwrap();
        assert!(!data.path().join("ex/e").exists());
    }
}
