//! The harness of the executor's real-VMM tests: a temporary state
//! directory, the test guest's kernel, a small root file system image, and
//! requests shaped as the node sends them.

#![allow(dead_code)]

pub mod oci;
pub mod outside;

use std::path::PathBuf;
use std::time::Duration;

use fcexec::{ExecutionRequest, Executor, ExecutorConfig, StopPolicy};
use serde_json::json;
use test_guest::Job;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    pub vmm: testkit::Vmm,
}

impl Harness {
    pub fn new(vmm: testkit::Vmm) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let kernel = test_guest::write_kernel(dir.path()).unwrap();
        let rootfs = dir.path().join("rootfs.img");
        std::fs::write(&rootfs, vec![0u8; 64 * 1024]).unwrap();
        Harness {
            dir,
            kernel,
            rootfs,
            vmm,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn state_root(&self) -> PathBuf {
        self.path("state")
    }

    pub fn config(&self) -> ExecutorConfig {
        ExecutorConfig {
            state_root: Some(self.state_root()),
            firecracker: Some(self.vmm.firecracker.clone()),
            stop_policy: StopPolicy {
                ctrl_alt_del: Some(Duration::from_millis(300)),
                sigterm: Duration::from_millis(500),
                sigkill: Duration::from_secs(5),
            },
            ..ExecutorConfig::default()
        }
    }

    pub async fn executor(&self, id: &str) -> Executor {
        Executor::new(id, self.config()).await.unwrap()
    }

    /// An agent-mode request running `job` in the test guest.
    pub fn agent(&self, id: &str, job: &Job) -> ExecutionRequest {
        self.request(
            id,
            json!({"agent": true, "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())}),
        )
    }

    /// A plain-mode request running `job` in the test guest.
    pub fn plain(&self, id: &str, job: &Job) -> ExecutionRequest {
        self.request(
            id,
            json!({"kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())}),
        )
    }

    /// A request with extra engine params merged in.
    pub fn request(&self, id: &str, extra: serde_json::Value) -> ExecutionRequest {
        let mut params = json!({
            "kernel_image": self.kernel,
            "root_file_system": self.rootfs,
        });
        if let (Some(p), Some(e)) = (params.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(json!({
            "job_id": format!("job-{id}"),
            "execution_id": id,
            "engine_spec": {"type": "firecracker", "params": params},
            "resources": {"cpu": {"cores": 1}, "ram": {"size": 32u64 << 20}},
        }))
        .unwrap()
    }
}

/// Jailing off: for tests that read the VMM's files (`vm.json`, its API
/// socket) at their unjailed host paths.
pub fn unjailed() -> fcexec::JailSettings {
    fcexec::JailSettings {
        enabled: false,
        ..fcexec::JailSettings::default()
    }
}

/// Waits until `f` holds, polling every 10 ms, at most `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

#[allow(unused_imports)]
pub use testkit::{files_under, firecracker_pids};

impl Drop for Harness {
    /// Executors let their VMs run on when dropped (for restart recovery), so
    /// a test that fails midway would leave them behind: kill whatever still
    /// runs from this harness's directory.
    fn drop(&mut self) {
        for pid in firecracker_pids(self.dir.path()) {
            // SAFETY: kill(2) of a firecracker process this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// What a running execution's VMM was handed: its `vm.json`, and the agent
/// job (JSON) from its config drive (`spec=<n>` bytes after byte 512).
pub fn vm_files(run_dir: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let vm = serde_json::from_slice(&std::fs::read(run_dir.join("vm.json")).unwrap()).unwrap();
    let drive = std::fs::read(run_dir.join("config.img")).unwrap();
    let text = String::from_utf8_lossy(&drive[..512]);
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("spec="))
        .expect("a spec line")
        .parse()
        .unwrap();
    let spec = serde_json::from_slice(&drive[512..512 + len]).unwrap();
    (vm, spec)
}

/// Cancels `id` and checks that its result says so.
pub async fn cancel_and_check(ex: &Executor, id: &str) {
    ex.cancel(id).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), ex.wait(id))
        .await
        .unwrap()
        .unwrap();
    assert!(result.error_msg.contains("cancelled"), "{result:?}");
}

/// Follows `id`'s logs until its output holds `want`; panics when the
/// execution ends first or 20 s pass.
pub async fn wait_for_output(ex: &Executor, id: &str, want: &str) {
    let mut logs = ex
        .logs(
            id,
            fcexec::LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let mut seen = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains(want) {
        let chunk = tokio::time::timeout_at(give_up, logs.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{id} did not write {want:?} in 20 s; it wrote {:?}",
                    String::from_utf8_lossy(&seen)
                )
            })
            .unwrap_or_else(|| panic!("{id} ended before writing {want:?}"))
            .unwrap();
        seen.extend_from_slice(&chunk.data);
    }
}
