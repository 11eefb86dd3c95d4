//! The agent as PID 1 of fresh PID and mount namespaces, with real ext4
//! images on loop devices and a busybox rootfs: everything as in the guest
//! but the two seams (drives are loop devices, the host is a Unix socket)
//! and the power seam (powering off returns).
//!
//! The test binary runs itself again (`pid1_harness_entry`), with the
//! agent's drives and socket in `FCEXEC_AGENT_PID1`; that process makes new
//! PID and mount namespaces, makes every mount private, and forks: the
//! child is PID 1 of the new namespace and calls
//! `fcexec_guest_agent::run`. The test plays the host on the socket.
//! Running a separate process keeps the fork away from the test harness's
//! threads; `PR_SET_PDEATHSIG` and Drop guards stop everything when a
//! test fails.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::{Duration, Instant};

use fcexec_guest_agent::{Env, FixedDevices, NoPower, Outcome, UnixTransport};

use super::host::KEY_HEX;

/// The environment variable that makes `pid1_harness_entry` run the agent.
pub const ENTRY_VAR: &str = "FCEXEC_AGENT_PID1";
/// The entry test's name.
pub const ENTRY_TEST: &str = "pid1_harness_entry";

static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static REASON: Mutex<String> = Mutex::new(String::new());
static AT_EXIT: Once = Once::new();

/// Why these tests cannot run here, if they cannot.
pub fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("need root (they mount, attach loop devices and make PID namespaces)".into());
    }
    for tool in ["mkfs.ext4", "losetup", "debugfs"] {
        if which(tool).is_none() {
            return Some(format!("need {tool} (Debian: e2fsprogs, util-linux)"));
        }
    }
    if busybox().is_none() {
        return Some("need a static busybox (Debian: busybox-static)".into());
    }
    None
}

/// A system tool by name, found in PATH or the sbin directories.
pub fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| PathBuf::from(name))
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&format!("{path}:/usr/sbin:/sbin"))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// The static busybox to build rootfs images from.
pub fn busybox() -> Option<PathBuf> {
    ["/usr/bin/busybox", "/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Counts the calling test as skipped (it returns next); the count and the
/// reason are printed once, as the test binary exits.
pub fn skip(reason: &str) {
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut r) = REASON.lock() {
        *r = reason.to_string();
    }
    AT_EXIT.call_once(|| {
        // SAFETY: `report` takes no arguments and only writes to stderr.
        unsafe { libc::atexit(report) };
    });
}

extern "C" fn report() {
    let n = SKIPPED.load(Ordering::SeqCst);
    let reason = REASON.lock().map(|r| r.clone()).unwrap_or_default();
    eprintln!("SKIPPED: {n} tests {reason}");
}

/// At most this many agents run at once (each holds up to three loop devices).
static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());
const MAX_AGENTS: usize = 3;
/// losetup is not atomic across processes; one at a time.
static LOSETUP: Mutex<()> = Mutex::new(());

/// A slot among the agents that may run at once; freed on drop.
pub struct Slot;

impl Slot {
    pub fn take() -> Slot {
        let (lock, cvar) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        while *used >= MAX_AGENTS {
            used = cvar.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += 1;
        Slot
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (lock, cvar) = &SLOTS;
        let mut used = lock.lock().unwrap_or_else(|e| e.into_inner());
        *used -= 1;
        cvar.notify_one();
    }
}

/// An attached loop device, detached on drop.
#[derive(Debug)]
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn attach(image: &Path) -> Loop {
        let _one = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new(tool("losetup"))
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .expect("losetup runs");
        assert!(
            out.status.success(),
            "losetup -f --show {}: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _one = LOSETUP.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new(tool("losetup"))
            .arg("-d")
            .arg(&self.0)
            .status();
    }
}

/// Runs a command, panicking with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes an ext4 image of `size_mib` at `image` holding `dir` (or empty).
pub fn mkfs(image: &Path, size_mib: u64, dir: Option<&Path>) {
    let file = std::fs::File::create(image).unwrap();
    file.set_len(size_mib << 20).unwrap();
    let mut cmd = Command::new(tool("mkfs.ext4"));
    cmd.args(["-q", "-F", "-E", "root_owner=0:0"]);
    if let Some(dir) = dir {
        cmd.arg("-d").arg(dir);
    }
    sh(cmd.arg(image));
}

/// A busybox rootfs tree at `dir`: /bin with every applet, /etc/passwd and
/// /etc/group with root and alice (1000:1000), /work, /tmp, mount points.
pub fn busybox_tree(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let busybox = busybox().expect("busybox");
    std::fs::copy(&busybox, bin.join("busybox")).unwrap();
    let list = sh(Command::new(&busybox).arg("--list"));
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for sub in [
        "etc",
        "work",
        "tmp",
        "root",
        "home/alice",
        "proc",
        "sys",
        "dev",
        "run",
        "mnt",
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:alice:/home/alice:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nalice:x:1000:\nstaff:x:50:alice\n",
    )
    .unwrap();
}

/// A config drive image with `spec` (raw bytes) after the header.
pub fn config_drive(spec: &[u8], heartbeat_ms: u64) -> Vec<u8> {
    let text = format!(
        "FCXCFG1\nkey={KEY_HEX}\nproto=2\nvsock_port=1024\nheartbeat_ms={heartbeat_ms}\nspec={}\n",
        spec.len()
    );
    let mut image = text.into_bytes();
    image.resize(512, 0);
    image.extend_from_slice(spec);
    image.resize(image.len().div_ceil(4096) * 4096, 0);
    image
}

/// The running namespaced agent; killed (with its namespace) on drop.
pub struct Agent {
    child: Option<Child>,
    /// Its console (stderr), for diagnostics.
    pub console: PathBuf,
}

impl Agent {
    /// Starts the agent with these drives, the host socket and the rootfs
    /// mount point.
    pub fn start(drives: &[PathBuf], socket: &Path, root_dir: &Path, console: &Path) -> Agent {
        let mut spec = format!("socket={}\nroot={}\n", socket.display(), root_dir.display());
        for drive in drives {
            spec.push_str(&format!("drive={}\n", drive.display()));
        }
        let log = std::fs::File::create(console).unwrap();
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            ENTRY_TEST,
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ENTRY_VAR, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Agent {
            child: Some(cmd.spawn().expect("the test binary runs again")),
            console: console.to_path_buf(),
        }
    }

    /// Waits for the agent's process to end; its exit code (0: `run`
    /// returned `Reported`, 3: `Unreported`).
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let give_up = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > give_up {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// What the agent wrote to its console.
    pub fn console(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The entry: in the re-run test binary, becomes PID 1 of new namespaces
/// and runs the agent. Does nothing in a normal test run.
pub fn entry() {
    let Ok(spec) = std::env::var(ENTRY_VAR) else {
        return;
    };
    let (mut socket, mut root, mut drives) = (PathBuf::new(), PathBuf::new(), Vec::new());
    for line in spec.lines() {
        match line.split_once('=') {
            Some(("socket", v)) => socket = PathBuf::from(v),
            Some(("root", v)) => root = PathBuf::from(v),
            Some(("drive", v)) => drives.push(PathBuf::from(v)),
            _ => {}
        }
    }
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS).expect("unshare");
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make / private");
    // SAFETY: the child only runs the agent and exits; the other thread of
    // this process (the test harness's main thread) waits for this one.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // SAFETY: prctl has no memory preconditions.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let env = Env {
            devices: Box::new(FixedDevices(drives)),
            transport: Box::new(UnixTransport::new(socket)),
            power: Box::new(NoPower),
            root_dir: root,
            mount_early: false,
        };
        let code = match fcexec_guest_agent::run(env) {
            Outcome::Reported(_) => 0,
            Outcome::Unreported(_) => 3,
        };
        // SAFETY: ends the namespace's init without running the harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let mut raw = 0;
    // SAFETY: waits for our child.
    unsafe { libc::waitpid(pid, &mut raw, 0) };
    let code = if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else {
        128 + libc::WTERMSIG(raw)
    };
    // SAFETY: ends this helper process with the agent's code.
    unsafe { libc::_exit(code) };
}
