//! Finding the VM's block devices: the first of the agent's two seams.
//!
//! The agent needs its drives in *drive order* (`docs/guest-protocol.md`,
//! "Drive order"): the root file system first, then the input volumes, then
//! the output volumes, the config drive last. In the guest, [`SysfsDevices`]
//! lists the virtio block devices, which Linux names `vda`, `vdb`, ... in
//! probe order, that is in the order of the `virtio_mmio.device=` entries on
//! the kernel command line, which is the drive order. Tests use
//! [`FixedDevices`] with loop devices.

use std::io;
use std::path::{Path, PathBuf};

/// Where the block devices are.
pub trait Devices {
    /// The block devices, in drive order: index 0 is the root file system,
    /// the last one the config drive.
    fn drives(&self) -> io::Result<Vec<PathBuf>>;
}

/// The guest's virtio block devices, from `/sys/block/vd*`, as `/dev/vd*`.
#[derive(Debug, Clone)]
pub struct SysfsDevices {
    /// The sysfs block directory (`/sys/block`).
    pub sys_block: PathBuf,
    /// The device directory (`/dev`).
    pub dev: PathBuf,
}

impl Default for SysfsDevices {
    fn default() -> Self {
        SysfsDevices {
            sys_block: PathBuf::from("/sys/block"),
            dev: PathBuf::from("/dev"),
        }
    }
}

impl Devices for SysfsDevices {
    fn drives(&self) -> io::Result<Vec<PathBuf>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.sys_block)? {
            let name = entry?.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_virtio_disk(name) {
                names.push(name.to_string());
            }
        }
        sort_disk_names(&mut names);
        Ok(names.iter().map(|n| self.dev.join(n)).collect())
    }
}

/// `vd` and letters: a whole virtio disk (`vda1` is a partition).
fn is_virtio_disk(name: &str) -> bool {
    name.strip_prefix("vd")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Probe order: `vdz` comes before `vdaa` (shorter names first).
fn sort_disk_names(names: &mut [String]) {
    names.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
}

/// A fixed list of drives (tests: loop devices and image files).
#[derive(Debug, Clone)]
pub struct FixedDevices(pub Vec<PathBuf>);

impl Devices for FixedDevices {
    fn drives(&self) -> io::Result<Vec<PathBuf>> {
        Ok(self.0.clone())
    }
}

/// Shows a drive for messages: `drive 2 (/dev/vdc)`.
pub(crate) fn describe(index: usize, path: &Path) -> String {
    format!("drive {index} ({})", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysfs_lists_whole_virtio_disks_in_probe_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vdb", "vdaa", "vda", "vdz", "vda1", "sda", "loop0", "vd", "vdB",
        ] {
            std::fs::create_dir(dir.path().join(name)).unwrap();
        }
        let devices = SysfsDevices {
            sys_block: dir.path().to_path_buf(),
            dev: PathBuf::from("/dev"),
        };
        let drives = devices.drives().unwrap();
        let want: Vec<PathBuf> = ["vda", "vdb", "vdz", "vdaa"]
            .iter()
            .map(|n| Path::new("/dev").join(n))
            .collect();
        assert_eq!(drives, want);
        let missing = SysfsDevices {
            sys_block: dir.path().join("nope"),
            dev: PathBuf::from("/dev"),
        };
        assert!(missing.drives().is_err());
    }
}
