//! What an execution reports back: [`ExecutionResult`], [`ExecutionStatus`] and
//! the [`ListItem`]s of `list`.
//!
//! JSON names are the reference node's (`types/execution.go` of NuNet's
//! device-management-service): a result is
//! `{"stdout", "stderr", "exit_code", "error_msg", "killed"}` and a status is
//! one of `"pending"`, `"running"`, `"paused"`, `"failed"`, `"success"`. The
//! node's `ExecutionListItem` has no JSON tags (Go writes `ExecutionID` and
//! `Running`); [`ListItem`] writes snake_case names and also reads Go's.

use serde::{Deserialize, Serialize};

/// The result of one execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutionResult {
    /// The workload's standard output (the serial console in plain mode).
    pub stdout: String,
    /// The workload's standard error (empty in plain mode).
    pub stderr: String,
    /// The workload's exit code; -1 when the execution failed.
    pub exit_code: i32,
    /// Why the execution failed; empty when it did not.
    pub error_msg: String,
    /// True when the execution was killed from outside (cancel, cleanup).
    pub killed: bool,
    /// True when `stdout` holds only the tail of the output (an fcexec
    /// addition; the whole output is in the logs).
    #[serde(skip_serializing_if = "is_false")]
    pub stdout_truncated: bool,
    /// True when `stderr` holds only the tail of the output.
    #[serde(skip_serializing_if = "is_false")]
    pub stderr_truncated: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl ExecutionResult {
    /// A result with this exit code and no output yet.
    pub fn new(exit_code: i32) -> ExecutionResult {
        ExecutionResult {
            exit_code,
            ..ExecutionResult::default()
        }
    }

    /// A failed result: exit code -1 and a non-empty `error_msg` (an empty
    /// `reason` becomes "execution failed").
    pub fn failed(reason: impl Into<String>) -> ExecutionResult {
        let mut error_msg = reason.into();
        if error_msg.trim().is_empty() {
            error_msg = "execution failed".to_string();
        }
        ExecutionResult {
            exit_code: -1,
            error_msg,
            ..ExecutionResult::default()
        }
    }

    /// A failed result for an execution that was killed from outside.
    pub fn killed(reason: impl Into<String>) -> ExecutionResult {
        ExecutionResult {
            killed: true,
            ..ExecutionResult::failed(reason)
        }
    }

    /// True when the workload exited 0 and nothing failed.
    pub fn is_success(&self) -> bool {
        self.exit_code == 0 && self.error_msg.is_empty() && !self.killed
    }

    /// The status this result gives its execution.
    pub fn status(&self) -> ExecutionStatus {
        if self.is_success() {
            ExecutionStatus::Success
        } else {
            ExecutionStatus::Failed
        }
    }
}

/// The status of an execution, as the node names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    /// Accepted, the VM is not running yet.
    Pending,
    /// The VM is running.
    Running,
    /// The VM is paused.
    Paused,
    /// Ended without success (non-zero exit, VMM or agent failure, killed).
    Failed,
    /// Ended with exit code 0.
    Success,
}

impl ExecutionStatus {
    /// True for `failed` and `success`, from which nothing moves on.
    pub fn is_terminal(self) -> bool {
        matches!(self, ExecutionStatus::Failed | ExecutionStatus::Success)
    }

    /// The status's JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Pending => "pending",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Paused => "paused",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Success => "success",
        }
    }
}

impl std::fmt::Display for ExecutionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One execution in the answer of `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    /// The execution's ID.
    #[serde(alias = "ExecutionID")]
    pub execution_id: String,
    /// True while the VM runs (the node's `Running`).
    #[serde(alias = "Running", default)]
    pub running: bool,
    /// The execution's status (an fcexec addition).
    pub status: ExecutionStatus,
}

impl ListItem {
    /// The list entry for an execution in `status`.
    pub fn new(execution_id: impl Into<String>, status: ExecutionStatus) -> ListItem {
        ListItem {
            execution_id: execution_id.into(),
            running: status == ExecutionStatus::Running,
            status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_encodes_with_the_reference_names() {
        let r = ExecutionResult {
            stdout: "out".into(),
            stderr: "err".into(),
            exit_code: 3,
            error_msg: String::new(),
            killed: false,
            ..ExecutionResult::default()
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"stdout": "out", "stderr": "err", "exit_code": 3, "error_msg": "", "killed": false})
        );
    }

    #[test]
    fn result_decodes_what_the_node_writes() {
        // As Go's json.Marshal(types.NewFailedExecutionResult(err)) writes it.
        let go = r#"{"stdout":"","stderr":"","exit_code":-1,"error_msg":"boom","killed":true}"#;
        let r: ExecutionResult = serde_json::from_str(go).unwrap();
        assert_eq!(r, ExecutionResult::killed("boom"));
        let partial: ExecutionResult = serde_json::from_str(r#"{"exit_code":0}"#).unwrap();
        assert!(partial.is_success());
    }

    #[test]
    fn failed_always_has_exit_code_minus_one_and_a_message() {
        for reason in ["vmm exited with status 1", "", "  "] {
            let r = ExecutionResult::failed(reason);
            assert_eq!(r.exit_code, -1);
            assert!(!r.error_msg.trim().is_empty());
            assert!(!r.is_success());
            assert_eq!(r.status(), ExecutionStatus::Failed);
        }
        assert_eq!(ExecutionResult::new(0).status(), ExecutionStatus::Success);
        assert_eq!(ExecutionResult::new(2).status(), ExecutionStatus::Failed);
    }

    #[test]
    fn status_is_lowercase_json() {
        let all = [
            (ExecutionStatus::Pending, "pending", false),
            (ExecutionStatus::Running, "running", false),
            (ExecutionStatus::Paused, "paused", false),
            (ExecutionStatus::Failed, "failed", true),
            (ExecutionStatus::Success, "success", true),
        ];
        for (status, name, terminal) in all {
            assert_eq!(serde_json::to_value(status).unwrap(), json!(name));
            assert_eq!(
                serde_json::from_value::<ExecutionStatus>(json!(name)).unwrap(),
                status
            );
            assert_eq!(status.to_string(), name);
            assert_eq!(status.is_terminal(), terminal);
        }
        assert!(serde_json::from_value::<ExecutionStatus>(json!("Running")).is_err());
    }

    #[test]
    fn list_item_writes_snake_case_and_reads_go_names() {
        let item = ListItem::new("exec-1", ExecutionStatus::Running);
        assert_eq!(
            serde_json::to_value(&item).unwrap(),
            json!({"execution_id": "exec-1", "running": true, "status": "running"})
        );
        let go: ListItem = serde_json::from_value(
            json!({"ExecutionID": "e", "Running": false, "status": "paused"}),
        )
        .unwrap();
        assert_eq!(go, ListItem::new("e", ExecutionStatus::Paused));
    }
}
