//! The protocol 2 client (`docs/guest-protocol.md`, "Version 2"): one
//! connection at a time to the host, the same rules as the host's end in
//! `crates/executor/src/agent_link/session.rs` checks.
//!
//! 1. Each connection starts with `hello` (version 2, the key, the
//!    capabilities `RESUME | CANCEL | HEARTBEAT`, agent name
//!    [`AGENT_NAME`]); nothing else goes out before the host's `attach`.
//! 2. `attach` says how much of each stream the host stored: output is
//!    (re)sent from there, in frames of at most `MAX_DATA` bytes whose
//!    offsets follow each other. An `attach` outside the output the agent
//!    still holds is a protocol error.
//! 3. Output is *retained* until an `ack` covers it, so it can be resent on
//!    the next connection. At most `retain_limit` bytes are retained; the
//!    supervisor reads the job's pipes only while [`Session::room`] is
//!    non-zero, so past the bound the job blocks on a full pipe.
//! 4. Heartbeats go out every `heartbeat_ms` while attached, until the end
//!    is queued.
//! 5. The end (`exit` with both streams' lengths, or `fail`) goes out after
//!    all output; the agent then waits for `done`. A connection lost before
//!    `done` is re-made with backoff (10 ms, doubling to 500 ms), and the
//!    retained output and the end are sent again from the new `attach`.
//! 6. A malformed or misplaced host frame is a protocol error
//!    ([`Event::ProtocolError`]): once attached, nothing more is read from
//!    that connection and, once the end is written, the session gives up
//!    waiting for `done` ([`Event::Abandoned`]); before `attach`, the
//!    connection is dropped and the next one carries the failure.
//!
//! The session does no waiting of its own: the supervisor polls its
//! connection and calls [`Session::service`], which reads and writes
//! without blocking.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use fcexec_guest_protocol::{
    capability, decode_host, ExitStatus, GuestFrame, HostFrame, Stream, KEY_LEN, MAX_DATA,
    MAX_REASON, VERSION,
};

use crate::sys::{self, Wait};

mod retained;
use crate::transport::{Conn, Transport};
use retained::Retained;

/// The agent name in the hello.
pub const AGENT_NAME: &str = "fcexec-agent";
/// The default bound of retained (unacked) output, both streams together.
pub const DEFAULT_RETAIN: usize = 4 << 20;
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// Frames are queued for writing until this many bytes wait.
const QUEUE_TARGET: usize = 256 << 10;

/// What the host said or did, for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The host attached; `first` on the first connection.
    Attached {
        /// True the first time: the workload may start.
        first: bool,
    },
    /// Terminate the workload now, kill it after `grace`.
    Cancel {
        /// Time between SIGTERM and SIGKILL.
        grace: Duration,
    },
    /// The host has the whole report.
    Done,
    /// The host broke the protocol; the run fails with this reason.
    ProtocolError(String),
    /// The end is written on a connection that can no longer carry a
    /// `done` (after a protocol error): stop waiting.
    Abandoned,
}

/// How the run ended, as reported to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The job ended with this status.
    Exit(ExitStatus),
    /// The agent failed, for this reason.
    Fail(String),
}

/// Where the current connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection; the next try is due at this instant.
    Down(Instant),
    /// Connected, hello sent or being sent; awaiting attach.
    Hello,
    /// Attached: output flows.
    Attached,
    /// Attached, but the host broke the protocol: its frames are ignored.
    Poisoned,
}

/// The client end of guest protocol 2 (see the module docs).
#[derive(Debug)]
pub struct Session {
    hello: Vec<u8>,
    port: u32,
    heartbeat: Option<Duration>,
    retain_limit: usize,
    started: Instant,
    conn: Option<Conn>,
    link: Link,
    backoff: Duration,
    attached_once: bool,
    out: [Retained; 2],
    /// Per stream, how far output is queued on this connection.
    sent: [u64; 2],
    /// Encoded frames to write; `outgoing[written..]` is still due.
    outgoing: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    /// The encoded end frame, once the run ended, and whether this
    /// connection has queued it.
    end: Option<Vec<u8>>,
    end_queued: bool,
    abandoned_said: bool,
    next_heartbeat: Instant,
}

impl Session {
    /// A session with the execution's `key`, connecting to `port`, sending
    /// a heartbeat every `heartbeat_ms` (0: none), retaining at most
    /// `retain_limit` unacked bytes. The first connection is tried at once.
    pub fn new(
        key: [u8; KEY_LEN],
        port: u32,
        heartbeat_ms: u64,
        retain_limit: usize,
        now: Instant,
    ) -> Session {
        let hello = GuestFrame::Hello {
            version: VERSION,
            key,
            capabilities: capability::RESUME | capability::CANCEL | capability::HEARTBEAT,
            agent: AGENT_NAME,
        };
        let mut buf = vec![0; hello.encoded_len()];
        // The name is within MAX_AGENT_NAME and the buffer is sized: this cannot fail.
        let len = hello.encode(&mut buf).unwrap_or(0);
        buf.truncate(len);
        Session {
            hello: buf,
            port,
            heartbeat: (heartbeat_ms > 0).then(|| sys::ms(heartbeat_ms)),
            retain_limit: retain_limit.max(1),
            started: now,
            conn: None,
            link: Link::Down(now),
            backoff: Duration::ZERO,
            attached_once: false,
            out: Default::default(),
            sent: [0; 2],
            outgoing: Vec::new(),
            written: 0,
            input: Vec::new(),
            end: None,
            end_queued: false,
            abandoned_said: false,
            next_heartbeat: now,
        }
    }

    /// True once a host has attached.
    pub fn attached_once(&self) -> bool {
        self.attached_once
    }

    /// How many more output bytes may be retained now.
    pub fn room(&self) -> usize {
        let held: usize = self.out.iter().map(|r| r.data.len()).sum();
        self.retain_limit.saturating_sub(held)
    }

    /// Bytes written to each stream so far (stdout, stderr).
    pub fn written(&self) -> [u64; 2] {
        [self.out[0].written(), self.out[1].written()]
    }

    /// The workload wrote `data` to `stream`. Ignored once the end is set.
    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        if self.end.is_none() {
            self.out[stream.index()].data.extend(data);
        }
    }

    /// Sets the end of the report (the first call wins); it goes out after
    /// all output, on this connection or the next.
    pub fn finish(&mut self, end: &End) {
        if self.end.is_some() {
            return;
        }
        let [stdout_len, stderr_len] = self.written();
        let reason;
        let frame = match end {
            End::Exit(status) => GuestFrame::Exit {
                status: *status,
                stdout_len,
                stderr_len,
            },
            End::Fail(text) => {
                reason = fit_reason(text);
                GuestFrame::Fail { reason: &reason }
            }
        };
        let mut buf = vec![0; frame.encoded_len()];
        match frame.encode(&mut buf) {
            Ok(len) => buf.truncate(len),
            Err(e) => {
                // Only a bad signal number can get here: say so instead.
                let text = format!("cannot report the end {end:?}: {e}");
                let frame = GuestFrame::Fail {
                    reason: &fit_reason(&text),
                };
                buf = vec![0; frame.encoded_len()];
                let len = frame.encode(&mut buf).unwrap_or(0);
                buf.truncate(len);
            }
        }
        self.end = Some(buf);
    }

    /// What to poll for: the connection, readable, and writable while
    /// frames wait.
    pub(crate) fn wait(&self) -> Option<Wait> {
        let conn = self.conn.as_ref()?;
        let mut events = libc::POLLIN;
        if self.written < self.outgoing.len() {
            events |= libc::POLLOUT;
        }
        Some(Wait::new(conn.as_raw_fd(), events))
    }

    /// When [`service`](Self::service) is due next without any I/O: the
    /// next connection attempt or heartbeat.
    pub fn deadline(&self) -> Option<Instant> {
        match self.link {
            Link::Down(at) => Some(at),
            Link::Attached if self.end.is_none() => self.heartbeat.map(|_| self.next_heartbeat),
            _ => None,
        }
    }

    /// Connects when due, reads and acts on the host's frames, queues what
    /// is due and writes it; never blocks. An `Unsupported` error from the
    /// transport before any attach is returned (no vsock: fall back to
    /// protocol 1); other connection failures are retried with backoff.
    pub fn service(&mut self, now: Instant, transport: &dyn Transport) -> io::Result<Vec<Event>> {
        let mut events = Vec::new();
        if let Link::Down(at) = self.link {
            if now < at {
                return Ok(events);
            }
            match transport.connect(self.port) {
                Ok(conn) if conn.set_nonblocking(true).is_ok() => self.connected(conn),
                Err(e) if e.kind() == io::ErrorKind::Unsupported && !self.attached_once => {
                    return Err(e)
                }
                _ => {
                    self.lost(now);
                    return Ok(events);
                }
            }
        }
        self.read_host(now, &mut events);
        self.fill(now);
        self.write_out(now);
        if self.link == Link::Poisoned && self.end_out() && !self.abandoned_said {
            self.abandoned_said = true;
            events.push(Event::Abandoned);
        }
        Ok(events)
    }

    fn connected(&mut self, conn: Conn) {
        self.conn = Some(conn);
        self.link = Link::Hello;
        self.outgoing.clear();
        self.outgoing.extend_from_slice(&self.hello);
        self.written = 0;
        self.input.clear();
        self.end_queued = false;
    }

    /// The connection is gone: schedule the next attempt.
    fn lost(&mut self, now: Instant) {
        self.conn = None;
        self.backoff = (self.backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
        self.link = Link::Down(now + self.backoff);
        self.outgoing.clear();
        self.written = 0;
        self.input.clear();
        self.end_queued = false;
    }

    /// True when this connection has written the whole end frame.
    fn end_out(&self) -> bool {
        self.end_queued && self.written == self.outgoing.len()
    }

    fn read_host(&mut self, now: Instant, events: &mut Vec<Event>) {
        let mut buf = [0u8; 512];
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.read(&mut buf) {
                Ok(0) => return self.lost(now),
                // After a protocol error the host's bytes are ignored.
                Ok(_) if self.link == Link::Poisoned => continue,
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.lost(now),
            }
            while self.link != Link::Poisoned && self.conn.is_some() {
                match decode_host(&self.input) {
                    Ok(None) => break,
                    Ok(Some((frame, used))) => {
                        self.input.drain(..used);
                        if let Err(reason) = self.handle(frame, now, events) {
                            self.protocol_error(reason, now, events);
                        }
                    }
                    Err(e) => self.protocol_error(e.to_string(), now, events),
                }
            }
        }
    }

    fn handle(
        &mut self,
        frame: HostFrame,
        now: Instant,
        events: &mut Vec<Event>,
    ) -> Result<(), String> {
        match (frame, self.link) {
            (HostFrame::Done, _) => events.push(Event::Done),
            (
                HostFrame::Attach {
                    stdout_offset,
                    stderr_offset,
                },
                Link::Hello,
            ) => {
                let offsets = [stdout_offset, stderr_offset];
                for stream in Stream::ALL {
                    let r = &self.out[stream.index()];
                    let at = offsets[stream.index()];
                    if at < r.base || at > r.written() {
                        return Err(format!(
                            "attach at {stream} offset {at} is outside the output the agent \
                             still has ({} to {})",
                            r.base,
                            r.written()
                        ));
                    }
                }
                for stream in Stream::ALL {
                    self.out[stream.index()].drop_below(offsets[stream.index()]);
                }
                self.sent = offsets;
                self.link = Link::Attached;
                self.backoff = Duration::ZERO;
                if let Some(every) = self.heartbeat {
                    self.next_heartbeat = now + every;
                }
                events.push(Event::Attached {
                    first: !self.attached_once,
                });
                self.attached_once = true;
            }
            (HostFrame::Attach { .. }, _) => return Err("a second attach on one connection".into()),
            (other, Link::Hello) => {
                return Err(format!("a host {} frame before attach", other.kind_name()))
            }
            (
                HostFrame::Ack {
                    stdout_offset,
                    stderr_offset,
                },
                _,
            ) => {
                let offsets = [stdout_offset, stderr_offset];
                for stream in Stream::ALL {
                    let (acked, sent) = (offsets[stream.index()], self.sent[stream.index()]);
                    if acked > sent {
                        return Err(format!(
                            "an ack of {stream} up to {acked}, beyond the {sent} bytes sent"
                        ));
                    }
                }
                for stream in Stream::ALL {
                    self.out[stream.index()].drop_below(offsets[stream.index()]);
                }
            }
            (HostFrame::Cancel { grace_ms }, _) => events.push(Event::Cancel {
                grace: sys::ms(u64::from(grace_ms)),
            }),
        }
        Ok(())
    }

    fn protocol_error(&mut self, reason: String, now: Instant, events: &mut Vec<Event>) {
        events.push(Event::ProtocolError(format!(
            "guest protocol error: {reason}"
        )));
        self.input.clear();
        if self.link == Link::Hello {
            self.lost(now);
        } else {
            self.link = Link::Poisoned;
        }
    }

    /// Queues what is due: a heartbeat, output from the sent offsets on,
    /// and the end once all output is queued.
    fn fill(&mut self, now: Instant) {
        if !matches!(self.link, Link::Attached | Link::Poisoned) {
            return;
        }
        if self.written == self.outgoing.len() {
            self.outgoing.clear();
            self.written = 0;
        } else if self.written > QUEUE_TARGET {
            self.outgoing.drain(..self.written);
            self.written = 0;
        }
        if let Some(every) = self.heartbeat {
            if self.link == Link::Attached && self.end.is_none() && now >= self.next_heartbeat {
                let uptime_ms = now.duration_since(self.started).as_millis() as u64;
                self.queue(&GuestFrame::Heartbeat { uptime_ms });
                self.next_heartbeat += every;
                if self.next_heartbeat <= now {
                    self.next_heartbeat = now + every;
                }
            }
        }
        for stream in Stream::ALL {
            let i = stream.index();
            while self.outgoing.len() - self.written < QUEUE_TARGET
                && self.sent[i] < self.out[i].written()
            {
                let offset = self.sent[i];
                let len = (self.out[i].written() - offset).min(MAX_DATA as u64) as usize;
                let Ok(header) = fcexec_guest_protocol::output_header(stream, offset, len) else {
                    break;
                };
                self.outgoing.extend_from_slice(&header);
                let copied = self.out[i].copy_from(offset, len, &mut self.outgoing);
                self.sent[i] += copied as u64;
            }
        }
        let all_sent = Stream::ALL
            .iter()
            .all(|s| self.sent[s.index()] == self.out[s.index()].written());
        if all_sent && !self.end_queued {
            if let Some(end) = &self.end {
                self.outgoing.extend_from_slice(end);
                self.end_queued = true;
            }
        }
    }

    fn queue(&mut self, frame: &GuestFrame<'_>) {
        let start = self.outgoing.len();
        self.outgoing.resize(start + frame.encoded_len(), 0);
        match frame.encode(&mut self.outgoing[start..]) {
            Ok(n) => self.outgoing.truncate(start + n),
            Err(_) => self.outgoing.truncate(start),
        }
    }

    fn write_out(&mut self, now: Instant) {
        while self.written < self.outgoing.len() {
            let Some(conn) = self.conn.as_mut() else {
                return;
            };
            match conn.write(&self.outgoing[self.written..]) {
                Ok(0) => return self.lost(now),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return self.lost(now),
            }
        }
    }
}

/// A fail reason as the protocol takes it: 1 to `MAX_REASON` bytes of
/// UTF-8, cut at a character boundary, never empty.
pub(crate) fn fit_reason(text: &str) -> String {
    let mut cut = text.len().min(MAX_REASON);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    match &text[..cut] {
        "" => "unknown failure".to_string(),
        fit => fit.to_string(),
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
