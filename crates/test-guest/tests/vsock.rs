//! The test guest over protocol 2 (vsock) under the real Firecracker, with
//! the tests acting as a minimal host (`common::host`): the hello, exit codes,
//! streams, 64 MiB of bulk output, heartbeats, cancels, reconnects, a workload
//! blocked while nobody listens, malformed frames both ways, and the
//! protocol-1 fallback when there is no vsock device. Each test skips (see
//! `testkit`) without Firecracker or `/dev/kvm`.

mod common;

use std::time::{Duration, Instant};

use common::host::{boot, key, run_to_end, spawn_vsock, Frame, Listener, Stop, Transcript};
use fcexec_guest_protocol::{capability, ExitStatus, HostFrame, VERSION};
use test_guest::{bulk_pattern, Job, Stream};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn hello_and_exit_codes() {
    let vmm = testkit::require_vmm!();
    for code in [0u8, 1, 42, 255] {
        let (vm, listener) = boot(&vmm, &Job::new().exit(code), &[]);
        let t = run_to_end(&listener, TIMEOUT);
        vm.finish();
        assert_eq!(
            t.hellos,
            [Frame::Hello {
                version: VERSION,
                key: key(),
                capabilities: capability::RESUME | capability::CANCEL | capability::HEARTBEAT,
                agent: test_guest::AGENT_NAME.into(),
            }]
        );
        assert_eq!(t.exit_status(), Some(ExitStatus::Code(code)));
        assert_eq!(t.output_frames, 0);
    }
}

#[test]
fn empty_job_prints_the_greeting() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new(), &[]);
    let t = run_to_end(&listener, TIMEOUT);
    vm.finish();
    assert_eq!(t.stdout, format!("{}\n", test_guest::GREETING).as_bytes());
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(0)));
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let vmm = testkit::require_vmm!();
    let job = Job::new()
        .out("one, two: three 100%\n")
        .err("warning\n")
        .out(b"\x00\x01binary\xff")
        .bulk_err(1000)
        .chunked(Stream::Stdout, 600, 7)
        .chunked(Stream::Stderr, 10, 1)
        .exit(7);
    let (vm, listener) = boot(&vmm, &job, &[]);
    let t = run_to_end(&listener, TIMEOUT);
    let out = vm.finish();
    let mut stdout = b"one, two: three 100%\n\x00\x01binary\xff".to_vec();
    stdout.extend(bulk_pattern(600));
    let mut stderr = b"warning\n".to_vec();
    stderr.extend(bulk_pattern(1000));
    stderr.extend(bulk_pattern(10));
    assert_eq!(t.stdout, stdout);
    assert_eq!(t.stderr, stderr);
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(7)));
    // The serial console carries no frames in protocol 2.
    assert!(!String::from_utf8_lossy(&out.guest_output()).contains("#FCX1"));
}

#[test]
fn bulk_64_mib_arrives_byte_for_byte() {
    let vmm = testkit::require_vmm!();
    const BYTES: usize = 64 << 20;
    let (vm, listener) = boot(&vmm, &Job::new().bulk(BYTES as u64), &[]);
    let t = run_to_end(&listener, Duration::from_secs(120));
    let out = vm.finish();
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(0)));
    assert!(t.stdout == bulk_pattern(BYTES), "the bulk pattern differs");
    let took = t.end_at.unwrap() - t.first_output.unwrap();
    let rate = BYTES as f64 / took.as_secs_f64() / 1e6;
    println!(
        "64 MiB over vsock: first output to exit frame {took:?} ({rate:.0} MB/s), \
         spawn to VMM exit {:?}",
        out.wall
    );
}

#[test]
fn heartbeats_come_at_the_interval_until_no_heartbeat() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().sleep(1000).no_heartbeat().sleep(500).exit(0);
    let (vm, listener) = boot(&vmm, &job, &["heartbeat_ms=50"]);
    let t = run_to_end(&listener, TIMEOUT);
    vm.finish();
    let beats = &t.heartbeats;
    assert!(
        (15..=21).contains(&beats.len()),
        "{} heartbeats in 1 s at 50 ms",
        beats.len()
    );
    let gaps: Vec<_> = beats.windows(2).map(|w| w[1].0 - w[0].0).collect();
    let mean = gaps.iter().sum::<Duration>() / gaps.len() as u32;
    assert!(
        (Duration::from_millis(45)..Duration::from_millis(60)).contains(&mean),
        "mean gap {mean:?}"
    );
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(150)),
        "{gaps:?}"
    );
    assert!(beats.windows(2).all(|w| w[1].1 > w[0].1), "uptimes go up");
    // None during the last 500 ms.
    let quiet = t.end_at.unwrap() - beats.last().unwrap().0;
    assert!(quiet >= Duration::from_millis(450), "quiet for {quiet:?}");
}

#[test]
fn heartbeats_continue_while_hanging_and_cancel_ends_it() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new().out("x").hang(), &["heartbeat_ms=20"]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    let stop = conn.serve(&mut t, |t| t.heartbeats.len() >= 10, TIMEOUT);
    assert_eq!(stop, Ok(Stop::Until));
    conn.send(HostFrame::Cancel { grace_ms: 10_000 });
    let cancelled = Instant::now();
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    assert!(t.end_at.unwrap() - cancelled < Duration::from_secs(2));
    conn.send(HostFrame::Done);
    vm.finish();
    assert_eq!(t.exit_status(), Some(ExitStatus::Signal(15)));
    assert_eq!(t.stdout, b"x");
}

/// Runs `job`, sends `cancel{grace_ms}` once `ready(t)`, and returns the
/// transcript and how long after the cancel the end came.
fn cancel_when(
    job: &Job,
    ready: impl Fn(&Transcript) -> bool,
    grace_ms: u32,
) -> (Transcript, Duration) {
    let vmm = testkit::require_vmm("cancel").expect("checked by the caller");
    let (vm, listener) = boot(&vmm, job, &[]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, ready, TIMEOUT), Ok(Stop::Until));
    conn.send(HostFrame::Cancel { grace_ms });
    let cancelled = Instant::now();
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    let took = t.end_at.unwrap() - cancelled;
    conn.send(HostFrame::Done);
    vm.finish();
    (t, took)
}

#[test]
fn cancel_kills_a_sleep_with_signal_15() {
    let _vmm = testkit::require_vmm!();
    let job = Job::new().out("sleeping").sleep(60_000).out("never");
    let (t, took) = cancel_when(&job, |t| !t.stdout.is_empty(), 5000);
    assert_eq!(t.exit_status(), Some(ExitStatus::Signal(15)));
    assert_eq!(t.stdout, b"sleeping");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn on_cancel_exits_with_its_code() {
    let _vmm = testkit::require_vmm!();
    let job = Job::new().on_cancel(42).out("hanging").hang();
    let (t, took) = cancel_when(&job, |t| !t.stdout.is_empty(), 5000);
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(42)));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn cancel_stops_bulk_output_between_chunks() {
    let _vmm = testkit::require_vmm!();
    let job = Job::new().bulk(1 << 40);
    let (t, took) = cancel_when(&job, |t| t.stdout.len() >= 4 << 20, 5000);
    assert_eq!(t.exit_status(), Some(ExitStatus::Signal(15)));
    assert!(t.stdout.len() < 64 << 20);
    assert!(t.stdout == bulk_pattern(t.stdout.len()));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[test]
fn ignored_cancel_is_killed_after_the_grace_time() {
    let _vmm = testkit::require_vmm!();
    let job = Job::new().ignore_cancel().out("hanging").hang();
    let (t, took) = cancel_when(&job, |t| !t.stdout.is_empty(), 300);
    assert_eq!(t.exit_status(), Some(ExitStatus::Signal(9)));
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_millis(1300), "{took:?}");
}

#[test]
fn ignored_cancel_lets_the_workload_finish_within_the_grace_time() {
    let _vmm = testkit::require_vmm!();
    let job = Job::new().ignore_cancel().out("x").sleep(300).exit(3);
    let (t, took) = cancel_when(&job, |t| !t.stdout.is_empty(), 10_000);
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(3)));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[test]
fn reconnect_resumes_at_the_stored_offsets() {
    let vmm = testkit::require_vmm!();
    const BYTES: usize = 8 << 20;
    let job = Job::new()
        .out("start\n")
        .bulk(BYTES as u64)
        .err("end\n")
        .exit(5);
    let (vm, listener) = boot(&vmm, &job, &["heartbeat_ms=10"]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    let stop = conn.serve(&mut t, |t| t.stdout.len() > 2 << 20, TIMEOUT);
    assert_eq!(stop, Ok(Stop::Until));
    drop(conn);
    // Forget what was not acked, as a host that lost it would.
    t.stdout.truncate(t.acked[0] as usize);
    t.stderr.truncate(t.acked[1] as usize);
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    conn.send(HostFrame::Done);
    vm.finish();
    assert_eq!(t.hellos.len(), 2);
    let mut stdout = b"start\n".to_vec();
    stdout.extend(bulk_pattern(BYTES));
    assert!(t.stdout == stdout, "stdout differs");
    assert_eq!(t.stderr, b"end\n");
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(5)));
}

#[test]
fn exit_is_sent_again_after_a_reconnect() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new().out("x").exit(3), &[]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    drop(conn); // no done: the guest must come back
    let first = t.end.take();
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    assert_eq!(t.end, first);
    conn.send(HostFrame::Done);
    vm.finish();
    assert_eq!(t.stdout, b"x");
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(3)));
}

#[test]
fn output_waits_while_nobody_listens() {
    let vmm = testkit::require_vmm!();
    const BYTES: usize = 6 << 20;
    let job = Job::new().out("a").bulk(BYTES as u64).exit(0);
    let (vm, listener) = boot(&vmm, &job, &[]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    assert_eq!(
        conn.serve(&mut t, |t| !t.stdout.is_empty(), TIMEOUT),
        Ok(Stop::Until)
    );
    drop(conn);
    drop(listener); // nobody listens: Firecracker refuses the guest at once
    std::thread::sleep(Duration::from_millis(1500));
    let listener = vm.listen(1024);
    let listening = Instant::now();
    let mut conn = listener.attach(&mut t);
    assert!(
        listening.elapsed() < Duration::from_millis(1000),
        "reconnect backoff above 500 ms"
    );
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    conn.send(HostFrame::Done);
    vm.finish();
    let mut stdout = b"a".to_vec();
    stdout.extend(bulk_pattern(BYTES));
    assert!(t.stdout == stdout, "stdout differs");
    assert_eq!(t.exit_status(), Some(ExitStatus::Code(0)));
}

#[test]
fn the_guest_waits_for_a_listener_before_running() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("late").exit(0);
    let (vm, ()) = spawn_vsock(&vmm, &job, &[], |_| ());
    std::thread::sleep(Duration::from_millis(700));
    let listener = vm.listen(1024);
    let t = run_to_end(&listener, TIMEOUT);
    vm.finish();
    assert_eq!(t.stdout, b"late");
}

#[test]
fn vsock_port_comes_from_the_config_drive() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("x").exit(0);
    let (vm, listener) = spawn_vsock(&vmm, &job, &["vsock_port=5000"], |uds| {
        Listener::bind(uds, 5000)
    });
    let t = run_to_end(&listener, TIMEOUT);
    vm.finish();
    assert_eq!(t.stdout, b"x");
}

#[test]
fn the_window_holds_unacked_output() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new().bulk(8 << 20), &[]);
    let mut t = Transcript {
        acks: false,
        ..Transcript::default()
    };
    let mut conn = listener.attach(&mut t);
    // Without acks the guest stops at its 1 MiB window.
    let stop = conn.serve(&mut t, |_| false, Duration::from_millis(1500));
    assert!(stop.is_err(), "{stop:?}");
    assert!(
        (1 << 20..(1 << 20) + (128 << 10)).contains(&t.stdout.len()),
        "{}",
        t.stdout.len()
    );
    t.acks = true;
    let (stdout_offset, stderr_offset) = t.offsets();
    conn.send(HostFrame::Ack {
        stdout_offset,
        stderr_offset,
    });
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    conn.send(HostFrame::Done);
    vm.finish();
    assert_eq!(t.stdout.len(), 8 << 20);
}

#[test]
fn malformed_host_frames_fail_the_agent() {
    let vmm = testkit::require_vmm!();
    let cases: [(&[u8], &str); 3] = [
        (
            &[5, 0, 0, 0, 0x99, 0, 0, 0, 0],
            "guest protocol error: unknown frame kind 0x99",
        ),
        (
            &[0, 0, 0, 0, 0x82],
            "guest protocol error: bad frame length 0",
        ),
        (
            &[
                17, 0, 0, 0, 0x82, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
            "guest protocol error: an ack beyond the output sent",
        ),
    ];
    for (bytes, reason) in cases {
        let (vm, listener) = boot(&vmm, &Job::new().out("x").hang(), &[]);
        let mut t = Transcript::default();
        let mut conn = listener.attach(&mut t);
        assert_eq!(
            conn.serve(&mut t, |t| !t.stdout.is_empty(), TIMEOUT),
            Ok(Stop::Until)
        );
        conn.send_raw(bytes);
        assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
        // No done: the guest cannot read one after garbage, so it powers off.
        vm.finish();
        let got = t.fail_reason().expect("a fail frame");
        assert!(got.starts_with(reason), "{got:?}");
    }
}

#[test]
fn raw_bytes_reach_the_host_as_written() {
    let vmm = testkit::require_vmm!();
    let cases: [(&[u8], &str); 3] = [
        (&[5, 0, 0, 0, 0x42, 1, 2, 3, 4], "unknown frame kind 0x42"),
        (
            &[0xff, 0xff, 0xff, 0x7f, 0x02],
            "bad frame length 2147483647",
        ),
        (&[2, 0, 0, 0, 0x04, 0], "bad exit frame"),
    ];
    for (bytes, error) in cases {
        let (vm, listener) = boot(&vmm, &Job::new().out("x").raw(bytes).hang(), &[]);
        let mut t = Transcript::default();
        let mut conn = listener.attach(&mut t);
        let err = conn.serve(&mut t, |_| false, TIMEOUT).unwrap_err();
        assert!(err.contains(error), "{err}");
        assert_eq!(t.stdout, b"x");
        conn.send(HostFrame::Done);
        vm.finish();
    }
}

#[test]
fn raw_frames_after_exit_are_visible() {
    let vmm = testkit::require_vmm!();
    // An exit frame (code 0, nothing written), then a heartbeat.
    let mut exit = vec![19, 0, 0, 0, 4, 0, 0];
    exit.extend([0; 16]);
    let heartbeat = [9, 0, 0, 0, 6, 1, 0, 0, 0, 0, 0, 0, 0];
    let job = Job::new()
        .raw([exit.as_slice(), &heartbeat].concat())
        .hang();
    let (vm, listener) = boot(&vmm, &job, &[]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Ended));
    let (frame, _) = conn.next(TIMEOUT).unwrap().unwrap();
    assert!(t
        .take(frame, Instant::now())
        .unwrap_err()
        .contains("after the end"));
    conn.send(HostFrame::Done);
    vm.finish();
}

#[test]
fn hello_key_replaces_the_key() {
    let vmm = testkit::require_vmm!();
    let job = Job::new().out("x").hello_key(&[0xee; 16]);
    let (vm, listener) = boot(&vmm, &job, &[]);
    let mut conn = listener.accept(TIMEOUT).expect("a connection");
    let mut t = Transcript::default();
    let err = conn.handshake(&mut t, &key()).unwrap_err();
    assert!(err.contains("wrong key"), "{err}");
    conn.send(HostFrame::Done);
    vm.finish();
}

#[test]
fn poweroff_stops_without_reporting() {
    let vmm = testkit::require_vmm!();
    let (vm, listener) = boot(&vmm, &Job::new().out("x").poweroff().exit(1), &[]);
    let mut t = Transcript::default();
    let mut conn = listener.attach(&mut t);
    assert_eq!(conn.serve(&mut t, |_| false, TIMEOUT), Ok(Stop::Closed));
    vm.finish();
    assert_eq!(t.end, None);
}

#[test]
fn bad_job_and_panic_fail_over_vsock() {
    let vmm = testkit::require_vmm!();
    let cases = [
        (
            "out:x,exit:256".to_string(),
            "bad job: operation 1 `exit:256`: exit code above 255",
        ),
        (
            Job::new().out("x").panic("it broke: badly").to_string(),
            "it broke: badly",
        ),
    ];
    for (job, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("config.img");
        let uds = dir.path().join("v.sock");
        common::config_drive_lines(&cfg, common::KEY, &["proto=2".into(), format!("job={job}")]);
        let listener = Listener::bind(&uds, 1024);
        let spec = common::VmSpec::new("console=ttyS0")
            .drive(&cfg, true)
            .with_vsock(&uds);
        let vm = common::spawn(&vmm, &spec);
        let t = run_to_end(&listener, TIMEOUT);
        let out = vm.wait(TIMEOUT);
        assert!(out.status.success());
        assert_eq!(t.fail_reason(), Some(reason));
    }
}

#[test]
fn protocol_2_without_a_vsock_device_fails_over_serial() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.img");
    common::config_drive_lines(&cfg, common::KEY, &["proto=2".into(), "job=exit:0".into()]);
    let spec = common::VmSpec::new("console=ttyS0").drive(&cfg, true);
    let d = common::spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.kinds(), ["hello", "fail"]);
    assert_eq!(d.frames[1].payload, b"protocol 2 needs a vsock device");
}

#[test]
fn protocol_1_is_unchanged_with_a_vsock_device() {
    let vmm = testkit::require_vmm!();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.img");
    let job = Job::new().out("one").err("two").exit(4);
    common::config_drive(&cfg, common::KEY, Some(&job));
    let spec = common::VmSpec::new("console=ttyS0")
        .drive(&cfg, true)
        .with_vsock(&dir.path().join("v.sock"));
    let d = common::spawn(&vmm, &spec).wait(TIMEOUT).decode();
    assert_eq!(d.kinds(), ["hello", "out", "err", "exit"]);
    assert_eq!(d.exit_code(), Some(4));
}
