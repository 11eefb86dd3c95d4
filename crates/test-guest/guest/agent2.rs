//! The agent in protocol 2: checks the job, starts the vsock `session`, waits
//! for the host's attach, then runs the job's operations (in ring 3) with
//! their output, exit status and failures going through the session.
//!
//! Cancels: a host `cancel` is noticed before every operation, between the
//! writes of bulk and chunked output, while waiting for the retention window
//! and during `sleep`, `spin` and `hang`. By default the workload then ends
//! at once, killed by signal 15; after `on-cancel:<code>` it exits with that
//! code; after `ignore-cancel` it goes on until the cancel's grace time is
//! over and is then killed by signal 9. The network operations are not
//! available here: they make the job bad.

use fcexec_guest_protocol::{ExitStatus, Stream};

use crate::job::{self, Op};
use crate::retain::Source;
use crate::session::{self, Lossy};
use crate::{agent, clock, kbd, sys, Global};

/// Bytes per write of bulk output.
const BULK_CHUNK: u64 = 64 * 1024;
/// How long `spin` runs between services of the session.
const SPIN_SLICE_NS: u64 = 1_000_000;

/// Decoded job text (output text, raw bytes): written once each, never
/// changed, so retained output can point into it. A job is at most 4 KiB.
static ARENA: Global<[u8; 4096]> = Global::new([0; 4096]);
static ARENA_USED: Global<usize> = Global::new(0);

/// Runs the job over protocol 2. Returns only when the vsock device cannot
/// be set up, with the reason.
pub fn main(key: [u8; 16], job: &'static [u8], port: u32, heartbeat_ms: u64) -> &'static str {
    let mut hello_key = key;
    let mut bad = None;
    for (i, (text, op)) in job::ops(job).enumerate() {
        match op {
            Ok(Op::HelloKey(k)) => hello_key = k,
            Ok(op) if op.needs_protocol_1() => {
                bad = bad.or(Some((i, text, "not in protocol 2")));
            }
            Ok(_) => {}
            Err(reason) => {
                bad = bad.or(Some((i, text, reason)));
            }
        }
    }
    if let Err(reason) = session::start(hello_key, port, heartbeat_ms) {
        return reason;
    }
    // The console is for diagnostics now; say where the report goes.
    sys::write(b"test-guest: protocol 2\n");
    if let Some((i, text, reason)) = bad {
        session::fail(format_args!(
            "bad job: operation {i} `{}`: {reason}",
            Lossy(text)
        ));
    }
    session::wait_attached();
    let mut workload = Workload {
        on_cancel: OnCancel::Terminate,
    };
    let status = workload.run_job(job).err().unwrap_or(ExitStatus::Code(0));
    session::exit(status)
}

/// What a cancel does to the workload.
#[derive(Clone, Copy)]
enum OnCancel {
    /// It is killed by signal 15 at once.
    Terminate,
    /// It exits with this code at once.
    Exit(u8),
    /// It goes on until the grace time is over, then is killed by signal 9.
    Ignore,
}

struct Workload {
    on_cancel: OnCancel,
}

impl Workload {
    /// Runs every operation; `Err` is how the workload ended early.
    fn run_job(&mut self, job: &'static [u8]) -> Result<(), ExitStatus> {
        if job.is_empty() {
            let greeting = agent::GREETING;
            return self.write(
                Stream::Stdout,
                Source::Text(greeting),
                greeting.len() as u64,
            );
        }
        for (_, op) in job::ops(job) {
            if let Ok(op) = op {
                self.checkpoint()?;
                self.run(op)?;
            }
        }
        Ok(())
    }

    fn run(&mut self, op: Op) -> Result<(), ExitStatus> {
        match op {
            Op::Out(t) => self.text(Stream::Stdout, t),
            Op::Err(t) => self.text(Stream::Stderr, t),
            Op::Exit(code) => Err(ExitStatus::Code(code)),
            Op::Sleep(ms) => {
                let Some(now) = clock::now_ns() else {
                    session::fail(format_args!("sleep: no clock (kvmclock is missing)"))
                };
                self.sleep_until(now.saturating_add(ms.saturating_mul(1_000_000)))
            }
            Op::Hang => self.sleep_until(u64::MAX),
            Op::Triple => sys::triple_fault(),
            Op::Panic(t) => {
                let text = keep(t.len(), |out| job::decode(t, out));
                session::fail(format_args!("{}", Lossy(text)))
            }
            Op::Copy { from, to, bytes } => match agent::copy(from, to, bytes) {
                Ok(()) => Ok(()),
                Err(reason) => session::fail(format_args!(
                    "copy from drive {from} to drive {to}: {reason}"
                )),
            },
            Op::Bulk(bytes) => self.pattern(Stream::Stdout, bytes, BULK_CHUNK),
            Op::BulkErr(bytes) => self.pattern(Stream::Stderr, bytes, BULK_CHUNK),
            Op::Chunked {
                stream,
                bytes,
                chunk,
            } => {
                let stream = match stream {
                    job::Stream::Out => Stream::Stdout,
                    job::Stream::Err => Stream::Stderr,
                };
                self.pattern(stream, bytes, chunk)
            }
            Op::IgnoreCad => {
                kbd::ignore_cad();
                Ok(())
            }
            Op::NoHeartbeat => {
                session::stop_heartbeats();
                Ok(())
            }
            Op::Raw(hex) => {
                session::raw(keep(hex.len() / 2, |out| job::decode_hex(hex, out)));
                Ok(())
            }
            Op::HelloKey(_) => Ok(()),
            Op::PowerOff => sys::power_off(),
            Op::OnCancel(code) => {
                self.on_cancel = OnCancel::Exit(code);
                Ok(())
            }
            Op::IgnoreCancel => {
                self.on_cancel = OnCancel::Ignore;
                Ok(())
            }
            Op::Spin(ms) => {
                let Some(now) = clock::now_ns() else {
                    session::fail(format_args!("spin: no clock (kvmclock is missing)"))
                };
                self.spin_until(now.saturating_add(ms.saturating_mul(1_000_000)))
            }
            // Rejected before the job starts.
            Op::Mmds(_) | Op::TcpEcho { .. } | Op::UdpEcho { .. } | Op::Connect { .. } => Ok(()),
        }
    }

    /// Where the workload stops: `Err` once a cancel (or the session's end)
    /// ends it.
    fn checkpoint(&self) -> Result<(), ExitStatus> {
        if session::ended() {
            return Err(ExitStatus::Code(0)); // not reported: the session has its end
        }
        if session::cancel().is_none() {
            return Ok(());
        }
        match self.on_cancel {
            OnCancel::Terminate => Err(ExitStatus::Signal(15)),
            OnCancel::Exit(code) => Err(ExitStatus::Code(code)),
            OnCancel::Ignore if clock::now_ns().unwrap_or(0) >= self.kill_at() => {
                Err(ExitStatus::Signal(9))
            }
            OnCancel::Ignore => Ok(()),
        }
    }

    /// When an ignored cancel's grace time is over (`u64::MAX` without one).
    fn kill_at(&self) -> u64 {
        match (self.on_cancel, session::cancel()) {
            (OnCancel::Ignore, Some(c)) => {
                c.at_ns.saturating_add(u64::from(c.grace_ms) * 1_000_000)
            }
            _ => u64::MAX,
        }
    }

    /// Writes percent-encoded job text.
    fn text(&mut self, stream: Stream, text: &[u8]) -> Result<(), ExitStatus> {
        let text = keep(text.len(), |out| job::decode(text, out));
        self.write(stream, Source::Text(text), text.len() as u64)
    }

    /// Writes `bytes` bytes of the bulk pattern, `chunk` bytes per write.
    fn pattern(&mut self, stream: Stream, bytes: u64, chunk: u64) -> Result<(), ExitStatus> {
        let mut done = 0;
        while done < bytes {
            let n = chunk.min(bytes - done);
            self.write(stream, Source::Pattern(done), n)?;
            done += n;
        }
        Ok(())
    }

    /// Writes once there is room in the retention window.
    fn write(&mut self, stream: Stream, source: Source, len: u64) -> Result<(), ExitStatus> {
        loop {
            self.checkpoint()?;
            if session::has_room() {
                session::write(stream, source, len);
                return Ok(());
            }
            session::wait(self.kill_at());
        }
    }

    /// Keeps the vCPU busy until `deadline` (kvmclock), servicing the
    /// session every `SPIN_SLICE_NS`.
    fn spin_until(&mut self, deadline: u64) -> Result<(), ExitStatus> {
        loop {
            self.checkpoint()?;
            let Some(now) = clock::now_ns().filter(|&now| now < deadline) else {
                return Ok(());
            };
            agent::spin_until(deadline.min(now.saturating_add(SPIN_SLICE_NS)));
            session::service();
        }
    }

    /// Sleeps until `deadline` (kvmclock), servicing the session.
    fn sleep_until(&mut self, deadline: u64) -> Result<(), ExitStatus> {
        loop {
            self.checkpoint()?;
            if clock::now_ns().is_some_and(|now| now >= deadline) {
                return Ok(());
            }
            session::wait(deadline.min(self.kill_at()));
        }
    }
}

/// Fills `len` fresh bytes of the arena with `fill` and keeps them forever.
fn keep(len: usize, fill: impl FnOnce(&mut [u8]) -> &[u8]) -> &'static [u8] {
    // SAFETY: the arena's bytes from `ARENA_USED` on belong to no slice yet;
    // the ones handed out are never written again.
    unsafe {
        let used = &mut *ARENA_USED.get();
        let arena = ARENA.get() as *mut u8;
        if len > 4096 - *used {
            session::fail(format_args!("the job's text does not fit in 4 KiB"));
        }
        let fresh = core::slice::from_raw_parts_mut(arena.add(*used), len);
        let n = fill(fresh).len();
        *used += n;
        core::slice::from_raw_parts(arena.add(*used - n), n)
    }
}
