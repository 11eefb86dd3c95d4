//! What fcexec's guest agent (`fcexec-agent`) is told to do: the job as
//! JSON on the config drive, after its first sector (`spec=<bytes>` there
//! says how long it is; see `docs/guest-protocol.md`, "Config drive").
//!
//! Drives are named by their index among the VM's block devices, in drive
//! order: 0 the root file system, then the inputs, then the outputs.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;

use crate::validate::{DriveRole, ValidatedRequest};

/// The agent's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestJob {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// Environment variables, in order.
    pub env: Vec<(String, String)>,
    /// The working directory inside the root file system.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Who runs it: a name, `uid` or `uid:gid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Mount the root file system read-only.
    pub root_read_only: bool,
    /// Volumes to mount inside the root file system.
    pub volumes: Vec<Volume>,
    /// Scripts to run, in this order, before the command.
    pub provision_scripts: Vec<Script>,
    /// How long the command gets to stop after a cancel before it is killed.
    pub cancel_grace_ms: u64,
    /// The guest's network, when the execution has one (the kernel's `ip=`
    /// argument configures `eth0`; the agent gives the workload its DNS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<GuestNetwork>,
}

/// The guest's addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestNetwork {
    /// The guest's address with its prefix, such as `10.213.0.6/30`.
    pub address: String,
    /// The gateway.
    pub gateway: String,
    /// The DNS server.
    pub dns: String,
}

impl GuestNetwork {
    /// The addresses of `net`.
    pub fn of(net: &fcexec_network::ExecutionNetwork) -> GuestNetwork {
        GuestNetwork {
            address: format!("{}/{}", net.guest_ip, net.prefix_len),
            gateway: net.gateway.to_string(),
            dns: net.dns.to_string(),
        }
    }
}

/// A volume the agent mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    /// Index among the VM's block devices.
    pub drive: usize,
    /// Mount point inside the root file system.
    pub target: String,
    /// Mounted read-only (inputs always are).
    pub read_only: bool,
}

/// A provision script.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Script {
    /// Its name (from the request).
    pub name: String,
    /// Its bytes, standard base64.
    pub script_b64: String,
}

impl GuestJob {
    /// The job of `request`, when it gives a command; `cancel_grace` from
    /// the executor's configuration.
    pub fn of(request: &ValidatedRequest, cancel_grace: Duration) -> Option<GuestJob> {
        let command = request.command.as_ref()?;
        let volumes = request
            .drives
            .iter()
            .enumerate()
            .filter_map(|(drive, d)| match &d.role {
                DriveRole::Input { target, .. } | DriveRole::Output { target, .. } => {
                    Some(Volume {
                        drive,
                        target: target.clone(),
                        read_only: d.read_only,
                    })
                }
                DriveRole::RootFileSystem => None,
            })
            .collect();
        let root_read_only = request
            .drives
            .iter()
            .any(|d| d.role == DriveRole::RootFileSystem && d.read_only);
        let b64 = base64::engine::general_purpose::STANDARD;
        Some(GuestJob {
            command: command.argv.clone(),
            env: command.env.clone(),
            working_dir: command.working_dir.clone(),
            user: command.user.clone(),
            root_read_only,
            volumes,
            provision_scripts: request
                .provision_scripts
                .iter()
                .map(|(name, bytes)| Script {
                    name: name.clone(),
                    script_b64: b64.encode(bytes),
                })
                .collect(),
            cancel_grace_ms: cancel_grace.as_millis() as u64,
            network: None,
        })
    }

    /// The JSON written on the config drive.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, numbers and vectors cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
