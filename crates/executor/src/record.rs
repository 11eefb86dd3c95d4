//! The persisted record of one execution: what a restarted executor needs to
//! find its VM again, and the result once there is one.
//!
//! A record is three files, each written once and never replaced:
//! `record.json` (written when the VMM is spawned: what to re-attach to),
//! `cancel` (present once cancel was asked) and `result.json` (the end).
//! Each is written to a temporary name and renamed into place, so a crash
//! never leaves a torn file; and since no rename replaces an existing file,
//! ext4 does not flush data on every change of phase (which cost about
//! 1.5 ms of CPU per save when records were rewritten in place).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::lifecycle::Phase;
use crate::result::ExecutionResult;
use crate::spec::Mode;

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
    /// The agent-mode key, as hex (the directory is mode 0700).
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// Writes `bytes` to a temporary file and renames it to `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
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
    /// Writes the record atomically to `path` (`record.json`).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        write_atomically(
            path,
            &serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )
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
            key: Some("00".repeat(16)),
            pid: Some(42),
            pid_start_time: Some(7),
            cancel_requested: false,
            outputs: vec![],
            results_dir: None,
            created_ms: 1,
            finished_ms: None,
            persist_ms: 0,
            mem_mib: 128,
            timeout_ms: None,
            result: None,
        }
    }

    #[test]
    fn saves_and_loads_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        let r = record();
        r.save(&path).unwrap();
        assert_eq!(ExecutionRecord::load(&path).unwrap(), r);
        assert!(!dir.path().join("record.json.tmp").exists());
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
