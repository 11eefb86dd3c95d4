//! The supervisor: drives one booted execution's [`Phase`] state machine
//! from boot to result. It owns the VMM (through the [`Machine`] seam).
//!
//! It waits on these at once: the executor shutting down (it then lets the
//! VM run on for a restarted executor to find), the VMM process ending, a
//! command (cancel, pause, resume), new serial output, the agent's
//! connection (guest protocol 2: [`agent`]), and the execution's deadlines
//! (boot timeout, overall timeout, hung agent, a cancel's grace period). New output goes through the
//! [`Capture`], off the runtime's workers; past the output cap the VM is
//! stopped. When the VM ends it drains the output, decides the result
//! ([`crate::outcome`]), puts output volumes under `results_dir`, removes
//! what the VMM left behind, persists the end and publishes the result.

use std::sync::Arc;
use std::time::Duration;

use firecracker_api::exit::log_tail;
use firecracker_api::watch::Subscription;
use firecracker_api::{StopPolicy, VmmExit};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod agent;

use crate::agent_link::{AgentLink, LinkParts};
use crate::capture::{watch_serial, Capture};
use crate::execution::{Command, Execution, LogProgress};
use crate::lifecycle::Phase;
use crate::machine::{GuestState, KillOnPanic, Machine};
use crate::network::Networks;
use crate::outcome::{decide, Ending, StopReason};
use crate::record::{now_ms, ExecutionRecord};
use agent::next_event;

/// Settings every supervisor shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How cancel stops a VM.
    pub stop: StopPolicy,
    /// How long a guest gets to power off after its agent reported the end.
    pub after_exit_grace: Duration,
    /// Protocol 2: the longest a connected agent may stay silent; `None`
    /// when agents send no heartbeats.
    pub heartbeat_timeout: Option<Duration>,
    /// Protocol 2: how long a workload gets to stop after a cancel.
    pub cancel_grace: Duration,
}

/// How long past its grace period an agent gets to report a cancelled
/// workload's end before the VM is stopped.
const CANCEL_SLACK: Duration = Duration::from_secs(2);

/// One execution's time limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Deadlines {
    /// Agent mode: the agent must say hello within this, from supervision's start.
    pub boot: Option<Duration>,
    /// The whole execution must end by then: (when, the limit as asked).
    pub end: Option<(Instant, Duration)>,
}

/// How a supervisor's work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The execution has its result; it may be forgotten at this Unix ms.
    Finished {
        /// When its retention runs out.
        expires_ms: Option<u64>,
    },
    /// The executor shut down and the VM runs on.
    Detached,
}

/// Why the supervision loop ended.
enum End {
    Detach,
    Exited {
        exit: VmmExit,
        stopped: Option<StopReason>,
    },
}

/// One execution's supervisor.
pub struct Supervisor<M: Machine> {
    exec: Arc<Execution>,
    machine: KillOnPanic<M>,
    record: ExecutionRecord,
    /// Taken while a blocking read runs on the blocking pool.
    capture: Option<Capture>,
    serial_changes: Option<Subscription>,
    /// Protocol 2: the agent's connection.
    link: Option<AgentLink>,
    /// A cancel handed to the agent: who to tell, and when to stop waiting.
    cancelling: Option<(oneshot::Sender<Result<(), String>>, Instant)>,
    commands: mpsc::Receiver<Command>,
    stop: CancellationToken,
    settings: Settings,
    deadlines: Deadlines,
    /// Removes the execution's network when it ends.
    networks: Arc<Networks>,
}

impl<M: Machine> Supervisor<M> {
    /// A supervisor for `exec`. `machine` is `None` when the VMM already
    /// ended (found dead after a restart): the supervisor then only settles
    /// the result. `stop` is the executor's shutdown token.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exec: Arc<Execution>,
        machine: Option<M>,
        record: ExecutionRecord,
        output: (Capture, Option<LinkParts>),
        commands: mpsc::Receiver<Command>,
        stop: CancellationToken,
        settings: Settings,
        deadlines: Deadlines,
        networks: Arc<Networks>,
    ) -> Supervisor<M> {
        let (capture, link) = output;
        let serial_changes = match watch_serial(capture.path()) {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::warn!(id = %exec.id, error = %e, "cannot follow the serial output");
                None
            }
        };
        let silence = settings.heartbeat_timeout;
        let link = link.and_then(|parts| match AgentLink::new(parts, silence) {
            Ok(link) => Some(link),
            Err(e) => {
                tracing::error!(id = %exec.id, error = %e, "cannot serve the agent's connection");
                None
            }
        });
        Supervisor {
            exec,
            machine: KillOnPanic(machine),
            record,
            capture: Some(capture),
            serial_changes,
            link,
            cancelling: None,
            commands,
            stop,
            settings,
            deadlines,
            networks,
        }
    }

    /// Supervises until the execution ends (or the executor shuts down).
    #[tracing::instrument(name = "supervise", skip_all, fields(id = %self.exec.id))]
    pub async fn run(mut self) -> Ended {
        self.pump().await;
        match self.supervise().await {
            End::Detach => {
                if let Some(machine) = self.machine.0.take() {
                    machine.detach();
                }
                Ended::Detached
            }
            End::Exited { exit, stopped } => {
                self.finish(exit, stopped).await;
                Ended::Finished {
                    expires_ms: self.record.expires_ms(),
                }
            }
        }
    }

    async fn supervise(&mut self) -> End {
        let mut held = KillOnPanic(self.machine.0.take());
        let Some(machine) = held.0.as_mut() else {
            let log = self.exec.paths.vmm_log();
            let exit = blocking(move || firecracker_api::exit::exit_from_log(&log))
                .await
                .unwrap_or(VmmExit::Unknown);
            return End::Exited {
                exit,
                stopped: self
                    .record
                    .cancel_requested
                    .then_some(StopReason::Cancelled),
            };
        };
        let end = self.watch(machine).await;
        // However it ended, a cancel handed to the agent is answered.
        self.answer_cancel();
        self.machine.0 = held.0.take();
        end
    }

    async fn watch(&mut self, machine: &mut M) -> End {
        if self.record.cancel_requested {
            // Cancel was under way when the previous executor stopped.
            let exit = machine.stop(self.settings.stop).await;
            return End::Exited {
                exit,
                stopped: Some(StopReason::Cancelled),
            };
        }
        if self.exec.phase() == Phase::Booting {
            self.sync_phase(machine).await;
        }
        let boot_deadline = self.deadlines.boot.map(|t| (Instant::now() + t, t));
        loop {
            let (over_limit, agent_ended, mut hello) = match &self.capture {
                Some(c) => (c.over_limit(), c.agent_ended(), c.agent_said_hello()),
                None => (false, false, false),
            };
            hello |= self
                .link
                .as_ref()
                .is_some_and(|l| l.report().hello.is_some());
            if over_limit {
                tracing::warn!(
                    limit = self.limit(),
                    "output limit reached; stopping the VM"
                );
                let exit = machine.stop(self.quick_stop()).await;
                return End::Exited {
                    exit,
                    stopped: Some(StopReason::OutputLimit(self.limit())),
                };
            }
            if agent_ended {
                return self.after_agent_end(machine).await;
            }
            let boot = boot_deadline.filter(|_| !hello);
            let cancel_by = self.cancelling.as_ref().map(|c| (c.1, ()));
            tokio::select! {
                event = next_event(&mut self.link) => {
                    if let Some(end) = self.link_event(machine, event).await {
                        return end;
                    }
                }
                _ = sleep_until(cancel_by) => {
                    tracing::warn!("the agent did not report the cancelled workload's end; stopping the VM");
                    let exit = machine.stop(self.settings.stop).await;
                    self.answer_cancel();
                    return End::Exited { exit, stopped: Some(StopReason::Cancelled) };
                }
                _ = self.stop.cancelled() => return End::Detach,
                exit = machine.wait() => return End::Exited {
                    exit,
                    stopped: self.record.cancel_requested.then_some(StopReason::Cancelled),
                },
                Some(command) = self.commands.recv() => {
                    if let Some(end) = self.command(machine, command).await {
                        return end;
                    }
                }
                _ = changed(&self.serial_changes) => self.pump().await,
                _ = sleep_until(boot) => {
                    let limit = boot.map(|b| b.1).unwrap_or_default();
                    tracing::warn!(?limit, "boot timed out: no hello from the guest agent");
                    let exit = machine.stop(self.settings.stop).await;
                    return End::Exited { exit, stopped: Some(StopReason::BootTimeout(limit)) };
                }
                _ = sleep_until(self.deadlines.end) => {
                    let limit = self.deadlines.end.map(|e| e.1).unwrap_or_default();
                    tracing::warn!(?limit, "execution timed out; stopping the VM");
                    let exit = machine.stop(self.quick_stop()).await;
                    return End::Exited { exit, stopped: Some(StopReason::Timeout(limit)) };
                }
            }
        }
    }

    async fn command(&mut self, machine: &mut M, command: Command) -> Option<End> {
        match command {
            Command::Cancel(reply) => {
                if let Err(e) = self.exec.transition(Phase::Stopping) {
                    let _ = reply.send(Err(format!("it is {}", e.from.status().as_str())));
                    return None;
                }
                self.record.cancel_requested = true;
                let path = self.exec.paths.record();
                if let Err(e) =
                    blocking(move || ExecutionRecord::mark_cancel_requested(&path)).await
                {
                    tracing::warn!(error = %e, "cannot persist the cancel request");
                }
                let grace = self.settings.cancel_grace;
                if self.link.as_mut().is_some_and(|l| l.cancel(grace)) {
                    // The agent stops the workload and reports its end.
                    self.cancelling = Some((reply, Instant::now() + grace + CANCEL_SLACK));
                    return None;
                }
                let exit = machine.stop(self.settings.stop).await;
                let _ = reply.send(Ok(()));
                Some(End::Exited {
                    exit,
                    stopped: Some(StopReason::Cancelled),
                })
            }
            Command::Pause(reply) => {
                let _ = reply.send(self.pause_or_resume(machine, Phase::Paused).await);
                None
            }
            Command::Resume(reply) => {
                let _ = reply.send(self.pause_or_resume(machine, Phase::Running).await);
                None
            }
        }
    }

    async fn pause_or_resume(&mut self, machine: &mut M, to: Phase) -> Result<(), String> {
        let phase = self.exec.phase();
        if !phase.can_become(to) {
            return Err(format!("it is {}", phase.status().as_str()));
        }
        match to {
            Phase::Paused => machine.pause().await?,
            _ => machine.resume().await?,
        }
        if let Some(link) = self.link.as_mut() {
            link.set_paused(to == Phase::Paused);
        }
        self.exec
            .transition(to)
            .map_err(|e| format!("it is {}", e.from.status().as_str()))?;
        self.record.phase = to;
        Ok(())
    }

    /// Reads all new serial output on the blocking pool and publishes progress.
    async fn pump(&mut self) {
        let Some(mut capture) = self.capture.take() else {
            return;
        };
        let (capture, progress) = blocking(move || {
            let progress = capture.pump();
            (capture, progress)
        })
        .await;
        self.capture = Some(capture);
        self.exec.publish_logs(self.progress(progress, false));
    }

    /// Publishes how much output is stored.
    fn publish(&self, done: bool) {
        let now = *self.exec.log_progress().borrow();
        self.exec.publish_logs(self.progress(now, done));
    }

    /// `serial` progress, with the agent link's streams when there is one.
    fn progress(&self, serial: LogProgress, done: bool) -> LogProgress {
        match &self.link {
            Some(link) => LogProgress {
                stdout: link.stored()[0],
                stderr: link.stored()[1],
                console: serial.console,
                attached: link.attached() && !done,
                done,
            },
            None => LogProgress { done, ..serial },
        }
    }

    async fn finish(&mut self, exit: VmmExit, stopped: Option<StopReason>) {
        self.pump().await;
        if let Some(link) = self.link.as_mut() {
            link.drain().await;
        }
        let (exec, capture) = (self.exec.clone(), self.capture.take());
        let over_limit = matches!(stopped, Some(StopReason::OutputLimit(_)));
        let (capture, progress, log) = blocking(move || {
            let mut capture = capture;
            let progress = capture.as_mut().map(Capture::finish).unwrap_or_default();
            if over_limit {
                keep_captured(&exec, capture.as_ref());
            }
            (capture, progress, log_tail(&exec.paths.vmm_log(), 12))
        })
        .await;
        let agent = match &self.link {
            Some(link) => link.report(),
            None => capture.as_ref().map(Capture::report).unwrap_or_default(),
        };
        let progress = self.progress(progress, true);
        let ending = Ending {
            mode: self.exec.mode,
            vmm_exit: exit,
            agent,
            stopped,
            vmm_log_tail: log,
        };
        let mut result = decide(&ending);
        if let Some(mut machine) = self.machine.0.take() {
            machine.clean_up();
        }
        // The VMM is gone: its network (and published ports) go before the
        // result is published, so a caller that saw it can reuse them.
        if let Some(net) = self.record.network.take() {
            self.networks.remove(&net).await;
        }
        if let Err(e) = crate::results::copy_outputs(&self.record).await {
            // The workload's own exit code stands; the failure is said beside it.
            result.error_msg = match result.error_msg.is_empty() {
                true => e,
                false => format!("{}; {e}", result.error_msg),
            };
        }
        let (exec, record) = (self.exec.clone(), self.record.clone());
        let phase = if result.is_success() {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        self.record.result = Some(result.clone());
        self.record.finished_ms = Some(now_ms());
        self.record.phase = phase;
        let saved = self.record.clone();
        blocking(move || {
            crate::results::write_logs(&exec, &record);
            // Persisted before it is published (a waiter may remove the
            // directory at once), and before the runtime directory goes: a
            // restarted executor takes an execution without one for finished.
            if let Err(e) = saved.save_outcome(&exec.paths.record()) {
                tracing::warn!(error = %e, "cannot persist the result");
            }
            if let Err(e) = ExecutionRecord::forget_key(&exec.paths.record()) {
                tracing::warn!(error = %e, "cannot delete the agent's key");
            }
            if let Err(e) = exec.paths.remove_runtime() {
                tracing::warn!(error = %e, "cannot remove the VM's runtime files");
            }
            // The outputs were copied out above: the jail, its copies, its
            // cgroup and its uid go.
            if let Some(isolation) = &saved.isolation {
                crate::jail::release(isolation);
            }
        })
        .await;
        tracing::info!(exit_code = result.exit_code, error = %result.error_msg, killed = result.killed, "execution ended");
        if let Err(e) = self.exec.finish(phase, result) {
            tracing::error!(error = %e, "the execution already ended; its first result stands");
        }
        self.exec.publish_logs(progress);
    }

    /// After a restart the record says only that the VM was booted: ask the
    /// VMM whether it runs or is paused.
    async fn sync_phase(&mut self, machine: &mut M) {
        let state = machine.guest_state().await;
        let steps: &[Phase] = match state {
            Some(GuestState::Running) => &[Phase::Running],
            Some(GuestState::Paused) => &[Phase::Running, Phase::Paused],
            None => &[],
        };
        for &to in steps {
            if let Err(e) = self.exec.transition(to) {
                tracing::warn!(error = %e, "cannot take the VMM's word for its state");
                return;
            }
            self.record.phase = to;
        }
        if let (Some(GuestState::Paused), Some(link)) = (state, self.link.as_mut()) {
            link.set_paused(true);
        }
    }

    fn limit(&self) -> u64 {
        self.capture.as_ref().map(|c| c.limit()).unwrap_or(0)
    }

    /// Stopping for a limit: no Ctrl+Alt+Del, the guest is not trusted to stop.
    fn quick_stop(&self) -> StopPolicy {
        StopPolicy {
            ctrl_alt_del: None,
            ..self.settings.stop
        }
    }
}

/// Past the output cap, what was captured is what is kept: in plain mode the
/// serial file is stdout, so it is cut back to the cap.
fn keep_captured(exec: &Execution, capture: Option<&Capture>) {
    let Some(capture) = capture else { return };
    if exec.mode == crate::spec::Mode::Plain {
        let cut = std::fs::OpenOptions::new()
            .write(true)
            .open(exec.paths.serial())
            .and_then(|f| f.set_len(capture.taken()));
        if let Err(e) = cut {
            tracing::warn!(error = %e, "cannot cut the output back to the limit");
        }
    }
}

/// Runs blocking work on the blocking pool. A panic there is re-raised
/// here, where the execution's task guard turns it into a failed result.
/// Work is cancelled only when the runtime shuts down, which is about to
/// drop this task too: it then never resolves, so the task is dropped
/// without a panic and its VM runs on, as it would after a shutdown.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(_) => std::future::pending().await,
        },
    }
}

async fn changed(sub: &Option<Subscription>) {
    match sub {
        Some(sub) => sub.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until<T>(deadline: Option<(Instant, T)>) {
    match deadline {
        Some((at, _)) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
