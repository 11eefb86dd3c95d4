//! Tests of the read-only view.

mod tests_support {
    //! Records written as an owner writes them.

    use super::super::*;
    use crate::record::RECORD_VERSION;
    use crate::result::ExecutionResult;

    pub fn record_of(
        id: &str,
        phase: Phase,
        mode: Mode,
        result: Option<ExecutionResult>,
    ) -> ExecutionRecord {
        ExecutionRecord {
            version: RECORD_VERSION,
            job_id: format!("job-{id}"),
            execution_id: id.into(),
            phase,
            mode,
            transport: crate::spec::Transport::Serial,
            key: None,
            pid: None,
            pid_start_time: None,
            cancel_requested: false,
            outputs: vec![],
            results_dir: None,
            isolation: None,
            created_ms: id.len() as u64,
            finished_ms: None,
            persist_ms: 0,
            mem_mib: 0,
            timeout_ms: None,
            result,
            network: None,
        }
    }

    pub fn write(dir: &Path, record: &ExecutionRecord) {
        let id = &record.execution_id;
        std::fs::create_dir_all(dir.join(id)).unwrap();
        record.save(&dir.join(id).join("record.json")).unwrap();
    }

    pub fn save(dir: &Path, id: &str, phase: Phase, mode: Mode, result: Option<ExecutionResult>) {
        write(dir, &record_of(id, phase, mode, result));
    }
}

mod listing {
    use super::super::file_logs::*;
    use super::super::*;
    use super::tests_support::*;
    use crate::result::ExecutionResult;

    #[test]
    fn lists_records_oldest_first_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "bb", Phase::Running, Mode::Agent, None);
        save(
            dir.path(),
            "a",
            Phase::Failed,
            Mode::Plain,
            Some(ExecutionResult::killed("x")),
        );
        std::fs::create_dir(dir.path().join("no-record")).unwrap();
        std::fs::write(dir.path().join("lock"), b"").unwrap();
        let all = list(dir.path());
        let ids: Vec<&str> = all.iter().map(|s| s.execution_id.as_str()).collect();
        assert_eq!(ids, ["a", "bb"]);
        assert_eq!(all[0].status, ExecutionStatus::Failed);
        assert_eq!((all[0].exit_code, all[0].killed), (Some(-1), true));
        assert_eq!(all[1].status, ExecutionStatus::Running);
        assert_eq!(all[1].exit_code, None);
        assert!(list(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn lists_live_ones_from_the_runtime_tree() {
        let (run, data) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ended = || Some(ExecutionResult::failed("x"));
        save(data.path(), "live", Phase::Running, Mode::Agent, None);
        save(data.path(), "ending", Phase::Failed, Mode::Agent, ended());
        save(data.path(), "old", Phase::Failed, Mode::Agent, ended());
        for id in ["live", "ending", ".jail"] {
            std::fs::create_dir(run.path().join(id)).unwrap();
        }
        let ids = |all: Vec<Summary>| all.into_iter().map(|s| s.execution_id).collect::<Vec<_>>();
        assert_eq!(ids(list_live(data.path(), run.path())), ["live"]);
        // In one tree, every directory is looked at by name.
        assert_eq!(ids(list_live(data.path(), data.path())), ["live"]);
        assert_eq!(ids(list(data.path())).len(), 3);
    }

    #[test]
    fn record_rejects_bad_ids_and_reports_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            record(dir.path(), "../x"),
            Err(InspectError::InvalidId(_))
        ));
        assert!(matches!(
            record(dir.path(), "x"),
            Err(InspectError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn reads_plain_serial_as_stdout_with_tail() {
        let dir = tempfile::tempdir().unwrap();
        save(
            dir.path(),
            "p",
            Phase::Succeeded,
            Mode::Plain,
            Some(ExecutionResult::new(0)),
        );
        std::fs::write(dir.path().join("p/serial.log"), b"one\ntwo\n").unwrap();
        let options = LogOptions {
            follow: true,
            tail: Some(1),
        };
        let mut logs = logs(dir.path(), "p", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data.as_slice()),
            (LogStream::Stdout, &b"two\n"[..])
        );
        assert!(logs.next().await.is_none());
        assert_eq!(logs.offsets(), (8, 0));
    }

    #[tokio::test]
    async fn follow_ends_when_nobody_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        save(dir.path(), "g", Phase::Running, Mode::Agent, None);
        std::fs::write(dir.path().join("g/stderr"), b"err").unwrap();
        std::fs::write(dir.path().join("lock"), b"").unwrap();
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(dir.path(), "g", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(chunk.stream, LogStream::Stderr);
        // Not terminal, but unlocked: one last pass, then the end.
        assert!(logs.next().await.is_none());
    }

    #[test]
    fn finds_the_lock_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(lock_holder(dir.path()), None);
        let state = crate::state_dir::StateDir::open(dir.path(), dir.path(), "ex").unwrap();
        assert_eq!(lock_holder(state.path()), Some(std::process::id()));
        drop(state);
        assert_eq!(lock_holder(&dir.path().join("ex")), None);
    }

    #[test]
    fn parses_proc_locks() {
        let dev = libc::makedev(0, 0x1a);
        let text = "1: POSIX  ADVISORY  WRITE 10 00:1a:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 20 08:01:77 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 30 00:1a:77 0 EOF\n\
                    3: FLOCK  ADVISORY  WRITE 40 00:1a:77 0 EOF\n";
        assert_eq!(holder_in(text, 77, dev), Some(40));
        assert_eq!(holder_in(text, 77, libc::makedev(9, 9)), Some(20));
        assert_eq!(holder_in(text, 78, dev), None);
    }
}

mod unsupervised_tests {
    //! Corrupt records, and agent-mode output decoded from the serial console.

    use std::os::fd::AsRawFd;

    use super::super::file_logs::*;
    use super::super::*;
    use super::tests_support::*;
    use crate::guest_protocol::{encode_frame, FrameKind};
    use crate::result::ExecutionResult;

    const KEY: Key = Key::from_bytes([7; 16]);

    /// An agent-mode record carrying [`KEY`].
    fn save_agent(dir: &Path, id: &str, phase: Phase, result: Option<ExecutionResult>) {
        let mut record = record_of(id, phase, Mode::Agent, result);
        record.key = Some(KEY.to_hex());
        write(dir, &record);
    }

    /// The agent's frames, numbered from `first`.
    fn frames(first: u32, frames: &[(FrameKind, &str)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (seq, (kind, payload)) in (first..).zip(frames) {
            bytes.extend(encode_frame(&KEY, seq, *kind, payload.as_bytes()));
        }
        bytes
    }

    fn append(path: &Path, bytes: &[u8]) {
        use std::io::Write;
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    /// Holds `dir`'s lock as an owning executor does, while the file lives.
    fn hold_lock(dir: &Path) -> File {
        let file = File::create(dir.join("lock")).unwrap();
        // SAFETY: flock on an fd we own; non-blocking.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(locked, 0);
        file
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    async fn collect(logs: &mut FileLogs) -> (String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while let Some(chunk) = logs.next().await {
            let chunk = chunk.unwrap();
            match chunk.stream {
                LogStream::Stdout | LogStream::Console => out.extend(chunk.data),
                LogStream::Stderr => err.extend(chunk.data),
            }
        }
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn corrupt_records_are_listed_failed_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save(d, "good", Phase::Running, Mode::Agent, None);
        let cases: [(&str, &[u8]); 3] = [
            ("empty", b""),
            ("garbage", b"\x00\xffnot json"),
            ("cut", br#"{"version": 1, "job_id": "j", "execution_"#),
        ];
        for (id, bytes) in cases {
            std::fs::create_dir(d.join(id)).unwrap();
            std::fs::write(d.join(id).join("record.json"), bytes).unwrap();
        }
        let mut future = record_of("future", Phase::Running, Mode::Plain, None);
        future.version = 99;
        write(d, &future);
        save(d, "bad-end", Phase::Running, Mode::Plain, None);
        std::fs::write(d.join("bad-end/result.json"), b"{").unwrap();
        std::fs::create_dir(d.join("launching")).unwrap();

        let all = list(d);
        let mut ids: Vec<&str> = all.iter().map(|s| s.execution_id.as_str()).collect();
        ids.sort();
        assert_eq!(
            ids,
            ["bad-end", "cut", "empty", "future", "garbage", "good"]
        );
        for s in all.iter().filter(|s| s.execution_id != "good") {
            let path = d.join(&s.execution_id).join("record.json");
            let reason = s.corrupt.as_deref().unwrap_or_else(|| panic!("{s:?}"));
            assert!(
                reason.starts_with(&format!("its record {} cannot be read: ", path.display())),
                "{reason}"
            );
            assert_eq!(s.error_msg, format!("corrupt execution: {reason}"));
            assert_eq!(
                (s.status, s.phase),
                (ExecutionStatus::Failed, Phase::Failed)
            );
            assert_eq!((s.exit_code, s.killed), (Some(-1), false));
            assert_eq!(s.job_id, "");
            assert!(s.created_ms > 0, "the record file's time: {s:?}");
            match record(d, &s.execution_id) {
                Err(e @ InspectError::Corrupt { .. }) => assert_eq!(
                    e.to_string(),
                    format!("execution {} is corrupt: {reason}", s.execution_id)
                ),
                other => panic!("{other:?}"),
            }
            assert!(matches!(
                logs(d, &s.execution_id, LogOptions::default()),
                Err(InspectError::Corrupt { .. })
            ));
        }
        let future = all.iter().find(|s| s.execution_id == "future").unwrap();
        assert!(future.error_msg.contains("version 99"), "{future:?}");
        let json = serde_json::to_value(&all).unwrap();
        for entry in json.as_array().unwrap() {
            let corrupt = entry["execution_id"] != "good";
            assert_eq!(entry.get("corrupt").is_some(), corrupt, "{entry}");
        }
    }

    #[tokio::test]
    async fn unsupervised_agent_output_is_decoded_from_the_serial_console() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "a", Phase::Running, None);
        let serial = d.join("a/serial.log");
        append(&serial, b"[    0.1] kernel says hi\n");
        append(
            &serial,
            &frames(
                0,
                &[
                    (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                    (FrameKind::Out, "first\n"),
                ],
            ),
        );
        // A frame with another key is console text.
        let other = Key::from_bytes([9; 16]);
        append(
            &serial,
            &encode_frame(&other, 2, FrameKind::Out, b"forged\n"),
        );
        append(&serial, &frames(2, &[(FrameKind::Err, "oops")]));
        // An unfinished line may still become a frame: not decoded yet.
        let last = frames(3, &[(FrameKind::Out, "later\n")]);
        append(&serial, &last[..last.len() - 1]);
        // Files a supervisor left from an earlier decoding are not read.
        std::fs::write(d.join("a/stdout"), b"stale").unwrap();
        let before = names(&d.join("a"));

        let mut once = logs(d, "a", LogOptions::default()).unwrap();
        assert_eq!(once.offsets(), (0, 0));
        assert_eq!(collect(&mut once).await, ("first\n".into(), "oops".into()));
        assert_eq!(once.offsets(), (6, 4));

        // Following, with nobody holding the lock: up to the end, then done.
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut followed = logs(d, "a", options).unwrap();
        assert_eq!(
            collect(&mut followed).await,
            ("first\n".into(), "oops".into())
        );
        assert_eq!(names(&d.join("a")), before, "a reader writes nothing");
    }

    #[tokio::test]
    async fn a_follower_goes_on_in_the_files_once_the_record_is_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let _lock = hold_lock(d);
        save_agent(d, "f", Phase::Running, None);
        let serial = d.join("f/serial.log");
        append(
            &serial,
            &frames(
                0,
                &[
                    (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                    (FrameKind::Out, "one\n"),
                    (FrameKind::Err, "e1\n"),
                ],
            ),
        );
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(d, "f", options).unwrap();
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data),
            (LogStream::Stdout, b"one\n".to_vec())
        );
        let chunk = logs.next().await.unwrap().unwrap();
        assert_eq!(
            (chunk.stream, chunk.data),
            (LogStream::Stderr, b"e1\n".to_vec())
        );

        // The last frame comes without its newline (the VM stopped): the
        // supervisor decodes it at the end of the stream, and writes the
        // files before the record says the end.
        let end = async {
            tokio::time::sleep(POLL_INTERVAL * 2).await;
            let rest = frames(3, &[(FrameKind::Out, "two\n")]);
            append(&serial, &rest[..rest.len() - 1]);
            std::fs::write(d.join("f/stdout"), b"one\ntwo\n").unwrap();
            std::fs::write(d.join("f/stderr"), b"e1\n").unwrap();
            let mut record = record_of("f", Phase::Succeeded, Mode::Agent, None);
            record.result = Some(ExecutionResult::new(0));
            record.save_outcome(&d.join("f/record.json")).unwrap();
        };
        let (rest, ()) = tokio::join!(collect(&mut logs), end);
        assert_eq!(rest, ("two\n".into(), String::new()));
        assert_eq!(logs.offsets(), (8, 3));
    }

    #[tokio::test]
    async fn an_owner_follows_to_the_end_whoever_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "o", Phase::Running, None);
        let hello = (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t");
        append(
            &d.join("o/serial.log"),
            &frames(0, &[hello, (FrameKind::Out, "a\n")]),
        );
        let options = LogOptions {
            follow: true,
            tail: None,
        };
        let mut logs = logs(d, "o", options).unwrap().owned();
        let end = async {
            tokio::time::sleep(POLL_INTERVAL * 3).await;
            append(
                &d.join("o/serial.log"),
                &frames(2, &[(FrameKind::Out, "b\n")]),
            );
            std::fs::write(d.join("o/stdout"), b"a\nb\n").unwrap();
            let mut record = record_of("o", Phase::Failed, Mode::Agent, None);
            record.result = Some(ExecutionResult::killed("cancelled"));
            record.save_outcome(&d.join("o/record.json")).unwrap();
        };
        let (all, ()) = tokio::join!(collect(&mut logs), end);
        assert_eq!(all, ("a\nb\n".into(), String::new()));
    }

    #[tokio::test]
    async fn tail_of_decoded_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        save_agent(d, "t", Phase::Running, None);
        let mut serial = frames(
            0,
            &[
                (FrameKind::Hello, "fcexec-guest-protocol/1 agent=t"),
                (FrameKind::Out, "a\n"),
                (FrameKind::Err, "x\ny\n"),
                (FrameKind::Out, "b\nc"),
                (FrameKind::Out, "\n"),
            ],
        );
        // Enough more that the kept tail is cut back while decoding.
        let line = format!("{}\n", "z".repeat(2999));
        let mut seq = 5;
        while (seq as usize - 5) * line.len() <= 2 * TAIL_TRIM {
            serial.extend(encode_frame(&KEY, seq, FrameKind::Err, line.as_bytes()));
            seq += 1;
        }
        let err_len = 4 + (seq as u64 - 5) * line.len() as u64;
        serial.extend(encode_frame(&KEY, seq, FrameKind::Err, b"last\n"));
        std::fs::write(d.join("t/serial.log"), &serial).unwrap();
        let options = LogOptions {
            follow: false,
            tail: Some(2),
        };
        let mut logs = logs(d, "t", options).unwrap();
        assert_eq!(logs.offsets(), (2, err_len - line.len() as u64));
        let (out, err) = collect(&mut logs).await;
        assert_eq!(out, "b\nc\n");
        assert_eq!(err, format!("{line}last\n"));
    }

    #[test]
    fn tail_start_counts_lines_as_tail_offset_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        for text in [
            "",
            "\n",
            "a",
            "a\n",
            "one\ntwo\nthree\n",
            "one\ntwo",
            "\n\n\nx\n",
        ] {
            std::fs::write(&path, text).unwrap();
            for lines in 0..5 {
                assert_eq!(
                    tail_start(text.as_bytes(), lines) as u64,
                    tail_offset(&path, text.len() as u64, lines),
                    "{text:?}, {lines} lines"
                );
            }
        }
    }
}
