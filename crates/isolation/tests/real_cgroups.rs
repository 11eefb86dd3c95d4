//! Real cgroups on this host (v1 here, v2 elsewhere): a CPU quota of a
//! fraction of a core really holds busy processes to that fraction, removal
//! kills what is left and leaves nothing behind, and the jailer puts a VMM in
//! the cgroup `jailer_args` describes. Needs root; skipped with one line
//! otherwise.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fcexec_isolation::{sweep, Cgroup, CgroupHost, CgroupLimits, UidPool};

/// CPU measurements run one at a time: the host has few CPUs.
static CPU: Mutex<()> = Mutex::new(());

/// The host's hierarchy when the test can use it (root, cgroups usable).
fn host(test: &str) -> Option<CgroupHost> {
    testkit::init_logging();
    if !nix::unistd::geteuid().is_root() {
        testkit::skip(test, "needs root to create cgroups");
        return None;
    }
    match CgroupHost::detect() {
        Ok(host) => Some(host),
        Err(e) => {
            testkit::skip(test, &format!("no usable cgroup hierarchy: {e}"));
            None
        }
    }
}

/// A parent per test, so tests (and other crates' tests using `fcexec`) never
/// sweep each other's cgroups.
fn parent(test: &str) -> String {
    format!("fcexec-isolation-test-{test}-{}", std::process::id())
}

/// Starts two busy loops that join `cgroup` before exec, so neither runs an
/// instruction outside it.
fn spin_in(cgroup: &Cgroup) -> Child {
    let join = cgroup.joiner().expect("open cgroup.procs");
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "while :; do :; done & while :; do :; done"]);
    // SAFETY: join_current only calls write(2) on files opened above.
    unsafe { cmd.pre_exec(move || join.join_current()) };
    cmd.spawn().expect("spawn sh")
}

/// CPU used by the cgroup over `window`, as a percentage of one core.
fn cpu_percent(cgroup: &Cgroup, window: Duration) -> f64 {
    let (t0, u0) = (Instant::now(), cgroup.usage().expect("usage").cpu_usage_ns);
    std::thread::sleep(window);
    let (t1, u1) = (Instant::now(), cgroup.usage().expect("usage").cpu_usage_ns);
    (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64 * 100.0
}

/// Removes the cgroup while another thread reaps `child`, as the executor's
/// reaper would, then checks nothing is left.
fn remove_and_check(cgroup: &Cgroup, mut child: Child) {
    let reaper = std::thread::spawn(move || child.wait());
    cgroup.remove(Duration::from_secs(3)).expect("remove");
    let status = reaper.join().expect("reaper").expect("wait");
    assert!(!status.success(), "the busy loop was killed: {status}");
    for path in cgroup.paths() {
        assert!(!path.exists(), "{} is gone", path.display());
    }
    // Removing again is fine.
    cgroup.remove(Duration::ZERO).expect("idempotent remove");
}

fn remove_parent(host: &CgroupHost, parent: &str) {
    let probe = Cgroup::open(host, parent, "x").expect("names are valid");
    for path in probe.paths() {
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir(dir);
            assert!(!dir.exists(), "{} is gone", dir.display());
        }
    }
}

/// Gives the test's cgroups the largest CPU weight, so that other work on a
/// shared host (parallel builds) does not starve the busy loops: what holds
/// them back is then the quota under test and not contention. The weight
/// changes nothing about the quota's ceiling.
fn favour(host: &CgroupHost, parent: &str) {
    let (dir, file, value) = match host {
        CgroupHost::V1 { mounts } => (mounts["cpu"].join(parent), "cpu.shares", "262144"),
        CgroupHost::V2 { root } => (root.join(parent), "cpu.weight", "10000"),
    };
    for d in [dir.clone(), dir.join("spin")] {
        std::fs::write(d.join(file), value)
            .unwrap_or_else(|e| panic!("{}: {e}", d.join(file).display()));
    }
}

fn holds_busy_loops_to(test: &str, cores: f64, low: f64, high: f64) {
    let Some(host) = host(test) else { return };
    let _serial = CPU.lock().unwrap_or_else(|e| e.into_inner());
    let parent = parent(test);
    let limits = CgroupLimits::for_vm(cores, 2, 64).expect("limits");
    let cgroup = Cgroup::create(&host, &parent, "spin", &limits).expect("create");
    favour(&host, &parent);
    let child = spin_in(&cgroup);
    std::thread::sleep(Duration::from_millis(200)); // both loops started
    let percent = cpu_percent(&cgroup, Duration::from_secs(2));
    let usage = cgroup.usage().expect("usage");
    println!(
        "{host:?}: {cores} cores → {percent:.1}% of one core over 2 s \
         (throttled {} ms, {} tasks)",
        usage.cpu_throttled_ns / 1_000_000,
        usage.pids_current
    );
    assert_eq!(usage.cpu_quota_us, Some(limits.cpu_quota_us));
    assert_eq!(usage.cpu_period_us, 100_000);
    assert_eq!(usage.memory_max_bytes, Some(limits.memory_max_bytes));
    assert_eq!(usage.pids_max, Some(64));
    assert!(
        usage.pids_current >= 2,
        "both loops are in the cgroup: {usage:?}"
    );
    remove_and_check(&cgroup, child);
    remove_parent(&host, &parent);
    assert!(
        (low..=high).contains(&percent),
        "{cores} cores gave {percent:.1}%, expected {low}–{high}%"
    );
}

#[test]
fn half_a_core_holds_two_busy_loops_to_about_50_percent() {
    holds_busy_loops_to("half_core", 0.5, 30.0, 70.0);
}

#[test]
fn one_core_holds_two_busy_loops_to_about_100_percent() {
    holds_busy_loops_to("one_core", 1.0, 70.0, 130.0);
}

#[test]
fn sweep_kills_and_removes_every_cgroup_not_kept() {
    let Some(host) = host("sweep") else { return };
    let parent = parent("sweep");
    let limits = CgroupLimits::for_vm(0.5, 1, 64).expect("limits");
    let keep = Cgroup::create(&host, &parent, "keep", &limits).expect("create");
    let stale = Cgroup::create(&host, &parent, "stale", &limits).expect("create");
    let mut sleeper = Command::new("sleep")
        .arg("60")
        .spawn()
        .expect("spawn sleep");
    stale.add_pid(sleeper.id()).expect("add pid");
    assert_eq!(stale.pids().expect("pids"), vec![sleeper.id()]);
    let reaper = std::thread::spawn(move || sleeper.wait());
    let outcome = sweep(&host, &parent, &["keep"], Duration::from_secs(3)).expect("sweep");
    assert_eq!(outcome.removed, ["stale"]);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert!(
        !reaper.join().expect("reaper").expect("wait").success(),
        "sleep was killed"
    );
    assert!(!stale.exists());
    assert!(keep.exists());
    keep.remove(Duration::ZERO).expect("remove");
    remove_parent(&host, &parent);
}

#[test]
fn the_jailer_places_the_vmm_in_the_cgroup_jailer_args_describe() {
    let Some(host) = host("jailer") else { return };
    let Some(vmm) = testkit::require_vmm("jailer") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let uids = UidPool::new(2_000_000_000, 16, dir.path().join("uids")).expect("pool");
    let id = format!("jailtest-{}", std::process::id());
    let lease = uids.allocate(&id).expect("uid");
    let parent = parent("jailer");
    let limits = CgroupLimits::for_vm(1.5, 2, 128).expect("limits");
    let chroot_base = dir.path().join("jail");
    std::fs::create_dir(&chroot_base).expect("chroot base"); // the jailer wants it to exist
    let mut args: Vec<String> = [
        "--id",
        &id,
        "--exec-file",
        &vmm.firecracker.display().to_string(),
        "--uid",
        &lease.uid().to_string(),
        "--gid",
        &lease.gid().to_string(),
        "--chroot-base-dir",
        &chroot_base.display().to_string(),
        "--cgroup-version",
        &host.version().number().to_string(),
        "--parent-cgroup",
        &parent,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(limits.jailer_args(host.version()));
    args.extend(["--", "--api-sock", "/fc.sock"].map(String::from));
    let mut child = Command::new(&vmm.jailer)
        .args(&args)
        .spawn()
        .expect("spawn jailer");
    let pid = child.id();
    let cgroup = Cgroup::open(&host, &parent, &id).expect("open");
    let start = Instant::now();
    while !Path::new(&chroot_base)
        .join("firecracker")
        .join(&id)
        .join("root/fc.sock")
        .exists()
    {
        if let Ok(Some(status)) = child.try_wait() {
            remove_parent(&host, &parent);
            panic!("the jailer exited with {status} before firecracker listened");
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "firecracker did not start under the jailer"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = cgroup.pids().expect("pids");
    let usage = cgroup.usage().expect("usage");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    println!(
        "jailer on {host:?}: cgroup {:?} holds {pids:?}; {usage:?}",
        cgroup.paths()
    );
    let reaper = std::thread::spawn(move || child.wait());
    cgroup.remove(Duration::from_secs(3)).expect("remove");
    let _ = reaper.join();
    let _ = std::fs::remove_dir_all(chroot_base.join("firecracker").join(&id));
    remove_parent(&host, &parent);
    uids.release(&lease).expect("release");
    assert_eq!(
        pids,
        vec![pid],
        "firecracker (the jailer's pid) is in every hierarchy"
    );
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&lease.uid().to_string())),
        "{status}"
    );
    assert_eq!(usage.cpu_quota_us, Some(150_000));
    assert_eq!(usage.memory_max_bytes, Some(limits.memory_max_bytes));
    assert_eq!(usage.pids_max, Some(64));
    assert!(usage.cpu_usage_ns > 0, "cpuacct counts the VMM: {usage:?}");
}
