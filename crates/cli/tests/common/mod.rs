//! The harness of the `fcexec` binary's tests: a temporary state directory,
//! the binary run with it, bounded waits, and the check that no VMM is left.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long any one fcexec invocation may take in these tests.
pub const LIMIT: Duration = Duration::from_secs(60);

/// A temporary state directory and the binary to run against it.
pub struct Fcexec {
    pub dir: tempfile::TempDir,
}

impl Fcexec {
    pub fn new() -> Fcexec {
        Fcexec {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The state root (not created: fcexec creates it).
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `fcexec --state-dir <state> <args>`, with a clean environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fcexec"));
        cmd.arg("--state-dir").arg(self.state()).args(args);
        for var in [
            "FCEXEC_STATE_DIR",
            "FCEXEC_DATA_DIR",
            "FCEXEC_EXECUTOR",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs fcexec to the end (at most [`LIMIT`]).
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_command(self.command(args))
    }

    /// Runs a prepared command to the end (at most [`LIMIT`]).
    pub fn run_command(&self, mut cmd: Command) -> Run {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Run::from(finish(child, LIMIT))
    }

    /// Starts fcexec in the background, its output captured.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Fails if a firecracker process of this test is still running.
    pub fn assert_nothing_left(&self) {
        let pids = firecracker_pids(self.dir.path());
        assert!(
            pids.is_empty(),
            "firecracker processes left behind: {pids:?}"
        );
    }
}

/// The outcome of one fcexec invocation.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "{self:#?}");
        self
    }
}

/// Waits for `child` to exit, killing it after `limit`.
pub fn finish(mut child: Child, limit: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("fcexec did not finish within {limit:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Polls `f` every 50 ms until it holds, at most `limit`.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

pub use testkit::firecracker_pids;
