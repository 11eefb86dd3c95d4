//! `fcexec run` answers SIGINT and SIGTERM while the start is still being
//! validated: a request whose kernel "blocks" (the debug-build seam
//! `FCEXEC_TEST_STUCK_PATH`, standing in for a file system that does not
//! answer) exits 130 or 143 at once, not at the validation time limit, and
//! leaves no VM behind.

#![cfg(debug_assertions)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{finish, Fcexec, Run, LIMIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How soon after the signal fcexec must be gone (the runtime gives its
/// blocking pool one second at exit).
const PROMPT: Duration = Duration::from_secs(4);

/// Runs `fcexec run` on a kernel whose validation blocks, sends `signal`
/// once the validation is stuck, and returns the outcome and how long the
/// exit took after the signal.
fn interrupt_stuck_start(f: &Fcexec, signal: Signal) -> (Run, Duration) {
    let kernel = test_guest::write_kernel(f.dir.path()).unwrap();
    let rootfs = f.dir.path().join("rootfs.img");
    std::fs::write(&rootfs, vec![0u8; 64 << 10]).unwrap();
    let (k, r) = (kernel.display().to_string(), rootfs.display().to_string());
    let mut cmd = f.command(&["run", "--kernel", &k, "--rootfs", &r]);
    cmd.env("FCEXEC_TEST_STUCK_PATH", &kernel)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match seen.recv_timeout(left) {
            Ok(line) if line.contains("test seam: engine_spec.params.kernel_image blocks") => break,
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("the validation never got stuck ({e}): {:?}", reader.join());
            }
        }
    }
    let signalled = Instant::now();
    kill(Pid::from_raw(child.id() as i32), signal).unwrap();
    let out = finish(child, LIMIT);
    let took = signalled.elapsed();
    let mut run = Run::from(out);
    run.stderr = reader.join().unwrap();
    (run, took)
}

#[test]
fn sigint_during_a_stuck_validation_exits_130_at_once() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let (run, took) = interrupt_stuck_start(&f, Signal::SIGINT);
    let run = run.expect(130);
    assert!(took < PROMPT, "exited {took:?} after SIGINT: {run:?}");
    assert!(
        run.stderr.contains("interrupted before execution"),
        "{run:?}"
    );
    f.assert_nothing_left();
}

#[test]
fn sigterm_during_a_stuck_validation_exits_143_at_once() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let (run, took) = interrupt_stuck_start(&f, Signal::SIGTERM);
    let run = run.expect(143);
    assert!(took < PROMPT, "exited {took:?} after SIGTERM: {run:?}");
    f.assert_nothing_left();
}
