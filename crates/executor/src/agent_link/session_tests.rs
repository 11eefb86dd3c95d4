//! The session's rules, one table row per way an agent can go wrong.

use super::*;

const KEY: [u8; KEY_LEN] = [7; KEY_LEN];

/// Output kept in memory.
#[derive(Debug, Default)]
struct Memory {
    streams: [Vec<u8>; 2],
    limit: Option<usize>,
}

impl Output for Memory {
    fn append(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<usize> {
        let total = self.streams[0].len() + self.streams[1].len();
        let room = self.limit.map_or(usize::MAX, |l| l.saturating_sub(total));
        let take = data.len().min(room);
        self.streams[stream.index()].extend_from_slice(&data[..take]);
        Ok(take)
    }

    fn stored(&self) -> [u64; 2] {
        [self.streams[0].len() as u64, self.streams[1].len() as u64]
    }
}

fn hello(key: [u8; KEY_LEN]) -> GuestFrame<'static> {
    GuestFrame::Hello {
        version: VERSION,
        key,
        capabilities: capability::RESUME | capability::CANCEL | capability::HEARTBEAT,
        agent: "test",
    }
}

fn out(offset: u64, data: &'static [u8]) -> GuestFrame<'static> {
    GuestFrame::Output {
        stream: Stream::Stdout,
        offset,
        data,
    }
}

fn exit(code: u8, stdout_len: u64) -> GuestFrame<'static> {
    GuestFrame::Exit {
        status: ExitStatus::Code(code),
        stdout_len,
        stderr_len: 0,
    }
}

/// Runs `frames` on one connection; the first error, with how many frames passed.
fn run(session: &mut Session, out: &mut Memory, frames: &[GuestFrame<'_>]) -> Result<(), String> {
    session.connected();
    for frame in frames {
        session.on_frame(*frame, out)?;
    }
    Ok(())
}

#[test]
fn a_clean_session_attaches_stores_acks_and_ends() {
    let mut session = Session::new(KEY);
    let mut mem = Memory::default();
    session.connected();
    let step = session.on_frame(hello(KEY), &mut mem).unwrap();
    assert_eq!(
        step.replies,
        [HostFrame::Attach {
            stdout_offset: 0,
            stderr_offset: 0
        }]
    );
    assert!(session.on_frame(out(0, b"hi\n"), &mut mem).unwrap().stored);
    let err = GuestFrame::Output {
        stream: Stream::Stderr,
        offset: 0,
        data: b"oops",
    };
    session.on_frame(err, &mut mem).unwrap();
    session
        .on_frame(GuestFrame::Heartbeat { uptime_ms: 5 }, &mut mem)
        .unwrap();
    let end = GuestFrame::Exit {
        status: ExitStatus::Code(42),
        stdout_len: 3,
        stderr_len: 4,
    };
    assert_eq!(
        session.on_frame(end, &mut mem).unwrap().replies,
        [HostFrame::Done]
    );
    assert_eq!(session.report().exit, Some(ExitStatus::Code(42)));
    assert_eq!(mem.streams, [b"hi\n".to_vec(), b"oops".to_vec()]);
    assert_eq!(
        Session::ack(&mem),
        HostFrame::Ack {
            stdout_offset: 3,
            stderr_offset: 4
        }
    );
}

#[test]
fn a_reconnected_agent_resumes_without_gaps_or_duplicates() {
    let mut session = Session::new(KEY);
    let mut mem = Memory::default();
    run(&mut session, &mut mem, &[hello(KEY), out(0, b"abc")]).unwrap();
    session.disconnected();
    session.connected();
    let step = session.on_frame(hello(KEY), &mut mem).unwrap();
    assert_eq!(
        step.replies,
        [HostFrame::Attach {
            stdout_offset: 3,
            stderr_offset: 0
        }]
    );
    // The agent resends from an older offset: only the new part is kept.
    session.on_frame(out(1, b"bcdef"), &mut mem).unwrap();
    session.on_frame(out(0, b"ab"), &mut mem).unwrap();
    session.on_frame(exit(0, 6), &mut mem).unwrap();
    assert_eq!(mem.streams[0], b"abcdef");
    // The end said again on a later connection is fine when it agrees.
    run(&mut session, &mut mem, &[hello(KEY), exit(0, 6)]).unwrap();
}

#[test]
fn every_broken_session_is_a_protocol_error_with_a_reason() {
    let mut wrong_version = hello(KEY);
    if let GuestFrame::Hello { version, .. } = &mut wrong_version {
        *version = 1;
    }
    let cases: Vec<(&str, Vec<GuestFrame<'static>>, &str)> = vec![
        ("bad key", vec![hello([8; KEY_LEN])], "wrong key"),
        ("old version", vec![wrong_version], "protocol version 1"),
        ("no hello", vec![out(0, b"x")], "must be hello"),
        ("two hellos", vec![hello(KEY), hello(KEY)], "second hello"),
        ("gap", vec![hello(KEY), out(5, b"x")], "leaves a gap"),
        (
            "frame after exit",
            vec![hello(KEY), exit(0, 0), out(0, b"x")],
            "after the agent reported the end",
        ),
        (
            "lengths that disagree",
            vec![hello(KEY), out(0, b"abc"), exit(0, 2)],
            "reported 2 bytes of stdout at exit, but 3 arrived",
        ),
    ];
    for (name, frames, expect) in cases {
        let mut session = Session::new(KEY);
        let mut mem = Memory::default();
        let err = run(&mut session, &mut mem, &frames).expect_err(name);
        assert!(err.contains(expect), "{name}: {err}");
    }
}

#[test]
fn an_exit_that_changes_its_story_is_refused() {
    let mut session = Session::new(KEY);
    let mut mem = Memory::default();
    run(&mut session, &mut mem, &[hello(KEY), exit(0, 0)]).unwrap();
    let err = run(&mut session, &mut mem, &[hello(KEY), exit(1, 0)]).unwrap_err();
    assert!(
        err.contains("exited with code 0, then exited with code 1"),
        "{err}"
    );
}

#[test]
fn output_past_the_cap_is_cut_and_said() {
    let mut session = Session::new(KEY);
    let mut mem = Memory {
        limit: Some(4),
        ..Memory::default()
    };
    session.connected();
    session.on_frame(hello(KEY), &mut mem).unwrap();
    let step = session.on_frame(out(0, b"abcdef"), &mut mem).unwrap();
    assert!(step.over_limit && step.stored);
    assert_eq!(mem.streams[0], b"abcd");
}

#[test]
fn the_first_protocol_error_stands() {
    let mut session = Session::new(KEY);
    session.fail("first".into());
    assert_eq!(session.fail("second".into()), "first");
    assert_eq!(session.report().protocol_error.as_deref(), Some("first"));
}
