//! Balloon device: configuration, statistics and free page hinting.

use serde::{Deserialize, Serialize};

/// Balloon device descriptor (`PUT /balloon`, `GET /balloon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balloon {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
    /// Whether the balloon should deflate when the guest has memory pressure.
    pub deflate_on_oom: bool,
    /// Seconds between statistics refreshes; non-zero enables statistics (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats_polling_interval_s: Option<u16>,
    /// Whether the free page hinting feature is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_hinting: Option<bool>,
    /// Whether the free page reporting feature is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_page_reporting: Option<bool>,
}

/// New target size of an existing balloon device (`PATCH /balloon`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonUpdate {
    /// Target balloon size in MiB.
    pub amount_mib: u32,
}

/// Balloon device statistics (`GET /balloon/statistics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonStats {
    /// Target number of pages the device aims to hold.
    pub target_pages: u32,
    /// Actual number of pages the device is holding.
    pub actual_pages: u32,
    /// Target amount of memory (MiB) the device aims to hold.
    pub target_mib: u32,
    /// Actual amount of memory (MiB) the device is holding.
    pub actual_mib: u32,
    /// Memory swapped in, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_in: Option<u64>,
    /// Memory swapped out to disk, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_out: Option<u64>,
    /// Number of major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_faults: Option<u64>,
    /// Number of minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minor_faults: Option<u64>,
    /// Memory not used for any purpose, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory: Option<u64>,
    /// Total memory available, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_memory: Option<u64>,
    /// Estimate of memory available for new applications without swapping, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_memory: Option<u64>,
    /// Memory quickly reclaimable without I/O (disk caches), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_caches: Option<u64>,
    /// Successful hugetlb page allocations in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_allocations: Option<u64>,
    /// Failed hugetlb page allocations in the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugetlb_failures: Option<u64>,
    /// OOM killer invocations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill: Option<u64>,
    /// Allocations that entered the slow path to gain more memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alloc_stall: Option<u64>,
    /// Memory scanned asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_scan: Option<u64>,
    /// Memory scanned directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_scan: Option<u64>,
    /// Memory reclaimed asynchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub async_reclaim: Option<u64>,
    /// Memory reclaimed directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_reclaim: Option<u64>,
}

/// Command starting a free page hinting run (`PATCH /balloon/hinting/start`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BalloonStartCmd {
    /// Whether Firecracker should acknowledge automatically when the guest submits a done command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge_on_stop: Option<bool>,
}

/// Free page hinting status (`GET /balloon/hinting/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonHintingStatus {
    /// The last command issued by the host.
    pub host_cmd: u32,
    /// The last command provided by the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_cmd: Option<u32>,
}

/// New statistics polling interval (`PATCH /balloon/statistics`); the first
/// update is scheduled immediately. Statistics cannot be turned on/off after boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BalloonStatsUpdate {
    /// Seconds between statistics refreshes.
    pub stats_polling_interval_s: u16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn balloon_omits_unset_options() {
        let b = Balloon {
            amount_mib: 64,
            deflate_on_oom: true,
            stats_polling_interval_s: Some(1),
            free_page_hinting: None,
            free_page_reporting: None,
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            json!({"amount_mib": 64, "deflate_on_oom": true, "stats_polling_interval_s": 1})
        );
    }

    #[test]
    fn stats_parse_with_unknown_fields() {
        let s: BalloonStats = serde_json::from_value(json!({
            "target_pages": 1, "actual_pages": 2, "target_mib": 3, "actual_mib": 4,
            "swap_in": 5_000_000_000u64, "some_future_field": 7
        }))
        .unwrap();
        assert_eq!(s.actual_mib, 4);
        assert_eq!(s.swap_in, Some(5_000_000_000));
        assert_eq!(s.oom_kill, None);
    }
}
