//! Jailed VMMs against the real VMM and jailer (as root, the default): the
//! VMM's uid, chroot, PID namespace, seccomp and cgroup; two jails apart;
//! the user's files untouched; nothing left behind.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{eventually, Harness};
use fcexec::record::ExecutionRecord;
use fcexec::{Executor, Isolation};
use serde_json::json;
use test_guest::Job;

/// The record of execution `id` of executor `executor` (with its pid).
fn record(h: &Harness, executor: &str, id: &str) -> ExecutionRecord {
    ExecutionRecord::load(&h.state_root().join(executor).join(id).join("record.json")).unwrap()
}

/// Waits until the VMM of `id` runs and returns its pid and jail.
async fn jailed_vmm(h: &Harness, executor: &str, id: &str) -> (u32, Isolation) {
    assert!(
        eventually(Duration::from_secs(5), || record(h, executor, id)
            .pid
            .is_some())
        .await
    );
    let rec = record(h, executor, id);
    let iso = rec
        .isolation
        .expect("a default execution as root is jailed");
    (rec.pid.unwrap(), iso)
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// Checks that nothing of `iso` is left: jail directory, mounts, cgroup, lease.
fn assert_released(iso: &Isolation) {
    assert!(!iso.instance_dir.exists(), "{iso:?}");
    assert!(!iso.copies.exists(), "{iso:?}");
    for dir in &iso.cgroups {
        assert!(!dir.exists(), "cgroup {} left", dir.display());
    }
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&iso.jail_id), "{mounts}");
    assert!(!iso.uid_lock_dir.join(format!("{}.lease", iso.uid)).exists());
}

#[tokio::test]
async fn a_default_execution_runs_jailed_with_its_uid_chroot_pid_namespace_seccomp_and_cgroup() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("jailed").await;
    let mut request = h.agent("j1", &Job::new().out("up\n").sleep(20_000));
    request.resources =
        serde_json::from_value(json!({"cpu": {"cores": 1.5}, "ram": {"size": 64u64 << 20}}))
            .unwrap();
    ex.start(&request).await.unwrap();
    let (pid, iso) = jailed_vmm(&h, "jailed", "j1").await;

    let (first, count) = iso.uid_range;
    assert!((first..first + count).contains(&iso.uid), "{iso:?}");
    let uid = iso.uid.to_string();
    assert_eq!(status_field(pid, "Uid"), [&uid[..]; 4].join(" "));
    assert_eq!(status_field(pid, "Gid"), [&uid[..]; 4].join(" "));
    // Its root is the jail, seen from here as the same directory.
    let root = std::fs::metadata(format!("/proc/{pid}/root/")).unwrap();
    let chroot = std::fs::metadata(&iso.chroot).unwrap();
    assert_eq!((root.dev(), root.ino()), (chroot.dev(), chroot.ino()));
    assert!(Path::new(&format!("/proc/{pid}/root/kernel")).exists());
    // The init of a PID namespace of its own.
    assert!(
        status_field(pid, "NSpid").ends_with(" 1"),
        "{}",
        status_field(pid, "NSpid")
    );
    // Firecracker's seccomp filters are in force once the guest runs.
    assert!(
        eventually(Duration::from_secs(5), || status_field(pid, "Seccomp")
            == "2")
        .await,
        "Seccomp: {}",
        status_field(pid, "Seccomp")
    );
    // The cgroup holds it, with the limits of 1.5 cores and 64 MiB.
    assert!(!iso.cgroups.is_empty());
    for dir in &iso.cgroups {
        let procs = read(dir, "cgroup.procs");
        assert!(
            procs.lines().any(|p| p == pid.to_string()),
            "{}: {procs}",
            dir.display()
        );
        if dir.join("cpu.cfs_quota_us").exists() {
            assert_eq!(read(dir, "cpu.cfs_quota_us"), "150000");
            assert_eq!(read(dir, "cpu.cfs_period_us"), "100000");
        }
        if dir.join("cpu.max").exists() {
            assert_eq!(read(dir, "cpu.max"), "150000 100000");
        }
        for file in ["memory.limit_in_bytes", "memory.max"] {
            if dir.join(file).exists() {
                assert_eq!(read(dir, file), iso.limits.memory_max_bytes.to_string());
            }
        }
        if dir.join("pids.max").exists() {
            assert_eq!(read(dir, "pids.max"), "64");
        }
    }
    // The guest's 64 MiB and the VMM's overhead (64 MiB and 16 MiB per GiB).
    assert_eq!(iso.limits.memory_max_bytes, (64 + 64 + 1) << 20);

    common::cancel_and_check(&ex, "j1").await;
    assert!(eventually(Duration::from_secs(5), || !iso.instance_dir.exists()).await);
    assert_released(&iso);
}

#[tokio::test]
async fn two_jails_get_different_uids_and_cannot_read_each_others_files() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("two").await;
    for id in ["a", "b"] {
        ex.start(&h.agent(id, &Job::new().hang())).await.unwrap();
    }
    let (pid_a, a) = jailed_vmm(&h, "two", "a").await;
    let (pid_b, b) = jailed_vmm(&h, "two", "b").await;
    assert_ne!(a.uid, b.uid);
    let theirs = b.chroot.join("drive-rootfs");
    assert!(
        std::fs::read(&theirs).is_ok(),
        "root reads {}",
        theirs.display()
    );
    // As the first jail's uid: neither the other jail's files nor its root.
    for path in [
        theirs.clone(),
        PathBuf::from(format!("/proc/{pid_b}/root/drive-rootfs")),
    ] {
        let out = std::process::Command::new("cat")
            .arg(&path)
            .uid(a.uid)
            .gid(a.gid)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "uid {} read {}",
            a.uid,
            path.display()
        );
    }
    assert!(pid_a != pid_b);
    ex.cleanup().await.unwrap();
    assert_released(&a);
    assert_released(&b);
}

use std::os::unix::process::CommandExt;

/// Owner, group, mode and contents of a file.
fn snapshot(path: &Path) -> (u32, u32, u32, Vec<u8>) {
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid(), m.mode(), std::fs::read(path).unwrap())
}

#[tokio::test]
async fn the_users_files_keep_owner_mode_and_contents_and_a_symlinked_result_is_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(testkit::require_vmm!());
    let input = h.path("in.img");
    std::fs::write(&input, vec![7u8; 4096]).unwrap();
    // Not readable by others: the jail gets a private copy.
    std::fs::set_permissions(&input, std::fs::Permissions::from_mode(0o600)).unwrap();
    let output = h.path("out.img");
    std::fs::write(&output, vec![1u8; 4096]).unwrap();
    let results = h.path("results");
    std::fs::create_dir(&results).unwrap();
    let victim = h.path("victim");
    std::fs::write(&victim, b"outside results_dir").unwrap();
    let planted = results.join(fcexec::launch::output_name("f1", 0, "/mnt/out", &output));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    let files = [
        h.kernel.clone(),
        h.rootfs.clone(),
        input.clone(),
        output.clone(),
    ];
    let before: Vec<_> = files.iter().map(|f| snapshot(f)).collect();

    let ex = h.executor("files").await;
    // The guest writes the input's first sector over its root file system
    // and its output: only the jail's copies change.
    let job = Job::new().copy(1, 0, 512).copy(1, 2, 512);
    let mut request = h.agent("f1", &job);
    request.inputs =
        serde_json::from_value(json!([{"source": input, "target": "/mnt/in", "readonly": true}]))
            .unwrap();
    request.outputs =
        serde_json::from_value(json!([{"source": output, "target": "/mnt/out"}])).unwrap();
    request.results_dir = results.display().to_string();
    let result = ex.run(&request).await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");

    let after: Vec<_> = files.iter().map(|f| snapshot(f)).collect();
    for (file, (b, a)) in files.iter().zip(before.iter().zip(&after)) {
        assert_eq!(b, a, "{} changed", file.display());
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"outside results_dir");
    let copied = std::fs::symlink_metadata(&planted).unwrap();
    assert!(copied.is_file(), "the planted link was followed");
    let data = std::fs::read(&planted).unwrap();
    assert_eq!(
        &data[..512],
        &[7u8; 512][..],
        "the guest's write reached the result"
    );
    let iso = record(&h, "files", "f1").isolation.unwrap();
    assert_released(&iso);
}

#[tokio::test]
async fn a_group_writable_kernel_is_bind_mounted_and_unmounted_at_the_end() {
    use std::os::unix::fs::PermissionsExt;
    let h = Harness::new(testkit::require_vmm!());
    // Others may write it: a hard link would hand the VMM that mode, so it
    // is bind-mounted read-only; the plain default is linked, no mount.
    let kernel = h.path("group-writable-kernel");
    std::fs::copy(&h.kernel, &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o664)).unwrap();
    let ex = h.executor("binds").await;
    let job = Job::new().out("bound\n");
    let request = h.request(
        "b1",
        json!({"agent": true, "kernel_image": kernel, "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())}),
    );
    let result = ex.run(&request).await.unwrap();
    assert_eq!(result.stdout, "bound\n", "{result:?}");
    let iso = record(&h, "binds", "b1").isolation.unwrap();
    assert!(iso.mounts, "{iso:?}");
    assert_released(&iso);
    assert_eq!(snapshot(&kernel).2 & 0o777, 0o664);

    let result = ex.run(&h.agent("b2", &job)).await.unwrap();
    assert_eq!(result.stdout, "bound\n", "{result:?}");
    let iso = record(&h, "binds", "b2").isolation.unwrap();
    assert!(!iso.mounts, "hard links only: {iso:?}");
    assert_released(&iso);
}

#[tokio::test]
async fn descriptors_the_caller_left_inheritable_do_not_reach_a_jailed_vmm() {
    use std::os::fd::AsRawFd;
    let h = Harness::new(testkit::require_vmm!());
    let secret = std::fs::File::create(h.path("secret")).unwrap();
    // SAFETY: fcntl on a descriptor this test owns; clears close-on-exec.
    unsafe { libc::fcntl(secret.as_raw_fd(), libc::F_SETFD, 0) };
    let ex = h.executor("fds").await;
    ex.start(&h.agent("d1", &Job::new().out("up\n").sleep(20_000)))
        .await
        .unwrap();
    let (pid, _) = jailed_vmm(&h, "fds", "d1").await;
    let fds = testkit::open_files(pid);
    assert!(!fds.is_empty(), "no descriptors read");
    assert!(
        !fds.iter().any(|target| target.ends_with("secret")),
        "{fds:?}"
    );
    common::cancel_and_check(&ex, "d1").await;
}

#[tokio::test]
async fn a_long_execution_id_still_runs_jailed_under_a_shortened_jail_id() {
    let h = Harness::new(testkit::require_vmm!());
    let executor = "node-executor";
    let ex = h.executor(executor).await;
    // A UUID behind a prefix: 56 characters, and the jail's socket path
    // would be far longer than a Unix socket allows with the id in full.
    let id = "job-attempt-1-3f1c2a9e-7b4d-4c1e-9a2f-0d5e8b7c6a41-retry";
    let result = ex
        .run(&h.agent(id, &Job::new().out("long\n")))
        .await
        .unwrap();
    assert_eq!(result.stdout, "long\n");
    assert_eq!(result.exit_code, 0);
    let iso = record(&h, executor, id)
        .isolation
        .expect("a default execution as root is jailed");
    assert!(iso.jail_id.len() <= 64, "{}", iso.jail_id);
    assert!(!iso.jail_id.contains(id), "not shortened: {}", iso.jail_id);
    let socket = iso.chroot.join("run/firecracker.socket");
    assert!(socket.as_os_str().len() <= 107, "{}", socket.display());
    assert_released(&iso);
}

#[tokio::test]
async fn unjailed_mode_is_a_setting() {
    let h = Harness::new(testkit::require_vmm!());
    let mut config = h.config();
    config.jail.enabled = false;
    let ex = Executor::new("plainvm", config).await.unwrap();
    let result = ex
        .run(&h.agent("u1", &Job::new().out("hi\n")))
        .await
        .unwrap();
    assert_eq!(result.stdout, "hi\n");
    assert!(record(&h, "plainvm", "u1").isolation.is_none());
}

/// The executor `kill_9_...` runs in a child process: starts the requests in
/// `<dir>/requests.json`, writes `<dir>/ready`, then waits to be killed.
async fn executor_to_be_killed(dir: PathBuf) {
    let requests: Vec<fcexec::ExecutionRequest> =
        serde_json::from_slice(&std::fs::read(dir.join("requests.json")).unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let ex = Executor::new(
        "crash",
        fcexec::ExecutorConfig {
            state_root: Some(PathBuf::from(config["state"].as_str().unwrap())),
            firecracker: Some(PathBuf::from(config["firecracker"].as_str().unwrap())),
            ..fcexec::ExecutorConfig::default()
        },
    )
    .await
    .unwrap();
    for request in &requests {
        ex.start(request).await.unwrap();
    }
    std::fs::write(dir.join("ready"), b"").unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test]
async fn kill_9_of_the_executor_with_three_jailed_vms_then_recovery_and_cleanup_leave_nothing() {
    const NAME: &str =
        "kill_9_of_the_executor_with_three_jailed_vms_then_recovery_and_cleanup_leave_nothing";
    if let Some(dir) = std::env::var_os("FCEXEC_JAIL_TEST_CHILD") {
        return executor_to_be_killed(PathBuf::from(dir)).await;
    }
    let h = Harness::new(testkit::require_vmm!());
    let requests: Vec<_> = ["k1", "k2", "k3"]
        .iter()
        .map(|id| h.agent(id, &Job::new().out("up\n").hang()))
        .collect();
    std::fs::write(
        h.path("requests.json"),
        serde_json::to_vec(&requests).unwrap(),
    )
    .unwrap();
    let config = json!({"state": h.state_root(), "firecracker": h.vmm.firecracker});
    std::fs::write(h.path("config.json"), config.to_string()).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture"])
        .env("FCEXEC_JAIL_TEST_CHILD", h.dir.path())
        .spawn()
        .unwrap();
    let ready = h.path("ready");
    assert!(eventually(Duration::from_secs(20), || ready.exists()).await);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let jails: Vec<(u32, Isolation)> = ["k1", "k2", "k3"]
        .iter()
        .map(|id| {
            let rec = record(&h, "crash", id);
            (rec.pid.unwrap(), rec.isolation.unwrap())
        })
        .collect();
    for (pid, iso) in &jails {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{iso:?}");
    }

    let ex = h.executor("crash").await;
    let listed: Vec<_> = ex.list().into_iter().map(|i| i.execution_id).collect();
    assert_eq!(listed, ["k1", "k2", "k3"]);
    for id in ["k1", "k2", "k3"] {
        assert_eq!(
            ex.status(id).unwrap(),
            fcexec::ExecutionStatus::Running,
            "{id}"
        );
    }
    ex.cleanup().await.unwrap();
    for (pid, iso) in &jails {
        assert!(
            eventually(Duration::from_secs(5), || {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map_or(true, |s| s.contains(") Z "))
            })
            .await,
            "VMM {pid} still runs"
        );
        assert_released(iso);
    }
    assert!(common::firecracker_pids(h.dir.path()).is_empty());
    let jail_dir = h.state_root().join("crash/.jail/firecracker");
    let left: Vec<_> = std::fs::read_dir(&jail_dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
