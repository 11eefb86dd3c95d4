//! The persisted record of one execution: what a restarted executor needs to
//! find its VM again, and the result once there is one.
//!
//! A record is a few files, each written once and never replaced:
//! `record.json` (created and flushed to the disk before the VMM is
//! spawned; a crash while writing it leaves a torn record, reported as
//! corrupt, and no VMM), `key` (the agent's key, mode 0600, deleted at the
//! end), `vmm.json` (the VMM's pid and start time, once it runs), `cancel`
//! (present once cancel was asked) and `result.json` (the end). The others
//! are written to a temporary name and renamed into place, so a crash never
//! leaves them torn; and since no rename replaces an existing file,
//! ext4 does not flush data on every change of phase (which cost about
//! 1.5 ms of CPU per save when records were rewritten in place).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lifecycle::Phase;
use crate::result::ExecutionResult;
use crate::spec::{Mode, Transport};

/// Where an output volume's image goes when the execution ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputCopy {
    /// The drive image the guest wrote.
    pub image: String,
    /// Where it is copied to, under `results_dir`.
    pub destination: String,
}

/// One execution's persisted state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// Record format version.
    pub version: u32,
    /// The node's job id.
    pub job_id: String,
    /// The execution id (also the directory name).
    pub execution_id: String,
    /// Where the execution is in its life.
    pub phase: Phase,
    /// How the guest reports.
    pub mode: Mode,
    /// Agent mode: how the agent reports (serial for records older than
    /// transports).
    #[serde(default = "Transport::serial")]
    pub transport: Transport,
    /// The agent-mode key, as hex. Kept in its own file (`key`, mode 0600),
    /// not in `record.json`, and deleted when the execution ends.
    #[serde(default, skip_serializing)]
    pub key: Option<String>,
    /// The VMM's pid, once spawned.
    #[serde(default)]
    pub pid: Option<u32>,
    /// The VMM's start time (`/proc/<pid>/stat`), to detect pid reuse.
    #[serde(default)]
    pub pid_start_time: Option<u64>,
    /// True when cancel was asked.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Output images to copy under `results_dir` at the end.
    #[serde(default)]
    pub outputs: Vec<OutputCopy>,
    /// `results_dir`, when given.
    #[serde(default)]
    pub results_dir: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: u64,
    /// End time, Unix milliseconds.
    #[serde(default)]
    pub finished_ms: Option<u64>,
    /// How long the result is kept after the end, in milliseconds (0: until removed).
    #[serde(default)]
    pub persist_ms: u64,
    /// The VM's memory, MiB (what it takes from the executor's budget).
    #[serde(default)]
    pub mem_mib: u64,
    /// The execution's time limit, milliseconds from `created_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The result, once terminal.
    #[serde(default)]
    pub result: Option<ExecutionResult>,
    /// The execution's network, when it has one (removed when it ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<fcexec_network::ExecutionNetwork>,
    /// The VMM's jail, when it runs under the jailer (`None`: unjailed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::jail::Isolation>,
}

/// The end of an execution, as `result.json` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Outcome {
    phase: Phase,
    result: Option<ExecutionResult>,
    finished_ms: Option<u64>,
}

/// The file holding an execution's end.
const RESULT_FILE: &str = "result.json";
/// The file whose presence says cancel was asked.
const CANCEL_FILE: &str = "cancel";

/// The file holding the VMM's pid and start time, written once it runs.
const VMM_FILE: &str = "vmm.json";
/// The file holding the agent's key while the execution lives.
const KEY_FILE: &str = "key";

/// Where the VMM of an execution runs (`vmm.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct VmmProcess {
    pid: u32,
    pid_start_time: Option<u64>,
}

/// Creates `path` (mode 0600; it must not exist) with `bytes` and flushes it
/// to the disk: one flush, where a temporary file and a rename would take
/// two (file, then directory). ext4, XFS and btrfs make a new file's
/// directory entry durable with the file itself. A crash in the middle
/// leaves a torn record, which recovery reports as corrupt; and since the
/// record is written before the VMM is spawned, no VMM then exists.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes `bytes` (mode 0600) to a temporary file and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

/// The record format version written by this code.
pub const RECORD_VERSION: u32 = 1;

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

impl ExecutionRecord {
    /// Writes the record (and the key, in its own file) atomically and
    /// durably to `path` (`record.json`): it is on the disk before the VMM
    /// it describes is spawned, so a crash cannot leave a VMM no one can find.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(key) = &self.key {
            write_atomically(&path.with_file_name(KEY_FILE), key.as_bytes())?;
        }
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        write_durably(path, &json)
    }

    /// Completes the record at `path` with the spawned VMM's pid and start
    /// time (`vmm.json`). Not flushed: a restarted executor that finds the
    /// record without it looks for the VMM by its API socket.
    pub fn save_vmm(path: &Path, pid: u32, pid_start_time: Option<u64>) -> std::io::Result<()> {
        let vmm = VmmProcess {
            pid,
            pid_start_time,
        };
        let json = serde_json::to_vec(&vmm).map_err(std::io::Error::other)?;
        write_atomically(&path.with_file_name(VMM_FILE), &json)
    }

    /// Deletes the key next to the record at `path` (the execution ended).
    pub fn forget_key(path: &Path) -> std::io::Result<()> {
        match std::fs::remove_file(path.with_file_name(KEY_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Writes the end (phase, result, end time) next to the record at `path`,
    /// as `result.json`. The output is not repeated there: it is in the
    /// output files.
    pub fn save_outcome(&self, path: &Path) -> std::io::Result<()> {
        let outcome = Outcome {
            phase: self.phase,
            result: self.result.as_ref().map(|r| ExecutionResult {
                stdout: String::new(),
                stderr: String::new(),
                ..r.clone()
            }),
            finished_ms: self.finished_ms,
        };
        let json = serde_json::to_vec_pretty(&outcome).map_err(std::io::Error::other)?;
        write_atomically(&path.with_file_name(RESULT_FILE), &json)
    }

    /// Notes, next to the record at `path`, that cancel was asked.
    pub fn mark_cancel_requested(path: &Path) -> std::io::Result<()> {
        std::fs::write(path.with_file_name(CANCEL_FILE), b"")
    }

    /// Reads the record at `path` (`record.json`) with its `cancel` and
    /// `result.json` companions.
    pub fn load(path: &Path) -> std::io::Result<ExecutionRecord> {
        let bytes = std::fs::read(path)?;
        let mut record: ExecutionRecord = serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if record.version != RECORD_VERSION {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "record version {} is not one this fcexec reads (it reads version {RECORD_VERSION})",
                    record.version
                ),
            ));
        }
        if path.with_file_name(CANCEL_FILE).exists() {
            record.cancel_requested = true;
        }
        match std::fs::read(path.with_file_name(VMM_FILE)) {
            Ok(bytes) => {
                let vmm: VmmProcess = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                record.pid = Some(vmm.pid);
                record.pid_start_time = vmm.pid_start_time;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match std::fs::read_to_string(path.with_file_name(KEY_FILE)) {
            Ok(key) => record.key = Some(key),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match std::fs::read(path.with_file_name(RESULT_FILE)) {
            Ok(bytes) => {
                let outcome: Outcome = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                record.phase = outcome.phase;
                record.result = outcome.result;
                record.finished_ms = outcome.finished_ms;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(record)
    }

    /// When the result may be forgotten, Unix milliseconds; `None` keeps it until removed.
    pub fn expires_ms(&self) -> Option<u64> {
        match (self.finished_ms, self.persist_ms) {
            (Some(end), persist) if persist > 0 => Some(end.saturating_add(persist)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> ExecutionRecord {
        ExecutionRecord {
            version: RECORD_VERSION,
            job_id: "j".into(),
            execution_id: "e".into(),
            phase: Phase::Running,
            mode: Mode::Agent,
            transport: Transport::Vsock,
            key: Some("00".repeat(16)),
            pid: Some(42),
            pid_start_time: Some(7),
            cancel_requested: false,
            outputs: vec![],
            results_dir: None,
            isolation: None,
            created_ms: 1,
            finished_ms: None,
            persist_ms: 0,
            mem_mib: 128,
            timeout_ms: None,
            result: None,
            network: None,
        }
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let r = record();
        r.save(&path).unwrap();
        assert_eq!(ExecutionRecord::load(&path).unwrap(), r);
        assert!(!dir.path().join("record.tmp").exists());
        // The key is in its own private file, not in record.json.
        let json = std::fs::read_to_string(&path).unwrap();
        assert!(!json.contains("\"key\""), "{json}");
        use std::os::unix::fs::PermissionsExt;
        let key = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
        ExecutionRecord::forget_key(&path).unwrap();
        assert_eq!(ExecutionRecord::load(&path).unwrap().key, None);
    }

    #[test]
    fn the_end_and_cancel_are_separate_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let mut r = record();
        r.save(&path).unwrap();
        ExecutionRecord::mark_cancel_requested(&path).unwrap();
        r.phase = Phase::Failed;
        r.result = Some(ExecutionResult {
            stdout: "out".into(),
            ..ExecutionResult::killed("cancelled")
        });
        r.finished_ms = Some(5);
        r.save_outcome(&path).unwrap();
        let loaded = ExecutionRecord::load(&path).unwrap();
        assert!(loaded.cancel_requested);
        let json = std::fs::read_to_string(dir.path().join(RESULT_FILE)).unwrap();
        assert!(!json.contains("stdout\": \"out"), "{json}");
        assert_eq!((loaded.phase, loaded.finished_ms), (Phase::Failed, Some(5)));
        assert_eq!(loaded.result, Some(ExecutionResult::killed("cancelled")));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let mut r = record();
        r.version = 99;
        r.save(&path).unwrap();
        let err = ExecutionRecord::load(&path).unwrap_err();
        assert!(err.to_string().contains("version 99"), "{err}");
    }

    #[test]
    fn expiry() {
        let mut r = record();
        assert_eq!(r.expires_ms(), None);
        r.finished_ms = Some(1000);
        assert_eq!(r.expires_ms(), None);
        r.persist_ms = 500;
        assert_eq!(r.expires_ms(), Some(1500));
    }
}
