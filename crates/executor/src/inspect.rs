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
//! 2. [`record`] reads one execution's record (its result once terminal).
//! 3. [`logs`] reads an execution's output files (`stdout` and `stderr` in
//!    agent mode; `serial.log` is stdout in plain mode) and, when following,
//!    polls them and the record every [`POLL_INTERVAL`] until the record is
//!    terminal or no process holds the lock any more (nobody will write
//!    further output then; the caller may open an executor to re-attach).
//! 4. [`lock_holder`] finds the pid holding the directory's lock in
//!    `/proc/locks`, to name it in messages and to notice when it goes.
//!
//! Records are written atomically by the owner, so a reader sees either the
//! old record or the new one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::lifecycle::Phase;
use crate::logs::{tail_offset, LogChunk, LogOptions, LogStream};
use crate::record::ExecutionRecord;
use crate::result::ExecutionStatus;
use crate::spec::Mode;
use crate::state_dir::{check_id, StateDirError};

/// How often a follower looks for new output and a changed record.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The largest chunk [`FileLogs::next`] returns at once.
const CHUNK: u64 = 64 * 1024;

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
    /// The record exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The record's path.
        path: PathBuf,
        /// The I/O or decoding error.
        #[source]
        source: std::io::Error,
    },
}

/// One execution as its record shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The execution id.
    pub execution_id: String,
    /// The node's job id.
    pub job_id: String,
    /// The status the node's interface reports.
    pub status: ExecutionStatus,
    /// The lifecycle phase recorded.
    pub phase: Phase,
    /// Plain or agent mode.
    pub mode: Mode,
    /// Creation time, Unix milliseconds.
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
        }
    }
}

/// Every execution with a readable record under `executor_dir`
/// (`<root>/<executor id>`), oldest first. Unreadable ones are skipped, as
/// recovery skips them; a missing directory has none.
pub fn list(executor_dir: &Path) -> Vec<Summary> {
    let Ok(entries) = std::fs::read_dir(executor_dir) else {
        return Vec::new();
    };
    let mut all: Vec<Summary> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id("execution_id", id).is_ok())
        .filter_map(|id| match ExecutionRecord::load(&executor_dir.join(&id).join("record.json")) {
            Ok(record) => Some(Summary::from(&record)),
            Err(e) => {
                tracing::debug!(%id, error = %e, "skipping an execution without a readable record");
                None
            }
        })
        .collect();
    all.sort_by(|a, b| (a.created_ms, &a.execution_id).cmp(&(b.created_ms, &b.execution_id)));
    all
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
            InspectError::Io { path, source }
        }
    })
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

/// One output file being read.
#[derive(Debug)]
struct Cursor {
    stream: LogStream,
    path: PathBuf,
    offset: u64,
}

/// An execution's output read from its files (see the module doc).
#[derive(Debug)]
pub struct FileLogs {
    executor_dir: PathBuf,
    id: String,
    cursors: [Cursor; 2],
    follow: bool,
    /// Set once the record was seen terminal or the lock free: one last read
    /// of the files, then the end.
    last_pass: bool,
}

/// Opens the output of execution `id` under `executor_dir`.
pub fn logs(executor_dir: &Path, id: &str, options: LogOptions) -> Result<FileLogs, InspectError> {
    let record = record(executor_dir, id)?;
    let dir = executor_dir.join(id);
    let stdout = match record.mode {
        Mode::Plain => dir.join("serial.log"),
        Mode::Agent => dir.join("stdout"),
    };
    let start = |path: &Path| {
        let end = file_len(path);
        match options.tail {
            Some(lines) => tail_offset(path, end, lines),
            None => 0,
        }
    };
    let stderr = dir.join("stderr");
    let cursors = [
        Cursor {
            stream: LogStream::Stdout,
            offset: start(&stdout),
            path: stdout,
        },
        Cursor {
            stream: LogStream::Stderr,
            offset: start(&stderr),
            path: stderr,
        },
    ];
    Ok(FileLogs {
        executor_dir: executor_dir.to_path_buf(),
        id: id.to_string(),
        cursors,
        follow: options.follow,
        last_pass: false,
    })
}

impl FileLogs {
    /// The next chunk of output, or `None` at the end: at once when not
    /// following, else once the execution ended (or nobody supervises it).
    pub async fn next(&mut self) -> Option<std::io::Result<LogChunk>> {
        loop {
            for cursor in &mut self.cursors {
                match read_new(cursor) {
                    Ok(None) => {}
                    Ok(Some(chunk)) => return Some(Ok(chunk)),
                    Err(e) => return Some(Err(e)),
                }
            }
            if !self.follow || self.last_pass {
                return None;
            }
            let terminal = record(&self.executor_dir, &self.id)
                .map(|r| r.phase.is_terminal())
                // A removed execution writes no more output.
                .unwrap_or(true);
            if terminal || lock_holder(&self.executor_dir).is_none() {
                self.last_pass = true;
                continue;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Bytes of (stdout, stderr) read so far, counted from the start of each file.
    pub fn offsets(&self) -> (u64, u64) {
        (self.cursors[0].offset, self.cursors[1].offset)
    }
}

/// Reads up to [`CHUNK`] new bytes of a cursor's file; `None` when there are none.
fn read_new(cursor: &mut Cursor) -> std::io::Result<Option<LogChunk>> {
    let end = file_len(&cursor.path);
    if cursor.offset >= end {
        return Ok(None);
    }
    let mut file = File::open(&cursor.path)?;
    file.seek(SeekFrom::Start(cursor.offset))?;
    let mut data = Vec::new();
    file.take((end - cursor.offset).min(CHUNK))
        .read_to_end(&mut data)?;
    if data.is_empty() {
        return Ok(None);
    }
    cursor.offset += data.len() as u64;
    Ok(Some(LogChunk {
        stream: cursor.stream,
        data,
    }))
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RECORD_VERSION;
    use crate::result::ExecutionResult;

    fn save(dir: &Path, id: &str, phase: Phase, mode: Mode, result: Option<ExecutionResult>) {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        ExecutionRecord {
            version: RECORD_VERSION,
            job_id: format!("job-{id}"),
            execution_id: id.into(),
            phase,
            mode,
            key: None,
            pid: None,
            pid_start_time: None,
            cancel_requested: false,
            outputs: vec![],
            results_dir: None,
            created_ms: id.len() as u64,
            finished_ms: None,
            persist_ms: 0,
            mem_mib: 0,
            timeout_ms: None,
            result,
        }
        .save(&dir.join(id).join("record.json"))
        .unwrap();
    }

    #[test]
    fn lists_records_oldest_first_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "bb", Phase::Running, Mode::Agent, None);
        save(
            dir.path(),
            "a",
            Phase::Failed,
            Mode::Plain,
            Some(ExecutionResult::killed("x")),
        );
        std::fs::create_dir(dir.path().join("no-record")).unwrap();
        std::fs::write(dir.path().join("lock"), b"").unwrap();
        let all = list(dir.path());
        let ids: Vec<&str> = all.iter().map(|s| s.execution_id.as_str()).collect();
        assert_eq!(ids, ["a", "bb"]);
        assert_eq!(all[0].status, ExecutionStatus::Failed);
        assert_eq!((all[0].exit_code, all[0].killed), (Some(-1), true));
        assert_eq!(all[1].status, ExecutionStatus::Running);
        assert_eq!(all[1].exit_code, None);
        assert!(list(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn record_rejects_bad_ids_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            record(dir.path(), "../x"),
            Err(InspectError::InvalidId(_))
        ));
        assert!(matches!(
            record(dir.path(), "x"),
            Err(InspectError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn reads_plain_serial_as_stdout_with_tail() {
        let dir = tempfile::tempdir().unwrap();
        save(
            dir.path(),
            "p",
            Phase::Succeeded,
            Mode::Plain,
            Some(ExecutionResult::new(0)),
        );
        std::fs::write(dir.path().join("p/serial.log"), b"one\ntwo\n").unwrap();
        let options = LogOptions {
            follow: true,
            tail: Some(1),
        };
        let mut logs = logs(dir.path(), "p", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data.as_slice()),
            (LogStream::Stdout, &b"two\n"[..])
        );
        assert!(logs.next().await.is_none());
        assert_eq!(logs.offsets(), (8, 0));
    }

    #[tokio::test]
    async fn follow_ends_when_nobody_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "g", Phase::Running, Mode::Agent, None);
        std::fs::write(dir.path().join("g/stderr"), b"err").unwrap();
        std::fs::write(dir.path().join("lock"), b"").unwrap();
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(dir.path(), "g", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(chunk.stream, LogStream::Stderr);
        // Not terminal, but unlocked: one last pass, then the end.
        assert!(logs.next().await.is_none());
    }

    #[test]
    fn finds_the_lock_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(dir.path()), None);
        let state = crate::state_dir::StateDir::open(dir.path(), dir.path(), "ex").unwrap();
        assert_eq!(lock_holder(state.path()), Some(std::process::id()));
        drop(state);
        assert_eq!(lock_holder(&dir.path().join("ex")), None);
    }

    #[test]
    fn parses_proc_locks() {
        let dev = libc::makedev(0, 0x1a);
        let text = "1: POSIX  ADVISORY  WRITE 10 00:1a:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 20 08:01:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 30 00:1a:77 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 40 00:1a:77 0 EOF\n";
        assert_eq!(holder_in(text, 77, dev), Some(40));
        assert_eq!(holder_in(text, 77, libc::makedev(9, 9)), Some(20));
        assert_eq!(holder_in(text, 78, dev), None);
    }
}
