//! The supervisor's side of guest protocol 2: the agent's connection
//! ([`AgentLink`]), its events, the hung-agent deadline and a cancel handed
//! to the agent with a grace period.

use super::{End, Supervisor};
use crate::agent_link::{AgentLink, LinkEvent};
use crate::machine::Machine;
use crate::outcome::StopReason;

impl<M: Machine> Supervisor<M> {
    /// The agent reported the end: the guest powers off by itself; stop it
    /// if it does not. Protocol 2: anything the agent sends meanwhile is a
    /// protocol error.
    pub(super) async fn after_agent_end(&mut self, machine: &mut M) -> End {
        let cancelled = self.cancelling.is_some();
        self.answer_cancel();
        let mut stopped = cancelled.then_some(StopReason::Cancelled);
        let grace = tokio::time::sleep(self.settings.after_exit_grace);
        tokio::pin!(grace);
        // The agent powers off once its `done` is written.
        let flushed = async {
            if let Some(link) = self.link.as_mut() {
                link.flush().await;
                loop {
                    if let LinkEvent::ProtocolError(error) = link.next().await {
                        return error;
                    }
                }
            }
            std::future::pending().await
        };
        let exit = tokio::select! {
            exit = machine.wait() => exit,
            error = flushed => {
                tracing::warn!(%error, "guest protocol error after the end; stopping the VM");
                stopped = Some(StopReason::ProtocolError);
                machine.stop(self.quick_stop()).await
            }
            _ = &mut grace => machine.stop(self.quick_stop()).await,
        };
        End::Exited { exit, stopped }
    }

    /// Acts on what the agent's connection saw.
    pub(super) async fn link_event(&mut self, machine: &mut M, event: LinkEvent) -> Option<End> {
        match event {
            LinkEvent::Stored(_) | LinkEvent::Attached => {
                self.publish(false);
                None
            }
            LinkEvent::Ended => {
                self.publish(false);
                Some(self.after_agent_end(machine).await)
            }
            LinkEvent::ProtocolError(error) => {
                tracing::warn!(%error, "guest protocol error; stopping the VM");
                let exit = machine.stop(self.quick_stop()).await;
                self.answer_cancel();
                Some(End::Exited {
                    exit,
                    stopped: Some(StopReason::ProtocolError),
                })
            }
            LinkEvent::Silent(limit) => {
                tracing::warn!(?limit, "the agent went silent; stopping the VM");
                let exit = machine.stop(self.quick_stop()).await;
                Some(End::Exited {
                    exit,
                    stopped: Some(StopReason::AgentSilent(limit)),
                })
            }
            LinkEvent::OverLimit => {
                let limit = self.link.as_ref().map_or(0, AgentLink::limit);
                tracing::warn!(limit, "output limit reached; stopping the VM");
                let exit = machine.stop(self.quick_stop()).await;
                self.answer_cancel();
                Some(End::Exited {
                    exit,
                    stopped: Some(StopReason::OutputLimit(limit)),
                })
            }
        }
    }

    /// Tells the caller of a cancel handed to the agent that it is done.
    pub(super) fn answer_cancel(&mut self) {
        if let Some((reply, _)) = self.cancelling.take() {
            let _ = reply.send(Ok(()));
        }
    }
}

/// The link's next event; pending forever without one.
pub(super) async fn next_event(link: &mut Option<AgentLink>) -> LinkEvent {
    match link {
        Some(link) => link.next().await,
        None => std::future::pending().await,
    }
}
