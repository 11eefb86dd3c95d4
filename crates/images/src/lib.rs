//! fcexec-images: ext4 root file systems for fcexec from container images.
//!
//! ```no_run
//! use std::path::Path;
//! use fcexec_images::{build, BuildOptions, Source};
//!
//! // An OCI image layout directory, a `docker save` archive or a directory.
//! let source = Source::detect(Path::new("./alpine-oci"))?;
//! let built = build(&source, Path::new("alpine.ext4"), &BuildOptions::default())?;
//! println!("{} bytes, default command {:?}", built.size, built.config.cmd);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! [`sources`] resolves a source (a directory, an OCI image layout, a
//! `docker save` archive) into layers and an [`ImageConfig`], checking
//! every digest → [`layers`] applies the layers in order into a staging
//! directory, never writing outside it → [`build`] stores the config at
//! [`IMAGE_CONFIG_PATH`] in the tree (the image carries how to run it) →
//! [`ext4`] makes the ext4 image with `mkfs.ext4 -d`, sized to the content.
//!
//! [`build`] writes the image to a temporary file next to the output and
//! renames it at the end; the staging directory (also next to the output)
//! is always removed, so a failed build leaves nothing behind.
//!
//! [`cache`] keeps built images under a directory, keyed by the source's
//! content digest, with a size limit and least-recently-used eviction.

#![warn(missing_docs)]

pub mod cache;
mod config;
pub mod ext4;
mod file;
pub mod layers;
pub mod registry;
pub mod sources;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cache::{Cache, CacheEntry, CacheError, CachedImage};
pub use config::{ImageConfig, IMAGE_CONFIG_PATH};
pub use ext4::{Ext4Error, Headroom};
use file::io;
pub use file::FileError;
pub use layers::{LayerError, Limits};
pub use registry::{PullOptions, Pulled, Reference, RegistryError};
pub use sources::{looks_like_path, Source, SourceError};

/// What a build reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of layers (and config) downloaded from a registry so far.
    Downloaded {
        /// The total so far.
        bytes: u64,
    },
    /// The source was resolved into `layers` layers.
    Resolved {
        /// How many layers will be applied.
        layers: usize,
    },
    /// Layer `index` (0 is the bottom) of `count` was applied.
    LayerApplied {
        /// The layer's index.
        index: usize,
        /// How many layers there are.
        count: usize,
        /// File bytes written so far, over all layers.
        bytes: u64,
    },
    /// `mkfs.ext4` is building a file system of `size` bytes.
    Building {
        /// The file system's size.
        size: u64,
    },
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How to build.
#[derive(Clone, Default)]
pub struct BuildOptions {
    /// Declared-size limits on the layers.
    pub limits: Limits,
    /// Room left in the file system beyond the content.
    pub headroom: Headroom,
    /// Called as the build goes, when set.
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("limits", &self.limits)
            .field("headroom", &self.headroom)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

/// A built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// The ext4 file.
    pub output: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// The run configuration stored in it.
    pub config: ImageConfig,
    /// How many layers were applied.
    pub layers: usize,
    /// File bytes written by the layers.
    pub bytes: u64,
    /// How long the build took.
    pub elapsed: Duration,
}

/// Errors of [`build`].
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The source could not be resolved.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A layer was refused or could not be applied.
    #[error("layer {name}: {source}")]
    Layer {
        /// How the source names the layer.
        name: String,
        /// The cause.
        #[source]
        source: LayerError,
    },
    /// A layer's uncompressed content does not match the config's diff id.
    #[error("layer {name} does not match its diff id {expected}: its content hashes to {actual}")]
    DiffIdMismatch {
        /// How the source names the layer.
        name: String,
        /// The config's diff id.
        expected: String,
        /// The content's digest.
        actual: String,
    },
    /// Making the file system failed.
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
    /// Preparing or finishing the build failed.
    #[error(transparent)]
    Io(#[from] crate::file::FileError),
    /// Copying a directory source failed.
    #[error("cannot copy {path} into the staging directory: {stderr}")]
    Copy {
        /// The directory.
        path: PathBuf,
        /// What `cp` printed.
        stderr: String,
    },
}

/// Removes a path when dropped, unless disarmed.
struct Cleanup {
    path: PathBuf,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.armed {
            let _ = if self.path.is_dir() {
                std::fs::remove_dir_all(&self.path)
            } else {
                std::fs::remove_file(&self.path)
            };
        }
    }
}

/// A name beside `output` no other build uses: `.<name>.<tag>.<pid>.<nanos>`.
fn beside(output: &Path, tag: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.{tag}.{}.{nanos}", std::process::id()))
}

/// Builds the ext4 image of `source` at `output` (replaced if there).
/// Blocking; call it from a blocking thread in async code.
#[tracing::instrument(skip(source, output, options), fields(source = ?source, output = %output.display()))]
pub fn build(source: &Source, output: &Path, options: &BuildOptions) -> Result<Built, ImageError> {
    let started = Instant::now();
    let report = |p: Progress| {
        if let Some(f) = &options.progress {
            f(&p);
        }
    };
    let staging = Cleanup {
        path: beside(output, "staging"),
        armed: true,
    };
    std::fs::create_dir(&staging.path)
        .map_err(io("create the staging directory", &staging.path))?;
    std::fs::set_permissions(
        &staging.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(io("set the mode of", &staging.path))?;

    let (config, layers) = match source {
        Source::Directory(dir) => {
            copy_tree(dir, &staging.path)?;
            (ImageConfig::default(), Vec::new())
        }
        Source::OciLayout(dir) => {
            let r = sources::resolve_oci(dir)?;
            (r.config, r.layers)
        }
        Source::DockerArchive(file) => {
            let r = sources::resolve_docker(file)?;
            (r.config, r.layers)
        }
        Source::Registry(reference) => {
            let r = sources::resolve_registry(reference, output, options.progress.clone())?;
            (r.config, r.layers)
        }
    };
    report(Progress::Resolved {
        layers: layers.len(),
    });
    let mut applier = layers::Applier::new(&staging.path, options.limits);
    for (index, layer) in layers.iter().enumerate() {
        let reader = layer.open()?;
        let actual = applier
            .apply(index, reader)
            .map_err(|source| ImageError::Layer {
                name: layer.name.clone(),
                source,
            })?;
        if let Some(expected) = layer.diff_id.as_ref().filter(|e| **e != actual) {
            return Err(ImageError::DiffIdMismatch {
                name: layer.name.clone(),
                expected: expected.clone(),
                actual,
            });
        }
        let bytes = applier.applied().bytes;
        tracing::info!(layer = %layer.name, index, bytes, "applied layer");
        report(Progress::LayerApplied {
            index,
            count: layers.len(),
            bytes,
        });
    }
    write_config(&staging.path, &config)?;

    let usage = ext4::usage(&staging.path)?;
    let (size, inodes) = ext4::plan(usage, options.headroom);
    tracing::info!(
        size,
        inodes,
        content = usage.bytes,
        "making the ext4 file system"
    );
    report(Progress::Building { size });
    let mut temp = Cleanup {
        path: beside(output, "partial"),
        armed: true,
    };
    ext4::make(&staging.path, &temp.path, size, inodes)?;
    std::fs::rename(&temp.path, output).map_err(io("rename the image to", output))?;
    temp.armed = false;
    drop(staging);
    let elapsed = started.elapsed();
    tracing::info!(?elapsed, "built");
    Ok(Built {
        output: output.to_path_buf(),
        size,
        config,
        layers: layers.len(),
        bytes: applier.applied().bytes,
        elapsed,
    })
}

/// Copies the tree at `dir` into `staging` with everything (`cp -a`).
fn copy_tree(dir: &Path, staging: &Path) -> Result<(), ImageError> {
    let output = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(dir.join("."))
        .arg(staging)
        .output()
        .map_err(io("run cp for", dir))?;
    if !output.status.success() {
        return Err(ImageError::Copy {
            path: dir.to_path_buf(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Writes `config` at [`IMAGE_CONFIG_PATH`] under `root`, replacing
/// whatever the image had there (never writing through a symbolic link),
/// with mode 0644 in a 0755 directory, both owned by root, dated 1970.
fn write_config(root: &Path, config: &ImageConfig) -> Result<(), ImageError> {
    let path = root.join(IMAGE_CONFIG_PATH);
    let dir = path.parent().unwrap_or(root);
    match dir.symlink_metadata() {
        Ok(m) if m.is_dir() => {}
        Ok(_) => std::fs::remove_file(dir).map_err(io("remove", dir))?,
        Err(_) => {}
    }
    if !dir.is_dir() {
        std::fs::create_dir(dir).map_err(io("create", dir))?;
    }
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).map_err(io("remove", &path))?,
        Ok(_) => std::fs::remove_file(&path).map_err(io("remove", &path))?,
        Err(_) => {}
    }
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io("set the mode of", dir))?;
    let json = serde_json::to_vec_pretty(config).expect("an ImageConfig serializes");
    std::fs::write(&path, json).map_err(io("write", &path))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io("set the mode of", &path))?;
    // Fixed times, so the same image gives the same files.
    for p in [path.as_path(), dir] {
        layers::set_mtime(p, 0).map_err(io("set the modification time of", p))?;
    }
    Ok(())
}
