//! `kill -9` of `fcexec run` at each point of a launch: whatever the moment,
//! the VMM it spawned is one that `ps` shows and `cleanup` stops.
//! (`FCEXEC_TEST_PAUSE_AT` holds the launch at a step long enough to kill it.)

mod common;

use std::time::Duration;

use common::{eventually, Fcexec};

#[test]
fn a_killed_run_leaves_no_vmm_that_ps_and_cleanup_cannot_see() {
    testkit::require_vmm!();
    // Each step after the record is saved; before it no VMM exists.
    for step in ["spawn", "save-vmm", "wait-started"] {
        let f = Fcexec::new();
        let mut cmd = f.command(&["run", "--id", "k", "--job", "hang"]);
        cmd.env("FCEXEC_TEST_PAUSE_AT", format!("{step}:3000"));
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let record = f.state().join("cli/k/record.json");
        assert!(
            eventually(Duration::from_secs(10), || record.exists()),
            "{step}"
        );
        // Well inside the pause (and, from "save-vmm" on, after the spawn).
        std::thread::sleep(Duration::from_millis(500));
        child.kill().unwrap();
        child.wait().unwrap();
        let ps = f.run(&["ps", "-a"]).expect(0);
        assert!(ps.stdout.contains('k'), "{step}: {ps:?}");
        f.run(&["cleanup"]).expect(0);
        f.assert_nothing_left();
        assert!(!f.state().join("cli/k").exists(), "{step}");
    }
}

/// `kill -9` of an executor with networked executions: a new executor
/// adopts the network of a VM that runs on, and sweeps the one of a launch
/// killed before its record was written; `cleanup` then leaves nothing.
#[test]
fn a_killed_executor_leaves_no_network_behind() {
    testkit::require_vmm!();
    if !nix::unistd::geteuid().is_root()
        || std::process::Command::new("nft")
            .arg("-V")
            .output()
            .is_err()
    {
        testkit::skip(
            "a_killed_executor_leaves_no_network_behind",
            "networking needs root and nft",
        );
        return;
    }
    const POOL: &str = "10.213.0.0/16";
    let f = Fcexec::new();
    // A VM that runs on after its executor is killed...
    let mut run = f.spawn(&[
        "run",
        "--id",
        "kept",
        "--network",
        "--job",
        "out:up%0A,hang",
    ]);
    let record = f.state().join("cli/kept/record.json");
    if !eventually(Duration::from_secs(10), || record.exists()) {
        run.kill().unwrap();
        let out = run.wait_with_output().unwrap();
        panic!("no record: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(eventually(Duration::from_secs(10), || {
        testkit::network::leftovers(POOL)
            .iter()
            .any(|l| l.starts_with("namespace fcx-") && l.ends_with("-kept"))
    }));
    std::thread::sleep(Duration::from_millis(300));
    run.kill().unwrap();
    run.wait().unwrap();
    // ...and a launch killed after its network was made, before its record.
    let mut cmd = f.command(&["run", "--id", "lost", "--network", "--job", "hang"]);
    cmd.env("FCEXEC_TEST_PAUSE_AT", "create-dir:5000");
    let mut lost = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || {
        testkit::network::leftovers(POOL)
            .iter()
            .any(|l| l.starts_with("namespace fcx-") && l.ends_with("-lost"))
    }));
    // Its network is complete well before the pause ends.
    std::thread::sleep(Duration::from_millis(1500));
    lost.kill().unwrap();
    lost.wait().unwrap();
    assert!(!f.state().join("cli/lost").exists());

    // A new executor: `ps` adopts "kept" and sweeps "lost".
    let ps = f.run(&["ps"]).expect(0);
    assert!(ps.stdout.contains("kept"), "{ps:?}");
    assert!(
        ps.stdout.contains("10.213."),
        "ps shows the address: {ps:?}"
    );
    let left = testkit::network::leftovers(POOL);
    assert!(left.iter().any(|l| l.ends_with("-kept")), "{left:?}");
    assert!(!left.iter().any(|l| l.contains("lost")), "{left:?}");
    f.run(&["cleanup"]).expect(0);
    f.assert_nothing_left();
    assert_eq!(testkit::network::leftovers(POOL), Vec::<String>::new());
}
