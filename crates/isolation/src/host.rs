//! Which cgroup hierarchy this host gives us, read from `/proc/self/mountinfo`.
//!
//! Three shapes exist in the wild: cgroup v2 only (`cgroup2` on
//! `/sys/fs/cgroup`, most current distributions), cgroup v1 only (one `cgroup`
//! mount per controller or group of controllers), and hybrid (v1 controllers
//! plus an often empty `cgroup2` mount at `/sys/fs/cgroup/unified`, like the
//! machines fcexec is developed on). A controller is bound to one version at a
//! time, so the question is where `cpu`, `memory` and `pids` live:
//!
//! 1. a `cgroup2` mount whose `cgroup.controllers` lists all three wins (v2);
//! 2. otherwise v1, which needs `cpu`, `cpuacct` (CPU accounting), `memory`
//!    and `pids` each mounted somewhere;
//! 3. otherwise an error naming what is missing and how to fix it.
//!
//! Parsing is a pure function over the mountinfo text ([`parse_mountinfo`]);
//! [`CgroupHost::v1`] and [`CgroupHost::v2`] build a host over any directory,
//! which is how the tests point the code at a fake cgroup root.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::CgroupError;

/// The controllers a VMM's cgroup uses on v2.
pub const V2_CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// The controllers a VMM's cgroup uses on v1 (`cpuacct` for CPU usage).
pub const V1_CONTROLLERS: [&str; 4] = ["cpu", "cpuacct", "memory", "pids"];

/// A cgroup version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    /// Legacy: one hierarchy per controller (or group of controllers).
    V1,
    /// Unified: one hierarchy for every controller.
    V2,
}

impl CgroupVersion {
    /// 1 or 2, as the jailer's `--cgroup-version` wants it.
    pub fn number(self) -> u8 {
        match self {
            CgroupVersion::V1 => 1,
            CgroupVersion::V2 => 2,
        }
    }
}

impl fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup v{}", self.number())
    }
}

/// One cgroup mount from mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `cgroup` (v1) or `cgroup2` (v2).
    pub version: CgroupVersion,
    /// v1: the controllers bound to this hierarchy (named hierarchies such as
    /// `name=systemd` are left out). v2: empty; the controllers are in the
    /// mount's `cgroup.controllers`.
    pub controllers: Vec<String>,
}

/// The cgroup mounts in `/proc/<pid>/mountinfo` text, in order.
///
/// Each line is `id parent major:minor root mount_point options [optional
/// fields...] - fstype source super_options`; v1 controllers are in the super
/// options. Mount points escape space, tab, newline and backslash as octal.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next().unwrap_or("");
        let super_options = right.nth(1).unwrap_or("");
        let version = match fstype {
            "cgroup" => CgroupVersion::V1,
            "cgroup2" => CgroupVersion::V2,
            _ => continue,
        };
        let controllers = match version {
            CgroupVersion::V2 => Vec::new(),
            CgroupVersion::V1 => super_options
                .split(',')
                .filter(|o| is_v1_controller(o))
                .map(str::to_string)
                .collect(),
        };
        mounts.push(CgroupMount {
            mount_point: PathBuf::from(unescape(mount_point)),
            version,
            controllers,
        });
    }
    mounts
}

/// Whether a v1 super option names a controller (not a mount flag).
fn is_v1_controller(option: &str) -> bool {
    const FLAGS: [&str; 12] = [
        "rw",
        "ro",
        "nosuid",
        "nodev",
        "noexec",
        "relatime",
        "noatime",
        "nodiratime",
        "xattr",
        "clone_children",
        "noprefix",
        "cpuset_v2_mode",
    ];
    !option.is_empty() && !option.contains('=') && !FLAGS.contains(&option)
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(value as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where this host's cgroups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupHost {
    /// The unified hierarchy, with `cpu`, `memory` and `pids` available.
    V2 {
        /// Its mount point (usually `/sys/fs/cgroup`).
        root: PathBuf,
    },
    /// Legacy hierarchies.
    V1 {
        /// The mount point of each controller in [`V1_CONTROLLERS`]; two
        /// controllers mounted together (`cpu,cpuacct`) share one.
        mounts: BTreeMap<String, PathBuf>,
    },
}

impl CgroupHost {
    /// Reads `/proc/self/mountinfo` and picks the hierarchy (see the module doc).
    pub fn detect() -> Result<CgroupHost, CgroupError> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let host = CgroupHost::from_mountinfo(&text)?;
        tracing::debug!(?host, "cgroup hierarchy detected");
        Ok(host)
    }

    /// Picks the hierarchy from mountinfo text, reading `cgroup.controllers`
    /// of any `cgroup2` mount it names.
    pub fn from_mountinfo(text: &str) -> Result<CgroupHost, CgroupError> {
        let mounts = parse_mountinfo(text);
        let mut v2_missing = None;
        for mount in mounts.iter().filter(|m| m.version == CgroupVersion::V2) {
            let file = mount.mount_point.join("cgroup.controllers");
            let available = std::fs::read_to_string(&file).unwrap_or_default();
            let available: Vec<&str> = available.split_whitespace().collect();
            let missing: Vec<&str> = V2_CONTROLLERS
                .into_iter()
                .filter(|c| !available.contains(c))
                .collect();
            if missing.is_empty() {
                return Ok(CgroupHost::V2 {
                    root: mount.mount_point.clone(),
                });
            }
            v2_missing.get_or_insert((mount.mount_point.clone(), missing.join(", ")));
        }
        let mut v1 = BTreeMap::new();
        for controller in V1_CONTROLLERS {
            // The first mount wins, as for the jailer.
            let found = mounts.iter().find(|m| {
                m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == controller)
            });
            match found {
                Some(m) => {
                    v1.insert(controller.to_string(), m.mount_point.clone());
                }
                None => {
                    return Err(match v2_missing {
                        Some((root, missing)) => CgroupError::NoUsableHierarchy {
                            controller: controller.to_string(),
                            v2_root: root,
                            v2_missing: missing,
                        },
                        None => CgroupError::V1ControllerMissing {
                            controller: controller.to_string(),
                        },
                    })
                }
            }
        }
        Ok(CgroupHost::V1 { mounts: v1 })
    }

    /// A v2 host rooted at `root` (a real mount or a test's fake one).
    pub fn v2(root: impl Into<PathBuf>) -> CgroupHost {
        CgroupHost::V2 { root: root.into() }
    }

    /// A v1 host with every controller of [`V1_CONTROLLERS`] mounted at
    /// `<base>/<controller>` (the usual `/sys/fs/cgroup` layout).
    pub fn v1(base: impl AsRef<Path>) -> CgroupHost {
        let base = base.as_ref();
        let mounts = V1_CONTROLLERS
            .iter()
            .map(|c| (c.to_string(), base.join(c)))
            .collect();
        CgroupHost::V1 { mounts }
    }

    /// Which version this host uses.
    pub fn version(&self) -> CgroupVersion {
        match self {
            CgroupHost::V1 { .. } => CgroupVersion::V1,
            CgroupHost::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The directories a cgroup at `relative` (such as `fcexec/<id>`) has:
    /// one on v2, one per distinct v1 mount, each with the controllers it
    /// serves.
    pub(crate) fn dirs(&self, relative: &Path) -> Vec<(Vec<&str>, PathBuf)> {
        match self {
            CgroupHost::V2 { root } => vec![(V2_CONTROLLERS.to_vec(), root.join(relative))],
            CgroupHost::V1 { mounts } => {
                let mut dirs: Vec<(Vec<&str>, PathBuf)> = Vec::new();
                for (controller, mount) in mounts {
                    let dir = mount.join(relative);
                    match dirs.iter_mut().find(|(_, d)| *d == dir) {
                        Some((controllers, _)) => controllers.push(controller),
                        None => dirs.push((vec![controller.as_str()], dir)),
                    }
                }
                dirs
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's shape: v1 controllers each on its own mount, an empty
    /// cgroup2 beside them.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    /// A classic v1 host: cpu and cpuacct mounted together.
    const V1: &str = "\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
31 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:14 - cgroup cgroup rw,cpu,cpuacct
32 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
33 25 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,pids
34 25 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,net_cls,net_prio
";

    #[test]
    fn parses_v1_controllers_from_super_options() {
        let mounts = parse_mountinfo(V1);
        assert_eq!(mounts.len(), 5);
        assert_eq!(
            mounts[0].controllers,
            Vec::<String>::new(),
            "name=systemd is no controller"
        );
        assert_eq!(
            mounts[1].mount_point,
            Path::new("/sys/fs/cgroup/cpu,cpuacct")
        );
        assert_eq!(mounts[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(mounts[4].controllers, ["net_cls", "net_prio"]);
        assert!(mounts.iter().all(|m| m.version == CgroupVersion::V1));
    }

    #[test]
    fn v1_host_shares_a_directory_between_comounted_controllers() {
        let host = CgroupHost::from_mountinfo(V1).unwrap();
        let dirs = host.dirs(Path::new("fcexec/a"));
        assert_eq!(
            dirs,
            vec![
                (
                    vec!["cpu", "cpuacct"],
                    PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/fcexec/a")
                ),
                (
                    vec!["memory"],
                    PathBuf::from("/sys/fs/cgroup/memory/fcexec/a")
                ),
                (vec!["pids"], PathBuf::from("/sys/fs/cgroup/pids/fcexec/a")),
            ]
        );
    }

    #[test]
    fn hybrid_with_an_empty_cgroup2_is_v1() {
        // The sample's /sys/fs/cgroup/unified is not read from this test's
        // file system unless it exists; either way it lacks cpu here.
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 6);
        assert_eq!(mounts[5].version, CgroupVersion::V2);
        let host = CgroupHost::from_mountinfo(HYBRID).unwrap();
        assert_eq!(host, CgroupHost::v1("/sys/fs/cgroup"));
        assert_eq!(host.version().number(), 1);
    }

    #[test]
    fn v2_wins_when_it_has_the_controllers() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let text = format!(
            "{HYBRID}42 31 0:39 / {} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
            root.path().display()
        );
        let host = CgroupHost::from_mountinfo(&text).unwrap();
        assert_eq!(host, CgroupHost::v2(root.path()));
    }

    #[test]
    fn v2_only_without_controllers_names_what_is_missing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset io memory\n").unwrap();
        let text = format!(
            "26 1 0:23 / {} rw - cgroup2 cgroup2 rw\n",
            root.path().display()
        );
        let err = CgroupHost::from_mountinfo(&text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("cpu, pids"), "{msg}");
        assert!(msg.contains("cgroup.subtree_control"), "{msg}");
    }

    #[test]
    fn missing_v1_controller_says_how_to_fix_it() {
        let text = V1.replace(" rw,pids", " rw,devices");
        let err = CgroupHost::from_mountinfo(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cgroup v1 controller `pids` is not mounted: mount it \
             (mount -t cgroup -o pids cgroup /sys/fs/cgroup/pids) or use cgroup v2"
        );
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "30 25 0:28 / /tmp/a\\040b rw - cgroup cgroup rw,cpu\n";
        assert_eq!(parse_mountinfo(text)[0].mount_point, Path::new("/tmp/a b"));
    }
}
