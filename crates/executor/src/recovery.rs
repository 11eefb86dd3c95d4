//! Restart recovery: a new executor with the same id and state directory
//! finds every execution the previous one left.
//!
//! Finished executions come back with their results (or are deleted if their
//! `persist_logs_duration` ran out meanwhile). Live ones get a supervisor
//! again: re-attached through a pidfd when their VMM still runs (checked by
//! pid *and* start time, so a recycled pid is never mistaken for it), or
//! settled as failed, with the reason, when it died in between. In agent mode
//! the serial file is decoded again from its start, so a workload that
//! finished while no executor watched still reports its exit code.

use std::sync::Arc;

use firecracker_api::{AttachOptions, Vmm};
use tokio::sync::mpsc;

use crate::capture::Sink;
use crate::config_drive::Key;
use crate::execution::{Execution, LogProgress, Snapshot};
use crate::executor::Shared;
use crate::launch::{expire, supervise};
use crate::record::{now_ms, ExecutionRecord};
use crate::spec::Mode;

/// Loads every execution of the state directory into `shared`.
pub(crate) fn recover(shared: &Arc<Shared>) {
    for id in shared.state.execution_ids() {
        let Ok(paths) = shared.state.execution(&id) else {
            continue;
        };
        let record = match ExecutionRecord::load(&paths.record()) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // The record is written as the VMM is spawned: without one, no VM ran.
                tracing::warn!(%id, "removing an execution directory without a record (a launch that did not finish)");
                let _ = paths.remove();
                continue;
            }
            Err(e) => {
                tracing::warn!(%id, error = %e, "skipping an execution directory without a readable record");
                continue;
            }
        };
        if record.expires_ms().is_some_and(|at| at <= now_ms()) {
            let _ = paths.remove();
            continue;
        }
        let snapshot = Snapshot {
            phase: record.phase,
            result: record.result.clone().map(Arc::new),
        };
        if record.phase.is_terminal() {
            let exec = Arc::new(Execution::new(
                id.clone(),
                record.job_id.clone(),
                paths,
                record.mode,
                snapshot,
                None,
            ));
            exec.publish_logs(LogProgress {
                stdout: file_len(&exec.stdout_path()),
                stderr: file_len(&exec.stderr_path()),
                done: true,
            });
            shared.lock().insert(id, exec.clone());
            if let Some(at) = record.expires_ms() {
                tokio::spawn(expire(Arc::downgrade(shared), exec, at));
            }
            continue;
        }
        let vmm = match (record.pid, record.pid_start_time) {
            (Some(pid), Some(start_time)) => Vmm::attach(AttachOptions {
                pid,
                start_time,
                id: id.clone(),
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
        let vmm = vmm.map(|mut v| {
            v.set_kill_on_drop(false);
            v
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
        let (commands, receiver) = mpsc::channel(8);
        let exec = Arc::new(Execution::new(
            id.clone(),
            record.job_id.clone(),
            paths,
            record.mode,
            snapshot,
            Some(commands),
        ));
        shared.lock().insert(id, exec.clone());
        supervise(shared, exec, vmm, record, sink, receiver, None);
    }
}

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
