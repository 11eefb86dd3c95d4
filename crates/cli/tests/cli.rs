//! The `fcexec` binary against the real VMM and the built-in test guest:
//! run (streaming, exit codes, JSON, detach, Ctrl-C), ps, logs, wait, rm,
//! doctor, and the read-only view while another process owns the executor.

mod common;

use std::time::Duration;

use common::{eventually, finish, Fcexec, LIMIT};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The README's first command: a fresh state directory, no kernel given.
#[test]
fn run_without_a_kernel_prints_the_greeting() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let run = f.run(&["run"]).expect(0);
    assert_eq!(run.stdout, format!("{}\n", test_guest::GREETING));
    assert_eq!(run.stderr, "");
    // Again, with the demo's images cached, through the environment variable.
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fcexec"));
    cmd.arg("run")
        .env("FCEXEC_STATE_DIR", f.state())
        .env_remove("FCEXEC_EXECUTOR");
    let again = f.run_command(cmd).expect(0);
    assert_eq!(again.stdout, format!("{}\n", test_guest::GREETING));
    f.assert_nothing_left();
}

#[test]
fn run_exits_with_the_workload_code_and_keeps_streams_apart() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let run = f
        .run(&[
            "run",
            "--job",
            "out:to%20stdout%0A,err:to%20stderr%0A,exit:3",
        ])
        .expect(3);
    assert_eq!(run.stdout, "to stdout\n");
    assert_eq!(run.stderr, "to stderr\n");
    f.assert_nothing_left();
}

#[test]
fn run_json_prints_the_result_with_the_reference_names() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let run = f
        .run(&["run", "--json", "--job", "out:hi,exit:2"])
        .expect(2);
    let value: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut keys: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        ["error_msg", "exit_code", "killed", "stderr", "stdout"]
    );
    assert_eq!(value["stdout"], "hi");
    assert_eq!(value["exit_code"], 2);
    assert_eq!(value["killed"], false);
    f.assert_nothing_left();
}

#[test]
fn ps_lists_and_logs_print_after_the_end() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    f.run(&[
        "run",
        "--id",
        "first",
        "--job",
        "out:one%0Atwo%0A,err:bad%0A",
    ])
    .expect(0);
    f.run(&["run", "--id", "second", "--job", "exit:9"])
        .expect(9);
    // Plain `ps` lists live executions only; `-a` every one.
    assert_eq!(f.run(&["ps"]).expect(0).stdout.lines().count(), 1);
    let ps = f.run(&["ps", "-a"]).expect(0);
    let lines: Vec<&str> = ps.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{ps:?}");
    assert!(lines[0].starts_with("ID"), "{ps:?}");
    for (line, (id, status, exit)) in lines[1..]
        .iter()
        .zip([("first", "success", "0"), ("second", "failed", "9")])
    {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (cells[0], cells[1], cells[2]),
            (id, status, "demo"),
            "{line}"
        );
        assert_eq!(cells[5], exit, "{line}");
        assert_eq!(cells.last(), Some(&"-"), "no network: {line}");
    }
    let json = f.run(&["ps", "-a", "--json"]).expect(0);
    let list: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(list[1]["execution_id"], "second");
    assert_eq!(list[1]["exit_code"], 9);

    let logs = f.run(&["logs", "first"]).expect(0);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("one\ntwo\n", "bad\n")
    );
    let tail = f.run(&["logs", "--tail", "1", "-f", "first"]).expect(0);
    assert_eq!(tail.stdout, "two\n");
    // The console is its own stream: what the serial port carried (the
    // test guest's note that it reports over vsock), none of the output.
    let console = f.run(&["logs", "--console", "first"]).expect(0);
    assert_eq!(console.stdout, "test-guest: protocol 2\n", "{console:?}");
    assert!(!console.stdout.contains("one\n"), "{console:?}");
    let missing = f.run(&["logs", "nope"]).expect(1);
    assert!(missing.stderr.starts_with("fcexec: "), "{missing:?}");
    f.assert_nothing_left();
}

#[test]
fn detach_then_wait_then_rm() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let started = f
        .run(&[
            "run",
            "--detach",
            "--id",
            "bg",
            "--job",
            "sleep:300,out:late%0A,exit:5",
        ])
        .expect(0);
    assert_eq!(started.stdout, "bg\n");
    let waited = f.run(&["wait", "bg"]).expect(5);
    let result: serde_json::Value = serde_json::from_str(&waited.stdout).unwrap();
    assert_eq!(
        (result["stdout"].as_str(), result["exit_code"].as_i64()),
        (Some("late\n"), Some(5))
    );
    f.run(&["rm", "bg"]).expect(0);
    assert!(!f.state().join("cli/bg").exists());
    assert_eq!(f.run(&["ps", "-a"]).expect(0).stdout.lines().count(), 1);
    f.run(&["wait", "bg"]).expect(125);
    f.assert_nothing_left();
}

/// While one `fcexec run` owns the executor, `ps`, `logs -f` and `wait` read
/// its directory, and `cancel` says who holds it.
#[test]
fn another_process_reads_while_run_owns_the_executor() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let job = "out:a%0A,sleep:1500,out:b%0A,err:e%0A,exit:7";
    let owner = f.spawn(&["run", "--id", "long", "--job", job]);
    assert!(eventually(Duration::from_secs(20), || {
        f.run(&["ps"]).stdout.contains("long")
    }));
    let ps = f.run(&["ps"]).expect(0);
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with("long") && l.contains("running")),
        "{ps:?}"
    );
    let cancel = f.run(&["cancel", "long"]).expect(1);
    assert!(
        cancel.stderr.contains("in use by another fcexec process"),
        "{cancel:?}"
    );
    assert!(
        cancel.stderr.contains(&format!("pid {}", owner.id())),
        "{cancel:?}"
    );

    let follower = f.spawn(&["logs", "-f", "long"]);
    let waiter = f.spawn(&["wait", "long"]);
    let logs = common::Run::from(finish(follower, LIMIT)).expect(0);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("a\nb\n", "e\n")
    );
    let waited = common::Run::from(finish(waiter, LIMIT)).expect(7);
    assert!(waited.stdout.contains("\"exit_code\": 7"), "{waited:?}");
    let run = common::Run::from(finish(owner, LIMIT)).expect(7);
    assert_eq!(run.stdout, "a\nb\n");
    f.assert_nothing_left();
}

/// A read-only follower whose owner goes away before the end takes the
/// executor over and goes on, printing nothing twice.
#[test]
fn a_follower_takes_over_when_the_owner_goes() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let job = "out:1%0A,sleep:1000,out:2%0A,sleep:1500,out:3%0A,exit:6";
    f.run(&["run", "-d", "--id", "relay", "--job", job])
        .expect(0);
    let owner = f.spawn(&["logs", "-f", "relay"]);
    let dir = f.state().join("cli");
    assert!(eventually(Duration::from_secs(20), || {
        fcexec::inspect::lock_holder(&dir) == Some(owner.id())
    }));
    let follower = f.spawn(&["logs", "-f", "relay"]);
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(owner.id() as i32), Signal::SIGTERM).unwrap();
    let _ = finish(owner, LIMIT);
    let logs = common::Run::from(finish(follower, LIMIT)).expect(0);
    assert_eq!(logs.stdout, "1\n2\n3\n");
    f.run(&["wait", "relay"]).expect(6);
    f.assert_nothing_left();
}

#[test]
fn ctrl_c_cancels_the_run_and_exits_130() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let run = f.spawn(&["run", "--id", "hung", "--job", "out:started%0A,hang"]);
    assert!(eventually(Duration::from_secs(20), || {
        f.run(&["logs", "hung"]).stdout.contains("started")
    }));
    kill(Pid::from_raw(run.id() as i32), Signal::SIGINT).unwrap();
    let run = common::Run::from(finish(run, LIMIT)).expect(130);
    assert!(run.stderr.contains("cancelled"), "{run:?}");
    let ps = f.run(&["ps", "-a", "--json"]).expect(0);
    let list: serde_json::Value = serde_json::from_str(&ps.stdout).unwrap();
    assert_eq!(
        (list[0]["status"].as_str(), list[0]["killed"].as_bool()),
        (Some("failed"), Some(true))
    );
    f.run(&["cleanup"]).expect(0);
    assert_eq!(f.run(&["ps", "-a"]).expect(0).stdout.lines().count(), 1);
    f.assert_nothing_left();
}

#[test]
fn a_failed_start_exits_125_with_the_reason() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let bogus = f.dir.path().join("not-a-kernel");
    std::fs::write(&bogus, b"text").unwrap();
    let bogus = bogus.to_str().unwrap();
    let run = f
        .run(&["run", "--kernel", bogus, "--rootfs", bogus])
        .expect(125);
    assert!(
        run.stderr.starts_with("fcexec: cannot start execution"),
        "{run:?}"
    );
    assert!(run.stderr.contains("kernel_image"), "{run:?}");
    assert_eq!(
        run.stderr.matches("ELF magic").count(),
        1,
        "cause printed twice: {run:?}"
    );
    f.assert_nothing_left();
}

#[test]
fn doctor_passes_here() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let doctor = f.run(&["doctor"]).expect(0);
    // The network checks (root here: all ok) come after the host's.
    let (network, lines): (Vec<&str>, Vec<&str>) = doctor
        .stdout
        .lines()
        .partition(|l| l.starts_with("ok   network: ") || l.contains("warn network: "));
    assert_eq!(network.len(), 6, "{doctor:?}");
    assert_eq!(lines.len(), 6, "{doctor:?}");
    assert!(lines[4].starts_with("ok   data directory"), "{doctor:?}");
    assert!(lines[5].starts_with("ok   isolation: "), "{doctor:?}");
    assert!(lines.iter().all(|l| l.starts_with("ok   ")), "{doctor:?}");
    assert!(lines[0].starts_with("ok   firecracker v1.16"), "{doctor:?}");
    // The test guest is an ELF kernel, but no Linux one.
    let kernel = test_guest::write_kernel(f.dir.path()).unwrap();
    let doctor = f
        .run(&["doctor", "--kernel", kernel.to_str().unwrap()])
        .expect(1);
    let last = doctor.stdout.lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("FAIL kernel") && last.contains("not a Linux kernel"),
        "{doctor:?}"
    );
}

#[test]
fn doctor_says_what_is_missing_and_how_to_fix_it() {
    let f = Fcexec::new();
    let mut cmd = f.command(&["doctor"]);
    cmd.env("FIRECRACKER_BIN", "/nonexistent");
    let doctor = f.run_command(cmd).expect(1);
    let line = doctor
        .stdout
        .lines()
        .find(|l| l.starts_with("FAIL firecracker"))
        .unwrap_or_else(|| panic!("{doctor:?}"));
    assert!(
        line.contains("FIRECRACKER_BIN=/nonexistent does not exist"),
        "{line}"
    );
    assert!(
        line.contains("https://github.com/firecracker-microvm/firecracker/releases"),
        "{line}"
    );
    assert!(line.contains("set FIRECRACKER_BIN"), "{line}");
}

#[test]
fn usage_errors_exit_2() {
    let f = Fcexec::new();
    f.run(&["run", "--kernel", "k"]).expect(2);
    f.run(&["frobnicate"]).expect(2);
    let help = f.run(&["--help"]).expect(0);
    assert!(help.stdout.contains("Exit codes:"), "{help:?}");
}

#[test]
fn records_and_output_live_in_the_data_directory_sockets_in_the_state_directory() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let data = f.dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let run = f.run(&[
        "--data-dir",
        data_arg,
        "run",
        "--id",
        "d1",
        "--job",
        "out:kept%0A,hang",
        "-d",
    ]);
    run.expect(0);
    let exec_data = data.join("cli/d1");
    let exec_run = f.state().join("cli/d1");
    assert!(exec_data.join("record.json").exists());
    assert!(exec_data.join("console.log").exists());
    assert!(exec_run.join("vm.json").exists());
    assert!(!exec_run.join("record.json").exists());
    assert!(f.state().join("cli/lock").exists());
    let logs = f.run(&["--data-dir", data_arg, "logs", "d1"]).expect(0);
    assert!(logs.stdout.contains("kept"), "{logs:?}");
    f.run(&["--data-dir", data_arg, "rm", "d1"]).expect(0);
    assert!(!exec_data.exists() && !exec_run.exists());
    f.assert_nothing_left();
}

/// `fcexec run --kernel K --rootfs R -- COMMAND`: agent mode with fcexec's
/// guest agent. The test guest stands in for Linux: it ignores the agent's
/// initrd and runs its own job, so this checks the plumbing from the
/// command line to a booted VM.
#[test]
fn run_with_a_command_boots_with_the_guest_agent() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let kernel = test_guest::write_kernel(f.dir.path()).unwrap();
    let rootfs = f.dir.path().join("rootfs.img");
    std::fs::write(&rootfs, vec![0u8; 64 * 1024]).unwrap();
    let agent = testkit::linux_guest::agent_binary().unwrap();
    let mut cmd = f.command(&[
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--rootfs",
        rootfs.to_str().unwrap(),
        "--kernel-args",
        "console=ttyS0 fcx.job=out:from%20the%20guest%0A,exit:4",
        "--env",
        "A=1",
        "--",
        "/bin/sh",
        "-c",
        "exit 4",
    ]);
    cmd.env("FCEXEC_AGENT_BIN", &agent);
    let run = f.run_command(cmd).expect(4);
    assert_eq!(run.stdout, "from the guest\n", "{run:?}");
    f.assert_nothing_left();
}
