//! The error of a file operation, shared by the modules' error types.

use std::path::{Path, PathBuf};

/// A file operation that failed: what was being done, and to which file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what} {path}: {source}")]
pub struct FileError {
    /// What was being done.
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// A `map_err` function turning an I/O error on `path` into a
/// [`FileError`] (which `?` turns into the module's error).
pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FileError {
    let path = path.to_path_buf();
    move |source| FileError { what, path, source }
}
