//! The cgroup write path against a fake v2 root in a tempdir, and the name rules.

use super::*;

const MIB: u64 = 1024 * 1024;

/// A fake unified root: `cgroup.controllers` lists every controller and
/// `cgroup.subtree_control` starts with just `cpuset` enabled.
fn fake_v2() -> (tempfile::TempDir, CgroupHost) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    )
    .unwrap();
    std::fs::write(root.path().join("cgroup.subtree_control"), "cpuset\n").unwrap();
    let host = CgroupHost::v2(root.path());
    (root, host)
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn v2_create_enables_controllers_and_writes_limits() {
    let (root, host) = fake_v2();
    let limits = CgroupLimits::for_vm(1.5, 2, 128).unwrap();
    let cgroup = Cgroup::create(&host, DEFAULT_PARENT, "exec-1", &limits).unwrap();
    let dir = root.path().join("fcexec/exec-1");
    assert_eq!(cgroup.paths(), vec![dir.as_path()]);
    // Only the missing controllers are added, at the root and in the parent.
    assert_eq!(
        read(root.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(root.path().join("fcexec/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert!(
        !dir.join("cgroup.subtree_control").exists(),
        "the leaf enables nothing"
    );
    assert_eq!(read(dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(dir.join("memory.max")), ((128 + 66) * MIB).to_string());
    assert_eq!(read(dir.join("pids.max")), "64");
}

#[test]
fn v2_nested_parent_enables_every_level() {
    let (root, host) = fake_v2();
    let limits = CgroupLimits::for_vm(0.5, 1, 64).unwrap();
    Cgroup::create(&host, "a/b", "x", &limits).unwrap();
    for level in ["", "a", "a/b"] {
        let file = root.path().join(level).join("cgroup.subtree_control");
        assert!(read(&file).contains("+memory"), "{}", file.display());
    }
    assert_eq!(read(root.path().join("a/b/x/cpu.max")), "50000 100000");
}

#[test]
fn v2_create_reuses_a_leftover_and_add_pid_writes_procs() {
    let (root, host) = fake_v2();
    let limits = CgroupLimits::for_vm(1.0, 1, 64).unwrap();
    Cgroup::create(&host, DEFAULT_PARENT, "again", &limits).unwrap();
    let cgroup = Cgroup::create(&host, DEFAULT_PARENT, "again", &limits).unwrap();
    cgroup.add_pid(4242).unwrap();
    assert_eq!(read(root.path().join("fcexec/again/cgroup.procs")), "4242");
    assert_eq!(cgroup.pids().unwrap(), vec![4242]);
}

#[test]
fn v2_usage_reads_the_files_back() {
    let (root, host) = fake_v2();
    let limits = CgroupLimits::for_vm(2.25, 3, 256).unwrap();
    let cgroup = Cgroup::create(&host, DEFAULT_PARENT, "u", &limits).unwrap();
    let dir = root.path().join("fcexec/u");
    std::fs::write(dir.join("cpu.stat"), "usage_usec 1234\nuser_usec 1000\nsystem_usec 234\nnr_periods 3\nnr_throttled 1\nthrottled_usec 77\n").unwrap();
    std::fs::write(dir.join("memory.current"), "4194304\n").unwrap();
    std::fs::write(dir.join("pids.current"), "3\n").unwrap();
    let usage = cgroup.usage().unwrap();
    assert_eq!(usage.cpu_usage_ns, 1_234_000);
    assert_eq!(usage.cpu_throttled_ns, 77_000);
    assert_eq!(usage.memory_current_bytes, 4 * MIB);
    assert_eq!(usage.pids_current, 3);
    assert_eq!(usage.cpu_quota_us, Some(225_000));
    assert_eq!(usage.cpu_period_us, 100_000);
    assert_eq!(usage.memory_max_bytes, Some(limits.memory_max_bytes));
    assert_eq!(usage.pids_max, Some(64));
    std::fs::write(dir.join("cpu.max"), "max 100000\n").unwrap();
    std::fs::write(dir.join("pids.max"), "max\n").unwrap();
    let usage = cgroup.usage().unwrap();
    assert_eq!((usage.cpu_quota_us, usage.pids_max), (None, None));
}

#[test]
fn v1_create_writes_each_controller_in_its_hierarchy() {
    let base = tempfile::tempdir().unwrap();
    let host = CgroupHost::v1(base.path());
    let limits = CgroupLimits::for_vm(0.5, 1, 128).unwrap();
    let cgroup = Cgroup::create(&host, DEFAULT_PARENT, "v1", &limits).unwrap();
    assert_eq!(cgroup.paths().len(), 4);
    let at = |c: &str, f: &str| read(base.path().join(c).join("fcexec/v1").join(f));
    assert_eq!(at("cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(at("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(
        at("memory", "memory.limit_in_bytes"),
        ((128 + 66) * MIB).to_string()
    );
    assert_eq!(at("pids", "pids.max"), "64");
    assert!(base.path().join("cpuacct/fcexec/v1").is_dir());
}

#[test]
fn remove_is_idempotent_and_sweep_keeps_what_it_is_told() {
    let (root, host) = fake_v2();
    let limits = CgroupLimits::for_vm(1.0, 1, 64).unwrap();
    for id in ["keep", "drop1", "drop2"] {
        let c = Cgroup::create(&host, DEFAULT_PARENT, id, &limits).unwrap();
        // A fake directory holds files the kernel would not; clear them so
        // rmdir works as on cgroupfs.
        for p in c.paths() {
            for e in std::fs::read_dir(p).unwrap() {
                std::fs::remove_file(e.unwrap().path()).unwrap();
            }
        }
    }
    let outcome = sweep(&host, DEFAULT_PARENT, &["keep"], Duration::ZERO).unwrap();
    assert_eq!(outcome.removed, ["drop1", "drop2"]);
    assert!(outcome.failed.is_empty());
    assert!(root.path().join("fcexec/keep").is_dir());
    let gone = Cgroup::open(&host, DEFAULT_PARENT, "drop1").unwrap();
    assert!(!gone.exists());
    gone.remove(Duration::ZERO).unwrap();
    // Sweeping a parent that does not exist removes nothing and fails on nothing.
    let outcome = sweep(&host, "nothing-here", &[], Duration::ZERO).unwrap();
    assert!(outcome.removed.is_empty() && outcome.failed.is_empty());
}

#[test]
fn names_that_are_not_one_path_component_are_rejected() {
    let host = CgroupHost::v2("/nonexistent");
    for id in ["", "..", ".hidden", "a/b", "a b", "x\0y", &"a".repeat(65)] {
        let err = Cgroup::open(&host, DEFAULT_PARENT, id).unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::InvalidName {
                    what: "execution id",
                    ..
                }
            ),
            "{id:?}: {err}"
        );
    }
    for parent in ["", "/abs", "a//b", "../up", "a/.."] {
        let err = Cgroup::open(&host, parent, "ok").unwrap_err();
        assert!(
            matches!(
                err,
                CgroupError::InvalidName {
                    what: "parent cgroup",
                    ..
                }
            ),
            "{parent:?}: {err}"
        );
    }
    assert!(Cgroup::open(&host, "a/b-c_d.e", "Exec-1_x.y").is_ok());
}

#[test]
fn a_missing_controller_file_names_the_controller() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_file(&dir.path().join("nope/cpu.max"), "1 2", "cpu").unwrap_err();
    assert!(
        err.to_string().contains("`cpu` controller is not enabled"),
        "{err}"
    );
}
