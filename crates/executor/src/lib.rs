//! fcexec: runs jobs inside Firecracker microVMs and reports their results.
#![warn(missing_docs)]
