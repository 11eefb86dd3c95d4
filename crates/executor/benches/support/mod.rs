//! Helpers of the executor benchmark (`benches/executor.rs`): its
//! configuration, the shared context and report, statistics, readings from
//! `/proc` and `getrusage`, the raw-VMM runner used as the baseline, and the
//! printed tables.

pub mod config;
pub mod context;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod stats;
pub mod table;
