//! Named network namespaces: creating them the way iproute2 does (a bind
//! mount of a namespace onto `/run/netns/<name>`), running code inside one, and
//! removing them.
//!
//! Code runs "inside" a namespace on a short-lived thread of its own that has
//! `setns`'d into it; the thread ends with the work, so no thread of the
//! caller's runtime ever changes namespace. A netlink socket opened on such a
//! thread stays bound to that namespace for its whole life, which is how
//! [`netlink_in`] gives async code a handle inside a namespace.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use tracing::{debug, warn};

use crate::names::NETNS_DIR;
use crate::NetworkError;

/// An open namespace file, to enter the namespace later (for example in
/// `Command::pre_exec`, where opening files is not allowed).
#[derive(Debug)]
pub struct NetnsFd(OwnedFd);

impl NetnsFd {
    /// Opens the namespace file at `path` (close-on-exec).
    pub fn open(path: &Path) -> Result<NetnsFd, NetworkError> {
        File::open(path)
            .map(|f| NetnsFd(f.into()))
            .map_err(|e| NetworkError::io(format!("open network namespace {}", path.display()), e))
    }

    /// Moves the calling thread into the namespace. Only one system call, so it
    /// is safe between `fork` and `exec`:
    ///
    /// ```no_run
    /// # fn f(net: &fcexec_network::ExecutionNetwork) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::os::unix::process::CommandExt;
    /// let ns = net.open_netns()?;
    /// let mut cmd = std::process::Command::new("firecracker");
    /// // SAFETY: `enter` only calls setns(2).
    /// unsafe { cmd.pre_exec(move || ns.enter()) };
    /// # Ok(()) }
    /// ```
    pub fn enter(&self) -> std::io::Result<()> {
        setns(self.0.as_fd(), CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)
    }

    /// The raw descriptor, as netlink's `IFLA_NET_NS_FD` wants it.
    pub fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// Runs `f` on a new thread that has entered the namespace at `path`.
pub async fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
{
    let ns = NetnsFd::open(path)?;
    let what = format!("enter network namespace {}", path.display());
    on_thread(move || {
        ns.enter().map_err(|e| NetworkError::io(what, e))?;
        f()
    })
    .await
}

/// A netlink handle whose socket lives in the namespace at `path`; its
/// connection task ends when the last clone of the handle is dropped.
pub async fn netlink_in(path: &Path) -> Result<rtnetlink::Handle, NetworkError> {
    let rt = tokio::runtime::Handle::current();
    let what = format!("open a netlink socket in {}", path.display());
    let (conn, handle) = run_in(path, move || {
        let _guard = rt.enter();
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetworkError::io(what, e))?;
        Ok((conn, handle))
    })
    .await?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A netlink handle in the caller's (the host's) namespace.
pub fn netlink_host() -> Result<rtnetlink::Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection()
        .map_err(|e| NetworkError::io("open a netlink socket on the host", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Runs `f` on a thread of its own and awaits its result.
async fn on_thread<T, F>(f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("fcx-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| NetworkError::io("spawn a thread for namespace work", e))?;
    rx.await.map_err(|_| {
        NetworkError::io(
            "namespace thread",
            std::io::Error::other("the thread panicked"),
        )
    })?
}

/// Makes `/run/netns` a shared mount point, as iproute2 does, so namespaces
/// mounted there later are visible in mount namespaces cloned from this one
/// (the jailer's).
fn prepare_dir() -> Result<(), NetworkError> {
    static DONE: Mutex<bool> = Mutex::new(false);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR)
        .map_err(|e| NetworkError::io(format!("create {NETNS_DIR}"), e))?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    if mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>).is_err() {
        // Not a mount point yet: bind it onto itself, then share it.
        mount(
            Some(NETNS_DIR),
            NETNS_DIR,
            Some("none"),
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|_| mount(None::<&str>, NETNS_DIR, Some("none"), shared, None::<&str>))
        .map_err(|e| {
            NetworkError::io(format!("make {NETNS_DIR} a shared mount point"), e.into())
        })?;
    }
    *done = true;
    Ok(())
}

/// Creates a new network namespace and pins it at `path` (fails if the file exists).
pub async fn create(path: &Path) -> Result<(), NetworkError> {
    prepare_dir()?;
    let path: PathBuf = path.to_path_buf();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            NetworkError::io(
                format!(
                    "create namespace file {} (a leftover? `sweep` removes it)",
                    path.display()
                ),
                e,
            )
        })?;
    let pinned = path.clone();
    let result = on_thread(move || {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| NetworkError::io("unshare(CLONE_NEWNET)", e.into()))?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &pinned,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            NetworkError::io(
                format!("bind-mount the namespace onto {}", pinned.display()),
                e.into(),
            )
        })
    })
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    debug!(netns = %path.display(), "created network namespace");
    result
}

/// Unpins and deletes the namespace file at `path`; the namespace itself ends
/// when its last process leaves. Returns whether there was one.
pub fn remove(path: &Path) -> Result<bool, NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::io(
                format!("unmount namespace {}", path.display()),
                e.into(),
            ))
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            debug!(netns = %path.display(), "removed network namespace");
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(NetworkError::io(
            format!("delete namespace file {}", path.display()),
            e,
        )),
    }
}

/// The namespace files in `/run/netns` (just their names).
pub(crate) fn list() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// Writes `value` to the sysctl file `key` (`/proc/sys/...`) of the calling
/// thread's namespace.
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(key, value).map_err(|e| NetworkError::io(format!("write {value} to {key}"), e))
}

/// Set once this process has turned the host's IPv4 forwarding on.
static TURNED_FORWARDING_ON: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether this process turned the host's IPv4 forwarding on (it was off).
pub fn turned_host_forwarding_on() -> bool {
    TURNED_FORWARDING_ON.load(std::sync::atomic::Ordering::SeqCst)
}

/// Turns IPv4 forwarding on in the host namespace if it is off, saying so
/// and recording it (see [`turned_host_forwarding_on`]).
pub(crate) fn enable_host_forwarding() -> Result<(), NetworkError> {
    const KEY: &str = "/proc/sys/net/ipv4/ip_forward";
    let current =
        std::fs::read_to_string(KEY).map_err(|e| NetworkError::io(format!("read {KEY}"), e))?;
    if current.trim() != "1" {
        warn!(
            "net.ipv4.ip_forward was {}, set it to 1 for execution networking",
            current.trim()
        );
        write_sysctl(KEY, "1")?;
        TURNED_FORWARDING_ON.store(true, std::sync::atomic::Ordering::SeqCst);
    }
    Ok(())
}
