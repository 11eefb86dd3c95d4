//! Block devices (`/drives/{drive_id}`) and pmem devices (`/pmem/{id}`).

use serde::{Deserialize, Serialize};

use super::RateLimiter;

string_enum! {
    /// Caching strategy of a block device (default `Unsafe`).
    #[derive(Default)]
    DriveCacheType {
        /// Flushes are not forwarded to the host.
        #[default]
        Unsafe = "Unsafe",
        /// Flushes are forwarded to the host (fsync).
        Writeback = "Writeback",
    }
}

string_enum! {
    /// IO engine of a block device (default `Sync`); `Async` (io_uring)
    /// needs a host kernel newer than 5.10.51.
    #[derive(Default)]
    DriveIoEngine {
        /// Synchronous IO.
        #[default]
        Sync = "Sync",
        /// Asynchronous IO with io_uring.
        Async = "Async",
    }
}

/// A guest block device: virtio-block (`path_on_host`, `is_read_only`) or
/// vhost-user-block (`socket`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drive {
    /// Drive id; must equal the `{drive_id}` of the path.
    pub drive_id: String,
    /// Unique id of the boot partition; only used if `is_root_device`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// Whether this is the guest's root device.
    pub is_root_device: bool,
    /// Caching strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<DriveCacheType>,
    /// Whether the drive is read only (virtio-block: required; vhost-user: omit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// Host path of the backing file (virtio-block: required; vhost-user: omit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// IO rate limiter (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
    /// IO engine (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<DriveIoEngine>,
    /// Socket of the vhost-user-block backend (vhost-user: required; virtio-block: omit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

/// Post-boot update of a drive (`PATCH /drives/{drive_id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialDrive {
    /// Drive id; must equal the `{drive_id}` of the path.
    pub drive_id: String,
    /// New host path of the backing file (virtio-block only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<String>,
    /// New IO rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// A virtio-pmem device (`PUT /pmem/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pmem {
    /// Device id; must equal the `{id}` of the path.
    pub id: String,
    /// Host path of the backing file.
    pub path_on_host: String,
    /// Whether to boot from this device (fails if another root device exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_device: Option<bool>,
    /// Whether to map the backing file read only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// IO rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

/// Post-boot update of a pmem device's rate limiter (`PATCH /pmem/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartialPmem {
    /// Device id; must equal the `{id}` of the path.
    pub id: String,
    /// New IO rate limiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limiter: Option<RateLimiter>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::TokenBucket;
    use serde_json::json;

    #[test]
    fn virtio_block_drive_shape() {
        let d = Drive {
            drive_id: "rootfs".into(),
            partuuid: None,
            is_root_device: true,
            cache_type: Some(DriveCacheType::Writeback),
            is_read_only: Some(false),
            path_on_host: Some("/img/rootfs.ext4".into()),
            rate_limiter: Some(RateLimiter {
                bandwidth: Some(TokenBucket {
                    one_time_burst: None,
                    refill_time: 1000,
                    size: 1 << 20,
                }),
                ops: None,
            }),
            io_engine: Some(DriveIoEngine::Async),
            socket: None,
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            json!({
                "drive_id": "rootfs", "is_root_device": true, "cache_type": "Writeback",
                "is_read_only": false, "path_on_host": "/img/rootfs.ext4",
                "rate_limiter": {"bandwidth": {"refill_time": 1000, "size": 1048576}},
                "io_engine": "Async"
            })
        );
        assert_eq!(serde_json::from_value::<Drive>(v).unwrap(), d);
    }

    #[test]
    fn drive_requires_is_root_device() {
        assert!(serde_json::from_value::<Drive>(json!({"drive_id": "a"})).is_err());
        assert!(serde_json::from_value::<Drive>(
            json!({"drive_id": "a", "is_root_device": false, "cache_type": "Bogus"})
        )
        .is_err());
    }

    #[test]
    fn partial_drive_minimal() {
        let p = PartialDrive {
            drive_id: "scratch".into(),
            path_on_host: Some("/new".into()),
            rate_limiter: None,
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"drive_id": "scratch", "path_on_host": "/new"})
        );
    }
}
