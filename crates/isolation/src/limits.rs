//! The limits one VMM's cgroup gets, computed from an execution's resources.
//!
//! Pure arithmetic, no file system: [`CgroupLimits::for_vm`] turns fractional
//! cores, the vCPU count and the guest's memory into a CPU quota, a memory
//! limit and a pids limit; [`CgroupLimits::jailer_args`] spells them as the
//! jailer's `--cgroup file=value` flags. Writing them into a cgroup is
//! `cgroup.rs`'s job.
//!
//! The rules:
//!
//! - **CPU.** A quota per period of [`CPU_PERIOD_US`] (100 ms):
//!   `quota = cores × period`, so 1.5 cores is 150 ms of CPU time per 100 ms,
//!   spread over however many threads want it. The guest can only use whole
//!   vCPUs, so it gets [`vcpus_for`]`(cores) = ceil(cores)` of them and the
//!   quota, not the vCPU count, is what enforces the fraction.
//! - **Memory.** Guest memory plus the VMM's own overhead
//!   ([`vmm_overhead_mib`]): the guest's pages are the VMM's anonymous memory,
//!   so a limit of exactly the guest size would OOM-kill the VMM as soon as the
//!   guest touched all of its RAM.
//! - **Pids.** [`PIDS_MAX`] tasks: enough for every thread Firecracker makes,
//!   few enough that nothing in the cgroup can fork-bomb the host.
//!
//! Swap is left to the host's policy (no `memory.swap.max` or
//! `memory.memsw.limit_in_bytes`): the memory limit bounds resident memory.

use serde::{Deserialize, Serialize};

use crate::host::CgroupVersion;

/// The CFS period, in microseconds: 100 ms, the kernel's default. Shorter
/// periods throttle more smoothly but cost more scheduler work; 100 ms is what
/// both cgroup versions start with and what `cpu.max` shows by default.
pub const CPU_PERIOD_US: u64 = 100_000;

/// The smallest quota the kernel accepts (1 ms); 0.01 cores at a 100 ms period.
pub const MIN_CPU_QUOTA_US: u64 = 1_000;

/// The most vCPUs Firecracker gives a guest.
pub const MAX_VCPUS: u8 = 32;

/// Fixed part of the VMM's memory overhead, in MiB.
///
/// Measured here: a firecracker process with a tiny guest has a resident set
/// of about 4 MiB (DESIGN.md). On top of that, charged to the same cgroup:
/// the static binary's pages (about 3 MiB of text), the API thread's and
/// vCPU threads' stacks, virtio queues and the block devices' I/O buffers,
/// socket buffers of the API and vsock sockets, and, on cgroup v2 (and v1
/// with kmem accounting), the KVM objects the kernel allocates for the VM
/// (vCPU state, the in-kernel irqchip). 64 MiB covers all of that with a wide
/// margin: an OOM kill of the VMM loses the whole execution, while a few MiB
/// of slack costs nothing. Page cache of the drives' backing files is charged
/// here too, but it is reclaimable, so it makes the kernel reclaim rather than
/// kill.
pub const VMM_OVERHEAD_FIXED_MIB: u32 = 64;

/// Part of the VMM's overhead that grows with guest memory, in MiB per GiB.
///
/// Once the guest touches its memory, the host keeps page tables for the VMM's
/// mapping of it (8 bytes per 4 KiB page: 2 MiB per GiB), KVM keeps its
/// second-level (EPT/NPT) tables (another 2 MiB per GiB) and its reverse map
/// (about 2 MiB per GiB): some 6 MiB per GiB. 16 MiB per GiB leaves room for
/// dirty-page bitmaps during snapshots and for 4 KiB mappings where huge pages
/// were expected.
pub const VMM_OVERHEAD_PER_GIB_MIB: u32 = 16;

/// The pids limit of one VMM's cgroup.
///
/// Firecracker runs one main thread (event loop and devices), one API thread
/// and one thread per vCPU, at most [`MAX_VCPUS`]: 34 at the very most. 64
/// leaves room for short-lived helpers and is still far from what a runaway
/// fork needs.
pub const PIDS_MAX: u32 = 64;

/// Why resources cannot become cgroup limits.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LimitsError {
    /// Cores is not a positive finite number.
    #[error("cpu cores {0} is not a positive number: give at least 0.01 cores")]
    CoresNotPositive(f64),
    /// Cores below 0.01: the quota would be under the kernel's 1 ms minimum.
    #[error(
        "cpu cores {cores} is a quota of {quota_us} µs per {CPU_PERIOD_US} µs, under the \
         kernel's minimum of {MIN_CPU_QUOTA_US} µs: give at least 0.01 cores"
    )]
    QuotaTooSmall {
        /// The cores asked for.
        cores: f64,
        /// The quota they make.
        quota_us: u64,
    },
    /// More cores than Firecracker has vCPUs for.
    #[error("cpu cores {cores} needs {needed} vCPUs, more than Firecracker's maximum of {MAX_VCPUS}: give at most {MAX_VCPUS} cores")]
    TooManyCores {
        /// The cores asked for.
        cores: f64,
        /// `ceil(cores)`.
        needed: f64,
    },
    /// The vCPU count is 0 or above Firecracker's maximum.
    #[error("{0} vCPUs is outside Firecracker's 1..={MAX_VCPUS}")]
    VcpusOutOfRange(u8),
    /// Fewer vCPUs than cores: the guest could never use its quota.
    #[error("cpu cores {cores} cannot be used by {vcpus} vCPUs: give at least {needed} vCPUs (ceil of the cores) or fewer cores")]
    FewerVcpusThanCores {
        /// The cores asked for.
        cores: f64,
        /// The vCPUs given.
        vcpus: u8,
        /// `ceil(cores)`.
        needed: u8,
    },
    /// No guest memory.
    #[error("guest memory of 0 MiB: give the guest at least 1 MiB")]
    NoMemory,
}

/// The vCPUs that fractional `cores` become: `ceil(cores)`, so 0.5 → 1,
/// 1 → 1, 1.5 → 2, 2.25 → 3. The quota then holds the guest to the fraction.
pub fn vcpus_for(cores: f64) -> Result<u8, LimitsError> {
    if !cores.is_finite() || cores <= 0.0 {
        return Err(LimitsError::CoresNotPositive(cores));
    }
    let needed = cores.ceil();
    if needed > f64::from(MAX_VCPUS) {
        return Err(LimitsError::TooManyCores { cores, needed });
    }
    // In 1..=MAX_VCPUS, checked above.
    Ok(needed as u8)
}

/// The VMM's memory overhead for a guest of `guest_mem_mib`:
/// [`VMM_OVERHEAD_FIXED_MIB`] plus [`VMM_OVERHEAD_PER_GIB_MIB`] per GiB of
/// guest memory (rounded up). 128 MiB → 66 MiB; 2 GiB → 96 MiB.
pub fn vmm_overhead_mib(guest_mem_mib: u32) -> u64 {
    let per_gib = u64::from(VMM_OVERHEAD_PER_GIB_MIB);
    u64::from(VMM_OVERHEAD_FIXED_MIB) + (u64::from(guest_mem_mib) * per_gib).div_ceil(1024)
}

/// The limits of one VMM's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupLimits {
    /// CPU time allowed per period, in µs (`cpu.max`'s first field,
    /// `cpu.cfs_quota_us`).
    pub cpu_quota_us: u64,
    /// The period, in µs (`cpu.max`'s second field, `cpu.cfs_period_us`).
    pub cpu_period_us: u64,
    /// Memory limit in bytes (`memory.max`, `memory.limit_in_bytes`).
    pub memory_max_bytes: u64,
    /// Most tasks (processes and threads) at once (`pids.max`).
    pub pids_max: u32,
}

impl CgroupLimits {
    /// The limits for a VMM running a guest with `vcpus` vCPUs and
    /// `guest_mem_mib` of memory, held to `cores` of CPU time.
    ///
    /// Rejects cores that are not positive, under 0.01 or need more than
    /// [`MAX_VCPUS`], a vCPU count outside 1..=32 or below `ceil(cores)`, and
    /// zero memory. More vCPUs than cores is allowed: the quota is shared.
    pub fn for_vm(cores: f64, vcpus: u8, guest_mem_mib: u32) -> Result<CgroupLimits, LimitsError> {
        let needed = vcpus_for(cores)?;
        if vcpus == 0 || vcpus > MAX_VCPUS {
            return Err(LimitsError::VcpusOutOfRange(vcpus));
        }
        if vcpus < needed {
            return Err(LimitsError::FewerVcpusThanCores {
                cores,
                vcpus,
                needed,
            });
        }
        // cores ≤ 32 here, so the product fits easily.
        let quota_us = (cores * CPU_PERIOD_US as f64).round() as u64;
        if quota_us < MIN_CPU_QUOTA_US {
            return Err(LimitsError::QuotaTooSmall { cores, quota_us });
        }
        if guest_mem_mib == 0 {
            return Err(LimitsError::NoMemory);
        }
        let memory_mib = u64::from(guest_mem_mib) + vmm_overhead_mib(guest_mem_mib);
        Ok(CgroupLimits {
            cpu_quota_us: quota_us,
            cpu_period_us: CPU_PERIOD_US,
            memory_max_bytes: memory_mib * 1024 * 1024,
            pids_max: PIDS_MAX,
        })
    }

    /// The cores these limits allow (`quota / period`).
    pub fn cores(&self) -> f64 {
        self.cpu_quota_us as f64 / self.cpu_period_us as f64
    }

    /// The value of cgroup v2's `cpu.max`: `"<quota> <period>"`.
    pub fn cpu_max(&self) -> String {
        format!("{} {}", self.cpu_quota_us, self.cpu_period_us)
    }

    /// The `(file, value)` pairs that set these limits on cgroup `version`,
    /// in the order they must be written (v1: the period before the quota).
    pub fn files(&self, version: CgroupVersion) -> Vec<(&'static str, String)> {
        match version {
            CgroupVersion::V2 => vec![
                ("cpu.max", self.cpu_max()),
                ("memory.max", self.memory_max_bytes.to_string()),
                ("pids.max", self.pids_max.to_string()),
            ],
            CgroupVersion::V1 => vec![
                ("cpu.cfs_period_us", self.cpu_period_us.to_string()),
                ("cpu.cfs_quota_us", self.cpu_quota_us.to_string()),
                ("memory.limit_in_bytes", self.memory_max_bytes.to_string()),
                ("pids.max", self.pids_max.to_string()),
            ],
        }
    }

    /// The jailer's `--cgroup <file>=<value>` flags for these limits.
    ///
    /// The caller adds `--cgroup-version <version.number()>` and
    /// `--parent-cgroup <parent>` ([`crate::DEFAULT_PARENT`]); the jailer then
    /// creates `<mount>/<parent>/<id>` per controller, writes the values and
    /// moves itself in before it execs firecracker, the layout
    /// [`crate::Cgroup::open`] reads and removes. On v1 the list ends with
    /// `cpuacct.usage=0`: it makes the jailer also place the VMM in the
    /// `cpuacct` hierarchy (needed for CPU accounting where `cpuacct` is not
    /// mounted together with `cpu`) and starts the count from zero.
    pub fn jailer_args(&self, version: CgroupVersion) -> Vec<String> {
        let mut files = self.files(version);
        if version == CgroupVersion::V1 {
            files.push(("cpuacct.usage", "0".to_string()));
        }
        files
            .into_iter()
            .flat_map(|(file, value)| ["--cgroup".to_string(), format!("{file}={value}")])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn fractional_cores_become_a_quota_per_100ms() {
        for (cores, quota) in [
            (0.5, 50_000),
            (1.0, 100_000),
            (1.5, 150_000),
            (2.25, 225_000),
        ] {
            let vcpus = vcpus_for(cores).unwrap();
            let limits = CgroupLimits::for_vm(cores, vcpus, 128).unwrap();
            assert_eq!(limits.cpu_quota_us, quota, "{cores} cores");
            assert_eq!(limits.cpu_period_us, 100_000);
            assert_eq!(limits.cores(), cores);
        }
    }

    #[test]
    fn vcpus_are_the_ceiling_of_cores() {
        assert_eq!(vcpus_for(0.5), Ok(1));
        assert_eq!(vcpus_for(1.0), Ok(1));
        assert_eq!(vcpus_for(1.5), Ok(2));
        assert_eq!(vcpus_for(2.25), Ok(3));
        assert_eq!(vcpus_for(32.0), Ok(32));
        assert!(matches!(
            vcpus_for(32.5),
            Err(LimitsError::TooManyCores { .. })
        ));
        assert!(matches!(
            vcpus_for(0.0),
            Err(LimitsError::CoresNotPositive(_))
        ));
        assert!(matches!(
            vcpus_for(-1.0),
            Err(LimitsError::CoresNotPositive(_))
        ));
        assert!(matches!(
            vcpus_for(f64::NAN),
            Err(LimitsError::CoresNotPositive(_))
        ));
        assert!(matches!(
            vcpus_for(f64::INFINITY),
            Err(LimitsError::CoresNotPositive(_))
        ));
    }

    #[test]
    fn memory_is_guest_plus_overhead() {
        assert_eq!(vmm_overhead_mib(128), 66);
        assert_eq!(vmm_overhead_mib(2048), 96);
        assert_eq!(vmm_overhead_mib(1), 65);
        let limits = CgroupLimits::for_vm(1.0, 1, 128).unwrap();
        assert_eq!(limits.memory_max_bytes, (128 + 66) * MIB);
        let limits = CgroupLimits::for_vm(1.0, 1, 8192).unwrap();
        assert_eq!(limits.memory_max_bytes, (8192 + 64 + 128) * MIB);
        assert_eq!(limits.pids_max, 64);
    }

    #[test]
    fn impossible_resources_are_rejected_with_the_fix() {
        let e = CgroupLimits::for_vm(1.5, 1, 128).unwrap_err();
        assert_eq!(
            e,
            LimitsError::FewerVcpusThanCores {
                cores: 1.5,
                vcpus: 1,
                needed: 2
            }
        );
        assert!(e.to_string().contains("give at least 2 vCPUs"), "{e}");
        assert_eq!(
            CgroupLimits::for_vm(1.0, 0, 128),
            Err(LimitsError::VcpusOutOfRange(0))
        );
        assert_eq!(
            CgroupLimits::for_vm(1.0, 33, 128),
            Err(LimitsError::VcpusOutOfRange(33))
        );
        assert_eq!(CgroupLimits::for_vm(1.0, 1, 0), Err(LimitsError::NoMemory));
        let e = CgroupLimits::for_vm(0.004, 1, 128).unwrap_err();
        assert!(
            matches!(e, LimitsError::QuotaTooSmall { quota_us: 400, .. }),
            "{e}"
        );
        // More vCPUs than cores is fine: the quota is shared between them.
        assert_eq!(
            CgroupLimits::for_vm(0.5, 4, 128).unwrap().cpu_quota_us,
            50_000
        );
    }

    #[test]
    fn files_per_version() {
        let l = CgroupLimits::for_vm(1.5, 2, 128).unwrap();
        let mem = ((128 + 66) * MIB).to_string();
        assert_eq!(
            l.files(CgroupVersion::V2),
            vec![
                ("cpu.max", "150000 100000".to_string()),
                ("memory.max", mem.clone()),
                ("pids.max", "64".to_string())
            ]
        );
        assert_eq!(
            l.files(CgroupVersion::V1),
            vec![
                ("cpu.cfs_period_us", "100000".to_string()),
                ("cpu.cfs_quota_us", "150000".to_string()),
                ("memory.limit_in_bytes", mem),
                ("pids.max", "64".to_string())
            ]
        );
    }

    #[test]
    fn jailer_args_are_cgroup_flags() {
        let l = CgroupLimits::for_vm(0.5, 1, 128).unwrap();
        let mem = (128 + 66) * MIB;
        assert_eq!(
            l.jailer_args(CgroupVersion::V1).join(" "),
            format!(
                "--cgroup cpu.cfs_period_us=100000 --cgroup cpu.cfs_quota_us=50000 \
                 --cgroup memory.limit_in_bytes={mem} --cgroup pids.max=64 --cgroup cpuacct.usage=0"
            )
        );
        let v2 = l.jailer_args(CgroupVersion::V2);
        assert_eq!(v2[0], "--cgroup");
        assert_eq!(v2[1], "cpu.max=50000 100000");
        assert_eq!(v2.len(), 6);
    }
}
