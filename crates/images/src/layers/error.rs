//! The refusals and failures of applying a layer; each names the layer
//! and the entry.

use std::path::PathBuf;

/// Errors of applying layers; each names the layer and entry it refused.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// An entry's path is absolute.
    #[error("layer {layer}: entry {entry:?} has an absolute path; layer paths must be relative")]
    AbsolutePath {
        /// The layer's index (0 is the bottom layer).
        layer: usize,
        /// The entry.
        entry: PathBuf,
    },
    /// An entry's path (or hard link target) has a `..` component.
    #[error("layer {layer}: entry {entry:?} has a `..` component, which could escape the root")]
    ParentComponent {
        /// The layer's index.
        layer: usize,
        /// The entry (or link target).
        entry: PathBuf,
    },
    /// A parent directory of the entry is a symbolic link.
    #[error("layer {layer}: entry {entry:?} would be written through the symbolic link {via:?}")]
    ThroughSymlink {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// The parent that is a symbolic link (relative to the root).
        via: PathBuf,
    },
    /// A parent of the entry exists and is not a directory.
    #[error("layer {layer}: entry {entry:?} needs {parent:?} to be a directory, and it is not")]
    NotADirectory {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// The parent.
        parent: PathBuf,
    },
    /// A hard link's target is missing or not a regular file in the root.
    #[error("layer {layer}: hard link {entry:?} points to {target:?}, which is not a regular file in the image")]
    BadHardLink {
        /// The layer's index.
        layer: usize,
        /// The hard link.
        entry: PathBuf,
        /// Its target.
        target: PathBuf,
    },
    /// The entry is a device node or of another refused type.
    #[error("layer {layer}: entry {entry:?} is a {kind}, which images may not contain")]
    RefusedType {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// What it is ("character device", ...).
        kind: &'static str,
    },
    /// A declared size is over the limit.
    #[error(
        "layer {layer}: entry {entry:?} declares {size} bytes, over the limit of {limit} {what}"
    )]
    TooLarge {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// Its declared size.
        size: u64,
        /// The limit exceeded.
        limit: u64,
        /// "per file" or "in total".
        what: &'static str,
    },
    /// The same path appears twice in one layer.
    #[error("layer {layer}: entry {entry:?} appears twice in the layer")]
    Duplicate {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
    },
    /// A whiteout names no valid file.
    #[error("layer {layer}: whiteout {entry:?} names no valid file")]
    BadWhiteout {
        /// The layer's index.
        layer: usize,
        /// The whiteout entry.
        entry: PathBuf,
    },
    /// Reading the archive failed (truncated or corrupt).
    #[error("layer {layer}: cannot read the archive{}: {source}", entry_suffix(.entry))]
    Archive {
        /// The layer's index.
        layer: usize,
        /// The entry being read, when known.
        entry: Option<PathBuf>,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Setting an extended attribute failed (never skipped: a dropped
    /// `security.capability` would change what a program may do).
    #[error(
        "layer {layer}: cannot set the extended attribute {name} on entry {entry:?}: {source}"
    )]
    Xattr {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// The attribute's name.
        name: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing to the staging directory failed.
    #[error("layer {layer}: cannot {what} for entry {entry:?}: {source}")]
    Io {
        /// The layer's index.
        layer: usize,
        /// The entry.
        entry: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn entry_suffix(entry: &Option<PathBuf>) -> String {
    entry
        .as_ref()
        .map(|e| format!(" at entry {e:?}"))
        .unwrap_or_default()
}
