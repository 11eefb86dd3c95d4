//! Restart recovery against the real VMM: an executor dropped while VMs run,
//! and a new one on the same state directory.

mod common;

use std::time::Duration;

use common::{eventually, firecracker_pids, Harness};
use fcexec::{ExecutionStatus, Executor, ExecutorError, LogOptions, StateDirError};
use test_guest::Job;

#[tokio::test]
async fn a_new_executor_reattaches_to_three_running_vms() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("restart").await;
    first
        .start(&h.agent("to-cancel", &Job::new().hang()))
        .await
        .unwrap();
    first
        .start(
            &h.agent(
                "to-wait",
                &Job::new()
                    .out("before\n")
                    .sleep(1500)
                    .out("after\n")
                    .exit(7),
            ),
        )
        .await
        .unwrap();
    first
        .start(&h.agent(
            "to-follow",
            &Job::new().sleep(800).out("one\n").sleep(300).out("two\n"),
        ))
        .await
        .unwrap();
    let dir = first.state_dir().to_path_buf();
    drop(first);
    assert_eq!(
        firecracker_pids(&dir).len(),
        3,
        "the VMs outlive their executor"
    );

    let second = h.executor("restart").await;
    let listed: Vec<_> = second.list().into_iter().map(|i| i.execution_id).collect();
    assert_eq!(listed, ["to-cancel", "to-follow", "to-wait"]);
    assert_eq!(
        second.status("to-cancel").unwrap(),
        ExecutionStatus::Running
    );

    second.cancel("to-cancel").await.unwrap();
    let cancelled = second.wait("to-cancel").await.unwrap();
    assert!(cancelled.killed, "{cancelled:?}");

    let logs = second
        .logs(
            "to-follow",
            LogOptions {
                follow: true,
                tail: None,
            },
        )
        .unwrap();
    let (out, _) = logs.collect().await.unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "one\ntwo\n");

    let waited = second.wait("to-wait").await.unwrap();
    assert_eq!(waited.exit_code, 7, "{waited:?}");
    assert_eq!(waited.stdout, "before\nafter\n");
    second.cleanup().await.unwrap();
    assert!(firecracker_pids(&dir).is_empty());
}

#[tokio::test]
async fn a_vm_that_died_while_no_executor_watched_is_failed_with_a_reason() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("died").await;
    first
        .start(&h.agent("victim", &Job::new().hang()))
        .await
        .unwrap();
    first
        .start(&h.agent("finisher", &Job::new().sleep(100).out("done\n").exit(4)))
        .await
        .unwrap();
    let dir = first.state_dir().to_path_buf();
    drop(first);
    let victim = firecracker_pids(&dir.join("victim"));
    // SAFETY: kill(2) of a firecracker process this test started.
    unsafe { libc::kill(victim[0] as i32, libc::SIGKILL) };
    // Let the finisher finish while no executor runs.
    tokio::time::sleep(Duration::from_millis(800)).await;

    let second = h.executor("died").await;
    let r = second.wait("victim").await.unwrap();
    assert_eq!(r.exit_code, -1);
    assert!(
        r.error_msg.contains("without a recorded exit status"),
        "{r:?}"
    );
    // The finisher's exit code is decoded from its serial log.
    let r = second.wait("finisher").await.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (4, "done\n"), "{r:?}");
    second.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_second_executor_on_the_same_directory_is_refused() {
    let h = Harness::new(testkit::require_vmm!());
    let _first = h.executor("locked").await;
    let err = Executor::new("locked", h.config()).await.unwrap_err();
    assert!(
        matches!(err, ExecutorError::StateDir(StateDirError::Locked(_))),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("in use by another fcexec executor"),
        "{err}"
    );
}

#[tokio::test]
async fn a_paused_vm_is_still_paused_after_a_restart() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("paused").await;
    first
        .start(&h.agent("pz", &Job::new().hang()))
        .await
        .unwrap();
    first.pause("pz").await.unwrap();
    drop(first);
    let second = h.executor("paused").await;
    second
        .wait_for_status("pz", ExecutionStatus::Paused, Duration::from_secs(2))
        .await
        .unwrap();
    second.resume("pz").await.unwrap();
    assert_eq!(second.status("pz").unwrap(), ExecutionStatus::Running);
    second.cleanup().await.unwrap();
}

#[tokio::test]
async fn corrupt_records_are_listed_failed_with_the_reason_and_removable() {
    let h = Harness::new(testkit::require_vmm!());
    let dir = h.state_root().join("corrupt");
    let records: [(&str, &[u8]); 3] = [
        ("empty", b""),
        ("truncated", b"{\"version\": 1, \"job_id\": \"j\", \"exec"),
        ("garbage", b"\x00\xffnot json"),
    ];
    for (id, bytes) in records {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("record.json"), bytes).unwrap();
    }
    let ex = h.executor("corrupt").await;
    let listed: Vec<_> = ex
        .list()
        .into_iter()
        .map(|i| (i.execution_id, i.status))
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|(_, s)| *s == ExecutionStatus::Failed));
    let result = ex.wait("garbage").await.unwrap();
    assert!(
        result.error_msg.starts_with("corrupt execution"),
        "{result:?}"
    );
    assert!(result.error_msg.contains("record.json"), "{result:?}");
    ex.remove("empty", Duration::from_secs(1)).await.unwrap();
    assert!(!dir.join("empty").exists());
    ex.cleanup().await.unwrap();
    assert!(ex.list().is_empty());
    assert!(!dir.join("truncated").exists() && !dir.join("garbage").exists());
}

#[tokio::test]
async fn a_record_naming_another_process_never_gets_it_signalled() {
    let h = Harness::new(testkit::require_vmm!());
    // A process fcexec did not start, named by a forged record with its
    // real pid and start time.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let pid = other.id();
    let start = firecracker_api::attach::start_time(pid).unwrap();
    let dir = h.state_root().join("forged/f");
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "version": 1, "job_id": "j", "execution_id": "f", "phase": "running",
        "mode": "plain", "pid": pid, "pid_start_time": start, "created_ms": 1
    });
    std::fs::write(dir.join("record.json"), record.to_string()).unwrap();
    let ex = h.executor("forged").await;
    // Not adopted: the execution is settled as failed, the process untouched.
    let result = ex.wait("f").await.unwrap();
    assert_eq!(result.exit_code, -1, "{result:?}");
    ex.cleanup().await.unwrap();
    assert!(
        other.try_wait().unwrap().is_none(),
        "the other process was signalled"
    );
    other.kill().unwrap();
    other.wait().unwrap();
}

#[tokio::test]
async fn finished_executions_are_found_at_once_after_a_restart() {
    let h = Harness::new(testkit::require_vmm!());
    let first = h.executor("history").await;
    for (id, code) in [("h1", 1), ("h2", 2)] {
        first
            .run(&h.agent(id, &Job::new().exit(code)))
            .await
            .unwrap();
    }
    drop(first);
    // Finished executions are loaded lazily: lookups and lists right after
    // start-up still find every one of them.
    let second = h.executor("history").await;
    assert_eq!(second.wait("h2").await.unwrap().exit_code, 2);
    assert_eq!(second.list().len(), 2);
    assert_eq!(second.status("h1").unwrap(), ExecutionStatus::Failed);
    let third = {
        drop(second);
        h.executor("history").await
    };
    assert_eq!(third.list().len(), 2);
    third.cleanup().await.unwrap();
}

#[tokio::test]
async fn with_separate_roots_only_the_runtime_tree_is_scanned_for_live_executions() {
    let h = Harness::new(testkit::require_vmm!());
    let config = || fcexec::ExecutorConfig {
        data_root: Some(h.path("data")),
        ..h.config()
    };
    let first = Executor::new("split", config()).await.unwrap();
    first
        .run(&h.agent("done", &Job::new().exit(3)))
        .await
        .unwrap();
    first
        .start(&h.agent("live", &Job::new().hang()))
        .await
        .unwrap();
    // A finished execution keeps nothing in the runtime tree.
    assert!(!h.state_root().join("split/done").exists());
    assert!(h.path("data/split/done/result.json").exists());
    drop(first);
    let second = Executor::new("split", config()).await.unwrap();
    assert_eq!(second.status("live").unwrap(), ExecutionStatus::Running);
    assert_eq!(second.wait("done").await.unwrap().exit_code, 3);
    assert_eq!(second.list().len(), 2);
    second.cleanup().await.unwrap();
    assert!(firecracker_pids(h.dir.path()).is_empty());
}

#[tokio::test]
async fn finished_executions_expire_after_a_restart_without_being_asked_for() {
    let h = Harness::new(testkit::require_vmm!());
    let config = || fcexec::ExecutorConfig {
        data_root: Some(h.path("data")),
        ..h.config()
    };
    let first = Executor::new("expiring", config()).await.unwrap();
    let mut short = h.agent("short", &Job::new().exit(0));
    short.persist_logs_duration = 1_000_000_000; // 1 s, in Go's nanoseconds
    first.run(&short).await.unwrap();
    first
        .run(&h.agent("kept", &Job::new().exit(0)))
        .await
        .unwrap();
    drop(first);
    let second = Executor::new("expiring", config()).await.unwrap();
    // Not read at start-up, yet found by id: its id is refused as finished.
    let err = second
        .start(&h.agent("kept", &Job::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::AlreadyFinished(_)), "{err}");
    // Never asked for, "short" goes when its retention runs out (the
    // background sweep finds it a few seconds after start-up).
    let dir = h.path("data/expiring/short");
    assert!(
        eventually(Duration::from_secs(8), || !dir.exists()).await,
        "{} is still there",
        dir.display()
    );
    assert!(second.status("short").is_err());
    assert_eq!(second.list().len(), 1);
    second.cleanup().await.unwrap();
}

#[tokio::test]
async fn a_live_record_without_a_runtime_directory_is_failed_when_asked_for() {
    let h = Harness::new(testkit::require_vmm!());
    // As a host restart leaves it: the data tree says running, `/run` is empty.
    let dir = h.path("data/restarted/gone");
    std::fs::create_dir_all(&dir).unwrap();
    let record = serde_json::json!({
        "version": 1, "job_id": "j", "execution_id": "gone", "phase": "running",
        "mode": "plain", "created_ms": 1
    });
    std::fs::write(dir.join("record.json"), record.to_string()).unwrap();
    let config = fcexec::ExecutorConfig {
        data_root: Some(h.path("data")),
        ..h.config()
    };
    let ex = Executor::new("restarted", config).await.unwrap();
    assert_eq!(ex.status("gone").unwrap(), ExecutionStatus::Failed);
    let result = ex.wait("gone").await.unwrap();
    assert!(result.error_msg.contains("VMM is gone"), "{result:?}");
    assert!(ex.status("never-was").is_err());
    ex.cleanup().await.unwrap();
    assert!(!dir.exists());
}
