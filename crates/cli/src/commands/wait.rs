//! `fcexec wait ID`: wait for an execution to end, print its result as JSON
//! (as `run --json` does), and exit as `run` does.
//!
//! With the executor free, this process opens it, which re-attaches to a
//! detached VM (or settles one that ended while nobody watched), and shuts
//! it down (the VMs left running) once the result is in. With another
//! process owning it, the record is polled until it holds a result; if that
//! owner goes away first, this process takes over. An execution whose record
//! cannot be read ends as the owner ends it: failed, `corrupt execution: ...`.

use anyhow::anyhow;
use fcexec::inspect::{self, InspectError, POLL_INTERVAL};
use fcexec::ExecutionResult;

use super::run::report;
use crate::args::WaitArgs;
use crate::context::{check_execution_id, Access, Context};
use crate::exit::Exit;
use crate::output;

/// How many times a waiter changes between polling and owning the executor
/// before it gives up.
const MAX_HANDOVERS: usize = 10;

/// Runs `fcexec wait`.
pub async fn run(ctx: &Context, args: WaitArgs) -> anyhow::Result<Exit> {
    check_execution_id(&args.id)?;
    let result = wait(ctx, &args.id).await?;
    output::print_json(&result)?;
    Ok(report(&args.id, &result))
}

async fn wait(ctx: &Context, id: &str) -> anyhow::Result<ExecutionResult> {
    for _ in 0..MAX_HANDOVERS {
        match ctx.open_or_view().await? {
            Access::Owner(executor) => {
                let result = executor.wait(id).await;
                executor.shutdown().await;
                return Ok(result?);
            }
            Access::ReadOnly { dir, runtime } => loop {
                match inspect::record(&dir, id) {
                    Ok(record) => {
                        if let Some(result) = record.result.clone() {
                            return Ok(inspect::with_output(&dir, &record, result));
                        }
                    }
                    Err(InspectError::Corrupt { reason, .. }) => {
                        return Ok(ExecutionResult::failed(format!(
                            "corrupt execution: {reason}"
                        )))
                    }
                    Err(e) => return Err(e.into()),
                }
                if inspect::lock_holder(&runtime).is_none() {
                    tracing::info!(%id, "the executor's owner went away; taking over");
                    break;
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            },
        }
    }
    Err(anyhow!(
        "stopped waiting for execution {id}: its executor kept changing hands; run `fcexec wait {id}` again"
    ))
}
