//! Helpers of the executor benchmark (`benches/executor.rs`): statistics,
//! readings from `/proc` and `getrusage`, the raw-VMM runner used as the
//! baseline, and the printed tables.

pub mod procfs;
pub mod raw;
pub mod stats;
pub mod table;
