//! Limits and all-or-nothing launches, against the real VMM: the output cap,
//! the overall timeout, the memory budget, a failure injected at every launch
//! step, and a start whose directory already exists.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{files_under, firecracker_pids, Harness};
use fcexec::{ExecutorConfig, ExecutorError, LaunchHook, LaunchStep};
use serde_json::json;
use test_guest::Job;

#[tokio::test]
async fn output_past_the_cap_fails_with_the_cap_named_and_stops_the_vm() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    let config = ExecutorConfig {
        max_output: 16 << 10,
        ..h.config()
    };
    let ex = fcexec::Executor::new("cap", config).await.unwrap();
    // Agent mode: 256 KiB of stdout, then a hang the cap must cut short.
    let job = Job::new().bulk(256 << 10).hang();
    let started = Instant::now();
    let result = ex.run(&h.agent("big", &job)).await.unwrap();
    assert_eq!(result.exit_code, -1, "{result:?}");
    assert!(result.error_msg.contains("16 KiB"), "{}", result.error_msg);
    assert!(
        result.error_msg.contains("--max-output"),
        "{}",
        result.error_msg
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        firecracker_pids(h.dir.path()).is_empty(),
        "the VM was not stopped"
    );
    // What was captured up to the cap is kept: over vsock, exactly the cap.
    let options = fcexec::LogOptions::default();
    let (out, _) = ex.logs("big", options).unwrap().collect().await.unwrap();
    assert!(
        !out.is_empty() && out.len() <= 16 << 10,
        "{} bytes",
        out.len()
    );
    assert_eq!(out, test_guest::bulk_pattern(out.len()));

    // Plain mode: the serial console is stdout, cut back to the cap.
    let result = ex.run(&h.plain("big-plain", &job)).await.unwrap();
    assert!(
        result.error_msg.contains("output limit"),
        "{}",
        result.error_msg
    );
    let options = fcexec::LogOptions::default();
    let (out, _) = ex
        .logs("big-plain", options)
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(out.len(), 16 << 10);
}

#[tokio::test]
async fn a_hanging_job_with_timeout_ms_fails_in_time() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    let ex = h.executor("timeout").await;
    let request = h.request(
        "slow",
        json!({"agent": true, "timeout_ms": 500,
               "kernel_args": format!("console=ttyS0 {}", Job::new().hang().to_kernel_arg())}),
    );
    let started = Instant::now();
    let result = ex.run(&request).await.unwrap();
    let took = started.elapsed();
    assert!(
        result.error_msg.contains("timed out after 500ms"),
        "{result:?}"
    );
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert!(firecracker_pids(h.dir.path()).is_empty());

    // The executor-wide default applies when the request gives none.
    let config = ExecutorConfig {
        default_timeout: Some(Duration::from_millis(300)),
        ..h.config()
    };
    drop(ex);
    let ex = fcexec::Executor::new("timeout-default", config)
        .await
        .unwrap();
    let result = ex.run(&h.agent("slow2", &Job::new().hang())).await.unwrap();
    assert!(
        result.error_msg.contains("timed out after 300ms"),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_memory_budget_refuses_a_start_that_does_not_fit() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    // Requests take 32 MiB each: two fit in 70 MiB, a third does not.
    let config = ExecutorConfig {
        memory_budget_mib: Some(70),
        ..h.config()
    };
    let ex = fcexec::Executor::new("budget", config).await.unwrap();
    for id in ["m1", "m2"] {
        ex.start(&h.agent(id, &Job::new().hang())).await.unwrap();
    }
    let err = ex
        .start(&h.agent("m3", &Job::new().hang()))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::OverBudget { .. }), "{err}");
    assert!(err.to_string().contains("32 MiB"), "{err}");
    assert!(ex.status("m3").is_err(), "a refused start leaves no entry");
    // Memory comes back when an execution ends.
    ex.cancel("m1").await.unwrap();
    ex.wait("m1").await.unwrap();
    ex.start(&h.agent("m3", &Job::new().hang())).await.unwrap();
    ex.cleanup().await.unwrap();
}

/// Fails one launch step, and counts the steps it saw.
#[derive(Debug)]
struct FailAt(LaunchStep, std::sync::Mutex<Vec<LaunchStep>>);

impl LaunchHook for FailAt {
    fn before(&self, _id: &str, step: LaunchStep) -> Result<(), String> {
        self.1.lock().unwrap().push(step);
        if step == self.0 {
            Err("injected".into())
        } else {
            Ok(())
        }
    }
}

#[tokio::test]
async fn a_failure_at_every_launch_step_leaves_nothing_behind() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    for step in LaunchStep::ALL {
        let hook = Arc::new(FailAt(step, Default::default()));
        let config = ExecutorConfig {
            launch_hook: Some(hook.clone()),
            ..h.config()
        };
        let ex = fcexec::Executor::new("faults", config).await.unwrap();
        let err = ex
            .start(&h.agent("f", &Job::new().hang()))
            .await
            .unwrap_err();
        let text = fcexec::error::chain(&err);
        assert!(text.contains("injected"), "{step:?}: {text}");
        assert_eq!(hook.1.lock().unwrap().last(), Some(&step));
        // No registry entry, process, socket or directory is left.
        assert!(ex.list().is_empty(), "{step:?}");
        assert!(firecracker_pids(h.dir.path()).is_empty(), "{step:?}");
        let dir = ex.state_dir().join("f");
        assert!(!dir.exists(), "{step:?}: {:?}", files_under(&dir));
        // The id is free again.
        drop(ex);
        let ex = h.executor("faults").await;
        ex.run(&h.agent("f", &Job::new().exit(0))).await.unwrap();
        ex.remove("f", Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test]
async fn a_start_whose_directory_exists_removes_nothing_it_did_not_create() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    let ex = h.executor("exists").await;
    // Someone else's directory where this execution's would go.
    let dir = ex.state_dir().join("taken");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("theirs"), b"keep me").unwrap();
    let err = ex
        .start(&h.agent("taken", &Job::new().exit(0)))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecutorError::AlreadyStarted(_)), "{err}");
    assert_eq!(std::fs::read(dir.join("theirs")).unwrap(), b"keep me");
    assert!(ex.list().is_empty());
}

#[tokio::test]
async fn results_carry_the_tail_and_results_dir_gets_the_whole_logs() {
    let vmm = testkit::require_vmm!();
    let h = Harness::new(vmm);
    let config = ExecutorConfig {
        result_output: 1000,
        ..h.config()
    };
    let ex = fcexec::Executor::new("tails", config).await.unwrap();
    let mut request = h.agent("t", &Job::new().out("a\n").bulk(5000).err("oops\n").exit(4));
    let results = h.path("results");
    request.results_dir = results.display().to_string();
    let result = ex.run(&request).await.unwrap();
    assert_eq!(result.exit_code, 4);
    assert!(
        result.stdout_truncated && !result.stderr_truncated,
        "{result:?}"
    );
    assert_eq!(result.stderr, "oops\n");
    let stdout_log = std::fs::read(results.join("stdout.log")).unwrap();
    assert_eq!(stdout_log.len(), 2 + 5000);
    assert_eq!(
        std::fs::read(results.join("stderr.log")).unwrap(),
        b"oops\n"
    );
    // The stored result does not repeat the output.
    let stored = std::fs::read_to_string(ex.state_dir().join("t/result.json")).unwrap();
    assert!(stored.len() < 400, "{stored}");
}
