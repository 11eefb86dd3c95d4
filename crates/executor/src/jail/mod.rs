//! Jailed VMMs: every VMM under Firecracker's jailer, with a uid of its
//! own, a chroot, a new PID namespace, seccomp, and cgroup limits.
//!
//! The executor makes one [`Jailer`] when jailing is on (the default when
//! it runs as root; [`JailSettings::enabled`] turns it off). For each
//! execution, [`Jailer::prepare`] (during the launch's `WriteFiles` step):
//!
//! 1. leases a uid (and the gid of the same number) from the configured
//!    range through [`fcexec_isolation::UidPool`], keyed by the jail id;
//! 2. creates the chroot `<runtime dir>/.jail/firecracker/<jail id>/root` (a name no execution id can take);
//! 3. stages the plan's files into it ([`stage`]): read-only files are bind
//!    mounts of the user's own files, writable drives private copies in
//!    `<execution data dir>/jail/` owned by the jailed uid, and the plan is
//!    rewritten to the paths the VMM sees;
//! 4. returns the [`Isolation`] to record (before the spawn) and the
//!    jailer's options: `--uid/--gid`, `--chroot-base-dir`,
//!    `--new-pid-ns`, `--parent-cgroup` and one `--cgroup` per limit from
//!    [`fcexec_isolation::CgroupLimits::for_vm`] (cores as a CPU quota,
//!    guest memory plus the VMM's overhead, a pids limit).
//!
//! Networking: the jailer joins the VMM to a network namespace through
//! `--netns`; a launch with a namespace sets [`Prepared::options`]'
//! `netns` to its path before the spawn (nothing else changes here).
//!
//! The jail id is `<vmm id>-<8 hex digits>`, the digits a hash of the
//! executor's runtime directory, so executors sharing the host (and the
//! cgroup parent and uid leases) never collide and each sweeps only its own.
//!
//! [`release`] undoes it all from the record alone (unmount, delete the
//! jail and the copies, remove the cgroup, give back the uid): at the end
//! of an execution, after a failed launch, and from [`Jailer::sweep`] at
//! start-up for what a crash left.

mod release;
mod stage;

use std::path::{Path, PathBuf};

use fcexec_isolation::{
    Cgroup, CgroupHost, CgroupLimits, UidPool, DEFAULT_FIRST_UID, DEFAULT_LOCK_DIR, DEFAULT_PARENT,
    DEFAULT_UID_COUNT,
};
use firecracker_api::{Jail, JailerOptions};
use serde::{Deserialize, Serialize};

use crate::plan::VmPlan;
use crate::record::ExecutionRecord;
use crate::state_dir::{ExecPaths, StateDir};
use crate::validate::ValidatedRequest;

pub use release::{release, sweep_jails};

/// How (and whether) VMMs are jailed: part of [`crate::ExecutorConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct JailSettings {
    /// Run every VMM under the jailer. Default: on when the executor runs as
    /// root (the jailer needs root), off otherwise; `fcexec doctor` warns
    /// while it is off.
    pub enabled: bool,
    /// The `jailer` binary; default `$JAILER_BIN`, then `jailer` beside the
    /// firecracker binary, then on `PATH`.
    pub jailer: Option<PathBuf>,
    /// First uid (and gid) of the range VMMs run as.
    pub first_uid: u32,
    /// How many uids the range holds: the most jailed executions at once.
    pub uid_count: u32,
    /// Where uid leases are kept, shared by every executor on the host.
    pub uid_lock_dir: PathBuf,
    /// The cgroup under which each VMM's cgroup is made.
    pub cgroup_parent: String,
}

impl Default for JailSettings {
    fn default() -> Self {
        JailSettings {
            // SAFETY: geteuid has no preconditions.
            enabled: unsafe { libc::geteuid() } == 0,
            jailer: None,
            first_uid: DEFAULT_FIRST_UID,
            uid_count: DEFAULT_UID_COUNT,
            uid_lock_dir: PathBuf::from(DEFAULT_LOCK_DIR),
            cgroup_parent: DEFAULT_PARENT.to_string(),
        }
    }
}

/// What isolation an execution got, as its record keeps it: enough to show
/// it (`ps`, `inspect`) and to undo it after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Isolation {
    /// The jailer's `--id`: also the cgroup's name and the uid lease's key.
    pub jail_id: String,
    /// The uid the VMM runs as.
    pub uid: u32,
    /// The gid the VMM runs as.
    pub gid: u32,
    /// The chroot (the VMM's `/`), on the host.
    pub chroot: PathBuf,
    /// `<chroot base>/firecracker/<jail id>`: removed as a whole.
    pub instance_dir: PathBuf,
    /// The execution's private copies of writable drives.
    pub copies: PathBuf,
    /// The cgroup directories (one per hierarchy on cgroup v1).
    pub cgroups: Vec<PathBuf>,
    /// The parent cgroup (for removal).
    pub cgroup_parent: String,
    /// The limits written into the cgroup.
    pub limits: CgroupLimits,
    /// Whether the VMM runs in a PID namespace of its own.
    pub pid_namespace: bool,
    /// Whether files may be bind-mounted in the jail, so that its removal
    /// must unmount first (true until staging made none; records without
    /// the field: true).
    #[serde(default = "yes")]
    pub mounts: bool,
    /// The uid range and lease directory the uid came from (for release).
    pub uid_range: (u32, u32),
    /// Where the uid's lease is.
    pub uid_lock_dir: PathBuf,
}

/// Why a VMM cannot be jailed.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// No jailer binary.
    #[error("jailing is on but no jailer binary was found ({0}); install Firecracker's jailer beside firecracker, set JAILER_BIN, or turn jailing off")]
    NoJailer(String),
    /// The uid range or a lease.
    #[error("uid for the jailed VMM: {0}")]
    Uid(#[from] fcexec_isolation::UidError),
    /// cgroups.
    #[error("cgroup for the jailed VMM: {0}")]
    Cgroup(#[from] fcexec_isolation::CgroupError),
    /// The resources cannot become cgroup limits.
    #[error("cgroup limits: {0}")]
    Limits(#[from] fcexec_isolation::LimitsError),
    /// A file could not be staged into the jail.
    #[error("cannot stage {path} into the jail: {source}")]
    Stage {
        /// The host file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The executor's jailing: settings resolved once, at start-up.
#[derive(Debug)]
pub struct Jailer {
    /// The jailer binary.
    jailer: PathBuf,
    /// The firecracker binary the jailer copies in (names the jail's dirs).
    firecracker: PathBuf,
    /// `<runtime dir>/.jail`: the chroot base.
    base: PathBuf,
    /// Ends every jail id of this executor.
    suffix: String,
    /// The uids.
    uids: UidPool,
    /// The host's cgroup hierarchy.
    cgroups: CgroupHost,
    /// Settings as given.
    settings: JailSettings,
}

impl Jailer {
    /// The executor's jailer, or `None` when jailing is off.
    pub fn new(
        settings: &JailSettings,
        state: &StateDir,
        firecracker: &Path,
    ) -> Result<Option<Jailer>, JailError> {
        if !settings.enabled {
            return Ok(None);
        }
        let jailer = find_jailer(settings.jailer.as_deref(), firecracker)?;
        // Created with each jail, removed with the last one.
        let base = state.runtime_path().join(".jail");
        let uids = UidPool::new(
            settings.first_uid,
            settings.uid_count,
            settings.uid_lock_dir.clone(),
        )?;
        Ok(Some(Jailer {
            jailer,
            firecracker: firecracker.to_path_buf(),
            suffix: format!(
                "{:08x}",
                fnv1a(state.runtime_path().as_os_str().as_encoded_bytes())
            ),
            base,
            uids,
            cgroups: CgroupHost::detect()?,
            settings: settings.clone(),
        }))
    }

    /// The jailer binary.
    pub fn binary(&self) -> &Path {
        &self.jailer
    }

    /// The jail id of execution `id`: its VMM id and this executor's
    /// suffix; the VMM id shortened (see [`fit_vmm_id`]) when it is longer
    /// than the jailer allows or than the jailed API socket's path leaves
    /// room for, so that long execution ids (UUIDs under a long executor id
    /// or state directory) still run jailed.
    pub fn jail_id(&self, id: &str) -> String {
        let vmm = fit_vmm_id(&crate::launch::vmm_id(id), self.vmm_id_room());
        format!("{vmm}-{}", self.suffix)
    }

    /// How long the VMM-id part of a jail id may be: the jailer's 64
    /// characters, and what keeps `<chroot>/run/firecracker.socket` (the
    /// longest path inside a jail) within a Unix socket's limit.
    fn vmm_id_room(&self) -> usize {
        let options = self.options(0, 0, &ZERO);
        // The socket's path for the one-character jail id `x`, less the `x`,
        // plus the `-<suffix>` every jail id ends with.
        let socket = Jail::new(&options, &self.firecracker, "x")
            .host_path(Path::new(firecracker_api::process::JAILED_SOCKET));
        let fixed = socket.as_os_str().len() - 1 + 1 + self.suffix.len();
        firecracker_api::process::MAX_SOCKET_PATH
            .saturating_sub(fixed)
            .min(MAX_JAIL_ID - 1 - self.suffix.len())
    }

    /// True when `jail_id` is one of this executor's.
    pub fn owns(&self, jail_id: &str) -> bool {
        jail_id.ends_with(&format!("-{}", self.suffix))
    }

    /// The chroot of execution `id`.
    pub fn chroot(&self, id: &str) -> PathBuf {
        self.jail(id).root().to_path_buf()
    }

    fn options(&self, uid: u32, gid: u32, limits: &CgroupLimits) -> JailerOptions {
        let version = self.cgroups.version();
        JailerOptions {
            jailer: self.jailer.clone(),
            chroot_base: self.base.clone(),
            uid,
            gid,
            cgroup_version: version.number(),
            netns: None,
            parent_cgroup: Some(self.settings.cgroup_parent.clone()),
            // The jailer's flags cover every limit (`<file>=<value>` pairs);
            // not `cpuacct.usage=0`: jailer 1.16 first copies the parent's
            // value into the new cgroup, and a parent that has counted any
            // CPU time makes that write fail (EINVAL). [`Jailer::account`]
            // joins the VMM to `cpuacct` instead.
            cgroups: limits
                .jailer_args(version)
                .into_iter()
                .filter(|a| a != "--cgroup" && !a.starts_with("cpuacct."))
                .collect(),
            new_pid_ns: true,
        }
    }

    fn jail(&self, id: &str) -> Jail {
        Jail::new(
            &self.options(0, 0, &ZERO),
            &self.firecracker,
            &self.jail_id(id),
        )
    }

    /// The cgroup limits of `valid`'s VMM: its cores as a CPU quota, its
    /// memory plus the VMM's overhead, a pids limit.
    pub fn limits(valid: &ValidatedRequest) -> Result<CgroupLimits, JailError> {
        Ok(CgroupLimits::for_vm(
            valid.cores,
            valid.vcpus,
            valid.mem_mib,
        )?)
    }

    /// Jails the VMM of execution `id` (see the module doc): returns the
    /// jailer's options and what to record; `plan` is rewritten to the
    /// paths the VMM sees and `vm.json` written again. On failure nothing
    /// is left. Blocking.
    pub fn prepare(
        &self,
        id: &str,
        limits: CgroupLimits,
        paths: &ExecPaths,
        plan: &mut VmPlan,
    ) -> Result<Prepared, JailError> {
        let jail_id = self.jail_id(id);
        let lease = self.uids.allocate(&jail_id)?;
        let options = self.options(lease.uid(), lease.gid(), &limits);
        let jail = Jail::new(&options, &self.firecracker, &jail_id);
        let cgroup = Cgroup::open(&self.cgroups, &self.settings.cgroup_parent, &jail_id)?;
        let isolation = Isolation {
            jail_id: jail_id.clone(),
            uid: lease.uid(),
            gid: lease.gid(),
            chroot: jail.root().to_path_buf(),
            instance_dir: jail.instance_dir().to_path_buf(),
            copies: paths.dir().join("jail"),
            cgroups: cgroup.paths().into_iter().map(Path::to_path_buf).collect(),
            cgroup_parent: self.settings.cgroup_parent.clone(),
            limits,
            pid_namespace: options.new_pid_ns,
            mounts: true,
            uid_range: (self.settings.first_uid, self.settings.uid_count),
            uid_lock_dir: self.settings.uid_lock_dir.clone(),
        };
        // Retried once: the last jail's release may remove the empty base
        // directories just as this one is made.
        let staged = jail
            .prepare()
            .or_else(|_| jail.prepare())
            .map_err(|source| JailError::Stage {
                path: jail.root().to_path_buf(),
                source,
            })
            .and_then(|()| stage::stage(plan, paths, &isolation))
            .and_then(|staged| {
                std::fs::write(paths.vm_config(), plan.config_json().to_string())
                    .map(|()| staged)
                    .map_err(|source| JailError::Stage {
                        path: paths.vm_config(),
                        source,
                    })
            });
        let (copies, mounted) = match staged {
            Ok(staged) => (staged.copies, staged.mounted),
            Err(e) => {
                release(&isolation);
                return Err(e);
            }
        };
        let isolation = Isolation {
            mounts: mounted,
            ..isolation
        };
        tracing::info!(%id, jail_id, uid = isolation.uid, chroot = %isolation.chroot.display(), "jail prepared");
        Ok(Prepared {
            options,
            isolation,
            copies,
        })
    }

    /// On cgroup v1 with `cpuacct` mounted apart from `cpu` (where the
    /// jailer's flags do not place the VMM), moves the VMM `pid` into
    /// `cpuacct/<parent>/<jail id>` so its CPU time is counted from here
    /// on. Elsewhere the jailer already did. Blocking.
    pub fn account(&self, isolation: &Isolation, pid: u32) -> Result<(), JailError> {
        let CgroupHost::V1 { mounts } = &self.cgroups else {
            return Ok(());
        };
        let (Some(acct), cpu) = (mounts.get("cpuacct"), mounts.get("cpu")) else {
            return Ok(());
        };
        if cpu == Some(acct) {
            return Ok(());
        }
        let dir = acct.join(&isolation.cgroup_parent).join(&isolation.jail_id);
        let io = |source| JailError::Stage {
            path: dir.clone(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(io)?;
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(io)
    }

    /// Removes what a crash left of this executor's jails: jail
    /// directories, cgroups and uid leases of executions not in `live`
    /// (jail ids). Failures are logged.
    pub fn sweep(&self, live: &[String]) {
        sweep_jails(self, live);
    }
}

/// A jail made ready for one VMM.
#[derive(Debug)]
pub struct Prepared {
    /// The jailer's options.
    pub options: JailerOptions,
    /// What to record.
    pub isolation: Isolation,
    /// `(host image, private copy)` of each drive that got a copy: outputs
    /// are copied to `results_dir` from the copy.
    pub copies: Vec<(PathBuf, PathBuf)>,
}

impl Prepared {
    /// Records the jail in `record`, and points its outputs at the private
    /// copies the guest writes.
    pub fn record_in(&self, record: &mut ExecutionRecord) {
        for output in &mut record.outputs {
            if let Some((_, copy)) = self
                .copies
                .iter()
                .find(|(host, _)| host.as_path() == Path::new(&output.image))
            {
                output.image = copy.display().to_string();
            }
        }
        record.isolation = Some(self.isolation.clone());
    }
}

/// Releases a jail when dropped, unless kept: a launch that fails after
/// the jail was prepared leaves nothing behind.
#[derive(Debug, Default)]
pub struct JailGuard(Option<Isolation>);

impl JailGuard {
    /// Guards `isolation`.
    pub fn new(isolation: Option<Isolation>) -> JailGuard {
        JailGuard(isolation)
    }

    /// The launch succeeded: the execution's end releases the jail.
    pub fn keep(&mut self) {
        self.0 = None;
    }
}

impl Drop for JailGuard {
    fn drop(&mut self) {
        if let Some(isolation) = self.0.take() {
            release(&isolation);
        }
    }
}

/// Gives the socket the executor listens on for a jailed VMM (the agent's
/// vsock listener) to the jail's uid, which must be able to connect to it.
pub fn hand_over_socket(socket: &Path, isolation: &Isolation) -> std::io::Result<()> {
    std::os::unix::fs::chown(socket, Some(isolation.uid), Some(isolation.gid))
}

/// Limits used only to name paths (never written).
const ZERO: CgroupLimits = CgroupLimits {
    cpu_quota_us: 0,
    cpu_period_us: 0,
    memory_max_bytes: 0,
    pids_max: 0,
};

/// The jailer binary: configured, `$JAILER_BIN`, beside firecracker, on `PATH`.
fn find_jailer(configured: Option<&Path>, firecracker: &Path) -> Result<PathBuf, JailError> {
    let mut tried = Vec::new();
    let candidates = configured
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("JAILER_BIN").map(PathBuf::from))
        .chain(firecracker.parent().map(|d| d.join("jailer")))
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("jailer"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
        tried.push(candidate.display().to_string());
    }
    Err(JailError::NoJailer(format!("tried {}", tried.join(", "))))
}

/// serde's default for [`Isolation::mounts`].
fn yes() -> bool {
    true
}

/// The longest id the jailer accepts.
const MAX_JAIL_ID: usize = 64;

/// `vmm` when it fits in `room` characters (and does not end in `-`, which
/// the jail id's separator would hide); otherwise as much of its start as
/// fits with a hash of the whole, `<start>-<8 hex digits>`, so that two ids
/// sharing a long start still get jails of their own.
fn fit_vmm_id(vmm: &str, room: usize) -> String {
    if vmm.len() <= room && !vmm.ends_with('-') {
        return vmm.to_string();
    }
    let start: String = vmm.chars().take(room.saturating_sub(9)).collect();
    let hash = format!("{:08x}", fnv1a(vmm.as_bytes()));
    match start.trim_end_matches('-') {
        "" => hash,
        start => format!("{start}-{hash}"),
    }
}

/// FNV-1a, 32 bits: a stable hash for the jail id suffix.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_ids_that_fit_are_kept_and_long_ones_get_a_start_and_a_hash() {
        assert_eq!(fit_vmm_id("job-1", 20), "job-1");
        let uuid = "3f1c2a9e-7b4d-4c1e-9a2f-0d5e8b7c6a41";
        let fitted = fit_vmm_id(uuid, 24);
        assert_eq!(fitted.len(), 24, "{fitted}");
        assert!(fitted.starts_with("3f1c2a9e-7b4d-4"), "{fitted}");
        // Two ids sharing their start get different jails; the same id
        // always the same one.
        let other = "3f1c2a9e-7b4d-4c1e-9a2f-0d5e8b7c6a42";
        assert_ne!(fit_vmm_id(other, 24), fitted);
        assert_eq!(fit_vmm_id(uuid, 24), fitted);
        // An id ending in `-` is not confused with the same id without it.
        assert_ne!(fit_vmm_id("a-", 20), "a");
        assert_ne!(fit_vmm_id("a-", 20), fit_vmm_id("a", 20));
        // No room at all: the hash alone.
        assert_eq!(fit_vmm_id(uuid, 3).len(), 8);
    }

    #[test]
    fn the_hash_is_stable() {
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }
}
