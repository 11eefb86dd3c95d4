//! Applies container image layers (tar, plain or gzip) in order into a
//! staging directory, the way the OCI image spec's "applying changesets"
//! describes: whiteouts (`.wh.<name>`) delete from lower layers, an opaque
//! marker (`.wh..wh..opq`) hides a directory's lower contents, and every
//! other entry is created with its mode, owner, times and extended
//! attributes.
//!
//! Unpacking never writes outside the staging directory, whatever the
//! archive says. Entry paths must be relative and free of `..` (OCI layers
//! use relative paths; an absolute path is refused, not re-rooted); every
//! parent directory is checked with `lstat` and refused when it is a
//! symbolic link, so nothing is ever written through one; hard links must
//! name a regular file already in the staging directory; character and
//! block devices are refused (FIFOs are allowed); declared sizes are
//! capped; an entry listed twice in one layer is refused. Every refusal is
//! a [`LayerError`] naming the entry. We are the only writer of the staging
//! directory, so checking with `lstat` before acting is not racy.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

mod error;
mod fs;
#[cfg(test)]
mod tests;

pub use error::LayerError;
pub(crate) use fs::set_mtime;
use fs::{clear_lower, lsetxattr, normalize, pax_xattrs, remove_any};

/// Name prefix of a whiteout file.
const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// Size limits on what one layer list may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest declared size of one file, in bytes.
    pub max_file_bytes: u64,
    /// Largest declared size of all files together, in bytes.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// 64 GiB per file and in total.
    fn default() -> Self {
        Limits {
            max_file_bytes: 64 << 30,
            max_total_bytes: 64 << 30,
        }
    }
}

/// What applying layers did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Entries created (whiteouts excluded).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Applies layers in order; the state that lives across layers.
#[derive(Debug)]
pub struct Applier {
    /// The staging directory (the image's root).
    root: PathBuf,
    /// The declared-size limits.
    limits: Limits,
    /// Declared bytes so far, over all layers.
    total: u64,
    /// What was applied so far.
    applied: Applied,
    /// The modification time each directory entry declared, latest layer
    /// winning; restored after each layer, since changing a directory's
    /// children changes its time.
    dir_mtimes: HashMap<PathBuf, u64>,
}

/// A reader hashing what it yields.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Per-layer state.
struct Layer {
    /// Index of the layer (0 = bottom).
    index: usize,
    /// Normalized paths created by this layer (duplicates are refused and
    /// opaque markers spare them).
    seen: HashSet<PathBuf>,
    /// `seen` and every ancestor of its paths: what an opaque marker spares.
    touched: HashSet<PathBuf>,
}

impl Applier {
    /// An applier writing into `root`, an existing directory.
    pub fn new(root: &Path, limits: Limits) -> Self {
        Applier {
            root: root.to_path_buf(),
            limits,
            total: 0,
            applied: Applied::default(),
            dir_mtimes: HashMap::new(),
        }
    }

    /// What was applied so far.
    pub fn applied(&self) -> Applied {
        self.applied
    }

    /// Applies the layer at `index` read from `reader`: a tar archive,
    /// gzip-compressed or not (told apart by the gzip magic bytes).
    /// Returns `sha256:<hex>` of the uncompressed tar (its diff id).
    pub fn apply(&mut self, index: usize, reader: impl Read) -> Result<String, LayerError> {
        let archive_err = |entry: Option<PathBuf>| {
            move |source| LayerError::Archive {
                layer: index,
                entry,
                source,
            }
        };
        let mut reader = std::io::BufReader::new(reader);
        let head = std::io::BufRead::fill_buf(&mut reader).map_err(archive_err(None))?;
        let tar: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::GzDecoder::new(reader))
        } else {
            Box::new(reader)
        };
        let mut hashing = Hashing {
            inner: tar,
            hasher: Sha256::new(),
        };
        let mut layer = Layer {
            index,
            seen: HashSet::new(),
            touched: HashSet::new(),
        };
        for entry in tar::Archive::new(&mut hashing)
            .entries()
            .map_err(archive_err(None))?
        {
            let mut entry = entry.map_err(archive_err(None))?;
            let raw = entry.path().map_err(archive_err(None))?.into_owned();
            self.apply_entry(&mut layer, &raw, &mut entry)?;
        }
        // Hash what follows the end-of-archive blocks too.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(archive_err(None))?;
        // Innermost first, so setting a parent's time is the last change to it.
        let mut dirs: Vec<(&PathBuf, u64)> = layer
            .touched
            .iter()
            .filter_map(|d| Some((d, *self.dir_mtimes.get(d)?)))
            .collect();
        dirs.sort_by_key(|(d, _)| std::cmp::Reverse(d.components().count()));
        for (dir, mtime) in dirs {
            let path = self.root.join(dir);
            if !path.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                continue;
            }
            set_mtime(&path, mtime).map_err(|source| LayerError::Io {
                layer: index,
                entry: dir.clone(),
                what: "set the modification time",
                source,
            })?;
        }
        let digest: String = hashing
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(format!("sha256:{digest}"))
    }

    fn apply_entry<R: Read>(
        &mut self,
        layer: &mut Layer,
        raw: &Path,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<(), LayerError> {
        let index = layer.index;
        if entry.header().entry_type() == EntryType::XGlobalHeader {
            // PAX global headers carry archive-wide defaults, not files.
            return Ok(());
        }
        let rel = normalize(index, raw)?;
        if !layer.seen.insert(rel.clone()) {
            return Err(LayerError::Duplicate {
                layer: index,
                entry: raw.to_path_buf(),
            });
        }
        for ancestor in rel.ancestors() {
            if !layer.touched.insert(ancestor.to_path_buf()) {
                break;
            }
        }
        let io = |what: &'static str| {
            let entry = raw.to_path_buf();
            move |source| LayerError::Io {
                layer: index,
                entry,
                what,
                source,
            }
        };
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.as_deref().filter(|n| n.starts_with(WHITEOUT_PREFIX)) {
            let parent = rel.parent().unwrap_or(Path::new(""));
            self.check_parents(index, raw, &rel, false)?;
            if name == OPAQUE_MARKER {
                let dir = self.root.join(parent);
                if dir.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                    clear_lower(&dir, parent, &layer.touched)
                        .map_err(io("clear the opaque directory"))?;
                }
            } else if !name.starts_with(".wh..wh.") {
                let target = &name[WHITEOUT_PREFIX.len()..];
                if target.is_empty() || target == "." || target == ".." {
                    return Err(LayerError::BadWhiteout {
                        layer: index,
                        entry: raw.to_path_buf(),
                    });
                }
                remove_any(&self.root.join(parent).join(target))
                    .map_err(io("remove the whited-out file"))?;
            }
            return Ok(());
        }

        let header = entry.header();
        let kind = header.entry_type();
        let refused = match kind {
            EntryType::Char => Some("character device"),
            EntryType::Block => Some("block device"),
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Fifo => None,
            _ => Some("entry of an unsupported tar type"),
        };
        if let Some(kind) = refused {
            return Err(LayerError::RefusedType {
                layer: index,
                entry: raw.to_path_buf(),
                kind,
            });
        }
        let bad_header = |source| LayerError::Archive {
            layer: index,
            entry: Some(raw.to_path_buf()),
            source,
        };
        let size = header.size().map_err(bad_header)?;
        self.check_size(index, raw, size)?;
        let mode = header.mode().map_err(bad_header)? & 0o7777;
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| {
                bad_header(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("owner id {v} is over 32 bits"),
                ))
            })
        };
        let uid = id(header.uid().map_err(bad_header)?)?;
        let gid = id(header.gid().map_err(bad_header)?)?;
        let mtime = header.mtime().map_err(bad_header)?;
        let link = entry
            .link_name()
            .map_err(bad_header)?
            .map(|l| l.into_owned());
        let xattrs = pax_xattrs(entry).map_err(|source| LayerError::Archive {
            layer: index,
            entry: Some(raw.to_path_buf()),
            source,
        })?;

        let path = self.root.join(&rel);
        if rel.as_os_str().is_empty() {
            // The root directory itself: only its metadata applies.
            if kind != EntryType::Directory {
                return Err(LayerError::NotADirectory {
                    layer: index,
                    entry: raw.to_path_buf(),
                    parent: PathBuf::from("/"),
                });
            }
        } else {
            self.check_parents(index, raw, &rel, true)?;
            let existing = path.symlink_metadata().ok();
            let keep_dir =
                kind == EntryType::Directory && existing.as_ref().is_some_and(|m| m.is_dir());
            if existing.is_some() && !keep_dir {
                remove_any(&path).map_err(io("replace the existing file"))?;
            }
            match kind {
                EntryType::Directory => {
                    if !keep_dir {
                        std::fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&path)
                            .map_err(io("create the directory"))?;
                    }
                }
                EntryType::Symlink => {
                    let target = link.ok_or_else(|| LayerError::Archive {
                        layer: index,
                        entry: Some(raw.to_path_buf()),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "a symbolic link without a target",
                        ),
                    })?;
                    std::os::unix::fs::symlink(&target, &path)
                        .map_err(io("create the symbolic link"))?;
                }
                EntryType::Link => {
                    let target = link.unwrap_or_default();
                    let bad = || LayerError::BadHardLink {
                        layer: index,
                        entry: raw.to_path_buf(),
                        target: target.clone(),
                    };
                    // Absolute, `..` or reached through a symbolic link: refused.
                    let target_rel = normalize(index, &target).map_err(|_| bad())?;
                    self.check_parents(index, &target, &target_rel, false)
                        .map_err(|_| bad())?;
                    let meta = self
                        .root
                        .join(&target_rel)
                        .symlink_metadata()
                        .map_err(|_| bad())?;
                    if !meta.is_file() || target_rel.as_os_str().is_empty() {
                        return Err(bad());
                    }
                    std::fs::hard_link(self.root.join(&target_rel), &path)
                        .map_err(io("create the hard link"))?;
                    // A hard link shares the target's metadata: nothing more to set.
                    self.applied.entries += 1;
                    return Ok(());
                }
                EntryType::Fifo => {
                    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                        .map_err(|e| io("create the FIFO")(std::io::Error::from(e)))?;
                }
                _ => {
                    let mut file = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .open(&path)
                        .map_err(io("create the file"))?;
                    let written =
                        std::io::copy(entry, &mut file).map_err(|source| LayerError::Archive {
                            layer: index,
                            entry: Some(raw.to_path_buf()),
                            source,
                        })?;
                    if written != size {
                        return Err(LayerError::Archive {
                            layer: index,
                            entry: Some(raw.to_path_buf()),
                            source: std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                format!("truncated: {written} of {size} bytes"),
                            ),
                        });
                    }
                    self.applied.bytes += written;
                }
            }
        }
        let is_symlink = kind == EntryType::Symlink;
        // Owner first: changing it clears the setuid and setgid bits.
        std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(io("set the owner"))?;
        if !is_symlink {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .map_err(io("set the mode"))?;
        }
        for (name, value) in &xattrs {
            lsetxattr(&path, name, value).map_err(|source| LayerError::Xattr {
                layer: index,
                entry: raw.to_path_buf(),
                name: name.clone(),
                source,
            })?;
        }
        if kind == EntryType::Directory {
            self.dir_mtimes.insert(rel, mtime);
        } else {
            set_mtime(&path, mtime).map_err(io("set the modification time"))?;
        }
        self.applied.entries += 1;
        Ok(())
    }

    fn check_size(&mut self, index: usize, raw: &Path, size: u64) -> Result<(), LayerError> {
        let too_large = |limit, what| LayerError::TooLarge {
            layer: index,
            entry: raw.to_path_buf(),
            size,
            limit,
            what,
        };
        if size > self.limits.max_file_bytes {
            return Err(too_large(self.limits.max_file_bytes, "per file"));
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_bytes {
            return Err(too_large(self.limits.max_total_bytes, "in total"));
        }
        Ok(())
    }

    /// Checks every parent of `rel` with `lstat`: a symbolic link is
    /// refused, a missing directory is created (0755, root) when `create`.
    fn check_parents(
        &self,
        index: usize,
        raw: &Path,
        rel: &Path,
        create: bool,
    ) -> Result<(), LayerError> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut prefix = PathBuf::new();
        for component in parent.components() {
            prefix.push(component);
            let path = self.root.join(&prefix);
            match path.symlink_metadata() {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(LayerError::ThroughSymlink {
                        layer: index,
                        entry: raw.to_path_buf(),
                        via: prefix,
                    })
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(LayerError::NotADirectory {
                        layer: index,
                        entry: raw.to_path_buf(),
                        parent: prefix,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                    std::fs::DirBuilder::new()
                        .mode(0o755)
                        .create(&path)
                        .map_err(|source| LayerError::Io {
                            layer: index,
                            entry: raw.to_path_buf(),
                            what: "create a parent directory",
                            source,
                        })?;
                }
                Err(_) => return Ok(()),
            }
        }
        Ok(())
    }
}
