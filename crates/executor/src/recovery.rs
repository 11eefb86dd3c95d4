//! Restart recovery: what a new executor with the same id and state
//! directory finds of the executions the previous one left. It returns
//! values; the executor registers them and starts their supervisors.
//!
//! Finished executions come back with their results (or are deleted if their
//! `persist_logs_duration` ran out meanwhile). Live ones are re-attached
//! through a pidfd when their VMM still runs (checked by pid *and* start
//! time, so a recycled pid is never mistaken for it), or come back without a
//! VMM, to be settled as failed with the reason, when it died in between.
//! In agent mode the serial file is decoded again from its start, so a
//! workload that finished while no executor watched still reports its exit
//! code. A record that cannot be read is reported as corrupt, with why.
//!
//! Blocking (it reads records): run it on the blocking pool.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use firecracker_api::{AttachOptions, Vmm};

use crate::agent_link::LinkParts;
use crate::capture::{Capture, Sink};
use crate::config_drive::Key;
use crate::record::{now_ms, ExecutionRecord};
use crate::spec::{Mode, Transport};
use crate::state_dir::{ExecPaths, StateDir};

/// One execution found in the state directory.
#[derive(Debug)]
pub struct Found {
    /// Its id.
    pub id: String,
    /// Its files.
    pub paths: ExecPaths,
    /// What state it is in.
    pub state: FoundState,
}

/// What was found of an execution. (Made once per execution at start-up
/// and taken apart at once: the variants' sizes do not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum FoundState {
    /// It ended; the record holds its result.
    Finished(ExecutionRecord),
    /// It was live: its VMM, if it still runs, and its output capture.
    Live {
        /// Its record.
        record: ExecutionRecord,
        /// Its VMM, when it still runs.
        vmm: Option<Vmm>,
        /// Its output: the serial console read again from the start, and
        /// (protocol 2) the agent's socket, bound again, and output files.
        output: (Capture, Option<LinkParts>),
    },
    /// Its record cannot be read.
    Corrupt(String),
}

/// What a start-up scan finds: every execution that may still be live
/// (or whose record is corrupt), loaded. Finished ones are not looked at:
/// they are loaded by id when asked for ([`load_one`]), so start-up stays
/// flat as history grows.
#[derive(Debug, Default)]
pub struct Scan {
    /// Loaded now.
    pub found: Vec<Found>,
}

/// The executions of `state` that may be live ([`StateDir::live_ids`]),
/// loaded, with `max_output` the output cap for live ones and `firecracker`
/// the binary their VMMs run.
pub fn scan(state: &StateDir, max_output: u64, firecracker: &Path) -> Scan {
    let found = state
        .live_ids()
        .iter()
        .filter_map(|id| load_one(state, id, max_output, firecracker))
        .collect();
    Scan { found }
}

/// Loads execution `id` of `state` when asked for by id: a finished one
/// (or one whose record cannot be read). Unlike [`load_one`] it never
/// touches a process and never deletes a directory it does not understand
/// (a start of this id may be creating it): `None` when there is no record,
/// or the record is of a live execution (the executor has it already, or is
/// starting it). The exception is a record that says live without a
/// runtime directory while the trees are apart: its VMM went with that
/// directory (a host restart clears `/run`), so it comes back failed, with
/// the reason. An expired one is deleted, and `None`. Blocking, small: one
/// record read and a few `stat`s.
pub fn load_finished(state: &StateDir, id: &str) -> Option<Found> {
    let paths = state.execution(id).ok()?;
    let found = |state| {
        Some(Found {
            id: id.to_string(),
            paths: paths.clone(),
            state,
        })
    };
    let mut record = match ExecutionRecord::load(&paths.record()) {
        Ok(record) => record,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(%id, error = %e, "an execution's record cannot be read");
            return found(FoundState::Corrupt(format!(
                "its record {} cannot be read: {e}",
                paths.record().display()
            )));
        }
    };
    if record.expires_ms().is_some_and(|at| at <= now_ms()) {
        let _ = paths.remove();
        return None;
    }
    if !record.phase.is_terminal() {
        let apart = state.runtime_path() != state.path();
        if !apart || paths.runtime_dir().exists() {
            return None;
        }
        tracing::warn!(%id, "an execution recorded as live has no runtime directory; its VMM is gone");
        record.phase = crate::lifecycle::Phase::Failed;
        record.result = Some(crate::result::ExecutionResult::failed(
            "the VMM is gone: the execution's runtime directory was removed (did the host restart?)",
        ));
    }
    found(FoundState::Finished(record))
}

/// When the finished execution `id` of `state` may be forgotten (Unix ms),
/// from its record; `None` when it has no readable record or no retention.
/// For the retention sweep: reads one record, changes nothing.
pub fn expiry_of(state: &StateDir, id: &str) -> Option<u64> {
    let paths = state.execution(id).ok()?;
    ExecutionRecord::load(&paths.record()).ok()?.expires_ms()
}

/// Deletes the files of execution `id` of `state` when its record says its
/// retention ran out by `now` (Unix ms), read again here, so that a newer
/// execution with this id is left alone. True when it deleted them.
pub fn remove_if_expired(state: &StateDir, id: &str, now: u64) -> bool {
    let Ok(paths) = state.execution(id) else {
        return false;
    };
    let expired = ExecutionRecord::load(&paths.record())
        .is_ok_and(|r| r.expires_ms().is_some_and(|at| at <= now));
    if expired {
        if let Err(e) = paths.remove() {
            tracing::warn!(%id, error = %e, "cannot delete an expired execution");
        }
    }
    expired
}

impl Scan {
    /// The jail ids of the executions loaded as live.
    pub fn live_jails(&self) -> Vec<String> {
        self.found
            .iter()
            .filter_map(|f| match &f.state {
                FoundState::Live { record, .. } => record.isolation.as_ref(),
                _ => None,
            })
            .map(|iso| iso.jail_id.clone())
            .collect()
    }
}

/// Loads one execution of `state` (see [`scan`]); `None` when there is
/// none, or it expired and was removed.
pub fn load_one(state: &StateDir, id: &str, max_output: u64, firecracker: &Path) -> Option<Found> {
    let paths = state.execution(id).ok()?;
    let (found, paths) = load(id, paths, now_ms(), max_output, firecracker)?;
    Some(Found {
        id: id.to_string(),
        paths,
        state: found,
    })
}

fn load(
    id: &str,
    paths: ExecPaths,
    now: u64,
    max_output: u64,
    firecracker: &Path,
) -> Option<(FoundState, ExecPaths)> {
    let mut record = match ExecutionRecord::load(&paths.record()) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The record is saved before the VMM is spawned: without one, no
            // VMM should exist. One that does anyway is stopped, not left.
            if let Some((pid, start_time)) = find_by_socket(&paths.api_socket()) {
                tracing::warn!(%id, pid, "stopping a VMM whose execution has no record");
                kill(id, &paths, pid, start_time);
            }
            tracing::warn!(%id, "removing an execution directory without a record (a launch that did not finish)");
            let _ = paths.remove();
            return None;
        }
        Err(e) => {
            tracing::warn!(%id, error = %e, "an execution's record cannot be read");
            let corrupt = FoundState::Corrupt(format!(
                "its record {} cannot be read: {e}",
                paths.record().display()
            ));
            return Some((corrupt, paths));
        }
    };
    if record.expires_ms().is_some_and(|at| at <= now) {
        let _ = paths.remove();
        return None;
    }
    if record.phase.is_terminal() {
        return Some((FoundState::Finished(record), paths));
    }
    // A jailed VMM's sockets are in its chroot.
    let paths = match &record.isolation {
        Some(iso) => paths.clone().jailed(iso.chroot.clone()).unwrap_or(paths),
        None => paths,
    };
    let jail_id = record.isolation.as_ref().map(|i| i.jail_id.as_str());
    // Adopt only the VMM fcexec started: pid and start time, and a process
    // that is firecracker serving this execution's API socket. A record
    // without a pid is one whose launch was cut short after the spawn.
    let socket = paths.api_socket();
    let process = match (record.pid, record.pid_start_time) {
        (Some(pid), Some(start)) if is_vmm_of(pid, &socket, jail_id, firecracker) => {
            Some((pid, start))
        }
        (Some(pid), _) => {
            tracing::warn!(%id, pid, "the recorded pid is not this execution's VMM (any more); not adopting it");
            None
        }
        (None, _) => match jail_id {
            Some(jail_id) => find_by(&|a| has_id(a, jail_id)),
            None => find_by_socket(&socket),
        },
    };
    if let Some((pid, start)) = process {
        (record.pid, record.pid_start_time) = (Some(pid), Some(start));
    }
    let vmm = match process {
        Some((pid, start_time)) => attach(id, &paths, pid, start_time).unwrap_or_else(|e| {
            tracing::warn!(%id, error = %e, "cannot re-attach");
            None
        }),
        None => None,
    };
    let vmm = vmm.map(|mut vmm| {
        vmm.set_kill_on_drop(false);
        vmm
    });
    tracing::info!(%id, alive = vmm.is_some(), phase = ?record.phase, "recovered execution");
    let key = record.key.as_deref().map(str::parse::<Key>);
    let (serial, sink, link) = match (record.mode, record.transport, key) {
        (Mode::Agent, Transport::Vsock, Some(Ok(key))) => {
            // The agent connects again (and resends what is not stored)
            // once this socket is back; a dead VMM has no agent to serve.
            let link = vmm.as_ref().and_then(|_| {
                LinkParts::open(&paths, &key, max_output)
                    .inspect_err(
                        |e| tracing::warn!(%id, error = %e, "cannot serve the agent again"),
                    )
                    .ok()
            });
            if let (Some(_), Some(iso)) = (&link, &record.isolation) {
                let socket = paths.agent_socket(fcexec_guest_protocol::DEFAULT_PORT);
                if let Err(e) = crate::jail::hand_over_socket(&socket, iso) {
                    tracing::warn!(%id, error = %e, "cannot hand the agent's socket to the jail");
                }
            }
            (paths.console(), Sink::console(), link)
        }
        (Mode::Agent, Transport::Serial, Some(Ok(key))) => {
            let sink = Sink::agent(key, &paths.stdout(), &paths.stderr()).unwrap_or_else(|e| {
                tracing::warn!(%id, error = %e, "cannot reopen the output files");
                Sink::plain()
            });
            (paths.serial(), sink, None)
        }
        _ => (paths.serial(), Sink::plain(), None),
    };
    let capture = match Capture::open(&serial, sink, max_output) {
        Ok(capture) => capture,
        Err(e) => {
            let corrupt = FoundState::Corrupt(format!(
                "its serial output {} cannot be read: {e}",
                serial.display()
            ));
            return Some((corrupt, paths));
        }
    };
    let live = FoundState::Live {
        record,
        vmm,
        output: (capture, link),
    };
    Some((live, paths))
}

/// Stops the VMM `pid` (checked by its start time) of an execution that
/// cannot be supervised.
fn kill(id: &str, paths: &ExecPaths, pid: u32, start_time: u64) {
    // A handle that kills on drop (the default) sends SIGKILL as it goes.
    drop(attach(id, paths, pid, start_time));
}

/// Attaches to the VMM `pid` of execution `id` (checked by its start time).
fn attach(
    id: &str,
    paths: &ExecPaths,
    pid: u32,
    start_time: u64,
) -> Result<Option<Vmm>, firecracker_api::VmmError> {
    Vmm::attach(AttachOptions {
        pid,
        start_time,
        id: id.to_string(),
        api_socket: Some(paths.api_socket()),
        log_path: paths.vmm_log(),
        extra_sockets: vec![paths.vsock()],
    })
}

/// The command line of process `pid`, split at its NULs.
fn cmdline(pid: u32) -> Option<Vec<OsString>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        bytes
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| OsString::from_vec(a.to_vec()))
            .collect(),
    )
}

/// True when `args` hold `--api-sock <socket>`.
fn serves(args: &[OsString], socket: &Path) -> bool {
    args.windows(2)
        .any(|w| w[0] == "--api-sock" && Path::new(&w[1]) == socket)
}

/// True when `args` hold `--id <id>` (how the jailer names a jailed VMM,
/// whose `--api-sock` is the same path inside every jail).
fn has_id(args: &[OsString], id: &str) -> bool {
    args.windows(2).any(|w| w[0] == "--id" && w[1] == id)
}

/// True when process `pid` runs the `firecracker` binary (by name: an
/// upgraded binary shows as "... (deleted)") and serves `socket`, or, for
/// a jailed VMM, carries its jail id.
fn is_vmm_of(pid: u32, socket: &Path, jail_id: Option<&str>, firecracker: &Path) -> bool {
    let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
        return false;
    };
    let exe = exe.to_string_lossy();
    let exe_name = exe.trim_end_matches(" (deleted)").rsplit('/').next();
    let name = firecracker.file_name().map(|n| n.to_string_lossy());
    exe_name.is_some()
        && exe_name == name.as_deref()
        && cmdline(pid).is_some_and(|a| match jail_id {
            Some(id) => has_id(&a, id),
            None => serves(&a, socket),
        })
}

/// The running firecracker serving `socket`, with its start time: how a VMM
/// spawned just before a crash (its pid not saved yet) is found.
fn find_by_socket(socket: &Path) -> Option<(u32, u64)> {
    find_by(&|a| serves(a, socket))
}

/// The first process whose command line `matches`, with its start time.
fn find_by(matches: &dyn Fn(&[OsString]) -> bool) -> Option<(u32, u64)> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| cmdline(pid).is_some_and(|a| matches(&a)))
        .and_then(|pid| Some((pid, firecracker_api::attach::start_time(pid)?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_a_vmm_of_this_execution_only_by_binary_and_socket() {
        let me = std::process::id();
        let socket = Path::new("/run/fcexec/x/e/api.sock");
        // This test binary is neither firecracker nor serving the socket.
        assert!(!is_vmm_of(
            me,
            socket,
            None,
            Path::new("/usr/local/bin/firecracker")
        ));
        assert!(find_by_socket(socket).is_none());
        let args: Vec<OsString> = ["firecracker", "--api-sock", "/run/fcexec/x/e/api.sock"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(serves(&args, socket));
        assert!(!serves(&args[..2], socket));
    }
}
