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
        let ps = f.run(&["ps"]).expect(0);
        assert!(ps.stdout.contains('k'), "{step}: {ps:?}");
        f.run(&["cleanup"]).expect(0);
        f.assert_nothing_left();
        assert!(!f.state().join("cli/k").exists(), "{step}");
    }
}
