//! How the session ends: the workload's exit, or the agent's failure (with
//! its reason formatted once), delivered, then `done` awaited.

use core::fmt::{self, Write};

use fcexec_guest_protocol::{ExitStatus, GuestFrame, Stream, MAX_REASON};

use super::{now, session, wait, Link, Session};
use crate::{sys, vsock, Global};

const END_MAX: usize = 5 + MAX_REASON;

/// The encoded exit or fail frame.
static END: Global<[u8; END_MAX]> = Global::new([0; END_MAX]);
/// The fail reason, being formatted.
static REASON: Global<Text> = Global::new(Text {
    buf: [0; MAX_REASON],
    len: 0,
});

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
    let reason = format_reason(args);
    sys::write(b"\ntest-guest: ");
    sys::write(reason.as_bytes());
    sys::write(b"\n");
    let s = session();
    if s.end.is_none() {
        set_end(s, &GuestFrame::Fail { reason });
    }
    finish()
}

/// Records a failure as the end, unless there is one.
pub(super) fn set_fail(s: &mut Session, args: fmt::Arguments) {
    if s.end.is_none() {
        set_end(
            s,
            &GuestFrame::Fail {
                reason: format_reason(args),
            },
        );
    }
}

/// Formats a fail reason (UTF-8, 1 to `MAX_REASON` bytes) into `REASON`;
/// the text is valid until the next call.
fn format_reason(args: fmt::Arguments) -> &'static str {
    // SAFETY: only this function writes `REASON`, and its callers are done
    // with the previous text (`set_end` copies it into `END`).
    let reason = unsafe { &mut *REASON.get() };
    reason.len = 0;
    let _ = reason.write_fmt(args);
    if reason.len == 0 {
        let _ = reason.write_str("unknown failure");
    }
    reason.as_str()
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
            if now > asked + 1_000_000 {
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
