//! The agent: finds the job and the key, picks plain or agent mode, checks the
//! whole job, then runs its operations in order (in ring 3).

use crate::job::{self, Op};
use crate::{cmdline, config, frame, kbd, report, sys, virtio, Global};

/// Printed (with a newline) when there is no job.
const GREETING: &[u8] = b"Hello from the fcexec test guest!\n";
/// Bytes per drive request when copying.
const COPY_CHUNK: usize = 128 * 1024;

/// Scratch space for decoded text (a job is at most a few KiB).
static TEXT: Global<[u8; 4096]> = Global::new([0; 4096]);
/// The copy buffer.
static COPY_BUF: Global<[u8; COPY_CHUNK]> = Global::new([0; COPY_CHUNK]);

/// Runs the guest's job; never returns.
pub fn main(zero_page: u64) -> ! {
    let line = cmdline::read(zero_page);
    virtio::probe(line);
    let config = config::find();
    let key = config
        .as_ref()
        .and_then(|c| c.key)
        .or_else(|| cmdline::param(line, b"fcx.key="));
    let job = config
        .as_ref()
        .and_then(|c| c.job)
        .or_else(|| cmdline::param(line, b"fcx.job="))
        .unwrap_or_default();

    if let Some(key) = key {
        match <[u8; frame::KEY_LEN]>::try_from(key) {
            Ok(key) if frame::valid_key(&key) => report::start_agent(key),
            _ => report::fail(b"the key is not 32 lowercase hex digits"),
        }
    }
    if job.is_empty() {
        report::stdout(GREETING);
        report::exit(0);
    }
    for (i, (text, op)) in job::ops(job).enumerate() {
        if let Err(reason) = op {
            let text = core::str::from_utf8(text).unwrap_or("?");
            report::fatal(format_args!("bad job: operation {i} `{text}`: {reason}"));
        }
    }
    for (_, op) in job::ops(job) {
        if let Ok(op) = op {
            run(op);
        }
    }
    report::exit(0)
}

fn run(op: Op) {
    // SAFETY: `TEXT` is used only here, one operation at a time.
    let text = unsafe { &mut *TEXT.get() };
    match op {
        Op::Out(t) => report::stdout(job::decode(t, text)),
        Op::Err(t) => report::stderr(job::decode(t, text)),
        Op::Exit(code) => report::exit(code),
        Op::Sleep(ms) => {
            report::flush();
            let Some(now) = crate::clock::now_ns() else {
                report::fail(b"sleep: no clock (kvmclock is missing)")
            };
            sys::idle_until(now.saturating_add(ms.saturating_mul(1_000_000)));
        }
        Op::Hang => {
            report::flush();
            loop {
                sys::idle_until(u64::MAX);
            }
        }
        Op::Triple => {
            report::flush();
            sys::triple_fault()
        }
        Op::Panic(t) => report::fail(job::decode(t, text)),
        Op::Copy { from, to, bytes } => {
            report::flush();
            if let Err(reason) = copy(from, to, bytes) {
                report::fatal(format_args!(
                    "copy from drive {from} to drive {to}: {reason}"
                ));
            }
        }
        Op::Bulk(bytes) => report::bulk(bytes),
        Op::IgnoreCad => kbd::ignore_cad(),
    }
}

/// Copies the first `bytes` bytes of drive `from` to drive `to`. A partial
/// last sector keeps the rest of the destination sector.
fn copy(from: usize, to: usize, bytes: u64) -> Result<(), &'static str> {
    if bytes > virtio::capacity(from)? {
        return Err("more bytes than the source drive holds");
    }
    if bytes > virtio::capacity(to)? {
        return Err("more bytes than the destination drive holds");
    }
    // SAFETY: `COPY_BUF` is used only here.
    let buf = unsafe { &mut *COPY_BUF.get() };
    let sector_size = virtio::SECTOR as u64;
    let mut done = 0u64;
    while done < bytes {
        let want = (bytes - done).min(COPY_CHUNK as u64) as usize;
        let whole = want.next_multiple_of(virtio::SECTOR);
        let sector = done / sector_size;
        virtio::read(from, sector, &mut buf[..whole])?;
        if want < whole {
            // Keep the tail of the destination's last sector.
            let last = whole - virtio::SECTOR;
            let mut old = [0u8; virtio::SECTOR];
            virtio::read(to, sector + (last as u64) / sector_size, &mut old)?;
            buf[want..whole].copy_from_slice(&old[want - last..]);
        }
        virtio::write(to, sector, &buf[..whole])?;
        done += want as u64;
    }
    Ok(())
}
