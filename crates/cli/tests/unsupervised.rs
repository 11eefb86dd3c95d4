//! The `fcexec` binary on executions no process supervises right now, and on
//! executions whose record is corrupt: agent-mode output is readable at once
//! after `run -d` (owner path) and while another process holds the executor
//! (read-only path, decoded from the serial console); corrupt records are
//! listed with the reason, and `rm` and `cleanup` delete them.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{eventually, finish, Fcexec, LIMIT};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The default executor's directory.
fn executor_dir(f: &Fcexec) -> PathBuf {
    f.state().join("cli")
}

/// Holds the executor's lock, as a `fcexec run` in another terminal does,
/// until dropped.
fn hold_lock(dir: &Path) -> Flock<File> {
    std::fs::create_dir_all(dir).unwrap();
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

/// The execution directories left under `dir`.
fn executions(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = entries
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    ids.sort();
    ids
}

/// After `run -d` no fcexec process runs, and the guest holds its output
/// (nobody listens on its vsock); `logs` prints the output at once all the
/// same: it opens the executor, which the agent reconnects to. Later, with
/// another process holding the executor, it reads the stored file.
#[test]
fn logs_of_an_unsupervised_execution_print_at_once() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let dir = executor_dir(&f);
    f.run(&["run", "-d", "--id", "bg", "--job", "out:first%0A,hang"])
        .expect(0);
    let detached = Instant::now();
    assert_eq!(fcexec::inspect::lock_holder(&dir), None);

    // Nobody holds the executor: `logs` opens it (and shuts it down again).
    let mut last = None;
    let printed = eventually(Duration::from_secs(1), || {
        let logs = f.run(&["logs", "bg"]);
        let ok = logs.code == Some(0) && logs.stdout == "first\n";
        last = Some(logs);
        ok
    });
    assert!(
        printed,
        "no `first` within a second: {last:?}; {:?}",
        f.run(&["ps"])
    );
    assert!(detached.elapsed() < Duration::from_secs(3));
    assert_eq!(fcexec::inspect::lock_holder(&dir), None);

    // Another process holds the executor: the output the guest sent over
    // vsock is in the `stdout` file already, and read from there.
    let lock = hold_lock(&dir);
    let ps = f.run(&["ps"]).expect(0);
    assert!(
        ps.stdout
            .lines()
            .any(|l| l.starts_with("bg ") && l.contains("running")),
        "{ps:?}"
    );
    let started = Instant::now();
    let logs = f.run(&["logs", "bg"]).expect(0);
    assert_eq!(
        (logs.stdout.as_str(), logs.stderr.as_str()),
        ("first\n", "")
    );
    assert!(started.elapsed() < Duration::from_secs(1), "{logs:?}");
    let tail = f.run(&["logs", "--tail", "1", "bg"]).expect(0);
    assert_eq!(tail.stdout, "first\n");
    // A follower prints what there is and keeps polling.
    let follower = f.spawn(&["logs", "-f", "bg"]);
    std::thread::sleep(Duration::from_millis(500));
    kill(Pid::from_raw(follower.id() as i32), Signal::SIGTERM).unwrap();
    let followed = common::Run::from(finish(follower, LIMIT));
    assert_eq!(followed.code, None, "killed while following: {followed:?}");
    assert_eq!(followed.stdout, "first\n");
    drop(lock);

    f.run(&["rm", "bg"]).expect(0);
    assert!(executions(&dir).is_empty(), "{:?}", executions(&dir));
    assert!(eventually(Duration::from_secs(5), || {
        testkit::firecracker_pids(f.dir.path()).is_empty()
    }));
    f.assert_nothing_left();
}

/// Execution directories whose record.json is empty, truncated or garbage
/// are listed as corrupt, read-only and as the owner; `rm` and `cleanup`
/// delete them.
#[test]
fn corrupt_executions_are_listed_and_removed() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let dir = executor_dir(&f);
    let records: [(&str, &[u8]); 3] = [
        ("empty", b""),
        ("garbage", b"\x00\x7fgarbage"),
        ("cut", br#"{"version": 1, "job_id": "demo", "exec"#),
    ];
    for (id, bytes) in records {
        std::fs::create_dir_all(dir.join(id)).unwrap();
        std::fs::write(dir.join(id).join("record.json"), bytes).unwrap();
    }
    let check_ps = |how: &str| {
        let ps = f.run(&["ps", "-a"]).expect(0);
        for (id, _) in records {
            let line = ps.stdout.lines().find(|l| l.starts_with(&format!("{id} ")));
            let cells: Vec<&str> = line
                .unwrap_or_else(|| panic!("{how}: {id} not listed: {ps:?}"))
                .split_whitespace()
                .collect();
            assert_eq!((cells[1], cells[2]), ("corrupt", "-"), "{how}: {ps:?}");
            let reason = format!(
                "fcexec: execution {id} is corrupt: its record {} cannot be read: ",
                dir.join(id).join("record.json").display()
            );
            assert!(ps.stderr.contains(&reason), "{how}: {ps:?}");
        }
        let json = f.run(&["ps", "--all", "--json"]).expect(0);
        let list: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), records.len(), "{how}: {json:?}");
        for entry in list {
            assert_eq!(entry["status"], "failed", "{how}: {entry}");
            assert_eq!(entry["exit_code"], -1, "{how}: {entry}");
            let error = entry["error_msg"].as_str().unwrap();
            assert!(
                error.starts_with("corrupt execution: its record "),
                "{how}: {entry}"
            );
            assert!(error.ends_with(entry["corrupt"].as_str().unwrap()));
        }
    };

    // Another process holds the executor: the records are read as they are.
    let lock = hold_lock(&dir);
    check_ps("read-only");
    let logs = f.run(&["logs", "empty"]).expect(1);
    assert!(
        logs.stderr.contains("execution empty is corrupt"),
        "{logs:?}"
    );
    let wait = f.run(&["wait", "garbage"]).expect(125);
    assert!(wait.stderr.contains("corrupt execution: "), "{wait:?}");
    drop(lock);

    // Nobody holds it: ps opens the executor, which lists them failed too.
    check_ps("owner");
    let wait = f.run(&["wait", "cut"]).expect(125);
    assert!(wait.stderr.contains("corrupt execution: "), "{wait:?}");
    assert_eq!(f.run(&["rm", "empty"]).expect(0).stdout, "empty\n");
    assert_eq!(executions(&dir), ["cut", "garbage"]);
    f.run(&["cleanup"]).expect(0);
    assert!(executions(&dir).is_empty(), "{:?}", executions(&dir));
    assert_eq!(f.run(&["ps", "-a"]).expect(0).stdout.lines().count(), 1);
    f.assert_nothing_left();
}

/// `run -d`, then nobody listens while the guest writes and exits: the
/// agent holds its output and its exit; `logs -f` later re-attaches, prints
/// everything once and ends with the execution.
#[test]
fn logs_follow_later_gets_what_the_guest_held() {
    testkit::require_vmm!();
    let f = Fcexec::new();
    let job = "out:first%0A,sleep:300,out:second%0A,exit:3";
    f.run(&["run", "-d", "--id", "held", "--job", job])
        .expect(0);
    std::thread::sleep(Duration::from_millis(1500));
    let followed = f.run(&["logs", "-f", "held"]).expect(0);
    assert_eq!(followed.stdout, "first\nsecond\n", "{followed:?}");
    let waited = f.run(&["wait", "held"]);
    assert_eq!(waited.code, Some(3), "{waited:?}");
    f.run(&["rm", "held"]).expect(0);
}
