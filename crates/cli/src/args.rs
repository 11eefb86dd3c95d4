//! The command line, as clap parses it: global options and one subcommand.
//!
//! These are raw values; each command turns them into validated values (for
//! `run`, an [`fcexec::ExecutionRequest`]) before doing any work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Runs jobs inside Firecracker microVMs and reports their results.
///
/// Start with `fcexec run`: with no kernel it boots the built-in test guest,
/// which prints a greeting. `fcexec doctor` checks this host.
#[derive(Debug, Parser)]
#[command(name = "fcexec", version, after_help = crate::exit::EXIT_CODES_HELP)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Root of the state directory [default: /run/fcexec as root, else
    /// $XDG_RUNTIME_DIR/fcexec].
    #[arg(long, global = true, env = "FCEXEC_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The executor id: executions live under `<state dir>/<id>`, and one
    /// process at a time owns them.
    #[arg(
        long,
        global = true,
        env = "FCEXEC_EXECUTOR",
        default_value = "cli",
        value_name = "ID"
    )]
    pub executor: String,
    /// Log to stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a job in a new microVM and stream its output; exits with the
    /// workload's exit code.
    Run(Box<RunArgs>),
    /// List this executor's executions.
    Ps(PsArgs),
    /// Print an execution's output.
    Logs(LogsArgs),
    /// Wait for an execution to end and print its result as JSON; exits like `run`.
    Wait(WaitArgs),
    /// Stop a running execution (its result says killed).
    Cancel(IdArg),
    /// Remove an execution and its files, stopping it first if it runs.
    Rm(RmArgs),
    /// Stop and remove every execution of this executor.
    Cleanup,
    /// Check this host: firecracker, jailer, /dev/kvm, the state directory.
    Doctor,
}

impl Command {
    /// True for the commands whose exit code is a workload's (`run`, `wait`).
    pub fn reports_workload(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Wait(_))
    }
}

/// `fcexec run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The guest kernel (uncompressed ELF); without it, the built-in test guest.
    #[arg(long, value_name = "PATH", requires = "rootfs")]
    pub kernel: Option<PathBuf>,
    /// The root file system image (attached read-write).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub rootfs: Option<PathBuf>,
    /// An initrd.
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// The kernel command line [default: the executor's].
    #[arg(long, value_name = "STR")]
    pub kernel_args: Option<String>,
    /// vCPUs (fractional cores are rounded up).
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// An input image, attached read-only (the guest mounts the i-th at
    /// /mnt/input<i>). Repeatable.
    #[arg(long = "input", value_name = "PATH")]
    pub inputs: Vec<PathBuf>,
    /// An output image, attached read-write and copied under --results-dir
    /// at the end (mounted at /mnt/output<i>). Repeatable.
    #[arg(long = "output", value_name = "PATH", requires = "results_dir")]
    pub outputs: Vec<PathBuf>,
    /// Where output images are copied when the execution ends.
    #[arg(long, value_name = "DIR")]
    pub results_dir: Option<PathBuf>,
    /// The execution id [default: run-<unix ms>-<pid>].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Agent mode: a guest agent reports stdout, stderr and the exit code
    /// (always on for the built-in guest).
    #[arg(long)]
    pub agent: bool,
    /// The job handed to the guest agent (implies --agent); for the built-in
    /// guest e.g. "out:hi%0A,exit:3" [default: print a greeting].
    #[arg(long, value_name = "JOB")]
    pub job: Option<String>,
    /// Print the result as JSON at the end instead of streaming the output.
    #[arg(long, conflicts_with = "detach")]
    pub json: bool,
    /// Start, print the execution id, and leave the VM running.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the execution and its files once it ended.
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
}

/// `fcexec ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `fcexec logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Keep printing new output until the execution ends.
    #[arg(short, long)]
    pub follow: bool,
    /// Start with the last N lines of each stream.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// The execution id.
    pub id: String,
}

/// `fcexec wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The execution id.
    pub id: String,
}

/// A command that takes only an execution id.
#[derive(Debug, Args)]
pub struct IdArg {
    /// The execution id.
    pub id: String,
}

/// `fcexec rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// How long a running execution gets to stop, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// The execution id.
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kernel_and_rootfs_go_together_and_outputs_need_a_results_dir() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["fcexec"], args].concat());
        assert!(parse(&["run", "--kernel", "k"]).is_err());
        assert!(parse(&["run", "--kernel", "k", "--rootfs", "r"]).is_ok());
        assert!(parse(&["run", "--output", "o"]).is_err());
        assert!(parse(&["run", "--output", "o", "--results-dir", "/r"]).is_ok());
        assert!(parse(&["run", "--json", "--detach"]).is_err());
        let cli = parse(&["-vv", "ps", "--executor", "x"]).unwrap();
        assert_eq!((cli.global.verbose, cli.global.executor.as_str()), (2, "x"));
    }
}
