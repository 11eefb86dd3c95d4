//! Mounts: the initramfs's own (/proc, /sys, /dev, ...), the rootfs and
//! what the job sees inside it, and unmounting them all at the end.
//!
//! Inside the rootfs the agent mounts a fresh `proc`, a read-only `sysfs`,
//! a new `/dev` (a tmpfs with the usual character devices, a private
//! `devpts` and a `/dev/shm`; not the VM's devtmpfs, so the drives, the
//! config drive with the execution key among them, are not device nodes
//! there), a tmpfs on `/run`, and the volumes. Paths inside the rootfs are
//! resolved as the chrooted job would see them: a symlink in the image
//! (`/var/run -> /run`, say) is followed inside the rootfs, never out of it.
//!
//! [`Mounts`] remembers every mount in order; [`Mounts::unmount_all`]
//! syncs and unmounts them in reverse order, retrying busy ones for a while
//! and detaching (lazily unmounting) only as a last resort.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Why a mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount point could not be made.
    #[error("cannot create the mount point {target} in the rootfs for {what}: {source}")]
    MountPoint {
        /// What was to be mounted.
        what: String,
        /// The mount point, as the job sees it.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `mount(2)` failed.
    #[error("cannot mount {what} at {target}: {source}{hint}")]
    Mount {
        /// What, for example `drive 2 (/dev/vdc) as ext4, read-write`.
        what: String,
        /// The mount point.
        target: String,
        /// The cause.
        #[source]
        source: io::Error,
        /// A hint at the usual cause.
        hint: &'static str,
    },
    /// Populating `/dev` failed.
    #[error("cannot create {path} in the rootfs's /dev: {source}")]
    Dev {
        /// The node or link.
        path: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A file system to mount: its source, type, flags and options.
#[derive(Debug, Clone, Copy)]
pub struct Fs<'a> {
    /// The device, or the file system's name for virtual ones.
    pub source: &'a Path,
    /// The type, for example `ext4`.
    pub fstype: &'a str,
    /// The mount flags.
    pub flags: MsFlags,
    /// The options.
    pub data: Option<&'a str>,
}

impl<'a> Fs<'a> {
    /// A virtual file system (`proc`, `tmpfs`, ...), named as its source.
    pub fn virtual_fs(fstype: &'a str, flags: MsFlags, data: Option<&'a str>) -> Fs<'a> {
        Fs {
            source: Path::new(fstype),
            fstype,
            flags,
            data,
        }
    }
}

/// The mounts made, in order.
#[derive(Debug, Default)]
pub struct Mounts {
    points: Vec<Point>,
}

/// A mount made: where, and whether its mount point is to be removed once
/// it is unmounted (a file the agent created for a bind mount).
#[derive(Debug)]
struct Point {
    path: PathBuf,
    remove: bool,
}

impl Mounts {
    /// No mounts yet.
    pub fn new() -> Mounts {
        Mounts::default()
    }

    /// Mounts `fs` at `target`, an existing directory; `what` and `shown`
    /// (the target as the job sees it) are for the error.
    pub fn mount(
        &mut self,
        fs: Fs<'_>,
        target: &Path,
        what: &str,
        shown: &str,
    ) -> Result<(), MountError> {
        mount(Some(fs.source), target, Some(fs.fstype), fs.flags, fs.data).map_err(|errno| {
            let hint = match (errno, fs.fstype) {
                (Errno::EINVAL, "ext4") => " (is it an ext4 file system?)",
                (Errno::EROFS | Errno::EACCES, _) => " (is the drive read-only?)",
                _ => "",
            };
            MountError::Mount {
                what: what.to_string(),
                target: shown.to_string(),
                source: errno.into(),
                hint,
            }
        })?;
        self.points.push(Point {
            path: target.to_path_buf(),
            remove: false,
        });
        Ok(())
    }

    /// Bind-mounts the file `source` over the file `target`, read-only,
    /// `nosuid`, `nodev` and `noexec`. `created`: the agent created
    /// `target` as the mount point, and removes it once it is unmounted.
    /// `what` and `shown` (the target as the job sees it) are for the error.
    /// The mount is held (and unmounted at the end) even when making it
    /// read-only fails; a created `target` is removed at once when the bind
    /// mount itself fails.
    pub fn bind_read_only(
        &mut self,
        source: &Path,
        target: &Path,
        created: bool,
        what: &str,
        shown: &str,
    ) -> Result<(), MountError> {
        let failed = |errno: Errno| MountError::Mount {
            what: what.to_string(),
            target: shown.to_string(),
            source: errno.into(),
            hint: "",
        };
        if let Err(errno) = mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            if created {
                let _ = std::fs::remove_file(target);
            }
            return Err(failed(errno));
        }
        self.points.push(Point {
            path: target.to_path_buf(),
            remove: created,
        });
        // A bind mount takes its own flags only when remounted.
        let flags = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | MsFlags::MS_NOSUID
            | MsFlags::MS_NODEV
            | MsFlags::MS_NOEXEC;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(failed)
    }

    /// How many mounts are held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when nothing is mounted.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Syncs and unmounts everything in reverse order; returns a warning
    /// for each mount that was busy or failed. Idempotent.
    pub fn unmount_all(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        nix::unistd::sync();
        while let Some(point) = self.points.pop() {
            if let Some(warning) = unmount(&point.path) {
                warnings.push(warning);
            }
            if point.remove {
                match std::fs::remove_file(&point.path) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => warnings.push(format!(
                        "cannot remove the mount point {}: {e}",
                        point.path.display()
                    )),
                    _ => {}
                }
            }
        }
        nix::unistd::sync();
        warnings
    }
}

/// Unmounts `point`, retrying while busy for up to a second, then lazily.
fn unmount(point: &Path) -> Option<String> {
    for _ in 0..20 {
        match umount2(point, MntFlags::empty()) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOENT) => return None,
            Err(Errno::EBUSY) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Some(format!("cannot unmount {}: {e}", point.display())),
        }
    }
    match umount2(point, MntFlags::MNT_DETACH) {
        Ok(()) => Some(format!(
            "{} stayed busy; detached it (unmounted lazily)",
            point.display()
        )),
        Err(e) => Some(format!("cannot unmount {}: {e}", point.display())),
    }
}

/// The guest's early mounts on the initramfs (each skipped when already
/// there), and fds 0 to 2 opened on the console when the kernel left them
/// closed. Returns a warning per failure.
pub fn early() -> Vec<String> {
    let nosuid = MsFlags::MS_NOSUID;
    let plain = nosuid | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let table: [(&str, &str, MsFlags, Option<&str>); 7] = [
        ("/proc", "proc", plain, None),
        ("/sys", "sysfs", plain, None),
        ("/dev", "devtmpfs", nosuid, Some("mode=0755")),
        (
            "/dev/pts",
            "devpts",
            nosuid | MsFlags::MS_NOEXEC,
            Some("mode=0620,ptmxmode=0666"),
        ),
        (
            "/dev/shm",
            "tmpfs",
            nosuid | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
        (
            "/run",
            "tmpfs",
            nosuid | MsFlags::MS_NODEV,
            Some("mode=0755"),
        ),
        (
            "/tmp",
            "tmpfs",
            nosuid | MsFlags::MS_NODEV,
            Some("mode=1777"),
        ),
    ];
    let mut warnings = Vec::new();
    for (target, fstype, flags, data) in table {
        if let Err(e) = std::fs::create_dir_all(target) {
            warnings.push(format!("cannot create {target}: {e}"));
            continue;
        }
        match mount(Some(fstype), target, Some(fstype), flags, data) {
            Ok(()) | Err(Errno::EBUSY) => {}
            Err(e) => warnings.push(format!("cannot mount {fstype} at {target}: {e}")),
        }
    }
    for fd in 0..3 {
        // SAFETY: F_GETFD only asks whether the descriptor is open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/console")
            .or_else(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
            });
        if let Ok(file) = opened {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto a closed low descriptor; `file` closes its own.
            unsafe { libc::dup2(file.as_raw_fd(), fd) };
        }
    }
    warnings
}

/// `path` (absolute, as the chrooted job sees it) as a path on the agent's
/// side, following the rootfs's symlinks inside `root`. The part that does
/// not exist yet is appended as it is.
pub fn resolve_in_root(root: &Path, path: &str) -> io::Result<PathBuf> {
    let mut todo: VecDeque<OsString> = components(Path::new(path));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let here: PathBuf = done.iter().fold(root.to_path_buf(), |p, c| p.join(c));
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // The rest does not exist: no symlinks to follow in it.
                for part in todo.drain(..) {
                    if part == ".." {
                        done.pop();
                    } else {
                        done.push(part);
                    }
                }
                break;
            }
            Err(e) => return Err(e),
        };
        if !meta.file_type().is_symlink() {
            continue;
        }
        links += 1;
        if links > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = std::fs::read_link(&here)?;
        done.pop();
        if target.is_absolute() {
            done.clear();
        }
        for part in components(&target).into_iter().rev() {
            todo.push_front(part);
        }
    }
    Ok(done.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// The normal and `..` components of a path.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Resolves `path` inside the rootfs and creates it as a directory.
pub fn dir_in_root(root: &Path, path: &str, what: &str) -> Result<PathBuf, MountError> {
    let point = |source| MountError::MountPoint {
        what: what.to_string(),
        target: path.to_string(),
        source,
    };
    let resolved = resolve_in_root(root, path).map_err(point)?;
    std::fs::create_dir_all(&resolved).map_err(point)?;
    Ok(resolved)
}

/// Mounts a new `/dev` in the rootfs at `root` (see the module docs).
pub fn populate_dev(mounts: &mut Mounts, root: &Path) -> Result<(), MountError> {
    let dev = dir_in_root(root, "/dev", "/dev")?;
    let tmpfs = Fs::virtual_fs(
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("mode=0755"),
    );
    mounts.mount(tmpfs, &dev, "a tmpfs", "/dev")?;
    let failed = |path: &str| {
        let path = format!("/dev/{path}");
        move |source: io::Error| MountError::Dev { path, source }
    };
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let node = dev.join(name);
        mknod(
            &node,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(io::Error::from)
        .map_err(failed(name))?;
        // The umask applies to mknod: set the mode outright.
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o666))
            .map_err(failed(name))?;
    }
    for (name, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(target, dev.join(name)).map_err(failed(name))?;
    }
    for name in ["pts", "shm"] {
        std::fs::create_dir(dev.join(name)).map_err(failed(name))?;
    }
    let devpts = Fs::virtual_fs(
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    mounts.mount(devpts, &dev.join("pts"), "a devpts", "/dev/pts")?;
    let shm = Fs::virtual_fs(
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mounts.mount(shm, &dev.join("shm"), "a tmpfs", "/dev/shm")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/run", root.join("varrun")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../..", root.join("usr/lib/up")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str| resolve_in_root(root, p).unwrap();
        assert_eq!(r("/lib/x"), root.join("usr/lib/x"));
        assert_eq!(r("/varrun/fcexec"), root.join("run/fcexec"));
        assert_eq!(r("/escape/etc"), root.join("etc"));
        assert_eq!(r("/usr/lib/up/etc"), root.join("etc"));
        assert_eq!(r("/../../etc/passwd"), root.join("etc/passwd"));
        assert_eq!(r("/new/dir/.."), root.join("new"));
        assert_eq!(r("/"), root.to_path_buf());
        let err = resolve_in_root(root, "/loop/x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn dir_in_root_creates_the_mount_point() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/data", dir.path().join("mnt")).unwrap();
        let point = dir_in_root(dir.path(), "/mnt/in", "drive 1").unwrap();
        assert_eq!(point, dir.path().join("data/in"));
        assert!(point.is_dir());
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = dir_in_root(dir.path(), "/file/in", "drive 2").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot create the mount point /file/in in the rootfs for drive 2"),
            "{err}"
        );
    }
}
