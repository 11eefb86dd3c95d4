//! Isolation of jailed VMMs: cgroup limits that honour fractional cores, and
//! a uid per execution.
//!
//! ```no_run
//! use fcexec_isolation::{vcpus_for, Cgroup, CgroupHost, CgroupLimits, UidPool, DEFAULT_PARENT};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 1.5 cores: 2 vCPUs, held to 150 ms of CPU per 100 ms.
//! let limits = CgroupLimits::for_vm(1.5, vcpus_for(1.5)?, 512)?;
//! let host = CgroupHost::detect()?; // v2, or v1 on hosts like ours
//! let uids = UidPool::with_defaults()?;
//! let lease = uids.allocate("exec-1")?;
//!
//! // Either the jailer places the VMM (what the executor does, see below) ...
//! let mut jailer_args = vec![
//!     "--uid".to_string(), lease.uid().to_string(),
//!     "--gid".to_string(), lease.gid().to_string(),
//!     "--cgroup-version".to_string(), host.version().number().to_string(),
//!     "--parent-cgroup".to_string(), DEFAULT_PARENT.to_string(),
//! ];
//! jailer_args.extend(limits.jailer_args(host.version()));
//! // ... or fcexec makes the cgroup and a child joins it before exec:
//! // let cgroup = Cgroup::create(&host, DEFAULT_PARENT, "exec-1", &limits)?;
//!
//! // Either way the cgroup is <mount>/fcexec/exec-1, read and removed alike.
//! let cgroup = Cgroup::open(&host, DEFAULT_PARENT, "exec-1")?;
//! println!("{} ns of CPU", cgroup.usage()?.cpu_usage_ns);
//! cgroup.remove(Duration::from_secs(2))?; // kills what is left
//! uids.release(&lease)?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - `limits.rs`: resources → [`CgroupLimits`] (pure arithmetic) and the
//!   jailer's `--cgroup` flags.
//! - `host.rs`: which hierarchy the host has ([`CgroupHost::detect`]), from
//!   `/proc/self/mountinfo`.
//! - `cgroup.rs`: one execution's [`Cgroup`]: create with limits, add or join
//!   processes, remove (killing leftovers), [`sweep`].
//! - `usage.rs`: reading a cgroup back as [`CgroupUsage`].
//! - `uid.rs`: [`UidPool`], uids leased through files in a lock directory.
//! - `error.rs`: [`CgroupError`].
//!
//! # Which way the executor should place VMMs in cgroups
//!
//! Let the jailer do it: pass `--cgroup-version`, `--parent-cgroup fcexec`
//! and [`CgroupLimits::jailer_args`]. Tried on this v1 host with jailer
//! v1.16.1: it creates `/sys/fs/cgroup/{cpu,memory,pids,cpuacct}/fcexec/<id>`
//! (only the hierarchies a `--cgroup` flag names), writes the values, and
//! firecracker (same pid, already under the jail's uid) is in them from its
//! first instruction. It never removes them, so the executor calls
//! [`Cgroup::open`]`(..).remove(..)` after the VMM exits and [`sweep`] at
//! start. Two limits of the jailer to respect: with `--cgroup-version 2` it
//! uses the *first* `cgroup2` mount and fails (`CgroupControllerUnavailable`)
//! when that mount lacks the controller, so take the version from
//! [`CgroupHost::detect`] rather than assuming 2; and on v1 it only joins
//! `cpuacct` if a `cpuacct.*` flag is given, which is why `jailer_args` adds
//! `cpuacct.usage=0`. Caveat found by the executor: with that flag jailer
//! 1.16 fails (EINVAL writing `cpuacct.usage`) once the parent has counted
//! any CPU time, and succeeds right after the parent's count is reset to 0
//! (the jailer seems to carry the parent's value into the new cgroup), so a
//! shared parent such as `fcexec` only works for the first VMM; the executor
//! drops the `cpuacct.*` flag and moves the VMM into `cpuacct` itself.
//! Without the jailer, [`Cgroup::create`] plus
//! [`CgroupJoin::join_current`] in a `pre_exec` hook gives the same
//! guarantee.
//!
//! On v1 a cgroup at `<mount>/fcexec` sits beside the executor's own cgroups,
//! not under them: a memory limit the executor's service runs under does not
//! cover its VMMs. Pass a parent below the service's own cgroup (such as
//! `system.slice/fcexec.service/vms` with `Delegate=yes` on v2) to keep them
//! inside it.

#![warn(missing_docs)]

mod cgroup;
mod error;
mod host;
mod limits;
mod uid;
mod usage;

pub use cgroup::{sweep, Cgroup, CgroupJoin, SweepOutcome, DEFAULT_PARENT, DEFAULT_REMOVE_GRACE};
pub use error::CgroupError;
pub use host::{
    parse_mountinfo, CgroupHost, CgroupMount, CgroupVersion, V1_CONTROLLERS, V2_CONTROLLERS,
};
pub use limits::{
    vcpus_for, vmm_overhead_mib, CgroupLimits, LimitsError, CPU_PERIOD_US, MAX_VCPUS,
    MIN_CPU_QUOTA_US, PIDS_MAX, VMM_OVERHEAD_FIXED_MIB, VMM_OVERHEAD_PER_GIB_MIB,
};
pub use uid::{
    find_overlap, UidError, UidLease, UidPool, DEFAULT_FIRST_UID, DEFAULT_LOCK_DIR,
    DEFAULT_UID_COUNT,
};
pub use usage::CgroupUsage;
