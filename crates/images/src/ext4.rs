//! Turns a staging directory into an ext4 file system image with
//! e2fsprogs' `mkfs.ext4 -d` (no loop mount, no privileges beyond reading
//! the tree), sized to the content plus headroom.
//!
//! The size is the tree's usage in 4 KiB blocks (hard-linked files
//! counted once) plus 256 bytes of inode table per inode, plus the
//! headroom: a fraction of that and a fixed amount that also covers the
//! journal and metadata of small file systems. The inode count is the
//! tree's plus the same fraction plus 1024, so the guest can create files.

use crate::file::io;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

/// File system block size.
const BLOCK: u64 = 4096;
/// Inode size mkfs.ext4 uses.
const INODE: u64 = 256;

/// How much room to leave beyond the content.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    /// Fraction of the content's size added (0.2 is 20%).
    pub fraction: f64,
    /// Bytes added on top.
    pub bytes: u64,
}

impl Default for Headroom {
    /// 20% + 64 MiB.
    fn default() -> Self {
        Headroom {
            fraction: 0.2,
            bytes: 64 << 20,
        }
    }
}

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    /// Walking the tree or preparing the file failed.
    #[error(transparent)]
    Io(#[from] crate::file::FileError),
    /// `mkfs.ext4` could not be run.
    #[error("cannot run mkfs.ext4 (install e2fsprogs 1.43 or later): {0}")]
    NoMkfs(#[source] std::io::Error),
    /// `mkfs.ext4` failed.
    #[error("mkfs.ext4 failed ({status}): {stderr}")]
    Mkfs {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed.
        stderr: String,
    },
}

/// What a tree needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Bytes of data, in whole blocks.
    pub bytes: u64,
    /// Inodes (files, directories, links).
    pub inodes: u64,
}

/// The usage of the tree at `root` (not following symbolic links).
pub fn usage(root: &Path) -> Result<Usage, Ext4Error> {
    let mut usage = Usage {
        bytes: 0,
        inodes: 0,
    };
    let mut seen = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = path.symlink_metadata().map_err(io("read", &path))?;
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        usage.inodes += 1;
        // Symbolic links up to 60 bytes live in the inode.
        let inline = meta.file_type().is_symlink() && meta.len() < 60;
        if !inline {
            usage.bytes += meta.len().div_ceil(BLOCK).max(1) * BLOCK;
        }
        if meta.is_dir() {
            let entries = std::fs::read_dir(&path).map_err(io("list", &path))?;
            for entry in entries {
                let entry = entry.map_err(io("list", &path))?;
                stack.push(entry.path());
            }
        }
    }
    Ok(usage)
}

/// The file system size in bytes (a multiple of 1 MiB) and inode count
/// for `usage` with `headroom`.
pub fn plan(usage: Usage, headroom: Headroom) -> (u64, u64) {
    let content = usage.bytes + usage.inodes * INODE;
    let extra = (content as f64 * headroom.fraction.max(0.0)) as u64 + headroom.bytes;
    let size = (content + extra).div_ceil(1 << 20) << 20;
    let inodes = usage.inodes + (usage.inodes as f64 * headroom.fraction.max(0.0)) as u64 + 1024;
    (size, inodes)
}

/// Builds `file` (created or truncated) as an ext4 file system of `size`
/// bytes with `inodes` inodes holding the tree at `root`.
pub fn make(root: &Path, file: &Path, size: u64, inodes: u64) -> Result<(), Ext4Error> {
    let f = std::fs::File::create(file).map_err(io("create", file))?;
    f.set_len(size).map_err(io("size", file))?;
    drop(f);
    let output = Command::new("mkfs.ext4")
        .args(["-F", "-q", "-b", "4096", "-E", "root_owner=0:0", "-N"])
        .arg(inodes.to_string())
        .arg("-d")
        .arg(root)
        .arg(file)
        .arg(format!("{}k", size / 1024))
        .env("PATH", path_with_sbin())
        .output()
        .map_err(Ext4Error::NoMkfs)?;
    if !output.status.success() {
        return Err(Ext4Error::Mkfs {
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// `PATH` with the sbin directories, where e2fsprogs lives.
fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_adds_the_fraction_and_the_fixed_headroom() {
        let usage = Usage {
            bytes: 100 << 20,
            inodes: 1000,
        };
        let (size, inodes) = plan(usage, Headroom::default());
        let content = (100 << 20) + 1000 * 256;
        assert!(size >= content + content / 5 + (64 << 20), "{size}");
        assert_eq!(size % (1 << 20), 0);
        assert_eq!(inodes, 1000 + 200 + 1024);
    }
}
