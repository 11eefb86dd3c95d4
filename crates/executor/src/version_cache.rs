//! Firecracker's version, checked once per binary: `firecracker --version`
//! costs a process (1 to 3.5 ms measured, most of an executor's start-up),
//! so a supported answer is remembered in the runtime directory, keyed by
//! the binary's device, inode, size and modification time. A replaced or
//! changed binary is probed again; only supported versions are remembered.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::ExecutorError;

/// The file, in `<runtime root>/<executor id>/`, that remembers the answer.
const CACHE_FILE: &str = "firecracker-version";

/// What identifies one binary on this host.
fn identity(binary: &Path) -> Option<String> {
    let meta = std::fs::metadata(binary).ok()?;
    Some(format!(
        "{} {} {} {}.{} {}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        binary.display()
    ))
}

/// Checks that `binary` is a supported firecracker, using the answer
/// remembered in `runtime_dir`. Returns what to remember (with
/// [`remember`], once the directory exists) when it had to probe.
pub async fn check(binary: &Path, runtime_dir: &Path) -> Result<Option<String>, ExecutorError> {
    let id = identity(binary);
    if let (Some(id), Ok(cached)) = (&id, std::fs::read_to_string(runtime_dir.join(CACHE_FILE))) {
        if cached.lines().next() == Some(id.as_str()) {
            return Ok(None);
        }
    }
    let version = firecracker_api::version::check(binary).await?;
    Ok(id.map(|id| format!("{id}\n{version}\n")))
}

/// Remembers a probed answer in `runtime_dir`.
pub fn remember(runtime_dir: &Path, answer: &str) {
    if let Err(e) = std::fs::write(runtime_dir.join(CACHE_FILE), answer) {
        tracing::debug!(error = %e, "cannot remember firecracker's version");
    }
}
