//! The protocol 2 session with the host (`docs/guest-protocol.md`): one vsock
//! connection at a time to the host's port, `hello` first, output after the
//! host's `attach`, acks, cancel, heartbeats, reconnects, and the end.
//!
//! The workload (`agent2`) calls [`write`] and waits with [`wait`], which
//! services the connection: it (re)connects with backoff (10 ms doubling to
//! 500 ms) when the connection is lost before `done`, reads the host's frames
//! and sends what is due (`pump`): the hello, heartbeats, retained output
//! from where the host attached (`retain`), raw bytes, and finally the exit
//! or fail frame (`end`), once all output is sent. `done` powers the VM off.
//!
//! A malformed host frame is a protocol error: the agent fails with
//! "guest protocol error: ...", reads nothing more from that connection, and
//! once the fail frame is on the host's socket (the peer's consumed count
//! says so) powers off, since a `done` could no longer be read.

mod end;
mod pump;

use core::fmt;

use fcexec_guest_protocol::{
    capability, decode_host, GuestFrame, HostFrame, Stream, KEY_LEN, VERSION,
};

use end::set_fail;
pub use end::{exit, fail, fatal, Lossy};
use pump::pump;

use crate::retain::{Retained, Source};
use crate::vsock::{self, State};
use crate::{clock, sys, Global};

/// The agent name in the hello.
const AGENT: &str = "test-guest";
const FIRST_BACKOFF_NS: u64 = 10_000_000;
const MAX_BACKOFF_NS: u64 = 500_000_000;
/// Busy-poll this long after the last progress before halting between polls.
const SPIN_NS: u64 = 2_000_000;
/// The longest halt between polls while idle: how late a host frame may be
/// noticed. (Each halt is a system call, emulated ring-0 code here, so an
/// idle guest halts about 100 times a second.)
const IDLE_NS: u64 = 10_000_000;
/// The longest halt while output waits for the host (its credit or acks).
const BUSY_IDLE_NS: u64 = 1_000_000;
/// Bytes of a heartbeat frame (the same as an output frame's header).
const HEARTBEAT_LEN: usize = 13;
const HELLO_MAX: usize = 5 + 2 + KEY_LEN + 4 + 64;

/// The connection, as far as the protocol goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Link {
    /// None; the next attempt is due at `retry_at`.
    Down,
    /// Asked Firecracker for a connection.
    Connecting,
    /// Connected; the hello goes out, the attach is awaited.
    Hello,
    /// Attached: output flows.
    Attached,
}

/// A cancel from the host.
#[derive(Clone, Copy)]
pub struct Cancel {
    /// The grace time it gave.
    pub grace_ms: u32,
    /// When it arrived (kvmclock).
    pub at_ns: u64,
}

struct Session {
    active: bool,
    port: u32,
    heartbeat_ns: u64,
    link: Link,
    retry_at: u64,
    backoff: u64,
    last_progress: u64,
    /// The hello frame, and how much of it this connection has sent.
    hello: Option<&'static [u8]>,
    hello_sent: usize,
    /// Per stream, how far output has been sent on this connection.
    sent: [u64; 2],
    out: Retained,
    /// The exit or fail frame once the workload ended, and how much of it
    /// this connection has sent.
    end: Option<&'static [u8]>,
    end_sent: usize,
    /// Raw bytes to send once, and how many are sent.
    raw: Option<&'static [u8]>,
    raw_sent: usize,
    no_heartbeats: bool,
    next_heartbeat: u64,
    cancel: Option<Cancel>,
    input: [u8; 64],
    input_len: usize,
    /// This connection had a protocol error: nothing more is read from it.
    poisoned: bool,
}

impl Session {
    /// True when this connection has sent all output written so far.
    fn all_sent(&self) -> bool {
        Stream::ALL
            .iter()
            .all(|&st| self.sent[st.index()] == self.out.written(st))
    }
}

static SESSION: Global<Session> = Global::new(Session {
    active: false,
    port: 0,
    heartbeat_ns: 0,
    link: Link::Down,
    retry_at: 0,
    backoff: 0,
    last_progress: 0,
    hello: None,
    hello_sent: 0,
    sent: [0; 2],
    out: Retained::new(),
    end: None,
    end_sent: 0,
    raw: None,
    raw_sent: 0,
    no_heartbeats: false,
    next_heartbeat: 0,
    cancel: None,
    input: [0; 64],
    input_len: 0,
    poisoned: false,
});

/// The encoded hello frame.
static HELLO: Global<[u8; HELLO_MAX]> = Global::new([0; HELLO_MAX]);

fn session() -> &'static mut Session {
    // SAFETY: the public functions take this reference once each and pass it
    // down; none calls another public function while holding it (`fatal`,
    // reached only on a bug, is the exception, see `report`).
    unsafe { &mut *SESSION.get() }
}

pub(super) fn now() -> u64 {
    clock::now_ns().unwrap_or(0)
}

/// True once [`start`] succeeded: failures go over vsock from then on.
pub fn active() -> bool {
    session().active
}

/// Starts the session: sets the vsock device up and builds the hello; the
/// first connection attempt is made by the next [`wait`].
pub fn start(key: [u8; KEY_LEN], port: u32, heartbeat_ms: u64) -> Result<(), &'static str> {
    vsock::init()?;
    crate::retain::init();
    let hello = GuestFrame::Hello {
        version: VERSION,
        key,
        capabilities: capability::RESUME | capability::CANCEL | capability::HEARTBEAT,
        agent: AGENT,
    };
    // SAFETY: written once, here, before any slice of it is handed out.
    let buf = unsafe { &mut *HELLO.get() };
    let len = hello.encode(buf).map_err(|_| "cannot encode the hello")?;
    let s = session();
    s.hello = Some(&buf[..len]);
    s.port = port;
    s.heartbeat_ns = heartbeat_ms.saturating_mul(1_000_000);
    s.active = true;
    s.last_progress = now();
    Ok(())
}

/// Services the connection once (see the module docs); true when anything
/// happened.
pub fn service() -> bool {
    let s = session();
    let mut progress = vsock::poll();
    let now = now();
    // Bytes that came before a close are read first (a `done` is often the
    // host's last word before it closes).
    if matches!(s.link, Link::Hello | Link::Attached) {
        progress |= read_host(s, now);
    }
    match (s.link, vsock::state()) {
        (Link::Down, _) if now >= s.retry_at => {
            vsock::connect(s.port);
            s.link = Link::Connecting;
            progress = true;
        }
        (Link::Connecting, State::Connected) => {
            s.link = Link::Hello;
            progress = true;
        }
        (Link::Connecting | Link::Hello | Link::Attached, State::Closed) => {
            lost(s, now);
            progress = true;
        }
        _ => {}
    }
    progress |= pump(s, now);
    if progress {
        s.last_progress = now;
    }
    progress
}

/// Services the connection once; then, when nothing has happened for a
/// while, halts until `deadline`, the next heartbeat or reconnect attempt,
/// or for at most `IDLE_NS`.
pub fn wait(deadline: u64) {
    if service() {
        return;
    }
    let now = now();
    let s = session();
    if now.saturating_sub(s.last_progress) < SPIN_NS {
        core::hint::spin_loop();
        return;
    }
    let end_out = s.end.map_or(true, |e| s.end_sent == e.len());
    // Waiting for the host's answer (attach, done) is short: stay quick.
    let awaiting = s.link == Link::Hello || (s.end.is_some() && end_out);
    let busy = !s.all_sent() || !end_out || !s.out.has_room() || awaiting;
    let idle = if busy { BUSY_IDLE_NS } else { IDLE_NS };
    let mut until = deadline.min(now.saturating_add(idle));
    if s.link == Link::Down {
        until = until.min(s.retry_at);
    }
    if s.link == Link::Attached && s.heartbeat_ns > 0 && !s.no_heartbeats && s.end.is_none() {
        until = until.min(s.next_heartbeat);
    }
    if until > now {
        sys::idle_until(until);
    }
}

/// Waits until the host has attached (the first time).
pub fn wait_attached() {
    while session().link != Link::Attached {
        wait(u64::MAX);
    }
}

/// The connection was lost: forget its state and schedule the next attempt.
fn lost(s: &mut Session, now: u64) {
    s.link = Link::Down;
    s.backoff = (s.backoff * 2).clamp(FIRST_BACKOFF_NS, MAX_BACKOFF_NS);
    s.retry_at = now.saturating_add(s.backoff);
    s.hello_sent = 0;
    s.end_sent = 0;
    s.raw = None;
    s.raw_sent = 0;
    s.input_len = 0;
    s.poisoned = false;
}

/// Reads and acts on the host's frames.
fn read_host(s: &mut Session, now: u64) -> bool {
    let mut progress = false;
    loop {
        if s.poisoned {
            let mut junk = [0u8; 256];
            while vsock::recv(&mut junk) > 0 {}
            return progress;
        }
        let n = vsock::recv(&mut s.input[s.input_len..]);
        s.input_len += n;
        loop {
            match decode_host(&s.input[..s.input_len]) {
                Ok(None) if s.input_len == s.input.len() => {
                    let len = s.input_len;
                    protocol_error(s, format_args!("a host frame longer than {len} bytes"), now);
                    return true;
                }
                Ok(None) => break,
                Ok(Some((frame, used))) => {
                    s.input.copy_within(used..s.input_len, 0);
                    s.input_len -= used;
                    progress = true;
                    if let Err(reason) = handle(s, frame, now) {
                        protocol_error(s, format_args!("{reason}"), now);
                        return true;
                    }
                }
                Err(e) => {
                    protocol_error(s, format_args!("{e}"), now);
                    return true;
                }
            }
        }
        if n == 0 {
            return progress;
        }
    }
}

/// Acts on one host frame; a frame that is wrong here is a protocol error.
fn handle(s: &mut Session, frame: HostFrame, now: u64) -> Result<(), &'static str> {
    match (frame, s.link) {
        (HostFrame::Done, _) => sys::power_off(),
        (
            HostFrame::Attach {
                stdout_offset,
                stderr_offset,
            },
            Link::Hello,
        ) => {
            let offsets = [stdout_offset, stderr_offset];
            if s.out.check(offsets).is_err() {
                return Err("attach offsets outside the output the agent still has");
            }
            s.out.ack(offsets);
            s.sent = offsets;
            s.link = Link::Attached;
            s.backoff = 0;
            s.next_heartbeat = now.saturating_add(s.heartbeat_ns);
        }
        (HostFrame::Attach { .. }, _) => return Err("a second attach on one connection"),
        (_, Link::Hello) => return Err("a host frame before attach"),
        (
            HostFrame::Ack {
                stdout_offset,
                stderr_offset,
            },
            _,
        ) => {
            let offsets = [stdout_offset, stderr_offset];
            if offsets[0] > s.sent[0] || offsets[1] > s.sent[1] {
                return Err("an ack beyond the output sent");
            }
            s.out.ack(offsets);
        }
        (HostFrame::Cancel { grace_ms }, _) => {
            if s.cancel.is_none() && s.end.is_none() {
                s.cancel = Some(Cancel {
                    grace_ms,
                    at_ns: now,
                });
            }
        }
    }
    Ok(())
}

/// Fails the agent for a protocol error and stops reading this connection.
/// Before attach the fail frame cannot go out on it, so it is dropped and
/// the next connection carries the failure.
fn protocol_error(s: &mut Session, args: fmt::Arguments, now: u64) {
    set_fail(s, format_args!("guest protocol error: {args}"));
    if s.link == Link::Attached {
        s.poisoned = true;
        s.input_len = 0;
    } else {
        lost(s, now);
    }
}

/// True when the workload may write: it is below the retention window.
pub fn has_room() -> bool {
    session().out.has_room()
}

/// The workload wrote `len` bytes to `stream` (from `source`); ignored once
/// the session has ended.
pub fn write(stream: Stream, source: Source, len: u64) {
    let s = session();
    if s.end.is_some() || !s.out.push(stream, source, len) {
        return;
    }
    if pump(s, now()) {
        s.last_progress = now();
    }
}

/// The host's cancel, if one came.
pub fn cancel() -> Option<Cancel> {
    session().cancel
}

/// True once the session has an end (an exit, or a failure such as a
/// protocol error): the workload must stop.
pub fn ended() -> bool {
    session().end.is_some()
}

/// Sends no more heartbeats.
pub fn stop_heartbeats() {
    session().no_heartbeats = true;
}

/// Sends `bytes` as they are on the stream, after all output so far, on the
/// current (or next) connection; they are not resent after a reconnect.
pub fn raw(bytes: &'static [u8]) {
    loop {
        let s = session();
        if s.end.is_some() || (s.link == Link::Attached && s.all_sent()) {
            break;
        }
        wait(u64::MAX);
    }
    let s = session();
    if s.end.is_some() {
        return;
    }
    s.raw = Some(bytes);
    s.raw_sent = 0;
    loop {
        let s = session();
        if !matches!(s.raw, Some(r) if s.raw_sent < r.len()) {
            break;
        }
        wait(u64::MAX);
    }
}
