//! The executor contract against the real VMM and the test guest: start,
//! wait, run, cancel, cleanup, pause, resume, remove, list, status.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, files_under, firecracker_pids, Harness};
use fcexec::{ExecutionStatus, ExecutorError, LogOptions};
use test_guest::Job;

#[tokio::test]
async fn run_reports_agent_exit_codes_and_keeps_streams_apart() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("codes").await;
    for code in [0u8, 3, 255] {
        let id = format!("code-{code}");
        let job = Job::new().out("to stdout\n").err("to stderr\n").exit(code);
        let result = ex.run(&h.agent(&id, &job)).await.unwrap();
        assert_eq!(result.exit_code, i32::from(code), "{result:?}");
        assert_eq!(result.stdout, "to stdout\n");
        assert_eq!(result.stderr, "to stderr\n");
        assert_eq!(result.error_msg, "");
        assert!(!result.killed);
        let want = if code == 0 {
            ExecutionStatus::Success
        } else {
            ExecutionStatus::Failed
        };
        assert_eq!(ex.status(&id).unwrap(), want);
    }
}

#[tokio::test]
async fn plain_mode_serial_is_stdout_and_clean_shutdown_is_zero() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("plain").await;
    // '_' and '.' are valid execution ids, though not valid Firecracker instance ids.
    let result = ex.run(&h.plain("p_1.x", &Job::new())).await.unwrap();
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert!(result.stdout.contains(test_guest::GREETING), "{result:?}");
}

#[tokio::test]
async fn start_twice_unknown_ids_cancel_twice_and_wait_after_the_end() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("edges").await;
    let request = h.agent("twice", &Job::new().hang());
    ex.start(&request).await.unwrap();
    assert_eq!(ex.status("twice").unwrap(), ExecutionStatus::Running);
    let err = ex.start(&request).await.unwrap_err();
    assert!(matches!(err, ExecutorError::AlreadyStarted(_)), "{err}");

    assert!(matches!(
        ex.wait("nope").await.unwrap_err(),
        ExecutorError::NotFound(_)
    ));
    assert!(matches!(
        ex.cancel("nope").await.unwrap_err(),
        ExecutorError::NotFound(_)
    ));

    ex.cancel("twice").await.unwrap();
    let err = ex.cancel("twice").await.unwrap_err();
    assert!(matches!(err, ExecutorError::WrongState { .. }), "{err}");
    let result = ex.wait("twice").await.unwrap();
    assert!(result.killed, "{result:?}");
    assert_eq!(result.exit_code, -1);
    assert!(!result.error_msg.is_empty());
    // Waiting again on a finished execution returns its result.
    assert_eq!(ex.wait("twice").await.unwrap(), result);
    let err = ex.start(&request).await.unwrap_err();
    assert!(matches!(err, ExecutorError::AlreadyFinished(_)), "{err}");
}

#[tokio::test]
async fn ten_waiters_and_a_dropped_one() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = std::sync::Arc::new(h.executor("waiters").await);
    ex.start(&h.agent("w", &Job::new().sleep(300).out("done\n").exit(9)))
        .await
        .unwrap();
    // A waiter that gives up affects no one.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), ex.wait("w"))
            .await
            .is_err()
    );
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let ex = ex.clone();
            tokio::spawn(async move { ex.wait("w").await.unwrap() })
        })
        .collect();
    for w in waiters {
        let r = w.await.unwrap();
        assert_eq!((r.exit_code, r.stdout.as_str()), (9, "done\n"));
    }
}

#[tokio::test]
async fn pause_resume_and_wait_for_status() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("pause").await;
    ex.start(&h.agent("pz", &Job::new().hang())).await.unwrap();
    ex.pause("pz").await.unwrap();
    assert_eq!(ex.status("pz").unwrap(), ExecutionStatus::Paused);
    assert!(matches!(
        ex.pause("pz").await.unwrap_err(),
        ExecutorError::WrongState { .. }
    ));
    ex.resume("pz").await.unwrap();
    ex.wait_for_status("pz", ExecutionStatus::Running, Duration::from_secs(1))
        .await
        .unwrap();
    let err = ex
        .wait_for_status("pz", ExecutionStatus::Success, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::StatusTimeout { .. }), "{err}");
    ex.cancel("pz").await.unwrap();
    let err = ex
        .wait_for_status("pz", ExecutionStatus::Success, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ExecutorError::StatusUnreachable { .. }),
        "{err}"
    );
}

#[tokio::test]
async fn remove_stops_and_forgets_and_list_follows() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("rm").await;
    ex.start(&h.agent("a", &Job::new().hang())).await.unwrap();
    ex.run(&h.agent("b", &Job::new().exit(0))).await.unwrap();
    let ids: Vec<_> = ex
        .list()
        .into_iter()
        .map(|i| (i.execution_id, i.status))
        .collect();
    assert_eq!(
        ids,
        [
            ("a".to_string(), ExecutionStatus::Running),
            ("b".to_string(), ExecutionStatus::Success)
        ]
    );
    ex.remove("a", Duration::from_secs(5)).await.unwrap();
    ex.remove("b", Duration::from_secs(5)).await.unwrap();
    assert!(ex.list().is_empty());
    assert!(matches!(
        ex.status("a").unwrap_err(),
        ExecutorError::NotFound(_)
    ));
    assert_eq!(files_under(ex.state_dir()), ["firecracker-version", "lock"]);
    assert!(firecracker_pids(ex.state_dir()).is_empty());
}

#[tokio::test]
async fn kill_9_of_the_vmm_fails_the_execution_with_a_reason_within_a_second() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("kill9").await;
    ex.start(&h.agent("k", &Job::new().hang())).await.unwrap();
    let pids = firecracker_pids(&ex.state_dir().join("k"));
    assert_eq!(pids.len(), 1);
    let killed_at = Instant::now();
    // SAFETY: kill(2) with a pid of our own child.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    let result = ex.wait("k").await.unwrap();
    assert!(
        killed_at.elapsed() < Duration::from_secs(1),
        "{:?}",
        killed_at.elapsed()
    );
    assert_eq!(result.exit_code, -1);
    assert!(
        result.error_msg.contains("signal 9 (SIGKILL)"),
        "{result:?}"
    );
    assert!(!result.killed, "not killed by cancel");
    // The executor keeps serving.
    let r = ex
        .run(&h.agent("after", &Job::new().exit(5)))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 5);
}

#[tokio::test]
async fn crashes_are_failures_with_their_reason() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("crash").await;
    let r = ex
        .run(&h.agent("triple", &Job::new().out("before\n").triple()))
        .await
        .unwrap();
    assert_eq!(r.exit_code, -1);
    assert!(r.error_msg.contains("triple-fault"), "{r:?}");
    assert_eq!(r.stdout, "before\n");
    let r = ex
        .run(&h.agent("panic", &Job::new().panic("it broke")))
        .await
        .unwrap();
    assert_eq!(r.exit_code, -1);
    assert!(r.error_msg.contains("it broke"), "{r:?}");
}

#[tokio::test]
async fn cleanup_with_twenty_vms_leaves_nothing() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("clean").await;
    for i in 0..20 {
        ex.start(&h.agent(&format!("c{i}"), &Job::new().ignore_cad().hang()))
            .await
            .unwrap();
    }
    assert_eq!(firecracker_pids(ex.state_dir()).len(), 20);
    ex.cleanup().await.unwrap();
    assert!(ex.list().is_empty());
    assert!(
        eventually(Duration::from_secs(2), || firecracker_pids(ex.state_dir())
            .is_empty())
        .await,
        "no firecracker left"
    );
    assert_eq!(
        files_under(ex.state_dir()),
        ["firecracker-version", "lock"],
        "no sockets or files left"
    );
}

#[tokio::test]
async fn logs_follow_during_the_run_and_tail_after_it() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("logs").await;
    let job = Job::new()
        .out("one\n")
        .sleep(200)
        .out("two\n")
        .err("oops\n")
        .sleep(200)
        .out("three\n");
    ex.start(&h.agent("l", &job)).await.unwrap();
    let follow = ex
        .logs(
            "l",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let (out, err) = follow.collect().await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\nthree\n");
    assert_eq!(String::from_utf8(err).unwrap(), "oops\n");
    ex.wait("l").await.unwrap();
    let tail = ex
        .logs(
            "l",
            LogOptions {
                follow: false,
                tail: Some(1),
            },
        )
        .unwrap();
    let (out, _) = tail.collect().await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "three\n");
}

#[tokio::test]
async fn a_result_is_forgotten_when_persist_logs_duration_runs_out() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("persist").await;
    let mut request = h.agent("short", &Job::new().exit(0));
    request.persist_logs_duration = 300_000_000; // 300 ms, in Go's nanoseconds
    ex.run(&request).await.unwrap();
    assert_eq!(ex.status("short").unwrap(), ExecutionStatus::Success);
    assert!(
        eventually(Duration::from_secs(3), || ex.status("short").is_err()).await,
        "forgotten after its persist_logs_duration"
    );
    // Its files go right after it is forgotten (on the blocking pool).
    let dir = ex.state_dir().join("short");
    assert!(
        eventually(Duration::from_secs(3), || !dir.exists()).await,
        "its files are removed"
    );
}

#[tokio::test]
async fn a_guest_without_the_agent_fails_with_a_reason() {
    use testkit::tiny_guest::{tiny_guest, Then};
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("noagent").await;
    let plain_kernel = h.path("tiny.elf");
    std::fs::write(&plain_kernel, tiny_guest("no agent here\n", Then::Reset)).unwrap();
    let halting_kernel = h.path("halt.elf");
    std::fs::write(&halting_kernel, tiny_guest("silent\n", Then::Halt)).unwrap();

    let r = ex
        .run(&h.request(
            "quits",
            serde_json::json!({"agent": true, "kernel_image": plain_kernel}),
        ))
        .await
        .unwrap();
    assert_eq!(r.exit_code, -1);
    assert!(r.error_msg.contains("agent installed"), "{r:?}");

    let started = Instant::now();
    let r = ex
        .run(&h.request(
            "hangs",
            serde_json::json!({"agent": true, "kernel_image": halting_kernel, "boot_timeout_ms": 300}),
        ))
        .await
        .unwrap();
    assert!(r.error_msg.contains("boot timed out"), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_start_given_up_by_its_caller_still_launches_and_is_supervised() {
    let h = Harness::new(testkit::require_vmm!());
    let ex = h.executor("dropped").await;
    let request = h.agent("d", &Job::new().out("ran\n").exit(6));
    // The caller gives up almost at once; the launch goes on in its own task.
    let _ = tokio::time::timeout(Duration::from_micros(50), ex.start(&request)).await;
    let r = loop {
        match ex.wait("d").await {
            Ok(r) => break r,
            Err(ExecutorError::NotFound(_)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((r.exit_code, r.stdout.as_str()), (6, "ran\n"));
    ex.cleanup().await.unwrap();
    assert!(firecracker_pids(ex.state_dir()).is_empty());
}

#[tokio::test]
async fn new_fails_clearly_without_a_supported_firecracker() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = |bin: std::path::PathBuf| fcexec::ExecutorConfig {
        state_root: Some(dir.path().join("state")),
        firecracker: Some(bin),
        ..fcexec::ExecutorConfig::default()
    };
    let err = fcexec::Executor::new("x", config(dir.path().join("missing")))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::FirecrackerMissing(_)), "{err}");
    assert!(
        err.to_string()
            .contains("install the Firecracker v1.16.1 release"),
        "{err}"
    );
    // A stand-in that only answers --version, as an older release would.
    let old = dir.path().join("firecracker");
    std::fs::write(&old, "#!/bin/sh\necho 'Firecracker v1.15.0'\n").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = fcexec::Executor::new("x", config(old)).await.unwrap_err();
    assert!(matches!(err, ExecutorError::FirecrackerVersion(_)), "{err}");
    assert!(err.to_string().contains("v1.15.0"), "{err}");
    assert!(!dir.path().join("state").exists(), "nothing created");
}
