//! Networking: a virtio-net driver (`device`), the guest's address from the
//! `ip=` kernel parameter (`ipconf`), a smoltcp TCP/IP stack on top
//! (`stack`), and the job operations that use it: `mmds` (fetch an MMDS
//! path with a v2 token), `echo` (TCP and UDP echo servers) and `connect`
//! (a TCP connection attempt).
//!
//! Operations write their output through a sink (`&mut dyn FnMut(&[u8])`:
//! the workload's stdout) and return an [`Error`] when they fail.

mod connect;
mod device;
mod echo;
mod ipconf;
mod mmds;
mod stack;

use core::fmt;

pub use connect::connect;
pub use echo::{tcp_echo, udp_echo};
pub use mmds::fetch as mmds;

use crate::Global;

/// Why a network operation failed.
#[derive(Clone, Copy, Debug)]
pub enum Error {
    /// A plain reason.
    Msg(&'static str),
    /// An HTTP request to the MMDS got this status instead of 200.
    Status(&'static str, u16),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Msg(reason) => f.write_str(reason),
            Error::Status(what, status) => write!(f, "{what}: HTTP status {status}"),
        }
    }
}

/// The network device's MMIO base, and the command line (for `ip=`).
struct Found {
    base: usize,
    cmdline: &'static [u8],
}

static FOUND: Global<Found> = Global::new(Found {
    base: 0,
    cmdline: &[],
});

fn found_state() -> &'static mut Found {
    // SAFETY: only this module's functions use it, one at a time.
    unsafe { &mut *FOUND.get() }
}

/// Remembers the network device at `base` (the first one the probe finds).
pub fn found(base: usize) {
    let f = found_state();
    if f.base == 0 {
        f.base = base;
    }
}

/// Remembers the command line, whose `ip=` configures the stack.
pub fn set_cmdline(cmdline: &'static [u8]) {
    found_state().cmdline = cmdline;
}

/// The stack, set up on first use.
fn stack() -> Result<&'static mut stack::Stack, Error> {
    let f = found_state();
    if f.base == 0 {
        return Err(Error::Msg("no network device"));
    }
    stack::get(f.base, f.cmdline)
}

/// A deadline `ms` milliseconds from now (kvmclock).
fn deadline(ms: u64) -> Result<u64, Error> {
    Ok(stack::now_ns()?.saturating_add(ms.saturating_mul(1_000_000)))
}
