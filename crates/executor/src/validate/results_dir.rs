//! `results_dir`: where the output images and logs go after the run. It is
//! checked now, so that an unusable one is refused before the VM starts:
//! absolute, not under `/proc` or `/sys`, not a symbolic link itself (the
//! copy refuses to follow one), and either a directory this process can
//! write, or a path that can be created (its nearest existing ancestor a
//! directory this process can write).

use std::path::{Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::unistd::{faccessat, AccessFlags};

use super::checks::shorten;
use super::paths::{is_kernel_interface, KERNEL_INTERFACE};
use super::{Checks, ValidationError};

const FIELD: &str = "results_dir";
const FIX: &str = "give an absolute host directory for the output images and logs";
const WRITE_FIX: &str =
    "make it writable by the user fcexec runs as (on a file system mounted read-write), or give \
     another directory";

/// Checks `raw`; `required` when there are outputs.
pub(super) fn check_results_dir(
    checks: &Checks,
    raw: &str,
    required: bool,
) -> Result<Option<PathBuf>, ValidationError> {
    if raw.is_empty() {
        return match required {
            true => Err(ValidationError::Missing {
                field: FIELD.into(),
                fix: "outputs need a results directory; give an absolute host directory",
            }),
            false => Ok(None),
        };
    }
    let invalid = |reason: String| ValidationError::InvalidValue {
        field: FIELD.into(),
        value: shorten(raw),
        reason,
        fix: FIX,
    };
    let wrong_type = |found: &'static str, fix: &'static str| ValidationError::WrongFileType {
        field: FIELD.into(),
        path: raw.to_string(),
        found,
        fix,
    };
    if raw.contains('\0') {
        return Err(invalid("contains a NUL byte".into()));
    }
    let path = Path::new(raw);
    if !path.is_absolute() {
        return Err(invalid("is not an absolute path".into()));
    }
    if is_kernel_interface(path) {
        return Err(wrong_type(KERNEL_INTERFACE, FIX));
    }
    let _checking = checks.progress.map(|p| p.enter(FIELD, path));
    let inaccessible = |source: std::io::Error, fix: &'static str| ValidationError::Inaccessible {
        field: FIELD.into(),
        path: raw.to_string(),
        source,
        fix,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(wrong_type(
            "a symbolic link",
            "give the directory itself: fcexec does not follow a symbolic link there",
        )),
        Ok(meta) if !meta.is_dir() => Err(wrong_type("not a directory", FIX)),
        Ok(_) => {
            writable(path).map_err(|e| inaccessible(e, WRITE_FIX))?;
            Ok(Some(path.to_path_buf()))
        }
        Err(e) if is_missing(&e) => {
            creatable(path).map_err(invalid)?;
            Ok(Some(path.to_path_buf()))
        }
        Err(source) => Err(inaccessible(source, FIX)),
    }
}

/// Whether this process (its effective user) can create entries in `dir`.
fn writable(dir: &Path) -> std::io::Result<()> {
    faccessat(
        None,
        dir,
        AccessFlags::W_OK | AccessFlags::X_OK,
        AtFlags::AT_EACCESS,
    )
    .map_err(std::io::Error::from)
}

/// Whether the missing `path` can be created: `Err` says why not.
fn creatable(path: &Path) -> Result<(), String> {
    for ancestor in path.ancestors().skip(1) {
        match std::fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => {
                return writable(ancestor).map_err(|e| {
                    format!(
                        "does not exist and cannot be created in {}: {e}; make that directory \
                         writable by the user fcexec runs as, or create {}",
                        ancestor.display(),
                        path.display()
                    )
                });
            }
            Ok(_) => {
                return Err(format!(
                    "cannot be created: {} is not a directory",
                    ancestor.display()
                ))
            }
            Err(e) if is_missing(&e) => continue,
            Err(e) => {
                return Err(format!(
                    "cannot be created: {} cannot be looked at: {e}",
                    ancestor.display()
                ))
            }
        }
    }
    Err("has no existing ancestor directory".into())
}

/// Whether a lookup failed because the path (or a directory on it) is not there.
fn is_missing(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}
