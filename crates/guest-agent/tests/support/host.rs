//! A scripted host end of guest protocol 2, for the agent's tests (the unit
//! tests include this file with `#[path]`, the namespaced tests with `mod`).
//! It decodes with `fcexec_guest_protocol` and applies the host's rules of
//! `crates/executor/src/agent_link/session.rs`: the hello's version and
//! key, no gap in the output, the exit's lengths.
#![allow(dead_code)] // each test binary uses a part

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use fcexec_guest_protocol::{decode_guest, ExitStatus, GuestFrame, HostFrame, Stream, KEY_LEN};

/// The key the tests use.
pub const KEY: [u8; KEY_LEN] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

/// [`KEY`] as the config drive writes it.
pub const KEY_HEX: &str = "00112233445566778899aabbccddeeff";

/// A guest frame, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// hello.
    Hello {
        version: u16,
        key: [u8; KEY_LEN],
        capabilities: u32,
        agent: String,
    },
    /// stdout or stderr.
    Output {
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    /// exit.
    Exit {
        status: ExitStatus,
        stdout_len: u64,
        stderr_len: u64,
    },
    /// fail.
    Fail(String),
    /// heartbeat.
    Heartbeat(u64),
}

impl Frame {
    fn owned(frame: GuestFrame<'_>) -> Frame {
        match frame {
            GuestFrame::Hello {
                version,
                key,
                capabilities,
                agent,
            } => Frame::Hello {
                version,
                key,
                capabilities,
                agent: agent.to_string(),
            },
            GuestFrame::Output {
                stream,
                offset,
                data,
            } => Frame::Output {
                stream,
                offset,
                data: data.to_vec(),
            },
            GuestFrame::Exit {
                status,
                stdout_len,
                stderr_len,
            } => Frame::Exit {
                status,
                stdout_len,
                stderr_len,
            },
            GuestFrame::Fail { reason } => Frame::Fail(reason.to_string()),
            GuestFrame::Heartbeat { uptime_ms } => Frame::Heartbeat(uptime_ms),
        }
    }

    /// True for exit and fail.
    pub fn is_end(&self) -> bool {
        matches!(self, Frame::Exit { .. } | Frame::Fail(_))
    }
}

/// Waits up to `timeout` for a connection on `listener`.
pub fn accept(listener: &UnixListener, timeout: Duration) -> Option<HostConn> {
    listener.set_nonblocking(true).unwrap();
    let give_up = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return Some(HostConn::new(stream));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= give_up {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// One connection, from the host's side.
#[derive(Debug)]
pub struct HostConn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// True once the agent closed its end.
    pub closed: bool,
}

impl HostConn {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> HostConn {
        HostConn {
            stream,
            buf: Vec::new(),
            closed: false,
        }
    }

    /// The next frame within `timeout`; `None` on timeout or when the
    /// agent closed the connection. A malformed frame panics.
    pub fn recv(&mut self, timeout: Duration) -> Option<Frame> {
        let give_up = Instant::now() + timeout;
        loop {
            match decode_guest(&self.buf) {
                Ok(Some((frame, used))) => {
                    let frame = Frame::owned(frame);
                    self.buf.drain(..used);
                    return Some(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("the agent sent a malformed frame: {e}"),
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if self.closed || left.is_zero() {
                return None;
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => self.closed = true,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// Sends a host frame (ignoring a closed connection).
    pub fn send(&mut self, frame: HostFrame) {
        let mut buf = [0u8; HostFrame::MAX_LEN];
        let n = frame.encode(&mut buf).unwrap();
        let _ = self.stream.write_all(&buf[..n]);
    }

    /// Sends raw bytes.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// Reads the hello (checking version, key, capabilities and name).
    pub fn expect_hello(&mut self, timeout: Duration) {
        match self.recv(timeout) {
            Some(Frame::Hello {
                version,
                key,
                capabilities,
                agent,
            }) => {
                assert_eq!(version, 2);
                assert_eq!(key, KEY, "the hello carries another key");
                assert_eq!(capabilities, 7, "RESUME | CANCEL | HEARTBEAT");
                assert_eq!(agent, "fcexec-agent");
            }
            other => panic!("expected a hello, got {other:?}"),
        }
    }
}

/// What the host stored of the report.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// stdout as stored.
    pub stdout: Vec<u8>,
    /// stderr as stored.
    pub stderr: Vec<u8>,
    /// The end (exit or fail).
    pub end: Option<Frame>,
    /// Heartbeats seen.
    pub heartbeats: usize,
    /// Frames seen, by kind, in order (for diagnostics).
    pub log: Vec<String>,
}

impl Stored {
    /// Applies a frame as the host does; returns true when it stored output.
    pub fn apply(&mut self, frame: &Frame) -> bool {
        self.log.push(match frame {
            Frame::Output {
                stream,
                offset,
                data,
            } => format!("{stream}@{offset}+{}", data.len()),
            other => format!("{other:?}").chars().take(60).collect(),
        });
        match frame {
            Frame::Output {
                stream,
                offset,
                data,
            } => {
                let store = match stream {
                    Stream::Stdout => &mut self.stdout,
                    Stream::Stderr => &mut self.stderr,
                };
                let have = store.len() as u64;
                assert!(
                    *offset <= have,
                    "{stream} at {offset} leaves a gap after {have}"
                );
                let skip = ((have - offset) as usize).min(data.len());
                store.extend_from_slice(&data[skip..]);
                skip < data.len()
            }
            Frame::Exit {
                stdout_len,
                stderr_len,
                ..
            } => {
                assert_eq!(*stdout_len, self.stdout.len() as u64, "exit's stdout_len");
                assert_eq!(*stderr_len, self.stderr.len() as u64, "exit's stderr_len");
                self.end = Some(frame.clone());
                false
            }
            Frame::Fail(_) => {
                self.end = Some(frame.clone());
                false
            }
            Frame::Heartbeat(_) => {
                self.heartbeats += 1;
                false
            }
            Frame::Hello { .. } => panic!("a second hello on one connection"),
        }
    }

    /// The ack for what is stored.
    pub fn ack(&self) -> HostFrame {
        HostFrame::Ack {
            stdout_offset: self.stdout.len() as u64,
            stderr_offset: self.stderr.len() as u64,
        }
    }

    /// The attach for what is stored.
    pub fn attach(&self) -> HostFrame {
        HostFrame::Attach {
            stdout_offset: self.stdout.len() as u64,
            stderr_offset: self.stderr.len() as u64,
        }
    }

    /// stdout as text.
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text.
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// The exit status, if the end was an exit.
    pub fn status(&self) -> Option<ExitStatus> {
        match self.end {
            Some(Frame::Exit { status, .. }) => Some(status),
            _ => None,
        }
    }

    /// The fail reason, if the end was a fail.
    pub fn fail(&self) -> Option<&str> {
        match &self.end {
            Some(Frame::Fail(reason)) => Some(reason),
            _ => None,
        }
    }
}

/// Plays a well-behaved host on `conn` until the end arrives (then sends
/// `done`), the connection closes, or `timeout` passes: hello, attach at
/// what is stored, an ack after each output frame. `hook` sees each frame
/// after it is applied and may send frames (a cancel, say).
pub fn serve(
    conn: &mut HostConn,
    stored: &mut Stored,
    timeout: Duration,
    hook: &mut dyn FnMut(&Frame, &mut HostConn, &Stored),
) {
    conn.expect_hello(timeout);
    conn.send(stored.attach());
    serve_attached(conn, stored, timeout, hook);
}

/// [`serve`] after the attach.
pub fn serve_attached(
    conn: &mut HostConn,
    stored: &mut Stored,
    timeout: Duration,
    hook: &mut dyn FnMut(&Frame, &mut HostConn, &Stored),
) {
    let give_up = Instant::now() + timeout;
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        let Some(frame) = conn.recv(left) else {
            return;
        };
        if stored.apply(&frame) {
            conn.send(stored.ack());
        }
        hook(&frame, conn, stored);
        if frame.is_end() {
            conn.send(HostFrame::Done);
            return;
        }
    }
}

/// A hook that does nothing.
pub fn no_hook(_: &Frame, _: &mut HostConn, _: &Stored) {}
