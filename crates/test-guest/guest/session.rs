//! The protocol 2 session with the host (`docs/guest-protocol.md`): one vsock
//! connection at a time to the host's port, `hello` first, output after the
//! host's `attach`, acks, cancel, heartbeats, reconnects, and the end.
//!
//! The workload (`agent2`) calls [`write`] and waits with [`wait`], which
//! services the connection: it (re)connects with backoff (10 ms doubling to
//! 500 ms) when the connection is lost before `done`, reads the host's frames
//! and sends what is due ([`pump`]): the hello, heartbeats, retained output
//! from where the host attached (`retain`), raw bytes, and finally the exit
//! or fail frame, once all output is sent. `done` powers the VM off.
//!
//! A malformed host frame is a protocol error: the agent fails with
//! "guest protocol error: ...", reads nothing more from that connection, and
//! once the fail frame is on the host's socket (the peer's consumed count
//! says so) powers off, since a `done` could no longer be read.

use core::fmt::{self, Write};

use fcexec_guest_protocol::{
    capability, decode_host, output_header, ExitStatus, GuestFrame, HostFrame, Stream, KEY_LEN,
    MAX_REASON, OUTPUT_HEADER_LEN, VERSION,
};

use crate::retain::{Retained, Source};
use crate::vsock::{self, Part, State, MAX_PARTS};
use crate::{clock, sys, Global};

/// The agent name in the hello.
const AGENT: &str = "test-guest";
const FIRST_BACKOFF_NS: u64 = 10_000_000;
const MAX_BACKOFF_NS: u64 = 500_000_000;
/// Busy-poll this long after the last progress before halting between polls.
const SPIN_NS: u64 = 2_000_000;
/// The longest halt between polls.
const IDLE_NS: u64 = 1_000_000;
/// Bytes of a heartbeat frame (the same as an output frame's header).
const HEARTBEAT_LEN: usize = 13;
const HELLO_MAX: usize = 5 + 2 + KEY_LEN + 4 + 64;
const END_MAX: usize = 5 + MAX_REASON;

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
/// The encoded exit or fail frame.
static END: Global<[u8; END_MAX]> = Global::new([0; END_MAX]);
/// The fail reason, being formatted.
static REASON: Global<Text> = Global::new(Text {
    buf: [0; MAX_REASON],
    len: 0,
});

fn session() -> &'static mut Session {
    // SAFETY: the public functions take this reference once each and pass it
    // down; none calls another public function while holding it (`fatal`,
    // reached only on a bug, is the exception, see `report`).
    unsafe { &mut *SESSION.get() }
}

fn now() -> u64 {
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
    if matches!(s.link, Link::Hello | Link::Attached) {
        progress |= read_host(s, now);
    }
    progress |= pump(s, now);
    if progress {
        s.last_progress = now;
    }
    progress
}

/// Services the connection once, then, when nothing has happened for a
/// while, halts until `deadline` or for at most a millisecond.
pub fn wait(deadline: u64) {
    if service() {
        return;
    }
    let now = now();
    if now.saturating_sub(session().last_progress) < SPIN_NS {
        core::hint::spin_loop();
    } else if now < deadline {
        sys::idle_until(deadline.min(now + IDLE_NS));
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
        (HostFrame::Attach { .. }, _) => {
            return Err("a second attach on one connection")
        }
        (_, Link::Hello) => return Err("a host frame before attach"),
        (
            HostFrame::Ack {
                stdout_offset,
                stderr_offset,
            },
            _,
        ) => {
            let offsets = [stdout_offset, stderr_offset];
            if offsets[0] > s.out.written(Stream::Stdout)
                || offsets[1] > s.out.written(Stream::Stderr)
            {
                return Err("an ack beyond the output written");
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

/// A piece of a packet: a 13-byte header (output or heartbeat) or bytes in place.
#[derive(Clone, Copy)]
enum Piece {
    Header([u8; OUTPUT_HEADER_LEN]),
    Static(&'static [u8]),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Header(h) => h.len(),
            Piece::Static(b) => b.len(),
        }
    }
}

/// Sends everything that is due and fits the peer's credit, in as few
/// packets and one notification; true when anything was sent.
fn pump(s: &mut Session, now: u64) -> bool {
    if !matches!(s.link, Link::Hello | Link::Attached) {
        return false;
    }
    let mut sent_any = false;
    loop {
        let (room, max_parts) = vsock::room();
        let mut pieces = [Piece::Static(&[]); MAX_PARTS];
        let (mut n, mut bytes) = (0, 0);
        while n + 2 <= max_parts && bytes < room {
            let Some((first, second)) = next_piece(s, room - bytes, now) else {
                break;
            };
            for piece in [Some(first), second].into_iter().flatten() {
                pieces[n] = piece;
                bytes += piece.len();
                n += 1;
            }
        }
        if n == 0 {
            break;
        }
        let mut parts = [Part::Static(&[]); MAX_PARTS];
        for (part, piece) in parts.iter_mut().zip(&pieces[..n]) {
            *part = match piece {
                Piece::Header(h) => Part::Copy(h),
                Piece::Static(b) => Part::Static(b),
            };
        }
        if !vsock::send(&parts[..n]) {
            crate::report::fatal(format_args!("vsock: a packet did not fit its room"));
        }
        sent_any = true;
    }
    vsock::kick();
    sent_any
}

/// The next piece(s) to send, at most `room` bytes, advancing the cursors.
fn next_piece(s: &mut Session, room: usize, now: u64) -> Option<(Piece, Option<Piece>)> {
    if s.link == Link::Hello {
        let hello = s.hello?;
        return blob(hello, &mut s.hello_sent, room).map(|p| (p, None));
    }
    if let Some(end) = s.end {
        if s.end_sent > 0 {
            return blob(end, &mut s.end_sent, room).map(|p| (p, None));
        }
    }
    let raw_midway = s.raw.is_some_and(|r| s.raw_sent > 0 && s.raw_sent < r.len());
    if !s.no_heartbeats
        && s.heartbeat_ns > 0
        && s.end.is_none()
        && !raw_midway
        && now >= s.next_heartbeat
        && room >= HEARTBEAT_LEN
    {
        let mut frame = [0u8; HEARTBEAT_LEN];
        let uptime_ms = now / 1_000_000;
        GuestFrame::Heartbeat { uptime_ms }.encode(&mut frame).ok()?;
        s.next_heartbeat = s.next_heartbeat.saturating_add(s.heartbeat_ns);
        if s.next_heartbeat <= now {
            s.next_heartbeat = now.saturating_add(s.heartbeat_ns);
        }
        return Some((Piece::Header(frame), None));
    }
    if let Some(raw) = s.raw {
        if s.raw_sent < raw.len() {
            return blob(raw, &mut s.raw_sent, room).map(|p| (p, None));
        }
    }
    if room > OUTPUT_HEADER_LEN {
        if let Some((stream, offset, data)) = s.out.next(s.sent, room - OUTPUT_HEADER_LEN) {
            let header = output_header(stream, offset, data.len()).ok()?;
            s.sent[stream.index()] += data.len() as u64;
            return Some((Piece::Header(header), Some(Piece::Static(data))));
        }
    }
    let all_sent = Stream::ALL
        .iter()
        .all(|&st| s.sent[st.index()] == s.out.written(st));
    match s.end {
        Some(end) if all_sent && s.end_sent == 0 => {
            blob(end, &mut s.end_sent, room).map(|p| (p, None))
        }
        _ => None,
    }
}

/// The next at most `room` bytes of `bytes` from `*sent` on, if any.
fn blob(bytes: &'static [u8], sent: &mut usize, room: usize) -> Option<Piece> {
    let rest = bytes.get(*sent..).filter(|r| !r.is_empty())?;
    let n = rest.len().min(room);
    *sent += n;
    Some(Piece::Static(&rest[..n]))
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
        let all_sent = Stream::ALL
            .iter()
            .all(|&st| s.sent[st.index()] == s.out.written(st));
        if s.end.is_some() || (s.link == Link::Attached && all_sent) {
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

/// Ends the session with the workload's exit status (unless it already has
/// an end), delivers it, waits for `done` and powers off.
pub fn exit(status: ExitStatus) -> ! {
    let s = session();
    if s.end.is_none() {
        let frame = GuestFrame::Exit {
            status,
            stdout_len: s.out.written(Stream::Stdout),
            stderr_len: s.out.written(Stream::Stderr),
        };
        set_end(s, &frame);
    }
    finish()
}

/// Ends the session with an agent failure (unless it already has an end),
/// delivers it, waits for `done` and powers off.
pub fn fail(args: fmt::Arguments) -> ! {
    set_fail(session(), args);
    finish()
}

/// [`fail`] for a guest fault (a panic or a CPU exception): the reason also
/// goes to the serial console.
pub fn fatal(args: fmt::Arguments) -> ! {
    set_fail(session(), args);
    // SAFETY: `REASON` was just written and is only read here.
    let reason = unsafe { &*REASON.get() };
    sys::write(b"\ntest-guest: ");
    sys::write(reason.bytes());
    sys::write(b"\n");
    finish()
}

/// Records a failure as the end, unless there is one.
fn set_fail(s: &mut Session, args: fmt::Arguments) {
    if s.end.is_some() {
        return;
    }
    // SAFETY: formatted once, here, before any slice of it is handed out.
    let reason = unsafe { &mut *REASON.get() };
    reason.len = 0;
    let _ = reason.write_fmt(args);
    if reason.len == 0 {
        let _ = reason.write_str("unknown failure");
    }
    let text = reason.as_str();
    set_end(s, &GuestFrame::Fail { reason: text });
}

fn set_end(s: &mut Session, frame: &GuestFrame) {
    // SAFETY: written once (the end is set once), before any slice of it is
    // handed out.
    let buf = unsafe { &mut *END.get() };
    if let Ok(len) = frame.encode(buf) {
        s.end = Some(&buf[..len]);
        s.end_sent = 0;
    }
}

/// Waits until `done` (which powers off); on a poisoned connection, powers
/// off once the end frame is on the host's socket.
fn finish() -> ! {
    let mut asked = 0u64;
    loop {
        wait(u64::MAX);
        let s = session();
        let end_out = s.end.is_some_and(|e| s.end_sent == e.len());
        if s.poisoned && s.link == Link::Attached && end_out {
            if vsock::all_consumed() {
                sys::power_off();
            }
            let now = now();
            if now > asked + IDLE_NS {
                vsock::request_credit();
                asked = now;
            }
        }
    }
}

/// Bytes shown as UTF-8 text, each invalid sequence replaced by U+FFFD.
pub struct Lossy<'a>(pub &'a [u8]);

impl fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            if !chunk.invalid().is_empty() {
                f.write_char(char::REPLACEMENT_CHARACTER)?;
            }
        }
        Ok(())
    }
}

/// A reason being formatted: UTF-8 text truncated to `MAX_REASON` bytes.
struct Text {
    buf: [u8; MAX_REASON],
    len: usize,
}

impl Text {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("unknown failure")
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut n = s.len().min(self.buf.len() - self.len);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
