use std::time::{Duration, Instant};

use fcexec_guest_protocol::ExitStatus;

use super::*;
use crate::reaper::Reaper;
use crate::sys::Wait;

fn launch(argv: &[&str]) -> Launch {
    Launch {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        working_dir: "/".into(),
        root: None,
        user: None,
        output: Output::Split,
    }
}

/// Runs a spawned process to its end: its status, stdout and stderr.
fn finish(spawned: Spawned) -> (ExitStatus, Vec<u8>, Vec<u8>) {
    let mut reaper = Reaper::new(false);
    reaper.watch(spawned.pid);
    let mut pipes = [Some(spawned.stdout), spawned.stderr];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut status = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while status.is_none() || pipes.iter().any(Option::is_some) {
        assert!(Instant::now() < deadline, "the process did not end");
        let mut waits: Vec<Wait> = pipes
            .iter()
            .flatten()
            .map(|p| Wait::new(p.as_raw_fd(), libc::POLLIN))
            .chain(
                reaper
                    .fds()
                    .into_iter()
                    .map(|fd| Wait::new(fd, libc::POLLIN)),
            )
            .collect();
        crate::sys::poll(&mut waits, Some(Instant::now() + Duration::from_millis(20))).unwrap();
        for (i, pipe) in pipes.iter_mut().enumerate() {
            let Some(fd) = pipe else { continue };
            let mut chunk = [0u8; 4096];
            match crate::sys::read(fd.as_fd(), &mut chunk) {
                Ok(0) => *pipe = None,
                Ok(n) => bufs[i].extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
        }
        if let Some((_, s)) = reaper.reap().into_iter().next() {
            status = Some(s);
        }
    }
    let [out, err] = bufs;
    (status.unwrap(), out, err)
}

fn run(l: &Launch) -> (ExitStatus, String, String) {
    let (status, out, err) = finish(spawn(l).unwrap());
    (
        status,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn exit_codes_and_a_signal_are_reported() {
    for code in [0u8, 3, 255] {
        let (status, _, _) = run(&launch(&["sh", "-c", &format!("exit {code}")]));
        assert_eq!(status, ExitStatus::Code(code));
    }
    let (status, _, _) = run(&launch(&["sh", "-c", "kill -SEGV $$"]));
    assert_eq!(status, ExitStatus::Signal(libc::SIGSEGV as u8));
}

#[test]
fn stdout_and_stderr_stay_apart_or_combine() {
    let script = "echo out; echo err >&2; echo out2";
    let (_, out, err) = run(&launch(&["sh", "-c", script]));
    assert_eq!((out.as_str(), err.as_str()), ("out\nout2\n", "err\n"));
    let mut combined = launch(&["sh", "-c", script]);
    combined.output = Output::Combined;
    let (_, out, err) = run(&combined);
    assert_eq!((out.as_str(), err.as_str()), ("out\nerr\nout2\n", ""));
}

#[test]
fn the_environment_and_working_directory_are_exactly_the_launchs() {
    let dir = tempfile::tempdir().unwrap();
    let mut l = launch(&["sh", "-c", "pwd; env | sort; cat <&0 | wc -c"]);
    l.env.push(("K".into(), "V with space".into()));
    l.working_dir = dir.path().display().to_string();
    let (status, out, _) = run(&l);
    assert_eq!(status, ExitStatus::Code(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], dir.path().display().to_string());
    assert!(lines.contains(&"K=V with space"), "{out}");
    assert!(lines.contains(&"PATH=/usr/bin:/bin"), "{out}");
    assert!(
        !out.contains("HOME="),
        "the agent's environment leaked: {out}"
    );
    // stdin is /dev/null.
    assert_eq!(lines.last().map(|l| l.trim()), Some("0"));
}

#[test]
fn the_job_runs_in_its_own_process_group_and_session() {
    // /proc/<pid>/stat: pid (comm) state ppid pgrp session ...
    let (_, out, _) = run(&launch(&[
        "sh",
        "-c",
        "read -r line < /proc/$$/stat; echo $line",
    ]));
    let fields: Vec<&str> = out.split_whitespace().collect();
    assert!(fields.len() > 5, "{out}");
    assert_eq!((fields[4], fields[5]), (fields[0], fields[0]), "{out}");
}

#[test]
fn failures_name_the_step() {
    let err = spawn(&launch(&["no-such-command-here"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`no-such-command-here` is not found in PATH /usr/bin:/bin"
    );
    let err = spawn(&launch(&["/no/such/file"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot execute `/no/such/file`: No such file or directory (os error 2)"
    );
    let mut l = launch(&["true"]);
    l.working_dir = "/no/such/dir".into();
    let err = spawn(&l).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot change to the working directory /no/such/dir: No such file or directory (os error 2)"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let err = spawn(&launch(&[script.to_str().unwrap()])).unwrap_err();
    assert!(err.to_string().contains("Permission denied"), "{err}");
    let err = spawn(&launch(&["a\0b"])).unwrap_err();
    assert!(err.to_string().contains("NUL"), "{err}");
}

#[test]
fn a_group_signal_reaches_the_children() {
    let spawned = spawn(&launch(&[
        "sh",
        "-c",
        "sleep 30 & sleep 30; echo not-reached",
    ]))
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    signal_group(spawned.pid, Signal::SIGTERM);
    let (status, out, _) = finish(spawned);
    assert_eq!(status, ExitStatus::Signal(libc::SIGTERM as u8));
    assert_eq!(out, b"");
}
