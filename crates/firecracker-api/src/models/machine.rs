//! The machine itself: boot source, machine configuration, actions, run
//! state, instance information and version.

use serde::{Deserialize, Serialize};

use super::CpuTemplate;

/// Boot source descriptor (`PUT /boot-source`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BootSource {
    /// Kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path of the initrd image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<String>,
    /// Host path of the kernel image.
    pub kernel_image_path: String,
}

string_enum! {
    /// Huge pages backing guest memory.
    #[derive(Default)]
    MachineConfigurationHugePages {
        /// Regular pages.
        #[default]
        None = "None",
        /// 2 MiB hugetlbfs pages (`mem_size_mib` must then be a multiple of 2).
        Hugetlbfs2M = "2M",
    }
}

/// vCPUs, memory size, SMT, dirty page tracking, huge pages and CPU template
/// (`/machine-config`). Optional fields left out of a PUT are reset to their
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineConfiguration {
    /// Static CPU template (deprecated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<CpuTemplate>,
    /// Simultaneous multithreading (x86 only; default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    /// Guest memory size in MiB.
    pub mem_size_mib: u64,
    /// Dirty page tracking, needed for diff snapshots (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    /// Number of vCPUs, 1 to 32 (1 or even with SMT).
    pub vcpu_count: u8,
    /// Huge pages backing guest memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<MachineConfigurationHugePages>,
}

string_enum! {
    /// The synchronous action to perform (`PUT /actions`).
    InstanceActionType {
        /// Flush the metrics now.
        FlushMetrics = "FlushMetrics",
        /// Boot the microVM (pre-boot only).
        InstanceStart = "InstanceStart",
        /// Send Ctrl+Alt+Del to the guest (x86_64 only).
        SendCtrlAltDel = "SendCtrlAltDel",
    }
}

/// A synchronous action (`PUT /actions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceActionInfo {
    /// The action to perform.
    pub action_type: InstanceActionType,
}

impl InstanceActionInfo {
    /// The action `action_type`.
    pub const fn new(action_type: InstanceActionType) -> Self {
        Self { action_type }
    }
}

string_enum! {
    /// Requested running state of the microVM (`PATCH /vm`).
    VmState {
        /// Pause the vCPUs.
        Paused = "Paused",
        /// Resume the vCPUs.
        Resumed = "Resumed",
    }
}

/// The microVM running state (`PATCH /vm`), used around snapshots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vm {
    /// Requested state.
    pub state: VmState,
}

string_enum! {
    /// Current state of the Firecracker instance (read only).
    InstanceInfoState {
        /// Not booted yet.
        NotStarted = "Not started",
        /// Running.
        Running = "Running",
        /// Paused.
        Paused = "Paused",
    }
}

/// MicroVM instance information (`GET /`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceInfo {
    /// Application name.
    pub app_name: String,
    /// MicroVM / instance id.
    pub id: String,
    /// Current state.
    pub state: InstanceInfoState,
    /// Hypervisor build version.
    pub vmm_version: String,
}

/// The Firecracker version (`GET /version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirecrackerVersion {
    /// Firecracker build version, e.g. `"1.16.1"`.
    pub firecracker_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn machine_config_shape() {
        let m = MachineConfiguration {
            cpu_template: None,
            smt: Some(false),
            mem_size_mib: 256,
            track_dirty_pages: None,
            vcpu_count: 2,
            huge_pages: Some(MachineConfigurationHugePages::Hugetlbfs2M),
        };
        let v = serde_json::to_value(&m).unwrap();
        assert_eq!(
            v,
            json!({"smt": false, "mem_size_mib": 256, "vcpu_count": 2, "huge_pages": "2M"})
        );
        assert_eq!(
            serde_json::from_value::<MachineConfiguration>(v).unwrap(),
            m
        );
    }

    #[test]
    fn machine_config_from_firecracker() {
        let m: MachineConfiguration = serde_json::from_str(
            r#"{"vcpu_count":1,"mem_size_mib":128,"smt":false,"track_dirty_pages":false,"huge_pages":"None","cpu_template":"None"}"#,
        )
        .unwrap();
        assert_eq!(m.cpu_template, Some(CpuTemplate::None));
        assert_eq!(m.huge_pages, Some(MachineConfigurationHugePages::None));
        assert!(serde_json::from_str::<MachineConfiguration>(
            r#"{"vcpu_count":300,"mem_size_mib":1}"#
        )
        .is_err());
    }

    #[test]
    fn action_and_state() {
        let a = InstanceActionInfo::new(InstanceActionType::InstanceStart);
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"action_type": "InstanceStart"})
        );
        let i: InstanceInfo = serde_json::from_value(
            json!({"app_name": "Firecracker", "id": "anon", "state": "Not started", "vmm_version": "1.16.1"}),
        )
        .unwrap();
        assert_eq!(i.state, InstanceInfoState::NotStarted);
        let vm = Vm {
            state: VmState::Paused,
        };
        assert_eq!(serde_json::to_string(&vm).unwrap(), r#"{"state":"Paused"}"#);
    }
}
