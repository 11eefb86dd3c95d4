//! Section 4: the executor's memory (RSS, heap, fds, threads) with 0 and N
//! live (`Job::hang`) executions, and the VMMs' memory. No raw baseline, so
//! the executions use the executor's default transport (protocol 2 over
//! vsock: each holds a listening socket and, once its agent is up, a
//! connection).

use std::sync::Arc;
use std::time::{Duration, Instant};

use fcexec::ExecutionRequest;
use test_guest::Job;

use crate::support::context::{leftover_dirs, Ctx};
use crate::support::procfs;
use crate::support::report::{kib, verdict};
use crate::support::stats::ms;

/// Memory of this process.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: u64,
    heap: Option<u64>,
    fds: usize,
    threads: u64,
}

impl Mem {
    fn now() -> Mem {
        Mem {
            rss: procfs::rss_kib(None),
            heap: procfs::heap_in_use(),
            fds: procfs::open_fds(),
            threads: procfs::threads(),
        }
    }
}

/// Section 4: memory with 0 and `n` live (hanging) executions.
pub async fn memory(ctx: &Arc<Ctx>, n: usize) -> Result<(), String> {
    eprintln!("4: memory with {n} live executions");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = Mem::now();
    let requests: Vec<ExecutionRequest> = (0..n)
        .map(|_| ctx.request_default("m", &Job::new().hang()))
        .collect();
    let t0 = Instant::now();
    let tasks: Vec<_> = requests
        .iter()
        .cloned()
        .map(|request| {
            let executor = ctx.executor.clone();
            tokio::spawn(async move { executor.start(&request).await.map_err(|e| e.to_string()) })
        })
        .collect();
    let mut failures = 0;
    for result in futures_util::future::join_all(tasks).await {
        if let Err(e) = result.map_err(|e| e.to_string()).and_then(|r| r) {
            failures += 1;
            eprintln!("start failed: {e}");
        }
    }
    let all_started = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let live = Mem::now();
    let running = ctx
        .executor
        .list()
        .iter()
        .filter(|i| i.status == fcexec::ExecutionStatus::Running)
        .count();
    let pids = procfs::firecracker_pids(ctx.executor.state_dir());
    let vmm_rss: Vec<u64> = pids.iter().map(|&p| procfs::rss_kib(Some(p))).collect();
    let vmm_pss: Vec<u64> = pids.iter().filter_map(|&p| procfs::pss_kib(p)).collect();
    let t1 = Instant::now();
    let cleaned = ctx.executor.cleanup().await;
    let cleanup_took = t1.elapsed();
    if let Err(e) = &cleaned {
        eprintln!("cleanup: {e}");
    }
    let left = leftover_dirs(ctx);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = Mem::now();
    let live_n = running.max(1);
    let per = |a: u64, b: u64| (a as f64 - b as f64) / live_n as f64;
    let rss_per = per(live.rss, before.rss);
    ctx.add(&[
        "4".into(),
        "executor RSS (VmRSS of this process): 0 live → N live → after cleanup()".into(),
        format!(
            "{} → {} → {}",
            kib(before.rss as f64),
            kib(live.rss as f64),
            kib(after.rss as f64)
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "4".into(),
        format!("executor RSS per live execution ({n} started at once: {running} running, {failures} failed to start)"),
        kib(rss_per),
        String::new(),
        String::new(),
        "≤ 100 KiB".into(),
        verdict(rss_per <= 100.0),
    ]);
    if let (Some(h0), Some(h1), Some(h2)) = (before.heap, live.heap, after.heap) {
        ctx.add(&[
            "4".into(),
            "executor heap in use (mallinfo2) per live execution; after cleanup()".into(),
            format!(
                "{}; {:+.0} KiB",
                kib(per(h1, h0) / 1024.0),
                (h2 as f64 - h0 as f64) / 1024.0
            ),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ]);
    }
    ctx.add(&[
        "4".into(),
        "executor fds and threads per live execution".into(),
        format!(
            "{:.1} fds ({} → {}), {:+} threads",
            per(live.fds as u64, before.fds as u64),
            before.fds,
            live.fds,
            live.threads as i64 - before.threads as i64
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    let sum: u64 = vmm_rss.iter().sum();
    let pss: u64 = vmm_pss.iter().sum();
    let count = vmm_rss.len().max(1) as f64;
    ctx.add(&[
        "4".into(),
        format!(
            "VMM processes' memory, {} live: RSS sum / avg; PSS avg",
            vmm_rss.len()
        ),
        format!(
            "{} / {}; {}",
            kib(sum as f64),
            kib(sum as f64 / count),
            kib(pss as f64 / vmm_pss.len().max(1) as f64)
        ),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "4".into(),
        format!("time to start N={n} hanging executions at once; `cleanup()` of them"),
        format!("{}; {}", ms(all_started), ms(cleanup_took)),
        String::new(),
        String::new(),
        String::new(),
        match &cleaned {
            Ok(()) => String::new(),
            Err(e) => format!("cleanup failed for {}, {left} dirs left", e.failures.len()),
        },
    ]);
    Ok(())
}
