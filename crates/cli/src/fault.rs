//! A test seam, off unless asked for: `FCEXEC_TEST_PAUSE_AT=<step>:<ms>`
//! makes every launch of this process pause for `<ms>` milliseconds before
//! launch step `<step>` (`create-dir`, `write-files`, `open-output`,
//! `save-record`, `spawn`, `save-vmm`, `wait-started`), so that a test can
//! kill the process at that point and check that nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use fcexec::{LaunchHook, LaunchStep};

/// The variable that asks for a pause.
pub const PAUSE_VAR: &str = "FCEXEC_TEST_PAUSE_AT";

/// Pauses before one launch step.
#[derive(Debug)]
struct PauseAt {
    step: LaunchStep,
    pause: Duration,
}

impl LaunchHook for PauseAt {
    fn before(&self, _id: &str, step: LaunchStep) -> Result<(), String> {
        if step == self.step {
            // Launch steps run on a blocking-pool thread: sleeping is fine.
            std::thread::sleep(self.pause);
        }
        Ok(())
    }
}

/// The hook `FCEXEC_TEST_PAUSE_AT` asks for, if it is set and well formed.
pub fn pause_from_env() -> Option<Arc<dyn LaunchHook>> {
    let value = std::env::var(PAUSE_VAR).ok()?;
    match parse(&value) {
        Some((step, pause)) => Some(Arc::new(PauseAt { step, pause })),
        None => {
            tracing::warn!(%value, "ignoring {PAUSE_VAR}: give <step>:<milliseconds>");
            None
        }
    }
}

fn parse(value: &str) -> Option<(LaunchStep, Duration)> {
    let (name, ms) = value.split_once(':')?;
    let step = LaunchStep::ALL
        .into_iter()
        .find(|s| step_name(*s) == name)?;
    Some((step, Duration::from_millis(ms.parse().ok()?)))
}

fn step_name(step: LaunchStep) -> &'static str {
    match step {
        LaunchStep::CreateDir => "create-dir",
        LaunchStep::WriteFiles => "write-files",
        LaunchStep::OpenOutput => "open-output",
        LaunchStep::SaveRecord => "save-record",
        LaunchStep::Spawn => "spawn",
        LaunchStep::SaveVmm => "save-vmm",
        LaunchStep::WaitStarted => "wait-started",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_parse() {
        assert_eq!(
            parse("save-vmm:1500"),
            Some((LaunchStep::SaveVmm, Duration::from_millis(1500)))
        );
        assert_eq!(parse("nope:1"), None);
        assert_eq!(parse("spawn"), None);
        for step in LaunchStep::ALL {
            assert_eq!(
                parse(&format!("{}:1", step_name(step))).map(|p| p.0),
                Some(step)
            );
        }
    }
}
