//! Order statistics over latency samples.

use std::time::Duration;

/// Median and tail of a set of durations (nearest-rank percentiles).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// 50th percentile.
    pub p50: Duration,
    /// 95th percentile.
    pub p95: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

/// The nearest-rank `p` percentile (0 < p <= 1) of sorted samples.
fn rank(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let k = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[k - 1]
}

/// Summarizes `samples`.
pub fn summarize(samples: &[Duration]) -> Summary {
    let mut s = samples.to_vec();
    s.sort();
    Summary {
        n: s.len(),
        p50: rank(&s, 0.5),
        p95: rank(&s, 0.95),
        p99: rank(&s, 0.99),
    }
}

/// A duration in milliseconds with one decimal, e.g. `23.4 ms`.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A duration in milliseconds with two decimals, for small CPU times.
pub fn ms2(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `a / b` as a ratio with two decimals (`-` when `b` is zero).
pub fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

/// `a / b` for durations.
pub fn dratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        f64::INFINITY
    } else {
        a.as_secs_f64() / b.as_secs_f64()
    }
}

/// The mean of `samples`; zero when there are none.
pub fn mean(samples: &[Duration]) -> Duration {
    if samples.is_empty() {
        Duration::ZERO
    } else {
        samples.iter().sum::<Duration>() / samples.len() as u32
    }
}
