//! VMM process control: spawn `firecracker` (directly or through the
//! jailer), wait for its API, stop it with escalation, reap it, and remove
//! the sockets it leaves behind.
//!
//! The guest's serial console is the VMM's stdout; we point it at a file the
//! caller names, so output is stored as it arrives and survives the caller's
//! restart. Firecracker's own log goes to a second file (`--log-path`), so the
//! two never mix.
//!
//! Stopping escalates in three steps, each with its own deadline: Ctrl+Alt+Del
//! through the API (the guest may shut down cleanly), SIGTERM, SIGKILL. Every
//! path ends with the child reaped and the API socket removed.

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::attach::Pidfd;

use crate::client::Client;
use crate::exit::{exit_from_log, log_tail, VmmExit};
use crate::jailer::{Jail, JailerOptions};
use crate::watch;

mod error;
mod stop;

pub use error::VmmError;
pub use stop::{StopPolicy, StopStep};

/// The longest Unix socket path the kernel accepts (`sun_path` less its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Where the jailed VMM's API socket lives, as the VMM sees it.
pub const JAILED_SOCKET: &str = "/run/firecracker.socket";
/// Where the jailed VMM's log lives, as the VMM sees it.
const JAILED_LOG: &str = "/firecracker.log";

/// How to start one VMM.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The `firecracker` binary.
    pub firecracker: PathBuf,
    /// Instance id (`--id`): 1 to 64 characters from A-Z, a-z, 0-9, `_`, `-`.
    pub id: String,
    /// The API socket (host path). `None` runs with `--no-api`, which needs
    /// `config_file`. Ignored under the jailer, whose socket is inside the chroot.
    pub api_socket: Option<PathBuf>,
    /// A configuration file (`--config-file`) that boots the VM at once.
    pub config_file: Option<PathBuf>,
    /// A JSON file of MMDS contents (`--metadata`).
    pub metadata: Option<PathBuf>,
    /// The file that receives the guest's serial output (the VMM's stdout). Appended to.
    pub serial_output: PathBuf,
    /// Firecracker's own log file (`--log-path`). Under the jailer it is
    /// handed to the jail's uid and bind-mounted into the chroot.
    pub log_path: PathBuf,
    /// Other sockets the VMM creates (a vsock's `uds_path`), removed at cleanup.
    pub extra_sockets: Vec<PathBuf>,
    /// Run through the jailer with these options.
    pub jailer: Option<JailerOptions>,
    /// A network namespace (such as `/run/netns/x`) the VMM runs in; under
    /// the jailer, give it in [`JailerOptions::netns`] instead.
    pub netns: Option<PathBuf>,
}

/// One running (or exited, not yet cleaned up) firecracker process.
#[derive(Debug)]
pub struct Vmm {
    /// How we learn that it ended.
    handle: Handle,
    /// Its pid, kept after the child handle is gone.
    pid: u32,
    /// Instance id.
    id: String,
    /// The API socket on the host, if any.
    api_socket: Option<PathBuf>,
    /// Firecracker's log on the host.
    log_path: PathBuf,
    /// The jail, when run through the jailer.
    jail: Option<Jail>,
    /// Name of the firecracker binary (names the jailer's directories).
    exec_name: String,
    /// Sockets removed at cleanup.
    sockets: Vec<PathBuf>,
    /// How it ended, once known.
    exit: Option<VmmExit>,
    /// Whether dropping this handle kills a running VMM (the default).
    kill_on_drop: bool,
}

impl Vmm {
    /// Starts a VMM. Returns as soon as the process runs; call
    /// [`Vmm::wait_ready`] before using the API.
    pub async fn spawn(options: SpawnOptions) -> Result<Vmm, VmmError> {
        check_instance_id(&options.id)?;
        let exec_name = options
            .firecracker
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "firecracker".into());
        let jail = options
            .jailer
            .as_ref()
            .map(|j| Jail::new(j, &options.firecracker, &options.id));
        let api_socket = match &jail {
            Some(jail) => Some(jail.host_path(Path::new(JAILED_SOCKET))),
            None => options.api_socket.clone(),
        };
        let log_path = options.log_path.clone();
        if api_socket.is_none() && options.config_file.is_none() {
            return Err(VmmError::NoApiNoConfig);
        }
        let mut sockets = options.extra_sockets.clone();
        if let Some(socket) = &api_socket {
            check_socket_path(socket)?;
            sockets.push(socket.clone());
        }
        for socket in &sockets {
            remove_stale_socket(socket).await?;
        }
        let serial = File::options()
            .create(true)
            .append(true)
            .open(&options.serial_output)
            .map_err(prepare(&options.serial_output))?;

        let mut command = match (&options.jailer, &jail) {
            (Some(opts), Some(jail)) => {
                jail.prepare().map_err(prepare(jail.root()))?;
                let inside_log = jail.host_path(Path::new(JAILED_LOG));
                jailed_log(&log_path, &inside_log, opts).map_err(prepare(&log_path))?;
                let stderr = File::create(jail.instance_dir().join(JAILER_STDERR))
                    .map_err(prepare(jail.instance_dir()))?;
                let mut c = Command::new(&opts.jailer);
                c.stderr(stderr);
                c.args(jail.args(opts, &options.firecracker, &options.id));
                c.arg("--");
                c.args(["--api-sock", JAILED_SOCKET, "--log-path", JAILED_LOG]);
                if let Some(config) = &options.config_file {
                    let inside = jail
                        .stage(config, "vm-config.json")
                        .map_err(prepare(config))?;
                    c.arg("--config-file").arg(inside);
                }
                if let Some(metadata) = &options.metadata {
                    let inside = jail
                        .stage(metadata, "metadata.json")
                        .map_err(prepare(metadata))?;
                    c.arg("--metadata").arg(inside);
                }
                c
            }
            _ => {
                let mut c = Command::new(&options.firecracker);
                c.arg("--id").arg(&options.id);
                match &api_socket {
                    Some(socket) => c.arg("--api-sock").arg(socket),
                    None => c.arg("--no-api"),
                };
                if let Some(config) = &options.config_file {
                    c.arg("--config-file").arg(config);
                }
                if let Some(metadata) = &options.metadata {
                    c.arg("--metadata").arg(metadata);
                }
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(prepare(&log_path))?;
                c.arg("--log-path").arg(&log_path);
                c
            }
        };
        if jail.is_none() {
            command.stderr(Stdio::null());
        }
        command
            .stdin(Stdio::null())
            .stdout(serial)
            // Its own process group: a Ctrl-C meant for the caller does not reach it.
            .process_group(0);
        if let (Some(netns), None) = (&options.netns, &jail) {
            // Opened here, entered in the child: setns(2) is a plain system call.
            let ns = File::open(netns).map_err(prepare(netns))?;
            // SAFETY: setns on a descriptor we own, async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Descriptors the embedding process left without close-on-exec must
        // not reach the VMM. The jailer closes every descriptor above 2
        // itself first thing, so a jailed launch needs no `pre_exec`: std
        // then spawns with posix_spawn (vfork) instead of copying this
        // process's page tables with fork.
        if jail.is_none() {
            // SAFETY: between fork and exec only async-signal-safe calls are
            // allowed; close_range(2) is a plain system call.
            unsafe {
                command.pre_exec(close_inherited_fds);
            }
        }
        let binary = options
            .jailer
            .as_ref()
            .map_or(&options.firecracker, |j| &j.jailer);
        if options.jailer.as_ref().is_some_and(|j| j.new_pid_ns) {
            become_subreaper();
        }
        let child = command.spawn().map_err(|source| VmmError::Spawn {
            binary: binary.clone(),
            source,
        })?;
        let (handle, pid) = match (&options.jailer, &jail) {
            (Some(opts), Some(jail)) if opts.new_pid_ns => {
                let (pidfd, pid) = follow_into_pid_ns(child, jail, &exec_name).await?;
                (Handle::Pidfd(pidfd), pid)
            }
            _ => {
                let pid = child.id().unwrap_or_default();
                (Handle::Child(child), pid)
            }
        };
        tracing::debug!(pid, id = %options.id, jailed = jail.is_some(), "spawned firecracker");
        Ok(Vmm {
            handle,
            pid,
            id: options.id,
            api_socket,
            log_path,
            jail,
            exec_name,
            sockets,
            exit: None,
            kill_on_drop: true,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The instance id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The jail, when run through the jailer.
    pub fn jail(&self) -> Option<&Jail> {
        self.jail.as_ref()
    }

    /// Firecracker's log file on the host.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The API socket on the host, if the VMM has one.
    pub fn api_socket(&self) -> Option<&Path> {
        self.api_socket.as_deref()
    }

    /// A client of this VMM's API, if it has one.
    pub fn client(&self) -> Option<Client> {
        self.api_socket.as_ref().map(Client::new)
    }

    /// How the VMM ended, if it has and we have seen it.
    pub fn exit(&self) -> Option<VmmExit> {
        self.exit
    }

    /// Waits until the VMM's log says it started the guest (a VMM started with
    /// a config file), the VMM exits, or the deadline passes. Unlike
    /// [`Vmm::wait_ready`] this sends no API request: Firecracker 1.16 can
    /// leave an API request unanswered, and itself unable to exit, when the
    /// request arrives while a guest that already finished is shutting down.
    pub async fn wait_started(&mut self, deadline: Duration) -> Result<(), VmmError> {
        let log = self.log_path.clone();
        let started = tokio::time::timeout(deadline, watch::until_contains(&log, STARTED_LINE));
        let outcome = {
            let exited = self.wait();
            tokio::pin!(exited);
            tokio::select! {
                started = started => Ok(started),
                exit = &mut exited => Err(exit),
            }
        };
        match outcome {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(VmmError::NotStarted { deadline }),
            Err(exit) => Err(VmmError::ExitedEarly {
                exit: exit?,
                log_tail: log_tail(&self.log_path, 3),
            }),
        }
    }

    /// True when the VMM's log says it started the guest.
    pub fn has_started(&self) -> bool {
        std::fs::read(&self.log_path)
            .is_ok_and(|log| log.windows(STARTED_LINE.len()).any(|w| w == STARTED_LINE))
    }

    /// Waits until the API socket accepts requests, the VMM exits, or the deadline passes.
    pub async fn wait_ready(&mut self, deadline: Duration) -> Result<(), VmmError> {
        let Some(socket) = self.api_socket.clone() else {
            return Err(VmmError::NoApiNoConfig);
        };
        let ready = async {
            watch::until_exists(&socket).await?;
            // The socket file appears at bind(); listen() follows at once, so
            // a refused connection is retried after a short, growing pause.
            let mut pause = Duration::from_micros(200);
            while tokio::net::UnixStream::connect(&socket).await.is_err() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Ok::<(), VmmError>(())
        };
        let ready = tokio::time::timeout(deadline, ready);
        let outcome = {
            let exited = self.wait();
            tokio::pin!(exited);
            tokio::select! {
                ready = ready => Ok(ready),
                exit = &mut exited => Err(exit),
            }
        };
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(VmmError::NotReady { socket, deadline }),
            Err(exit) => Err(VmmError::ExitedEarly {
                exit: exit?,
                log_tail: log_tail(&self.log_path, 3),
            }),
        }
    }

    /// Waits for the VMM to exit and reaps it. Cancel-safe.
    pub async fn wait(&mut self) -> Result<VmmExit, VmmError> {
        if let Some(exit) = self.exit {
            return Ok(exit);
        }
        let pid = self.pid;
        let exit = match &mut self.handle {
            Handle::Child(child) => child
                .wait()
                .await
                .map(VmmExit::from)
                .map_err(|source| VmmError::Wait { pid, source })?,
            Handle::Pidfd(pidfd) => {
                pidfd
                    .exited()
                    .await
                    .map_err(|source| VmmError::Wait { pid, source })?;
                // Our child (a jailed VMM re-parented to us): its status.
                // Otherwise its log says how it ended, if it does.
                match pidfd.reap() {
                    Some(exit) => exit,
                    None => exit_from_log(&self.log_path).unwrap_or(VmmExit::Unknown),
                }
            }
            Handle::Detached => {
                return Err(VmmError::Wait {
                    pid,
                    source: std::io::Error::other("the VMM was detached"),
                })
            }
        };
        self.exit = Some(exit);
        Ok(exit)
    }

    /// Removes the sockets (and the jail) the VMM leaves behind. Safe to call twice.
    pub fn cleanup(&mut self) {
        for socket in &self.sockets {
            if let Err(e) = std::fs::remove_file(socket) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(socket = %socket.display(), error = %e, "cannot remove socket");
                }
            }
        }
        if let Some(jail) = &self.jail {
            if let Err(e) = jail.remove(&self.id, &self.exec_name) {
                tracing::warn!(dir = %jail.instance_dir().display(), error = %e, "cannot remove jail");
            }
        }
    }

    /// Chooses whether dropping this handle kills a still-running VMM and
    /// removes its sockets (the default), or lets it run on as [`Vmm::detach`]
    /// would, so that a restarted owner can [`Vmm::attach`] to it again.
    pub fn set_kill_on_drop(&mut self, kill: bool) {
        self.kill_on_drop = kill;
    }

    /// Lets the VMM run on without this handle: nothing is killed or removed
    /// when it is dropped. Returns its pid.
    pub fn detach(mut self) -> u32 {
        // Dropping a tokio Child without waiting hands it to tokio's orphan
        // reaper, so it does not become a zombie once it exits.
        self.handle = Handle::Detached;
        self.sockets.clear();
        self.jail = None;
        self.pid
    }
}

impl Drop for Vmm {
    fn drop(&mut self) {
        if matches!(self.handle, Handle::Detached) {
            return;
        }
        if let Handle::Child(child) = &mut self.handle {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status.into());
            }
        }
        if self.exit.is_none() && !self.kill_on_drop {
            return;
        }
        if self.exit.is_none() {
            self.signal(libc::SIGKILL);
        }
        self.cleanup();
    }
}

/// How a [`Vmm`] learns that its process ended.
#[derive(Debug)]
enum Handle {
    /// Our child: waiting reaps it and gives its exit status.
    Child(Child),
    /// A process we re-attached to after a restart: a pidfd tells when it
    /// ends; its log tells how.
    Pidfd(Pidfd),
    /// Let go with [`Vmm::detach`].
    Detached,
}

/// What [`Vmm::attach`] needs to find a VMM again after a restart.
#[derive(Debug, Clone)]
pub struct AttachOptions {
    /// Its pid.
    pub pid: u32,
    /// Its start time (see [`crate::attach::start_time`]), to tell it from a
    /// later process that reuses the pid.
    pub start_time: u64,
    /// Instance id.
    pub id: String,
    /// The API socket, if any.
    pub api_socket: Option<PathBuf>,
    /// Firecracker's log file.
    pub log_path: PathBuf,
    /// Other sockets to remove at cleanup.
    pub extra_sockets: Vec<PathBuf>,
}

impl Vmm {
    /// Re-attaches to a VMM started earlier (by this process or another).
    /// Returns `None` when that process no longer runs.
    pub fn attach(options: AttachOptions) -> Result<Option<Vmm>, VmmError> {
        let pid = options.pid;
        let Some(pidfd) = Pidfd::open(pid, options.start_time)
            .map_err(|source| VmmError::Wait { pid, source })?
        else {
            return Ok(None);
        };
        let mut sockets = options.extra_sockets;
        sockets.extend(options.api_socket.clone());
        Ok(Some(Vmm {
            handle: Handle::Pidfd(pidfd),
            pid,
            id: options.id,
            api_socket: options.api_socket,
            log_path: options.log_path,
            jail: None,
            exec_name: "firecracker".into(),
            sockets,
            exit: None,
            kill_on_drop: true,
        }))
    }
}

/// The file in the jail's instance directory (outside its root) that gets
/// the jailer's (and then firecracker's) stderr.
pub const JAILER_STDERR: &str = "jailer.stderr";

/// How long the jailer gets to set up a jail and hand over to firecracker
/// in a new PID namespace.
const JAILER_DEADLINE: Duration = Duration::from_secs(10);

/// Makes the host log file `log` the jailed VMM's `--log-path`: created if
/// absent, given to the jail's uid (it is the executor's own file, in a
/// directory only the executor can reach) and hard-linked at `inside`, or
/// bind-mounted there from another file system.
fn jailed_log(log: &Path, inside: &Path, opts: &JailerOptions) -> std::io::Result<()> {
    File::options().create(true).append(true).open(log)?;
    std::os::unix::fs::chown(log, Some(opts.uid), Some(opts.gid))?;
    crate::mounts::link_or_bind(log, inside, false, true).map(|_| ())
}

/// After the jailer forked firecracker into a new PID namespace and exited:
/// the VMM's pid (from the jailer's pid file) and a pidfd on it. The
/// executor is made a child subreaper first (see [`become_subreaper`]), so
/// the orphaned VMM becomes its child and is reaped through the pidfd.
async fn follow_into_pid_ns(
    mut jailer: Child,
    jail: &Jail,
    exec_name: &str,
) -> Result<(Pidfd, u32), VmmError> {
    let jailer_pid = jailer.id().unwrap_or_default();
    let stderr = jail.instance_dir().join(JAILER_STDERR);
    let status = match tokio::time::timeout(JAILER_DEADLINE, jailer.wait()).await {
        Ok(status) => status.map_err(|source| VmmError::Wait {
            pid: jailer_pid,
            source,
        })?,
        Err(_) => {
            let _ = jailer.kill().await;
            return Err(VmmError::NotStarted {
                deadline: JAILER_DEADLINE,
            });
        }
    };
    if !status.success() {
        return Err(VmmError::ExitedEarly {
            exit: status.into(),
            log_tail: log_tail(&stderr, 3),
        });
    }
    let pid_file = jail.pid_file(exec_name);
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .map_err(prepare(&pid_file))?
        .trim()
        .parse()
        .map_err(|e| VmmError::Prepare {
            path: pid_file.clone(),
            source: std::io::Error::other(format!("not a pid: {e}")),
        })?;
    let gone = || VmmError::ExitedEarly {
        exit: VmmExit::Unknown,
        log_tail: log_tail(&stderr, 3),
    };
    let start = crate::attach::start_time(pid).ok_or_else(gone)?;
    let pidfd = Pidfd::open(pid, start)
        .map_err(|source| VmmError::Wait { pid, source })?
        .ok_or_else(gone)?;
    Ok((pidfd, pid))
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): a VMM
/// whose jailer exits after forking it into a new PID namespace is then
/// re-parented to this process, not to init, and can be reaped here (init
/// in a container often reaps nothing). Process-wide and idempotent.
fn become_subreaper() {
    // SAFETY: prctl with an integer argument; no memory is passed.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot become a child subreaper; jailed VMMs will be reaped by init");
    }
}

/// What the VMM logs once it started the guest.
pub const STARTED_LINE: &[u8] = b"Successfully started microvm";

/// In the child before exec: marks every descriptor but stdin, stdout and
/// stderr close-on-exec, so nothing the caller left inheritable (a socket, a
/// secret file) reaches the VMM. (Marked, not closed: the pipe on which the
/// standard library reports a failed exec must live until the exec.) A
/// kernel without `CLOSE_RANGE_CLOEXEC` (before 5.11) leaves them.
fn close_inherited_fds() -> std::io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: u32 = 1 << 2;
    // SAFETY: close_range takes plain integers and touches no memory.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    Ok(())
}

/// Wraps an I/O error about preparing `path`.
fn prepare(path: &Path) -> impl FnOnce(std::io::Error) -> VmmError {
    let path = path.to_path_buf();
    move |source| VmmError::Prepare { path, source }
}

/// Checks an instance id (`--id`) the way Firecracker does: 1 to 64
/// characters, each alphanumeric or `-` (unlike resource ids, no `_`:
/// Firecracker 1.16 aborts on one).
pub fn check_instance_id(id: &str) -> Result<(), VmmError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id.chars().all(|c| c == '-' || c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(VmmError::InvalidInstanceId(id.to_string()))
    }
}

/// Rejects a socket path the kernel cannot bind.
pub fn check_socket_path(path: &Path) -> Result<(), VmmError> {
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(VmmError::SocketPathTooLong {
            path: path.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Removes a socket file left by an earlier run; fails if a VMM still listens on it.
async fn remove_stale_socket(path: &Path) -> Result<(), VmmError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(VmmError::SocketInUse(path.to_path_buf()));
    }
    tracing::warn!(socket = %path.display(), "removing a stale socket left by an earlier run");
    std::fs::remove_file(path).map_err(|source| VmmError::Prepare {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_follow_firecrackers_rule() {
        assert!(check_instance_id("vm-1").is_ok());
        for bad in ["", "a_b", "a.b", "a b", &"x".repeat(65)] {
            assert!(check_instance_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn long_socket_paths_are_rejected() {
        let long = PathBuf::from(format!("/run/{}", "x".repeat(120)));
        let err = check_socket_path(&long).unwrap_err();
        assert!(err.to_string().contains("at most 107"), "{err}");
        assert!(check_socket_path(Path::new("/run/fcexec/a.sock")).is_ok());
    }

    #[tokio::test]
    async fn stale_sockets_are_removed_live_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        testkit::stale_socket(&path);
        remove_stale_socket(&path).await.unwrap();
        assert!(!path.exists());
        let _live = tokio::net::UnixListener::bind(&path).unwrap();
        let err = remove_stale_socket(&path).await.unwrap_err();
        assert!(matches!(err, VmmError::SocketInUse(_)), "{err}");
    }

    #[tokio::test]
    async fn a_missing_binary_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Vmm::spawn(SpawnOptions {
            firecracker: "/nonexistent/firecracker".into(),
            id: "t1".into(),
            api_socket: Some(dir.path().join("api.sock")),
            config_file: None,
            metadata: None,
            serial_output: dir.path().join("serial"),
            log_path: dir.path().join("log"),
            extra_sockets: vec![],
            jailer: None,
            netns: None,
        })
        .await
        .unwrap_err();
        assert!(matches!(err, VmmError::Spawn { .. }), "{err}");
    }
}
