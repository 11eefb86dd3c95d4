//! Decoding: from the front of a byte buffer to a frame.
//!
//! Nothing here indexes or slices unchecked: every read goes through
//! `split_first_chunk` or `get`, which return `None` instead of panicking.

use crate::{
    kind, DecodeError, ExitStatus, GuestFrame, HostFrame, Stream, HEADER_LEN, KEY_LEN,
    MAX_AGENT_NAME, MAX_BODY, MAX_REASON, MAX_SIGNAL,
};

/// The fixed part of a hello body: version, key, capabilities.
pub(crate) const HELLO_FIXED: usize = 2 + KEY_LEN + 4;
/// The body of an exit frame: tag, value, two lengths.
pub(crate) const EXIT_BODY: usize = 2 + 8 + 8;
/// The largest host body (attach and ack).
pub(crate) const MAX_HOST_BODY: usize = 16;

/// The body sizes a kind allows, and the error for any other size.
#[derive(Clone, Copy)]
struct Shape {
    kind: u8,
    name: &'static str,
    min: usize,
    max: usize,
    size_reason: &'static str,
}

impl Shape {
    const fn new(
        kind: u8,
        name: &'static str,
        min: usize,
        max: usize,
        size_reason: &'static str,
    ) -> Shape {
        Shape {
            kind,
            name,
            min,
            max,
            size_reason,
        }
    }

    fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError::BadBody {
            kind: self.name,
            reason,
        }
    }
}

/// The guest kinds. The size reasons are checked against the constants in the tests.
fn guest_shape(code: u8) -> Option<Shape> {
    let output = "an output body is at least 8 bytes, the offset";
    Some(match code {
        kind::HELLO => Shape::new(
            code,
            "hello",
            HELLO_FIXED,
            HELLO_FIXED + MAX_AGENT_NAME,
            "a hello body is 22 to 86 bytes: version, key, capabilities and an agent name of at most 64 bytes",
        ),
        kind::STDOUT => Shape::new(code, "stdout", 8, MAX_BODY, output),
        kind::STDERR => Shape::new(code, "stderr", 8, MAX_BODY, output),
        kind::EXIT => Shape::new(
            code,
            "exit",
            EXIT_BODY,
            EXIT_BODY,
            "an exit body is exactly 18 bytes",
        ),
        kind::FAIL => Shape::new(
            code,
            "fail",
            1,
            MAX_REASON,
            "a fail reason is 1 to 4096 bytes",
        ),
        kind::HEARTBEAT => Shape::new(
            code,
            "heartbeat",
            8,
            8,
            "a heartbeat body is exactly 8 bytes",
        ),
        _ => return None,
    })
}

/// The host kinds.
fn host_shape(code: u8) -> Option<Shape> {
    Some(match code {
        kind::ATTACH => Shape::new(code, "attach", 16, 16, "an attach body is exactly 16 bytes"),
        kind::ACK => Shape::new(code, "ack", 16, 16, "an ack body is exactly 16 bytes"),
        kind::CANCEL => Shape::new(code, "cancel", 4, 4, "a cancel body is exactly 4 bytes"),
        kind::DONE => Shape::new(code, "done", 0, 0, "a done body is empty"),
        _ => return None,
    })
}

/// A whole frame: its kind's shape, its body and its total length.
type Split<'a> = (Shape, &'a [u8], usize);

/// Checks the header at the front of `buf` and splits off the body.
///
/// `Ok(None)` while the header or the body is incomplete; the header's errors
/// come as soon as its 5 bytes are there. On success: the kind's shape, the
/// body, and the frame's total length.
fn split_frame(
    buf: &[u8],
    max_body: usize,
    shape_of: fn(u8) -> Option<Shape>,
) -> Result<Option<Split<'_>>, DecodeError> {
    let Some((len, rest)) = buf.split_first_chunk::<4>() else {
        return Ok(None);
    };
    let Some(&code) = rest.first() else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(*len);
    let max = 1 + max_body;
    let body_len = match usize::try_from(len) {
        Ok(len) if (1..=max).contains(&len) => len - 1,
        _ => return Err(DecodeError::BadLength { len, max }),
    };
    let shape = shape_of(code).ok_or(DecodeError::UnknownKind(code))?;
    if !(shape.min..=shape.max).contains(&body_len) {
        return Err(shape.error(shape.size_reason));
    }
    let total = HEADER_LEN + body_len;
    Ok(buf.get(HEADER_LEN..total).map(|body| (shape, body, total)))
}

/// Reads little-endian fields off the front of a body. Running short is the
/// kind's size error (which the header check has already ruled out).
struct Reader<'a> {
    rest: &'a [u8],
    shape: Shape,
}

impl<'a> Reader<'a> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or(self.shape.error(self.shape.size_reason))?;
        self.rest = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    /// The rest of the body, as UTF-8.
    fn text(self, what: &'static str) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.rest).map_err(|_| self.shape.error(what))
    }

    /// The end of a fixed-size body.
    fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(self.shape.error(self.shape.size_reason))
        }
    }
}

/// Decodes the guest frame at the front of `buf` (what the host reads).
///
/// `Ok(None)`: `buf` holds only part of a frame; read more and call again.
/// `Ok(Some((frame, n)))`: the frame and its length `n`; the next frame starts
/// at `buf[n..]`. The frame borrows from `buf`. An error is final: the stream
/// cannot be resynchronised. Errors the header shows (bad length, unknown
/// kind, a body size the kind does not allow) come as soon as the 5 header
/// bytes are there, without waiting for the body; so once `buf` holds
/// [`MAX_FRAME`](crate::MAX_FRAME) bytes the answer is never `Ok(None)`.
pub fn decode_guest(buf: &[u8]) -> Result<Option<(GuestFrame<'_>, usize)>, DecodeError> {
    let Some((shape, body, total)) = split_frame(buf, MAX_BODY, guest_shape)? else {
        return Ok(None);
    };
    let mut r = Reader { rest: body, shape };
    let frame = match shape.kind {
        kind::HELLO => {
            let version = r.u16()?;
            let key = r.array::<KEY_LEN>()?;
            let capabilities = r.u32()?;
            let agent = r.text("the agent name is not valid UTF-8")?;
            GuestFrame::Hello {
                version,
                key,
                capabilities,
                agent,
            }
        }
        kind::STDOUT | kind::STDERR => {
            let stream = if shape.kind == kind::STDOUT {
                Stream::Stdout
            } else {
                Stream::Stderr
            };
            let offset = r.u64()?;
            let data = r.rest;
            if offset.checked_add(data.len() as u64).is_none() {
                return Err(shape.error("the offset plus the data length is past 2^64 - 1"));
            }
            GuestFrame::Output {
                stream,
                offset,
                data,
            }
        }
        kind::EXIT => {
            let tag = r.u8()?;
            let value = r.u8()?;
            let stdout_len = r.u64()?;
            let stderr_len = r.u64()?;
            r.finish()?;
            let status = match tag {
                0 => ExitStatus::Code(value),
                1 if (1..=MAX_SIGNAL).contains(&value) => ExitStatus::Signal(value),
                1 => return Err(shape.error("a signal number is 1 to 64")),
                _ => return Err(shape.error("the tag is neither 0 (exit code) nor 1 (signal)")),
            };
            GuestFrame::Exit {
                status,
                stdout_len,
                stderr_len,
            }
        }
        kind::FAIL => GuestFrame::Fail {
            reason: r.text("the reason is not valid UTF-8")?,
        },
        _ => {
            let uptime_ms = r.u64()?;
            r.finish()?;
            GuestFrame::Heartbeat { uptime_ms }
        }
    };
    Ok(Some((frame, total)))
}

/// Decodes the host frame at the front of `buf` (what the agent reads).
///
/// Like [`decode_guest`], for the other direction; a length above
/// 1 + 16 is a [`DecodeError::BadLength`]. Once `buf` holds
/// [`HostFrame::MAX_LEN`] bytes the answer is never `Ok(None)`.
pub fn decode_host(buf: &[u8]) -> Result<Option<(HostFrame, usize)>, DecodeError> {
    let Some((shape, body, total)) = split_frame(buf, MAX_HOST_BODY, host_shape)? else {
        return Ok(None);
    };
    let mut r = Reader { rest: body, shape };
    let frame = match shape.kind {
        kind::ATTACH | kind::ACK => {
            let stdout_offset = r.u64()?;
            let stderr_offset = r.u64()?;
            if shape.kind == kind::ATTACH {
                HostFrame::Attach {
                    stdout_offset,
                    stderr_offset,
                }
            } else {
                HostFrame::Ack {
                    stdout_offset,
                    stderr_offset,
                }
            }
        }
        kind::CANCEL => HostFrame::Cancel { grace_ms: r.u32()? },
        _ => HostFrame::Done,
    };
    r.finish()?;
    Ok(Some((frame, total)))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;
    use crate::{MAX_DATA, MAX_FRAME};

    /// The size reasons are literals; they must name the real limits.
    #[test]
    fn size_reasons_match_the_constants() {
        let hello = guest_shape(kind::HELLO).unwrap();
        assert!(hello.size_reason.starts_with(&format!(
            "a hello body is {} to {} bytes",
            hello.min, hello.max
        )));
        assert!(hello
            .size_reason
            .ends_with(&format!("at most {MAX_AGENT_NAME} bytes")));
        assert_eq!(
            guest_shape(kind::FAIL).unwrap().size_reason,
            format!("a fail reason is 1 to {MAX_REASON} bytes")
        );
        assert_eq!(
            guest_shape(kind::EXIT).unwrap().size_reason,
            format!("an exit body is exactly {EXIT_BODY} bytes")
        );
        assert_eq!(MAX_SIGNAL, 64);
        assert_eq!(MAX_BODY, 8 + MAX_DATA);
        assert_eq!(MAX_FRAME, HEADER_LEN + MAX_BODY);
        for code in [kind::ATTACH, kind::ACK, kind::CANCEL, kind::HEARTBEAT] {
            let shape = host_shape(code).or(guest_shape(code)).unwrap();
            assert!(shape
                .size_reason
                .ends_with(&format!("exactly {} bytes", shape.max)));
        }
        assert!((0..=255u8)
            .filter_map(host_shape)
            .all(|s| s.max <= MAX_HOST_BODY));
    }

    #[test]
    fn header_errors_need_only_the_header() {
        // A zero length, with only the header present.
        assert_eq!(
            decode_guest(&[0, 0, 0, 0, 1]),
            Err(DecodeError::BadLength {
                len: 0,
                max: MAX_BODY + 1
            })
        );
        // An exit frame that claims a 9-byte body.
        assert!(matches!(
            decode_guest(&[10, 0, 0, 0, kind::EXIT]),
            Err(DecodeError::BadBody { kind: "exit", .. })
        ));
        // A host frame longer than any host body.
        assert_eq!(
            decode_host(&[18, 0, 0, 0, kind::ATTACH]),
            Err(DecodeError::BadLength { len: 18, max: 17 })
        );
        assert_eq!(
            decode_host(&[1, 0, 0, 0, kind::HELLO]),
            Err(DecodeError::UnknownKind(kind::HELLO))
        );
        assert_eq!(decode_host(&[1, 0, 0, 0]), Ok(None));
    }
}
