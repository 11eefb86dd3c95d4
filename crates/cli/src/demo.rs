//! The built-in demo: `fcexec run` without `--kernel` boots the test guest
//! (a tiny freestanding kernel compiled into this binary) in agent mode.
//!
//! Its kernel and a small zeroed root file system image live in
//! `<state root>/.demo/`, a name no executor id can take (ids never start
//! with a dot). Both files are written only when missing or different, each
//! through a temporary file renamed into place, so a concurrent run booting
//! from them never sees a half-written file.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use test_guest::Job;

/// The cache directory's name under the state root.
const DIR: &str = ".demo";

/// The root file system image's name.
const ROOTFS: &str = "rootfs.img";

/// The root file system image's size: the guest never reads it, but
/// Firecracker needs a root drive.
const ROOTFS_LEN: usize = 64 * 1024;

/// The demo's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoImages {
    /// The test guest's kernel.
    pub kernel: PathBuf,
    /// The zeroed root file system image.
    pub rootfs: PathBuf,
}

/// The job the demo runs unless `--job` says otherwise: print the greeting
/// and exit 0.
pub fn default_job() -> String {
    Job::new()
        .out(format!("{}\n", test_guest::GREETING))
        .exit(0)
        .to_string()
}

/// Writes (if needed) the demo's kernel and root file system under `root`.
pub fn prepare(root: &Path) -> anyhow::Result<DemoImages> {
    let dir = root.join(DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("cannot create the demo directory {}", dir.display()))?;
    let kernel = dir.join(test_guest::KERNEL_FILE_NAME);
    let rootfs = dir.join(ROOTFS);
    ensure(&kernel, test_guest::kernel())?;
    ensure(&rootfs, &[0u8; ROOTFS_LEN])?;
    Ok(DemoImages { kernel, rootfs })
}

/// Makes `path` hold exactly `content`, replacing it atomically if it differs.
fn ensure(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|existing| existing == content) {
        return Ok(());
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, content)
        .and_then(|()| std::fs::rename(&tmp, path))
        .with_context(|| format!("cannot write {}", path.display()))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_and_repairs() {
        let root = tempfile::tempdir().unwrap();
        let images = prepare(root.path()).unwrap();
        assert_eq!(std::fs::read(&images.kernel).unwrap(), test_guest::kernel());
        assert_eq!(std::fs::read(&images.rootfs).unwrap().len(), ROOTFS_LEN);
        std::fs::write(&images.rootfs, b"junk").unwrap();
        assert_eq!(prepare(root.path()).unwrap(), images);
        assert_eq!(std::fs::read(&images.rootfs).unwrap().len(), ROOTFS_LEN);
        let names: Vec<_> = std::fs::read_dir(images.kernel.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn default_job_prints_the_greeting() {
        let job = default_job();
        assert!(job.starts_with("out:Hello%20from"), "{job}");
        assert!(job.ends_with("%0A,exit:0"), "{job}");
    }
}
