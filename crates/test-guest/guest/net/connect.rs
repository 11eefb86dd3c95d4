//! The `connect:<ip>:<port>:<timeout_ms>` operation: opens a TCP connection
//! and writes `connected\n` or `failed: <reason>\n` to the sink (the reason
//! is `connection refused`, `timed out` or `connection reset`); then closes
//! the connection. The outcome never fails the job: later operations decide
//! the exit code.

use smoltcp::socket::tcp::State;

use super::{deadline, ipconf, stack, Error};

/// How an attempt failed before its timeout.
enum Failure {
    Refused,
    Reset,
}
use Failure::{Refused, Reset};

/// How long a graceful close may take before the connection is reset.
const CLOSE_MS: u64 = 1000;

/// Connects to `ip:port` within `timeout_ms` and reports the outcome.
pub fn connect(
    ip: &[u8],
    port: u16,
    timeout_ms: u64,
    out: &mut dyn FnMut(&[u8]),
) -> Result<(), Error> {
    let addr = ipconf::address(ip).ok_or(Error::Msg("connect: bad IPv4 address"))?;
    let s = stack()?;
    let until = deadline(timeout_ms)?;
    s.connect(1, addr, port)?;
    let mut started = false;
    let outcome = s.run_until(until, |s| match s.tcp(1).state() {
        State::Established => Some(Ok(())),
        State::SynSent | State::SynReceived => {
            started = true;
            None
        }
        State::Closed if started => Some(Err(Refused)),
        State::Closed => {
            started = true; // the SYN is sent at the next poll
            None
        }
        _ => Some(Err(Reset)),
    });
    out(match outcome {
        Some(Ok(())) => b"connected\n",
        Some(Err(Refused)) => b"failed: connection refused\n",
        Some(Err(Reset)) => b"failed: connection reset\n",
        None => b"failed: timed out\n",
    });
    let socket = s.tcp(1);
    if socket.state() == State::Established {
        socket.close();
        let until = deadline(CLOSE_MS)?;
        s.run_until(until, |s| {
            matches!(s.tcp(1).state(), State::Closed | State::TimeWait).then_some(())
        });
    }
    s.tcp(1).abort();
    s.poll();
    Ok(())
}
