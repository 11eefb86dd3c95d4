//! One execution's cgroup: create it with its limits, put processes in it,
//! take it down, and sweep away the ones nobody owns any more.
//!
//! The layout is `<mount>/<parent>/<id>`: on v2 one directory under the
//! unified root (`/sys/fs/cgroup/fcexec/<id>`), on v1 one per hierarchy
//! (`/sys/fs/cgroup/{cpu,cpuacct,memory,pids}/fcexec/<id>`, fewer where
//! controllers are mounted together). It is the layout the jailer uses for
//! `--parent-cgroup <parent> --id <id>`, so [`Cgroup::open`] works just as well
//! on a cgroup the jailer made.
//!
//! Removal is idempotent and does not trust the processes to be gone: `rmdir`,
//! and if the kernel says the cgroup is busy, kill what is in it
//! (`cgroup.kill` on v2, SIGKILL per pid otherwise), wait up to a grace
//! period for the kernel to let go, and `rmdir` again.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::CgroupError;
use crate::host::{CgroupHost, CgroupVersion};
use crate::limits::CgroupLimits;

/// The parent cgroup of every execution's cgroup (relative to each mount).
pub const DEFAULT_PARENT: &str = "fcexec";

/// How long [`Cgroup::remove`] callers usually let killed processes take to go.
pub const DEFAULT_REMOVE_GRACE: Duration = Duration::from_secs(2);

/// One directory of a cgroup and the controllers it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupDir {
    /// `cpu`, `memory`, ...; all of them on v2.
    pub(crate) controllers: Vec<String>,
    /// `<mount>/<parent>/<id>`.
    pub(crate) path: PathBuf,
}

/// One execution's cgroup (a handle: dropping it removes nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The execution id, the last path component.
    id: String,
    /// Which files to use.
    version: CgroupVersion,
    /// Its directories: one on v2, one per distinct mount on v1.
    pub(crate) dirs: Vec<CgroupDir>,
}

/// What [`sweep`] did.
#[derive(Debug, Default)]
pub struct SweepOutcome {
    /// Ids whose cgroups were removed.
    pub removed: Vec<String>,
    /// Ids whose cgroups could not be removed, and why.
    pub failed: Vec<(String, CgroupError)>,
}

impl Cgroup {
    /// The cgroup `<parent>/<id>` on `host`, whether or not it exists yet.
    /// Touches no file: use it to read or remove a cgroup the jailer made or
    /// one left from before a restart.
    pub fn open(host: &CgroupHost, parent: &str, id: &str) -> Result<Cgroup, CgroupError> {
        check_parent(parent)?;
        check_id(id)?;
        let relative = Path::new(parent).join(id);
        let dirs = host
            .dirs(&relative)
            .into_iter()
            .map(|(controllers, path)| CgroupDir {
                controllers: controllers.into_iter().map(String::from).collect(),
                path,
            })
            .collect();
        Ok(Cgroup {
            id: id.to_string(),
            version: host.version(),
            dirs,
        })
    }

    /// Creates `<parent>/<id>` on `host` (and the parent if needed) and writes
    /// `limits` into it. On v2 it first enables `cpu`, `memory` and `pids` in
    /// `cgroup.subtree_control` from the root down to the parent. A cgroup
    /// left over with the same id is reused and its limits rewritten. If a
    /// limit cannot be written, what was created is removed again.
    pub fn create(
        host: &CgroupHost,
        parent: &str,
        id: &str,
        limits: &CgroupLimits,
    ) -> Result<Cgroup, CgroupError> {
        let cgroup = Cgroup::open(host, parent, id)?;
        if let CgroupHost::V2 { root } = host {
            enable_controllers_down_to(root, Path::new(parent))?;
        }
        for dir in &cgroup.dirs {
            if let Some(up) = dir.path.parent() {
                std::fs::create_dir_all(up).map_err(|source| CgroupError::CreateDir {
                    path: up.to_path_buf(),
                    source,
                })?;
            }
            match std::fs::create_dir(&dir.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    tracing::warn!(cgroup = %dir.path.display(), "cgroup exists already; reusing it");
                }
                Err(source) => {
                    return Err(CgroupError::CreateDir {
                        path: dir.path.clone(),
                        source,
                    })
                }
            }
        }
        if let Err(e) = cgroup.write_limits(limits) {
            if let Err(cleanup) = cgroup.remove(Duration::ZERO) {
                tracing::warn!(error = %cleanup, "removing a half-made cgroup failed");
            }
            return Err(e);
        }
        tracing::info!(id, version = %host.version(), cores = limits.cores(), memory = limits.memory_max_bytes, "cgroup created");
        Ok(cgroup)
    }

    /// Writes `limits` into the cgroup's files.
    pub fn write_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        for (file, value) in limits.files(self.version) {
            let controller = controller_of(file);
            let dir = self.dir_of(controller)?;
            write_file(&dir.join(file), &value, controller)?;
        }
        Ok(())
    }

    /// The execution id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Which version of files it uses.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Its directories (one on v2).
    pub fn paths(&self) -> Vec<&Path> {
        self.dirs.iter().map(|d| d.path.as_path()).collect()
    }

    /// Whether any of its directories exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|d| d.path.is_dir())
    }

    /// The directory serving `controller`.
    pub(crate) fn dir_of(&self, controller: &str) -> Result<&Path, CgroupError> {
        self.dirs
            .iter()
            .find(|d| d.controllers.iter().any(|c| c == controller))
            .map(|d| d.path.as_path())
            .ok_or_else(|| CgroupError::V1ControllerMissing {
                controller: controller.to_string(),
            })
    }

    /// Moves process `pid` (all its threads) into the cgroup, in every hierarchy.
    pub fn add_pid(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            write_file(&dir.path.join("cgroup.procs"), &pid.to_string(), "cgroup")?;
        }
        tracing::debug!(id = %self.id, pid, "process moved into cgroup");
        Ok(())
    }

    /// Opens the cgroup's `cgroup.procs` files now, so that a child process
    /// can join the cgroup between fork and exec with
    /// [`CgroupJoin::join_current`] and never run a single instruction of
    /// the new program outside it (nor let a child of its own escape).
    pub fn joiner(&self) -> Result<CgroupJoin, CgroupError> {
        let mut files = Vec::with_capacity(self.dirs.len());
        for dir in &self.dirs {
            let path = dir.path.join("cgroup.procs");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|source| CgroupError::Write {
                    path,
                    value: "0".into(),
                    source,
                })?;
            files.push(file);
        }
        Ok(CgroupJoin {
            files: Arc::new(files),
        })
    }

    /// The pids in the cgroup, from every hierarchy, sorted, without duplicates.
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            let path = dir.path.join("cgroup.procs");
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(CgroupError::Read { path, source }),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let pid = line.trim().parse().map_err(|_| CgroupError::Parse {
                    path: path.clone(),
                    content: line.to_string(),
                })?;
                pids.push(pid);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Removes the cgroup. When processes remain, kills them and waits up
    /// to `grace` for the kernel to release the cgroup. Removing a cgroup
    /// that does not exist succeeds.
    pub fn remove(&self, grace: Duration) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut busy = self.try_rmdir()?;
        if busy.is_empty() {
            tracing::debug!(id = %self.id, "cgroup removed");
            return Ok(());
        }
        loop {
            self.kill_all()?;
            std::thread::sleep(Duration::from_millis(10));
            busy = self.try_rmdir()?;
            if busy.is_empty() {
                tracing::info!(id = %self.id, waited = ?start.elapsed(), "cgroup emptied and removed");
                return Ok(());
            }
            if start.elapsed() >= grace {
                let pids = self.pids().unwrap_or_default();
                return Err(CgroupError::Busy {
                    path: busy[0].clone(),
                    pids,
                    waited: start.elapsed(),
                });
            }
        }
    }

    /// `rmdir` of every directory still there; returns those the kernel
    /// called busy.
    fn try_rmdir(&self) -> Result<Vec<PathBuf>, CgroupError> {
        let mut busy = Vec::new();
        for dir in &self.dirs {
            match std::fs::remove_dir(&dir.path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => busy.push(dir.path.clone()),
                Err(source) => {
                    return Err(CgroupError::RemoveDir {
                        path: dir.path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(busy)
    }

    /// Kills everything in the cgroup: `cgroup.kill` where the kernel has it
    /// (v2, Linux 5.14+), SIGKILL to each pid otherwise.
    fn kill_all(&self) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            let kill_file = dir.path.join("cgroup.kill");
            if self.version == CgroupVersion::V2 && kill_file.exists() {
                match write_file(&kill_file, "1", "cgroup") {
                    Ok(()) => continue,
                    Err(e) => tracing::debug!(error = %e, "cgroup.kill failed; killing by pid"),
                }
            }
        }
        for pid in self.pids()? {
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(source) => {
                    let path = self
                        .dirs
                        .first()
                        .map(|d| d.path.clone())
                        .unwrap_or_default();
                    return Err(CgroupError::Kill { pid, path, source });
                }
            }
        }
        Ok(())
    }
}

/// The open `cgroup.procs` files of a cgroup, for joining it between fork and
/// exec. Cheap to clone.
///
/// ```no_run
/// # fn f(cgroup: &fcexec_isolation::Cgroup) -> Result<(), Box<dyn std::error::Error>> {
/// use std::os::unix::process::CommandExt;
/// let join = cgroup.joiner()?;
/// let mut cmd = std::process::Command::new("/usr/local/bin/jailer");
/// // SAFETY: join_current only makes write(2) calls on already open files.
/// unsafe { cmd.pre_exec(move || join.join_current()) };
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct CgroupJoin {
    /// One `cgroup.procs` per hierarchy, opened for writing.
    files: Arc<Vec<File>>,
}

impl CgroupJoin {
    /// Moves the calling process into the cgroup by writing `0` to each
    /// `cgroup.procs`. Async-signal-safe (no allocation, only `write(2)`), so
    /// it may run in a `pre_exec` hook.
    pub fn join_current(&self) -> std::io::Result<()> {
        for file in self.files.iter() {
            let fd: RawFd = file.as_raw_fd();
            // SAFETY: writing one byte from a static buffer to an open fd.
            let n = unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Removes every cgroup under `<parent>/` whose id is not in `keep`, killing
/// what is left in them. Every failure is reported, none stops the sweep.
pub fn sweep(
    host: &CgroupHost,
    parent: &str,
    keep: &[&str],
    grace: Duration,
) -> Result<SweepOutcome, CgroupError> {
    check_parent(parent)?;
    let mut ids: Vec<String> = Vec::new();
    for (_, dir) in host.dirs(Path::new(parent)) {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(CgroupError::Read { path: dir, source }),
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                if let Some(name) = entry.file_name().to_str() {
                    ids.push(name.to_string());
                }
            }
        }
    }
    ids.sort();
    ids.dedup();
    let mut outcome = SweepOutcome::default();
    for id in ids.into_iter().filter(|id| !keep.contains(&id.as_str())) {
        let result = Cgroup::open(host, parent, &id).and_then(|c| c.remove(grace));
        match result {
            Ok(()) => {
                tracing::info!(id, "swept stale cgroup");
                outcome.removed.push(id);
            }
            Err(e) => {
                tracing::warn!(id, error = %e, "cannot sweep cgroup");
                outcome.failed.push((id, e));
            }
        }
    }
    Ok(outcome)
}

/// On v2, enables [`crate::host::V2_CONTROLLERS`] in `cgroup.subtree_control`
/// of the root and of every directory down to `parent` (created as needed),
/// writing only the ones not already enabled.
fn enable_controllers_down_to(root: &Path, parent: &Path) -> Result<(), CgroupError> {
    let mut dir = root.to_path_buf();
    let mut components = parent.components();
    loop {
        let file = dir.join("cgroup.subtree_control");
        let enabled = std::fs::read_to_string(&file).unwrap_or_default();
        let enabled: Vec<&str> = enabled.split_whitespace().collect();
        let missing: Vec<String> = crate::host::V2_CONTROLLERS
            .iter()
            .filter(|c| !enabled.contains(c))
            .map(|c| format!("+{c}"))
            .collect();
        if !missing.is_empty() {
            write_file(&file, &missing.join(" "), "cgroup")?;
        }
        let Some(next) = components.next() else {
            return Ok(());
        };
        dir.push(next);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(CgroupError::CreateDir { path: dir, source }),
        }
    }
}

/// `cpu` for `cpu.max`, `memory` for `memory.limit_in_bytes`.
pub(crate) fn controller_of(file: &str) -> &str {
    file.split('.').next().unwrap_or(file)
}

/// Writes `value` to a cgroup file in one `write(2)`.
pub(crate) fn write_file(path: &Path, value: &str, controller: &str) -> Result<(), CgroupError> {
    // `create` only matters for fake roots in tests; cgroupfs files exist or
    // the controller is off, which the error below says.
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, value.as_bytes()));
    result.map_err(|source| {
        if !path.exists() {
            CgroupError::MissingFile {
                path: path.to_path_buf(),
                controller: controller.to_string(),
            }
        } else {
            CgroupError::Write {
                path: path.to_path_buf(),
                value: value.to_string(),
                source,
            }
        }
    })
}

/// An execution id is one path component: 1 to 64 of `[A-Za-z0-9_.-]`, not
/// starting with a dot (the jailer's own rule is stricter: alphanumerics and
/// `-`).
fn check_id(id: &str) -> Result<(), CgroupError> {
    check_component(id).map_err(|reason| CgroupError::InvalidName {
        what: "execution id",
        value: id.to_string(),
        reason,
    })
}

/// A parent is a relative path of such components (`fcexec`, `a/b`).
fn check_parent(parent: &str) -> Result<(), CgroupError> {
    let invalid = |reason| CgroupError::InvalidName {
        what: "parent cgroup",
        value: parent.to_string(),
        reason,
    };
    if parent.is_empty() {
        return Err(invalid("it is empty"));
    }
    parent
        .split('/')
        .try_for_each(check_component)
        .map_err(invalid)
}

fn check_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("it must have 1 to 64 characters");
    }
    if name.starts_with('.') {
        return Err("it must not start with a dot");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        return Err("only letters, digits, `_`, `.` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests;
