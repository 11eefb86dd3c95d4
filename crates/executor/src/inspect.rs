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

/// The largest chunk [`FileLogs::next`] returns at once (and the most serial
/// bytes decoded per step).
const CHUNK: u64 = 64 * 1024;

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
    let mut all: Vec<Summary> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|id| check_id("execution_id", id).is_ok())
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

/// One output file being read.
#[derive(Debug)]
struct Cursor {
    stream: LogStream,
    path: PathBuf,
    offset: u64,
}

/// An agent-mode `serial.log` being decoded in memory.
#[derive(Debug)]
struct SerialReader {
    path: PathBuf,
    /// Serial bytes decoded so far.
    offset: u64,
    decoder: FrameDecoder,
    /// Bytes of (stdout, stderr) decoded so far.
    decoded: [u64; 2],
}

/// Where output is read from.
#[derive(Debug)]
enum Reader {
    /// Output files (stdout, stderr).
    Files([Cursor; 2]),
    /// The serial console, decoded; the files are not complete yet.
    Serial(SerialReader),
}

/// An execution's output, read without owning its executor (see the module
/// doc): from its files, or decoded from its serial console.
#[derive(Debug)]
pub struct FileLogs {
    executor_dir: PathBuf,
    /// Where the owner's lock is (the runtime directory).
    lock_dir: PathBuf,
    id: String,
    reader: Reader,
    /// Output read but not returned yet.
    pending: VecDeque<LogChunk>,
    follow: bool,
    /// True when the caller owns the executor (see [`FileLogs::owned`]).
    owned: bool,
    /// Set once the record was seen terminal or the lock free: one last read,
    /// then the end.
    last_pass: bool,
}

/// Opens the output of execution `id` under `executor_dir`.
pub fn logs(executor_dir: &Path, id: &str, options: LogOptions) -> Result<FileLogs, InspectError> {
    let record = record(executor_dir, id)?;
    let dir = executor_dir.join(id);
    let key = match record.key.as_deref().map(str::parse::<Key>) {
        Some(Ok(key)) => Some(key),
        Some(Err(e)) => {
            tracing::warn!(%id, error = %e, "the record's key is unusable; reading the output files");
            None
        }
        None => None,
    };
    let mut logs = FileLogs {
        lock_dir: executor_dir.to_path_buf(),
        executor_dir: executor_dir.to_path_buf(),
        id: id.to_string(),
        reader: Reader::Files(file_cursors(&dir, record.mode, [0, 0])),
        pending: VecDeque::new(),
        follow: options.follow,
        owned: false,
        last_pass: false,
    };
    match (record.mode, key) {
        (Mode::Agent, Some(key)) if !record.phase.is_terminal() => {
            logs.reader = Reader::Serial(SerialReader {
                path: dir.join("serial.log"),
                offset: 0,
                decoder: FrameDecoder::new(key),
                decoded: [0, 0],
            });
            if let Some(lines) = options.tail {
                logs.decode_tail(lines)
                    .map_err(|source| InspectError::Corrupt {
                        id: id.to_string(),
                        reason: format!(
                            "its serial output {} cannot be read: {source}",
                            dir.join("serial.log").display()
                        ),
                    })?;
            }
        }
        _ => {
            if let (Some(lines), Reader::Files(cursors)) = (options.tail, &mut logs.reader) {
                for cursor in cursors {
                    cursor.offset = tail_offset(&cursor.path, file_len(&cursor.path), lines);
                }
            }
        }
    }
    Ok(logs)
}

/// The cursors of an execution's output files, at `offsets`.
fn file_cursors(dir: &Path, mode: Mode, offsets: [u64; 2]) -> [Cursor; 2] {
    let stdout = match mode {
        Mode::Plain => dir.join("serial.log"),
        Mode::Agent => dir.join("stdout"),
    };
    [
        Cursor {
            stream: LogStream::Stdout,
            path: stdout,
            offset: offsets[0],
        },
        Cursor {
            stream: LogStream::Stderr,
            path: dir.join("stderr"),
            offset: offsets[1],
        },
    ]
}

impl FileLogs {
    /// The next chunk of output, or `None` at the end: at once when not
    /// following, else once the execution ended (or nobody supervises it).
    pub async fn next(&mut self) -> Option<std::io::Result<LogChunk>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(Ok(chunk));
            }
            match self.read() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Some(Err(e)),
            }
            if !self.follow || self.last_pass {
                return None;
            }
            let terminal = record(&self.executor_dir, &self.id)
                .map(|r| r.phase.is_terminal())
                // A removed execution writes no more output.
                .unwrap_or(true);
            if terminal {
                // The supervisor wrote the files in full before the record
                // said so: go on there, from where decoding stopped.
                if let Reader::Serial(serial) = &self.reader {
                    let dir = self.executor_dir.join(&self.id);
                    self.reader = Reader::Files(file_cursors(&dir, Mode::Agent, serial.decoded));
                }
                self.last_pass = true;
                continue;
            }
            if !self.owned && lock_holder(&self.lock_dir).is_none() {
                self.last_pass = true;
                continue;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Looks for the owner's lock in `runtime_dir` (`<runtime root>/<executor
    /// id>`), when it is not the directory the output is read from.
    pub fn locked_in(mut self, runtime_dir: &Path) -> FileLogs {
        self.lock_dir = runtime_dir.to_path_buf();
        self
    }

    /// For a caller that owns the executor, whose supervisor settles the
    /// execution: following goes on until the record is terminal, without
    /// looking for the lock's holder.
    pub fn owned(mut self) -> FileLogs {
        self.owned = true;
        self
    }

    /// Where in each stream (stdout, stderr) the output [`FileLogs::next`]
    /// returns next starts, counted from the stream's start (which is the
    /// start of its file, once written). Right after [`logs`], what `tail`
    /// cut off.
    pub fn offsets(&self) -> (u64, u64) {
        let mut at = match &self.reader {
            Reader::Files(cursors) => [cursors[0].offset, cursors[1].offset],
            Reader::Serial(serial) => serial.decoded,
        };
        for chunk in &self.pending {
            at[stream_index(chunk.stream)] -= chunk.data.len() as u64;
        }
        (at[0], at[1])
    }

    /// Reads what is new into `pending`: one chunk of a file, or one step
    /// of the serial output. False when there was nothing new.
    fn read(&mut self) -> std::io::Result<bool> {
        match &mut self.reader {
            Reader::Files(cursors) => {
                for cursor in cursors {
                    if let Some(chunk) = read_new(cursor)? {
                        self.pending.push_back(chunk);
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            Reader::Serial(serial) => {
                let Some(events) = serial.step()? else {
                    return Ok(false);
                };
                for event in events {
                    let (stream, data) = match event {
                        Event::Stdout(data) => (LogStream::Stdout, data),
                        Event::Stderr(data) => (LogStream::Stderr, data),
                        Event::ProtocolError(error) => {
                            tracing::debug!(%error, "guest protocol error");
                            continue;
                        }
                        _ => continue,
                    };
                    serial.decoded[stream_index(stream)] += data.len() as u64;
                    match self.pending.back_mut() {
                        Some(last) if last.stream == stream => last.data.extend(data),
                        _ => self.pending.push_back(LogChunk { stream, data }),
                    }
                }
                Ok(true)
            }
        }
    }

    /// Decodes the serial output to its current end and keeps only the last
    /// `lines` lines of each stream, to be returned first.
    fn decode_tail(&mut self, lines: usize) -> std::io::Result<()> {
        let mut kept: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
        while self.read()? {
            for chunk in self.pending.drain(..) {
                let buf = &mut kept[stream_index(chunk.stream)];
                buf.extend(chunk.data);
                if buf.len() > TAIL_TRIM {
                    buf.drain(..tail_start(buf, lines));
                }
            }
        }
        for (i, mut buf) in kept.into_iter().enumerate() {
            buf.drain(..tail_start(&buf, lines));
            if !buf.is_empty() {
                let stream = [LogStream::Stdout, LogStream::Stderr][i];
                self.pending.push_back(LogChunk { stream, data: buf });
            }
        }
        Ok(())
    }
}

impl SerialReader {
    /// Decodes up to [`CHUNK`] new serial bytes; `None` when there are none.
    fn step(&mut self) -> std::io::Result<Option<Vec<Event>>> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            // The VMM has not written anything yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.take(CHUNK).read_to_end(&mut bytes)?;
        if bytes.is_empty() {
            return Ok(None);
        }
        self.offset += bytes.len() as u64;
        Ok(Some(self.decoder.push(&bytes)))
    }
}

fn stream_index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

/// Where the last `lines` lines of `data` start (a final newline ends the
/// last line; it does not start a new one), as [`tail_offset`] counts.
fn tail_start(data: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return data.len();
    }
    let body = data.strip_suffix(b"\n").unwrap_or(data);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, &b)| b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1)
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
mod tests_support {
    //! Records written as an owner writes them.

    use super::*;
    use crate::record::RECORD_VERSION;
    use crate::result::ExecutionResult;

    pub fn record_of(
        id: &str,
        phase: Phase,
        mode: Mode,
        result: Option<ExecutionResult>,
    ) -> ExecutionRecord {
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
    }

    pub fn write(dir: &Path, record: &ExecutionRecord) {
        let id = &record.execution_id;
        std::fs::create_dir_all(dir.join(id)).unwrap();
        record.save(&dir.join(id).join("record.json")).unwrap();
    }

    pub fn save(dir: &Path, id: &str, phase: Phase, mode: Mode, result: Option<ExecutionResult>) {
        write(dir, &record_of(id, phase, mode, result));
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;
    use crate::result::ExecutionResult;

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

#[cfg(test)]
mod unsupervised_tests {
    //! Corrupt records, and agent-mode output decoded from the serial console.

    use std::os::fd::AsRawFd;

    use super::tests_support::*;
    use super::*;
    use crate::guest_protocol::{encode_frame, FrameKind};
    use crate::result::ExecutionResult;

    const KEY: Key = Key::from_bytes([7; 16]);

    /// An agent-mode record carrying [`KEY`].
    fn save_agent(dir: &Path, id: &str, phase: Phase, result: Option<ExecutionResult>) {
        let mut record = record_of(id, phase, Mode::Agent, result);
        record.key = Some(KEY.to_hex());
        write(dir, &record);
    }

    /// The agent's frames, numbered from `first`.
    fn frames(first: u32, frames: &[(FrameKind, &str)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (seq, (kind, payload)) in (first..).zip(frames) {
            bytes.extend(encode_frame(&KEY, seq, *kind, payload.as_bytes()));
        }
        bytes
    }

    fn append(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    /// Holds `dir`'s lock as an owning executor does, while the file lives.
    fn hold_lock(dir: &Path) -> File {
        let file = File::create(dir.join("lock")).unwrap();
        // SAFETY: flock on an fd we own; non-blocking.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(locked, 0);
        file
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    async fn collect(logs: &mut FileLogs) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.unwrap();
            match chunk.stream {
                LogStream::Stdout => out.extend(chunk.data),
                LogStream::Stderr => err.extend(chunk.data),
            }
        }
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn corrupt_records_are_listed_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(d, "good", Phase::Running, Mode::Agent, None);
        let cases: [(&str, &[u8]); 3] = [
            ("empty", b""),
            ("garbage", b"\x00\xffnot json"),
            ("cut", br#"{"version": 1, "job_id": "j", "execution_"#),
        ];
        for (id, bytes) in cases {
            std::fs::create_dir(d.join(id)).unwrap();
            std::fs::write(d.join(id).join("record.json"), bytes).unwrap();
        }
        let mut future = record_of("future", Phase::Running, Mode::Plain, None);
        future.version = 99;
        write(d, &future);
        save(d, "bad-end", Phase::Running, Mode::Plain, None);
        std::fs::write(d.join("bad-end/result.json"), b"{").unwrap();
        std::fs::create_dir(d.join("launching")).unwrap();

        let all = list(d);
        let mut ids: Vec<&str> = all.iter().map(|s| s.execution_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["bad-end", "cut", "empty", "future", "garbage", "good"]
        );
        for s in all.iter().filter(|s| s.execution_id != "good") {
            let path = d.join(&s.execution_id).join("record.json");
            let reason = s.corrupt.as_deref().unwrap_or_else(|| panic!("{s:?}"));
            assert!(
                reason.starts_with(&format!("its record {} cannot be read: ", path.display())),
                "{reason}"
            );
            assert_eq!(s.error_msg, format!("corrupt execution: {reason}"));
            assert_eq!(
                (s.status, s.phase),
                (ExecutionStatus::Failed, Phase::Failed)
            );
            assert_eq!((s.exit_code, s.killed), (Some(-1), false));
            assert_eq!(s.job_id, "");
            assert!(s.created_ms > 0, "the record file's time: {s:?}");
            match record(d, &s.execution_id) {
                Err(e @ InspectError::Corrupt { .. }) => assert_eq!(
                    e.to_string(),
                    format!("execution {} is corrupt: {reason}", s.execution_id)
                ),
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                logs(d, &s.execution_id, LogOptions::default()),
                Err(InspectError::Corrupt { .. })
            ));
        }
        let future = all.iter().find(|s| s.execution_id == "future").unwrap();
        assert!(future.error_msg.contains("version 99"), "{future:?}");
        let json = serde_json::to_value(&all).unwrap();
        for entry in json.as_array().unwrap() {
            let corrupt = entry["execution_id"] != "good";
            assert_eq!(entry.get("corrupt").is_some(), corrupt, "{entry}");
        }
    }

    #[tokio::test]
    async fn unsupervised_agent_output_is_decoded_from_the_serial_console() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "a", Phase::Running, None);
        let serial = d.join("a/serial.log");
        append(&serial, b"[    0.1] kernel says hi\n");
        append(
            &serial,
            &frames(
                0,
                &[
                    (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                    (FrameKind::Out, "first\n"),
                ],
            ),
        );
        // A frame with another key is console text.
        let other = Key::from_bytes([9; 16]);
        append(
            &serial,
            &encode_frame(&other, 2, FrameKind::Out, b"forged\n"),
        );
        append(&serial, &frames(2, &[(FrameKind::Err, "oops")]));
        // An unfinished line may still become a frame: not decoded yet.
        let last = frames(3, &[(FrameKind::Out, "later\n")]);
        append(&serial, &last[..last.len() - 1]);
        // Files a supervisor left from an earlier decoding are not read.
        std::fs::write(d.join("a/stdout"), b"stale").unwrap();
        let before = names(&d.join("a"));

        let mut once = logs(d, "a", LogOptions::default()).unwrap();
        assert_eq!(once.offsets(), (0, 0));
        assert_eq!(collect(&mut once).await, ("first\n".into(), "oops".into()));
        assert_eq!(once.offsets(), (6, 4));

        // Following, with nobody holding the lock: up to the end, then done.
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut followed = logs(d, "a", options).unwrap();
        assert_eq!(
            collect(&mut followed).await,
            ("first\n".into(), "oops".into())
        );
        assert_eq!(names(&d.join("a")), before, "a reader writes nothing");
    }

    #[tokio::test]
    async fn a_follower_goes_on_in_the_files_once_the_record_is_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let _lock = hold_lock(d);
        save_agent(d, "f", Phase::Running, None);
        let serial = d.join("f/serial.log");
        append(
            &serial,
            &frames(
                0,
                &[
                    (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                    (FrameKind::Out, "one\n"),
                    (FrameKind::Err, "e1\n"),
                ],
            ),
        );
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(d, "f", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data),
            (LogStream::Stdout, b"one\n".to_vec())
        );
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data),
            (LogStream::Stderr, b"e1\n".to_vec())
        );

        // The last frame comes without its newline (the VM stopped): the
        // supervisor decodes it at the end of the stream, and writes the
        // files before the record says the end.
        let end = async {
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            let rest = frames(3, &[(FrameKind::Out, "two\n")]);
            append(&serial, &rest[..rest.len() - 1]);
            std::fs::write(d.join("f/stdout"), b"one\ntwo\n").unwrap();
            std::fs::write(d.join("f/stderr"), b"e1\n").unwrap();
            let mut record = record_of("f", Phase::Succeeded, Mode::Agent, None);
            record.result = Some(ExecutionResult::new(0));
            record.save_outcome(&d.join("f/record.json")).unwrap();
        };
        let (rest, ()) = tokio::join!(collect(&mut logs), end);
        assert_eq!(rest, ("two\n".into(), String::new()));
        assert_eq!(logs.offsets(), (8, 3));
    }

    #[tokio::test]
    async fn an_owner_follows_to_the_end_whoever_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "o", Phase::Running, None);
        let hello = (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t");
        append(
            &d.join("o/serial.log"),
            &frames(0, &[hello, (FrameKind::Out, "a\n")]),
        );
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(d, "o", options).unwrap().owned();
        let end = async {
            tokio::time::sleep(POLL_INTERVAL * 3).await;
            append(
                &d.join("o/serial.log"),
                &frames(2, &[(FrameKind::Out, "b\n")]),
            );
            std::fs::write(d.join("o/stdout"), b"a\nb\n").unwrap();
            let mut record = record_of("o", Phase::Failed, Mode::Agent, None);
            record.result = Some(ExecutionResult::killed("cancelled"));
            record.save_outcome(&d.join("o/record.json")).unwrap();
        };
        let (all, ()) = tokio::join!(collect(&mut logs), end);
        assert_eq!(all, ("a\nb\n".into(), String::new()));
    }

    #[tokio::test]
    async fn tail_of_decoded_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "t", Phase::Running, None);
        let mut serial = frames(
            0,
            &[
                (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                (FrameKind::Out, "a\n"),
                (FrameKind::Err, "x\ny\n"),
                (FrameKind::Out, "b\nc"),
                (FrameKind::Out, "\n"),
            ],
        );
        // Enough more that the kept tail is cut back while decoding.
        let line = format!("{}\n", "z".repeat(2999));
        let mut seq = 5;
        while (seq as usize - 5) * line.len() <= 2 * TAIL_TRIM {
            serial.extend(encode_frame(&KEY, seq, FrameKind::Err, line.as_bytes()));
            seq += 1;
        }
        let err_len = 4 + (seq as u64 - 5) * line.len() as u64;
        serial.extend(encode_frame(&KEY, seq, FrameKind::Err, b"last\n"));
        std::fs::write(d.join("t/serial.log"), &serial).unwrap();
        let options = LogOptions {
            follow: false,
            tail: Some(2),
        };
        let mut logs = logs(d, "t", options).unwrap();
        assert_eq!(logs.offsets(), (2, err_len - line.len() as u64));
        let (out, err) = collect(&mut logs).await;
        assert_eq!(out, "b\nc\n");
        assert_eq!(err, format!("{line}last\n"));
    }

    #[test]
    fn tail_start_counts_lines_as_tail_offset_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "one\ntwo\nthree\n",
            "one\ntwo",
            "\n\n\nx\n",
        ] {
            std::fs::write(&path, text).unwrap();
            for lines in 0..5 {
                assert_eq!(
                    tail_start(text.as_bytes(), lines) as u64,
                    tail_offset(&path, text.len() as u64, lines),
                    "{text:?}, {lines} lines"
                );
            }
        }
    }
}
