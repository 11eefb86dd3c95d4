//! One method per operation of Firecracker's API, named after the spec's
//! `operationId`, plus a few shorthands (`instance_start`, `pause`, ...).
//!
//! Ids in paths are checked the way Firecracker checks them before any
//! request is sent.

use hyper::Method;

use crate::client::{check_id, ApiError, Client};
use crate::models::*;

impl Client {
    /// Returns general information about the instance.
    pub async fn describe_instance(&self) -> Result<InstanceInfo, ApiError> {
        self.call(Method::GET, "/", None::<&()>).await
    }

    /// Runs a synchronous action (InstanceStart, SendCtrlAltDel, FlushMetrics).
    pub async fn create_sync_action(&self, body: &InstanceActionInfo) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/actions", Some(body)).await
    }

    /// Returns the balloon device's configuration.
    pub async fn describe_balloon_config(&self) -> Result<Balloon, ApiError> {
        self.call(Method::GET, "/balloon", None::<&()>).await
    }

    /// Creates or updates the balloon device (pre-boot).
    pub async fn put_balloon(&self, body: &Balloon) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/balloon", Some(body)).await
    }

    /// Updates the balloon's target size (post-boot).
    pub async fn patch_balloon(&self, body: &BalloonUpdate) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/balloon", Some(body)).await
    }

    /// Returns the balloon's statistics.
    pub async fn describe_balloon_stats(&self) -> Result<BalloonStats, ApiError> {
        self.call(Method::GET, "/balloon/statistics", None::<&()>)
            .await
    }

    /// Updates the balloon statistics polling interval (post-boot).
    pub async fn patch_balloon_stats_interval(
        &self,
        body: &BalloonStatsUpdate,
    ) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/balloon/statistics", Some(body))
            .await
    }

    /// Starts free page hinting (post-boot).
    pub async fn start_balloon_hinting(&self, body: &BalloonStartCmd) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/balloon/hinting/start", Some(body))
            .await
    }

    /// Returns the free page hinting status.
    pub async fn describe_balloon_hinting(&self) -> Result<BalloonHintingStatus, ApiError> {
        self.call(Method::GET, "/balloon/hinting/status", None::<&()>)
            .await
    }

    /// Stops free page hinting (post-boot).
    pub async fn stop_balloon_hinting(&self) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/balloon/hinting/stop", None::<&()>)
            .await
    }

    /// Sets the kernel, initrd and boot arguments (pre-boot).
    pub async fn put_guest_boot_source(&self, body: &BootSource) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/boot-source", Some(body))
            .await
    }

    /// Sets a custom CPU template (pre-boot).
    pub async fn put_cpu_configuration(&self, body: &CpuConfig) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/cpu-config", Some(body))
            .await
    }

    /// Creates or updates a drive (pre-boot).
    pub async fn put_guest_drive_by_id(
        &self,
        drive_id: &str,
        body: &Drive,
    ) -> Result<(), ApiError> {
        check_id("drive_id", drive_id)?;
        self.call_empty(Method::PUT, &format!("/drives/{}", drive_id), Some(body))
            .await
    }

    /// Updates a drive's backing file or rate limiter (post-boot).
    pub async fn patch_guest_drive_by_id(
        &self,
        drive_id: &str,
        body: &PartialDrive,
    ) -> Result<(), ApiError> {
        check_id("drive_id", drive_id)?;
        self.call_empty(Method::PATCH, &format!("/drives/{}", drive_id), Some(body))
            .await
    }

    /// Creates or updates a pmem device (pre-boot).
    pub async fn put_guest_pmem_by_id(&self, id: &str, body: &Pmem) -> Result<(), ApiError> {
        check_id("id", id)?;
        self.call_empty(Method::PUT, &format!("/pmem/{}", id), Some(body))
            .await
    }

    /// Updates a pmem device's rate limiter (post-boot).
    pub async fn patch_guest_pmem_by_id(
        &self,
        id: &str,
        body: &PartialPmem,
    ) -> Result<(), ApiError> {
        check_id("id", id)?;
        self.call_empty(Method::PATCH, &format!("/pmem/{}", id), Some(body))
            .await
    }

    /// Configures Firecracker's logger (pre-boot).
    pub async fn put_logger(&self, body: &Logger) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/logger", Some(body)).await
    }

    /// Returns the machine configuration.
    pub async fn get_machine_configuration(&self) -> Result<MachineConfiguration, ApiError> {
        self.call(Method::GET, "/machine-config", None::<&()>).await
    }

    /// Sets the machine configuration (pre-boot).
    pub async fn put_machine_configuration(
        &self,
        body: &MachineConfiguration,
    ) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/machine-config", Some(body))
            .await
    }

    /// Partially updates the machine configuration (pre-boot).
    pub async fn patch_machine_configuration(
        &self,
        body: &MachineConfiguration,
    ) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/machine-config", Some(body))
            .await
    }

    /// Configures the metrics sink (pre-boot).
    pub async fn put_metrics(&self, body: &Metrics) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/metrics", Some(body)).await
    }

    /// Replaces the MMDS data store.
    pub async fn put_mmds(&self, body: &MmdsContentsObject) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/mmds", Some(body)).await
    }

    /// Merges into the MMDS data store (JSON merge patch).
    pub async fn patch_mmds(&self, body: &MmdsContentsObject) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/mmds", Some(body)).await
    }

    /// Returns the MMDS data store.
    pub async fn get_mmds(&self) -> Result<serde_json::Value, ApiError> {
        self.call(Method::GET, "/mmds", None::<&()>).await
    }

    /// Configures MMDS (pre-boot).
    pub async fn put_mmds_config(&self, body: &MmdsConfig) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/mmds/config", Some(body))
            .await
    }

    /// Creates the virtio-rng device (pre-boot).
    pub async fn put_entropy_device(&self, body: &EntropyDevice) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/entropy", Some(body)).await
    }

    /// Configures the serial console's output (pre-boot).
    pub async fn put_serial_device(&self, body: &SerialDevice) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/serial", Some(body)).await
    }

    /// Configures the hotpluggable memory device (pre-boot).
    pub async fn put_memory_hotplug(&self, body: &MemoryHotplugConfig) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/hotplug/memory", Some(body))
            .await
    }

    /// Changes the hotplugged memory size (post-boot).
    pub async fn patch_memory_hotplug(
        &self,
        body: &MemoryHotplugSizeUpdate,
    ) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/hotplug/memory", Some(body))
            .await
    }

    /// Returns the hotpluggable memory device's status.
    pub async fn get_memory_hotplug(&self) -> Result<MemoryHotplugStatus, ApiError> {
        self.call(Method::GET, "/hotplug/memory", None::<&()>).await
    }

    /// Creates a network interface (pre-boot).
    pub async fn put_guest_network_interface_by_id(
        &self,
        iface_id: &str,
        body: &NetworkInterface,
    ) -> Result<(), ApiError> {
        check_id("iface_id", iface_id)?;
        self.call_empty(
            Method::PUT,
            &format!("/network-interfaces/{}", iface_id),
            Some(body),
        )
        .await
    }

    /// Updates a network interface's rate limiters (post-boot).
    pub async fn patch_guest_network_interface_by_id(
        &self,
        iface_id: &str,
        body: &PartialNetworkInterface,
    ) -> Result<(), ApiError> {
        check_id("iface_id", iface_id)?;
        self.call_empty(
            Method::PATCH,
            &format!("/network-interfaces/{}", iface_id),
            Some(body),
        )
        .await
    }

    /// Creates a snapshot of a paused microVM.
    pub async fn create_snapshot(&self, body: &SnapshotCreateParams) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/snapshot/create", Some(body))
            .await
    }

    /// Loads a snapshot into a fresh VMM (pre-boot).
    pub async fn load_snapshot(&self, body: &SnapshotLoadParams) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/snapshot/load", Some(body))
            .await
    }

    /// Returns the Firecracker version.
    pub async fn get_firecracker_version(&self) -> Result<FirecrackerVersion, ApiError> {
        self.call(Method::GET, "/version", None::<&()>).await
    }

    /// Pauses or resumes the microVM (post-boot).
    pub async fn patch_vm(&self, body: &Vm) -> Result<(), ApiError> {
        self.call_empty(Method::PATCH, "/vm", Some(body)).await
    }

    /// Returns the full VM configuration.
    pub async fn get_export_vm_config(&self) -> Result<FullVmConfiguration, ApiError> {
        self.call(Method::GET, "/vm/config", None::<&()>).await
    }

    /// Creates the vsock device (pre-boot).
    pub async fn put_guest_vsock(&self, body: &Vsock) -> Result<(), ApiError> {
        self.call_empty(Method::PUT, "/vsock", Some(body)).await
    }

    /// Boots the configured microVM.
    pub async fn instance_start(&self) -> Result<(), ApiError> {
        self.action(InstanceActionType::InstanceStart).await
    }

    /// Presses Ctrl+Alt+Del on the guest's i8042 keyboard.
    pub async fn send_ctrl_alt_del(&self) -> Result<(), ApiError> {
        self.action(InstanceActionType::SendCtrlAltDel).await
    }

    /// Flushes the metrics to their sink.
    pub async fn flush_metrics(&self) -> Result<(), ApiError> {
        self.action(InstanceActionType::FlushMetrics).await
    }

    /// Pauses the microVM.
    pub async fn pause(&self) -> Result<(), ApiError> {
        self.patch_vm(&Vm {
            state: VmState::Paused,
        })
        .await
    }

    /// Resumes a paused microVM.
    pub async fn resume(&self) -> Result<(), ApiError> {
        self.patch_vm(&Vm {
            state: VmState::Resumed,
        })
        .await
    }

    async fn action(&self, action_type: InstanceActionType) -> Result<(), ApiError> {
        self.create_sync_action(&InstanceActionInfo { action_type })
            .await
    }
}
