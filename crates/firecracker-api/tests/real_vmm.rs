//! Every operation a VMM accepts, exercised against the real firecracker.
//!
//! The guest is a few bytes assembled by `common::tiny_guest`: it writes a
//! line to the serial port, then resets (firecracker exits 0) or halts.

mod common;

use std::time::Duration;

use common::{boot, boot_source, machine, process_exists, wait_for_text, Fixture, Then};
use firecracker_api::models::{self, InstanceInfoState};
use firecracker_api::{StopPolicy, StopStep, VmmExit};
use serde_json::json;

fn model<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

#[tokio::test]
async fn boots_prints_and_exits_zero() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("hello from the guest\n", Then::Reset);
    let mut vm = fx.spawn("boot").await;
    let api = vm.client().unwrap();
    let info = api.describe_instance().await.unwrap();
    assert_eq!(info.state, InstanceInfoState::NotStarted);
    assert_eq!(
        api.get_firecracker_version()
            .await
            .unwrap()
            .firecracker_version,
        "1.16.1"
    );
    api.put_guest_boot_source(&boot_source(&kernel))
        .await
        .unwrap();
    api.put_machine_configuration(&machine(16)).await.unwrap();
    api.patch_machine_configuration(&model(json!({"vcpu_count": 1, "mem_size_mib": 32})))
        .await
        .unwrap();
    assert_eq!(
        api.get_machine_configuration().await.unwrap().mem_size_mib,
        32
    );
    api.instance_start().await.unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(10), vm.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(exit, VmmExit::Exited(0));
    assert_eq!(fx.serial("boot"), "hello from the guest\n");
    let pid = vm.pid();
    vm.stop(StopPolicy::default()).await.unwrap();
    assert!(!process_exists(pid), "reaped");
    assert!(!fx.path("boot.sock").exists(), "socket removed");
}

#[tokio::test]
async fn pause_resume_snapshot_and_load_into_a_second_vmm() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("snap\n", Then::Halt);
    let mut vm = fx.spawn("src").await;
    let api = vm.client().unwrap();
    boot(&api, &kernel).await;
    wait_for_text(&fx.path("src.serial"), "snap\n").await;
    api.pause().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceInfoState::Paused
    );
    api.resume().await.unwrap();
    assert_eq!(
        api.describe_instance().await.unwrap().state,
        InstanceInfoState::Running
    );
    api.pause().await.unwrap();
    let (snap, mem) = (fx.path("vm.snap"), fx.path("vm.mem"));
    api.create_snapshot(&model(json!({
        "snapshot_path": snap, "mem_file_path": mem, "snapshot_type": "Full"
    })))
    .await
    .unwrap();
    vm.stop(StopPolicy::default()).await.unwrap();

    let mut second = fx.spawn("dst").await;
    let api2 = second.client().unwrap();
    api2.load_snapshot(&model(json!({
        "snapshot_path": snap,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": false
    })))
    .await
    .unwrap();
    assert_eq!(
        api2.describe_instance().await.unwrap().state,
        InstanceInfoState::Paused
    );
    api2.resume().await.unwrap();
    assert_eq!(
        api2.describe_instance().await.unwrap().state,
        InstanceInfoState::Running
    );
    let (_, step) = second.stop(StopPolicy::default()).await.unwrap();
    assert_ne!(step, StopStep::AlreadyExited);
}

#[tokio::test]
async fn devices_logger_metrics_mmds_and_config_export() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("devices\n", Then::Halt);
    for name in ["root.img", "data.img", "data2.img", "pmem.img"] {
        std::fs::write(fx.path(name), vec![0u8; 2 << 20]).unwrap();
    }
    let (fc_log, metrics) = (fx.path("fc-api.log"), fx.path("metrics.json"));
    std::fs::write(&metrics, b"").unwrap();
    let mut vm = fx.spawn("dev").await;
    let api = vm.client().unwrap();
    api.put_logger(&model(
        json!({"log_path": fc_log, "level": "Info", "show_level": true}),
    ))
    .await
    .unwrap();
    api.put_metrics(&models::Metrics {
        metrics_path: metrics.display().to_string(),
    })
    .await
    .unwrap();
    api.put_guest_boot_source(&boot_source(&kernel))
        .await
        .unwrap();
    api.put_machine_configuration(&machine(32)).await.unwrap();
    api.put_cpu_configuration(&model(json!({}))).await.unwrap();
    api.put_guest_drive_by_id(
        "rootfs",
        &model(json!({
            "drive_id": "rootfs", "is_root_device": true, "path_on_host": fx.path("root.img")
        })),
    )
    .await
    .unwrap();
    api.put_guest_drive_by_id(
        "data",
        &model(json!({
            "drive_id": "data", "is_root_device": false, "path_on_host": fx.path("data.img"),
            "is_read_only": true, "cache_type": "Unsafe", "io_engine": "Sync"
        })),
    )
    .await
    .unwrap();
    api.put_guest_pmem_by_id(
        "pm0",
        &model(json!({"id": "pm0", "path_on_host": fx.path("pmem.img")})),
    )
    .await
    .unwrap();
    let vsock = fx.path("v.sock");
    api.put_guest_vsock(&models::Vsock {
        guest_cid: 3,
        uds_path: vsock.display().to_string(),
        vsock_id: None,
    })
    .await
    .unwrap();
    api.put_balloon(&model(
        json!({"amount_mib": 0, "deflate_on_oom": true, "stats_polling_interval_s": 1}),
    ))
    .await
    .unwrap();
    api.put_entropy_device(&model(json!({}))).await.unwrap();
    api.put_serial_device(&model(json!({}))).await.unwrap();
    api.put_mmds(&model(json!({"latest": {"meta-data": {"id": "one"}}})))
        .await
        .unwrap();
    api.patch_mmds(&model(json!({"latest": {"meta-data": {"job": "two"}}})))
        .await
        .unwrap();
    let mmds = api.get_mmds().await.unwrap();
    assert_eq!(
        mmds["latest"]["meta-data"],
        json!({"id": "one", "job": "two"})
    );
    assert_eq!(api.describe_balloon_config().await.unwrap().amount_mib, 0);

    api.instance_start().await.unwrap();
    wait_for_text(&fx.path("dev.serial"), "devices\n").await;
    assert!(vsock.exists(), "the vsock socket exists while the VM runs");
    api.patch_guest_drive_by_id(
        "data",
        &model(json!({"drive_id": "data", "path_on_host": fx.path("data2.img")})),
    )
    .await
    .unwrap();
    // The tiny guest has no balloon driver, so the device never activates and
    // Firecracker refuses post-boot balloon changes with a clear message.
    let not_active = |r: Result<(), firecracker_api::ApiError>| {
        if let Err(err) = r {
            assert_eq!(err.status(), Some(400), "{err}");
            assert!(err.to_string().contains("not activated"), "{err}");
        }
    };
    not_active(
        api.patch_balloon(&models::BalloonUpdate { amount_mib: 1 })
            .await,
    );
    not_active(
        api.patch_balloon_stats_interval(&model(json!({"stats_polling_interval_s": 2})))
            .await,
    );
    not_active(api.describe_balloon_stats().await.map(|_| ()));
    api.flush_metrics().await.unwrap();
    let config = api.get_export_vm_config().await.unwrap();
    let config = serde_json::to_value(config).unwrap();
    let data = config["drives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["drive_id"] == "data");
    assert_eq!(
        data.unwrap()["path_on_host"],
        json!(fx.path("data2.img")),
        "drive patched"
    );
    assert_eq!(config["machine-config"]["mem_size_mib"], json!(32));
    assert!(
        !std::fs::read(&metrics).unwrap().is_empty(),
        "metrics flushed"
    );
    assert!(
        !std::fs::read(&fc_log).unwrap().is_empty(),
        "the logger writes to its new file"
    );

    vm.stop(StopPolicy::default()).await.unwrap();
    // Firecracker leaves the vsock socket behind; it is not in `extra_sockets` here.
    let _ = std::fs::remove_file(&vsock);
}

#[tokio::test]
async fn ctrl_alt_del_is_ignored_by_a_halted_guest_and_sigterm_follows() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("x\n", Then::Halt);
    let mut vm = fx.spawn("esc").await;
    let api = vm.client().unwrap();
    boot(&api, &kernel).await;
    let policy = StopPolicy {
        ctrl_alt_del: Some(Duration::from_millis(100)),
        ..StopPolicy::default()
    };
    let (exit, step) = vm.stop(policy).await.unwrap();
    assert_eq!(step, StopStep::Sigterm, "{exit}");
    assert!(!fx.path("esc.sock").exists());
}

#[tokio::test]
async fn config_file_boot_without_api() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("from config\n", Then::Reset);
    let config = fx.path("vm.json");
    std::fs::write(
        &config,
        json!({"boot-source": boot_source(&kernel), "machine-config": machine(16), "drives": []})
            .to_string(),
    )
    .unwrap();
    let mut options = fx.options("cfg");
    options.api_socket = None;
    options.config_file = Some(config);
    let mut vm = firecracker_api::Vmm::spawn(options).await.unwrap();
    let exit = vm.wait().await.unwrap();
    let log = std::fs::read_to_string(fx.path("cfg.log")).unwrap();
    assert_eq!(exit, VmmExit::Exited(0), "{log}");
    assert_eq!(fx.serial("cfg"), "from config\n");
}

#[tokio::test]
async fn a_jailed_vm_boots() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("jailed hello\n", Then::Reset);
    let base = fx.path("jail");
    std::fs::create_dir(&base).unwrap();
    let mut options = fx.options("jailed1");
    options.jailer = Some(firecracker_api::JailerOptions {
        jailer: fx.jailer.clone(),
        chroot_base: base.clone(),
        uid: 65534,
        gid: 65534,
        cgroup_version: 2,
        netns: None,
        parent_cgroup: None,
        cgroups: vec![],
        new_pid_ns: false,
    });
    let mut vm = firecracker_api::Vmm::spawn(options).await.unwrap();
    vm.wait_ready(Duration::from_secs(5)).await.unwrap();
    let inside = vm.jail().unwrap().stage(&kernel, "vmlinux").unwrap();
    let api = vm.client().unwrap();
    boot(&api, &inside).await;
    assert_eq!(vm.wait().await.unwrap(), VmmExit::Exited(0));
    assert_eq!(fx.serial("jailed1"), "jailed hello\n");
    vm.stop(StopPolicy::default()).await.unwrap();
    assert_eq!(
        std::fs::read_dir(base.join("firecracker")).unwrap().count(),
        0,
        "jail removed"
    );
}

#[tokio::test]
async fn a_vmm_rejoined_after_detach_is_stopped_through_its_pidfd() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("detached\n", Then::Halt);
    let vm = fx.spawn("det").await;
    let api = vm.client().unwrap();
    boot(&api, &kernel).await;
    let pid = vm.detach();
    let start_time = firecracker_api::attach::start_time(pid).unwrap();
    let mut again = firecracker_api::Vmm::attach(firecracker_api::AttachOptions {
        pid,
        start_time,
        id: "det".into(),
        api_socket: Some(fx.path("det.sock")),
        log_path: fx.path("det.log"),
        extra_sockets: vec![],
    })
    .unwrap()
    .expect("still running");
    assert_eq!(
        again
            .client()
            .unwrap()
            .describe_instance()
            .await
            .unwrap()
            .state,
        InstanceInfoState::Running
    );
    let (exit, step) = again.stop(StopPolicy::default()).await.unwrap();
    assert_eq!(step, StopStep::Sigterm, "{exit}");
    for _ in 0..100 {
        if !process_exists(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!process_exists(pid), "reaped by tokio's orphan reaper");
    assert!(!fx.path("det.sock").exists());
}

/// Prints, as the median of 20: spawn to API ready, and spawn to InstanceStart
/// accepted. A measurement, not a timed test: run it with
/// `cargo test --release --test real_vmm -- --ignored --nocapture measure_startup`
/// in `crates/firecracker-api`.
#[tokio::test]
#[ignore = "a measurement; run on demand"]
async fn measure_startup() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("m\n", Then::Reset);
    let (mut ready, mut started) = (Vec::new(), Vec::new());
    for i in 0..20 {
        let id = format!("m{i}");
        let t0 = std::time::Instant::now();
        let mut vm = firecracker_api::Vmm::spawn(fx.options(&id)).await.unwrap();
        vm.wait_ready(Duration::from_secs(5)).await.unwrap();
        ready.push(t0.elapsed());
        let api = vm.client().unwrap();
        api.put_guest_boot_source(&boot_source(&kernel))
            .await
            .unwrap();
        api.put_machine_configuration(&machine(16)).await.unwrap();
        api.instance_start().await.unwrap();
        started.push(t0.elapsed());
        vm.wait().await.unwrap();
        vm.stop(StopPolicy::default()).await.unwrap();
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "spawn -> API ready: median {:?}; spawn -> InstanceStart accepted: median {:?} (n=20)",
        median(&mut ready),
        median(&mut started)
    );
}

#[tokio::test]
async fn descriptors_the_caller_left_inheritable_do_not_reach_the_vmm() {
    use std::os::fd::AsRawFd;
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let secret = std::fs::File::create(fx.path("secret")).unwrap();
    // SAFETY: fcntl on a descriptor this test owns; clears close-on-exec.
    unsafe { libc::fcntl(secret.as_raw_fd(), libc::F_SETFD, 0) };
    let mut vm = firecracker_api::Vmm::spawn(fx.options("fds"))
        .await
        .unwrap();
    vm.wait_ready(std::time::Duration::from_secs(5))
        .await
        .unwrap();
    let fds = testkit::open_files(vm.pid());
    assert!(!fds.is_empty(), "no descriptors read");
    assert!(
        !fds.iter().any(|target| target.ends_with("secret")),
        "{fds:?}"
    );
    vm.stop(firecracker_api::StopPolicy::default())
        .await
        .unwrap();
}
