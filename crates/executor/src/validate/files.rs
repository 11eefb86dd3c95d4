//! Checks of host paths: existence, file type, access, and the kernel's ELF
//! header. Checked paths are canonical (absolute, symlinks resolved), which is
//! what the jailer needs to link them into its chroot.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::unistd::AccessFlags;

use super::ValidationError;

/// Which kinds of file a path may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// A regular file (kernel, initrd).
    File,
    /// A disk image: a regular file or a block device.
    Image,
}

/// A checked host file.
#[derive(Debug, Clone)]
pub(super) struct HostFile {
    /// Canonical path.
    pub path: PathBuf,
    /// Device and inode, to find one file attached twice.
    pub dev_ino: (u64, u64),
}

/// Checks that `raw` names an existing file of the wanted kind that this
/// process can read (and write, when `write`). `fix` tells what to give.
pub(super) fn host_file(
    field: &str,
    raw: &str,
    want: Want,
    write: bool,
    fix: &'static str,
) -> Result<HostFile, ValidationError> {
    if raw.is_empty() {
        return Err(ValidationError::Missing {
            field: field.to_string(),
            fix,
        });
    }
    if raw.contains('\0') {
        return Err(ValidationError::InvalidValue {
            field: field.to_string(),
            value: format!("{raw:?}"),
            reason: "contains a NUL byte".to_string(),
            fix,
        });
    }
    let inaccessible = |source: std::io::Error, fix: &'static str| ValidationError::Inaccessible {
        field: field.to_string(),
        path: raw.to_string(),
        source,
        fix,
    };
    let meta = match std::fs::metadata(raw) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ValidationError::NotFound {
                field: field.to_string(),
                path: raw.to_string(),
                fix,
            })
        }
        Err(e) => return Err(inaccessible(e, fix)),
    };
    let kind = meta.file_type();
    let found = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_block_device() && want == Want::File {
        Some("a block device, not a regular file")
    } else if kind.is_file() || kind.is_block_device() {
        None
    } else {
        Some("not a regular file (a device, pipe or socket)")
    };
    if let Some(found) = found {
        return Err(ValidationError::WrongFileType {
            field: field.to_string(),
            path: raw.to_string(),
            found,
            fix,
        });
    }
    let mode = if write {
        AccessFlags::R_OK | AccessFlags::W_OK
    } else {
        AccessFlags::R_OK
    };
    let access_fix = if write {
        "make it readable and writable by the user fcexec runs as"
    } else {
        "make it readable by the user fcexec runs as"
    };
    nix::unistd::access(raw, mode).map_err(|e| inaccessible(e.into(), access_fix))?;
    let path = std::fs::canonicalize(raw).map_err(|e| inaccessible(e, fix))?;
    Ok(HostFile {
        path,
        dev_ino: (meta.dev(), meta.ino()),
    })
}

/// Checks that the file starts like an x86_64 ELF kernel.
pub(super) fn check_elf_kernel(field: &str, raw: &str, path: &Path) -> Result<(), ValidationError> {
    let mut head = [0u8; 0x206];
    let mut len = 0;
    let mut file = std::fs::File::open(path).map_err(|source| ValidationError::Inaccessible {
        field: field.to_string(),
        path: raw.to_string(),
        source,
        fix: "make it readable by the user fcexec runs as",
    })?;
    while len < head.len() {
        match file.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ValidationError::Inaccessible {
                    field: field.to_string(),
                    path: raw.to_string(),
                    source,
                    fix: "give a readable kernel file",
                })
            }
        }
    }
    match elf_problem(&head[..len]) {
        None => Ok(()),
        Some(detail) => Err(ValidationError::NotElfKernel {
            field: field.to_string(),
            path: raw.to_string(),
            detail,
        }),
    }
}

/// What is wrong with a kernel that starts with `head`, if anything.
pub(super) fn elf_problem(head: &[u8]) -> Option<&'static str> {
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Some("it is a bzImage; bzImage is not supported by Firecracker on x86_64");
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        return Some("it is gzip-compressed; decompress it");
    }
    if !head.starts_with(b"\x7fELF") {
        return Some(if head.len() < 4 {
            "it is shorter than an ELF header"
        } else {
            "it does not start with the ELF magic"
        });
    }
    if head.get(4) != Some(&2) {
        return Some("it is not a 64-bit ELF file");
    }
    #[cfg(target_arch = "x86_64")]
    if head.get(18..20) != Some(&[0x3e, 0x00]) {
        return Some("it is an ELF file for another machine than x86_64");
    }
    None
}
