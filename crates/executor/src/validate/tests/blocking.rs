//! Files that would block are refused at once: a FIFO swapped in after the
//! type was looked at (opened `O_NONBLOCK`, refused by `fstat`), a kernel
//! another process holds a write lease on (`EWOULDBLOCK`, not a 45 s wait).
//! A validation that blocks anyway (the [`OpenHook`] seam standing in for a
//! hung file system) is refused at the limit, naming the field.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// How long a check that must not block may take, at most.
const PROMPT: Duration = Duration::from_secs(2);

/// Runs `f` on a thread; fails the test (instead of hanging) after [`PROMPT`].
fn promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PROMPT)
        .unwrap_or_else(|_| panic!("validation blocked for more than {PROMPT:?}"))
}

#[test]
fn a_fifo_swapped_in_before_the_open_is_refused_without_blocking() {
    let f = Fixture::new();
    let r = f.request();
    let input = std::fs::canonicalize(f.p("in0.img")).unwrap();
    let err = promptly(move || {
        // Between the look at the type and the open, the input (opened
        // read-only) becomes a FIFO without a writer: a blocking open would
        // wait forever.
        let hook = OpenHook::new(move |field, path| {
            if field == "inputs[0].source" && path == input {
                std::fs::remove_file(path).unwrap();
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
            }
        });
        let policy = PathPolicy::default();
        let checks = Checks {
            policy: &policy,
            hook: Some(&hook),
            progress: None,
        };
        validate_checked(&r, &HOST, &checks).unwrap_err()
    });
    assert!(
        matches!(err, ValidationError::WrongFileType { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("named pipe"), "{err}");
    drop(f);
}

/// `F_SETSIG`, from `<fcntl.h>` (not in the libc crate for this target).
const F_SETSIG: libc::c_int = 10;

#[test]
fn a_leased_kernel_is_refused_at_once() {
    let f = Fixture::new();
    let kernel = f.p("vmlinux");
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&kernel)
        .unwrap();
    let fd = holder.as_raw_fd();
    // SAFETY: fcntl(2) on a descriptor this test owns. The lease break is
    // signalled with SIGWINCH (ignored) instead of SIGIO (which would end
    // the test process).
    let leased = unsafe {
        libc::fcntl(fd, F_SETSIG, libc::SIGWINCH) == 0
            && libc::fcntl(fd, libc::F_SETLEASE, libc::F_WRLCK) == 0
    };
    if !leased {
        eprintln!(
            "skipped: no write lease here: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let r = f.request();
    let started = Instant::now();
    let err = promptly(move || validate(&r, &HOST).unwrap_err());
    assert!(started.elapsed() < PROMPT);
    assert_eq!(err.field(), "engine_spec.params.kernel_image", "{err}");
    assert!(err.to_string().contains("lease"), "{err}");
    drop(holder);
}

#[tokio::test]
async fn a_validation_that_blocks_times_out_naming_the_field() {
    let f = Fixture::new();
    let (release, blocked) = mpsc::channel::<()>();
    let blocked = Arc::new(Mutex::new(blocked));
    let kernel = std::fs::canonicalize(f.p("vmlinux")).unwrap();
    let hook = OpenHook::new(move |_, path| {
        if path == kernel {
            // Stands in for a read that never returns; the test lets go at
            // its end so that the runtime can shut down.
            let rx = blocked.lock().unwrap();
            let _ = rx.recv_timeout(Duration::from_secs(30));
        }
    });
    let limit = Duration::from_millis(200);
    let config = crate::ExecutorConfig {
        validation_timeout: limit,
        validation_hook: Some(hook),
        ..crate::ExecutorConfig::default()
    };
    let host = HOST;
    let started = Instant::now();
    let err = validate_within(f.request(), host, &config)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(took >= limit && took < limit + PROMPT, "{took:?}");
    let crate::ExecutorError::Invalid(err) = err else {
        panic!("{err:?}")
    };
    let msg = err.to_string();
    assert_eq!(err.field(), "engine_spec.params.kernel_image", "{msg}");
    assert!(msg.contains("within 200ms"), "{msg}");
    assert!(msg.contains("validation_timeout"), "{msg}");
    // Another request on the same settings is not held up.
    let mut other = f.request();
    set(&mut other, "kernel_image", f.p("vmlinux32"));
    let err = validate_within(other, host, &config).await.unwrap_err();
    assert!(err.to_string().contains("64-bit"), "{err}");
    drop(release);
}

/// A directory this process cannot write: immutable when running as root
/// (which writes anywhere else), mode 0500 otherwise. Made writable again
/// when dropped.
pub(super) struct Unwritable {
    path: PathBuf,
    immutable: bool,
}

/// `FS_IMMUTABLE_FL`, from `<linux/fs.h>`.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;

impl Unwritable {
    pub(super) fn new(parent: &Path) -> Option<Unwritable> {
        use std::os::unix::fs::PermissionsExt;
        let path = parent.join("unwritable");
        std::fs::create_dir(&path).ok()?;
        if !nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o500)).ok()?;
            return Some(Unwritable {
                path,
                immutable: false,
            });
        }
        set_flags(&path, FS_IMMUTABLE_FL).then_some(Unwritable {
            path,
            immutable: true,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            set_flags(&self.path, 0);
        } else {
            let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o700));
        }
    }
}

/// Sets the inode flags of `path` (`chattr`); whether it worked.
fn set_flags(path: &Path, flags: libc::c_int) -> bool {
    let Ok(dir) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: FS_IOC_SETFLAGS reads one int from a valid pointer.
    unsafe { libc::ioctl(dir.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) == 0 }
}
