//! Fractional cores hold a jailed VMM's CPU: a guest spinning its vCPU
//! under 0.5 cores gets about half of one CPU, under 1 core about one CPU,
//! measured from the cgroup's own CPU usage. (Its own test binary, so no
//! other test competes for the host's CPUs meanwhile.)

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, Harness};
use fcexec::record::ExecutionRecord;
use serde_json::json;
use test_guest::Job;

/// CPU time used by the cgroup, in ns (v1 `cpuacct.usage`, v2 `cpu.stat`).
fn usage_ns(cgroups: &[PathBuf]) -> u64 {
    for dir in cgroups {
        if let Ok(text) = std::fs::read_to_string(dir.join("cpuacct.usage")) {
            return text.trim().parse().unwrap();
        }
    }
    for dir in cgroups {
        let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap_or_default();
        if let Some(usec) = text.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
            return usec.trim().parse::<u64>().unwrap() * 1000;
        }
    }
    panic!("no CPU usage in {cgroups:?}");
}

/// Runs a spinning guest under `cores` and returns the percentage of one
/// CPU its cgroup used over 3 s.
async fn spin_under(h: &Harness, ex: &fcexec::Executor, id: &str, cores: f64) -> f64 {
    let mut request = h.agent(id, &Job::new().spin(60_000));
    request.resources =
        serde_json::from_value(json!({"cpu": {"cores": cores}, "ram": {"size": 32u64 << 20}}))
            .unwrap();
    ex.start(&request).await.unwrap();
    let record = h.state_root().join("cpu").join(id).join("record.json");
    let load = |p: &Path| ExecutionRecord::load(p).unwrap();
    assert!(eventually(Duration::from_secs(5), || load(&record).pid.is_some()).await);
    let iso = load(&record).isolation.expect("jailed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (start, used) = (Instant::now(), usage_ns(&iso.cgroups));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let percent =
        (usage_ns(&iso.cgroups) - used) as f64 / start.elapsed().as_nanos() as f64 * 100.0;
    ex.cancel(id).await.unwrap();
    let _ = ex.wait(id).await;
    println!(
        "{cores} cores: {percent:.1}% of one CPU (quota {} us per {} us)",
        iso.limits.cpu_quota_us, iso.limits.cpu_period_us
    );
    percent
}

#[tokio::test]
async fn half_a_core_holds_a_spinning_vcpu_near_50_percent_and_one_core_near_100() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("cpu").await;
    let half = spin_under(&h, &ex, "half", 0.5).await;
    let one = spin_under(&h, &ex, "one", 1.0).await;
    assert!((40.0..=60.0).contains(&half), "0.5 cores: {half:.1}%");
    assert!((80.0..=110.0).contains(&one), "1 core: {one:.1}%");
}
