//! Exit codes: every outcome of a command becomes one [`Exit`], and only
//! [`Exit::code`] turns it into a number.
//!
//! A `run --request` file that cannot be read or decoded counts as a wrong
//! command line ([`Exit::Usage`], 2); a request the executor refuses when it
//! starts is a failed run (125), like a bad `--kernel`.

use fcexec::ExecutionResult;

/// The exit codes, as `fcexec --help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0        success
  1-255    run, wait: the workload's own exit code
  1        any other command failed (doctor: a check failed)
  2        the command line is wrong (run: also a --request file that cannot
           be read or is not a request)
  125      run, wait: fcexec failed, or the execution failed without an exit
           code (VM error, killed, or a code outside 0-255); the reason is
           printed to stderr
  130      run: interrupted (Ctrl-C); the execution was cancelled
  143      run: terminated (SIGTERM); the execution was cancelled";

/// How `fcexec` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked (the workload exited 0).
    Success,
    /// The workload exited with this non-zero code.
    Workload(u8),
    /// A command other than run or wait failed.
    Failure,
    /// The command line is wrong, or `run --request`'s file cannot be read
    /// or decoded.
    Usage,
    /// run or wait: fcexec or the execution failed without a workload exit code.
    ExecutionFailed,
    /// run: Ctrl-C; the execution was cancelled.
    Interrupted,
    /// run: SIGTERM; the execution was cancelled.
    Terminated,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Workload(code) => code,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::ExecutionFailed => 125,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// How an execution's result ends `run` and `wait`, with the message to
    /// print when it failed without a workload exit code.
    pub fn of_result(id: &str, result: &ExecutionResult) -> (Exit, Option<String>) {
        let failed = |why: String| (Exit::ExecutionFailed, Some(why));
        if result.killed {
            let why = non_empty(&result.error_msg, "killed");
            return failed(format!("execution {id} was killed: {why}"));
        }
        if !result.error_msg.is_empty() {
            return failed(format!("execution {id} failed: {}", result.error_msg));
        }
        match u8::try_from(result.exit_code) {
            Ok(0) => (Exit::Success, None),
            Ok(code) => (Exit::Workload(code), None),
            Err(_) if result.exit_code == -1 => failed(format!("execution {id} failed")),
            Err(_) => failed(format!(
                "execution {id} exited with {}, which does not fit in an exit status",
                result.exit_code
            )),
        }
    }
}

fn non_empty<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.is_empty() {
        default
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_to_documented_codes() {
        let cases = [
            (ExecutionResult::new(0), 0, false),
            (ExecutionResult::new(3), 3, false),
            (ExecutionResult::new(255), 255, false),
            (ExecutionResult::new(256), 125, true),
            (ExecutionResult::new(-1), 125, true),
            (
                ExecutionResult::failed("vmm exited with status 1"),
                125,
                true,
            ),
            (ExecutionResult::killed("cancelled"), 125, true),
            (
                ExecutionResult {
                    error_msg: "copy failed".into(),
                    ..ExecutionResult::new(0)
                },
                125,
                true,
            ),
        ];
        for (result, code, message) in cases {
            let (exit, why) = Exit::of_result("e", &result);
            assert_eq!(exit.code(), code, "{result:?}");
            assert_eq!(why.is_some(), message, "{result:?}");
        }
        let (_, why) = Exit::of_result("e", &ExecutionResult::failed("boom"));
        assert_eq!(why.as_deref(), Some("execution e failed: boom"));
    }

    #[test]
    fn fixed_codes() {
        let all = [
            (Exit::Success, 0),
            (Exit::Failure, 1),
            (Exit::Usage, 2),
            (Exit::ExecutionFailed, 125),
            (Exit::Interrupted, 130),
            (Exit::Terminated, 143),
        ];
        for (exit, code) in all {
            assert_eq!(exit.code(), code);
        }
    }
}
