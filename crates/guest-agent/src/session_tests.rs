//! The session against a scripted host over Unix stream pairs, with
//! explicit instants for the timing rules.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::unix::net::UnixStream;

use fcexec_guest_protocol::{ExitStatus, HostFrame, Stream, MAX_DATA};

use super::*;

use crate::test_host as host;
use host::{Frame, HostConn, KEY};

const SECOND: Duration = Duration::from_secs(1);

/// Hands out the prepared connections (or errors) in order; refuses after.
struct Scripted(RefCell<VecDeque<io::Result<Conn>>>);

impl Scripted {
    fn new(conns: Vec<io::Result<Conn>>) -> Scripted {
        Scripted(RefCell::new(conns.into()))
    }
}

impl Transport for Scripted {
    fn connect(&self, port: u32) -> io::Result<Conn> {
        assert_eq!(port, 1024);
        self.0
            .borrow_mut()
            .pop_front()
            .unwrap_or_else(|| Err(io::ErrorKind::ConnectionRefused.into()))
    }

    fn console(&self) -> io::Result<Box<dyn Write>> {
        Err(io::ErrorKind::NotFound.into())
    }
}

fn pair() -> (Conn, HostConn) {
    let (agent, host) = UnixStream::pair().unwrap();
    (Conn::Unix(agent), HostConn::new(host))
}

fn session(heartbeat_ms: u64, retain: usize, now: Instant) -> Session {
    Session::new(KEY, 1024, heartbeat_ms, retain, now)
}

/// Services the session until it reports events or `SECOND` passes.
fn events(s: &mut Session, t: &Scripted) -> Vec<Event> {
    let give_up = Instant::now() + SECOND;
    loop {
        let events = s.service(Instant::now(), t).unwrap();
        if !events.is_empty() || Instant::now() > give_up {
            return events;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Attaches a fresh session at (0, 0) on one connection.
fn attached(heartbeat_ms: u64, retain: usize) -> (Session, Scripted, HostConn) {
    let (conn, mut host) = pair();
    let t = Scripted::new(vec![Ok(conn)]);
    let mut s = session(heartbeat_ms, retain, Instant::now());
    s.service(Instant::now(), &t).unwrap();
    host.expect_hello(SECOND);
    host.send(HostFrame::Attach {
        stdout_offset: 0,
        stderr_offset: 0,
    });
    assert_eq!(events(&mut s, &t), [Event::Attached { first: true }]);
    (s, t, host)
}

fn output(stream: Stream, offset: u64, data: &[u8]) -> Option<Frame> {
    Some(Frame::Output {
        stream,
        offset,
        data: data.to_vec(),
    })
}

#[test]
fn hello_carries_the_key_and_nothing_goes_before_attach() {
    let (conn, mut host) = pair();
    let t = Scripted::new(vec![Ok(conn)]);
    let mut s = session(10, DEFAULT_RETAIN, Instant::now());
    s.push(Stream::Stdout, b"early");
    assert_eq!(s.service(Instant::now(), &t).unwrap(), []);
    host.expect_hello(SECOND);
    // Neither output nor heartbeats before attach, even when due.
    s.service(Instant::now() + SECOND, &t).unwrap();
    assert_eq!(host.recv(Duration::from_millis(100)), None);
    assert!(!s.attached_once());
    host.send(HostFrame::Attach {
        stdout_offset: 0,
        stderr_offset: 0,
    });
    assert_eq!(events(&mut s, &t), [Event::Attached { first: true }]);
    assert_eq!(host.recv(SECOND), output(Stream::Stdout, 0, b"early"));
}

#[test]
fn output_offsets_follow_each_other_in_frames_of_max_data() {
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    let big: Vec<u8> = (0..150_000u32).map(|i| (i % 251) as u8).collect();
    s.push(Stream::Stdout, &big);
    s.push(Stream::Stderr, b"err");
    let mut stored = host::Stored::default();
    let mut frames = Vec::new();
    while stored.stdout.len() < big.len() || stored.stderr.len() < 3 {
        s.service(Instant::now(), &t).unwrap();
        while let Some(frame) = host.recv(Duration::from_millis(5)) {
            if let Frame::Output {
                stream,
                offset,
                data,
            } = &frame
            {
                assert!(data.len() <= MAX_DATA);
                frames.push((*stream, *offset, data.len()));
            }
            stored.apply(&frame);
        }
    }
    assert_eq!(stored.stdout, big);
    assert_eq!(
        frames,
        [
            (Stream::Stdout, 0, 65536),
            (Stream::Stdout, 65536, 65536),
            (Stream::Stdout, 131072, 150_000 - 131072),
            (Stream::Stderr, 0, 3)
        ]
    );
    assert_eq!(s.written(), [150_000, 3]);
}

#[test]
fn a_reconnect_resends_from_the_attach_offsets_with_backoff() {
    let (conn1, mut host1) = pair();
    let (conn2, mut host2) = pair();
    let refused = Err(io::ErrorKind::ConnectionRefused.into());
    let t = Scripted::new(vec![Ok(conn1), refused, Ok(conn2)]);
    let t0 = Instant::now();
    let mut s = session(0, DEFAULT_RETAIN, t0);
    s.push(Stream::Stdout, b"hello world");
    s.service(t0, &t).unwrap();
    host1.expect_hello(SECOND);
    host1.send(HostFrame::Attach {
        stdout_offset: 0,
        stderr_offset: 0,
    });
    assert_eq!(events(&mut s, &t), [Event::Attached { first: true }]);
    assert_eq!(
        host1.recv(SECOND),
        output(Stream::Stdout, 0, b"hello world")
    );
    host1.send(HostFrame::Ack {
        stdout_offset: 5,
        stderr_offset: 0,
    });
    s.service(Instant::now(), &t).unwrap();
    // The host end goes away: the agent retries 10 ms later, then 20 ms.
    drop(host1);
    let lost_at = Instant::now();
    s.service(lost_at, &t).unwrap();
    assert_eq!(s.deadline(), Some(lost_at + Duration::from_millis(10)));
    s.service(lost_at + Duration::from_millis(9), &t).unwrap();
    assert_eq!(s.deadline(), Some(lost_at + Duration::from_millis(10)));
    let retry = lost_at + Duration::from_millis(10);
    s.service(retry, &t).unwrap(); // refused
    assert_eq!(s.deadline(), Some(retry + Duration::from_millis(20)));
    s.service(retry + Duration::from_millis(20), &t).unwrap(); // connects
    host2.expect_hello(SECOND);
    // The agent still has bytes 5 to 11 (5 were acked); the host stored 6:
    // the rest is resent from there.
    host2.send(HostFrame::Attach {
        stdout_offset: 6,
        stderr_offset: 0,
    });
    assert_eq!(events(&mut s, &t), [Event::Attached { first: false }]);
    assert_eq!(host2.recv(SECOND), output(Stream::Stdout, 6, b"world"));
    s.finish(&End::Exit(ExitStatus::Code(0)));
    s.push(Stream::Stdout, b"ignored after the end");
    s.service(Instant::now(), &t).unwrap();
    assert_eq!(
        host2.recv(SECOND),
        Some(Frame::Exit {
            status: ExitStatus::Code(0),
            stdout_len: 11,
            stderr_len: 0
        })
    );
    host2.send(HostFrame::Done);
    assert_eq!(events(&mut s, &t), [Event::Done]);
}

#[test]
fn backoff_doubles_up_to_500_ms() {
    let t = Scripted::new(vec![]);
    let mut now = Instant::now();
    let mut s = session(0, DEFAULT_RETAIN, now);
    let mut gaps = Vec::new();
    for _ in 0..9 {
        s.service(now, &t).unwrap();
        let next = s.deadline().unwrap();
        gaps.push(next.duration_since(now).as_millis());
        now = next;
    }
    assert_eq!(gaps, [10, 20, 40, 80, 160, 320, 500, 500, 500]);
}

#[test]
fn no_vsock_before_attach_asks_for_the_fallback() {
    let unsupported = Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no vsock device",
    ));
    let t = Scripted::new(vec![unsupported]);
    let mut s = session(0, DEFAULT_RETAIN, Instant::now());
    let err = s.service(Instant::now(), &t).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

#[test]
fn acks_free_room_up_to_the_retention_bound() {
    let (mut s, t, mut host) = attached(0, 100);
    assert_eq!(s.room(), 100);
    s.push(Stream::Stdout, &[b'a'; 60]);
    s.push(Stream::Stderr, &[b'b'; 30]);
    assert_eq!(s.room(), 10);
    s.push(Stream::Stderr, &[b'c'; 20]);
    assert_eq!(s.room(), 0);
    s.service(Instant::now(), &t).unwrap();
    let mut stored = host::Stored::default();
    while stored.stdout.len() < 60 || stored.stderr.len() < 50 {
        stored.apply(&host.recv(SECOND).unwrap());
    }
    host.send(HostFrame::Ack {
        stdout_offset: 60,
        stderr_offset: 10,
    });
    s.service(Instant::now(), &t).unwrap();
    let give_up = Instant::now() + SECOND;
    while s.room() != 60 && Instant::now() < give_up {
        s.service(Instant::now(), &t).unwrap();
    }
    assert_eq!(s.room(), 60);
}

#[test]
fn an_attach_outside_the_retained_output_is_a_protocol_error() {
    let (conn, mut host) = pair();
    let t = Scripted::new(vec![Ok(conn)]);
    let mut s = session(0, DEFAULT_RETAIN, Instant::now());
    s.push(Stream::Stdout, b"abc");
    s.service(Instant::now(), &t).unwrap();
    host.expect_hello(SECOND);
    host.send(HostFrame::Attach {
        stdout_offset: 4,
        stderr_offset: 0,
    });
    assert_eq!(
        events(&mut s, &t),
        [Event::ProtocolError(
            "guest protocol error: attach at stdout offset 4 is outside the output the agent \
             still has (0 to 3)"
                .into()
        )]
    );
    // Before attach, the connection is dropped; the next one carries the failure.
    assert_eq!(host.recv(SECOND), None);
    assert!(host.closed);
    assert!(s.deadline().is_some());
}

#[test]
fn host_frames_out_of_place_are_protocol_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            vec![9, 0, 0, 0, 0x82, 0, 0, 0, 0, 0, 0, 0, 0],
            "bad ack frame: an ack body is exactly 16 bytes",
        ),
        (vec![1, 0, 0, 0, 0x01], "unknown frame kind 0x01"),
    ];
    for (raw, want) in cases {
        let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
        host.send_raw(&raw);
        assert_eq!(
            events(&mut s, &t),
            [Event::ProtocolError(format!(
                "guest protocol error: {want}"
            ))]
        );
    }
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    host.send(HostFrame::Attach {
        stdout_offset: 0,
        stderr_offset: 0,
    });
    assert_eq!(
        events(&mut s, &t),
        [Event::ProtocolError(
            "guest protocol error: a second attach on one connection".into()
        )]
    );
    let (conn, mut host) = pair();
    let t = Scripted::new(vec![Ok(conn)]);
    let mut s = session(0, DEFAULT_RETAIN, Instant::now());
    s.service(Instant::now(), &t).unwrap();
    host.expect_hello(SECOND);
    host.send(HostFrame::Cancel { grace_ms: 1 });
    assert_eq!(
        events(&mut s, &t),
        [Event::ProtocolError(
            "guest protocol error: a host cancel frame before attach".into()
        )]
    );
}

#[test]
fn after_a_protocol_error_the_fail_goes_out_and_the_session_gives_up() {
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    s.push(Stream::Stdout, b"ab");
    s.service(Instant::now(), &t).unwrap();
    assert_eq!(host.recv(SECOND), output(Stream::Stdout, 0, b"ab"));
    host.send(HostFrame::Ack {
        stdout_offset: 5,
        stderr_offset: 0,
    });
    let reason = "guest protocol error: an ack of stdout up to 5, beyond the 2 bytes sent";
    assert_eq!(events(&mut s, &t), [Event::ProtocolError(reason.into())]);
    // The host's frames are ignored from now on; the fail still goes out.
    host.send(HostFrame::Done);
    s.finish(&End::Fail(reason.into()));
    assert_eq!(events(&mut s, &t), [Event::Abandoned]);
    assert_eq!(host.recv(SECOND), Some(Frame::Fail(reason.into())));
}

#[test]
fn cancel_and_done_are_passed_on() {
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    host.send(HostFrame::Cancel { grace_ms: 1500 });
    assert_eq!(
        events(&mut s, &t),
        [Event::Cancel {
            grace: Duration::from_millis(1500)
        }]
    );
    s.finish(&End::Exit(ExitStatus::Signal(15)));
    s.service(Instant::now(), &t).unwrap();
    assert_eq!(
        host.recv(SECOND),
        Some(Frame::Exit {
            status: ExitStatus::Signal(15),
            stdout_len: 0,
            stderr_len: 0
        })
    );
    host.send(HostFrame::Done);
    assert_eq!(events(&mut s, &t), [Event::Done]);
}

#[test]
fn heartbeats_go_out_every_interval_until_the_end() {
    let (mut s, t, mut host) = attached(50, DEFAULT_RETAIN);
    let first = s.deadline().unwrap();
    s.service(first - Duration::from_millis(1), &t).unwrap();
    assert_eq!(host.recv(Duration::from_millis(50)), None);
    s.service(first, &t).unwrap();
    assert!(matches!(host.recv(SECOND), Some(Frame::Heartbeat(_))));
    assert_eq!(s.deadline(), Some(first + Duration::from_millis(50)));
    // Late: the next one is an interval after now, not a burst.
    let late = first + Duration::from_millis(500);
    s.service(late, &t).unwrap();
    assert!(matches!(host.recv(SECOND), Some(Frame::Heartbeat(_))));
    assert_eq!(host.recv(Duration::from_millis(20)), None);
    assert_eq!(s.deadline(), Some(late + Duration::from_millis(50)));
    s.finish(&End::Exit(ExitStatus::Code(0)));
    assert_eq!(s.deadline(), None);
}

#[test]
fn end_frames_are_within_the_protocols_limits() {
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    let long = "é".repeat(3000);
    s.finish(&End::Fail(long));
    s.service(Instant::now(), &t).unwrap();
    match host.recv(SECOND) {
        Some(Frame::Fail(reason)) => {
            assert!(reason.len() <= fcexec_guest_protocol::MAX_REASON);
            assert!(reason.len() > 4000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fit_reason(""), "unknown failure");
    // A signal the protocol cannot carry becomes a fail that says so.
    let (mut s, t, mut host) = attached(0, DEFAULT_RETAIN);
    s.finish(&End::Exit(ExitStatus::Signal(0)));
    s.service(Instant::now(), &t).unwrap();
    match host.recv(SECOND) {
        Some(Frame::Fail(reason)) => assert!(reason.contains("cannot report the end"), "{reason}"),
        other => panic!("{other:?}"),
    }
}
