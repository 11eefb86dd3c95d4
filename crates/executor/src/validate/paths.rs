//! Resolution of a host path a request gives: absolute, not under a kernel
//! interface (`/proc`, `/sys`), symbolic links resolved once (the resolved
//! path is what is checked and what the VM gets), valid UTF-8 (it goes into
//! Firecracker's JSON), and inside the [`PathPolicy`]'s directories.

use std::path::{Component, Path, PathBuf};

use super::{PathPolicy, ValidationError};

/// The top directories whose files are kernel interfaces, never images.
const KERNEL_INTERFACES: [&str; 2] = ["proc", "sys"];

/// What a path under a kernel interface is, for [`ValidationError::WrongFileType`].
pub(super) const KERNEL_INTERFACE: &str = "under /proc or /sys: a kernel interface, not an image";

/// Resolves `raw`, the value of `field`; `fix` tells what to give.
pub(super) fn resolve(
    policy: &PathPolicy,
    field: &str,
    raw: &str,
    fix: &'static str,
) -> Result<PathBuf, ValidationError> {
    let invalid = |reason: &str, fix: &'static str| ValidationError::InvalidValue {
        field: field.to_string(),
        value: format!("{raw:?}"),
        reason: reason.to_string(),
        fix,
    };
    let wrong_type = |found: &'static str| ValidationError::WrongFileType {
        field: field.to_string(),
        path: raw.to_string(),
        found,
        fix,
    };
    if raw.is_empty() {
        return Err(ValidationError::Missing {
            field: field.to_string(),
            fix,
        });
    }
    if raw.contains('\0') {
        return Err(invalid("contains a NUL byte", fix));
    }
    let given = Path::new(raw);
    if !given.is_absolute() {
        return Err(invalid(
            "is a relative path (it would depend on fcexec's working directory)",
            "give an absolute path",
        ));
    }
    if is_kernel_interface(given) {
        return Err(wrong_type(KERNEL_INTERFACE));
    }
    let resolved = match std::fs::canonicalize(given) {
        Ok(path) => path,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ValidationError::NotFound {
                field: field.to_string(),
                path: raw.to_string(),
                fix,
            })
        }
        Err(source) => {
            return Err(ValidationError::Inaccessible {
                field: field.to_string(),
                path: raw.to_string(),
                source,
                fix: "make every directory on the path searchable and every symbolic link \
                      resolvable by the user fcexec runs as",
            })
        }
    };
    if is_kernel_interface(&resolved) {
        return Err(wrong_type(KERNEL_INTERFACE));
    }
    if resolved.to_str().is_none() {
        return Err(invalid(
            "resolves to a path that is not valid UTF-8",
            "rename the file or the link so that the resolved path is UTF-8",
        ));
    }
    policy
        .check(&resolved)
        .map_err(|allowed| ValidationError::OutsideAllowedDirs {
            field: field.to_string(),
            path: raw.to_string(),
            resolved: resolved.display().to_string(),
            allowed,
        })?;
    Ok(resolved)
}

/// Whether an absolute path is under `/proc` or `/sys`.
pub(super) fn is_kernel_interface(path: &Path) -> bool {
    let mut parts = path.components();
    parts.next() == Some(Component::RootDir)
        && matches!(parts.next(), Some(Component::Normal(top))
            if KERNEL_INTERFACES.iter().any(|k| top == *k))
}
