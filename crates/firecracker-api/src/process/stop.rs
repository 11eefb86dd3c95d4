//! Stopping a VMM: Ctrl+Alt+Del through the API, then SIGTERM, then SIGKILL,
//! each with its own deadline; every path ends with the VMM reaped (or, for a
//! re-attached VMM, seen gone through its pidfd) and its sockets removed.

use std::time::Duration;

use super::{Handle, Vmm, VmmError};
use crate::exit::VmmExit;
use crate::models::{InstanceActionInfo, InstanceActionType};

/// The deadlines of [`Vmm::stop`]'s three steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopPolicy {
    /// Time the guest gets after Ctrl+Alt+Del; `None` skips this step.
    pub ctrl_alt_del: Option<Duration>,
    /// Time the VMM gets after SIGTERM.
    pub sigterm: Duration,
    /// Time the kernel gets to deliver SIGKILL and let us reap.
    pub sigkill: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        StopPolicy {
            ctrl_alt_del: Some(Duration::from_millis(500)),
            sigterm: Duration::from_millis(500),
            sigkill: Duration::from_secs(5),
        }
    }
}

/// The step of [`Vmm::stop`] that ended the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStep {
    /// It had already exited, or exited before any signal.
    AlreadyExited,
    /// The guest shut down after Ctrl+Alt+Del.
    CtrlAltDel,
    /// SIGTERM ended it.
    Sigterm,
    /// SIGKILL ended it.
    Sigkill,
}

impl Vmm {
    /// Stops the VMM: Ctrl+Alt+Del, then SIGTERM, then SIGKILL, each with the
    /// policy's deadline; reaps it and removes its sockets.
    pub async fn stop(&mut self, policy: StopPolicy) -> Result<(VmmExit, StopStep), VmmError> {
        if let Some(exit) = self.exit {
            self.cleanup();
            return Ok((exit, StopStep::AlreadyExited));
        }
        if let (Some(grace), Some(client)) = (policy.ctrl_alt_del, self.client()) {
            let action = InstanceActionInfo {
                action_type: InstanceActionType::SendCtrlAltDel,
            };
            let sent = client
                .with_timeout(grace)
                .call_empty(hyper::Method::PUT, "/actions", Some(&action))
                .await;
            if sent.is_ok() {
                if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
                    self.cleanup();
                    return Ok((exit?, StopStep::CtrlAltDel));
                }
            }
        }
        for (signal, grace, step) in [
            (libc::SIGTERM, policy.sigterm, StopStep::Sigterm),
            (libc::SIGKILL, policy.sigkill, StopStep::Sigkill),
        ] {
            // The init of a PID namespace (a VMM the jailer ran with
            // --new-pid-ns) gets from outside only the signals it handles;
            // firecracker does not handle SIGTERM, so skip to SIGKILL.
            if signal == libc::SIGTERM && is_pid_ns_init(self.pid) {
                continue;
            }
            self.signal(signal);
            if let Ok(exit) = tokio::time::timeout(grace, self.wait()).await {
                self.cleanup();
                return Ok((exit?, step));
            }
        }
        Err(VmmError::Unkillable {
            pid: self.pid,
            waited: policy.sigkill,
        })
    }

    /// Sends a signal to the VMM unless it is known to have exited.
    pub fn signal(&self, signal: libc::c_int) {
        if self.exit.is_some() || self.pid == 0 {
            return;
        }
        match &self.handle {
            Handle::Child(_) => {
                // SAFETY: kill(2) takes plain integers; the pid is our own
                // child's, which stays reserved until we reap it.
                unsafe {
                    libc::kill(self.pid as libc::pid_t, signal);
                }
            }
            Handle::Pidfd(pidfd) => pidfd.signal(signal),
            Handle::Detached => {}
        }
    }
}

/// True when process `pid` is the init (pid 1) of a PID namespace below ours
/// (its `NSpid` line in `/proc/<pid>/status` ends in 1).
pub(crate) fn is_pid_ns_init(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
        .unwrap_or(false)
}
