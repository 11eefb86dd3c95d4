//! Bind mounts of single files into a jail, and their removal.
//!
//! A hard link cannot cross file systems (a jail under `/run`, a tmpfs, and
//! the user's files on a disk), and a copy of a large image costs time and
//! space. A bind mount of the file onto an empty file in the jail makes the
//! same inode visible there without changing its owner, mode or contents;
//! remounted read-only, the jailed VMM cannot write it even where the file's
//! mode would let it. Mounts are made in the caller's mount namespace before
//! the jailer starts (the jailer's own namespace copies them), and removed
//! with [`unmount_under`] before the jail's directory is deleted.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Bind-mounts the file `source` onto `target` (created empty, mode 0400,
/// if absent); read-only when `read_only`. On failure nothing stays mounted.
pub fn bind_file(source: &Path, target: &Path, read_only: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o400)
        .open(target)?;
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(std::io::Error::from)?;
    if read_only {
        // A bind mount takes the read-only flag only on a remount.
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(e.into());
        }
    }
    Ok(())
}

/// Makes `source` appear at `target` (which must not exist): a hard link
/// when `source` is on the same file system and `link` allows it (no mount
/// to make and undo: each costs the kernel a namespace update), else a bind
/// mount ([`bind_file`]). Neither changes `source`'s owner, mode or
/// contents. Returns true when it linked.
pub fn link_or_bind(
    source: &Path,
    target: &Path,
    read_only: bool,
    link: bool,
) -> std::io::Result<bool> {
    if link && std::fs::hard_link(source, target).is_ok() {
        return Ok(true);
    }
    bind_file(source, target, read_only).map(|()| false)
}

/// The mount points at or below `dir` in this mount namespace, deepest
/// first (from `/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Unmounts (lazily, `MNT_DETACH`) everything mounted at or below `dir`.
/// A `dir` that does not exist has nothing mounted.
pub fn unmount_under(dir: &Path) -> std::io::Result<()> {
    for point in mounts_under(dir)? {
        // Stacked mounts on one point each take one unmount.
        loop {
            match umount2(&point, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Undoes mountinfo's octal escapes (`\040` for a space and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\"), "/end\\");
    }

    #[test]
    fn nothing_is_mounted_under_a_fresh_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(mounts_under(dir.path()).unwrap().is_empty());
        unmount_under(&dir.path().join("absent")).unwrap();
    }
}
