//! What an execution leaves in its `results_dir` when it ends: each output
//! volume's image, and the workload's `stdout.log` and `stderr.log` (as the
//! reference node's other executors write them).

use std::path::Path;

use crate::execution::Execution;
use crate::record::ExecutionRecord;

/// Copies each output image under `results_dir`; the error names the copy
/// that failed.
pub async fn copy_outputs(record: &ExecutionRecord) -> Result<(), String> {
    let Some(dir) = &record.results_dir else {
        return Ok(());
    };
    if record.outputs.is_empty() {
        return Ok(());
    }
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| format!("cannot create results_dir {dir}: {e}"))?;
    for output in &record.outputs {
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

/// Writes the workload's output as `stdout.log` and `stderr.log` under
/// `results_dir`, when the request gave one. Blocking. Failures are logged:
/// the output stays available through `logs`.
pub fn write_logs(exec: &Execution, record: &ExecutionRecord) {
    let Some(dir) = &record.results_dir else {
        return;
    };
    let dir = Path::new(dir);
    if let Err(e) = std::fs::create_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot create results_dir");
        return;
    }
    for (from, name) in [
        (exec.stdout_path(), "stdout.log"),
        (exec.stderr_path(), "stderr.log"),
    ] {
        let to = dir.join(name);
        let copied = match std::fs::metadata(&from) {
            Ok(_) => std::fs::copy(&from, &to).map(drop),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&to, b""),
            Err(e) => Err(e),
        };
        if let Err(e) = copied {
            tracing::warn!(file = %to.display(), error = %e, "cannot write the log to results_dir");
        }
    }
}
