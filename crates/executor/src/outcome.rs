//! Turning how a run ended into its result: a pure function of what the
//! supervisor observed, so every rule is tested without a VM.

use std::time::Duration;

use fcexec_guest_protocol::ExitStatus;
use firecracker_api::VmmExit;

use crate::result::ExecutionResult;
use crate::spec::Mode;

/// What the guest agent reported (agent mode).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentReport {
    /// The agent's hello, once seen.
    pub hello: Option<String>,
    /// How the workload ended, once reported.
    pub exit: Option<ExitStatus>,
    /// The agent's own failure, if it reported one.
    pub fail: Option<String>,
    /// The first protocol error seen.
    pub protocol_error: Option<String>,
}

/// Why the executor stopped a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Cancel (or remove, or cleanup) asked.
    Cancelled,
    /// The guest agent did not say hello within `boot_timeout_ms`.
    BootTimeout(Duration),
    /// The execution ran past its `timeout_ms`.
    Timeout(Duration),
    /// The guest wrote more than the executor's output cap (bytes).
    OutputLimit(u64),
    /// Protocol 2: the connected agent sent nothing (not even a heartbeat)
    /// for this long.
    AgentSilent(Duration),
    /// Protocol 2: the agent broke the protocol (the report says how).
    ProtocolError,
}

/// Everything the supervisor saw at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// Plain or agent mode.
    pub mode: Mode,
    /// How the VMM process ended.
    pub vmm_exit: VmmExit,
    /// What the agent reported.
    pub agent: AgentReport,
    /// Why the executor stopped the VM, when it did.
    pub stopped: Option<StopReason>,
    /// The last lines of the VMM's own log, joined by ` | `.
    pub vmm_log_tail: String,
}

/// The result, without its stdout and stderr (the caller adds them).
pub fn decide(end: &Ending) -> ExecutionResult {
    // Output past the cap is lost: the result is incomplete whatever the exit.
    if let Some(StopReason::OutputLimit(limit)) = end.stopped {
        return ExecutionResult::failed(format!(
            "output limit reached: the guest wrote more than {} (stdout, stderr and console \
             together), so the VM was stopped and the output kept up to the limit; raise it \
             with ExecutorConfig::max_output or `fcexec run --max-output SIZE`",
            human_bytes(limit)
        ));
    }
    // A broken protocol makes everything the agent said suspect.
    if end.stopped == Some(StopReason::ProtocolError) {
        let error = end.agent.protocol_error.as_deref().unwrap_or("unknown");
        return ExecutionResult::failed(format!("guest protocol error: {error}"));
    }
    let cancelled = end.stopped == Some(StopReason::Cancelled);
    if let Some(exit) = end.agent.exit.filter(|_| end.mode == Mode::Agent) {
        return workload_result(exit, cancelled);
    }
    match end.stopped {
        Some(StopReason::Cancelled) => {
            return ExecutionResult::killed("cancelled: the VM was stopped on request")
        }
        Some(StopReason::AgentSilent(limit)) => {
            return ExecutionResult::failed(format!(
                "the guest agent stopped responding: no frame, not even a heartbeat, for \
                 {limit:?}, so the VM was stopped; the agent hung or the guest froze"
            ))
        }
        Some(StopReason::BootTimeout(limit)) => {
            return ExecutionResult::failed(format!(
                "boot timed out: the guest agent did not say hello within {limit:?}; \
                 is the fcexec agent installed, and is boot_timeout_ms long enough?"
            ))
        }
        Some(StopReason::Timeout(limit)) => {
            return ExecutionResult::failed(format!(
                "timed out after {limit:?}: the VM was stopped; give a longer timeout_ms \
                 (or `fcexec run --timeout`) if the job needs more time"
            ))
        }
        Some(StopReason::OutputLimit(_) | StopReason::ProtocolError) | None => {}
    }
    if let Some(reason) = end.agent.fail.as_ref().filter(|_| end.mode == Mode::Agent) {
        return ExecutionResult::failed(format!("guest agent failed: {reason}"));
    }
    // Firecracker 1.16 sometimes exits 0 after a guest crash (a race in its
    // vCPU exit path), so the log, not the status, says whether it crashed.
    if let Some(cause) = crash_cause(&end.vmm_log_tail) {
        return ExecutionResult::failed(cause);
    }
    // A VMM that died explains a frame it cut short, not the other way round.
    if !end.vmm_exit.success() {
        return ExecutionResult::failed(vmm_failure(end.vmm_exit, &end.vmm_log_tail));
    }
    if let Some(error) = end
        .agent
        .protocol_error
        .as_ref()
        .filter(|_| end.mode == Mode::Agent)
    {
        return ExecutionResult::failed(format!("guest protocol error: {error}"));
    }
    match (end.mode, end.vmm_exit) {
        (Mode::Plain, VmmExit::Exited(0)) => ExecutionResult::new(0),
        (Mode::Agent, VmmExit::Exited(0)) if end.agent.hello.is_none() => ExecutionResult::failed(
            "the guest stopped without a word from the fcexec agent; is the agent installed in the guest? \
             (use plain mode for guests without it)",
        ),
        (Mode::Agent, VmmExit::Exited(0)) => {
            ExecutionResult::failed("the guest stopped before the agent reported an exit code")
        }
        (_, exit) => ExecutionResult::failed(vmm_failure(exit, &end.vmm_log_tail)),
    }
}

/// The result of a workload that ended as `exit`, `cancelled` or not.
fn workload_result(exit: ExitStatus, cancelled: bool) -> ExecutionResult {
    match (exit, cancelled) {
        (ExitStatus::Code(code), false) => ExecutionResult::new(i32::from(code)),
        (ExitStatus::Code(code), true) => ExecutionResult {
            error_msg: format!(
                "cancelled: the workload stopped on request and exited with code {code}"
            ),
            ..ExecutionResult::new(i32::from(code))
        },
        (ExitStatus::Signal(signal), false) => ExecutionResult::killed(format!(
            "the workload was killed by signal {signal}{}",
            signal_name(signal)
        )),
        (ExitStatus::Signal(9), true) => ExecutionResult::killed(
            "cancelled: the workload did not stop within its grace period, so the agent \
             killed it (signal 9, SIGKILL)",
        ),
        (ExitStatus::Signal(signal), true) => ExecutionResult::killed(format!(
            "cancelled: the workload was terminated by signal {signal}{}",
            signal_name(signal)
        )),
    }
}

/// ` (SIGTERM)` and the like for the common signals; empty otherwise.
fn signal_name(signal: u8) -> &'static str {
    match signal {
        1 => " (SIGHUP)",
        2 => " (SIGINT)",
        6 => " (SIGABRT)",
        9 => " (SIGKILL)",
        11 => " (SIGSEGV)",
        15 => " (SIGTERM)",
        _ => "",
    }
}

/// `bytes` as a short human figure: "1 GiB", "512 KiB", "100 bytes".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if bytes >= size && bytes % size == 0 {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// The guest crash the VMM's log reports, if any.
pub fn crash_cause(log_tail: &str) -> Option<&'static str> {
    if log_tail.contains("exit reason on vcpu run: Shutdown") {
        Some("the guest triple-faulted (KVM_EXIT_SHUTDOWN) and the VMM stopped")
    } else if log_tail.contains("KVM_EXIT_INTERNAL_ERROR") {
        Some("the guest ran an instruction KVM could not emulate (KVM_EXIT_INTERNAL_ERROR) and the VMM stopped")
    } else {
        None
    }
}

/// A reason for a VMM failure that a user can act on.
pub fn vmm_failure(exit: VmmExit, log_tail: &str) -> String {
    if let Some(cause) = crash_cause(log_tail) {
        return cause.to_string();
    }
    match exit {
        VmmExit::Signaled(_) | VmmExit::Unknown => format!("the VMM {exit}"),
        VmmExit::Exited(_) => {
            let last: Vec<&str> = log_tail.rsplit(" | ").take(2).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            format!("the VMM {exit}; its log ends with: {}", last.join(" | "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(mode: Mode, vmm_exit: VmmExit) -> Ending {
        Ending {
            mode,
            vmm_exit,
            agent: AgentReport::default(),
            stopped: None,
            vmm_log_tail: String::new(),
        }
    }

    #[test]
    fn signals_cancels_and_silence_say_what_happened() {
        let with = |exit, stopped| Ending {
            agent: AgentReport {
                hello: Some("hi".into()),
                exit: Some(exit),
                ..AgentReport::default()
            },
            stopped,
            ..end(Mode::Agent, VmmExit::Exited(0))
        };
        let r = decide(&with(ExitStatus::Signal(11), None));
        assert!(
            r.killed && r.error_msg.contains("signal 11 (SIGSEGV)"),
            "{r:?}"
        );
        let r = decide(&with(ExitStatus::Code(3), Some(StopReason::Cancelled)));
        assert_eq!(r.exit_code, 3);
        assert!(r.error_msg.contains("exited with code 3") && !r.is_success());
        let r = decide(&with(ExitStatus::Signal(9), Some(StopReason::Cancelled)));
        assert!(r.killed && r.error_msg.contains("grace period"), "{r:?}");
        let r = decide(&with(ExitStatus::Signal(15), Some(StopReason::Cancelled)));
        assert!(r.killed && r.error_msg.contains("SIGTERM"), "{r:?}");
        let silent = Ending {
            stopped: Some(StopReason::AgentSilent(Duration::from_secs(2))),
            ..end(Mode::Agent, VmmExit::Exited(0))
        };
        assert!(decide(&silent).error_msg.contains("stopped responding"));
        let broken = Ending {
            agent: AgentReport {
                protocol_error: Some("bad key".into()),
                ..AgentReport::default()
            },
            stopped: Some(StopReason::ProtocolError),
            ..end(Mode::Agent, VmmExit::Signaled(9))
        };
        assert_eq!(decide(&broken).error_msg, "guest protocol error: bad key");
    }

    #[test]
    fn plain_mode_clean_shutdown_is_success() {
        let r = decide(&end(Mode::Plain, VmmExit::Exited(0)));
        assert!(r.is_success());
    }

    #[test]
    fn agent_exit_codes_arrive() {
        for code in [0u8, 3, 255] {
            let mut e = end(Mode::Agent, VmmExit::Exited(0));
            e.agent.hello = Some("hi".into());
            e.agent.exit = Some(ExitStatus::Code(code));
            let r = decide(&e);
            assert_eq!(r.exit_code, i32::from(code));
            assert_eq!(r.error_msg, "");
        }
    }

    #[test]
    fn failures_carry_a_reason() {
        let cases = [
            (end(Mode::Plain, VmmExit::Signaled(9)), "signal 9 (SIGKILL)"),
            (
                end(Mode::Plain, VmmExit::Unknown),
                "without a recorded exit status",
            ),
            (end(Mode::Agent, VmmExit::Exited(0)), "agent installed"),
            (
                Ending {
                    vmm_log_tail: "Unexpected exit reason on vcpu run: Shutdown".into(),
                    ..end(Mode::Agent, VmmExit::Exited(1))
                },
                "triple-faulted",
            ),
            (
                // Firecracker may exit 0 after the crash: the log decides.
                Ending {
                    vmm_log_tail: "Unexpected exit reason on vcpu run: Shutdown".into(),
                    ..end(Mode::Plain, VmmExit::Exited(0))
                },
                "triple-faulted",
            ),
            (
                Ending {
                    agent: AgentReport {
                        fail: Some("boom".into()),
                        ..AgentReport::default()
                    },
                    ..end(Mode::Agent, VmmExit::Exited(0))
                },
                "guest agent failed: boom",
            ),
            (
                Ending {
                    agent: AgentReport {
                        protocol_error: Some("gap".into()),
                        ..AgentReport::default()
                    },
                    ..end(Mode::Agent, VmmExit::Exited(0))
                },
                "guest protocol error: gap",
            ),
            (
                Ending {
                    stopped: Some(StopReason::BootTimeout(Duration::from_secs(1))),
                    ..end(Mode::Plain, VmmExit::Signaled(15))
                },
                "boot timed out",
            ),
            (
                Ending {
                    stopped: Some(StopReason::Timeout(Duration::from_millis(500))),
                    ..end(Mode::Agent, VmmExit::Signaled(9))
                },
                "timed out after 500ms",
            ),
            (
                Ending {
                    stopped: Some(StopReason::OutputLimit(1 << 20)),
                    agent: AgentReport {
                        exit: Some(ExitStatus::Code(0)),
                        ..AgentReport::default()
                    },
                    ..end(Mode::Agent, VmmExit::Signaled(9))
                },
                "more than 1 MiB",
            ),
        ];
        for (e, needle) in cases {
            let r = decide(&e);
            assert_eq!(r.exit_code, -1, "{e:?}");
            assert!(
                r.error_msg.contains(needle),
                "{} lacks {needle}",
                r.error_msg
            );
        }
    }

    #[test]
    fn cancel_sets_killed_unless_the_workload_already_exited() {
        let mut e = end(Mode::Agent, VmmExit::Signaled(15));
        e.stopped = Some(StopReason::Cancelled);
        let r = decide(&e);
        assert!(r.killed);
        assert_eq!(r.exit_code, -1);
        e.agent.exit = Some(ExitStatus::Code(4));
        assert_eq!(decide(&e).exit_code, 4);
    }

    #[test]
    fn byte_figures() {
        assert_eq!(human_bytes(1 << 30), "1 GiB");
        assert_eq!(human_bytes(3 << 20), "3 MiB");
        assert_eq!(human_bytes(4096), "4 KiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
