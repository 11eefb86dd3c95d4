//! Checks of host files: the path resolved ([`super::paths`]), the type
//! looked at before opening (a character device is never opened), then the
//! file opened with `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY` (read-only, or
//! read-write when the VM writes it: the open itself proves the access) and
//! its type and file system checked again on the open descriptor, so a file
//! swapped meanwhile is caught. The kernel's ELF header is read from that
//! same descriptor.

use std::fs::{File, FileType, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use fcexec_images::{Reference, Source};

use super::PathPolicy;

use nix::sys::statfs::{
    fstatfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, DEBUGFS_MAGIC, PROC_SUPER_MAGIC,
    SECURITYFS_MAGIC, SYSFS_MAGIC,
};

use super::paths::{resolve, KERNEL_INTERFACE};
use super::{Checks, ValidationError};

/// Which kinds of file a path may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Want {
    /// A regular file (kernel, initrd).
    File,
    /// A disk image: a regular file or a block device.
    Image,
}

/// What makes two paths the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FileId {
    /// A file: its device and inode (hard links share them).
    Inode(u64, u64),
    /// A block device: the device it is (two nodes may name one device).
    BlockDevice(u64),
}

/// A checked host file.
#[derive(Debug)]
pub(super) struct HostFile {
    /// The resolved path: what the VM is given.
    pub path: PathBuf,
    /// Its identity, to find one file given twice.
    pub id: FileId,
    /// The open descriptor the checks looked at.
    pub file: File,
}

/// Checks that `raw`, the value of `field`, names a file of the wanted
/// kind that this process can read (and write, when `write`) and that the
/// policy allows. `fix` tells what to give.
pub(super) fn host_file(
    checks: &Checks,
    field: &str,
    raw: &str,
    want: Want,
    write: bool,
    fix: &'static str,
) -> Result<HostFile, ValidationError> {
    let _checking = checks.progress.map(|p| p.enter(field, Path::new(raw)));
    let path = resolve(checks.policy, field, raw, fix)?;
    let wrong_type = |found: &'static str| ValidationError::WrongFileType {
        field: field.to_string(),
        path: raw.to_string(),
        found,
        fix,
    };
    let inaccessible = |source: std::io::Error, fix: &'static str| ValidationError::Inaccessible {
        field: field.to_string(),
        path: raw.to_string(),
        source,
        fix,
    };
    let before = std::fs::symlink_metadata(&path).map_err(|e| inaccessible(e, fix))?;
    if let Some(found) = type_problem(before.file_type(), want) {
        return Err(wrong_type(found));
    }
    if let Some(hook) = checks.hook {
        hook.call(field, &path);
    }
    let access_fix = if write {
        "make it readable and writable by the user fcexec runs as, on a file system mounted \
         read-write"
    } else {
        "make it readable by the user fcexec runs as"
    };
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| match e.kind() {
            ErrorKind::NotFound => ValidationError::NotFound {
                field: field.to_string(),
                path: raw.to_string(),
                fix,
            },
            _ if e.raw_os_error() == Some(libc::ELOOP) => {
                wrong_type("a symbolic link now (it was replaced while it was checked)")
            }
            ErrorKind::WouldBlock => inaccessible(
                e,
                "another process holds a lease on it; retry once it lets go, or give a copy",
            ),
            _ => inaccessible(e, access_fix),
        })?;
    let meta = file.metadata().map_err(|e| inaccessible(e, fix))?;
    if let Some(found) = type_problem(meta.file_type(), want) {
        return Err(wrong_type(found));
    }
    let fs = fstatfs(&file).map_err(|e| inaccessible(e.into(), fix))?;
    let kernel_fs = [
        PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
        DEBUGFS_MAGIC,
        SECURITYFS_MAGIC,
        CGROUP_SUPER_MAGIC,
        CGROUP2_SUPER_MAGIC,
    ];
    if kernel_fs.contains(&fs.filesystem_type()) {
        return Err(wrong_type(KERNEL_INTERFACE));
    }
    let id = if meta.file_type().is_block_device() {
        FileId::BlockDevice(meta.rdev())
    } else {
        FileId::Inode(meta.dev(), meta.ino())
    };
    Ok(HostFile { path, id, file })
}

/// Checks `raw`, the value of `field` (`image`): a registry reference
/// (anything [`fcexec_images::looks_like_path`] does not take for a path)
/// from a registry the policy allows, or an OCI image layout directory
/// (with an `oci-layout` file) or a regular file (a `docker save` archive)
/// the policy allows, by its resolved path.
pub(super) fn image_source(
    checks: &Checks,
    field: &str,
    raw: &str,
) -> Result<Source, ValidationError> {
    if !fcexec_images::looks_like_path(raw) {
        return image_reference(checks.policy, field, raw);
    }
    image_path(checks, field, raw).map(|(path, is_dir)| match is_dir {
        true => Source::OciLayout(path),
        false => Source::DockerArchive(path),
    })
}

/// A registry reference from an allowed registry.
fn image_reference(policy: &PathPolicy, field: &str, raw: &str) -> Result<Source, ValidationError> {
    let reference = Reference::parse(raw).map_err(|e| ValidationError::InvalidValue {
        field: field.to_string(),
        value: format!("{raw:?}"),
        reason: e.to_string(),
        fix: "give a registry reference such as registry.example:5000/repo:tag or \
              repo@sha256:<64 hex digits>, or the absolute path of an OCI image layout \
              directory or docker save archive",
    })?;
    if let Err(allowed) = policy.check_registry(&reference.registry) {
        return Err(ValidationError::InvalidValue {
            field: field.to_string(),
            value: format!("{raw:?}"),
            reason: format!(
                "images may not be pulled from {}; the executor allows {allowed}",
                reference.registry
            ),
            fix: "use an image from an allowed registry, or have the node's operator allow \
                  this one (ExecutorConfig::path_policy.allowed_registries)",
        });
    }
    Ok(Source::Registry(reference))
}

/// An image path the policy allows: resolved, and whether it is a directory.
fn image_path(checks: &Checks, field: &str, raw: &str) -> Result<(PathBuf, bool), ValidationError> {
    const FIX: &str = "give the path of an OCI image layout directory or a docker save archive, \
                       or a registry reference such as registry.example/repo:tag";
    let _checking = checks.progress.map(|p| p.enter(field, Path::new(raw)));
    let path = resolve(checks.policy, field, raw, FIX)?;
    if let Some(hook) = checks.hook {
        hook.call(field, &path);
    }
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => ValidationError::NotFound {
            field: field.to_string(),
            path: raw.to_string(),
            fix: FIX,
        },
        _ => ValidationError::Inaccessible {
            field: field.to_string(),
            path: raw.to_string(),
            source: e,
            fix: "make it readable by the user fcexec runs as",
        },
    })?;
    let found = if meta.is_dir() && !path.join("oci-layout").is_file() {
        Some("a directory without an oci-layout file")
    } else if !meta.is_dir() && !meta.is_file() {
        Some("neither a regular file nor a directory")
    } else {
        None
    };
    match found {
        Some(found) => Err(ValidationError::WrongFileType {
            field: field.to_string(),
            path: raw.to_string(),
            found,
            fix: FIX,
        }),
        None => Ok((path, meta.is_dir())),
    }
}

/// What is wrong with a file of type `kind` where `want` is asked, if anything.
fn type_problem(kind: FileType, want: Want) -> Option<&'static str> {
    if kind.is_file() || (kind.is_block_device() && want == Want::Image) {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_block_device() {
        Some("a block device, not a regular file")
    } else if kind.is_char_device() {
        Some("a character device (such as /dev/null), not an image")
    } else if kind.is_fifo() {
        Some("a named pipe (FIFO), not an image")
    } else if kind.is_socket() {
        Some("a socket, not an image")
    } else {
        Some("a symbolic link now (it was replaced while it was checked)")
    }
}

/// Checks that the open `file` starts like an x86_64 ELF kernel.
pub(super) fn check_elf_kernel(field: &str, raw: &str, file: &File) -> Result<(), ValidationError> {
    let mut head = [0u8; 0x206];
    let mut len = 0;
    let mut reader = file;
    while len < head.len() {
        match reader.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
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
