//! The subcommands, one module each, and [`execute`], which picks one.
//!
//! Each command returns the [`Exit`] it ends with, or an error; `main` turns
//! both into the exit code.

mod image;
mod logs;
mod manage;
mod ps;
mod request;
mod run;
mod wait;

use crate::args::{Cli, Command};
use crate::context::Context;
use crate::exit::Exit;

/// Runs the command of `cli`.
pub async fn execute(cli: Cli) -> anyhow::Result<Exit> {
    if let Command::Image(command) = &cli.command {
        // Building an image needs no executor.
        return image::run(command, &cli.global).await;
    }
    if let Command::Doctor(args) = &cli.command {
        // Doctor reports a missing state directory rather than failing on it.
        return crate::doctor::run(&cli.global, args).await;
    }
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Run(args) => run::run(&ctx, *args).await,
        Command::Ps(args) => ps::run(&ctx, args).await,
        Command::Logs(args) => logs::run(&ctx, args).await,
        Command::Wait(args) => wait::run(&ctx, args).await,
        Command::Cancel(args) => manage::cancel(&ctx, args).await,
        Command::Inspect(args) => ps::inspect(&ctx, args).await,
        Command::Rm(args) => manage::rm(&ctx, args).await,
        Command::Cleanup => manage::cleanup(&ctx).await,
        Command::Doctor(args) => crate::doctor::run(&cli.global, &args).await,
        Command::Image(command) => image::run(&command, &cli.global).await,
    }
}
