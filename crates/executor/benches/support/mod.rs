//! Helpers of the executor benchmark (`benches/executor.rs`): its
//! configuration, the shared context and report, statistics, readings from
//! `/proc` and `getrusage`, the raw-VMM runner used as the baseline, whole
//! processes reaped with `wait4` (the CLI), and the printed tables.

pub mod config;
pub mod context;
pub mod process;
pub mod procfs;
pub mod raw;
pub mod report;
pub mod stats;
pub mod table;
