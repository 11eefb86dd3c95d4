//! Bad input against the real VMM: each case is a typed error naming its
//! cause, and leaves no process or file behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{boot, boot_source, machine, process_exists, Fixture, Then};
use firecracker_api::{ApiError, StopPolicy, Vmm, VmmError};

/// The files in the fixture directory, sorted.
fn files(fx: &Fixture) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_kernel_path_that_does_not_exist() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let mut vm = fx.spawn("nokernel").await;
    let api = vm.client().unwrap();
    let err = api
        .put_guest_boot_source(&boot_source(&fx.path("missing-vmlinux")))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().contains("kernel"), "{err}");
    let pid = vm.pid();
    vm.stop(StopPolicy::default()).await.unwrap();
    assert!(!process_exists(pid));
    assert_eq!(files(&fx), ["nokernel.log", "nokernel.serial"]);
}

#[tokio::test]
async fn a_kernel_that_is_not_an_elf() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.path("vmlinux");
    std::fs::write(&kernel, b"this is not an ELF kernel at all").unwrap();
    let mut vm = fx.spawn("notelf").await;
    let api = vm.client().unwrap();
    api.put_guest_boot_source(&boot_source(&kernel))
        .await
        .unwrap();
    api.put_machine_configuration(&machine(16)).await.unwrap();
    let err = api.instance_start().await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(err.to_string().to_lowercase().contains("kernel"), "{err}");
    vm.stop(StopPolicy::default()).await.unwrap();
    assert_eq!(files(&fx), ["notelf.log", "notelf.serial", "vmlinux"]);
}

#[tokio::test]
async fn a_socket_path_longer_than_the_kernel_allows() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let mut options = fx.options("long");
    options.api_socket = Some(fx.path(&"s".repeat(120)));
    let err = Vmm::spawn(options).await.unwrap_err();
    assert!(matches!(err, VmmError::SocketPathTooLong { .. }), "{err}");
    assert!(files(&fx).is_empty(), "{:?}", files(&fx));
}

#[tokio::test]
async fn a_call_to_a_vmm_that_has_exited() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let kernel = fx.kernel("bye\n", Then::Reset);
    let mut vm = fx.spawn("gone").await;
    let api = vm.client().unwrap();
    boot(&api, &kernel).await;
    vm.wait().await.unwrap();
    vm.stop(StopPolicy::default()).await.unwrap();
    let err = api.describe_instance().await.unwrap_err();
    assert!(matches!(err, ApiError::NotRunning { .. }), "{err}");
    assert!(err.to_string().contains("not running"), "{err}");
}

#[tokio::test]
async fn a_vmm_that_never_opens_its_socket() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    // A stand-in that starts but never listens: the deadline must fire.
    let silent = fx.path("silent-firecracker");
    std::fs::write(&silent, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&silent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut options = fx.options("silent");
    options.firecracker = silent;
    let mut vm = Vmm::spawn(options).await.unwrap();
    let started = std::time::Instant::now();
    let err = vm.wait_ready(Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, VmmError::NotReady { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    let pid = vm.pid();
    let (_, step) = vm.stop(StopPolicy::default()).await.unwrap();
    assert_eq!(step, firecracker_api::StopStep::Sigterm);
    assert!(!process_exists(pid));
    drop(vmm);
}

#[tokio::test]
async fn a_vmm_that_exits_before_it_is_ready() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let mut options = fx.options("early");
    // An unwritable log path makes firecracker exit at once.
    options.log_path = fx.path("no-such-dir/fc.log");
    let err = match Vmm::spawn(options).await {
        Ok(mut vm) => vm.wait_ready(Duration::from_secs(5)).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        matches!(err, VmmError::Prepare { .. } | VmmError::ExitedEarly { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_stale_socket_file_left_by_an_earlier_run() {
    let vmm = testkit::require_vmm!();
    let fx = Fixture::new(&vmm);
    let socket = fx.path("stale.sock");
    testkit::stale_socket(&socket);
    assert!(socket.exists());
    // The stale file is removed and the VMM starts...
    let mut vm = fx.spawn("stale").await;
    // ...but a live one is not taken over.
    let err = Vmm::spawn(fx.options("stale")).await.unwrap_err();
    assert!(matches!(err, VmmError::SocketInUse(_)), "{err}");
    vm.stop(StopPolicy::default()).await.unwrap();
    assert!(!socket.exists());
}
