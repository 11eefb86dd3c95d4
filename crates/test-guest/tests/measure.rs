//! Timing measurements under the real Firecracker (ignored by default; they
//! take about three minutes):
//!
//! ```text
//! cargo test -p test-guest --release --test measure -- --ignored --nocapture
//! ```
//!
//! Prints medians of 20 runs of: process spawn (`firecracker --no-api
//! --config-file`) to the first line of guest output, in plain and agent mode,
//! and the delivery of 256 KiB of bulk output in agent mode; and medians of 5
//! runs of 64 MiB of bulk output over protocol 2 (vsock).

mod common;

use std::time::Duration;

use common::host::{boot, run_to_end};
use common::{spawn, VmSpec};
use test_guest::Job;

const RUNS: usize = 20;

/// "median M (min m, max x)" of some durations.
fn summary(v: &[Duration]) -> String {
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!(
        "median {:?} (min {min:?}, max {max:?})",
        common::median(v.to_vec())
    )
}

fn first_guest_line(out: &common::Outcome) -> Duration {
    out.lines
        .iter()
        .find(|l| !common::is_firecracker_log(&l.bytes))
        .map(|l| l.at)
        .expect("no guest output")
}

#[test]
#[ignore = "slow: measurements"]
fn measure() {
    let vmm = testkit::require_vmm!();
    let (mut plain, mut agent, mut agent_exit) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let out = spawn(&vmm, &VmSpec::new("console=ttyS0")).wait(Duration::from_secs(30));
        assert!(out.status.success());
        plain.push(first_guest_line(&out));
        let out = spawn(&vmm, &VmSpec::agent(&Job::new().exit(0))).wait(Duration::from_secs(30));
        agent.push(first_guest_line(&out));
        agent_exit.push(out.wall);
    }
    println!(
        "spawn to first guest output, plain mode (greeting): {}",
        summary(&plain)
    );
    println!(
        "spawn to first guest output, agent mode (hello frame): {}",
        summary(&agent)
    );
    println!(
        "whole `exit:0` run in agent mode (spawn to VMM exit): {}",
        summary(&agent_exit)
    );

    const BYTES: usize = 256 * 1024;
    let (mut deliver, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let out = spawn(&vmm, &VmSpec::agent(&Job::new().bulk(BYTES as u64)))
            .wait(Duration::from_secs(120));
        let d = out.decode();
        assert_eq!(d.stream("out").len(), BYTES);
        let hello = d.frames.first().expect("hello").at;
        let exit = d.frames.last().expect("exit").at;
        deliver.push(exit - hello);
        wall.push(out.wall);
    }
    let rate = 256.0 / common::median(deliver.clone()).as_secs_f64();
    println!(
        "256 KiB bulk output, hello frame to exit frame: {} ({rate:.0} KiB/s)",
        summary(&deliver)
    );
    println!("256 KiB bulk output, spawn to VMM exit: {}", summary(&wall));
}

#[test]
#[ignore = "slow: measurements"]
fn measure_vsock_bulk() {
    let vmm = testkit::require_vmm!();
    const BYTES: usize = 64 << 20;
    const VSOCK_RUNS: usize = 5;
    let (mut deliver, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..VSOCK_RUNS {
        let (vm, listener) = boot(&vmm, &Job::new().bulk(BYTES as u64), &[]);
        let t = run_to_end(&listener, Duration::from_secs(120));
        let out = vm.finish();
        assert_eq!(t.stdout.len(), BYTES);
        deliver.push(t.end_at.expect("exit") - t.first_output.expect("output"));
        wall.push(out.wall);
    }
    let mb_s = |d: &Duration| BYTES as f64 / d.as_secs_f64() / 1e6;
    let runs: Vec<String> = deliver
        .iter()
        .map(|d| format!("{d:.0?} ({:.0} MB/s)", mb_s(d)))
        .collect();
    println!(
        "64 MiB over vsock, first output byte to exit frame: {} = {:.0} MB/s; runs: {}",
        summary(&deliver),
        mb_s(&common::median(deliver.clone())),
        runs.join(", ")
    );
    println!(
        "64 MiB over vsock, spawn to VMM exit: {}; runs: {wall:.0?}",
        summary(&wall)
    );
}
