//! [`ExecutorConfig`]: how an executor is set up, with defaults that
//! protect the host.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use firecracker_api::StopPolicy;

use crate::launch::LaunchHook;
use crate::resources::HostLimits;
use crate::state_dir::{default_data_root, default_root, StateDirError};
pub use crate::validate::PathPolicy;
use crate::validate::{OpenHook, DEFAULT_VALIDATION_TIMEOUT};

/// How an executor is set up. `Default` gives the documented defaults.
///
/// ```
/// use std::time::Duration;
/// let config = fcexec::ExecutorConfig {
///     max_output: 64 << 20,                               // 64 MiB per execution
///     default_timeout: Some(Duration::from_secs(3600)), // an hour unless the request says
///     ..fcexec::ExecutorConfig::default()
/// };
/// assert_eq!(config.result_output, 1 << 20);
/// ```
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Root of the runtime directory (lock, sockets, VM files); default
    /// `/run/fcexec` (root) or `$XDG_RUNTIME_DIR/fcexec`.
    pub state_root: Option<PathBuf>,
    /// Root of the data directory (records, results, output: what grows and
    /// must survive a reboot); default `state_root` when that is given, else
    /// `/var/lib/fcexec` (root) or `$XDG_STATE_HOME/fcexec`.
    pub data_root: Option<PathBuf>,
    /// The firecracker binary; default `$FIRECRACKER_BIN`, then `firecracker` on `PATH`.
    pub firecracker: Option<PathBuf>,
    /// How cancel, remove and cleanup stop a VM.
    pub stop_policy: StopPolicy,
    /// How long a new VMM gets to start its guest.
    pub ready_timeout: Duration,
    /// How long a guest gets to power off after its agent reported the end.
    pub after_exit_grace: Duration,
    /// The host's CPUs and memory; default: detected.
    pub host_limits: Option<HostLimits>,
    /// The most output one execution may produce (stdout, stderr and
    /// console together, in bytes); past it the VM is stopped and the
    /// execution fails, keeping what was captured. Default 1 GiB.
    pub max_output: u64,
    /// The time limit of an execution whose request gives no `timeout_ms`;
    /// default none.
    pub default_timeout: Option<Duration>,
    /// The memory all live VMs may take together, MiB; default: the host's
    /// memory less a reserve (see [`ExecutorConfig::default_memory_budget`]).
    pub memory_budget_mib: Option<u64>,
    /// The most live executions at once; default 4096.
    pub max_live: usize,
    /// The most bytes of each stream a result carries (its tail); the rest
    /// stays available through `logs`. Default 1 MiB.
    pub result_output: u64,
    /// How long a finished execution is kept when its request gives no
    /// `persist_logs_duration`; default: until removed.
    pub default_retention: Option<Duration>,
    /// Watches (and, in tests, fails) each launch step.
    pub launch_hook: Option<Arc<dyn LaunchHook>>,
    /// The host directories a request's kernel, initrd, root file system
    /// and volumes may come from (resolved paths); default: any directory.
    /// A node that takes requests from others should restrict it; `fcexec
    /// doctor` warns while it allows everything.
    pub path_policy: PathPolicy,
    /// The longest the validation of one request may take (it looks at host
    /// files, which a hung file system can block); past it the request is
    /// refused naming the field being checked. Default 10 s.
    pub validation_timeout: Duration,
    /// Protocol 2: how often the agent sends a heartbeat (told to it on the
    /// config drive); zero turns heartbeats off. Default 1 s.
    pub heartbeat_interval: Duration,
    /// Protocol 2: how long a connected agent may stay silent (no frame at
    /// all) before the execution fails as hung. Default 5 s; unused while
    /// `heartbeat_interval` is zero.
    pub heartbeat_timeout: Duration,
    /// Protocol 2: how long a workload gets to stop after a cancel before
    /// its agent kills it. Default 5 s.
    pub cancel_grace: Duration,
    /// fcexec's guest agent binary (static, for the guest), booted from an
    /// initrd for requests that give a `command`; default
    /// `$FCEXEC_AGENT_BIN`, then `fcexec-agent` beside the running program,
    /// then on `PATH`.
    pub agent_binary: Option<PathBuf>,
    /// The most bytes of built images the image cache
    /// (`<data root>/.cache/images`, for requests that give an `image`)
    /// keeps: past it the least recently used images are evicted, never
    /// one an execution is copying. Default 10 GiB; `None`: no limit.
    pub image_cache_limit: Option<u64>,
    /// Execution networking: the address pool, egress (NAT through the
    /// host's default route, on by default) and its allow list, DNS. An
    /// execution gets a network when its request has `ports_to_bind` or
    /// `gateway_ip` or sets `network: true`, or by `network_by_default`.
    /// `None` turns networking off (such requests are refused). Each
    /// executor on a host needs a pool of its own.
    pub network: Option<fcexec_network::NetworkConfig>,
    /// Give every execution a network unless its request says `network:
    /// false`. Default off.
    pub network_by_default: bool,
    /// Jailing: every VMM under Firecracker's jailer with its own uid,
    /// chroot, PID namespace and cgroup limits. On by default when running
    /// as root; see [`crate::jail`].
    pub jail: crate::jail::JailSettings,
    /// Test seam: called before each host file is opened during
    /// validation (see [`crate::validate::OpenHook`]); a test blocks in it
    /// to stand in for a file system that does not answer.
    #[doc(hidden)]
    pub validation_hook: Option<OpenHook>,
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            state_root: None,
            data_root: None,
            firecracker: None,
            stop_policy: StopPolicy::default(),
            ready_timeout: Duration::from_secs(10),
            after_exit_grace: Duration::from_secs(2),
            host_limits: None,
            max_output: 1 << 30,
            default_timeout: None,
            memory_budget_mib: None,
            max_live: 4096,
            result_output: 1 << 20,
            default_retention: None,
            launch_hook: None,
            path_policy: PathPolicy::default(),
            validation_timeout: DEFAULT_VALIDATION_TIMEOUT,
            heartbeat_interval: Duration::from_secs(1),
            heartbeat_timeout: Duration::from_secs(5),
            cancel_grace: Duration::from_secs(5),
            agent_binary: None,
            image_cache_limit: Some(10 << 30),
            network: Some(fcexec_network::NetworkConfig::default()),
            network_by_default: false,
            jail: crate::jail::JailSettings::default(),
            validation_hook: None,
        }
    }
}

impl ExecutorConfig {
    /// The runtime and data roots this configuration names (see the fields).
    pub fn roots(&self) -> Result<(PathBuf, PathBuf), StateDirError> {
        let run = match &self.state_root {
            Some(root) => root.clone(),
            None => default_root()?,
        };
        let data = match (&self.data_root, &self.state_root) {
            (Some(data), _) => data.clone(),
            (None, Some(root)) => root.clone(),
            (None, None) => default_data_root()?,
        };
        Ok((run, data))
    }

    /// The default memory budget for a host with `host_mib` MiB: what it
    /// has less a reserve for itself of a tenth, at least 512 MiB.
    pub fn default_memory_budget(host_mib: u64) -> u64 {
        let reserve = (host_mib / 10).max(512);
        host_mib.saturating_sub(reserve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_keeps_a_reserve() {
        assert_eq!(ExecutorConfig::default_memory_budget(24_000), 21_600);
        assert_eq!(ExecutorConfig::default_memory_budget(2048), 1536);
        assert_eq!(ExecutorConfig::default_memory_budget(256), 0);
    }
}
