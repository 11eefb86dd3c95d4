//! The resource rule: from the node's resources to the VM's vCPUs and memory.
//!
//! The node asks for fractional cores and RAM in bytes. (The reference hands
//! `ram.size` straight to Firecracker's `mem_size_mib`, reading bytes as MiB,
//! and truncates cores; fcexec does neither.) The rule:
//!
//! | input | result |
//! |---|---|
//! | `resources` absent, or `cpu` / `cpu.cores` absent or null | 1 vCPU ([`DEFAULT_VCPUS`]) |
//! | `cores` finite and > 0 | `vcpus = ceil(cores)`; a value at most 0.001 above a whole number counts as that number (float32 noise: 2.0000002 is 2) |
//! | `cores` ≤ 0, NaN or infinite | error naming `resources.cpu.cores` |
//! | `vcpus` > 32 (Firecracker's maximum) or > the host's CPUs | error |
//! | `resources` absent, or `ram` / `ram.size` absent or null | 128 MiB ([`DEFAULT_MEM_MIB`]) |
//! | `ram.size` ≥ 8 MiB | `mem_mib = ceil(size / 1 MiB)` |
//! | `ram.size` ≤ 0 | error naming `resources.ram.size` |
//! | 0 < `ram.size` < 8 MiB ([`MIN_MEM_MIB`]) | error: too small to boot, and most likely MiB given where bytes are meant |
//! | `mem_mib` > the host's total memory | error |
//! | `gpus` not empty | error: Firecracker has no device passthrough |
//!
//! `disk.size` is accepted and not enforced (the disk speeds and IOPS become
//! rate limiters, see [`crate::disk_limits`]): the drives are the images the
//! request names. The host's limits are [`HostLimits`]: the CPUs this process
//! may use and the total memory (`MemTotal`), which a request can never
//! exceed; free memory changes from moment to moment and is not checked.

use crate::request::Resources;

/// vCPUs when the request gives no cores.
pub const DEFAULT_VCPUS: u8 = 1;
/// Memory in MiB when the request gives no RAM size.
pub const DEFAULT_MEM_MIB: u32 = 128;
/// Firecracker's maximum vCPU count.
pub const MAX_VCPUS: u8 = 32;
/// The smallest memory accepted, in MiB.
pub const MIN_MEM_MIB: u32 = 8;
/// Bytes in a MiB.
pub const MIB: u64 = 1 << 20;
/// How far above a whole number `cores` may be and still count as it.
const CORES_TOLERANCE: f64 = 0.001;

/// What this host can give one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// CPUs this process may use.
    pub cpus: u32,
    /// Total memory in MiB.
    pub mem_mib: u64,
}

/// The host's limits could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HostLimitsError {
    /// `available_parallelism` failed.
    #[error("cannot count this host's CPUs: {0}")]
    Cpus(std::io::Error),
    /// `/proc/meminfo` could not be read.
    #[error("cannot read /proc/meminfo: {0}")]
    Meminfo(std::io::Error),
    /// `/proc/meminfo` has no usable `MemTotal` line.
    #[error("/proc/meminfo has no \"MemTotal: <n> kB\" line")]
    NoMemTotal,
}

impl HostLimits {
    /// Reads the limits of this host.
    pub fn detect() -> Result<HostLimits, HostLimitsError> {
        let cpus = std::thread::available_parallelism()
            .map_err(HostLimitsError::Cpus)?
            .get();
        let meminfo = std::fs::read_to_string("/proc/meminfo").map_err(HostLimitsError::Meminfo)?;
        let mem_mib = parse_mem_total_mib(&meminfo).ok_or(HostLimitsError::NoMemTotal)?;
        Ok(HostLimits {
            cpus: u32::try_from(cpus).unwrap_or(u32::MAX),
            mem_mib,
        })
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in MiB.
pub fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let kib: u64 = words.next()?.parse().ok()?;
    (words.next()? == "kB").then_some(kib / 1024)
}

/// The VM's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineSize {
    /// Whole vCPUs, 1..=32.
    pub vcpus: u8,
    /// Memory in MiB.
    pub mem_mib: u32,
}

/// A resource request that cannot be honoured; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// Cores is NaN or infinite.
    #[error("resources.cpu.cores: {0} is not a finite number; give a positive number of cores such as 1 or 1.5")]
    NotFinite(f64),
    /// A size or count is zero or negative.
    #[error("{field}: {value} is not positive; give {fix}, or leave it out for the default")]
    NotPositive {
        /// JSON path.
        field: &'static str,
        /// The value given.
        value: String,
        /// What to give.
        fix: &'static str,
    },
    /// More vCPUs than Firecracker supports.
    #[error("resources.cpu.cores: {cores} needs {vcpus} vCPUs, more than the {max} Firecracker supports; ask for at most {max} cores")]
    TooManyForFirecracker {
        /// Cores asked.
        cores: f64,
        /// vCPUs that means.
        vcpus: f64,
        /// Firecracker's maximum.
        max: u8,
    },
    /// More vCPUs than the host has.
    #[error("resources.cpu.cores: {cores} needs {vcpus} vCPUs, more than the {host} CPUs of this host; ask for at most {host} cores")]
    TooManyForHost {
        /// Cores asked.
        cores: f64,
        /// vCPUs that means.
        vcpus: f64,
        /// CPUs of the host.
        host: u32,
    },
    /// Memory below the minimum.
    #[error("resources.ram.size: {bytes} bytes is less than the {min_mib} MiB minimum; the size is in bytes (128 MiB is 134217728)")]
    TooLittleMemory {
        /// Bytes asked.
        bytes: i128,
        /// The minimum.
        min_mib: u32,
    },
    /// More memory than the host has.
    #[error("resources.ram.size: {bytes} bytes is {mib} MiB, more than the {host_mib} MiB of this host; ask for less memory")]
    TooMuchMemory {
        /// Bytes asked.
        bytes: i128,
        /// MiB that means.
        mib: i128,
        /// Host memory in MiB.
        host_mib: u64,
    },
    /// GPUs asked.
    #[error("resources.gpus: {0} GPU(s) asked, but Firecracker has no GPU passthrough (not supported); remove resources.gpus")]
    GpusNotSupported(usize),
}

impl ResourceError {
    /// JSON path of the offending field.
    pub fn field(&self) -> &'static str {
        match self {
            ResourceError::NotPositive { field, .. } => field,
            ResourceError::NotFinite(_)
            | ResourceError::TooManyForFirecracker { .. }
            | ResourceError::TooManyForHost { .. } => "resources.cpu.cores",
            ResourceError::TooLittleMemory { .. } | ResourceError::TooMuchMemory { .. } => {
                "resources.ram.size"
            }
            ResourceError::GpusNotSupported(_) => "resources.gpus",
        }
    }
}

/// Applies the rule (module doc) to the request's resources.
pub fn machine_size(
    resources: Option<&Resources>,
    host: &HostLimits,
) -> Result<MachineSize, ResourceError> {
    let cores = resources.and_then(|r| r.cpu.as_ref()).and_then(|c| c.cores);
    let size = resources.and_then(|r| r.ram.as_ref()).and_then(|r| r.size);
    if let Some(r) = resources.filter(|r| !r.gpus.is_empty()) {
        return Err(ResourceError::GpusNotSupported(r.gpus.len()));
    }
    Ok(MachineSize {
        vcpus: vcpus_for(cores, host)?,
        mem_mib: mem_mib_for(size, host)?,
    })
}

/// vCPUs for `cores` (absent: the default).
pub fn vcpus_for(cores: Option<f64>, host: &HostLimits) -> Result<u8, ResourceError> {
    let Some(cores) = cores else {
        return Ok(DEFAULT_VCPUS);
    };
    if !cores.is_finite() {
        return Err(ResourceError::NotFinite(cores));
    }
    if cores <= 0.0 {
        return Err(ResourceError::NotPositive {
            field: "resources.cpu.cores",
            value: cores.to_string(),
            fix: "a positive number of cores such as 1 or 1.5",
        });
    }
    let vcpus = (cores - CORES_TOLERANCE).ceil().max(1.0);
    if vcpus > f64::from(MAX_VCPUS) {
        return Err(ResourceError::TooManyForFirecracker {
            cores,
            vcpus,
            max: MAX_VCPUS,
        });
    }
    if vcpus > f64::from(host.cpus) {
        return Err(ResourceError::TooManyForHost {
            cores,
            vcpus,
            host: host.cpus,
        });
    }
    // 1 <= vcpus <= 32 here, so the cast is exact.
    Ok(vcpus as u8)
}

/// Memory in MiB for `size` bytes (absent: the default).
pub fn mem_mib_for(size: Option<i128>, host: &HostLimits) -> Result<u32, ResourceError> {
    let Some(bytes) = size else {
        return Ok(DEFAULT_MEM_MIB);
    };
    if bytes <= 0 {
        return Err(ResourceError::NotPositive {
            field: "resources.ram.size",
            value: bytes.to_string(),
            fix: "the memory size in bytes (128 MiB is 134217728)",
        });
    }
    let mib = (bytes + i128::from(MIB) - 1) / i128::from(MIB);
    if mib < i128::from(MIN_MEM_MIB) {
        return Err(ResourceError::TooLittleMemory {
            bytes,
            min_mib: MIN_MEM_MIB,
        });
    }
    match u32::try_from(mib) {
        Ok(m) if u64::from(m) <= host.mem_mib => Ok(m),
        _ => Err(ResourceError::TooMuchMemory {
            bytes,
            mib,
            host_mib: host.mem_mib,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::request::{Cpu, Gpu, Ram};

    const HOST: HostLimits = HostLimits {
        cpus: 8,
        mem_mib: 4096,
    };

    /// Cores, RAM bytes, the host, then the expected outcome.
    type Row<A, B> = (Option<f64>, Option<i128>, HostLimits, A, B);

    /// Resources with only `cpu.cores` and `ram.size` set (shared with the validation tests).
    pub(crate) fn res(cores: Option<f64>, size: Option<i128>) -> Resources {
        Resources {
            cpu: Some(Cpu {
                cores,
                ..Cpu::default()
            }),
            ram: Some(Ram {
                size,
                ..Ram::default()
            }),
            ..Resources::default()
        }
    }

    #[test]
    fn the_rule_table() {
        let big = HostLimits {
            cpus: 64,
            mem_mib: 1 << 20,
        };
        let ok: &[Row<u8, u32>] = &[
            (None, None, HOST, 1, 128),
            (Some(0.1), Some(8 * 1024 * 1024), HOST, 1, 8),
            (Some(1.0), Some(8 * 1024 * 1024 + 1), HOST, 1, 9),
            (Some(1.5), Some(536_870_912), HOST, 2, 512),
            (Some(2.0000002), Some(1_000_000_000), HOST, 2, 954),
            (Some(2.0011), None, HOST, 3, 128),
            (Some(8.0), Some(4096 * 1024 * 1024), HOST, 8, 4096),
            (Some(32.0), None, big, 32, 128),
        ];
        for &(cores, size, host, vcpus, mem_mib) in ok {
            let got = machine_size(Some(&res(cores, size)), &host).unwrap();
            assert_eq!(got, MachineSize { vcpus, mem_mib }, "{cores:?} {size:?}");
        }
        assert_eq!(
            machine_size(None, &HOST).unwrap(),
            MachineSize {
                vcpus: DEFAULT_VCPUS,
                mem_mib: DEFAULT_MEM_MIB
            }
        );
        assert_eq!(
            machine_size(Some(&Resources::default()), &HOST).unwrap(),
            machine_size(None, &HOST).unwrap()
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused() {
        let big = HostLimits {
            cpus: 64,
            mem_mib: 1 << 20,
        };
        let bad: &[Row<&str, &str>] = &[
            (
                Some(0.0),
                None,
                HOST,
                "resources.cpu.cores",
                "0 is not positive",
            ),
            (
                Some(-1.0),
                None,
                HOST,
                "resources.cpu.cores",
                "-1 is not positive",
            ),
            (
                Some(f64::NAN),
                None,
                HOST,
                "resources.cpu.cores",
                "NaN is not a finite",
            ),
            (
                Some(f64::INFINITY),
                None,
                HOST,
                "resources.cpu.cores",
                "inf is not a finite",
            ),
            (
                Some(8.5),
                None,
                HOST,
                "resources.cpu.cores",
                "more than the 8 CPUs",
            ),
            (
                Some(33.0),
                None,
                big,
                "resources.cpu.cores",
                "the 32 Firecracker supports",
            ),
            (
                Some(1e300),
                None,
                big,
                "resources.cpu.cores",
                "Firecracker supports",
            ),
            (
                None,
                Some(0),
                HOST,
                "resources.ram.size",
                "0 is not positive",
            ),
            (
                None,
                Some(-5),
                HOST,
                "resources.ram.size",
                "-5 is not positive",
            ),
            (
                None,
                Some(512),
                HOST,
                "resources.ram.size",
                "128 MiB is 134217728",
            ),
            (
                None,
                Some(7 * 1024 * 1024),
                HOST,
                "resources.ram.size",
                "8 MiB minimum",
            ),
            (
                None,
                Some(4097 * 1024 * 1024),
                HOST,
                "resources.ram.size",
                "4096 MiB of this host",
            ),
            (
                None,
                Some(i128::from(u64::MAX)),
                big,
                "resources.ram.size",
                "more than",
            ),
        ];
        for &(cores, size, host, field, text) in bad {
            let err = machine_size(Some(&res(cores, size)), &host).unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            let msg = err.to_string();
            assert!(msg.starts_with(field) && msg.contains(text), "{msg}");
        }
        let gpus = Resources {
            gpus: vec![Gpu::default()],
            ..Resources::default()
        };
        let err = machine_size(Some(&gpus), &HOST).unwrap_err();
        assert_eq!(err.field(), "resources.gpus");
        assert!(err.to_string().contains("not supported"), "{err}");
    }

    #[test]
    fn meminfo_is_parsed_and_the_host_detected() {
        let text = "MemTotal:        8048576 kB\nMemFree:  1 kB\n";
        assert_eq!(parse_mem_total_mib(text), Some(7859));
        assert_eq!(parse_mem_total_mib("MemFree: 1 kB\n"), None);
        assert_eq!(parse_mem_total_mib("MemTotal: x kB\n"), None);
        let host = HostLimits::detect().unwrap();
        assert!(host.cpus >= 1 && host.mem_mib >= 1, "{host:?}");
    }
}
