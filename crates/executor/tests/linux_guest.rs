//! End to end with a real Linux guest: fcexec's agent from its initrd runs
//! a command in a busybox root file system and reports over vsock.
//!
//! No Linux kernel boots on the nested `/dev/kvm` of fcexec's development
//! machines, so this runs only when `FCEXEC_LINUX_KERNEL` names a vmlinux
//! that boots on this host (for example one of Firecracker's CI guest
//! kernels); otherwise it is reported as skipped. See the README, "Linux
//! guests", for how to run it.

mod common;

use common::Harness;
use serde_json::json;

#[tokio::test]
async fn a_linux_guest_runs_a_command_through_the_agent() {
    let Some(kernel) = std::env::var_os("FCEXEC_LINUX_KERNEL").filter(|k| !k.is_empty()) else {
        testkit::skip_gated(
            "FCEXEC_LINUX_KERNEL is not set (a vmlinux this host can boot; \
             no Linux guest boots on a nested /dev/kvm like this one)",
        );
        return;
    };
    let h = Harness::new(testkit::require_vmm!());
    let rootfs = h.path("busybox.ext4");
    testkit::linux_guest::busybox_rootfs(&rootfs, 64).unwrap();
    let config = fcexec::ExecutorConfig {
        agent_binary: Some(testkit::linux_guest::agent_binary().unwrap()),
        ..h.config()
    };
    let ex = fcexec::Executor::new("linux", config).await.unwrap();
    let mut request = h.request(
        "linux",
        json!({"agent": true, "kernel_image": kernel, "root_file_system": rootfs,
               "command": ["/bin/sh", "-c", "echo out; echo err >&2; id -u; exit 3"],
               "user": "1000:1000", "boot_timeout_ms": 60000}),
    );
    request.resources =
        serde_json::from_value(json!({"cpu": {"cores": 1}, "ram": {"size": 256u64 << 20}}))
            .unwrap();
    let result = ex.run(&request).await.unwrap();
    assert_eq!(result.exit_code, 3, "{result:?}");
    assert_eq!(result.stdout, "out\n1000\n");
    assert_eq!(result.stderr, "err\n");
}
