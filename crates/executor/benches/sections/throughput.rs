//! Section T: throughput, and what the vsock path (guest protocol 2) costs
//! next to the serial console (protocol 1). No raw baseline: both sides are
//! the executor, one request param apart (`agent_transport` left out, the
//! default vsock, or `"serial"`).
//!
//! - Bulk stdout: the test guest writes `bulk_pattern` to stdout and exits 0
//!   (`Job::bulk`): 64 MiB over vsock, 256 KiB over serial (the serial console
//!   moves about 50 KB/s here). Runs alternate between the transports, which
//!   goes first alternating too. Timed from the `start()` call to `wait()`'s
//!   result, and from the first stdout chunk a `logs(follow)` reader (opened
//!   when `start()` returns, polled beside `wait()`) sees to that result.
//!   The reader compares every chunk with `bulk_pattern` as it goes, so each
//!   run's stdout is checked byte for byte. MB/s are 10^6 bytes per second.
//! - Per execution: the one-line job run to its result (`run`), vsock vs
//!   serial, interleaved A/B pairs as in section 1.
//! - Follow latency: the guest writes `tick\n` after each of ten 100 ms
//!   sleeps of its own timer; a `logs(follow)` reader notes when each line
//!   arrives. The gaps between arrivals minus 100 ms are the delivery jitter
//!   (plus whatever jitter the guest's emulated timer has).
//!
//! Only figures: nothing here fails on a threshold. Every execution is
//! removed after it was measured.

use std::time::{Duration, Instant};

use fcexec::spec::Transport;
use fcexec::{LogOptions, LogStream, Logs};
use test_guest::Job;

use crate::support::config::Cfg;
use crate::support::context::{exec_over, hi_job, remove, Ctx, BASELINE};
use crate::support::report::{pair, verdict};
use crate::support::stats::{dratio, ms, summarize};

/// The longest one bulk or ticking execution may take, start to result.
const LIMIT: Duration = Duration::from_secs(180);
/// The target for bulk stdout over vsock, MB/s.
const TARGET_MBPS: f64 = 20.0;
/// Lines of the ticking job, and the guest's sleep before each.
const TICKS: usize = 10;
const TICK: Duration = Duration::from_millis(100);

/// The two transports measured: the default (vsock) and serial.
const SIDES: [(Option<Transport>, &str); 2] = [(None, "vsock"), (BASELINE, "serial")];

/// One bulk run.
#[derive(Debug, Clone, Copy)]
struct Bulk {
    /// `start()` call → `wait()` returned the result.
    wall: Duration,
    /// `start()` call → the follow reader's first stdout chunk.
    first: Duration,
    bytes: u64,
}

impl Bulk {
    /// Start → result, MB/s.
    fn mbps(&self) -> f64 {
        mbps(self.bytes, self.wall)
    }

    /// First stdout chunk → result, MB/s.
    fn mbps_after_first(&self) -> f64 {
        mbps(self.bytes, self.wall.saturating_sub(self.first))
    }
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    if took.is_zero() {
        0.0
    } else {
        bytes as f64 / took.as_secs_f64() / 1e6
    }
}

/// The median of `v` (the upper one of an even count, as the nearest-rank
/// p50 of `summarize`); zero when empty.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n => v[n.div_ceil(2) - 1],
    }
}

/// A rate or ratio with three significant digits or more (`0.0581`, `5.81`,
/// `58.1`, `581`).
fn num(x: f64) -> String {
    match x.abs() {
        a if a >= 100.0 => format!("{x:.0}"),
        a if a >= 10.0 => format!("{x:.1}"),
        a if a >= 1.0 => format!("{x:.2}"),
        _ => format!("{x:.3}"),
    }
}

fn list(v: &[f64]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter().map(|&x| num(x)).collect::<Vec<_>>().join(", ")
}

/// `a / b` as [`num`] (`-` when `b` is zero).
fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        num(a / b)
    }
}

/// Section T.
pub async fn throughput(ctx: &Ctx, cfg: &Cfg) -> Result<(), String> {
    let (runs, pairs, follow_runs) = (cfg.throughput_runs, cfg.transport_pairs, cfg.follow_runs);
    let sizes = [cfg.vsock_bulk, cfg.serial_bulk];
    eprintln!(
        "T: throughput: {runs} runs each of {} bytes over vsock and {} over serial; {pairs} A/B pairs; {follow_runs} ticking runs each",
        sizes[0], sizes[1]
    );
    let removes_before = ctx.remove_errors.load(std::sync::atomic::Ordering::Relaxed);
    let pattern = test_guest::bulk_pattern(sizes[0].max(sizes[1]) as usize);

    // Bulk stdout, alternating transports.
    let mut bulk: [Vec<Bulk>; 2] = [Vec::new(), Vec::new()];
    let mut bulk_fail = [0usize; 2];
    for i in 0..runs {
        for side in [i % 2, 1 - i % 2] {
            let (transport, name) = SIDES[side];
            match bulk_once(ctx, transport, sizes[side], &pattern).await {
                Ok(b) => {
                    eprintln!(
                        "  {name} {} bytes: {:.2} MB/s start → result ({:.2} s), {:.2} MB/s first chunk → result",
                        b.bytes,
                        b.mbps(),
                        b.wall.as_secs_f64(),
                        b.mbps_after_first()
                    );
                    bulk[side].push(b);
                }
                Err(e) => {
                    bulk_fail[side] += 1;
                    eprintln!("  {name} bulk run failed: {e}");
                }
            }
        }
    }

    // The one-line job, A/B.
    let mut tiny: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut tiny_fail = [0usize; 2];
    for i in 0..pairs {
        for side in [i % 2, 1 - i % 2] {
            let (transport, name) = SIDES[side];
            match exec_over(ctx, &hi_job(), transport).await {
                Ok(d) => tiny[side].push(d),
                Err(e) => {
                    tiny_fail[side] += 1;
                    eprintln!("  {name} one-line run failed: {e}");
                }
            }
        }
    }

    // Follow latency.
    let mut jitter: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut tick_fail = [0usize; 2];
    for i in 0..follow_runs {
        for side in [i % 2, 1 - i % 2] {
            let (transport, name) = SIDES[side];
            match ticks_once(ctx, transport).await {
                Ok(arrivals) => {
                    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
                    eprintln!(
                        "  {name} tick gaps: {}",
                        gaps.iter()
                            .map(|g| format!("{:.1}", g.as_secs_f64() * 1e3))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    jitter[side].extend(gaps.iter().map(|&g| g.abs_diff(TICK)));
                }
                Err(e) => {
                    tick_fail[side] += 1;
                    eprintln!("  {name} ticking run failed: {e}");
                }
            }
        }
    }

    let removes = ctx.remove_errors.load(std::sync::atomic::Ordering::Relaxed) - removes_before;
    let rates: [Vec<f64>; 2] = [0, 1].map(|s| bulk[s].iter().map(Bulk::mbps).collect());
    let after_first: [Vec<f64>; 2] =
        [0, 1].map(|s| bulk[s].iter().map(Bulk::mbps_after_first).collect());
    let walls: [Vec<Duration>; 2] = [0, 1].map(|s| bulk[s].iter().map(|b| b.wall).collect());
    let firsts: [Vec<Duration>; 2] = [0, 1].map(|s| bulk[s].iter().map(|b| b.first).collect());
    let (m, mf) = (
        [0, 1].map(|s| median(&rates[s])),
        [0, 1].map(|s| median(&after_first[s])),
    );
    let (w, f) = (
        [0, 1].map(|s| summarize(&walls[s])),
        [0, 1].map(|s| summarize(&firsts[s])),
    );
    let t = [0, 1].map(|s| summarize(&tiny[s]));
    let j = [0, 1].map(|s| summarize(&jitter[s]));
    let worst = [0, 1].map(|s| jitter[s].iter().max().copied().unwrap_or_default());
    let size = |b: u64| {
        if b >= 1 << 20 && b % (1 << 20) == 0 {
            format!("{} MiB", b >> 20)
        } else {
            format!("{} KiB", b >> 10)
        }
    };
    let mut report = ctx.report.lock().unwrap();
    let table = &mut report.throughput;
    table.row(&[
        "T".into(),
        format!(
            "bulk stdout ({} over vsock, {} over serial), `start()` call → result: median (n={} / {})",
            size(sizes[0]),
            size(sizes[1]),
            rates[0].len(),
            rates[1].len()
        ),
        format!("{} MB/s", num(m[0])),
        format!("{} MB/s", num(m[1])),
        ratio(m[0], m[1]),
        format!("vsock ≥ {TARGET_MBPS:.0} MB/s"),
        verdict(m[0] >= TARGET_MBPS),
    ]);
    table.row(&[
        "T".into(),
        "  each run, MB/s, in order".into(),
        list(&rates[0]),
        list(&rates[1]),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        "  `start()` call → result: median wall".into(),
        format!("{:.2} s", w[0].p50.as_secs_f64()),
        format!("{:.2} s", w[1].p50.as_secs_f64()),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        "bulk stdout, first stdout chunk of `logs(follow)` → result: median".into(),
        format!("{} MB/s", num(mf[0])),
        format!("{} MB/s", num(mf[1])),
        ratio(mf[0], mf[1]),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        "  each run, MB/s, in order".into(),
        list(&after_first[0]),
        list(&after_first[1]),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        "  `start()` call → first stdout chunk: median".into(),
        ms(f[0].p50),
        ms(f[1].p50),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        format!("one-line job, `run` → result: p50 / p95 ({pairs} A/B pairs; ratio of medians)"),
        pair(t[0].p50, t[0].p95),
        pair(t[1].p50, t[1].p95),
        format!("{:.2}", dratio(t[0].p50, t[1].p50)),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        format!(
            "follow latency: deviation of the gaps between `tick` lines from 100 ms, median / worst (n={} / {} gaps)",
            jitter[0].len(),
            jitter[1].len()
        ),
        pair(j[0].p50, worst[0]),
        pair(j[1].p50, worst[1]),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table.row(&[
        "T".into(),
        "failures: bulk; one-line; ticking".into(),
        format!("{}; {}; {}", bulk_fail[0], tiny_fail[0], tick_fail[0]),
        format!("{}; {}; {}", bulk_fail[1], tiny_fail[1], tick_fail[1]),
        String::new(),
        "0".into(),
        verdict(
            bulk_fail
                .iter()
                .chain(&tiny_fail)
                .chain(&tick_fail)
                .sum::<usize>()
                == 0,
        ),
    ]);
    table.row(&[
        "T".into(),
        "`remove` calls that failed in section T".into(),
        removes.to_string(),
        String::new(),
        String::new(),
        "0".into(),
        verdict(removes == 0),
    ]);
    report.notes.push(format!(
        "section T: the stdout of every bulk run was compared byte for byte with `test_guest::bulk_pattern` as the `logs(follow)` reader read it; {} vsock and {} serial runs matched in full (a difference counts as a failed run)",
        bulk[0].len(),
        bulk[1].len()
    ));
    Ok(())
}

/// One bulk run of `bytes` bytes over `transport`, checked against `pattern`,
/// then removed.
async fn bulk_once(
    ctx: &Ctx,
    transport: Option<Transport>,
    bytes: u64,
    pattern: &[u8],
) -> Result<Bulk, String> {
    let request = ctx.request_over("tb", &Job::new().bulk(bytes).exit(0), transport);
    let id = request.execution_id.clone();
    let measured = async {
        let t0 = Instant::now();
        ctx.executor
            .start(&request)
            .await
            .map_err(|e| e.to_string())?;
        let logs = ctx
            .executor
            .logs(&id, follow())
            .map_err(|e| e.to_string())?;
        let waited = async {
            let result = ctx.executor.wait(&id).await;
            (t0.elapsed(), result)
        };
        let ((wall, result), read) = tokio::join!(waited, read_bulk(logs, t0, pattern));
        let result = result.map_err(|e| e.to_string())?;
        if result.exit_code != 0 || !result.error_msg.is_empty() {
            return Err(format!(
                "exit {} error {:?}",
                result.exit_code, result.error_msg
            ));
        }
        let (first, seen) = read?;
        if seen != bytes {
            return Err(format!("{seen} bytes of stdout, not {bytes}"));
        }
        Ok(Bulk {
            wall,
            first: first.ok_or("no stdout")?,
            bytes,
        })
    };
    let outcome = tokio::time::timeout(LIMIT, measured).await;
    remove(ctx, &id).await;
    outcome.unwrap_or_else(|_| Err(format!("no result within {LIMIT:?}")))
}

/// Follows stdout to the end, comparing it with `pattern`: when the first
/// chunk came (since `t0`) and how many bytes there were.
async fn read_bulk(
    mut logs: Logs,
    t0: Instant,
    pattern: &[u8],
) -> Result<(Option<Duration>, u64), String> {
    let (mut first, mut at) = (None, 0usize);
    while let Some(chunk) = logs.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        match chunk.stream {
            LogStream::Stdout => {}
            LogStream::Stderr => {
                return Err(format!(
                    "stderr: {:?}",
                    String::from_utf8_lossy(&chunk.data)
                ))
            }
            LogStream::Console => continue,
        }
        first.get_or_insert_with(|| t0.elapsed());
        let end = at + chunk.data.len();
        if pattern.get(at..end) != Some(&chunk.data[..]) {
            return Err(format!(
                "stdout bytes {at}..{end} differ from the bulk pattern"
            ));
        }
        at = end;
    }
    Ok((first, at as u64))
}

fn follow() -> LogOptions {
    LogOptions {
        follow: true,
        tail: None,
    }
}

/// One run of the ticking job over `transport`: when each `tick` line
/// reached a `logs(follow)` reader. Removed afterwards.
async fn ticks_once(ctx: &Ctx, transport: Option<Transport>) -> Result<Vec<Instant>, String> {
    let job = (0..TICKS)
        .fold(Job::new(), |job, _| {
            job.sleep(TICK.as_millis() as u64).out("tick\n")
        })
        .exit(0);
    let request = ctx.request_over("tt", &job, transport);
    let id = request.execution_id.clone();
    let measured = async {
        ctx.executor
            .start(&request)
            .await
            .map_err(|e| e.to_string())?;
        let mut logs = ctx
            .executor
            .logs(&id, follow())
            .map_err(|e| e.to_string())?;
        let (mut arrivals, mut out) = (Vec::new(), Vec::new());
        while let Some(chunk) = logs.next().await {
            let now = Instant::now();
            let chunk = chunk.map_err(|e| e.to_string())?;
            if chunk.stream == LogStream::Stdout {
                // Lines that came together arrived at the same moment.
                let lines = chunk.data.iter().filter(|&&b| b == b'\n').count();
                arrivals.resize(arrivals.len() + lines, now);
                out.extend(chunk.data);
            }
        }
        let result = ctx.executor.wait(&id).await.map_err(|e| e.to_string())?;
        if result.exit_code != 0 || out != "tick\n".repeat(TICKS).as_bytes() {
            return Err(format!(
                "exit {} stdout {:?} error {:?}",
                result.exit_code,
                String::from_utf8_lossy(&out),
                result.error_msg
            ));
        }
        Ok(arrivals)
    };
    let outcome = tokio::time::timeout(LIMIT, measured).await;
    remove(ctx, &id).await;
    outcome.unwrap_or_else(|_| Err(format!("no result within {LIMIT:?}")))
}
