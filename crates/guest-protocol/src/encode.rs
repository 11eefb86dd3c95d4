//! Encoding: from a frame to bytes in a caller's buffer.

use crate::decode::{EXIT_BODY, HELLO_FIXED, MAX_HOST_BODY};
use crate::{
    EncodeError, ExitStatus, GuestFrame, HostFrame, Stream, HEADER_LEN, MAX_AGENT_NAME, MAX_DATA,
    MAX_REASON, MAX_SIGNAL, OUTPUT_HEADER_LEN,
};

/// Writes fields one after the other into a buffer of exactly the frame's length.
struct Writer<'a> {
    buf: &'a mut [u8],
}

impl<'a> Writer<'a> {
    /// A writer over the first `total` bytes of `out`.
    fn new(out: &'a mut [u8], total: usize) -> Result<Self, EncodeError> {
        let got = out.len();
        match out.get_mut(..total) {
            Some(buf) => Ok(Writer { buf }),
            None => Err(EncodeError::BufferTooSmall { needed: total, got }),
        }
    }

    /// Writes `bytes`. The callers size the buffer from the same fields they
    /// write, so it always has room; if it had not, the excess would be
    /// dropped rather than cause a panic.
    fn put(&mut self, bytes: &[u8]) {
        let buf = core::mem::take(&mut self.buf);
        let n = bytes.len().min(buf.len());
        let (dst, rest) = buf.split_at_mut(n);
        match bytes.get(..n) {
            // The length test lets the compiler drop copy_from_slice's panic.
            Some(src) if src.len() == dst.len() => dst.copy_from_slice(src),
            _ => {}
        }
        self.buf = rest;
    }

    /// Writes the header of a frame with a body of `body_len` bytes, which
    /// the caller has checked is at most [`MAX_BODY`](crate::MAX_BODY).
    fn header(&mut self, kind: u8, body_len: usize) {
        let len = u32::try_from(body_len + 1).unwrap_or(u32::MAX);
        self.put(&len.to_le_bytes());
        self.put(&[kind]);
    }
}

/// Checks the limits of an output frame.
fn check_output(offset: u64, len: usize) -> Result<(), EncodeError> {
    if len > MAX_DATA {
        return Err(EncodeError::DataTooLong { len, max: MAX_DATA });
    }
    if offset.checked_add(len as u64).is_none() {
        return Err(EncodeError::OffsetOverflow { offset, len });
    }
    Ok(())
}

/// The 13-byte header of an output frame whose `data_len` data bytes follow
/// separately, so a writer can send the data from where it already is.
///
/// The header plus the data is exactly what [`GuestFrame::encode`] writes for
/// a [`GuestFrame::Output`] with that data.
pub fn output_header(
    stream: Stream,
    offset: u64,
    data_len: usize,
) -> Result<[u8; OUTPUT_HEADER_LEN], EncodeError> {
    check_output(offset, data_len)?;
    let mut header = [0; OUTPUT_HEADER_LEN];
    let mut w = Writer { buf: &mut header };
    w.header(stream.kind(), 8 + data_len);
    w.put(&offset.to_le_bytes());
    Ok(header)
}

impl GuestFrame<'_> {
    fn body_len(&self) -> usize {
        match self {
            GuestFrame::Hello { agent, .. } => HELLO_FIXED + agent.len(),
            GuestFrame::Output { data, .. } => 8 + data.len(),
            GuestFrame::Exit { .. } => EXIT_BODY,
            GuestFrame::Fail { reason } => reason.len(),
            GuestFrame::Heartbeat { .. } => 8,
        }
    }

    /// The frame's encoded length, header included (whether or not it is
    /// within the limits).
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Checks the protocol's limits.
    fn check(&self) -> Result<(), EncodeError> {
        match *self {
            GuestFrame::Hello { agent, .. } if agent.len() > MAX_AGENT_NAME => {
                Err(EncodeError::AgentNameTooLong {
                    len: agent.len(),
                    max: MAX_AGENT_NAME,
                })
            }
            GuestFrame::Output { offset, data, .. } => check_output(offset, data.len()),
            GuestFrame::Exit {
                status: ExitStatus::Signal(signal),
                ..
            } if !(1..=MAX_SIGNAL).contains(&signal) => Err(EncodeError::BadSignal(signal)),
            GuestFrame::Fail { reason: "" } => Err(EncodeError::EmptyReason),
            GuestFrame::Fail { reason } if reason.len() > MAX_REASON => {
                Err(EncodeError::ReasonTooLong {
                    len: reason.len(),
                    max: MAX_REASON,
                })
            }
            _ => Ok(()),
        }
    }

    /// Encodes the frame at the start of `out` and returns its length.
    ///
    /// Fails, writing nothing, when a field is beyond the protocol's limits
    /// (data, reason or agent name too long, an empty reason, a signal number
    /// outside 1 to 64, an output that ends past offset 2^64 - 1) or when
    /// `out` is shorter than [`encoded_len`](Self::encoded_len).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check()?;
        let total = self.encoded_len();
        let mut w = Writer::new(out, total)?;
        w.header(self.kind(), self.body_len());
        match *self {
            GuestFrame::Hello {
                version,
                key,
                capabilities,
                agent,
            } => {
                w.put(&version.to_le_bytes());
                w.put(&key);
                w.put(&capabilities.to_le_bytes());
                w.put(agent.as_bytes());
            }
            GuestFrame::Output { offset, data, .. } => {
                w.put(&offset.to_le_bytes());
                w.put(data);
            }
            GuestFrame::Exit {
                status,
                stdout_len,
                stderr_len,
            } => {
                let (tag, value) = match status {
                    ExitStatus::Code(code) => (0, code),
                    ExitStatus::Signal(signal) => (1, signal),
                };
                w.put(&[tag, value]);
                w.put(&stdout_len.to_le_bytes());
                w.put(&stderr_len.to_le_bytes());
            }
            GuestFrame::Fail { reason } => w.put(reason.as_bytes()),
            GuestFrame::Heartbeat { uptime_ms } => w.put(&uptime_ms.to_le_bytes()),
        }
        Ok(total)
    }
}

impl HostFrame {
    /// The longest host frame (attach and ack), header included.
    pub const MAX_LEN: usize = HEADER_LEN + MAX_HOST_BODY;

    fn body_len(&self) -> usize {
        match self {
            HostFrame::Attach { .. } | HostFrame::Ack { .. } => 16,
            HostFrame::Cancel { .. } => 4,
            HostFrame::Done => 0,
        }
    }

    /// The frame's encoded length, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.body_len()
    }

    /// Encodes the frame at the start of `out` and returns its length. Fails,
    /// writing nothing, only when `out` is shorter than
    /// [`encoded_len`](Self::encoded_len); [`MAX_LEN`](Self::MAX_LEN) bytes
    /// always suffice.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let total = self.encoded_len();
        let mut w = Writer::new(out, total)?;
        w.header(self.kind(), self.body_len());
        match *self {
            HostFrame::Attach {
                stdout_offset,
                stderr_offset,
            }
            | HostFrame::Ack {
                stdout_offset,
                stderr_offset,
            } => {
                w.put(&stdout_offset.to_le_bytes());
                w.put(&stderr_offset.to_le_bytes());
            }
            HostFrame::Cancel { grace_ms } => w.put(&grace_ms.to_le_bytes()),
            HostFrame::Done => {}
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode_guest, KEY_LEN};

    #[test]
    fn limits_are_checked_before_the_buffer() {
        let mut none = [0u8; 0];
        let long = [0u8; MAX_DATA + 1];
        let cases: [(GuestFrame<'_>, EncodeError); 6] = [
            (
                GuestFrame::Output {
                    stream: Stream::Stderr,
                    offset: 0,
                    data: &long,
                },
                EncodeError::DataTooLong {
                    len: MAX_DATA + 1,
                    max: MAX_DATA,
                },
            ),
            (
                GuestFrame::Output {
                    stream: Stream::Stdout,
                    offset: u64::MAX,
                    data: b"x",
                },
                EncodeError::OffsetOverflow {
                    offset: u64::MAX,
                    len: 1,
                },
            ),
            (GuestFrame::Fail { reason: "" }, EncodeError::EmptyReason),
            (
                GuestFrame::Hello {
                    version: 2,
                    key: [0; KEY_LEN],
                    capabilities: 0,
                    agent: "a-name-that-is-far-too-long-for-the-hello-frame-of-version-2-wxyz",
                },
                EncodeError::AgentNameTooLong { len: 65, max: 64 },
            ),
            (
                GuestFrame::Exit {
                    status: ExitStatus::Signal(0),
                    stdout_len: 0,
                    stderr_len: 0,
                },
                EncodeError::BadSignal(0),
            ),
            (
                GuestFrame::Exit {
                    status: ExitStatus::Signal(65),
                    stdout_len: 0,
                    stderr_len: 0,
                },
                EncodeError::BadSignal(65),
            ),
        ];
        for (frame, error) in cases {
            assert_eq!(frame.encode(&mut none), Err(error), "{frame:?}");
        }
        let reason = core::str::from_utf8(&[b'r'; MAX_REASON + 1]).unwrap();
        assert_eq!(
            GuestFrame::Fail { reason }.encode(&mut none),
            Err(EncodeError::ReasonTooLong {
                len: MAX_REASON + 1,
                max: MAX_REASON
            })
        );
    }

    #[test]
    fn too_small_a_buffer_is_left_alone() {
        let mut buf = [0xee; 20];
        let frame = GuestFrame::Exit {
            status: ExitStatus::Code(1),
            stdout_len: 2,
            stderr_len: 3,
        };
        assert_eq!(
            frame.encode(&mut buf),
            Err(EncodeError::BufferTooSmall {
                needed: 23,
                got: 20
            })
        );
        assert_eq!(buf, [0xee; 20]);
        let mut buf = [0; HostFrame::MAX_LEN];
        assert_eq!(
            HostFrame::Cancel { grace_ms: 9 }.encode(&mut buf[..8]),
            Err(EncodeError::BufferTooSmall { needed: 9, got: 8 })
        );
    }

    #[test]
    fn output_header_matches_the_whole_frame() {
        let data = [7u8; 300];
        let frame = GuestFrame::Output {
            stream: Stream::Stderr,
            offset: 1 << 40,
            data: &data,
        };
        let mut buf = [0; 400];
        let n = frame.encode(&mut buf).unwrap();
        let header = output_header(Stream::Stderr, 1 << 40, data.len()).unwrap();
        assert_eq!(buf[..OUTPUT_HEADER_LEN], header);
        assert_eq!(buf[OUTPUT_HEADER_LEN..n], data);
        assert_eq!(decode_guest(&buf[..n]), Ok(Some((frame, n))));
        assert_eq!(
            output_header(Stream::Stdout, 0, MAX_DATA + 1),
            Err(EncodeError::DataTooLong {
                len: MAX_DATA + 1,
                max: MAX_DATA
            })
        );
    }
}
