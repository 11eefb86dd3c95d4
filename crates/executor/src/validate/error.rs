//! [`ValidationError`]: every way a request can be refused, each message
//! naming the field (as a JSON path), the value, and the fix.

use std::time::Duration;

use crate::resources::ResourceError;
use crate::spec::SpecError;

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// A required field is absent or empty.
    #[error("{field}: missing or empty; {fix}")]
    Missing {
        /// JSON path.
        field: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// An ID or name that is unsafe in paths or too long.
    #[error(
        "{field}: {value:?} {reason}; use 1 to 64 characters from A-Z, a-z, 0-9, '.', '_' and '-', \
         not starting with '.'"
    )]
    InvalidId {
        /// JSON path.
        field: String,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host path does not exist.
    #[error("{field}: {path} does not exist; {fix}")]
    NotFound {
        /// JSON path.
        field: String,
        /// The path given.
        path: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// A host path cannot be read, written or resolved.
    #[error("{field}: cannot use {path}: {source}; {fix}")]
    Inaccessible {
        /// JSON path.
        field: String,
        /// The path given.
        path: String,
        /// The cause.
        source: std::io::Error,
        /// How to fix it.
        fix: &'static str,
    },
    /// A host path is the wrong kind of file.
    #[error("{field}: {path} is {found}; {fix}")]
    WrongFileType {
        /// JSON path.
        field: String,
        /// The path given.
        path: String,
        /// What it is (e.g. "a directory").
        found: &'static str,
        /// How to fix it.
        fix: &'static str,
    },
    /// The kernel is not an ELF file.
    #[error(
        "{field}: {path} is not an ELF kernel ({detail}); give the path of an uncompressed ELF \
         kernel (vmlinux)"
    )]
    NotElfKernel {
        /// JSON path.
        field: String,
        /// The path given.
        path: String,
        /// What it looks like instead.
        detail: &'static str,
    },
    /// A value is longer than allowed.
    #[error("{field}: {len} bytes is more than the {max} allowed; {fix}")]
    TooLong {
        /// JSON path.
        field: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
        /// How to fix it.
        fix: String,
    },
    /// A value of the right type that is not acceptable.
    #[error("{field}: {value} {reason}; {fix}")]
    InvalidValue {
        /// JSON path.
        field: String,
        /// The value given (shortened).
        value: String,
        /// What is wrong with it.
        reason: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// A feature fcexec does not implement yet.
    #[error("{field}: {value} is not supported yet; {fix}")]
    NotSupported {
        /// JSON path.
        field: String,
        /// The value given.
        value: String,
        /// How to fix it.
        fix: &'static str,
    },
    /// One file given twice (the same device and inode, or the same block
    /// device), whatever the names.
    #[error(
        "{field}: {path} is the same file as {other}; the kernel, the initrd, the root file \
         system and every volume must be distinct files (a hard link or symbolic link counts \
         as the same file): give a copy, or attach it once"
    )]
    DuplicateDrive {
        /// JSON path.
        field: String,
        /// The resolved path.
        path: String,
        /// The JSON path of the other use.
        other: String,
    },
    /// A resolved path outside [`super::PathPolicy::allowed_dirs`].
    #[error(
        "{field}: {path} (resolved: {resolved}) is outside the directories this executor takes \
         images and volumes from ({allowed}); put the file in one of them, or have the node's \
         operator add its directory to ExecutorConfig::path_policy"
    )]
    OutsideAllowedDirs {
        /// JSON path.
        field: String,
        /// The path given.
        path: String,
        /// The path with its symbolic links resolved.
        resolved: String,
        /// The allowed directories.
        allowed: String,
    },
    /// Validation took longer than [`crate::ExecutorConfig::validation_timeout`].
    #[error(
        "{field}: validation did not finish within {limit:?}{path}; a host path may be on a \
         file system that does not answer (a hung NFS or FUSE mount): repair the mount or give \
         another path (the limit is ExecutorConfig::validation_timeout)"
    )]
    TimedOut {
        /// JSON path of the field being checked (`request` when none was).
        field: String,
        /// ` (still checking <path>)`, or empty.
        path: String,
        /// The limit.
        limit: Duration,
    },
    /// More drives than fcexec attaches.
    #[error(
        "inputs, outputs: {count} drives in all, more than the {max} allowed (root file system, \
         inputs, outputs and, in agent mode, the config drive); attach fewer volumes"
    )]
    TooManyDrives {
        /// Drives the request needs.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The engine spec cannot be decoded.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The resources cannot be honoured.
    #[error(transparent)]
    Resources(#[from] ResourceError),
}

impl ValidationError {
    /// JSON path of the offending field (`inputs, outputs` for too many drives).
    pub fn field(&self) -> &str {
        match self {
            ValidationError::Missing { field, .. }
            | ValidationError::InvalidId { field, .. }
            | ValidationError::NotFound { field, .. }
            | ValidationError::Inaccessible { field, .. }
            | ValidationError::WrongFileType { field, .. }
            | ValidationError::NotElfKernel { field, .. }
            | ValidationError::TooLong { field, .. }
            | ValidationError::InvalidValue { field, .. }
            | ValidationError::NotSupported { field, .. }
            | ValidationError::DuplicateDrive { field, .. }
            | ValidationError::OutsideAllowedDirs { field, .. }
            | ValidationError::TimedOut { field, .. } => field,
            ValidationError::TooManyDrives { .. } => "inputs, outputs",
            ValidationError::Spec(e) => e.field(),
            ValidationError::Resources(e) => e.field(),
        }
    }
}
