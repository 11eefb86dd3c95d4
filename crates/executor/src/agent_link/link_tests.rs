//! The link over a real Unix socket, with a scripted agent on the other
//! end (the real agent and VMM are in the executor's integration tests).

use super::*;
use fcexec_guest_protocol::{decode_host, ExitStatus, GuestFrame, Stream, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: [u8; 16] = [9; 16];

struct Fixture {
    _dir: tempfile::TempDir,
    socket: std::path::PathBuf,
    stdout: std::path::PathBuf,
    link: AgentLink,
}

fn fixture(limit: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("v.sock_1024");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let parts = LinkParts {
        listener: bind(&socket).unwrap(),
        key: KEY,
        store: OutputStore::open(&stdout, &stderr, limit).unwrap(),
    };
    Fixture {
        socket,
        stdout,
        link: AgentLink::new(parts, None).unwrap(),
        _dir: dir,
    }
}

fn encode(frame: GuestFrame<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; frame.encoded_len()];
    frame.encode(&mut buf).unwrap();
    buf
}

fn hello(key: [u8; 16]) -> Vec<u8> {
    encode(GuestFrame::Hello {
        version: VERSION,
        key,
        capabilities: capability::CANCEL | capability::HEARTBEAT | capability::RESUME,
        agent: "scripted",
    })
}

fn out(offset: u64, data: &[u8]) -> Vec<u8> {
    encode(GuestFrame::Output {
        stream: Stream::Stdout,
        offset,
        data,
    })
}

fn exit(code: u8, stdout_len: u64) -> Vec<u8> {
    encode(GuestFrame::Exit {
        status: ExitStatus::Code(code),
        stdout_len,
        stderr_len: 0,
    })
}

/// Reads host frames until `want` arrives; returns everything read.
async fn read_until(conn: &mut UnixStream, want: fn(&HostFrame) -> bool) -> Vec<HostFrame> {
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    loop {
        while let Ok(Some((frame, used))) = decode_host(&buf) {
            buf.drain(..used);
            frames.push(frame);
            if want(&frame) {
                return frames;
            }
        }
        let mut chunk = [0u8; 256];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the link closed; got {frames:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Drives the link in the background until it reports `until`.
fn drive(mut link: AgentLink, until: fn(&LinkEvent) -> bool) -> JoinHandle<(AgentLink, LinkEvent)> {
    tokio::spawn(async move {
        loop {
            let event = link.next().await;
            if until(&event) {
                return (link, event);
            }
        }
    })
}

#[tokio::test]
async fn an_agent_attaches_sends_output_is_acked_and_told_done() {
    let f = fixture(1 << 20);
    let task = drive(f.link, |e| *e == LinkEvent::Ended);
    let mut agent = UnixStream::connect(&f.socket).await.unwrap();
    agent.write_all(&hello(KEY)).await.unwrap();
    let attach = read_until(&mut agent, |f| matches!(f, HostFrame::Attach { .. })).await;
    assert_eq!(
        attach,
        [HostFrame::Attach {
            stdout_offset: 0,
            stderr_offset: 0
        }]
    );
    // A second connection is refused while the first is served.
    let mut intruder = UnixStream::connect(&f.socket).await.unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(intruder.read(&mut byte).await.unwrap(), 0, "refused");
    let big = vec![b'x'; 200_000];
    let mut offset = 0;
    for chunk in big.chunks(fcexec_guest_protocol::MAX_DATA) {
        agent.write_all(&out(offset, chunk)).await.unwrap();
        offset += chunk.len() as u64;
    }
    agent.write_all(&exit(7, offset)).await.unwrap();
    let (mut link, _) = task.await.unwrap();
    link.flush().await;
    let replies = read_until(&mut agent, |f| *f == HostFrame::Done).await;
    assert!(replies.contains(&HostFrame::Ack {
        stdout_offset: 200_000,
        stderr_offset: 0
    }));
    assert_eq!(link.report().exit, Some(ExitStatus::Code(7)));
    assert_eq!(std::fs::read(&f.stdout).unwrap(), big);
}

#[tokio::test]
async fn a_dropped_connection_resumes_at_the_stored_offsets() {
    let f = fixture(1 << 20);
    let task = drive(f.link, |e| matches!(e, LinkEvent::Stored([3, 0])));
    let mut agent = UnixStream::connect(&f.socket).await.unwrap();
    agent.write_all(&hello(KEY)).await.unwrap();
    agent.write_all(&out(0, b"abc")).await.unwrap();
    let (link, _) = task.await.unwrap();
    drop(agent);
    let task = drive(link, |e| *e == LinkEvent::Ended);
    let mut agent = UnixStream::connect(&f.socket).await.unwrap();
    agent.write_all(&hello(KEY)).await.unwrap();
    let attach = read_until(&mut agent, |f| matches!(f, HostFrame::Attach { .. })).await;
    assert_eq!(
        attach.last(),
        Some(&HostFrame::Attach {
            stdout_offset: 3,
            stderr_offset: 0
        })
    );
    agent.write_all(&out(1, b"bcdef")).await.unwrap();
    agent.write_all(&exit(0, 6)).await.unwrap();
    task.await.unwrap();
    assert_eq!(std::fs::read(&f.stdout).unwrap(), b"abcdef");
}

#[tokio::test]
async fn malformed_input_is_a_protocol_error_with_a_reason() {
    let mut too_long = vec![0u8; 5];
    too_long[..4].copy_from_slice(&(1u32 << 30).to_le_bytes());
    too_long[4] = 0x02;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("bad key", hello([1; 16]), "wrong key"),
        (
            "oversized length",
            [hello(KEY), too_long].concat(),
            "bad frame length",
        ),
        (
            "unknown kind",
            [hello(KEY), vec![1, 0, 0, 0, 0x7f]].concat(),
            "unknown frame kind",
        ),
        (
            "frame after exit",
            [hello(KEY), exit(0, 0), out(0, b"x")].concat(),
            "after the agent reported the end",
        ),
    ];
    for (name, bytes, expect) in cases {
        let f = fixture(1 << 20);
        let task = drive(f.link, |e| matches!(e, LinkEvent::ProtocolError(_)));
        let mut agent = UnixStream::connect(&f.socket).await.unwrap();
        agent.write_all(&bytes).await.unwrap();
        let (_, event) = task.await.unwrap();
        let LinkEvent::ProtocolError(error) = event else {
            unreachable!()
        };
        assert!(error.contains(expect), "{name}: {error}");
    }
}

#[tokio::test]
async fn a_connection_cut_mid_frame_is_reported() {
    let f = fixture(1 << 20);
    let task = drive(f.link, |e| matches!(e, LinkEvent::Stored(_)));
    let mut agent = UnixStream::connect(&f.socket).await.unwrap();
    agent.write_all(&hello(KEY)).await.unwrap();
    agent.write_all(&out(0, b"ok")).await.unwrap();
    let (mut link, _) = task.await.unwrap();
    // Once the link wrote everything it had, only the cut frame is left.
    link.flush().await;
    read_until(&mut agent, |f| matches!(f, HostFrame::Ack { .. })).await;
    let frame = out(2, b"cut short");
    agent.write_all(&frame[..frame.len() - 3]).await.unwrap();
    drop(agent);
    // Let the link read the partial frame and the end of the connection.
    let _ = tokio::time::timeout(Duration::from_millis(300), link.next()).await;
    let error = link.report().protocol_error.unwrap_or_default();
    assert!(error.contains("in the middle of a frame"), "{error}");
}

#[tokio::test]
async fn output_past_the_cap_stops_the_link() {
    let f = fixture(4);
    let task = drive(f.link, |e| *e == LinkEvent::OverLimit);
    let mut agent = UnixStream::connect(&f.socket).await.unwrap();
    agent.write_all(&hello(KEY)).await.unwrap();
    agent.write_all(&out(0, b"abcdef")).await.unwrap();
    task.await.unwrap();
    assert_eq!(std::fs::read(&f.stdout).unwrap(), b"abcd");
}
