//! Section C: the CLI as users start it. `fcexec --state-dir D run` (no
//! kernel: the built-in demo guest prints its greeting) as a whole process,
//! against the raw VMM booting the same guest, interleaved A/B.
//!
//! The raw VMM's configuration is planned (`support/raw.rs`) from the request
//! the CLI builds for the demo: the kernel and root image the CLI wrote under
//! `D/.demo`, agent mode, the greeting job on the config drive, default
//! resources. One difference: the raw VMM's guest reports over the serial
//! console (protocol 1, the only transport `support/raw.rs` decodes), while
//! `fcexec run` uses the executor's default, protocol 2 over vsock (the CLI
//! has no switch for it); section T measures what that difference costs per
//! execution. Both print the greeting and exit 0; both are checked. Four
//! variants rotate: `fcexec run --no-jail` (like the raw VMM, unjailed: the
//! target's row), the raw VMM with `--no-api` (the target's baseline) and
//! with `--api-sock` but no API call (the executor gives its VMMs a socket:
//! that part of the difference is the VMM's), and, as root, `fcexec run` as
//! it runs by default (jailed: jailer, own uid, chroot, cgroups; section J
//! has the jail's cost in process). The CLI is timed
//! from spawn to reaped (`wait4`, which also gives the CPU of it and of the
//! children it reaped: the VMM, and `firecracker --version` when the runtime
//! directory does not remember the binary's version); the raw VMM as
//! everywhere else, with its CPU from `getrusage(RUSAGE_CHILDREN)`. The
//! execution each `fcexec run` leaves is deleted after it (not timed), so
//! every run starts from the same empty directory.
//!
//! Then `cli/anatomy.rs` shows where the CLI's time goes.

mod anatomy;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fcexec::ExecutionRequest;
use serde_json::json;
use test_guest::Job;

use crate::support::context::Ctx;
use crate::support::process::{CliBin, Proc};
use crate::support::procfs;
use crate::support::raw::{RawMode, RawRun, RawVmm};
use crate::support::report::verdict;
use crate::support::stats::{dratio, ms, ms2, summarize};

/// The target: `fcexec run`'s median over the raw VMM's.
const TARGET: f64 = 1.10;

/// The demo's output.
pub fn greeting() -> String {
    format!("{}\n", test_guest::GREETING)
}

/// Section C.
pub async fn cli(ctx: &Ctx, pairs: usize, runs: usize, bin: &CliBin) -> Result<(), String> {
    eprintln!("C: the CLI, {pairs} rounds of `fcexec run --no-jail` / raw --no-api / raw --api-sock / `fcexec run` (jailed as root)");
    let root = ctx.dir.join("c");
    let out = ctx.dir.join("c.out");
    // SAFETY: geteuid has no preconditions.
    let jailed = unsafe { libc::geteuid() } == 0;
    for _ in 0..2 {
        run_demo(bin, &root, &out, UNJAILED).await?;
        if jailed {
            run_demo(bin, &root, &out, JAILED).await?;
        }
    }
    let raw = RawVmm::prepare(
        &ctx.dir.join("rc"),
        &ctx.firecracker,
        &demo_request(&root.join(".demo")),
        &ctx.host,
        greeting().as_bytes(),
    )?;
    for mode in [RawMode::NoApi, RawMode::ApiSocket] {
        if let Some(e) = raw.run(mode).await.error {
            return Err(format!("raw VMM (demo): {e}"));
        }
    }
    let (mut fc, mut no_api, mut api, mut fc_jailed) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut failures = [0; 4];
    let variants = if jailed { 4 } else { 3 };
    for i in 0..pairs {
        for variant in (0..variants).map(|k| (i + k) % variants) {
            let ok = match variant {
                0 => run_demo(bin, &root, &out, UNJAILED)
                    .await
                    .map(|p| fc.push(p)),
                3 => run_demo(bin, &root, &out, JAILED)
                    .await
                    .map(|p| fc_jailed.push(p)),
                1 => raw_costed(&raw, RawMode::NoApi)
                    .await
                    .map(|r| no_api.push(r)),
                _ => raw_costed(&raw, RawMode::ApiSocket)
                    .await
                    .map(|r| api.push(r)),
            };
            if let Err(e) = ok {
                failures[variant] += 1;
                eprintln!("C: run failed: {e}");
            }
        }
    }
    let wall = |v: &[Proc]| summarize(&v.iter().map(|p| p.wall).collect::<Vec<_>>());
    let cpu = |v: &[Proc]| summarize(&v.iter().map(|p| p.cpu.total()).collect::<Vec<_>>());
    let raw_wall =
        |v: &[(RawRun, Duration)]| summarize(&v.iter().map(|r| r.0.total).collect::<Vec<_>>());
    let raw_cpu = |v: &[(RawRun, Duration)]| summarize(&v.iter().map(|r| r.1).collect::<Vec<_>>());
    let (f, r, a) = (wall(&fc), raw_wall(&no_api), raw_wall(&api));
    let ratio = dratio(f.p50, r.p50);
    ctx.add(&[
        "C".into(),
        format!("`fcexec run --no-jail` (demo guest) as a whole process vs raw VMM --no-api (unjailed both), same guest: median ({pairs} interleaved rounds)"),
        ms(f.p50),
        ms(r.p50),
        format!("{ratio:.2}"),
        format!("≤ {TARGET:.2}"),
        verdict(ratio <= TARGET),
    ]);
    ctx.add(&[
        "C".into(),
        "`fcexec run`: p95".into(),
        ms(f.p95),
        ms(r.p95),
        format!("{:.2}", dratio(f.p95, r.p95)),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "C".into(),
        "`fcexec run` vs raw VMM with `--api-sock` (no API call; the executor's VMMs have a socket): median".into(),
        ms(f.p50),
        ms(a.p50),
        format!("{:.2}", dratio(f.p50, a.p50)),
        String::new(),
        String::new(),
    ]);
    let (fcpu, rcpu, acpu) = (cpu(&fc), raw_cpu(&no_api), raw_cpu(&api));
    ctx.add(&[
        "C".into(),
        "CPU (user+sys) median: `fcexec run` with its children (wait4: the VMM; `firecracker --version` only when its answer is not remembered) vs the raw VMM (getrusage CHILDREN); raw --api-sock".into(),
        ms2(fcpu.p50),
        format!("{}; {}", ms2(rcpu.p50), ms2(acpu.p50)),
        format!("{:.2}", dratio(fcpu.p50, rcpu.p50)),
        String::new(),
        String::new(),
    ]);
    ctx.add(&[
        "C".into(),
        "failures: `fcexec run --no-jail`; raw --no-api, --api-sock; `fcexec run` jailed".into(),
        failures[0].to_string(),
        format!("{}, {}; {}", failures[1], failures[2], failures[3]),
        String::new(),
        "0".into(),
        verdict(failures == [0; 4]),
    ]);
    if jailed {
        let (j, jcpu) = (wall(&fc_jailed), cpu(&fc_jailed));
        ctx.add(&[
            "C".into(),
            "`fcexec run` as it runs by default as root (jailed) vs raw VMM --no-api (unjailed): median; then its CPU".into(),
            format!("{}; CPU {}", ms(j.p50), ms2(jcpu.p50)),
            format!("{}; CPU {}", ms(r.p50), ms2(rcpu.p50)),
            format!("{:.2}; {:.2}", dratio(j.p50, r.p50), dratio(jcpu.p50, rcpu.p50)),
            String::new(),
            String::new(),
        ]);
        ctx.add(&[
            "C".into(),
            "`fcexec run` jailed vs `fcexec run --no-jail`: median wall; CPU".into(),
            format!("{}; CPU {}", ms(j.p50), ms2(jcpu.p50)),
            format!("{}; CPU {}", ms(f.p50), ms2(fcpu.p50)),
            format!(
                "{:.2}; {:.2}",
                dratio(j.p50, f.p50),
                dratio(jcpu.p50, fcpu.p50)
            ),
            String::new(),
            String::new(),
        ]);
    }
    let baseline = anatomy::Baseline {
        cli: fc,
        no_api,
        api,
    };
    anatomy::anatomy(ctx, bin, &root, runs, &baseline).await
}

/// `fcexec run`'s flags for the unjailed variant.
const UNJAILED: &[&str] = &["--no-jail"];
/// ... and for the jailed one (as root, the default): none.
const JAILED: &[&str] = &[];

/// One `fcexec --state-dir <root> run [flags]`, checked; then the execution
/// it left is deleted (not timed).
async fn run_demo(bin: &CliBin, root: &Path, out: &Path, flags: &[&str]) -> Result<Proc, String> {
    let greeting = greeting();
    let args: Vec<&str> = std::iter::once("run")
        .chain(flags.iter().copied())
        .collect();
    let run = bin.run(root, &args, out, |s| s == greeting).await;
    remove_runs(root);
    run
}

/// The executions under `<root>/cli` (the CLI's default executor id).
pub fn runs_of(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("cli"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.path())
        .collect()
}

/// Deletes every execution under `<root>/cli`.
pub fn remove_runs(root: &Path) {
    for dir in runs_of(root) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A raw run with the VMM's CPU (sequential runs only).
async fn raw_costed(raw: &RawVmm, mode: RawMode) -> Result<(RawRun, Duration), String> {
    let children = procfs::cpu_children();
    let run = raw.run(mode).await;
    let cpu = procfs::cpu_children().since(children).total();
    match &run.error {
        None => Ok((run, cpu)),
        Some(e) => Err(format!("raw VMM ({mode:?}): {e}")),
    }
}

/// The request `fcexec run` builds for its demo (see the CLI's
/// `commands/request.rs`), with the images in `demo`, except that it reports
/// over the serial console (protocol 1): the only transport the raw VMM can
/// serve (`support/raw.rs`).
fn demo_request(demo: &Path) -> ExecutionRequest {
    let job = Job::new().out(greeting()).exit(0).to_string();
    serde_json::from_value(json!({
        "job_id": "demo",
        "execution_id": "cli-raw",
        "engine_spec": {"type": "firecracker", "params": {
            "kernel_image": demo.join(test_guest::KERNEL_FILE_NAME),
            "root_file_system": demo.join("rootfs.img"),
            "agent": true,
            "agent_job": job,
            "agent_transport": "serial",
        }},
    }))
    .expect("a valid request")
}
