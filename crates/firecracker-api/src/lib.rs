//! Typed Firecracker v1.16 API, an async client over its Unix socket, and VMM
//! process control.
#![warn(missing_docs)]

pub mod models;
