//! The command line, as clap parses it: global options and one subcommand.
//!
//! These are raw values; each command turns them into validated values (for
//! `run`, an [`fcexec::ExecutionRequest`]) before doing any work. The one
//! exception is the value parsers at the end, [`parse_duration`] (`run
//! --timeout`) and [`parse_size`] (`run --max-output`), so that a malformed
//! value is a usage error naming its option, like any other.

use std::path::PathBuf;
use std::time::Duration;

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
    /// Root of the data directory: records and output [default: the state
    /// directory when --state-dir is given, else /var/lib/fcexec as root,
    /// else $XDG_STATE_HOME/fcexec].
    #[arg(long, global = true, env = "FCEXEC_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
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
    /// Run VMMs unjailed even as root (no jailer, no per-execution uid,
    /// chroot or cgroup limits). As root every VMM is jailed by default.
    #[arg(long, global = true, env = "FCEXEC_NO_JAIL")]
    pub no_jail: bool,
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
    /// List this executor's live executions (`-a`: every one kept).
    Ps(PsArgs),
    /// Print an execution's output.
    Logs(LogsArgs),
    /// Wait for an execution to end and print its result as JSON; exits like `run`.
    Wait(WaitArgs),
    /// Stop a running execution (its result says killed).
    Cancel(IdArg),
    /// Print one execution as JSON, with its isolation (uid, chroot, cgroup).
    Inspect(IdArg),
    /// Remove an execution and its files, stopping it first if it runs.
    Rm(RmArgs),
    /// Stop and remove every execution of this executor.
    Cleanup,
    /// Check this host: firecracker, jailer, /dev/kvm, the state directory
    /// (and with --kernel, a guest kernel for what fcexec's agent needs).
    Doctor(DoctorArgs),
    /// Root file systems from container images.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// `fcexec image`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build an ext4 root file system from a registry reference, an OCI
    /// image layout directory, a `docker save` archive or a directory (as
    /// root: it keeps owners).
    Build(ImageBuildArgs),
    /// List the images the executor has cached (`<data dir>/.cache/images`):
    /// key, size, last use and source.
    Ls,
    /// Remove a cached image, by key (or the start of one) or source.
    Rm {
        /// The image's key, the start of its key, or its source as listed.
        key: String,
    },
}

/// `fcexec image build`.
#[derive(Debug, Args)]
pub struct ImageBuildArgs {
    /// The image: a registry reference (`registry.example:5000/repo:tag`,
    /// `repo@sha256:...`; credentials from the Docker config file), or the
    /// path of an OCI image layout directory, a `docker save` archive, or
    /// a directory (paths are absolute, start with ./ or ../, or exist).
    pub source: String,
    /// The ext4 image to write (replaced when it exists).
    #[arg(short, long, value_name = "FILE")]
    pub output: std::path::PathBuf,
}

/// `fcexec doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Also look into this guest kernel (an uncompressed ELF vmlinux) for
    /// what fcexec's guest agent needs: virtio-mmio, virtio-blk, ext4,
    /// vsock, devtmpfs, initramfs.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<std::path::PathBuf>,
}

impl Command {
    /// True for the commands whose exit code is a workload's (`run`, `wait`).
    pub fn reports_workload(&self) -> bool {
        matches!(self, Command::Run(_) | Command::Wait(_))
    }
}

/// `fcexec run`.
///
/// The request comes either from the options below (`--kernel` ... `--job`,
/// or the built-in guest) or, whole, from `--request`; the two conflict.
/// `--id` and `--timeout` change either kind of request, the rest (`--json`,
/// `--detach`, `--rm`, `--max-output`) how fcexec runs it.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("root").args(["rootfs", "image"]))]
pub struct RunArgs {
    /// Run this ExecutionRequest JSON exactly as the node sends it (see the
    /// README's "The request"); `-` reads it from stdin. Conflicts with the
    /// options that build a request (--kernel ... --job); --id and --timeout
    /// override its execution_id and timeout_ms.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "kernel", "rootfs", "image", "initrd", "kernel_args", "cpus", "memory",
            "inputs", "outputs", "results_dir", "agent", "job",
            "env", "workdir", "user", "command", "publish", "network", "no_egress",
        ]
    )]
    pub request: Option<PathBuf>,
    /// The guest kernel (uncompressed ELF); without it, the built-in test guest.
    #[arg(long, value_name = "PATH", requires = "root")]
    pub kernel: Option<PathBuf>,
    /// The root file system image (attached read-write).
    #[arg(long, value_name = "PATH", requires = "kernel")]
    pub rootfs: Option<PathBuf>,
    /// Instead of --rootfs, a container image as the root file system:
    /// a registry reference (registry.example:5000/repo:tag), an OCI image
    /// layout directory or a docker save archive; pulled and built into
    /// the executor's image cache, and run by fcexec's guest agent (its
    /// default command unless one is given after --).
    #[arg(
        long,
        value_name = "REF|PATH",
        requires = "kernel",
        conflicts_with = "rootfs"
    )]
    pub image: Option<String>,
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
    /// Publish a guest port on every address of the host,
    /// HOST_PORT:GUEST_PORT[/udp] (tcp by default); gives the VM a network.
    /// Repeatable.
    #[arg(long = "publish", short = 'p', value_name = "HOST:GUEST[/udp]")]
    pub publish: Vec<String>,
    /// Give the VM a network (its own namespace, NAT to the outside, MMDS)
    /// even without published ports.
    #[arg(long)]
    pub network: bool,
    /// With a network: the VM may not reach the outside.
    #[arg(long)]
    pub no_egress: bool,
    /// The execution id; overrides the one of a --request file [default:
    /// the file's execution_id, else run-<unix ms>-<pid>].
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
    /// With a command: an environment variable for it, NAME=VALUE. Repeatable.
    #[arg(long, value_name = "NAME=VALUE", requires = "command")]
    pub env: Vec<String>,
    /// With a command: its working directory in the root file system.
    #[arg(long, value_name = "DIR", requires = "command")]
    pub workdir: Option<String>,
    /// With a command: who runs it (a name from the rootfs, uid or uid:gid).
    #[arg(long, value_name = "USER", requires = "command")]
    pub user: Option<String>,
    /// The command fcexec's guest agent runs in the root file system (after
    /// `--`; implies --agent, needs --kernel and --rootfs and the agent
    /// installed; see the README's "Linux guests").
    #[arg(
        last = true,
        value_name = "COMMAND",
        requires = "kernel",
        conflicts_with = "job"
    )]
    pub command: Vec<String>,
    /// Print the result as JSON at the end instead of streaming the output.
    #[arg(long, conflicts_with = "detach")]
    pub json: bool,
    /// Start, print the execution id, and leave the VM running.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Remove the execution and its files once it ended.
    #[arg(long, conflicts_with = "detach")]
    pub rm: bool,
    /// Stop the execution and fail it when it runs longer than this: 500ms,
    /// 30s, 5m, 1h (a plain number is seconds). Sets the request's
    /// timeout_ms, also over one from --request.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// The most output the execution may write (stdout, stderr and console
    /// together): 64KiB, 512MiB, 1GiB (K, M, G are binary too; a plain number
    /// is bytes). Past it the VM is stopped and the execution fails
    /// [default: 1GiB]. Not with --detach: the cap holds while fcexec watches.
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_size,
        conflicts_with = "detach"
    )]
    pub max_output: Option<u64>,
}

/// `fcexec ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// List every execution kept, finished ones too (reads every record);
    /// without it, only the live ones.
    #[arg(short, long)]
    pub all: bool,
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
    /// Print the guest's console log instead of the workload's output (for
    /// agents on vsock: kernel messages and boot noise; to stdout).
    #[arg(long)]
    pub console: bool,
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

/// `run --timeout`: `<number>[<unit>]`, the unit `ms`, `s`, `m` or `h` (any
/// case, a blank allowed before it; none means seconds). The number may
/// have a fraction (`1.5s`) when the result is a whole number of
/// milliseconds; it must be at least 1ms and at most
/// [`fcexec::spec::MAX_TIMEOUT_MS`], the range of the `timeout_ms` param.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const HINT: &str = "give a number and a unit ms, s, m or h, e.g. 500ms, 30s, 5m, 1h \
                        (a plain number is seconds)";
    let (number, unit) = split_unit(text);
    let per_unit: u64 = match unit.to_ascii_lowercase().as_str() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown unit {unit:?}; {HINT}")),
    };
    let ms = match scale(number, per_unit) {
        Ok(ms) => ms,
        Err(Scale::NotANumber) => return Err(format!("not a duration; {HINT}")),
        Err(Scale::NotWhole) => {
            return Err(
                "not a whole number of milliseconds; give at most 3 decimals \
                        of seconds, or use ms"
                    .to_string(),
            )
        }
    };
    match u64::try_from(ms) {
        Ok(0) => Err("must be at least 1ms".to_string()),
        Ok(ms) if ms <= fcexec::spec::MAX_TIMEOUT_MS => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "too long: at most {}ms (about 285,000 years)",
            fcexec::spec::MAX_TIMEOUT_MS
        )),
    }
}

/// `run --max-output`: `<number>[<unit>]` bytes, the unit `KiB`, `MiB`,
/// `GiB` or `TiB`, or `K`, `M`, `G`, `T` meaning the same (any case, a blank
/// allowed before it; none or `B` means bytes). `KB`, `MB`, ... are refused
/// as ambiguous. The number may have a fraction (`1.5GiB`) when the result
/// is a whole number of bytes; it must be at least 1 byte.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const HINT: &str = "give a number of bytes and an optional unit KiB, MiB, GiB or TiB \
                        (K, M, G, T are binary too), e.g. 64KiB, 512MiB, 1GiB";
    let (number, unit) = split_unit(text);
    let per_unit: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" | "mb" | "gb" | "tb" => {
            let binary = unit[..1].to_ascii_uppercase();
            return Err(format!(
                "{unit:?} is ambiguous (powers of 1000 or of 1024?); write {binary}iB for \
                 binary units, or the number of bytes"
            ));
        }
        _ => return Err(format!("unknown unit {unit:?}; {HINT}")),
    };
    let bytes = match scale(number, per_unit) {
        Ok(bytes) => bytes,
        Err(Scale::NotANumber) => return Err(format!("not a size; {HINT}")),
        Err(Scale::NotWhole) => return Err("not a whole number of bytes".to_string()),
    };
    match u64::try_from(bytes) {
        Ok(0) => Err("must be at least 1 byte".to_string()),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err("too large: at most 16 EiB".to_string()),
    }
}

/// `text` split where its unit (the first letter on) begins, both parts trimmed.
fn split_unit(text: &str) -> (&str, &str) {
    let text = text.trim();
    let at = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    (text[..at].trim_end(), &text[at..])
}

/// Why [`scale`] failed.
#[derive(Debug, PartialEq, Eq)]
enum Scale {
    /// Not `<digits>[.<digits>]`, or too many digits.
    NotANumber,
    /// The fraction does not come out whole.
    NotWhole,
}

/// `number` (`<digits>[.<digits>]`) times `per_unit`, exactly.
fn scale(number: &str, per_unit: u64) -> Result<u128, Scale> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let well_formed = !whole.is_empty()
        && whole.len() <= 20
        && digits(whole)
        && fraction.len() <= 9
        && digits(fraction)
        && (!fraction.is_empty() || !number.ends_with('.'));
    if !well_formed {
        return Err(Scale::NotANumber);
    }
    let per_unit = u128::from(per_unit);
    let whole: u128 = whole.parse().map_err(|_| Scale::NotANumber)?;
    let mut value = whole * per_unit;
    if !fraction.is_empty() {
        let numerator: u128 = fraction.parse().map_err(|_| Scale::NotANumber)?;
        let denominator = 10u128.pow(fraction.len() as u32);
        if numerator * per_unit % denominator != 0 {
            return Err(Scale::NotWhole);
        }
        value += numerator * per_unit / denominator;
    }
    Ok(value)
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

    #[test]
    fn request_conflicts_with_the_options_that_build_one() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["fcexec", "run"], args].concat());
        for other in [
            &["--kernel", "k", "--rootfs", "r"][..],
            &["--initrd", "i"],
            &["--kernel-args", "x"],
            &["--cpus", "1"],
            &["--memory", "64"],
            &["--input", "i"],
            &["--output", "o", "--results-dir", "/r"],
            &["--results-dir", "/r"],
            &["--agent"],
            &["--job", "exit:1"],
        ] {
            let args = [&["--request", "r.json"], other].concat();
            let e = parse(&args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
        let cli = parse(&[
            "--request",
            "-",
            "--id",
            "x",
            "--json",
            "--rm",
            "--timeout",
            "2m",
            "--max-output",
            "4KiB",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.request.as_deref(), Some(std::path::Path::new("-")));
        assert_eq!(run.timeout, Some(Duration::from_secs(120)));
        assert_eq!(run.max_output, Some(4096));
        assert!(parse(&["--request", "-", "--detach", "--timeout", "1s"]).is_ok());
        assert!(parse(&["--detach", "--max-output", "1G"]).is_err());
    }

    #[test]
    fn durations() {
        let ok = |text: &str| parse_duration(text).unwrap().as_millis();
        assert_eq!(ok("500ms"), 500);
        assert_eq!(ok("30s"), 30_000);
        assert_eq!(ok("5m"), 300_000);
        assert_eq!(ok("1h"), 3_600_000);
        assert_eq!(ok("2"), 2_000);
        assert_eq!(ok(" 1.5s "), 1_500);
        assert_eq!(ok("0.25"), 250);
        assert_eq!(ok("10 MS"), 10);
        assert_eq!(ok("1ms"), 1);
        assert_eq!(
            u64::try_from(ok(&format!("{}ms", fcexec::spec::MAX_TIMEOUT_MS))).unwrap(),
            fcexec::spec::MAX_TIMEOUT_MS
        );
        let err = |text: &str| parse_duration(text).unwrap_err();
        assert!(err("0").contains("at least 1ms"));
        assert!(err("0ms").contains("at least 1ms"));
        assert!(err("0.0001s").contains("whole number of milliseconds"));
        assert!(err("5x").contains("unknown unit \"x\""));
        assert!(err("5 days").contains("unknown unit"));
        for bad in ["", "s", "-1s", "1e3", "1.s", ".5s", "1..5s", "1,5s", "+3"] {
            assert!(err(bad).contains("e.g. 500ms"), "{bad:?}: {}", err(bad));
        }
        assert!(err(&format!("{}ms", fcexec::spec::MAX_TIMEOUT_MS + 1)).contains("too long"));
        assert!(err("99999999999999999999h").contains("too long"));
    }

    #[test]
    fn sizes() {
        let ok = |text: &str| parse_size(text).unwrap();
        assert_eq!(ok("1GiB"), 1 << 30);
        assert_eq!(ok("512MiB"), 512 << 20);
        assert_eq!(ok("64KiB"), 64 << 10);
        assert_eq!(ok("1000"), 1000);
        assert_eq!(ok("1000B"), 1000);
        assert_eq!(ok("4k"), 4096);
        assert_eq!(ok("2M"), 2 << 20);
        assert_eq!(ok("1G"), 1 << 30);
        assert_eq!(ok("1 tib"), 1 << 40);
        assert_eq!(ok("1.5GiB"), 3 << 29);
        assert_eq!(ok("0.5K"), 512);
        assert_eq!(ok("18446744073709551615"), u64::MAX);
        let err = |text: &str| parse_size(text).unwrap_err();
        assert!(err("0").contains("at least 1 byte"));
        assert!(err("1.5").contains("whole number of bytes"));
        assert!(err("1MB").contains("ambiguous"));
        assert!(err("1MB").contains("MiB"));
        assert!(err("3 bytes").contains("unknown unit"));
        assert!(err("18446744073709551616").contains("too large"));
        assert!(err("16384PiB").contains("unknown unit"));
        for bad in ["", "KiB", "-1", "1e9", "0x10"] {
            assert!(err(bad).contains("e.g. 64KiB"), "{bad:?}: {}", err(bad));
        }
    }
}
