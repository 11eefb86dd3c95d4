//! Whole processes as users start them (the `fcexec` CLI, `firecracker
//! --version`): spawned, reaped with `wait4(2)` so that their CPU time and
//! peak memory come with their exit, and timed from spawn to reaped. Also
//! where the CLI binary comes from.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use super::procfs::Cpu;

/// The longest a process may run before it is killed and counts as failed.
const PROCESS_LIMIT: Duration = Duration::from_secs(120);

/// One reaped process.
#[derive(Debug, Clone, Copy)]
pub struct Proc {
    /// Spawn to reaped.
    pub wall: Duration,
    /// User and system time of the process and of the children it reaped
    /// (for `fcexec run`: the VMM and `firecracker --version` too). Only the
    /// sum is exact: the kernel splits it into user and system time by
    /// sampled ticks, which says little about a process of a few ms.
    pub cpu: Cpu,
    /// Peak RSS of the process or of its largest reaped child, KiB.
    pub max_rss_kib: u64,
    /// Wall-clock time just before the spawn (to line up with log stamps).
    pub spawned_at: SystemTime,
    /// Wall-clock time just after it was reaped.
    pub reaped_at: SystemTime,
    /// True when it exited with status 0.
    pub success: bool,
}

/// Spawns `cmd` (its stdio as the caller set it) and reaps it with `wait4`,
/// on the blocking pool; kills it after [`PROCESS_LIMIT`].
pub async fn run(cmd: Command) -> Result<Proc, String> {
    tokio::task::spawn_blocking(move || run_blocking(cmd))
        .await
        .map_err(|e| e.to_string())?
}

fn run_blocking(mut cmd: Command) -> Result<Proc, String> {
    let spawned_at = SystemTime::now();
    let started = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot spawn {:?}: {e}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let in_time = wait_exit(pid, PROCESS_LIMIT);
    if !in_time {
        // SAFETY: kill(2) of our own child, not reaped yet (its pid is ours).
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    // SAFETY: wait4 fills the status and the zeroed rusage we own.
    let mut status = 0;
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4({pid}): {e}"));
        }
    }
    let wall = started.elapsed();
    drop(child);
    if !in_time {
        return Err(format!(
            "{:?} ran longer than {PROCESS_LIMIT:?}",
            cmd.get_program()
        ));
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Ok(Proc {
        wall,
        cpu: Cpu {
            user: tv(ru.ru_utime),
            sys: tv(ru.ru_stime),
        },
        max_rss_kib: ru.ru_maxrss as u64,
        spawned_at,
        reaped_at: SystemTime::now(),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}

/// Waits (without reaping) until `pid` exits; false after `limit`.
fn wait_exit(pid: libc::pid_t, limit: Duration) -> bool {
    // SAFETY: pidfd_open(2) of our own child; the fd is closed below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int;
    if fd < 0 {
        return true; // No pidfd: wait4 will block until the exit.
    }
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let deadline = Instant::now() + limit;
    let exited = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // SAFETY: poll(2) on one pollfd we own.
        let r = unsafe { libc::poll(&mut poll, 1, left.as_millis() as libc::c_int) };
        if r > 0 {
            break true;
        }
        if r == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            break r != 0;
        }
    };
    // SAFETY: closing the pidfd opened above.
    unsafe { libc::close(fd) };
    exited
}

/// The `fcexec` binary and the VMM it is told to use.
#[derive(Debug, Clone)]
pub struct CliBin {
    /// The `fcexec` binary.
    pub path: PathBuf,
    /// `FIRECRACKER_BIN` for it: the bench's firecracker.
    pub firecracker: PathBuf,
}

impl CliBin {
    /// `fcexec --state-dir <root> <args>`, stdin from `/dev/null`, stdout to
    /// `out` and stderr to `out` + `.err`; no `RUST_LOG` or `FCEXEC_*` from
    /// the bench's environment.
    pub fn command(&self, root: &Path, args: &[&str], out: &Path) -> Result<Command, String> {
        let create = |p: PathBuf| File::create(&p).map_err(|e| format!("{}: {e}", p.display()));
        let mut cmd = Command::new(&self.path);
        cmd.arg("--state-dir")
            .arg(root)
            .args(args)
            .env("FIRECRACKER_BIN", &self.firecracker)
            .env_remove("RUST_LOG")
            .env_remove("FCEXEC_STATE_DIR")
            .env_remove("FCEXEC_EXECUTOR")
            .stdin(Stdio::null())
            .stdout(create(out.to_path_buf())?)
            .stderr(create(out.with_extension("err"))?);
        Ok(cmd)
    }

    /// Runs [`CliBin::command`]; fails unless it exits 0 and `check` accepts
    /// its stdout.
    pub async fn run(
        &self,
        root: &Path,
        args: &[&str],
        out: &Path,
        check: impl Fn(&str) -> bool,
    ) -> Result<Proc, String> {
        let proc = run(self.command(root, args, out)?).await?;
        let stdout = std::fs::read_to_string(out).unwrap_or_default();
        if !proc.success || !check(&stdout) {
            let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
            return Err(format!(
                "fcexec {args:?}: exit ok {}, stdout {:.80?}, stderr {:.300?}",
                proc.success, stdout, stderr
            ));
        }
        Ok(proc)
    }
}

/// The `fcexec` binary to measure: `FCEXEC_BENCH_CLI` if set; otherwise
/// `cargo build --release -p fcexec-cli` is run (a no-op when up to date)
/// and `<target>/release/fcexec` is used, falling back to a binary already
/// there when the build fails.
pub fn find_cli() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("FCEXEC_BENCH_CLI") {
        return Ok(PathBuf::from(path));
    }
    // This bench runs as <target>/release/deps/executor-<hash>.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let release = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot locate the target directory")?;
    let binary = release.join("fcexec");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building the CLI (cargo build --release -p fcexec-cli)");
    let built = Command::new(cargo)
        .args(["build", "--release", "-p", "fcexec-cli", "--bin", "fcexec"])
        .current_dir(&workspace)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match (built, binary.exists()) {
        (_, false) => Err(format!(
            "no CLI binary at {} (set FCEXEC_BENCH_CLI)",
            binary.display()
        )),
        (false, true) => {
            eprintln!("the CLI build failed; measuring the binary already there");
            Ok(binary)
        }
        (true, true) => Ok(binary),
    }
}

/// The CLI's version line and its binary's modification time, for the report.
pub fn describe(cli: &Path) -> String {
    let version = Command::new(cli)
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let age = std::fs::metadata(cli)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| format!("built {} s before this run", d.as_secs()))
        .unwrap_or_default();
    format!("{} ({version}, {age})", cli.display())
}
