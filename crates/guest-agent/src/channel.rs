//! How the report reaches the host: guest protocol 2 over the transport
//! ([`Session`]), or, in a VM without a vsock device, protocol 1 on the
//! serial console (`serial`). The supervisor talks to one [`Channel`] and
//! does not care which.
//!
//! Protocol 1 has no attach and no done: its channel says "attached" at
//! once and "done" once the end frame is written. Without a vsock device
//! and without a console nothing can be reported: the channel says so as a
//! failure and gives up at once.

use std::io;
use std::time::Instant;

use fcexec_guest_protocol::{Stream, KEY_LEN};

use crate::serial::Serial;
use crate::session::{End, Event, Session};
use crate::sys::{self, Wait};
use crate::transport::Transport;

/// Bytes of job output a protocol 1 channel takes per read.
const V1_TURN: usize = 256 << 10;

/// How the report reaches the host.
#[derive(Debug)]
pub struct Channel {
    key: [u8; KEY_LEN],
    mode: Mode,
}

/// The protocol in use.
#[derive(Debug)]
enum Mode {
    V2(Box<Session>),
    V1 {
        serial: Serial,
        attached_said: bool,
        ended: bool,
        done_said: bool,
    },
    /// Neither vsock nor a console: nothing can be reported.
    Nowhere {
        reason: String,
        said: bool,
    },
}

impl Channel {
    /// Protocol 2 over `session`, falling back to protocol 1 on the
    /// transport's console when the VM has no vsock device.
    pub fn v2(key: [u8; KEY_LEN], session: Session) -> Channel {
        Channel {
            key,
            mode: Mode::V2(Box::new(session)),
        }
    }

    /// Protocol 1 on `console`.
    pub fn v1(key: [u8; KEY_LEN], console: Box<dyn io::Write>) -> Channel {
        Channel {
            key,
            mode: Mode::V1 {
                serial: Serial::new(console, &key),
                attached_said: false,
                ended: false,
                done_said: false,
            },
        }
    }

    /// The protocol version in use.
    pub fn version(&self) -> u8 {
        match self.mode {
            Mode::V2(_) => 2,
            _ => 1,
        }
    }

    /// Connects, reads and writes as due; the host's events.
    pub(crate) fn service(&mut self, now: Instant, transport: &dyn Transport) -> Vec<Event> {
        match &mut self.mode {
            Mode::V2(session) => match session.service(now, transport) {
                Ok(events) => events,
                Err(e) => {
                    sys::console(&format!(
                        "{e}; reporting over the serial console (protocol 1)"
                    ));
                    self.mode = match transport.console() {
                        Ok(console) => Channel::v1(self.key, console).mode,
                        Err(err) => Mode::Nowhere {
                            reason: format!("no vsock device, and no console: {err}"),
                            said: false,
                        },
                    };
                    self.service(now, transport)
                }
            },
            Mode::V1 {
                attached_said,
                ended,
                done_said,
                ..
            } => {
                let mut events = Vec::new();
                if !std::mem::replace(attached_said, true) {
                    events.push(Event::Attached { first: true });
                }
                if *ended && !std::mem::replace(done_said, true) {
                    events.push(Event::Done);
                }
                events
            }
            Mode::Nowhere { reason, said } => {
                if std::mem::replace(said, true) {
                    return Vec::new();
                }
                sys::console(reason);
                vec![Event::ProtocolError(reason.clone()), Event::Abandoned]
            }
        }
    }

    /// How much more job output may be taken now.
    pub(crate) fn room(&self) -> usize {
        match &self.mode {
            Mode::V2(session) => session.room(),
            _ => V1_TURN,
        }
    }

    /// Job output to report.
    pub(crate) fn push(&mut self, stream: Stream, data: &[u8]) {
        match &mut self.mode {
            Mode::V2(session) => session.push(stream, data),
            Mode::V1 { serial, .. } => serial.push(stream, data),
            Mode::Nowhere { .. } => {}
        }
    }

    /// Sets the end of the report.
    pub fn finish(&mut self, end: &End) {
        match &mut self.mode {
            Mode::V2(session) => session.finish(end),
            Mode::V1 { serial, ended, .. } => {
                serial.finish(end);
                *ended = true;
            }
            Mode::Nowhere { .. } => {}
        }
    }

    /// The descriptor to poll, if any.
    pub(crate) fn wait(&self) -> Option<Wait> {
        match &self.mode {
            Mode::V2(session) => session.wait(),
            _ => None,
        }
    }

    /// When to service the channel again without any I/O.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match &self.mode {
            Mode::V2(session) => session.deadline(),
            _ => None,
        }
    }
}
