//! Test support shared by fcexec's crates.
//!
//! Tests that need the real Firecracker VMM call [`require_vmm()`] (or the
//! [`require_vmm!`] macro) first. When `firecracker`, `jailer` or a usable
//! `/dev/kvm` is missing the test returns early and counts as skipped; when the
//! test binary exits it prints one plain line saying how many of its tests were
//! skipped and why. Set `FCEXEC_REQUIRE_VMM=1` to turn a skip into a failure.
//!
//! ```no_run
//! #[test]
//! fn boots() {
//!     let vmm = testkit::require_vmm!();
//!     assert!(vmm.firecracker.exists());
//! }
//! ```

pub mod linux_guest;
pub mod network;
pub mod protocol_vectors;
pub mod tiny_guest;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};

/// The real binaries a test may use.
#[derive(Debug, Clone)]
pub struct Vmm {
    /// Path of the `firecracker` binary.
    pub firecracker: PathBuf,
    /// Path of the `jailer` binary.
    pub jailer: PathBuf,
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static REASON: Mutex<String> = Mutex::new(String::new());
static AT_EXIT: Once = Once::new();

/// Finds a binary through the environment variable `var`, else through `PATH`.
pub fn find_binary(var: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        return is_executable(&path).then_some(path);
    }
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Sends the code's `tracing` events to the test's output, filtered by
/// `RUST_LOG` (nothing when it is unset), so `RUST_LOG=warn cargo test --
/// --nocapture` shows every warning a run logs.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Creates a socket file nothing listens on, as a VMM that exited leaves
/// behind. (Binding and dropping a listener would do too, were it not that a
/// process forked meanwhile by another test holds the listener until it execs.)
pub fn stale_socket(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("no NUL in path");
    // SAFETY: mknod with a valid C string; S_IFSOCK needs no device number.
    let rc = unsafe { libc::mknod(c.as_ptr(), libc::S_IFSOCK | 0o600, 0) };
    assert_eq!(
        rc,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// The pids of firecracker processes whose command line mentions `needle`
/// (a test's temporary directory), or, jailed, whose root directory is a
/// jail under it: what a test must leave none of.
pub fn firecracker_pids(needle: &Path) -> Vec<u32> {
    let jails = jail_roots(needle);
    let needle = needle.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let ours =
                cmdline.contains(&needle) || root_of(pid).is_some_and(|r| jails.contains(&r));
            (cmdline.contains("firecracker") && ours).then_some(pid)
        })
        .collect()
}

/// The (device, inode) of every jail root (`.../.jail/firecracker/<id>/root`)
/// under `dir`: a jailed VMM's command line holds only paths inside its
/// chroot, so it is found by its root directory instead.
fn jail_roots(dir: &Path) -> Vec<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fn walk(dir: &Path, depth: usize, out: &mut Vec<(u64, u64)>) {
        if depth == 0 {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let p = e.path();
            if p.ends_with(".jail/firecracker") {
                for jail in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    if let Ok(m) = std::fs::metadata(jail.path().join("root")) {
                        out.push((m.dev(), m.ino()));
                    }
                }
            } else {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, 4, &mut out);
    // An execution's directory: its jail is `../.jail/firecracker/<id>-<hash>`.
    if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
        let prefix = format!("{}-", name.to_string_lossy().replace(['_', '.'], "-"));
        let jails = parent.join(".jail/firecracker");
        for jail in std::fs::read_dir(jails).into_iter().flatten().flatten() {
            let id = jail.file_name().to_string_lossy().into_owned();
            let is_it = id
                .strip_prefix(&prefix)
                .is_some_and(|hash| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_hexdigit()));
            if let (true, Ok(m)) = (is_it, std::fs::metadata(jail.path().join("root"))) {
                out.push((m.dev(), m.ino()));
            }
        }
    }
    out
}

/// The (device, inode) of process `pid`'s root directory.
fn root_of(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(format!("/proc/{pid}/root/")).ok()?;
    Some((m.dev(), m.ino()))
}

/// What process `pid`'s open descriptors point at (`/proc/<pid>/fd`).
pub fn open_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Every file under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// True when `/dev/kvm` can be opened for reading and writing.
pub fn kvm_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Returns the real binaries, or records a skip (with its reason) and returns `None`.
pub fn require_vmm(test: &str) -> Option<Vmm> {
    init_logging();
    let firecracker = find_binary("FIRECRACKER_BIN", "firecracker");
    let jailer = find_binary("JAILER_BIN", "jailer");
    let reason = match (&firecracker, &jailer, kvm_usable()) {
        (Some(f), Some(j), true) => {
            return Some(Vmm {
                firecracker: f.clone(),
                jailer: j.clone(),
            })
        }
        (None, _, _) => {
            "firecracker not found (install the v1.16.1 release on PATH or set FIRECRACKER_BIN)"
        }
        (_, None, _) => "jailer not found (install the v1.16.1 release on PATH or set JAILER_BIN)",
        (_, _, false) => "/dev/kvm is missing or not readable and writable",
    };
    skip(test, reason);
    None
}

/// Counts the calling test as skipped for `reason` (it should return next).
/// Panics instead when `FCEXEC_REQUIRE_VMM=1` forbids skipping.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("FCEXEC_REQUIRE_VMM").is_some_and(|v| v == "1") {
        panic!("{test}: {reason}, and FCEXEC_REQUIRE_VMM=1 forbids skipping");
    }
    record_skip(reason);
}

/// Counts the calling test as skipped for `reason` even when
/// `FCEXEC_REQUIRE_VMM=1`: for tests gated on purpose on something this
/// kind of host cannot have (a Linux kernel that boots here).
pub fn skip_gated(reason: &str) {
    record_skip(reason);
}

fn record_skip(reason: &str) {
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    if let Ok(mut r) = REASON.lock() {
        *r = reason.to_string();
    }
    AT_EXIT.call_once(|| {
        // SAFETY: `report_skips` is an `extern "C"` function without arguments
        // that only reads atomics and writes to stderr.
        unsafe {
            libc::atexit(report_skips);
        }
    });
}

extern "C" fn report_skips() {
    let n = SKIPPED.load(Ordering::SeqCst);
    let reason = REASON.lock().map(|r| r.clone()).unwrap_or_default();
    let bin = std::env::args().next().unwrap_or_default();
    let bin = Path::new(&bin)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Written straight to stderr so that the test harness does not capture it.
    let _ = writeln!(std::io::stderr(), "SKIPPED {n} test(s) in {bin}: {reason}");
}

/// Returns the real binaries, or returns early from the calling test.
#[macro_export]
macro_rules! require_vmm {
    () => {
        match $crate::require_vmm(module_path!()) {
            Some(vmm) => vmm,
            None => return,
        }
    };
}
