//! Guest protocol 2 over Firecracker's hybrid vsock, against the real VMM
//! and the test guest: exit codes and streams, 64 MiB byte for byte,
//! cancel with a grace period, a hung agent, malformed frames, an executor
//! restart under a running VM, and protocol 1 over serial beside it.

mod common;

use std::time::{Duration, Instant};

use common::Harness;
use fcexec::{ExecutionStatus, Executor, ExecutorConfig, LogOptions};
use fcexec_guest_protocol::{ExitStatus, GuestFrame, Stream};
use serde_json::json;
use test_guest::Job;

fn encode(frame: GuestFrame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; frame.encoded_len()];
    frame.encode(&mut buf).unwrap();
    buf
}

async fn executor(h: &Harness, id: &str, tune: impl FnOnce(&mut ExecutorConfig)) -> Executor {
    let mut config = h.config();
    tune(&mut config);
    Executor::new(id, config).await.unwrap()
}

#[tokio::test]
async fn exit_codes_and_streams_arrive_over_vsock() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("v2-codes").await;
    for code in [0u8, 1, 42, 255] {
        let id = format!("v2-{code}");
        let job = Job::new().out("to stdout\n").err("to stderr\n").exit(code);
        let result = ex.run(&h.agent(&id, &job)).await.unwrap();
        assert_eq!(result.exit_code, i32::from(code), "{result:?}");
        assert_eq!(
            (result.stdout.as_str(), result.stderr.as_str()),
            ("to stdout\n", "to stderr\n")
        );
        assert_eq!(result.error_msg, "");
        let dir = h.state_root().join("v2-codes").join(&id);
        assert!(
            dir.join("console.log").exists(),
            "the console is kept apart"
        );
        assert!(!dir.join("serial.log").exists());
    }
}

#[tokio::test]
async fn protocol_1_over_serial_still_works() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("v1").await;
    let job = Job::new().out("old\n").err("path\n").exit(7);
    let params = json!({"agent": true, "agent_transport": "serial",
        "kernel_args": format!("console=ttyS0 {}", job.to_kernel_arg())});
    let result = ex.run(&h.request("v1", params)).await.unwrap();
    assert_eq!(
        (
            result.exit_code,
            result.stdout.as_str(),
            result.stderr.as_str()
        ),
        (7, "old\n", "path\n"),
        "{result:?}"
    );
}

#[tokio::test]
async fn sixty_four_mib_of_stdout_arrive_byte_for_byte() {
    const LEN: usize = 64 << 20;
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("bulk").await;
    let began = Instant::now();
    let result = ex
        .run(&h.agent("bulk", &Job::new().bulk(LEN as u64).exit(0)))
        .await
        .unwrap();
    let took = began.elapsed();
    assert_eq!(result.exit_code, 0, "{result:?}");
    let (out, err) = ex
        .logs("bulk", LogOptions::default())
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(err.is_empty());
    assert_eq!(out.len(), LEN);
    assert!(
        out == test_guest::bulk_pattern(LEN),
        "64 MiB differ from the pattern"
    );
    eprintln!(
        "64 MiB over vsock in {took:?} (boot to result): {:.1} MB/s",
        LEN as f64 / took.as_secs_f64() / 1e6
    );
}

#[tokio::test]
async fn cancel_gives_the_workload_its_grace_period() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = executor(&h, "cancel", |c| {
        c.cancel_grace = Duration::from_millis(800)
    })
    .await;
    let cases = [
        ("honours", Job::new().on_cancel(3), "exited with code 3"),
        (
            "ignores",
            Job::new().ignore_cancel(),
            "did not stop within its grace period",
        ),
        ("default", Job::new(), "terminated by signal 15 (SIGTERM)"),
    ];
    for (id, job, expect) in cases {
        ex.start(&h.agent(id, &job.out("up\n").hang()))
            .await
            .unwrap();
        common::wait_for_output(&ex, id, "up").await;
        let asked = Instant::now();
        ex.cancel(id).await.unwrap();
        let result = ex.wait(id).await.unwrap();
        assert!(result.error_msg.contains(expect), "{id}: {result:?}");
        assert_eq!(ex.status(id).unwrap(), ExecutionStatus::Failed);
        match id {
            "honours" => assert_eq!(result.exit_code, 3),
            "ignores" => {
                assert!(result.killed);
                assert!(
                    asked.elapsed() >= Duration::from_millis(800),
                    "killed before the grace period"
                );
            }
            _ => assert!(result.killed),
        }
    }
}

#[tokio::test]
async fn a_hung_agent_is_found_within_the_heartbeat_timeout() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = executor(&h, "hung", |c| {
        c.heartbeat_interval = Duration::from_millis(100);
        c.heartbeat_timeout = Duration::from_millis(700);
    })
    .await;
    // A quiet job that keeps its heartbeats is fine...
    let quiet = ex
        .run(&h.agent("quiet", &Job::new().sleep(1500).exit(0)))
        .await
        .unwrap();
    assert_eq!(quiet.exit_code, 0, "{quiet:?}");
    // ...and so is a paused one, which cannot send any.
    ex.start(&h.agent("paused", &Job::new().out("up\n").sleep(300).exit(0)))
        .await
        .unwrap();
    common::wait_for_output(&ex, "paused", "up").await;
    ex.pause("paused").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ex.resume("paused").await.unwrap();
    let result = ex.wait("paused").await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    // ...an agent that stops sending them is not.
    ex.start(&h.agent("hung", &Job::new().out("up\n").no_heartbeat().hang()))
        .await
        .unwrap();
    common::wait_for_output(&ex, "hung", "up").await;
    let seen = Instant::now();
    let result = ex.wait("hung").await.unwrap();
    assert!(
        result.error_msg.contains("stopped responding"),
        "{result:?}"
    );
    assert!(
        seen.elapsed() < Duration::from_secs(3),
        "found after {:?}",
        seen.elapsed()
    );
}

#[tokio::test]
async fn malformed_frames_fail_their_execution_and_spare_the_others() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("fuzzed").await;
    let out = encode(GuestFrame::Output {
        stream: Stream::Stdout,
        offset: 0,
        data: b"x",
    });
    let exit = encode(GuestFrame::Exit {
        status: ExitStatus::Code(0),
        stdout_len: 0,
        stderr_len: 0,
    });
    let mut oversized = vec![0u8; 5];
    oversized[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    oversized[4] = 0x02;
    let cases = [
        (
            "truncated",
            Job::new().raw(&out[..out.len() - 1]).poweroff(),
            "in the middle of a frame",
        ),
        (
            "oversized",
            Job::new().raw(&oversized).hang(),
            "bad frame length",
        ),
        (
            "unknown",
            Job::new().raw([1, 0, 0, 0, 0x42]).hang(),
            "unknown frame kind 0x42",
        ),
        (
            "badkey",
            Job::new().hello_key(&[0xab; 16]).out("x").exit(0),
            "wrong key",
        ),
        (
            "afterexit",
            Job::new().raw([exit.clone(), out.clone()].concat()).hang(),
            "after the agent reported the end",
        ),
    ];
    let good = h.agent("good", &Job::new().sleep(300).out("fine\n").exit(0));
    ex.start(&good).await.unwrap();
    for (id, job, _) in &cases {
        ex.start(&h.agent(id, job)).await.unwrap();
    }
    for (id, _, expect) in &cases {
        let result = ex.wait(id).await.unwrap();
        assert!(
            result.error_msg.starts_with("guest protocol error: ")
                && result.error_msg.contains(expect),
            "{id}: {result:?}"
        );
    }
    let result = ex.wait("good").await.unwrap();
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (0, "fine\n"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_restarted_executor_resumes_wait_logs_and_cancel() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("restart").await;
    let finishing = Job::new()
        .out("before\n")
        .sleep(1500)
        .out("after\n")
        .exit(5);
    first
        .start(&h.agent("finishing", &finishing))
        .await
        .unwrap();
    first
        .start(&h.agent("cancelled", &Job::new().on_cancel(4).out("up\n").hang()))
        .await
        .unwrap();
    common::wait_for_output(&first, "finishing", "before").await;
    common::wait_for_output(&first, "cancelled", "up").await;
    first.shutdown().await;
    drop(first);

    let second = h.executor("restart").await;
    let mut logs = second
        .logs(
            "finishing",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let result = second.wait("finishing").await.unwrap();
    assert_eq!(
        (result.exit_code, result.stdout.as_str()),
        (5, "before\nafter\n"),
        "{result:?}"
    );
    let mut followed = Vec::new();
    while let Some(chunk) = logs.next().await {
        followed.extend(chunk.unwrap().data);
    }
    assert_eq!(followed, b"before\nafter\n");
    second.cancel("cancelled").await.unwrap();
    let result = second.wait("cancelled").await.unwrap();
    assert_eq!(result.exit_code, 4, "{result:?}");
    assert_eq!(result.stdout, "up\n");
}

#[tokio::test]
async fn output_waits_in_the_guest_while_no_executor_listens() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("away").await;
    let job = Job::new().out("start\n").sleep(200).bulk(3 << 20).exit(0);
    first.start(&h.agent("away", &job)).await.unwrap();
    common::wait_for_output(&first, "away", "start").await;
    first.shutdown().await;
    drop(first);
    // Nobody listens while the guest writes 3 MiB: more than it may hold.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = h.executor("away").await;
    let result = second.wait("away").await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    let (out, _) = second
        .logs("away", LogOptions::default())
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut want = b"start\n".to_vec();
    want.extend(test_guest::bulk_pattern(3 << 20));
    assert!(
        out == want,
        "the output differs: {} bytes, {} expected",
        out.len(),
        want.len()
    );
}

#[tokio::test]
async fn a_follower_sees_a_chunk_soon_after_the_guest_writes_it() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("latency").await;
    let mut job = Job::new();
    for _ in 0..10 {
        job = job.sleep(100).out("tick\n");
    }
    ex.start(&h.agent("ticks", &job.exit(0))).await.unwrap();
    let mut logs = ex
        .logs(
            "ticks",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let mut arrivals = Vec::new();
    while let Some(chunk) = logs.next().await {
        let n = chunk.unwrap().data.iter().filter(|b| **b == b'\n').count();
        arrivals.extend(std::iter::repeat(Instant::now()).take(n));
    }
    assert_eq!(arrivals.len(), 10);
    // The guest writes a tick every 100 ms; the gaps a follower sees differ
    // from that by the delivery latency's jitter.
    let gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    let worst = gaps.iter().map(|g| (g - 100.0).abs()).fold(0.0, f64::max);
    eprintln!(
        "follow: gaps between ticks {gaps:.1?} ms; worst deviation from 100 ms: {worst:.1} ms"
    );
    assert!(worst < 100.0, "a tick was delayed by {worst} ms");
}
