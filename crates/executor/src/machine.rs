//! What the supervisor needs of a VMM, as a small trait: the seam that lets
//! the supervisor be tested with a fake VMM and paused time, in addition to
//! the real-VMM tests of the same behaviours.
//!
//! [`firecracker_api::Vmm`] is the one real implementation.

use std::future::Future;

use firecracker_api::{StopPolicy, Vmm, VmmExit};

/// Whether a running VMM's guest runs or is paused (asked after a restart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestState {
    /// The guest runs.
    Running,
    /// The guest is paused.
    Paused,
}

/// A VMM process as the supervisor drives it.
pub trait Machine: Send + 'static {
    /// Waits until the VMM exits and reaps it. Cancel-safe.
    fn wait(&mut self) -> impl Future<Output = VmmExit> + Send;
    /// Stops it with escalation; returns how it ended (`Unknown` when it
    /// could not be stopped).
    fn stop(&mut self, policy: StopPolicy) -> impl Future<Output = VmmExit> + Send;
    /// Pauses the guest.
    fn pause(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Resumes the guest.
    fn resume(&mut self) -> impl Future<Output = Result<(), String>> + Send;
    /// Asks whether the guest runs or is paused; `None` when the VMM cannot say.
    fn guest_state(&mut self) -> impl Future<Output = Option<GuestState>> + Send;
    /// Lets the VMM run on without this handle (the executor shuts down).
    fn detach(self);
    /// Kills the VMM at once and removes what it left (the supervisor panicked).
    fn kill(self);
    /// After it exited: removes the sockets (and jail) it left behind.
    fn clean_up(&mut self);
}

impl Machine for Vmm {
    async fn wait(&mut self) -> VmmExit {
        Vmm::wait(self).await.unwrap_or(VmmExit::Unknown)
    }

    async fn stop(&mut self, policy: StopPolicy) -> VmmExit {
        match Vmm::stop(self, policy).await {
            Ok((exit, _)) => exit,
            Err(e) => {
                tracing::error!(error = %e, "cannot stop the VMM");
                VmmExit::Unknown
            }
        }
    }

    async fn pause(&mut self) -> Result<(), String> {
        let client = self.client().ok_or("the VMM has no API socket")?;
        client.pause().await.map_err(|e| e.to_string())
    }

    async fn resume(&mut self) -> Result<(), String> {
        let client = self.client().ok_or("the VMM has no API socket")?;
        client.resume().await.map_err(|e| e.to_string())
    }

    async fn guest_state(&mut self) -> Option<GuestState> {
        use firecracker_api::models::InstanceInfoState as State;
        let info = self.client()?.describe_instance().await.ok()?;
        match info.state {
            State::Running => Some(GuestState::Running),
            State::Paused => Some(GuestState::Paused),
            _ => None,
        }
    }

    fn detach(self) {
        let pid = Vmm::detach(self);
        tracing::debug!(pid, "executor shutting down; the VM runs on");
    }

    fn kill(mut self) {
        // Dropping a handle that kills on drop sends SIGKILL and removes the sockets.
        self.set_kill_on_drop(true);
    }

    fn clean_up(&mut self) {
        self.cleanup();
    }
}

/// Holds the supervisor's VMM while it is watched: if the supervisor panics
/// meanwhile, the VMM is killed rather than left running with no one to
/// report it. (Otherwise a VMM handle lets its process run on when dropped,
/// so that a runtime torn down without a shutdown leaves VMs a restarted
/// executor can re-attach to.)
pub struct KillOnPanic<M: Machine>(pub Option<M>);

impl<M: Machine> Drop for KillOnPanic<M> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(machine) = self.0.take() {
                machine.kill();
            }
        }
    }
}
