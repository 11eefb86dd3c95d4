//! Helpers for the real-VMM tests: a guest of a few bytes, and VMM setup.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use firecracker_api::{models, SpawnOptions, Vmm};

pub use testkit::tiny_guest::{tiny_guest, Then};

/// A temporary directory with a tiny guest kernel in it.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub firecracker: PathBuf,
    pub jailer: PathBuf,
}

impl Fixture {
    pub fn new(vmm: &testkit::Vmm) -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            firecracker: vmm.firecracker.clone(),
            jailer: vmm.jailer.clone(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn kernel(&self, message: &str, then: Then) -> PathBuf {
        let path = self.path("vmlinux");
        std::fs::write(&path, tiny_guest(message, then)).unwrap();
        path
    }

    pub fn options(&self, id: &str) -> SpawnOptions {
        SpawnOptions {
            firecracker: self.firecracker.clone(),
            id: id.to_string(),
            api_socket: Some(self.path(&format!("{id}.sock"))),
            config_file: None,
            metadata: None,
            serial_output: self.path(&format!("{id}.serial")),
            log_path: self.path(&format!("{id}.log")),
            extra_sockets: vec![],
            jailer: None,
            netns: None,
        }
    }

    pub async fn spawn(&self, id: &str) -> Vmm {
        let mut vmm = Vmm::spawn(self.options(id)).await.unwrap();
        vmm.wait_ready(Duration::from_secs(5)).await.unwrap();
        vmm
    }

    pub fn serial(&self, id: &str) -> String {
        std::fs::read_to_string(self.path(&format!("{id}.serial"))).unwrap_or_default()
    }
}

/// Configures a spawned VMM with `kernel` and 16 MiB, and starts it.
pub async fn boot(api: &firecracker_api::Client, kernel: &Path) {
    api.put_guest_boot_source(&boot_source(kernel))
        .await
        .unwrap();
    api.put_machine_configuration(&machine(16)).await.unwrap();
    api.instance_start().await.unwrap();
}

pub fn boot_source(kernel: &Path) -> models::BootSource {
    models::BootSource {
        kernel_image_path: kernel.display().to_string(),
        boot_args: Some("console=ttyS0".into()),
        initrd_path: None,
    }
}

pub fn machine(mem_mib: i64) -> models::MachineConfiguration {
    serde_json::from_value(serde_json::json!({"vcpu_count": 1, "mem_size_mib": mem_mib})).unwrap()
}

/// True while a process with this pid exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until the file exists and holds `needle`.
pub async fn wait_for_text(path: &Path, needle: &str) -> String {
    for _ in 0..500 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never contained {needle:?}", path.display());
}
