//! What makes jailed launches slower than they need to be on this host
//! (warnings only, when jailing is on; nothing is changed):
//!
//! - the runtime directory on a disk file system: every jailed VMM's chroot,
//!   with the jailer's copy of the firecracker binary, is written there and
//!   deleted at the end; on a tmpfs (`/run` on most hosts) that is memory
//!   only;
//! - cgroup migrations that wait for an RCU grace period: the jailer moves
//!   itself into the VMM's cgroup, and unless a cgroup hierarchy is mounted
//!   with `favordynmods` that move waits for one (6–8 ms per launch on the
//!   2-CPU test host; BENCHMARKS.md, section J).

use std::path::Path;

use super::Check;

/// The checks, for the runtime directory `runtime` (its nearest existing
/// ancestor is looked at) and this process's mount table.
pub fn checks(runtime: &Path, mountinfo: &str) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(check) = runtime_fs(runtime) {
        checks.push(check);
    }
    if let Some(check) = favordynmods(mountinfo) {
        checks.push(check);
    }
    checks
}

/// A warning when `runtime` is not on a tmpfs.
fn runtime_fs(runtime: &Path) -> Option<Check> {
    let existing = runtime.ancestors().find(|p| p.exists())?;
    let fs = nix::sys::statfs::statfs(existing).ok()?;
    if fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC {
        return None;
    }
    Some(Check::Warn {
        problem: format!(
            "jailed launches: the runtime directory {} is on a disk file system; each \
             jail (with the jailer's copy of the firecracker binary) is written and \
             deleted there",
            runtime.display()
        ),
        fix: "put the state directory on a tmpfs (--state-dir; /run/fcexec where /run is \
              a tmpfs)"
            .into(),
    })
}

/// A warning when no cgroup hierarchy in `mountinfo` is mounted with
/// `favordynmods`.
fn favordynmods(mountinfo: &str) -> Option<Check> {
    let cgroup_mounts: Vec<&str> = mountinfo
        .lines()
        .filter(|l| {
            l.split(" - ")
                .nth(1)
                .is_some_and(|rest| rest.starts_with("cgroup"))
        })
        .collect();
    if cgroup_mounts.is_empty() || cgroup_mounts.iter().any(|l| has_favordynmods(l)) {
        return None;
    }
    // The cgroup2 mount where there is one (`/sys/fs/cgroup`, or
    // `/sys/fs/cgroup/unified` on hybrid hosts); any cgroup v1 one otherwise.
    let target = cgroup_mounts
        .iter()
        .find(|l| l.contains(" - cgroup2 "))
        .or(cgroup_mounts.first())
        .and_then(|l| l.split(' ').nth(4))
        .unwrap_or("/sys/fs/cgroup");
    Some(Check::Warn {
        problem: "jailed launches: no cgroup hierarchy is mounted with favordynmods, so \
                  moving each jailer into its VMM's cgroup waits for an RCU grace period \
                  (6-8 ms per launch on the test host)"
            .into(),
        fix: format!(
            "mount -o remount,favordynmods {target} (Linux 6.0 or later; it applies to every \
             hierarchy; forks and exits get a little slower, see the kernel's cgroup-v2 docs; \
             on Linux 6.18 it stays on until reboot)"
        ),
    })
}

/// Whether a mountinfo line's super options include `favordynmods`.
fn has_favordynmods(line: &str) -> bool {
    line.split(" - ")
        .nth(1)
        .and_then(|rest| rest.split(' ').nth(2))
        .is_some_and(|opts| opts.split(',').any(|o| o == "favordynmods"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n\
                      22 1 0:20 / /run rw - tmpfs tmpfs rw";

    #[test]
    fn favordynmods_on_any_cgroup_mount_is_enough() {
        let warning = favordynmods(V1).map(|c| c.to_string()).unwrap_or_default();
        assert!(
            warning.contains("remount,favordynmods /sys/fs/cgroup/unified "),
            "{warning}"
        );
        let tuned = V1.replace("cgroup2 rw", "cgroup2 rw,favordynmods");
        assert_eq!(favordynmods(&tuned), None);
        // No cgroups mounted: nothing to say.
        assert_eq!(favordynmods("22 1 0:20 / /run rw - tmpfs tmpfs rw"), None);
    }

    #[test]
    fn a_tmpfs_runtime_directory_is_fine_and_a_disk_one_is_a_warning() {
        let is_tmpfs = |p: &str| {
            nix::sys::statfs::statfs(p)
                .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        };
        // A missing directory is judged by its nearest existing ancestor.
        if is_tmpfs("/dev/shm") {
            assert_eq!(runtime_fs(Path::new("/dev/shm/fcexec-doctor-test/x")), None);
        }
        let here = env!("CARGO_MANIFEST_DIR");
        let warning = runtime_fs(Path::new(here)).map(|c| c.to_string());
        match is_tmpfs(here) {
            true => assert_eq!(warning, None),
            false => assert!(
                warning
                    .as_deref()
                    .is_some_and(|w| w.contains("disk file system")),
                "{warning:?}"
            ),
        }
    }
}
