//! Reading a cgroup back: what it has used and the limits as the kernel
//! holds them.
//!
//! | figure            | cgroup v2                     | cgroup v1                          |
//! |-------------------|-------------------------------|------------------------------------|
//! | CPU time          | `cpu.stat` `usage_usec` × 1000 | `cpuacct.usage` (ns)              |
//! | throttled time    | `cpu.stat` `throttled_usec`   | `cpu.stat` `throttled_time` (ns)   |
//! | memory            | `memory.current`              | `memory.usage_in_bytes`            |
//! | tasks             | `pids.current`                | `pids.current`                     |
//! | CPU limit         | `cpu.max`                     | `cpu.cfs_quota_us`, `cpu.cfs_period_us` |
//! | memory limit      | `memory.max`                  | `memory.limit_in_bytes`            |
//! | tasks limit       | `pids.max`                    | `pids.max`                         |

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroup::Cgroup;
use crate::error::CgroupError;
use crate::host::CgroupVersion;

/// v1 reports "no memory limit" as a huge number (2^63 rounded down to a
/// page); anything from 2^62 up is taken as unlimited.
const V1_UNLIMITED_MEMORY: u64 = 1 << 62;

/// A cgroup's usage and limits at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    /// CPU time used by everything that was ever in the cgroup, in ns.
    pub cpu_usage_ns: u64,
    /// Time the cgroup spent throttled by its quota, in ns.
    pub cpu_throttled_ns: u64,
    /// Memory charged to the cgroup now, in bytes.
    pub memory_current_bytes: u64,
    /// Tasks (processes and threads) in it now.
    pub pids_current: u64,
    /// CPU quota per period in µs; `None` when unlimited.
    pub cpu_quota_us: Option<u64>,
    /// CPU period in µs.
    pub cpu_period_us: u64,
    /// Memory limit in bytes; `None` when unlimited.
    pub memory_max_bytes: Option<u64>,
    /// Tasks limit; `None` when unlimited.
    pub pids_max: Option<u64>,
}

impl Cgroup {
    /// Reads the cgroup's usage and limits.
    pub fn usage(&self) -> Result<CgroupUsage, CgroupError> {
        match self.version() {
            CgroupVersion::V2 => self.usage_v2(),
            CgroupVersion::V1 => self.usage_v1(),
        }
    }

    fn usage_v2(&self) -> Result<CgroupUsage, CgroupError> {
        let dir = self.dir_of("cpu")?;
        let stat = read(&dir.join("cpu.stat"))?;
        let cpu_max_path = dir.join("cpu.max");
        let cpu_max = read(&cpu_max_path)?;
        let (quota, period) = cpu_max.split_once(' ').ok_or_else(|| CgroupError::Parse {
            path: cpu_max_path.clone(),
            content: cpu_max.clone(),
        })?;
        Ok(CgroupUsage {
            cpu_usage_ns: stat_field(&dir.join("cpu.stat"), &stat, "usage_usec")? * 1000,
            cpu_throttled_ns: stat_field(&dir.join("cpu.stat"), &stat, "throttled_usec")
                .unwrap_or(0)
                * 1000,
            memory_current_bytes: read_u64(&self.dir_of("memory")?.join("memory.current"))?,
            pids_current: read_u64(&self.dir_of("pids")?.join("pids.current"))?,
            cpu_quota_us: max_or(&cpu_max_path, quota)?,
            cpu_period_us: parse(&cpu_max_path, period)?,
            memory_max_bytes: read_max(&self.dir_of("memory")?.join("memory.max"))?,
            pids_max: read_max(&self.dir_of("pids")?.join("pids.max"))?,
        })
    }

    fn usage_v1(&self) -> Result<CgroupUsage, CgroupError> {
        let cpu = self.dir_of("cpu")?;
        let memory = self.dir_of("memory")?;
        let pids = self.dir_of("pids")?;
        let stat_path = cpu.join("cpu.stat");
        let stat = read(&stat_path)?;
        let quota_path = cpu.join("cpu.cfs_quota_us");
        let quota = read(&quota_path)?;
        let quota = match quota.as_str() {
            "-1" => None,
            q => Some(parse(&quota_path, q)?),
        };
        let memory_max = read_u64(&memory.join("memory.limit_in_bytes"))?;
        Ok(CgroupUsage {
            cpu_usage_ns: read_u64(&self.dir_of("cpuacct")?.join("cpuacct.usage"))?,
            cpu_throttled_ns: stat_field(&stat_path, &stat, "throttled_time").unwrap_or(0),
            memory_current_bytes: read_u64(&memory.join("memory.usage_in_bytes"))?,
            pids_current: read_u64(&pids.join("pids.current"))?,
            cpu_quota_us: quota,
            cpu_period_us: read_u64(&cpu.join("cpu.cfs_period_us"))?,
            memory_max_bytes: (memory_max < V1_UNLIMITED_MEMORY).then_some(memory_max),
            pids_max: read_max(&pids.join("pids.max"))?,
        })
    }
}

/// A cgroup file's content, trimmed.
fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn parse(path: &Path, text: &str) -> Result<u64, CgroupError> {
    text.trim().parse().map_err(|_| CgroupError::Parse {
        path: path.to_path_buf(),
        content: text.to_string(),
    })
}

fn read_u64(path: &Path) -> Result<u64, CgroupError> {
    parse(path, &read(path)?)
}

/// A number, or `max` for unlimited.
fn max_or(path: &Path, text: &str) -> Result<Option<u64>, CgroupError> {
    match text.trim() {
        "max" => Ok(None),
        n => parse(path, n).map(Some),
    }
}

fn read_max(path: &Path) -> Result<Option<u64>, CgroupError> {
    max_or(path, &read(path)?)
}

/// The value of `key` in a flat keyed file such as `cpu.stat`.
fn stat_field(path: &Path, text: &str, key: &str) -> Result<u64, CgroupError> {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| parse(path, v))
        .unwrap_or_else(|| {
            Err(CgroupError::Parse {
                path: path.to_path_buf(),
                content: format!("no `{key}` in: {text}"),
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_by_key() {
        let text =
            "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_throttled 3\nthrottled_usec 42";
        let p = Path::new("cpu.stat");
        assert_eq!(stat_field(p, text, "usage_usec").unwrap(), 1500);
        assert_eq!(stat_field(p, text, "throttled_usec").unwrap(), 42);
        assert!(stat_field(p, text, "nope").is_err());
    }

    #[test]
    fn max_means_unlimited() {
        let p = Path::new("pids.max");
        assert_eq!(max_or(p, "max").unwrap(), None);
        assert_eq!(max_or(p, "64\n").unwrap(), Some(64));
        assert!(max_or(p, "lots").is_err());
    }
}
