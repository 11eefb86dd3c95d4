//! `fcexec logs [-f] [--tail N] [--console] ID`: print an execution's output, stdout to
//! stdout and stderr to stderr.
//!
//! The output is read with [`fcexec::inspect::logs`], from the files, or (in
//! agent mode, before the execution ended) decoded from its serial console,
//! so it is there at once even when no process supervises the execution
//! (after `fcexec run -d`) or one in another process does.
//!
//! With the executor free, this process also opens it, which re-attaches a
//! supervisor to a VM left running: it settles the execution when its VM
//! ends, so that a follower sees the end. It is shut down (the VM left
//! running) before the command returns. With another process owning it,
//! only the files are read; when following and that owner goes away before
//! the execution ends, this process takes over the executor and goes on
//! without printing anything twice.

use anyhow::anyhow;
use fcexec::{inspect, LogOptions};

use crate::args::LogsArgs;
use crate::context::{check_execution_id, Access, Context};
use crate::exit::Exit;
use crate::stream::{Copier, Source};

/// How many times a follower changes between reading the files and owning
/// the executor before it gives up.
const MAX_HANDOVERS: usize = 10;

/// The longest `logs` waits for a re-attached agent to send what it held.
const SETTLE_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

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
    let console = args.console;
    for _ in 0..MAX_HANDOVERS {
        match access {
            Access::Owner(executor) => {
                // The reader follows until the execution ends, which this
                // executor's supervisor settles. Without following, the
                // output a guest held while nobody listened comes first.
                if !options.follow {
                    executor.settle_output(id, SETTLE_LIMIT).await;
                }
                let dirs = (executor.state_dir(), executor.runtime_dir());
                let copied = copy(&mut copier, dirs, (id, console), options, true).await;
                executor.shutdown().await;
                copied?;
                return Ok(Exit::Success);
            }
            Access::ReadOnly { dir, runtime } => {
                copy(&mut copier, (&dir, &runtime), (id, console), options, false).await?;
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

/// Copies the output of execution `id` under `dirs` (data, runtime) to the
/// terminal, or its console log when `console`; `owned` when this process
/// owns the executor.
async fn copy(
    copier: &mut Copier,
    dirs: (&std::path::Path, &std::path::Path),
    (id, console): (&str, bool),
    options: LogOptions,
    owned: bool,
) -> anyhow::Result<()> {
    let logs = match console {
        true => inspect::console_logs(dirs.0, id, options)?,
        false => inspect::logs(dirs.0, id, options)?,
    };
    let mut logs = logs.locked_in(dirs.1);
    if owned {
        logs = logs.owned();
    }
    copier.restart_at(logs.offsets());
    copier.copy(&mut Source::Files(logs)).await
}
