//! The sections of the bench, one module each, and the warm-up that runs
//! before them. `benches/executor.rs` runs them in this order: 4, 1, 2, 5, 3,
//! B, T, N, J, E, C, H (C and H last: H writes tens of thousands of files).

pub mod breakdown;
pub mod cli;
pub mod concurrency;
pub mod cpu;
pub mod end_to_end;
pub mod endurance;
pub mod first_output;
pub mod history;
pub mod jail;
pub mod memory;
pub mod network;
pub mod throughput;

use crate::support::context::{exec_once, exec_over, hi_job, Ctx};
use crate::support::raw::RawMode;

/// Runs a few executions (over both transports) and raw VMMs before anything
/// is measured.
pub async fn warm_up(ctx: &Ctx) -> Result<(), String> {
    eprintln!("warm-up");
    for _ in 0..3 {
        exec_once(ctx, &hi_job()).await?;
        exec_over(ctx, &hi_job(), None).await?;
        if let Some(e) = ctx.raw.run(RawMode::NoApi).await.error {
            return Err(format!("raw VMM: {e}"));
        }
    }
    Ok(())
}
