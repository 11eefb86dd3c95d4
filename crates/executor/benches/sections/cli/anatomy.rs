//! Section C, second part: where `fcexec run`'s time goes beyond the VMM's.
//!
//! `runs` rounds of, in rotating order, whole processes reaped with `wait4`
//! (`fcexec --version`: exec and argument parsing only; `fcexec ps` on an
//! empty state directory: runtime, `Executor::new`, listing; `firecracker
//! --version`, which `Executor::new` runs the first time it meets a binary,
//! then remembers in the runtime directory), then pieces timed in this
//! process (a tokio runtime started and stopped as the CLI does, the version
//! probe as `Executor::new` calls it, `HostLimits::detect`, `Executor::new`
//! on an empty directory with the version remembered, and under a new
//! executor id, whose runtime directory does not exist yet: the probe runs,
//! and its answer cannot be kept until a later start), then one
//! `fcexec run` with
//! `RUST_LOG=fcexec=info,firecracker_api=debug`, whose log stamps ("executor
//! ready", "spawned firecracker") and its VMM's log (first and last lines)
//! cut the run into phases. The raw VMM's phases come from the same stamps
//! of section C's raw runs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fcexec::{Executor, HostLimits};

use super::{greeting, remove_runs, runs_of};
use crate::support::context::Ctx;
use crate::support::process::{self, CliBin, Proc};
use crate::support::raw::{day_delta, log_times, second_of_day, RawRun};
use crate::support::stats::{ms2, summarize};
use crate::support::table::Table;

/// Section C's A/B samples.
pub struct Baseline {
    pub cli: Vec<Proc>,
    pub no_api: Vec<(RawRun, Duration)>,
    pub api: Vec<(RawRun, Duration)>,
}

/// The phases of one logged `fcexec run`.
#[derive(Default, Clone, Copy)]
struct Phases {
    ready: Duration,
    spawned: Duration,
    vmm_main: Duration,
    vmm_life: Duration,
    after: Duration,
    total: Duration,
}

/// The samples of the rounds.
#[derive(Default)]
struct Samples {
    version: Vec<Proc>,
    fc_version: Vec<Proc>,
    ps: Vec<Proc>,
    runtime: Vec<Duration>,
    probe: Vec<Duration>,
    host: Vec<Duration>,
    new: Vec<Duration>,
    new_cold: Vec<Duration>,
    logged: Vec<Phases>,
}

pub async fn anatomy(
    ctx: &Ctx,
    bin: &CliBin,
    root: &Path,
    runs: usize,
    base: &Baseline,
) -> Result<(), String> {
    eprintln!("C: where the CLI's time goes, {runs} rounds");
    let out = ctx.dir.join("c-anatomy.out");
    let empty = ctx.dir.join("c-empty");
    let mut s = Samples::default();
    for i in 0..runs {
        for k in 0..3 {
            match (i + k) % 3 {
                0 => {
                    let cmd = plain(&bin.path, &out)?;
                    s.version
                        .push(checked(process::run(cmd).await?, "fcexec --version")?);
                }
                1 => {
                    let cmd = plain(&ctx.firecracker, &out)?;
                    s.fc_version
                        .push(checked(process::run(cmd).await?, "firecracker --version")?);
                }
                _ => s.ps.push(
                    bin.run(&empty, &["ps"], &out, |o| o.lines().count() == 1)
                        .await?,
                ),
            }
        }
        s.runtime.push(runtime_cycle().await?);
        let began = Instant::now();
        firecracker_api::version::check(&ctx.firecracker)
            .await
            .map_err(|e| e.to_string())?;
        s.probe.push(began.elapsed());
        let began = Instant::now();
        HostLimits::detect().map_err(|e| e.to_string())?;
        s.host.push(began.elapsed());
        let began = Instant::now();
        let executor = Executor::new("empty", ctx.executor_config("c-new"))
            .await
            .map_err(|e| format!("Executor::new (empty): {e}"))?;
        s.new.push(began.elapsed());
        executor.shutdown().await;
        drop(executor);
        // A new executor id: a new runtime directory, nothing remembered.
        let began = Instant::now();
        let executor = Executor::new(&format!("cold{i}"), ctx.executor_config("c-new"))
            .await
            .map_err(|e| format!("Executor::new (cold{i}): {e}"))?;
        s.new_cold.push(began.elapsed());
        executor.shutdown().await;
        drop(executor);
        s.logged.push(logged_run(bin, root, &out).await?);
    }
    ctx.report.lock().unwrap().cli = table(&s, base);
    Ok(())
}

/// `<binary> --version`, stdout to `out`.
fn plain(binary: &Path, out: &Path) -> Result<Command, String> {
    let file = std::fs::File::create(out).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(binary);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null());
    Ok(cmd)
}

fn checked(p: Proc, what: &str) -> Result<Proc, String> {
    if p.success {
        Ok(p)
    } else {
        Err(format!("{what} failed"))
    }
}

/// A runtime as the CLI's `main` makes one: multi-threaded (a worker per
/// CPU), every driver, an empty `block_on`, `shutdown_timeout`.
async fn runtime_cycle() -> Result<Duration, String> {
    tokio::task::spawn_blocking(|| {
        let began = Instant::now();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {});
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(began.elapsed())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// One `fcexec run --no-jail` (like the raw VMM it is compared with) with
/// logging on, cut into phases by the log stamps.
async fn logged_run(bin: &CliBin, root: &Path, out: &Path) -> Result<Phases, String> {
    let mut cmd = bin.command(root, &["run", "--no-jail"], out)?;
    cmd.env("RUST_LOG", "fcexec=info,firecracker_api=debug")
        .env("NO_COLOR", "1");
    let proc = process::run(cmd).await?;
    let stdout = std::fs::read_to_string(out).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    let vmm = runs_of(root)
        .first()
        .and_then(|dir| log_times(&dir.join("firecracker.log")));
    remove_runs(root);
    if !proc.success || stdout != greeting() {
        return Err(format!(
            "logged fcexec run: stdout {stdout:?}, stderr {stderr:.300?}"
        ));
    }
    let stamp = |needle: &str| {
        stderr
            .lines()
            .find(|l| l.contains(needle))
            .and_then(log_stamp)
    };
    let (Some(ready), Some(spawned), Some((first, last))) =
        (stamp("executor ready"), stamp("spawned firecracker"), vmm)
    else {
        return Err(format!(
            "logged fcexec run: missing stamps in {stderr:.600?}"
        ));
    };
    let (start, end) = (
        second_of_day(proc.spawned_at),
        second_of_day(proc.reaped_at),
    );
    Ok(Phases {
        ready: day_delta(start, ready),
        spawned: day_delta(ready, spawned),
        vmm_main: day_delta(spawned, first),
        vmm_life: day_delta(first, last),
        after: day_delta(last, end),
        total: proc.wall,
    })
}

/// Seconds since midnight UTC of a `tracing` line
/// (`2026-11-29T11:00:43.224587Z  INFO ...`, colours stripped).
fn log_stamp(line: &str) -> Option<f64> {
    let start = line.find(|c: char| c.is_ascii_digit())?;
    let time = line[start..].split_whitespace().next()?;
    let time = time.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The table of where the time goes.
fn table(s: &Samples, base: &Baseline) -> Table {
    let mut t = Table::new(&["part", "wall p50", "wall p95", "CPU p50", "what it is"]);
    let row = |t: &mut Table, name: &str, wall: &[Duration], cpu: &[Duration], what: &str| {
        let (w, c) = (summarize(wall), summarize(cpu));
        let cell = |v: &[Duration], d: Duration| if v.is_empty() { String::new() } else { ms2(d) };
        t.row(&[
            name.to_string(),
            cell(wall, w.p50),
            cell(wall, w.p95),
            cell(cpu, c.p50),
            what.to_string(),
        ]);
    };
    let procs = |t: &mut Table, name: &str, v: &[Proc], what: &str| {
        let wall: Vec<Duration> = v.iter().map(|p| p.wall).collect();
        let cpu: Vec<Duration> = v.iter().map(|p| p.cpu.total()).collect();
        row(t, name, &wall, &cpu, what);
    };
    let raw = |t: &mut Table, name: &str, v: &[(RawRun, Duration)], what: &str| {
        let wall: Vec<Duration> = v.iter().map(|r| r.0.total).collect();
        let cpu: Vec<Duration> = v.iter().map(|r| r.1).collect();
        row(t, name, &wall, &cpu, what);
    };
    procs(
        &mut t,
        "`fcexec run` (demo guest)",
        &base.cli,
        "section C's runs; CPU of it and its children (wait4), the VMM's included",
    );
    raw(
        &mut t,
        "raw VMM --no-api",
        &base.no_api,
        "section C's runs; CPU is the VMM's",
    );
    raw(
        &mut t,
        "raw VMM --api-sock, no API call",
        &base.api,
        "as the executor starts its VMMs",
    );
    procs(
        &mut t,
        "`fcexec --version` process",
        &s.version,
        "exec of the binary, argument parsing, exit: no runtime, no executor",
    );
    procs(
        &mut t,
        "`fcexec ps` process, empty state dir",
        &s.ps,
        "runtime, `Executor::new` (version remembered), listing, runtime shutdown",
    );
    procs(
        &mut t,
        "`firecracker --version` process",
        &s.fc_version,
        "what `Executor::new` spawns when it meets a binary it has not checked (before 24cbf3c: every time)",
    );
    row(
        &mut t,
        "tokio runtime: build, `block_on`, `shutdown_timeout`",
        &s.runtime,
        &[],
        "in this process, as the CLI's `main` does it",
    );
    row(
        &mut t,
        "`firecracker_api::version::check`",
        &s.probe,
        &[],
        "in this process, as `Executor::new` calls it on a cache miss (tokio `Command::output`)",
    );
    row(
        &mut t,
        "`HostLimits::detect`",
        &s.host,
        &[],
        "in this process",
    );
    row(
        &mut t,
        "`Executor::new`, empty state dir, version remembered",
        &s.new,
        &[],
        "in this process: /dev/kvm, host limits, lock, the remembered version read, empty recovery scan",
    );
    row(
        &mut t,
        "`Executor::new`, empty state dir, new executor id",
        &s.new_cold,
        &[],
        "the same with a new runtime directory: `firecracker --version` runs (its answer is not kept: the directory is created after the check)",
    );
    let p50 = |v: &[Duration]| summarize(v).p50;
    let saved = p50(&s.new_cold).saturating_sub(p50(&s.new));
    row(
        &mut t,
        "  what remembering the version saves",
        &[saved],
        &[],
        "difference of the two medians",
    );
    let phase = |f: fn(&Phases) -> Duration| s.logged.iter().map(f).collect::<Vec<_>>();
    let logged = "one `fcexec run` with RUST_LOG=fcexec=info,firecracker_api=debug:";
    row(
        &mut t,
        &format!("{logged} spawn → \"executor ready\""),
        &phase(|p| p.ready),
        &[],
        "exec, runtime, demo images, request, `Executor::new`",
    );
    row(
        &mut t,
        "  \"executor ready\" → \"spawned firecracker\"",
        &phase(|p| p.spawned),
        &[],
        "`start`: validate, plan and files, fork/exec of the VMM",
    );
    row(
        &mut t,
        "  \"spawned firecracker\" → VMM's first log line",
        &phase(|p| p.vmm_main),
        &[],
        "the VMM's exec up to its `main`",
    );
    row(
        &mut t,
        "  VMM's first → last log line",
        &phase(|p| p.vmm_life),
        &[],
        "boot, guest, VMM exit",
    );
    row(
        &mut t,
        "  VMM's last log line → `fcexec` reaped",
        &phase(|p| p.after),
        &[],
        "VMM reaped, result, output, runtime shutdown, exit",
    );
    row(&mut t, "  total (logging on)", &phase(|p| p.total), &[], "");
    let stamps = |v: &[(RawRun, Duration)], f: fn(&RawRun, f64, f64) -> Duration| {
        v.iter()
            .filter_map(|(r, _)| r.vmm_times.map(|(a, b)| f(r, a, b)))
            .collect::<Vec<_>>()
    };
    let to_main = |r: &RawRun, a: f64, _: f64| day_delta(r.spawned_at, a);
    let life = |_: &RawRun, a: f64, b: f64| day_delta(a, b);
    let after = |r: &RawRun, a: f64, b: f64| {
        r.total
            .saturating_sub(day_delta(r.spawned_at, a) + day_delta(a, b))
    };
    row(
        &mut t,
        "raw VMM --no-api: spawn → VMM's first log line",
        &stamps(&base.no_api, to_main),
        &[],
        "section C's raw runs",
    );
    row(
        &mut t,
        "  VMM's first → last log line",
        &stamps(&base.no_api, life),
        &[],
        "",
    );
    row(
        &mut t,
        "  VMM's last log line → reaped",
        &stamps(&base.no_api, after),
        &[],
        "",
    );
    row(
        &mut t,
        "raw VMM --api-sock: VMM's first → last log line",
        &stamps(&base.api, life),
        &[],
        "",
    );
    t
}
