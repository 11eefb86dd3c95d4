//! `fcexec logs [-f] [--tail N] ID`: print an execution's output, stdout to
//! stdout and stderr to stderr.
//!
//! With the executor free, this process opens it (re-attaching to a detached
//! VM) and streams from it. With another process owning it, the files are
//! read directly; when following and that owner goes away before the
//! execution ends, this process takes over the executor and goes on without
//! printing anything twice.

use anyhow::anyhow;
use fcexec::{inspect, LogOptions};

use crate::args::LogsArgs;
use crate::context::{check_execution_id, Access, Context};
use crate::exit::Exit;
use crate::stream::{Copier, Source};

/// How many times a follower changes between reading the files and owning
/// the executor before it gives up.
const MAX_HANDOVERS: usize = 10;

/// Runs `fcexec logs`.
pub async fn run(ctx: &Context, args: LogsArgs) -> anyhow::Result<Exit> {
    check_execution_id(&args.id)?;
    let id = args.id.as_str();
    let mut options = LogOptions {
        follow: args.follow,
        tail: args.tail,
    };
    let mut copier = Copier::new();
    let mut access = ctx.open_or_view().await?;
    for _ in 0..MAX_HANDOVERS {
        match access {
            Access::Owner(executor) => {
                let logs = executor.logs(id, options)?;
                copier.restart_at((0, 0));
                copier.copy(&mut Source::Owner(logs)).await?;
                return Ok(Exit::Success);
            }
            Access::ReadOnly { dir } => {
                let files = inspect::logs(&dir, id, options)?;
                copier.restart_at(files.offsets());
                copier.copy(&mut Source::Files(files)).await?;
                let ended = inspect::record(&dir, id).map_or(true, |r| r.phase.is_terminal());
                if !options.follow || ended {
                    return Ok(Exit::Success);
                }
                tracing::info!(%id, "the executor's owner went away; taking over");
                // From now on read from the start; the copier skips what it printed.
                options.tail = None;
                access = ctx.open_or_view().await?;
            }
        }
    }
    Err(anyhow!(
        "stopped following execution {id}: its executor kept changing hands; run `fcexec logs -f {id}` again"
    ))
}
