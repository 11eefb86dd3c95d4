//! IO rate limiters and their token buckets.

use serde::{Deserialize, Serialize};

/// A token bucket: `size` tokens refilled over `refill_time` ms, after an
/// initial `one_time_burst` budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenBucket {
    /// Initial burst size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill the bucket.
    pub refill_time: u64,
    /// Capacity of the bucket, in tokens.
    pub size: u64,
}

/// An IO rate limiter with independent bytes/s and ops/s token buckets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateLimiter {
    /// Token bucket with bytes as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucket>,
    /// Token bucket with operations as tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rate_limiter_shape() {
        let r: RateLimiter = serde_json::from_value(
            json!({"ops": {"size": 100, "refill_time": 1000, "one_time_burst": 10}}),
        )
        .unwrap();
        assert_eq!(r.bandwidth, None);
        assert_eq!(r.ops.as_ref().map(|b| b.one_time_burst), Some(Some(10)));
        assert!(serde_json::from_value::<TokenBucket>(json!({"size": 1})).is_err());
    }
}
