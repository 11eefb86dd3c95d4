//! One execution's lifecycle, as one state machine.
//!
//! ```text
//!            start accepted        guest booted
//!  Pending ───────────────▶ Booting ──────────▶ Running ◀──resume──▶ Paused
//!     │                        │                   │                   │
//!     │ VM creation failed     │ exit / crash      │ exit / crash      │ cancel, exit
//!     ▼                        ▼                   ▼                   ▼
//!  Failed ◀──────────────── (any live phase) ──cancel──▶ Stopping ──▶ Failed (killed)
//!                              │                   │
//!                              └──────────────▶ Succeeded
//! ```
//!
//! A guest that ends while paused (its exit was already under way when the
//! pause landed) goes straight from `Paused` to `Succeeded` or `Failed`.
//!
//! Only [`Phase::transition`] moves an execution between phases; an
//! out-of-phase request (pause a paused VM, resume a running one, anything on
//! a finished one) is refused with the phase it found.

use serde::{Deserialize, Serialize};

use crate::result::ExecutionStatus;

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Accepted and validated; the VMM is being launched.
    Pending,
    /// The VMM runs and is booting the guest.
    Booting,
    /// The guest runs.
    Running,
    /// The guest is paused.
    Paused,
    /// Cancel was asked; the VMM is being stopped.
    Stopping,
    /// Ended: the workload exited 0.
    Succeeded,
    /// Ended: the workload failed, the VM failed, or it was cancelled.
    Failed,
}

/// An out-of-phase transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot go from {from:?} to {to:?}")]
pub struct InvalidTransition {
    /// The phase the execution was in.
    pub from: Phase,
    /// The phase asked for.
    pub to: Phase,
}

impl Phase {
    /// Every phase, for table tests.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Booting,
        Phase::Running,
        Phase::Paused,
        Phase::Stopping,
        Phase::Succeeded,
        Phase::Failed,
    ];

    /// True for the two phases an execution never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }

    /// True while a VMM process may exist.
    pub fn is_live(self) -> bool {
        !self.is_terminal()
    }

    /// Whether `self -> to` is allowed.
    pub fn can_become(self, to: Phase) -> bool {
        use Phase::*;
        matches!(
            (self, to),
            (Pending, Booting | Failed | Stopping)
                | (Booting, Running | Succeeded | Failed | Stopping)
                | (Running, Paused | Succeeded | Failed | Stopping)
                // The guest may finish while a pause is being applied.
                | (Paused, Running | Succeeded | Failed | Stopping)
                | (Stopping, Failed | Succeeded)
        )
    }

    /// Moves to `to` if allowed.
    pub fn transition(&mut self, to: Phase) -> Result<(), InvalidTransition> {
        if self.can_become(to) {
            *self = to;
            Ok(())
        } else {
            Err(InvalidTransition { from: *self, to })
        }
    }

    /// The status the node's executor interface reports for this phase.
    pub fn status(self) -> ExecutionStatus {
        match self {
            Phase::Pending => ExecutionStatus::Pending,
            Phase::Booting | Phase::Running | Phase::Stopping => ExecutionStatus::Running,
            Phase::Paused => ExecutionStatus::Paused,
            Phase::Succeeded => ExecutionStatus::Success,
            Phase::Failed => ExecutionStatus::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;

    /// Every pair of phases, with whether the transition is allowed.
    #[test]
    fn transition_table() {
        let allowed = [
            (Pending, Booting),
            (Pending, Failed),
            (Pending, Stopping),
            (Booting, Running),
            (Booting, Succeeded),
            (Booting, Failed),
            (Booting, Stopping),
            (Running, Paused),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Stopping),
            (Paused, Running),
            (Paused, Succeeded),
            (Paused, Failed),
            (Paused, Stopping),
            (Stopping, Failed),
            (Stopping, Succeeded),
        ];
        for from in Phase::ALL {
            for to in Phase::ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from:?} -> {to:?}");
                let mut p = from;
                assert_eq!(p.transition(to).is_ok(), want);
                assert_eq!(p, if want { to } else { from });
            }
        }
    }

    #[test]
    fn terminal_phases_are_final() {
        for p in [Succeeded, Failed] {
            assert!(p.is_terminal());
            assert!(Phase::ALL.iter().all(|&to| !p.can_become(to)));
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(Pending.status(), ExecutionStatus::Pending);
        assert_eq!(Stopping.status(), ExecutionStatus::Running);
        assert_eq!(Paused.status(), ExecutionStatus::Paused);
        assert_eq!(Succeeded.status(), ExecutionStatus::Success);
        assert_eq!(Failed.status(), ExecutionStatus::Failed);
    }
}
