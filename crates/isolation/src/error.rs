//! What can go wrong with cgroups: every message names the file or cgroup and,
//! where there is one, the fix.

use std::path::PathBuf;
use std::time::Duration;

/// A cgroup operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup file could not be written.
    #[error("cannot write `{value}` to {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What was being written.
        value: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A controller's file is absent: the controller is not enabled there.
    #[error(
        "{} does not exist: the `{controller}` controller is not enabled for this cgroup \
         (on cgroup v2, add `+{controller}` to the parent's cgroup.subtree_control)",
        path.display()
    )]
    MissingFile {
        /// The file.
        path: PathBuf,
        /// Its controller.
        controller: String,
    },
    /// A cgroup directory could not be created.
    #[error("cannot create cgroup {}: {source} (this needs root and a writable cgroup mount)", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A cgroup directory could not be listed or removed.
    #[error("cannot remove cgroup {}: {source}", path.display())]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Processes survived being killed.
    #[error(
        "cgroup {} still holds pids {pids:?} {waited:?} after they were killed: \
         they may be stuck in uninterruptible sleep (state D); \
         remove the cgroup again later",
        path.display()
    )]
    Busy {
        /// The cgroup directory.
        path: PathBuf,
        /// The pids left.
        pids: Vec<u32>,
        /// How long removal waited.
        waited: Duration,
    },
    /// A process could not be signalled.
    #[error("cannot kill pid {pid} in cgroup {}: {source}", path.display())]
    Kill {
        /// The process.
        pid: u32,
        /// Its cgroup.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// v1 only, and a controller fcexec needs is not mounted.
    #[error(
        "cgroup v1 controller `{controller}` is not mounted: mount it \
         (mount -t cgroup -o {controller} cgroup /sys/fs/cgroup/{controller}) or use cgroup v2"
    )]
    V1ControllerMissing {
        /// The controller.
        controller: String,
    },
    /// Neither version has what fcexec needs.
    #[error(
        "no usable cgroup hierarchy: the cgroup v2 mount {} lacks {v2_missing} \
         (enable them in its cgroup.subtree_control, or boot with systemd.unified_cgroup_hierarchy=1), \
         and cgroup v1 controller `{controller}` is not mounted",
        v2_root.display()
    )]
    NoUsableHierarchy {
        /// The first v1 controller found missing.
        controller: String,
        /// The cgroup2 mount examined.
        v2_root: PathBuf,
        /// The controllers it lacks, comma-separated.
        v2_missing: String,
    },
    /// An execution id or parent path that cannot name a cgroup.
    #[error("{what} `{value}` cannot name a cgroup: {reason}")]
    InvalidName {
        /// `execution id` or `parent cgroup`.
        what: &'static str,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cgroup file held something this crate does not understand.
    #[error("unexpected content `{content}` in {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}
