//! `resources.disk` as Firecracker's drive rate limiters.
//!
//! | request | every drive of the request (not fcexec's config drive) |
//! |---|---|
//! | `disk.read_speed` and/or `disk.write_speed` (bytes/s) | `rate_limiter.bandwidth`: a bucket of that many bytes refilled every 1000 ms. Firecracker has one bucket for reads and writes together, so with both given the smaller holds for both |
//! | `disk.iops` (fcexec's extension, operations/s) | `rate_limiter.ops`: a bucket of that many operations refilled every 1000 ms |
//! | none of them, or only zeros | no rate limiter (as before) |
//!
//! `disk.size` stays unenforced: the drives are the images the request names.

use firecracker_api::models::{RateLimiter, TokenBucket};

use crate::request::Disk;

/// How often the buckets refill, ms: the speeds are per second.
pub const REFILL_MS: u64 = 1000;

/// The rate limiter of every drive of a request with `disk`, if it limits.
pub fn rate_limiter(disk: Option<&Disk>) -> Option<RateLimiter> {
    let disk = disk?;
    let bucket = |size: u64| TokenBucket {
        one_time_burst: None,
        refill_time: REFILL_MS,
        size,
    };
    let bandwidth = [disk.read_speed, disk.write_speed]
        .into_iter()
        .flatten()
        .filter(|&s| s > 0)
        .min()
        .map(bucket);
    let ops = disk.iops.filter(|&n| n > 0).map(bucket);
    (bandwidth.is_some() || ops.is_some()).then_some(RateLimiter { bandwidth, ops })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(read: Option<u64>, write: Option<u64>, iops: Option<u64>) -> Disk {
        Disk {
            read_speed: read,
            write_speed: write,
            iops,
            ..Disk::default()
        }
    }

    #[test]
    fn speeds_and_iops_become_buckets_per_second() {
        assert_eq!(rate_limiter(None), None);
        assert_eq!(rate_limiter(Some(&disk(None, None, None))), None);
        assert_eq!(rate_limiter(Some(&disk(Some(0), None, Some(0)))), None);
        let both = rate_limiter(Some(&disk(Some(100 << 20), Some(50 << 20), Some(1000)))).unwrap();
        assert_eq!(both.bandwidth.unwrap().size, 50 << 20, "the smaller speed");
        assert_eq!(both.ops.as_ref().unwrap().size, 1000);
        assert_eq!(both.ops.unwrap().refill_time, 1000);
        let read = rate_limiter(Some(&disk(Some(7), None, None))).unwrap();
        assert_eq!((read.bandwidth.unwrap().size, read.ops), (7, None));
    }
}
