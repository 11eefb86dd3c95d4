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
//! Blocking (it reads every record): run it on the blocking pool.

use firecracker_api::{AttachOptions, Vmm};

use crate::capture::{Capture, Sink};
use crate::config_drive::Key;
use crate::record::{now_ms, ExecutionRecord};
use crate::spec::Mode;
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
        /// Its output, read again from the start.
        capture: Capture,
    },
    /// Its record cannot be read.
    Corrupt(String),
}

/// Everything in `state`, with `max_output` the output cap for live ones.
pub fn scan(state: &StateDir, max_output: u64) -> Vec<Found> {
    let now = now_ms();
    state
        .execution_ids()
        .into_iter()
        .filter_map(|id| {
            let paths = state.execution(&id).ok()?;
            let found = load(&id, &paths, now, max_output)?;
            Some(Found {
                id,
                paths,
                state: found,
            })
        })
        .collect()
}

fn load(id: &str, paths: &ExecPaths, now: u64, max_output: u64) -> Option<FoundState> {
    let record = match ExecutionRecord::load(&paths.record()) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The record is written as the VMM is spawned: without one, no VM ran.
            tracing::warn!(%id, "removing an execution directory without a record (a launch that did not finish)");
            let _ = paths.remove();
            return None;
        }
        Err(e) => {
            tracing::warn!(%id, error = %e, "an execution's record cannot be read");
            return Some(FoundState::Corrupt(format!(
                "its record {} cannot be read: {e}",
                paths.record().display()
            )));
        }
    };
    if record.expires_ms().is_some_and(|at| at <= now) {
        let _ = paths.remove();
        return None;
    }
    if record.phase.is_terminal() {
        return Some(FoundState::Finished(record));
    }
    let vmm = match (record.pid, record.pid_start_time) {
        (Some(pid), Some(start_time)) => Vmm::attach(AttachOptions {
            pid,
            start_time,
            id: id.to_string(),
            api_socket: Some(paths.api_socket()),
            log_path: paths.vmm_log(),
            extra_sockets: vec![],
        })
        .unwrap_or_else(|e| {
            tracing::warn!(%id, error = %e, "cannot re-attach");
            None
        }),
        _ => None,
    };
    let vmm = vmm.map(|mut vmm| {
        vmm.set_kill_on_drop(false);
        vmm
    });
    tracing::info!(%id, alive = vmm.is_some(), phase = ?record.phase, "recovered execution");
    let sink = match (record.mode, record.key.as_deref().map(str::parse::<Key>)) {
        (Mode::Agent, Some(Ok(key))) => Sink::agent(key, &paths.stdout(), &paths.stderr())
            .unwrap_or_else(|e| {
                tracing::warn!(%id, error = %e, "cannot reopen the output files");
                Sink::plain()
            }),
        _ => Sink::plain(),
    };
    let capture = match Capture::open(&paths.serial(), sink, max_output) {
        Ok(capture) => capture,
        Err(e) => {
            return Some(FoundState::Corrupt(format!(
                "its serial output {} cannot be read: {e}",
                paths.serial().display()
            )))
        }
    };
    Some(FoundState::Live {
        record,
        vmm,
        capture,
    })
}
