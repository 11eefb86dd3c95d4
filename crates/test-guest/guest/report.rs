//! Reporting results to the host, in plain mode or agent mode.
//!
//! Plain mode (no key): stdout and stderr text go to the serial console as they
//! are; `exit` powers off (the code is not reported: Firecracker exits 0); a
//! failure prints `test-guest: <reason>` and triple-faults, so that the VMM
//! exits non-zero.
//!
//! Agent mode (a key): everything is framed (`frame`): `hello` first, then
//! `out`/`err` frames of at most 3072 bytes, then `exit` or `fail`, then power
//! off. Output is buffered and written with one system call per 16 KiB (or
//! sooner, see [`flush`]), because a system call is expensive here.

use core::fmt::{self, Write};

use crate::frame::{self, KEY_LEN, MAX_FRAME, MAX_PAYLOAD};
use crate::{sys, Global};

/// The hello frame's payload.
const HELLO: &[u8] = b"fcexec-guest-protocol/1 agent=test-guest";
const BUF_LEN: usize = 16 * 1024;

struct State {
    key: Option<[u8; KEY_LEN]>,
    seq: u32,
    len: usize,
    buf: [u8; BUF_LEN],
    failing: bool,
}

static STATE: Global<State> = Global::new(State {
    key: None,
    seq: 0,
    len: 0,
    buf: [0; BUF_LEN],
    failing: false,
});

fn state() -> &'static mut State {
    // SAFETY: the reporter's functions never call one another while holding
    // this reference, except `fatal`, which is reached only on a bug or a CPU
    // exception and then never returns to the interrupted code.
    unsafe { &mut *STATE.get() }
}

/// Switches to agent mode with this key and sends the `hello` frame (frame 0).
pub fn start_agent(key: [u8; KEY_LEN]) {
    state().key = Some(key);
    emit_frame("hello", HELLO);
}

/// True in agent mode.
pub fn agent_mode() -> bool {
    state().key.is_some()
}

/// Reports bytes the workload wrote to stdout.
pub fn stdout(bytes: &[u8]) {
    emit("out", bytes);
}

/// Reports bytes the workload wrote to stderr.
pub fn stderr(bytes: &[u8]) {
    emit("err", bytes);
}

fn emit(kind: &str, bytes: &[u8]) {
    if agent_mode() {
        for chunk in bytes.chunks(MAX_PAYLOAD) {
            emit_frame(kind, chunk);
        }
    } else {
        for chunk in bytes.chunks(BUF_LEN) {
            let s = state();
            if BUF_LEN - s.len < chunk.len() {
                flush();
            }
            let s = state();
            s.buf[s.len..s.len + chunk.len()].copy_from_slice(chunk);
            s.len += chunk.len();
        }
    }
}

fn emit_frame(kind: &str, payload: &[u8]) {
    if BUF_LEN - state().len < MAX_FRAME {
        flush();
    }
    let s = state();
    let Some(key) = s.key.as_ref() else { return };
    if let Some(n) = frame::encode(&mut s.buf[s.len..], key, s.seq, kind, payload) {
        s.len += n;
        s.seq = s.seq.wrapping_add(1);
    }
}

/// Writes buffered output to the serial console now.
pub fn flush() {
    let s = state();
    sys::write(&s.buf[..s.len]);
    s.len = 0;
}

/// Reports `bytes` bytes of the bulk pattern (byte `i` is `i % 251`) on
/// stdout (or stderr), written `chunk` bytes at a time.
pub fn pattern(to_stderr: bool, bytes: u64, chunk: u64) {
    let mut buf = [0u8; MAX_PAYLOAD];
    let mut offset = 0u64;
    while offset < bytes {
        let n = (bytes - offset).min(MAX_PAYLOAD as u64).min(chunk) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = ((offset + i as u64) % 251) as u8;
        }
        if to_stderr {
            stderr(&buf[..n]);
        } else {
            stdout(&buf[..n]);
        }
        offset += n as u64;
    }
}

/// Reports the exit code and powers off.
pub fn exit(code: u8) -> ! {
    if agent_mode() {
        let mut digits = [0u8; 3];
        let text = decimal(code, &mut digits);
        emit_frame("exit", text);
    }
    flush();
    sys::power_off()
}

fn decimal(code: u8, digits: &mut [u8; 3]) -> &[u8] {
    let mut n = code;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + n % 10;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// Reports that the agent failed, then stops: agent mode sends a `fail` frame
/// and powers off; plain mode prints the reason and triple-faults.
pub fn fail(reason: &[u8]) -> ! {
    let reason = &reason[..reason.len().min(MAX_PAYLOAD)];
    if agent_mode() {
        emit_frame("fail", reason);
        flush();
        sys::power_off()
    }
    flush();
    sys::write(b"\ntest-guest: ");
    sys::write(reason);
    sys::write(b"\n");
    sys::triple_fault()
}

/// A fixed buffer that formatted text is truncated into.
struct Text {
    buf: [u8; 1024],
    len: usize,
}

impl Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// [`fail`] with a formatted reason (over protocol 2 once its session is
/// active). A failure while failing triple-faults.
pub fn fatal(args: fmt::Arguments) -> ! {
    let s = state();
    if s.failing {
        sys::triple_fault()
    }
    s.failing = true;
    if crate::session::active() {
        crate::session::fatal(args)
    }
    let mut text = Text {
        buf: [0; 1024],
        len: 0,
    };
    let _ = text.write_fmt(args);
    fail(&text.buf[..text.len])
}
