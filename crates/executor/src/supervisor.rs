//! The supervisor: one task per execution that owns its VMM and drives its
//! [`Phase`] state machine from boot to result.
//!
//! It waits on four things at once: the executor shutting down (it then lets
//! the VM run on for a restarted executor to find), the VMM process ending,
//! a command (cancel, pause, resume), and new serial output. When the VM
//! ends it drains the output, decides the result ([`crate::outcome`]), puts
//! output volumes under `results_dir`, removes what the VMM left behind,
//! persists the record and publishes the result to every waiter.

use std::sync::Arc;
use std::time::Duration;

use firecracker_api::exit::{exit_from_log, log_tail};
use firecracker_api::{StopPolicy, Vmm, VmmExit};
use tokio::sync::{mpsc, watch};

use crate::capture::{read_text, SerialTail, Sink};
use crate::execution::{Command, Execution, Snapshot};
use crate::lifecycle::Phase;
use crate::outcome::{decide, Ending};
use crate::record::{now_ms, ExecutionRecord};

/// Settings every supervisor shares.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How cancel stops a VM.
    pub stop: StopPolicy,
    /// How long a guest gets to power off after its agent reported the end.
    pub after_exit_grace: Duration,
}

/// Why the supervision loop ended.
enum End {
    /// The executor is shutting down: leave the VM running.
    Detach,
    /// The VMM ended (by itself, or after cancel or a timeout).
    Exited {
        exit: VmmExit,
        cancelled: bool,
        timed_out: Option<Duration>,
    },
}

/// One execution's supervisor.
pub struct Supervisor {
    exec: Arc<Execution>,
    vmm: Option<Vmm>,
    record: ExecutionRecord,
    tail: Option<SerialTail>,
    sink: Sink,
    commands: mpsc::Receiver<Command>,
    shutdown: watch::Receiver<bool>,
    settings: Settings,
    boot_timeout: Option<Duration>,
}

impl Supervisor {
    /// A supervisor for `exec`. `vmm` is `None` when the VMM already ended
    /// (found dead after a restart): the supervisor then only settles the result.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        exec: Arc<Execution>,
        vmm: Option<Vmm>,
        record: ExecutionRecord,
        sink: Sink,
        commands: mpsc::Receiver<Command>,
        shutdown: watch::Receiver<bool>,
        settings: Settings,
        boot_timeout: Option<Duration>,
    ) -> Supervisor {
        let tail = match SerialTail::open(&exec.paths.serial()) {
            Ok(tail) => Some(tail),
            Err(e) => {
                tracing::warn!(id = %exec.id, error = %e, "cannot follow the serial output");
                None
            }
        };
        Supervisor {
            exec,
            vmm,
            record,
            tail,
            sink,
            commands,
            shutdown,
            settings,
            boot_timeout,
        }
    }

    /// Supervises until the execution ends (or the executor shuts down).
    /// Returns when the finished execution expires (Unix ms), if it does.
    #[tracing::instrument(name = "supervise", skip_all, fields(id = %self.exec.id))]
    pub async fn run(mut self) -> Option<u64> {
        self.pump();
        match self.supervise().await {
            End::Detach => {
                if let Some(vmm) = self.vmm.take() {
                    tracing::debug!(pid = vmm.pid(), "executor shutting down; the VM runs on");
                    vmm.detach();
                }
                None
            }
            End::Exited {
                exit,
                cancelled,
                timed_out,
            } => {
                self.finish(exit, cancelled, timed_out).await;
                self.record.expires_ms()
            }
        }
    }

    async fn supervise(&mut self) -> End {
        let Some(mut vmm) = self.vmm.take() else {
            let exit = exit_from_log(&self.exec.paths.vmm_log()).unwrap_or(VmmExit::Unknown);
            return End::Exited {
                exit,
                cancelled: self.record.cancel_requested,
                timed_out: None,
            };
        };
        if self.record.cancel_requested {
            // Cancel was under way when the previous executor stopped.
            let (exit, _) = stop(&mut vmm, self.settings.stop).await;
            self.vmm = Some(vmm);
            return End::Exited {
                exit,
                cancelled: true,
                timed_out: None,
            };
        }
        if self.exec.snapshot().phase == Phase::Booting && vmm.exit().is_none() {
            self.sync_phase(&vmm).await;
        }
        let boot_deadline = self.boot_timeout.map(|t| tokio::time::Instant::now() + t);
        let end = loop {
            if self.sink.report().exit.is_some() || self.sink.report().fail.is_some() {
                break self.after_agent_end(&mut vmm).await;
            }
            let waiting_for_hello = boot_deadline.filter(|_| self.sink.report().hello.is_none());
            tokio::select! {
                _ = self.shutdown.changed() => break End::Detach,
                exit = vmm.wait() => break End::Exited {
                    exit: exit.unwrap_or(VmmExit::Unknown),
                    cancelled: self.record.cancel_requested,
                    timed_out: None,
                },
                Some(command) = self.commands.recv() => {
                    if let Some(end) = self.command(&mut vmm, command).await {
                        break end;
                    }
                }
                changed = changed(&mut self.tail) => {
                    if changed.is_err() {
                        self.tail = None;
                    }
                    self.pump();
                }
                _ = sleep_until(waiting_for_hello) => {
                    let limit = self.boot_timeout.unwrap_or_default();
                    tracing::warn!(?limit, "boot timed out: no hello from the guest agent");
                    let (exit, _) = stop(&mut vmm, self.settings.stop).await;
                    break End::Exited { exit, cancelled: false, timed_out: Some(limit) };
                }
            }
        };
        self.vmm = Some(vmm);
        end
    }

    /// The agent reported the end: the guest powers off by itself; stop it if it does not.
    async fn after_agent_end(&mut self, vmm: &mut Vmm) -> End {
        let exit = match tokio::time::timeout(self.settings.after_exit_grace, vmm.wait()).await {
            Ok(exit) => exit.unwrap_or(VmmExit::Unknown),
            Err(_) => {
                let policy = StopPolicy {
                    ctrl_alt_del: None,
                    ..self.settings.stop
                };
                stop(vmm, policy).await.0
            }
        };
        End::Exited {
            exit,
            cancelled: false,
            timed_out: None,
        }
    }

    async fn command(&mut self, vmm: &mut Vmm, command: Command) -> Option<End> {
        match command {
            Command::Cancel(reply) => {
                self.transition(Phase::Stopping);
                self.record.cancel_requested = true;
                if let Err(e) = ExecutionRecord::mark_cancel_requested(&self.exec.paths.record()) {
                    tracing::warn!(error = %e, "cannot persist the cancel request");
                }
                let (exit, _) = stop(vmm, self.settings.stop).await;
                let _ = reply.send(Ok(()));
                Some(End::Exited {
                    exit,
                    cancelled: true,
                    timed_out: None,
                })
            }
            Command::Pause(reply) => {
                let result = self.pause_or_resume(vmm, Phase::Paused).await;
                let _ = reply.send(result);
                None
            }
            Command::Resume(reply) => {
                let result = self.pause_or_resume(vmm, Phase::Running).await;
                let _ = reply.send(result);
                None
            }
        }
    }

    async fn pause_or_resume(&mut self, vmm: &mut Vmm, to: Phase) -> Result<(), String> {
        let phase = self.exec.snapshot().phase;
        if !phase.can_become(to) {
            return Err(format!("it is {}", phase.status().as_str()));
        }
        let client = vmm.client().ok_or("the VMM has no API socket")?;
        let done = match to {
            Phase::Paused => client.pause().await,
            _ => client.resume().await,
        };
        done.map_err(|e| e.to_string())?;
        self.transition(to);
        Ok(())
    }

    /// Reads all new serial output into the sink and publishes progress.
    fn pump(&mut self) {
        let Some(tail) = self.tail.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; crate::capture::READ_STEP];
        loop {
            match tail.read_new(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Err(e) = self.sink.feed(&buf[..n]) {
                        tracing::warn!(error = %e, "cannot store output");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the serial output");
                    break;
                }
            }
        }
        self.exec.publish_logs(self.sink.progress());
    }

    async fn finish(&mut self, exit: VmmExit, cancelled: bool, timed_out: Option<Duration>) {
        self.pump();
        if let Err(e) = self.sink.finish() {
            tracing::warn!(error = %e, "cannot store output");
        }
        let ending = Ending {
            mode: self.exec.mode,
            vmm_exit: exit,
            agent: self.sink.report(),
            cancelled,
            timed_out,
            vmm_log_tail: log_tail(&self.exec.paths.vmm_log(), 12),
        };
        let mut result = decide(&ending);
        result.stdout = read_text(&self.exec.stdout_path());
        result.stderr = read_text(&self.exec.stderr_path());
        if let Some(mut vmm) = self.vmm.take() {
            vmm.cleanup();
        }
        if let Err(e) = self.copy_outputs().await {
            result = crate::result::ExecutionResult {
                stdout: result.stdout,
                stderr: result.stderr,
                ..crate::result::ExecutionResult::failed(e)
            };
        }
        for path in [
            self.exec.paths.vm_config(),
            self.exec.paths.config_drive(),
            self.exec.paths.metadata(),
        ] {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_file(self.exec.paths.api_socket());
        tracing::info!(exit_code = result.exit_code, error = %result.error_msg, killed = result.killed, "execution ended");
        let phase = if result.is_success() {
            Phase::Succeeded
        } else {
            Phase::Failed
        };
        self.record.result = Some(result.clone());
        self.record.finished_ms = Some(now_ms());
        self.record.phase = phase;
        // Persisted before it is published: a waiter may remove the directory at once.
        if let Err(e) = self.record.save_outcome(&self.exec.paths.record()) {
            tracing::warn!(error = %e, "cannot persist the result");
        }
        self.transition_with(phase, Some(Arc::new(result)));
        let mut progress = self.sink.progress();
        progress.done = true;
        self.exec.publish_logs(progress);
    }

    /// Copies each output image under `results_dir`.
    async fn copy_outputs(&self) -> Result<(), String> {
        let Some(dir) = &self.record.results_dir else {
            return Ok(());
        };
        if self.record.outputs.is_empty() {
            return Ok(());
        }
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| format!("cannot create results_dir {dir}: {e}"))?;
        for output in &self.record.outputs {
            tokio::fs::copy(&output.image, &output.destination)
                .await
                .map_err(|e| {
                    format!(
                        "cannot copy output {} to {}: {e}",
                        output.image, output.destination
                    )
                })?;
        }
        Ok(())
    }

    fn transition(&mut self, to: Phase) {
        self.transition_with(to, None);
    }

    fn transition_with(&mut self, to: Phase, result: Option<Arc<crate::result::ExecutionResult>>) {
        let mut phase = self.exec.snapshot().phase;
        match phase.transition(to) {
            Ok(()) => {
                self.record.phase = phase;
                self.exec.publish(Snapshot { phase, result });
            }
            Err(e) => {
                tracing::error!(error = %e, "refused lifecycle transition");
                if result.is_some() {
                    // Never leave waiters without the result.
                    self.exec.publish(Snapshot { phase: to, result });
                }
            }
        }
    }

    /// After a restart the record says only that the VM was booted: ask the
    /// VMM whether it runs or is paused.
    async fn sync_phase(&mut self, vmm: &Vmm) {
        let Some(client) = vmm.client() else { return };
        let phase = self.exec.snapshot().phase;
        if let Ok(info) = client.describe_instance().await {
            use firecracker_api::models::InstanceInfoState as State;
            match (phase, info.state) {
                (Phase::Booting, State::Running) => self.transition(Phase::Running),
                (Phase::Booting, State::Paused) => {
                    self.transition(Phase::Running);
                    self.transition(Phase::Paused);
                }
                _ => {}
            }
        }
    }
}

/// Stops the VMM; a VMM that cannot be stopped is reported as such.
async fn stop(vmm: &mut Vmm, policy: StopPolicy) -> (VmmExit, bool) {
    match vmm.stop(policy).await {
        Ok((exit, _)) => (exit, true),
        Err(e) => {
            tracing::error!(error = %e, "cannot stop the VMM");
            (VmmExit::Unknown, false)
        }
    }
}

async fn changed(tail: &mut Option<SerialTail>) -> std::io::Result<()> {
    match tail {
        Some(tail) => tail.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
