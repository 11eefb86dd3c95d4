//! Request paths against the real VMM: an executor restricted to one
//! directory runs the test guest from it and refuses a kernel from
//! elsewhere before any VM starts; a validation stuck on a host path (the
//! `validation_hook` seam standing in for a file system that does not
//! answer) is refused at `validation_timeout` while another execution's
//! result arrives on time.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{firecracker_pids, Harness};
use fcexec::validate::{OpenHook, PathPolicy};
use fcexec::{ExecutorConfig, ExecutorError, ValidationError};
use test_guest::Job;

#[tokio::test]
async fn an_allowed_directory_runs_the_test_guest_and_others_are_refused() {
    let h = Harness::new(testkit::require_vmm!());
    let config = ExecutorConfig {
        path_policy: PathPolicy::only([h.dir.path()]),
        ..h.config()
    };
    let ex = fcexec::Executor::new("policy", config).await.unwrap();
    let r = ex
        .run(&h.plain("inside", &Job::new().exit(0)))
        .await
        .unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");

    let elsewhere = tempfile::tempdir().unwrap();
    let kernel = elsewhere.path().join("vmlinux");
    std::fs::copy(&h.kernel, &kernel).unwrap();
    let mut request = h.plain("outside", &Job::new().exit(0));
    let params = &mut request.engine_spec.as_mut().unwrap().params;
    params.insert("kernel_image".into(), kernel.display().to_string().into());
    let err = ex.start(&request).await.unwrap_err();
    let ExecutorError::Invalid(e @ ValidationError::OutsideAllowedDirs { .. }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(e.field(), "engine_spec.params.kernel_image", "{e}");
    assert!(ex.status("outside").is_err(), "nothing was registered");
    assert!(firecracker_pids(elsewhere.path()).is_empty());
}

#[tokio::test]
async fn a_stuck_validation_times_out_while_another_execution_finishes() {
    let h = Harness::new(testkit::require_vmm!());
    let stuck_kernel = h.path("stuck-vmlinux");
    std::fs::copy(&h.kernel, &stuck_kernel).unwrap();
    let stuck_kernel = std::fs::canonicalize(stuck_kernel).unwrap();
    let (release, held) = mpsc::channel::<()>();
    let held = Arc::new(Mutex::new(held));
    let limit = Duration::from_secs(5);
    let config = ExecutorConfig {
        validation_timeout: limit,
        // Reading this kernel "blocks" until the test lets go (at its end,
        // so that the runtime can shut down).
        validation_hook: Some(OpenHook::new(move |_, path| {
            if path == stuck_kernel {
                let held = held.lock().unwrap_or_else(|e| e.into_inner());
                let _ = held.recv_timeout(Duration::from_secs(60));
            }
        })),
        ..h.config()
    };
    let ex = fcexec::Executor::new("stuck", config).await.unwrap();
    let mut stuck = h.plain("stuck", &Job::new().exit(0));
    let params = &mut stuck.engine_spec.as_mut().unwrap().params;
    params.insert(
        "kernel_image".into(),
        h.path("stuck-vmlinux").display().to_string().into(),
    );
    let fine = h.plain("fine", &Job::new().out("on time\n").exit(0));

    let started = Instant::now();
    let stuck_start = async {
        let outcome = ex.start(&stuck).await;
        (outcome, started.elapsed())
    };
    let fine_run = async {
        // Let the stuck validation begin first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let outcome = ex.run(&fine).await;
        (outcome, started.elapsed())
    };
    let ((stuck_outcome, stuck_took), (fine_outcome, fine_took)) =
        tokio::join!(stuck_start, fine_run);

    let r = fine_outcome.unwrap();
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "on time\n"), "{r:?}");
    assert!(
        fine_took < limit,
        "the other execution took {fine_took:?}, held up by the stuck validation"
    );
    let err = stuck_outcome.unwrap_err();
    let ExecutorError::Invalid(e @ ValidationError::TimedOut { .. }) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(e.field(), "engine_spec.params.kernel_image", "{e}");
    assert!(e.to_string().contains("within 5s"), "{e}");
    assert!(
        stuck_took >= limit && stuck_took < limit + Duration::from_secs(2),
        "refused after {stuck_took:?}"
    );
    assert!(ex.status("stuck").is_err(), "nothing was registered");
    drop(release);
    ex.shutdown().await;
}
