//! A read-only view of an executor's state directory, for a process that
//! does not own it.
//!
//! An [`crate::Executor`] locks `<root>/<executor id>` for as long as it lives
//! (see [`crate::state_dir`]), so a second process cannot open the same
//! executor while, say, a long `fcexec run` holds it. This module lets such a
//! process still look: it never takes the lock, never writes, and never
//! touches a VMM. What it sees is what the owner persisted:
//!
//! 1. [`list`] reads every `<execution id>/record.json` into a [`Summary`].
//!    A record that cannot be read (empty, truncated, garbage, an unknown
//!    version) is listed as a failed, corrupt execution with the reason, as
//!    the owning executor lists it (which is also what `rm` and `cleanup`
//!    act on); a directory without a record (a launch under way) is skipped.
//!    It reads every record (O(history)); [`list_live`] reads only those of
//!    the executions that may be live ([`crate::state_dir::live_ids`]).
//! 2. [`record`] reads one execution's record (its result once terminal).
//! 3. [`logs`] reads an execution's output:
//!    - in plain mode `serial.log` is stdout;
//!    - in agent mode, once the record is terminal, the `stdout` and
//!      `stderr` files the supervisor decoded;
//!    - in agent mode before that, `serial.log` itself, decoded here with a
//!      [`FrameDecoder`] and the record's key, in memory: the files are
//!      written only by a supervising executor, and there may be none (after
//!      `fcexec run -d`), or it may be in another process. When the record
//!      turns terminal the reader goes on in the files from where decoding
//!      stopped (decoding the same serial bytes gives the same streams, so
//!      nothing is printed twice). The decoding takes no output cap: past the
//!      owner's cap it shows more than the files will keep.
//!
//!    When following, it polls every [`POLL_INTERVAL`] until the record is
//!    terminal or no process holds the lock any more (nobody will settle the
//!    execution then; the caller may open an executor to re-attach). A
//!    caller that owns the executor says so ([`FileLogs::owned`]) and follows
//!    until the end.
//! 4. [`lock_holder`] finds the pid holding the directory's lock in
//!    `/proc/locks`, to name it in messages and to notice when it goes.
//!
//! Records are written atomically by the owner, so a reader sees either the
//! old record or the new one.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::config_drive::Key;
use crate::guest_protocol::{Event, FrameDecoder};
use crate::lifecycle::Phase;
use crate::logs::{tail_offset, LogChunk, LogOptions, LogStream};
use crate::record::ExecutionRecord;
use crate::result::ExecutionStatus;
use crate::spec::Mode;
use crate::state_dir::{check_id, StateDirError};

/// How often a follower looks for new output and a changed record.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

// `CHUNK`: the largest chunk [`FileLogs::next`] returns at once (and the
// most serial bytes decoded per step), as for an owner's logs.
use crate::logs::CHUNK;

/// While decoding for `--tail`, a stream's kept output is cut back to its
/// last lines whenever it grows past this, so memory stays bounded.
const TAIL_TRIM: usize = 1 << 20;

/// Why a read-only look failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The execution id is not a valid id.
    #[error(transparent)]
    InvalidId(#[from] StateDirError),
    /// No record of this execution exists.
    #[error("no execution {id:?} in {dir}")]
    NotFound {
        /// The execution id.
        id: String,
        /// The executor's directory.
        dir: PathBuf,
    },
    /// The record exists but cannot be read (see [`corrupt_reason`]); the
    /// owning executor lists the execution as failed for this reason, and
    /// `remove` deletes it.
    #[error("execution {id} is corrupt: {reason}")]
    Corrupt {
        /// The execution id.
        id: String,
        /// Why, naming the file.
        reason: String,
    },
}

/// One execution as its record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The execution id.
    pub execution_id: String,
    /// The node's job id (empty when the record is corrupt).
    pub job_id: String,
    /// The status the node's interface reports.
    pub status: ExecutionStatus,
    /// The lifecycle phase recorded.
    pub phase: Phase,
    /// Plain or agent mode.
    pub mode: Mode,
    /// Creation time, Unix milliseconds (for a corrupt record, the time its
    /// file was last written).
    pub created_ms: u64,
    /// End time, Unix milliseconds, once ended.
    pub finished_ms: Option<u64>,
    /// The VMM's pid, once spawned.
    pub pid: Option<u32>,
    /// The workload's exit code, once ended (-1: failed).
    pub exit_code: Option<i32>,
    /// Why it failed; empty when it did not (or has not ended).
    pub error_msg: String,
    /// True when it was killed from outside.
    pub killed: bool,
    /// Why its record cannot be read, when it cannot. It is then listed as
    /// its owning executor lists it: failed, exit code -1, and `error_msg`
    /// `corrupt execution: <reason>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<String>,
    /// The guest's address and published ports, while it has a network:
    /// `10.213.0.6 8080->80/tcp`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The VMM's jail (uid, chroot, cgroup), when it ran under the jailer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::jail::Isolation>,
}

/// An execution's network in a few words: the guest's address, then each
/// published port as `host->guest/protocol`.
pub fn describe_network(net: &fcexec_network::ExecutionNetwork) -> String {
    let mut text = net.guest_ip.to_string();
    for p in &net.ports {
        text.push_str(&format!(" {}->{}/{}", p.host, p.guest, p.protocol));
    }
    if !net.egress {
        text.push_str(" no-egress");
    }
    text
}

impl From<&ExecutionRecord> for Summary {
    fn from(r: &ExecutionRecord) -> Summary {
        let status = match &r.result {
            Some(result) => result.status(),
            None => r.phase.status(),
        };
        Summary {
            execution_id: r.execution_id.clone(),
            job_id: r.job_id.clone(),
            status,
            phase: r.phase,
            mode: r.mode,
            created_ms: r.created_ms,
            finished_ms: r.finished_ms,
            pid: r.pid,
            exit_code: r.result.as_ref().map(|x| x.exit_code),
            error_msg: r
                .result
                .as_ref()
                .map(|x| x.error_msg.clone())
                .unwrap_or_default(),
            killed: r.result.as_ref().is_some_and(|x| x.killed),
            corrupt: None,
            network: match r.phase.is_terminal() {
                true => None,
                false => r.network.as_ref().map(describe_network),
            },
            isolation: r.isolation.clone(),
        }
    }
}

impl Summary {
    /// An execution whose record cannot be read, for `reason` (see
    /// [`corrupt_reason`]), created (as far as can be told) at `created_ms`.
    pub fn corrupt(id: &str, reason: String, created_ms: u64) -> Summary {
        Summary {
            execution_id: id.to_string(),
            job_id: String::new(),
            status: ExecutionStatus::Failed,
            phase: Phase::Failed,
            mode: Mode::Plain,
            created_ms,
            finished_ms: None,
            pid: None,
            exit_code: Some(-1),
            error_msg: format!("corrupt execution: {reason}"),
            killed: false,
            corrupt: Some(reason),
            network: None,
            isolation: None,
        }
    }
}

/// Why the record at `path` cannot be read, worded as the owning executor's
/// recovery words it.
pub fn corrupt_reason(path: &Path, error: &std::io::Error) -> String {
    format!("its record {} cannot be read: {error}", path.display())
}

/// Every execution with a record under `executor_dir` (`<root>/<executor
/// id>`), oldest first; those whose record cannot be read are listed as
/// corrupt ([`Summary::corrupt`]). A directory without a record (a launch
/// under way) is skipped; a missing `executor_dir` has none.
pub fn list(executor_dir: &Path) -> Vec<Summary> {
    let Ok(entries) = std::fs::read_dir(executor_dir) else {
        return Vec::new();
    };
    let ids = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id("execution_id", id).is_ok());
    summaries(executor_dir, ids)
}

/// The live executions under `executor_dir` (`<data root>/<executor id>`),
/// found from `runtime_dir` (`<runtime root>/<executor id>`) as
/// [`crate::state_dir::live_ids`] finds them, so that only their records are
/// read (not the history's), oldest first. Those whose record says they
/// ended (a runtime directory on its way out) are left out, and so are
/// corrupt records: [`list`] shows them.
pub fn list_live(executor_dir: &Path, runtime_dir: &Path) -> Vec<Summary> {
    let ids = crate::state_dir::live_ids(runtime_dir, executor_dir);
    let mut live = summaries(executor_dir, ids.into_iter());
    live.retain(|s| s.corrupt.is_none() && !s.phase.is_terminal());
    live
}

/// The summaries of executions `ids` under `executor_dir`, oldest first.
fn summaries(executor_dir: &Path, ids: impl Iterator<Item = String>) -> Vec<Summary> {
    let mut all: Vec<Summary> = ids
        .filter_map(|id| {
            let path = executor_dir.join(&id).join("record.json");
            match ExecutionRecord::load(&path) {
                Ok(record) => Some(Summary::from(&record)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::debug!(%id, "skipping an execution without a record (a launch under way)");
                    None
                }
                Err(e) => {
                    tracing::debug!(%id, error = %e, "an execution's record cannot be read");
                    let created = modified_ms(&path).or_else(|| modified_ms(path.parent()?));
                    Some(Summary::corrupt(&id, corrupt_reason(&path, &e), created.unwrap_or(0)))
                }
            }
        })
        .collect();
    all.sort_by(|a, b| (a.created_ms, &a.execution_id).cmp(&(b.created_ms, &b.execution_id)));
    all
}

/// When `path` was last written, Unix milliseconds.
fn modified_ms(path: &Path) -> Option<u64> {
    let time = std::fs::metadata(path).and_then(|m| m.modified()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64)
}

/// The record of execution `id` under `executor_dir`.
pub fn record(executor_dir: &Path, id: &str) -> Result<ExecutionRecord, InspectError> {
    check_id("execution_id", id)?;
    let path = executor_dir.join(id).join("record.json");
    ExecutionRecord::load(&path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            InspectError::NotFound {
                id: id.to_string(),
                dir: executor_dir.to_path_buf(),
            }
        } else {
            InspectError::Corrupt {
                id: id.to_string(),
                reason: corrupt_reason(&path, &source),
            }
        }
    })
}

/// `result` (as a record holds it, without output) with the tails of the
/// execution's output, as [`crate::Executor::wait`] returns it (at most
/// 1 MiB of each stream, marked truncated when there was more).
pub fn with_output(
    executor_dir: &Path,
    record: &ExecutionRecord,
    result: crate::result::ExecutionResult,
) -> crate::result::ExecutionResult {
    const LIMIT: u64 = 1 << 20;
    let dir = executor_dir.join(&record.execution_id);
    let stdout = match record.mode {
        Mode::Plain => dir.join("serial.log"),
        Mode::Agent => dir.join("stdout"),
    };
    let (stdout, stdout_truncated) = crate::capture::read_tail(&stdout, LIMIT);
    let (stderr, stderr_truncated) = crate::capture::read_tail(&dir.join("stderr"), LIMIT);
    crate::result::ExecutionResult {
        stdout,
        stderr,
        stdout_truncated,
        stderr_truncated,
        ..result
    }
}

/// The pid holding the lock of `executor_dir`, from `/proc/locks`; `None`
/// when nobody holds it (or it cannot be told).
pub fn lock_holder(executor_dir: &Path) -> Option<u32> {
    let meta = std::fs::metadata(executor_dir.join("lock")).ok()?;
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    holder_in(&locks, meta.ino(), meta.dev())
}

/// Parses `/proc/locks` for the holder of an flock on inode `ino`. Lines look
/// like `3: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`; waiters (`->`) are
/// skipped. An entry on the same device wins over one that only shares the
/// inode number (overlay file systems may report another device).
fn holder_in(locks: &str, ino: u64, dev: u64) -> Option<u32> {
    let mut inode_only = None;
    for line in locks.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[1] != "FLOCK" {
            continue;
        }
        let (Ok(pid), Some((device, inode))) =
            (fields[4].parse::<u32>(), fields[5].rsplit_once(':'))
        else {
            continue;
        };
        if inode.parse::<u64>() != Ok(ino) {
            continue;
        }
        let same_dev = device.split_once(':').is_some_and(|(major, minor)| {
            let major = u64::from_str_radix(major, 16).ok();
            let minor = u64::from_str_radix(minor, 16).ok();
            major == Some(u64::from(libc::major(dev))) && minor == Some(u64::from(libc::minor(dev)))
        });
        if same_dev {
            return Some(pid);
        }
        inode_only.get_or_insert(pid);
    }
    inode_only
}

mod file_logs;

pub(crate) use file_logs::file_len;
pub use file_logs::{console_logs, logs, FileLogs};

#[cfg(test)]
mod tests;
