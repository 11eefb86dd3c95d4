//! Planning: the VM's whole configuration as a value, from a validated
//! request. Nothing here touches the host; [`VmPlan::write`] puts the plan's
//! files in the execution's directory.
//!
//! The plan becomes Firecracker's `--config-file`, so the VMM boots the guest
//! as it starts, with no API round trips on the way; the API socket stays
//! open for pause, resume and Ctrl+Alt+Del.

use std::path::PathBuf;

use firecracker_api::models;
use serde_json::json;

use crate::config_drive::{
    write_config_drive, ConfigDriveError, Key, VsockSettings, CONFIG_DRIVE_ID,
};
use crate::spec::{Mode, Transport};
use crate::state_dir::ExecPaths;
use crate::validate::ValidatedRequest;

/// The guest CID of every VM's vsock device (each VM has its own device,
/// so they need not differ; 3 is the first CID a guest may have).
pub const GUEST_CID: u32 = 3;

/// The guest network interface's id (Firecracker's `iface_id`).
pub const IFACE_ID: &str = "eth0";

/// The kernel command line used when the request gives none.
pub const DEFAULT_KERNEL_ARGS: &str = "console=ttyS0 reboot=k panic=1";

/// The kernel command line for fcexec's guest agent when the request gives
/// none: quiet, since the console is a diagnostic log. The agent needs
/// `reboot=k` (its reboot makes Firecracker exit on x86) and `panic=1`,
/// which are added to a command line given without them.
pub const AGENT_KERNEL_ARGS: &str = "console=ttyS0 reboot=k panic=1 quiet";

/// What planning takes from the executor, beyond the request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlanSettings {
    /// How often an agent on vsock sends a heartbeat.
    pub heartbeat: std::time::Duration,
    /// How long fcexec's agent gives a cancelled command.
    pub cancel_grace: std::time::Duration,
    /// The initrd of fcexec's guest agent, for requests with a command.
    pub agent_initrd: Option<PathBuf>,
}

/// Everything the VMM is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct VmPlan {
    /// Kernel, initrd and command line.
    pub boot_source: models::BootSource,
    /// vCPUs and memory.
    pub machine: models::MachineConfiguration,
    /// Drives in the documented order, the config drive last in agent mode.
    pub drives: Vec<models::Drive>,
    /// MMDS contents, when given.
    pub mmds: Option<serde_json::Value>,
    /// Agent mode: what the config drive tells the agent.
    pub config_drive: Option<ConfigDrive>,
    /// Protocol 2: the vsock device, through which the agent connects.
    pub vsock: Option<models::Vsock>,
    /// The guest's network interface (`eth0`), when the execution is
    /// networked; MMDS (version 2) answers on it.
    pub network: Option<models::NetworkInterface>,
}

/// What the config drive tells the agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigDrive {
    /// The execution's key.
    pub key: Key,
    /// The job, when the request gives one.
    pub job: Option<String>,
    /// Protocol 2 settings; `None` for protocol 1 over the serial console.
    pub vsock: Option<VsockSettings>,
    /// fcexec's guest agent: the job it runs.
    pub guest_job: Option<crate::guest_job::GuestJob>,
}

impl VmPlan {
    /// Plans the VM of `request`, its files under `paths`, with the
    /// executor's `settings`.
    pub fn new(
        request: &ValidatedRequest,
        paths: &ExecPaths,
        key: Option<Key>,
        settings: &PlanSettings,
    ) -> VmPlan {
        let own_agent = request.command.is_some();
        let kernel_args = kernel_args(&request.kernel_args, own_agent);
        let heartbeat = settings.heartbeat;
        let mut drives: Vec<models::Drive> = request
            .drives
            .iter()
            .map(|d| models::Drive {
                rate_limiter: request.disk_limiter.clone(),
                ..drive(
                    &d.drive_id,
                    d.path.display().to_string(),
                    d.is_root_device,
                    d.read_only,
                )
            })
            .collect();
        let config_drive = match (request.mode, key) {
            (Mode::Agent, Some(key)) => {
                drives.push(drive(
                    CONFIG_DRIVE_ID,
                    paths.config_drive().display().to_string(),
                    false,
                    true,
                ));
                let vsock = (request.transport == Transport::Vsock).then(|| VsockSettings {
                    port: fcexec_guest_protocol::DEFAULT_PORT,
                    heartbeat_ms: u32::try_from(heartbeat.as_millis()).unwrap_or(u32::MAX),
                });
                Some(ConfigDrive {
                    key,
                    job: request.agent_job.clone(),
                    vsock,
                    guest_job: crate::guest_job::GuestJob::of(request, settings.cancel_grace),
                })
            }
            _ => None,
        };
        let vsock = config_drive
            .as_ref()
            .filter(|c| c.vsock.is_some())
            .map(|_| models::Vsock {
                guest_cid: GUEST_CID,
                uds_path: paths.vsock().display().to_string(),
                vsock_id: None,
            });
        VmPlan {
            boot_source: models::BootSource {
                kernel_image_path: request.kernel_image.display().to_string(),
                boot_args: Some(kernel_args),
                initrd_path: match own_agent {
                    true => settings.agent_initrd.as_ref(),
                    false => request.initrd.as_ref(),
                }
                .map(|p| p.display().to_string()),
            },
            machine: machine(request.vcpus, request.mem_mib),
            drives,
            mmds: request.mmds.clone(),
            config_drive,
            vsock,
            network: None,
        }
    }

    /// Attaches the execution's network: the interface on its TAP, MMDS
    /// version 2 on that interface, and the guest's address, gateway and
    /// DNS as the kernel's `ip=` argument (unless the request gave one) and
    /// in the agent's job.
    pub fn with_network(mut self, net: &fcexec_network::ExecutionNetwork) -> VmPlan {
        self.network = Some(models::NetworkInterface {
            guest_mac: Some(net.guest_mac.clone()),
            host_dev_name: net.tap.clone(),
            iface_id: IFACE_ID.to_string(),
            mtu: None,
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        });
        if let Some(args) = self.boot_source.boot_args.as_mut() {
            if !args.split_whitespace().any(|a| a.starts_with("ip=")) {
                args.push(' ');
                args.push_str(&net.kernel_ip_arg());
            }
        }
        if let Some(job) = self
            .config_drive
            .as_mut()
            .and_then(|c| c.guest_job.as_mut())
        {
            job.network = Some(crate::guest_job::GuestNetwork::of(net));
        }
        self
    }

    /// The `--config-file` JSON.
    pub fn config_json(&self) -> serde_json::Value {
        let mut config = json!({
            "boot-source": self.boot_source,
            "machine-config": self.machine,
            "drives": self.drives,
        });
        if let Some(vsock) = &self.vsock {
            config["vsock"] = json!(vsock);
        }
        if let Some(interface) = &self.network {
            config["network-interfaces"] = json!([interface]);
            config["mmds-config"] = json!(models::MmdsConfig {
                version: Some(models::MmdsConfigVersion::V2),
                network_interfaces: vec![interface.iface_id.clone()],
                ipv4_address: None,
                imds_compat: None,
            });
        }
        config
    }

    /// The port the agent connects to, when it reports over vsock.
    pub fn agent_port(&self) -> Option<u32> {
        self.config_drive.as_ref()?.vsock.map(|v| v.port)
    }

    /// Writes the config file, the MMDS file and the config drive. Returns the
    /// MMDS file's path when there is one (for `--metadata`).
    pub fn write(&self, paths: &ExecPaths) -> Result<Option<PathBuf>, ConfigDriveError> {
        let io = |source| ConfigDriveError::Write {
            path: paths.vm_config(),
            source,
        };
        std::fs::write(paths.vm_config(), self.config_json().to_string()).map_err(io)?;
        if let Some(c) = &self.config_drive {
            let spec = c.guest_job.as_ref().map(|j| j.to_json());
            write_config_drive(
                &paths.config_drive(),
                &c.key,
                c.job.as_deref(),
                c.vsock,
                spec.as_deref(),
            )?;
        }
        match &self.mmds {
            Some(mmds) => {
                std::fs::write(paths.metadata(), mmds.to_string()).map_err(|source| {
                    ConfigDriveError::Write {
                        path: paths.metadata(),
                        source,
                    }
                })?;
                Ok(Some(paths.metadata()))
            }
            None => Ok(None),
        }
    }
}

/// The kernel command line: the request's, or the default; for fcexec's
/// agent with `reboot=k` and `panic=1` added when missing.
fn kernel_args(given: &str, own_agent: bool) -> String {
    let given = given.trim();
    match (given.is_empty(), own_agent) {
        (true, false) => DEFAULT_KERNEL_ARGS.to_string(),
        (true, true) => AGENT_KERNEL_ARGS.to_string(),
        (false, false) => given.to_string(),
        (false, true) => {
            let mut args = given.to_string();
            for (key, arg) in [("reboot=", "reboot=k"), ("panic=", "panic=1")] {
                if !given.split_whitespace().any(|a| a.starts_with(key)) {
                    args.push(' ');
                    args.push_str(arg);
                }
            }
            args
        }
    }
}

fn drive(id: &str, path: String, root: bool, read_only: bool) -> models::Drive {
    models::Drive {
        drive_id: id.to_string(),
        partuuid: None,
        is_root_device: root,
        cache_type: None,
        is_read_only: Some(read_only),
        path_on_host: Some(path),
        rate_limiter: None,
        io_engine: None,
        socket: None,
    }
}

fn machine(vcpus: u8, mem_mib: u32) -> models::MachineConfiguration {
    models::MachineConfiguration {
        cpu_template: None,
        smt: None,
        mem_size_mib: u64::from(mem_mib),
        track_dirty_pages: None,
        vcpu_count: vcpus,
        huge_pages: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::ExecutionRequest;
    use crate::resources::HostLimits;
    use crate::state_dir::StateDir;

    fn validated(dir: &std::path::Path, agent: bool) -> ValidatedRequest {
        let kernel = dir.join("vmlinux");
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[18] = 0x3E;
        std::fs::write(&kernel, elf).unwrap();
        std::fs::write(dir.join("rootfs"), [0u8; 512]).unwrap();
        std::fs::write(dir.join("in"), [0u8; 512]).unwrap();
        let request: ExecutionRequest = serde_json::from_value(json!({
            "job_id": "j", "execution_id": "e",
            "engine_spec": {"type": "firecracker", "params": {
                "kernel_image": kernel, "root_file_system": dir.join("rootfs"), "agent": agent,
                "mmds_message": "{\"a\": 1}"}},
            "inputs": [{"source": dir.join("in"), "target": "/mnt/in", "readonly": true}],
            "resources": {"cpu": {"cores": 2}, "ram": {"size": 64u64 << 20}}
        }))
        .unwrap();
        crate::validate::validate(
            &request,
            &HostLimits {
                cpus: 4,
                mem_mib: 1024,
            },
        )
        .unwrap()
    }

    #[test]
    fn agent_mode_plans_the_config_drive_last_and_the_default_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let state =
            StateDir::open(&dir.path().join("state"), &dir.path().join("state"), "x").unwrap();
        let paths = state.execution("e").unwrap();
        let key = Key::from_bytes([7; 16]);
        let settings = PlanSettings {
            heartbeat: std::time::Duration::from_millis(250),
            ..PlanSettings::default()
        };
        let plan = VmPlan::new(&validated(dir.path(), true), &paths, Some(key), &settings);
        let ids: Vec<&str> = plan.drives.iter().map(|d| d.drive_id.as_str()).collect();
        assert_eq!(ids, ["rootfs", "input0", CONFIG_DRIVE_ID]);
        assert_eq!(plan.drives[2].is_read_only, Some(true));
        assert_eq!(
            plan.boot_source.boot_args.as_deref(),
            Some(DEFAULT_KERNEL_ARGS)
        );
        assert_eq!(
            (plan.machine.vcpu_count, plan.machine.mem_size_mib),
            (2, 64)
        );
        let config = plan.config_json();
        assert_eq!(config["drives"][0]["is_root_device"], json!(true));
        assert_eq!(config["vsock"]["guest_cid"], json!(GUEST_CID));
        assert_eq!(plan.agent_port(), Some(1024));
        assert_eq!(config["machine-config"]["vcpu_count"], json!(2));
        paths.create().unwrap();
        let metadata = plan.write(&paths).unwrap();
        assert_eq!(metadata, Some(paths.metadata()));
        assert_eq!(
            std::fs::read_to_string(paths.metadata()).unwrap(),
            r#"{"a":1}"#
        );
        assert!(paths.config_drive().exists());
    }

    #[test]
    fn the_guest_agent_gets_its_initrd_its_job_and_the_kernel_arguments_it_needs() {
        assert_eq!(kernel_args("", true), AGENT_KERNEL_ARGS);
        assert_eq!(
            kernel_args("console=ttyS0", true),
            "console=ttyS0 reboot=k panic=1"
        );
        assert_eq!(kernel_args("reboot=t panic=5", true), "reboot=t panic=5");
        assert_eq!(kernel_args("console=ttyS0", false), "console=ttyS0");
        let dir = tempfile::tempdir().unwrap();
        let state =
            StateDir::open(&dir.path().join("state"), &dir.path().join("state"), "x").unwrap();
        let paths = state.execution("e").unwrap();
        let mut request = validated(dir.path(), true);
        request.command = Some(crate::spec::Command {
            argv: vec!["/bin/true".into()],
            ..Default::default()
        });
        request
            .provision_scripts
            .insert("01".into(), b"echo hi".to_vec());
        let settings = PlanSettings {
            agent_initrd: Some("/cache/agent.cpio".into()),
            cancel_grace: std::time::Duration::from_secs(3),
            ..PlanSettings::default()
        };
        let plan = VmPlan::new(&request, &paths, Some(Key::from_bytes([1; 16])), &settings);
        assert_eq!(
            plan.boot_source.initrd_path.as_deref(),
            Some("/cache/agent.cpio")
        );
        let job = plan.config_drive.unwrap().guest_job.unwrap();
        assert_eq!(job.command, ["/bin/true"]);
        assert_eq!(job.cancel_grace_ms, 3000);
        assert_eq!(job.provision_scripts[0].script_b64, "ZWNobyBoaQ==");
        assert_eq!(job.volumes.len(), 1);
        assert_eq!((job.volumes[0].drive, job.volumes[0].read_only), (1, true));
    }

    #[test]
    fn plain_mode_has_no_config_drive() {
        let dir = tempfile::tempdir().unwrap();
        let state =
            StateDir::open(&dir.path().join("state"), &dir.path().join("state"), "x").unwrap();
        let paths = state.execution("e").unwrap();
        let plan = VmPlan::new(
            &validated(dir.path(), false),
            &paths,
            None,
            &PlanSettings::default(),
        );
        assert_eq!(plan.drives.len(), 2);
        assert!(plan.config_drive.is_none());
        assert!(plan.config_json().get("vsock").is_none());
    }
}
