//! Hotpluggable memory (virtio-mem, `/hotplug/memory`).

use serde::{Deserialize, Serialize};

/// Configuration of the hotpluggable memory device (`PUT /hotplug/memory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryHotplugConfig {
    /// Total size of the hotpluggable memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_mib: Option<u64>,
    /// Slot size in MiB (host plug granularity; minimum and default 128).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_size_mib: Option<u64>,
    /// Logical block size in MiB (guest plug granularity; minimum and default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_mib: Option<u64>,
}

/// New target size of the hotpluggable memory region (`PATCH /hotplug/memory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryHotplugSizeUpdate {
    /// New target region size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_size_mib: Option<u64>,
}

/// Status of the hotpluggable memory device (`GET /hotplug/memory`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryHotplugStatus {
    /// Total size of the hotpluggable memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size_mib: Option<u64>,
    /// Slot size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_size_mib: Option<u64>,
    /// Logical block size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size_mib: Option<u64>,
    /// Plugged size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugged_size_mib: Option<u64>,
    /// Requested size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_size_mib: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hotplug_shapes() {
        let c = MemoryHotplugConfig {
            total_size_mib: Some(1024),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"total_size_mib": 1024})
        );
        let s: MemoryHotplugStatus =
            serde_json::from_value(json!({"plugged_size_mib": 512, "requested_size_mib": 512}))
                .unwrap();
        assert_eq!(s.plugged_size_mib, Some(512));
        assert_eq!(s.total_size_mib, None);
    }
}
