//! The agent: finds the job and the key, picks plain mode, agent mode over
//! protocol 1 (serial) or protocol 2 (vsock, `agent2`), checks the whole job,
//! then runs its operations in order (in ring 3).

use crate::config::Config;
use crate::job::{self, Op};
use crate::{agent2, clock, cmdline, config, frame, kbd, net, report, sys, virtio, vsock, Global};

/// Printed (with a newline) when there is no job.
pub const GREETING: &[u8] = b"Hello from the fcexec test guest!\n";
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
    net::set_cmdline(line);
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
            Ok(key) if frame::valid_key(&key) => {
                if let Err(reason) = protocol_2(config.as_ref(), key, job) {
                    report::start_agent(key);
                    report::fail(reason.as_bytes())
                }
                report::start_agent(key)
            }
            _ => report::fail(b"the key is not 32 lowercase hex digits"),
        }
    }
    if job.is_empty() {
        report::stdout(GREETING);
        report::exit(0);
    }
    for (i, (text, op)) in job::ops(job).enumerate() {
        let reason = match op {
            Err(reason) => reason,
            Ok(op) if op.needs_protocol_2() => "only in protocol 2",
            Ok(_) => continue,
        };
        let text = core::str::from_utf8(text).unwrap_or("?");
        report::fatal(format_args!("bad job: operation {i} `{text}`: {reason}"));
    }
    for (_, op) in job::ops(job) {
        if let Ok(op) = op {
            run(op);
        }
    }
    report::exit(0)
}

/// Runs the job over protocol 2 when the config drive says `proto=2` (and
/// never returns then); `Ok` for protocol 1, `Err` when protocol 2 cannot run.
fn protocol_2(
    config: Option<&Config>,
    key: [u8; frame::KEY_LEN],
    job: &'static [u8],
) -> Result<(), &'static str> {
    let Some(config) = config else {
        return Ok(());
    };
    match config.proto {
        None | Some(b"1") => return Ok(()),
        Some(b"2") => {}
        Some(_) => return Err("bad config: proto is not 1 or 2"),
    }
    let port = match config.vsock_port {
        None => fcexec_guest_protocol::DEFAULT_PORT,
        Some(text) => job::number(text)
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or("bad config: vsock_port is not a port number")?,
    };
    let heartbeat_ms = match config.heartbeat_ms {
        None => 0,
        Some(text) => job::number(text).map_err(|_| "bad config: heartbeat_ms is not a number")?,
    };
    if !vsock::present() {
        return Err("protocol 2 needs a vsock device");
    }
    let mut raw_key = [0u8; 16];
    job::decode_hex(&key, &mut raw_key);
    Err(agent2::main(raw_key, job, port, heartbeat_ms))
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
        Op::Bulk(bytes) => report::pattern(false, bytes, u64::MAX),
        Op::BulkErr(bytes) => report::pattern(true, bytes, u64::MAX),
        Op::Chunked {
            stream,
            bytes,
            chunk,
        } => report::pattern(stream == job::Stream::Err, bytes, chunk),
        Op::IgnoreCad => kbd::ignore_cad(),
        Op::PowerOff => {
            report::flush();
            sys::power_off()
        }
        Op::Spin(ms) => {
            report::flush();
            let Some(now) = clock::now_ns() else {
                report::fail(b"spin: no clock (kvmclock is missing)")
            };
            spin_until(now.saturating_add(ms.saturating_mul(1_000_000)));
        }
        Op::Mmds(path) => {
            report::flush();
            let path = job::decode(path, text);
            network("mmds", net::mmds(path, &mut stdout_now));
        }
        Op::TcpEcho { port, count } => {
            report::flush();
            network("tcp-echo", net::tcp_echo(port, count, &mut stdout_now));
        }
        Op::UdpEcho { port, count } => {
            report::flush();
            network("udp-echo", net::udp_echo(port, count, &mut stdout_now));
        }
        Op::Connect {
            ip,
            port,
            timeout_ms,
        } => {
            report::flush();
            network(
                "connect",
                net::connect(ip, port, timeout_ms, &mut stdout_now),
            );
        }
        // Protocol 2 only (raw, hello-key are rejected before), or nothing to
        // do without a host that cancels.
        Op::NoHeartbeat | Op::OnCancel(_) | Op::IgnoreCancel | Op::Raw(_) | Op::HelloKey(_) => {}
    }
}

/// Keeps the vCPU busy (in ring 3, with no system call) until kvmclock
/// reaches `deadline_ns`.
pub fn spin_until(deadline_ns: u64) {
    while clock::now_ns().is_some_and(|now| now < deadline_ns) {
        core::hint::spin_loop();
    }
}

/// Reports stdout at once (a network operation's output is awaited by the
/// host while the operation goes on).
fn stdout_now(bytes: &[u8]) {
    report::stdout(bytes);
    report::flush();
}

/// Fails the job when a network operation failed.
fn network(op: &str, result: Result<(), net::Error>) {
    if let Err(e) = result {
        report::fatal(format_args!("{op}: {e}"));
    }
}

/// Copies the first `bytes` bytes of drive `from` to drive `to`. A partial
/// last sector keeps the rest of the destination sector.
pub fn copy(from: usize, to: usize, bytes: u64) -> Result<(), &'static str> {
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
