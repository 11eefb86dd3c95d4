//! File system primitives of layer application: path normalization,
//! removal that never follows symbolic links, opaque-directory clearing,
//! extended attributes and times.

use std::collections::HashSet;
use std::ffi::CString;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::LayerError;

/// `raw` as a path relative to the root: `.` components dropped, absolute
/// paths and `..` refused. The root itself is the empty path.
pub(super) fn normalize(index: usize, raw: &Path) -> Result<PathBuf, LayerError> {
    let mut out = PathBuf::new();
    for component in raw.components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(LayerError::ParentComponent {
                    layer: index,
                    entry: raw.to_path_buf(),
                })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(LayerError::AbsolutePath {
                    layer: index,
                    entry: raw.to_path_buf(),
                })
            }
        }
    }
    Ok(out)
}

/// Removes whatever is at `path` (a directory recursively), never
/// following a symbolic link; missing is fine.
pub(super) fn remove_any(path: &Path) -> std::io::Result<()> {
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes what lower layers left in `dir` (`rel` from the root): every
/// child this layer did not create, recursing into those it did.
pub(super) fn clear_lower(dir: &Path, rel: &Path, seen: &HashSet<PathBuf>) -> std::io::Result<()> {
    for child in std::fs::read_dir(dir)? {
        let child = child?;
        let child_rel = rel.join(child.file_name());
        if !seen.contains(&child_rel) {
            remove_any(&child.path())?;
        } else if child.file_type()?.is_dir() {
            clear_lower(&child.path(), &child_rel, seen)?;
        }
    }
    Ok(())
}

/// The entry's extended attributes from its PAX `SCHILY.xattr.*` records.
pub(super) fn pax_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if let Some(extensions) = entry.pax_extensions()? {
        for ext in extensions {
            let ext = ext?;
            if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                out.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    Ok(out)
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
}

/// Sets the extended attribute `name` on `path` itself (not following a
/// symbolic link). Errors are reported, not skipped: a dropped
/// `security.capability` would silently change what a binary may do.
pub(super) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let c_path = cstring(path.as_os_str().as_bytes())?;
    let c_name = cstring(name.as_bytes())?;
    // SAFETY: both strings are NUL-terminated and live across the call; the
    // value pointer and length describe a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the access and modification times of `path` itself to `mtime`.
pub(crate) fn set_mtime(path: &Path, mtime: u64) -> std::io::Result<()> {
    let t = nix::sys::time::TimeSpec::new(mtime as libc::time_t, 0);
    nix::sys::stat::utimensat(
        None,
        path,
        &t,
        &t,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(std::io::Error::from)
}
