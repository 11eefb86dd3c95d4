//! Staging a plan's files into a jail without touching the user's files.
//!
//! | file | in the jail | how |
//! |---|---|---|
//! | kernel, initrd, read-only inputs, world-readable | `/kernel`, `/initrd`, `/drive-<id>` | the user's own file, owner, mode and contents unchanged: a hard link when it is on the jail's file system and writable by its owner only, else a read-only bind mount |
//! | the same, not world-readable | same | a private copy, owned by the jailed uid, mode 0400 (the jailed uid could not read the original, and fcexec never changes its mode) |
//! | writable root file system, outputs | `/drive-<id>` | a private copy in `<execution dir>/jail/` (reflinked where the file system can, else copied keeping holes), owned by the jailed uid, mode 0600 |
//! | fcexec's own files (config drive, an image's root copy) | same | handed to the jailed uid |
//!
//! Copies and fcexec's files are hard-linked into the jail when on its file
//! system, else bind-mounted: a mount and its removal cost the kernel a
//! mount-namespace update each (measured: most of what jailing added to a
//! short execution before links were used).
//! | the vsock socket | `/run/v.sock` | the VMM binds it in the jail's `run/`; the executor's agent listener is `<chroot>/run/v.sock_<port>` |
//!
//! Bind mounts never follow a path the VMM controls: they are made before
//! it starts, onto files fcexec creates. After the run, outputs are copied
//! from the private copies to `results_dir` (see [`crate::results`]).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use firecracker_api::mounts::link_or_bind;

use super::{Isolation, JailError};
use crate::plan::VmPlan;
use crate::state_dir::{ExecPaths, JAILED_VSOCK};

/// What staging made.
pub(super) struct Staged {
    /// `(host image, private copy)` for each drive that got a copy.
    pub copies: Vec<(PathBuf, PathBuf)>,
    /// Whether any file was bind-mounted (rather than linked).
    pub mounted: bool,
}

/// Stages every file of `plan` into the jail of `iso` and rewrites the plan
/// to the paths the VMM sees.
pub(super) fn stage(
    plan: &mut VmPlan,
    paths: &ExecPaths,
    iso: &Isolation,
) -> Result<Staged, JailError> {
    let stager = Stager {
        paths,
        iso,
        mounted: std::cell::Cell::new(false),
    };
    let mut copies = Vec::new();
    let kernel = PathBuf::from(&plan.boot_source.kernel_image_path);
    plan.boot_source.kernel_image_path = stager.file(&kernel, "kernel", true, &mut copies)?;
    if let Some(initrd) = plan.boot_source.initrd_path.clone() {
        plan.boot_source.initrd_path =
            Some(stager.file(Path::new(&initrd), "initrd", true, &mut copies)?);
    }
    for drive in &mut plan.drives {
        let Some(host) = drive.path_on_host.clone() else {
            continue;
        };
        let read_only = drive.is_read_only.unwrap_or(false);
        let name = format!("drive-{}", drive.drive_id);
        drive.path_on_host = Some(stager.file(Path::new(&host), &name, read_only, &mut copies)?);
    }
    if let Some(vsock) = &mut plan.vsock {
        vsock.uds_path = JAILED_VSOCK.to_string();
    }
    Ok(Staged {
        copies,
        mounted: stager.mounted.get(),
    })
}

struct Stager<'a> {
    paths: &'a ExecPaths,
    iso: &'a Isolation,
    /// Set when a file was bind-mounted.
    mounted: std::cell::Cell<bool>,
}

impl Stager<'_> {
    /// Makes `host` visible as `/<name>` in the jail; returns that path.
    fn file(
        &self,
        host: &Path,
        name: &str,
        read_only: bool,
        copies: &mut Vec<(PathBuf, PathBuf)>,
    ) -> Result<String, JailError> {
        let err = |source| JailError::Stage {
            path: host.to_path_buf(),
            source,
        };
        let target = self.iso.chroot.join(name);
        let ours = host.starts_with(self.paths.dir()) || host.starts_with(self.paths.runtime_dir());
        let mode = std::fs::metadata(host).map_err(err)?.mode();
        let (source, link) = if ours {
            std::os::unix::fs::chown(host, Some(self.iso.uid), Some(self.iso.gid)).map_err(err)?;
            (host.to_path_buf(), true)
        } else if read_only && mode & 0o004 != 0 {
            // A link gives the VMM the file's own mode: only when no one
            // but its owner may write it (a read-only mount holds anyway).
            (host.to_path_buf(), mode & 0o022 == 0)
        } else {
            let copy = self.iso.copies.join(name);
            private_copy(host, &copy, self.iso.uid, self.iso.gid, read_only).map_err(err)?;
            copies.push((host.to_path_buf(), copy.clone()));
            (copy, true)
        };
        if !link_or_bind(&source, &target, read_only, link).map_err(err)? {
            self.mounted.set(true);
        }
        Ok(format!("/{name}"))
    }
}

/// Copies `from` to `to` (reflinked when the file system can), owned by
/// `uid:gid`, mode 0400 or 0600.
fn private_copy(
    from: &Path,
    to: &Path,
    uid: u32,
    gid: u32,
    read_only: bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if let Some(dir) = to.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let source = File::open(from)?;
    let target = File::options().write(true).create_new(true).open(to)?;
    if !reflink(&source, &target) {
        // Holes stay holes: a large, mostly empty output image copies at once.
        crate::results::copy_sparse(&source, &target)?;
    }
    std::os::unix::fs::chown(to, Some(uid), Some(gid))?;
    let mode = if read_only { 0o400 } else { 0o600 };
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))
}

/// Clones `source` into `target` (`FICLONE`): instant, sharing blocks
/// until written, on btrfs and XFS; false where the file system cannot.
fn reflink(source: &File, target: &File) -> bool {
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open.
    unsafe { libc::ioctl(target.as_raw_fd(), FICLONE, source.as_raw_fd()) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_copy_has_the_contents_and_its_own_mode() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("a");
        std::fs::write(&from, b"data").unwrap();
        let before = std::fs::metadata(&from).unwrap().mode();
        let to = dir.path().join("copies/a");
        // SAFETY: getuid/getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        private_copy(&from, &to, uid, gid, true).unwrap();
        assert_eq!(std::fs::read(&to).unwrap(), b"data");
        assert_eq!(std::fs::metadata(&to).unwrap().mode() & 0o777, 0o400);
        assert_eq!(std::fs::metadata(&from).unwrap().mode(), before);
    }
}
