//! `fcexec cancel`, `fcexec rm` and `fcexec cleanup`: the commands that
//! change executions, and so need to own the executor. When another process
//! owns it they fail, naming that process.

use std::time::Duration;

use anyhow::{anyhow, Context as _};

use crate::args::{IdArg, RmArgs};
use crate::context::{check_execution_id, Context};
use crate::exit::Exit;

/// Runs `fcexec cancel ID`: stops the VM; the result says killed.
pub async fn cancel(ctx: &Context, args: IdArg) -> anyhow::Result<Exit> {
    check_execution_id(&args.id)?;
    let executor = ctx.open().await?;
    let cancelled = executor.cancel(&args.id).await;
    executor.shutdown().await;
    cancelled?;
    println!("{}", args.id);
    Ok(Exit::Success)
}

/// Runs `fcexec rm ID`: stops the VM if it runs, then deletes the execution.
pub async fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<Exit> {
    check_execution_id(&args.id)?;
    let timeout = Duration::try_from_secs_f64(args.timeout).map_err(|_| {
        anyhow!(
            "--timeout {}: give a number of seconds, 0 or more",
            args.timeout
        )
    })?;
    let executor = ctx.open().await?;
    let removed = executor.remove(&args.id, timeout).await;
    executor.shutdown().await;
    removed.with_context(|| format!("cannot remove execution {}", args.id))?;
    println!("{}", args.id);
    Ok(Exit::Success)
}

/// Runs `fcexec cleanup`: stops and removes every execution of the executor.
pub async fn cleanup(ctx: &Context) -> anyhow::Result<Exit> {
    let executor = ctx.open().await?;
    let count = executor.list().len();
    let cleaned = executor.cleanup().await;
    executor.shutdown().await;
    cleaned?;
    println!("removed {count} execution(s)");
    Ok(Exit::Success)
}
