//! The loop with real children (no chroot, no user switch) against a
//! scripted host on a Unix socket: the agent runs in a thread, the host in
//! the test's.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

use fcexec_guest_protocol::HostFrame;

use super::*;
use crate::channel::Channel;
use crate::job::Output;
use crate::session::Session;
use crate::session::DEFAULT_RETAIN;
use crate::transport::UnixTransport;

use crate::test_host as host;
use host::{accept, no_hook, serve as host_serve, serve_attached, Frame, Stored, KEY};

const LONG: Duration = Duration::from_secs(20);

struct TestWorkload {
    steps: Option<Result<Steps, String>>,
    finished: usize,
}

impl Workload for TestWorkload {
    fn prepare(&mut self) -> Result<Steps, String> {
        self.steps
            .take()
            .unwrap_or_else(|| Err("prepared twice".into()))
    }

    fn finish(&mut self) {
        self.finished += 1;
    }
}

fn sh(script: &str) -> Launch {
    Launch {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        working_dir: "/".into(),
        root: None,
        user: None,
        output: Output::Split,
    }
}

fn job(script: &str) -> Result<Steps, String> {
    Ok(Steps {
        scripts: Vec::new(),
        job: sh(script),
    })
}

/// The agent's side, running in a thread.
struct Agent {
    _dir: tempfile::TempDir,
    listener: UnixListener,
    done: mpsc::Receiver<(Report, usize)>,
}

impl Agent {
    fn wait(&self) -> (Report, usize) {
        self.done
            .recv_timeout(LONG)
            .expect("the agent did not return")
    }
}

struct Setup {
    heartbeat_ms: u64,
    retain: usize,
    options: Options,
    no_vsock_console: Option<std::path::PathBuf>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            heartbeat_ms: 0,
            retain: DEFAULT_RETAIN,
            options: Options::default(),
            no_vsock_console: None,
        }
    }
}

fn start(steps: Result<Steps, String>, setup: Setup) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("host.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let transport = UnixTransport {
            no_vsock: setup.no_vsock_console.is_some(),
            console: setup.no_vsock_console.clone(),
            ..UnixTransport::new(path)
        };
        let session = Session::new(KEY, 1024, setup.heartbeat_ms, setup.retain, Instant::now());
        let mut channel = Channel::v2(KEY, session);
        let mut workload = TestWorkload {
            steps: Some(steps),
            finished: 0,
        };
        let mut reaper = Reaper::new(false);
        let report = serve(
            &mut channel,
            &transport,
            &mut workload,
            &mut reaper,
            &setup.options,
        );
        let _ = tx.send((report, workload.finished));
    });
    Agent {
        _dir: dir,
        listener,
        done,
    }
}

/// Runs `steps` against a well-behaved host.
fn run_plain(steps: Result<Steps, String>) -> (Report, Stored) {
    let agent = start(steps, Setup::default());
    let mut conn = accept(&agent.listener, LONG).expect("no connection");
    let mut stored = Stored::default();
    host_serve(&mut conn, &mut stored, LONG, &mut no_hook);
    let (report, finished) = agent.wait();
    assert_eq!(finished, 1, "finish runs once");
    assert!(report.acknowledged);
    (report, stored)
}

#[test]
fn a_job_reports_its_streams_apart_and_its_exit_code() {
    let (report, stored) = run_plain(job("echo out; echo err >&2; echo more; exit 3"));
    assert_eq!(stored.out(), "out\nmore\n");
    assert_eq!(stored.err(), "err\n");
    assert_eq!(stored.status(), Some(ExitStatus::Code(3)));
    assert_eq!(report.end, End::Exit(ExitStatus::Code(3)));
}

#[test]
fn exit_codes_and_a_killing_signal() {
    for (script, status) in [
        ("exit 0", ExitStatus::Code(0)),
        ("exit 255", ExitStatus::Code(255)),
        ("kill -SEGV $$", ExitStatus::Signal(11)),
    ] {
        let (_, stored) = run_plain(job(script));
        assert_eq!(stored.status(), Some(status), "{script}");
    }
}

#[test]
fn nothing_runs_before_attach_and_the_agent_waits_for_done() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let agent = start(
        job(&format!("touch {}; echo hi", marker.display())),
        Setup::default(),
    );
    let mut conn = accept(&agent.listener, LONG).unwrap();
    conn.expect_hello(LONG);
    assert_eq!(conn.recv(Duration::from_millis(300)), None);
    assert!(!marker.exists(), "the job ran before attach");
    let mut stored = Stored::default();
    conn.send(stored.attach());
    let mut got_end = false;
    while !got_end {
        let frame = conn.recv(LONG).expect("a frame");
        if stored.apply(&frame) {
            conn.send(stored.ack());
        }
        got_end = frame.is_end();
    }
    assert!(marker.exists());
    std::thread::sleep(Duration::from_millis(300));
    assert!(agent.done.try_recv().is_err(), "returned before done");
    conn.send(HostFrame::Done);
    let (report, _) = agent.wait();
    assert!(report.acknowledged);
    assert_eq!(stored.out(), "hi\n");
}

#[test]
fn a_reconnect_resends_unacked_output_and_the_end() {
    let agent = start(job("echo one; sleep 0.3; echo two"), Setup::default());
    let mut conn = accept(&agent.listener, LONG).unwrap();
    conn.expect_hello(LONG);
    conn.send(HostFrame::Attach {
        stdout_offset: 0,
        stderr_offset: 0,
    });
    let first = conn.recv(LONG);
    assert!(
        matches!(&first, Some(Frame::Output { data, .. }) if data == b"one\n"),
        "{first:?}"
    );
    drop(conn); // the host end goes away having stored 2 bytes
    let mut stored = Stored {
        stdout: b"on".to_vec(),
        ..Stored::default()
    };
    let mut conn = accept(&agent.listener, LONG).unwrap();
    host_serve(&mut conn, &mut stored, LONG, &mut no_hook);
    assert_eq!(stored.out(), "one\ntwo\n");
    assert_eq!(stored.status(), Some(ExitStatus::Code(0)));
    // Ended but no done: a third connection gets the same exit again.
    let agent2 = start(job("echo x"), Setup::default());
    let mut conn = accept(&agent2.listener, LONG).unwrap();
    let mut stored = Stored::default();
    conn.expect_hello(LONG);
    conn.send(stored.attach());
    while stored.end.is_none() {
        let frame = conn.recv(LONG).unwrap();
        stored.apply(&frame);
    }
    drop(conn);
    let mut conn = accept(&agent2.listener, LONG).unwrap();
    host_serve(&mut conn, &mut stored, LONG, &mut no_hook);
    assert_eq!(stored.status(), Some(ExitStatus::Code(0)));
    assert!(agent2.wait().0.acknowledged);
    assert!(agent.wait().0.acknowledged);
}

#[test]
fn the_retention_bound_holds_the_job_back_until_acks() {
    let setup = Setup {
        retain: 64 << 10,
        ..Setup::default()
    };
    let agent = start(job("dd if=/dev/zero bs=1000 count=1000 2>/dev/null"), setup);
    let mut conn = accept(&agent.listener, LONG).unwrap();
    conn.expect_hello(LONG);
    let mut stored = Stored::default();
    conn.send(stored.attach());
    let quiet_until = Instant::now() + Duration::from_millis(400);
    while let Some(frame) = conn.recv(quiet_until.saturating_duration_since(Instant::now())) {
        stored.apply(&frame);
    }
    assert!(
        stored.stdout.len() <= 64 << 10,
        "{} bytes sent unacked",
        stored.stdout.len()
    );
    assert!(
        stored.stdout.len() >= 32 << 10,
        "only {} bytes",
        stored.stdout.len()
    );
    assert!(stored.end.is_none(), "the job finished past the bound");
    conn.send(stored.ack());
    serve_attached(&mut conn, &mut stored, LONG, &mut no_hook);
    assert_eq!(stored.stdout.len(), 1_000_000);
    assert_eq!(stored.status(), Some(ExitStatus::Code(0)));
    agent.wait();
}

#[test]
fn heartbeats_go_out_while_the_job_runs() {
    let setup = Setup {
        heartbeat_ms: 50,
        ..Setup::default()
    };
    let agent = start(job("sleep 0.5"), setup);
    let mut conn = accept(&agent.listener, LONG).unwrap();
    let mut stored = Stored::default();
    host_serve(&mut conn, &mut stored, LONG, &mut no_hook);
    assert!(stored.heartbeats >= 5, "{} heartbeats", stored.heartbeats);
    agent.wait();
}

/// Runs a job that prints `ready` and cancels it then, with `grace_ms`.
fn cancelled(script: &str, grace_ms: u32) -> (Stored, Duration) {
    let agent = start(job(script), Setup::default());
    let mut conn = accept(&agent.listener, LONG).unwrap();
    let mut stored = Stored::default();
    let mut sent_at = None;
    host_serve(&mut conn, &mut stored, LONG, &mut |frame, conn, _| {
        if matches!(frame, Frame::Output { data, .. } if data.starts_with(b"ready")) {
            conn.send(HostFrame::Cancel { grace_ms });
            sent_at = Some(Instant::now());
        }
    });
    agent.wait();
    (stored, sent_at.expect("no ready line").elapsed())
}

#[test]
fn cancel_a_job_that_traps_sigterm_and_exits_with_its_own_code() {
    let script = r#"trap "exit 7" TERM; echo ready; while :; do sleep 0.05; done"#;
    let (stored, took) = cancelled(script, 5000);
    assert_eq!(stored.status(), Some(ExitStatus::Code(7)));
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn cancel_a_job_that_ignores_sigterm_kills_it_after_the_grace() {
    let script = r#"trap "" TERM; echo ready; while :; do sleep 0.05; done"#;
    let (stored, took) = cancelled(script, 300);
    assert_eq!(stored.status(), Some(ExitStatus::Signal(9)));
    assert!(took >= Duration::from_millis(300), "killed after {took:?}");
}

#[test]
fn provision_scripts_run_in_order_and_their_output_is_not_the_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let order = dir.path().join("order");
    let script = |name: &str, body: String| Script {
        name: name.into(),
        launch: Launch {
            output: Output::Combined,
            ..sh(&body)
        },
    };
    let steps = Steps {
        scripts: vec![
            script(
                "01-first",
                format!("echo one >> {}; echo noise", order.display()),
            ),
            script(
                "02-second",
                format!("echo two >> {}; echo noise >&2", order.display()),
            ),
        ],
        job: sh(&format!("cat {}", order.display())),
    };
    let (_, stored) = run_plain(Ok(steps));
    assert_eq!(stored.out(), "one\ntwo\n");
    assert_eq!(stored.err(), "");
}

#[test]
fn a_failing_script_fails_the_run_with_its_name_and_output() {
    let dir = tempfile::tempdir().unwrap();
    let touch = |name: &str| format!("touch {}", dir.path().join(name).display());
    let script = |name: &str, body: String| Script {
        name: name.into(),
        launch: Launch {
            output: Output::Combined,
            ..sh(&body)
        },
    };
    let noisy = "i=0; while [ $i -lt 30 ]; do echo line$i; i=$((i+1)); done; echo oops >&2; exit 4";
    let steps = Steps {
        scripts: vec![
            script("01-ok", "true".into()),
            script("02-bad", noisy.into()),
            script("03-never", touch("script-ran")),
        ],
        job: sh(&touch("job-ran")),
    };
    let (report, stored) = run_plain(Ok(steps));
    let reason = stored.fail().expect("a fail");
    let mut want = String::from("provision script 02-bad failed with exit code 4: ");
    for i in 11..30 {
        want.push_str(&format!("line{i}\n"));
    }
    want.push_str("oops");
    assert_eq!(reason, want);
    assert_eq!(report.end, End::Fail(want));
    assert!(!dir.path().join("script-ran").exists());
    assert!(!dir.path().join("job-ran").exists());
}

#[test]
fn prepare_errors_and_missing_commands_fail_with_the_reason() {
    let (report, stored) = run_plain(Err("cannot mount the volume: boom".into()));
    assert_eq!(stored.fail(), Some("cannot mount the volume: boom"));
    assert_eq!(
        report.end,
        End::Fail("cannot mount the volume: boom".into())
    );
    let steps = Steps {
        scripts: Vec::new(),
        job: Launch {
            argv: vec!["no-such-command".into()],
            ..sh("")
        },
    };
    let (_, stored) = run_plain(Ok(steps));
    assert_eq!(
        stored.fail(),
        Some("cannot run the job: `no-such-command` is not found in PATH /usr/bin:/bin")
    );
}

#[test]
fn leftover_background_processes_do_not_hold_the_end() {
    let started = Instant::now();
    let (_, stored) = run_plain(job("sleep 30 & echo started"));
    assert_eq!(stored.out(), "started\n");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_protocol_error_stops_the_job_and_fails_the_run() {
    let setup = Setup {
        options: Options {
            stop_grace: Duration::from_millis(200),
            ..Options::default()
        },
        ..Setup::default()
    };
    let agent = start(job("echo ready; sleep 30"), setup);
    let mut conn = accept(&agent.listener, LONG).unwrap();
    let mut stored = Stored::default();
    host_serve(&mut conn, &mut stored, LONG, &mut |frame, conn, _| {
        if matches!(frame, Frame::Output { .. }) {
            conn.send_raw(&[9, 0, 0, 0, 0x81]);
        }
    });
    let reason = "guest protocol error: bad attach frame: an attach body is exactly 16 bytes";
    assert_eq!(stored.fail(), Some(reason));
    let (report, _) = agent.wait();
    assert_eq!(report.end, End::Fail(reason.into()));
    assert!(!report.acknowledged);
}

#[test]
fn without_vsock_the_report_is_protocol_1_on_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let console = dir.path().join("console");
    std::fs::write(&console, "").unwrap();
    let setup = Setup {
        no_vsock_console: Some(console.clone()),
        ..Setup::default()
    };
    let agent = start(job("echo hi; exit 5"), setup);
    let (report, finished) = agent.wait();
    assert_eq!(finished, 1);
    assert_eq!(report.end, End::Exit(ExitStatus::Code(5)));
    let text = std::fs::read_to_string(&console).unwrap();
    let kinds: Vec<&str> = text.lines().map(|l| l.split(' ').nth(3).unwrap()).collect();
    assert_eq!(kinds, ["hello", "out", "exit"], "{text}");
    assert!(text
        .lines()
        .all(|l| l.starts_with(&format!("#FCX1 {} ", host::KEY_HEX))));
    assert!(Path::new(&console).exists());
}
