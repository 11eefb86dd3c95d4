//! Endurance (section E): sequential executions, then a batch at once, each
//! removed, with fds, threads, memory, files, sockets and processes before
//! and after. No raw baseline: the executions use the executor's default
//! transport (protocol 2 over vsock), whose sockets are among what is counted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::concurrency::exec_batch;
use crate::support::context::{exec_over, hi_job, leftover_dirs, Ctx};
use crate::support::procfs;
use crate::support::report::pair;
use crate::support::stats::{ms, summarize};
use crate::support::table::Table;

/// This process and the state directory at one moment.
#[derive(Debug, Clone, Copy)]
struct Census {
    fds: usize,
    threads: u64,
    rss: u64,
    heap: Option<u64>,
    dirs: usize,
    files: usize,
    sockets: usize,
    children: usize,
    zombies: usize,
    vmms: usize,
}

impl Census {
    fn take(ctx: &Ctx) -> Census {
        let (files, sockets) = procfs::files_and_sockets(ctx.executor.state_dir());
        let dirs = std::fs::read_dir(ctx.executor.state_dir())
            .map(|d| d.flatten().filter(|e| e.path().is_dir()).count())
            .unwrap_or(0);
        let children = procfs::children();
        Census {
            fds: procfs::open_fds(),
            threads: procfs::threads(),
            rss: procfs::rss_kib(None),
            heap: procfs::heap_in_use(),
            dirs,
            files,
            sockets,
            children: children.len(),
            zombies: children.iter().filter(|(_, s)| *s == 'Z').count(),
            vmms: procfs::firecracker_pids(ctx.executor.state_dir()).len(),
        }
    }
}

/// Endurance: `runs` sequential executions, then `batch` at once, each removed.
pub async fn endurance(ctx: &Arc<Ctx>, runs: usize, batch: usize) -> Result<(), String> {
    eprintln!("E: endurance, {runs} sequential then {batch} at once");
    leftover_dirs(ctx);
    ctx.keep_leftovers.store(true, Ordering::Relaxed);
    let errors_before = ctx.remove_errors.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = Census::take(ctx);
    let mut latencies = Vec::with_capacity(runs);
    let mut failures = 0;
    let t0 = Instant::now();
    for i in 0..runs {
        match exec_over(ctx, &hi_job(), None).await {
            Ok(d) => latencies.push(d),
            Err(e) => {
                failures += 1;
                eprintln!("endurance run {i} failed: {e}");
            }
        }
        if (i + 1) % 100 == 0 {
            eprintln!("  {} done, {:.0?} elapsed", i + 1, t0.elapsed());
        }
    }
    let seq_wall = t0.elapsed();
    let seq_errors = ctx.remove_errors.load(Ordering::Relaxed) - errors_before;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mid = Census::take(ctx);
    let b = exec_batch(ctx, batch, "b", None).await;
    // Idle blocking-pool threads (the launches' blocking part) are reclaimed
    // after tokio's 10 s keep-alive: count after it, not before.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let after = Census::take(ctx);
    let batch_errors = ctx.remove_errors.load(Ordering::Relaxed) - errors_before - seq_errors;
    let left = leftover_dirs(ctx);
    ctx.keep_leftovers.store(false, Ordering::Relaxed);
    leftover_dirs(ctx);

    let mut t = Table::new(&[
        "measure",
        "before",
        &format!("after {runs} sequential"),
        &format!("after {batch} at once"),
        "growth",
    ]);
    let mut row = |name: &str, f: &dyn Fn(&Census) -> i64, unit: &str| {
        let (b0, b1, b2) = (f(&before), f(&mid), f(&after));
        t.row(&[
            name.to_string(),
            format!("{b0}{unit}"),
            format!("{b1}{unit}"),
            format!("{b2}{unit}"),
            format!("{:+}{unit}", b2 - b0),
        ]);
    };
    row("open fds (/proc/self/fd)", &|c| c.fds as i64, "");
    row("threads (/proc/self/status)", &|c| c.threads as i64, "");
    row("RSS (VmRSS)", &|c| c.rss as i64, " KiB");
    if before.heap.is_some() {
        row(
            "heap in use (mallinfo2)",
            &|c| (c.heap.unwrap_or(0) / 1024) as i64,
            " KiB",
        );
    }
    row("execution dirs in the state dir", &|c| c.dirs as i64, "");
    row("files in the state dir", &|c| c.files as i64, "");
    row("sockets in the state dir", &|c| c.sockets as i64, "");
    row("child processes (PPid = us)", &|c| c.children as i64, "");
    row("  of which zombies", &|c| c.zombies as i64, "");
    row(
        "firecracker processes of the state dir",
        &|c| c.vmms as i64,
        "",
    );
    let s = summarize(&latencies);
    let window = (latencies.len() / 10).max(1);
    let first = summarize(&latencies[..window.min(latencies.len())]);
    let last = summarize(&latencies[latencies.len().saturating_sub(window)..]);
    t.row(&[
        format!("{runs} sequential: failures; wall; latency p50 / p99"),
        String::new(),
        format!(
            "{failures}; {:.1} s; {}",
            seq_wall.as_secs_f64(),
            pair(s.p50, s.p99)
        ),
        String::new(),
        String::new(),
    ]);
    t.row(&[
        format!("median of the first vs last {window} sequential runs"),
        String::new(),
        format!("{} vs {}", ms(first.p50), ms(last.p50)),
        String::new(),
        String::new(),
    ]);
    t.row(&[
        "`remove` calls that failed (their directories stay)".to_string(),
        String::new(),
        seq_errors.to_string(),
        batch_errors.to_string(),
        format!("{left} dirs left"),
    ]);
    t.row(&[
        format!("{batch} at once: failures; wall; latency p50 / p99"),
        String::new(),
        String::new(),
        format!(
            "{}; {:.1} s; {}",
            b.failures,
            b.wall.as_secs_f64(),
            pair(b.latency.p50, b.latency.p99)
        ),
        String::new(),
    ]);
    ctx.report.lock().unwrap().endurance = t;
    Ok(())
}
