//! Snapshot creation and loading (`/snapshot/create`, `/snapshot/load`).

use serde::{Deserialize, Serialize};

string_enum! {
    /// Kind of snapshot to create (default `Full`).
    #[derive(Default)]
    SnapshotCreateParamsSnapshotType {
        /// All guest memory.
        #[default]
        Full = "Full",
        /// Only the memory dirtied since the previous snapshot (needs dirty page tracking).
        Diff = "Diff",
    }
}

/// Parameters of `PUT /snapshot/create` (the microVM must be paused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotCreateParams {
    /// File that will receive the guest memory.
    pub mem_file_path: String,
    /// File that will receive the microVM state.
    pub snapshot_path: String,
    /// Kind of snapshot (full by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_type: Option<SnapshotCreateParamsSnapshotType>,
}

string_enum! {
    /// Where guest memory is loaded from.
    MemoryBackendBackendType {
        /// A memory file.
        File = "File",
        /// A userfaultfd handler listening on a Unix socket.
        Uffd = "Uffd",
    }
}

/// Backend serving guest memory on snapshot load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryBackend {
    /// Kind of backend.
    pub backend_type: MemoryBackendBackendType,
    /// `File`: the memory file; `Uffd`: the Unix socket of the page fault handler.
    pub backend_path: String,
}

/// New backing TAP device of a network interface on snapshot restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkOverride {
    /// Interface to modify.
    pub iface_id: String,
    /// New host device.
    pub host_dev_name: String,
}

/// New backing Unix socket of the vsock device on snapshot restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VsockOverride {
    /// New path of the backing Unix socket.
    pub uds_path: String,
}

/// Parameters of `PUT /snapshot/load`. Exactly one of `mem_backend` and
/// (deprecated) `mem_file_path` must be given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotLoadParams {
    /// Deprecated alias of `track_dirty_pages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_diff_snapshots: Option<bool>,
    /// Enable dirty page tracking (for later diff snapshots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Deprecated: the guest memory file; forbidden with `mem_backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_file_path: Option<String>,
    /// Backend serving guest memory; forbidden with `mem_file_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_backend: Option<MemoryBackend>,
    /// File holding the microVM state.
    pub snapshot_path: String,
    /// Resume the VM once loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_vm: Option<bool>,
    /// New host devices of network interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_overrides: Option<Vec<NetworkOverride>>,
    /// New Unix socket of the vsock device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsock_override: Option<VsockOverride>,
    /// x86_64 only: advance kvmclock by the wall-clock time elapsed since the
    /// snapshot (KVM_CLOCK_REALTIME); default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_realtime: Option<bool>,
}

impl SnapshotLoadParams {
    /// Load `snapshot_path` with guest memory from `mem_backend`; every other
    /// field unset.
    pub fn new(snapshot_path: impl Into<String>, mem_backend: MemoryBackend) -> Self {
        Self {
            enable_diff_snapshots: None,
            track_dirty_pages: None,
            mem_file_path: None,
            mem_backend: Some(mem_backend),
            snapshot_path: snapshot_path.into(),
            resume_vm: None,
            network_overrides: None,
            vsock_override: None,
            clock_realtime: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn load_with_mem_backend() {
        let mut p = SnapshotLoadParams::new(
            "/s/vm.state",
            MemoryBackend {
                backend_type: MemoryBackendBackendType::File,
                backend_path: "/s/vm.mem".into(),
            },
        );
        p.resume_vm = Some(true);
        p.network_overrides = Some(vec![NetworkOverride {
            iface_id: "eth0".into(),
            host_dev_name: "tap7".into(),
        }]);
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(
            v,
            json!({
                "mem_backend": {"backend_type": "File", "backend_path": "/s/vm.mem"},
                "snapshot_path": "/s/vm.state",
                "resume_vm": true,
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap7"}]
            })
        );
        assert_eq!(serde_json::from_value::<SnapshotLoadParams>(v).unwrap(), p);
    }

    #[test]
    fn create_shape() {
        let c = SnapshotCreateParams {
            mem_file_path: "/s/m".into(),
            snapshot_path: "/s/s".into(),
            snapshot_type: Some(SnapshotCreateParamsSnapshotType::Diff),
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"mem_file_path": "/s/m", "snapshot_path": "/s/s", "snapshot_type": "Diff"})
        );
        let bad = json!({"backend_type": "file", "backend_path": "/x"});
        assert!(serde_json::from_value::<MemoryBackend>(bad).is_err());
    }
}
