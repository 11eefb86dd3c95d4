//! Validation that cannot hang the executor: [`validate_within`] runs the
//! checks on the blocking pool, off the runtime's workers, and gives up after
//! [`ExecutorConfig::validation_timeout`], naming the field whose path was
//! being checked.
//!
//! The checks themselves open files with `O_NONBLOCK` (a FIFO, or a file
//! another process holds a lease on, answers at once instead of blocking),
//! but a file system that stops answering (a hung NFS server, a stuck FUSE
//! daemon) can still block `stat` or `read`. Then the blocking thread stays
//! stuck until the file system answers; the request is refused at the limit
//! and other executions go on.
//!
//! Test seam: [`OpenHook`] (the `#[doc(hidden)]`
//! [`ExecutorConfig::validation_hook`]) is called right before each host file
//! is opened; a test makes it block to stand in for such a file system.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{validate_checked, Checks, ValidatedRequest, ValidationError};
use crate::config::ExecutorConfig;
use crate::error::ExecutorError;
use crate::request::ExecutionRequest;
use crate::resources::HostLimits;

/// The default of [`ExecutorConfig::validation_timeout`].
pub const DEFAULT_VALIDATION_TIMEOUT: Duration = Duration::from_secs(10);

/// What an [`OpenHook`] calls: the field and the resolved path.
type OpenFn = dyn Fn(&str, &Path) + Send + Sync;

/// Test seam: called with the field and the resolved path right before each
/// host file is opened during validation (on the blocking pool).
#[derive(Clone)]
pub struct OpenHook(Arc<OpenFn>);

impl OpenHook {
    /// Wraps `f`.
    pub fn new(f: impl Fn(&str, &Path) + Send + Sync + 'static) -> OpenHook {
        OpenHook(Arc::new(f))
    }

    /// Calls it.
    pub(super) fn call(&self, field: &str, path: &Path) {
        (self.0)(field, path)
    }
}

impl std::fmt::Debug for OpenHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenHook")
    }
}

/// The field (and path) being checked, for the message of a time-out.
#[derive(Debug, Default)]
pub(super) struct Progress(Mutex<Option<(String, PathBuf)>>);

impl Progress {
    /// Notes that `field` (`path`) is being checked until the guard drops.
    pub(super) fn enter(&self, field: &str, path: &Path) -> ProgressGuard<'_> {
        self.set(Some((field.to_string(), path.to_path_buf())));
        ProgressGuard(self)
    }

    fn set(&self, value: Option<(String, PathBuf)>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn current(&self) -> Option<(String, PathBuf)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Clears the progress when dropped.
pub(super) struct ProgressGuard<'a>(&'a Progress);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        self.0.set(None);
    }
}

/// Validates `request` with `config`'s path policy on the blocking pool,
/// within `config.validation_timeout`.
pub async fn validate_within(
    request: ExecutionRequest,
    host: HostLimits,
    config: &ExecutorConfig,
) -> Result<ValidatedRequest, ExecutorError> {
    let id = request.execution_id.clone();
    let progress = Arc::new(Progress::default());
    let (policy, hook, seen) = (
        config.path_policy.clone(),
        config.validation_hook.clone(),
        progress.clone(),
    );
    let task = tokio::task::spawn_blocking(move || {
        let checks = Checks {
            policy: &policy,
            hook: hook.as_ref(),
            progress: Some(&seen),
        };
        validate_checked(&request, &host, &checks)
    });
    let limit = config.validation_timeout;
    match tokio::time::timeout(limit, task).await {
        Ok(Ok(valid)) => Ok(valid?),
        Ok(Err(e)) => Err(ExecutorError::Internal {
            id,
            reason: format!("validation failed: {e}"),
        }),
        Err(_) => {
            let (field, path) = match progress.current() {
                Some((field, path)) => (field, format!(" (still checking {})", path.display())),
                None => ("request".to_string(), String::new()),
            };
            tracing::warn!(execution = %id, %field, ?limit, "validation timed out");
            Err(ValidationError::TimedOut { field, path, limit }.into())
        }
    }
}
