//! Decode and encode errors. Their `Display` texts are what the host reports
//! as `guest protocol error: <text>`, so they are plain sentences.

use core::fmt;

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// The length field is 0 or larger than this direction allows.
    BadLength {
        /// The length field.
        len: u32,
        /// The largest length allowed (the kind byte and the largest body).
        max: usize,
    },
    /// The kind byte is not a kind of this direction.
    UnknownKind(u8),
    /// The body does not fit its kind.
    BadBody {
        /// The kind's name, for example `"hello"`.
        kind: &'static str,
        /// What is wrong, for example `"a hello body is 22 to 86 bytes"`.
        reason: &'static str,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::BadLength { len, max } => write!(
                f,
                "bad frame length {len}: it counts the kind byte and the body, so it is 1 to {max}"
            ),
            DecodeError::UnknownKind(kind) => write!(f, "unknown frame kind 0x{kind:02x}"),
            DecodeError::BadBody { kind, reason } => write!(f, "bad {kind} frame: {reason}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a frame cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncodeError {
    /// The output buffer is shorter than the frame.
    BufferTooSmall {
        /// The frame's length.
        needed: usize,
        /// The buffer's length.
        got: usize,
    },
    /// More output data than one frame carries.
    DataTooLong {
        /// The data's length.
        len: usize,
        /// [`MAX_DATA`](crate::MAX_DATA).
        max: usize,
    },
    /// The output's offset plus its length does not fit a `u64`.
    OffsetOverflow {
        /// The offset.
        offset: u64,
        /// The data's length.
        len: usize,
    },
    /// A fail frame with an empty reason.
    EmptyReason,
    /// A fail reason longer than allowed.
    ReasonTooLong {
        /// The reason's length in bytes.
        len: usize,
        /// [`MAX_REASON`](crate::MAX_REASON).
        max: usize,
    },
    /// An agent name longer than allowed.
    AgentNameTooLong {
        /// The name's length in bytes.
        len: usize,
        /// [`MAX_AGENT_NAME`](crate::MAX_AGENT_NAME).
        max: usize,
    },
    /// An exit by signal with a signal number outside 1 to [`MAX_SIGNAL`](crate::MAX_SIGNAL).
    BadSignal(u8),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeError::BufferTooSmall { needed, got } => write!(
                f,
                "the buffer is too small: the frame is {needed} bytes, the buffer {got}"
            ),
            EncodeError::DataTooLong { len, max } => write!(
                f,
                "output data of {len} bytes is too long: a frame carries at most {max}"
            ),
            EncodeError::OffsetOverflow { offset, len } => write!(
                f,
                "a {len}-byte output at offset {offset} ends past the largest offset, 2^64 - 1"
            ),
            EncodeError::EmptyReason => f.write_str("a fail reason must not be empty"),
            EncodeError::ReasonTooLong { len, max } => write!(
                f,
                "a fail reason of {len} bytes is too long: the limit is {max}"
            ),
            EncodeError::AgentNameTooLong { len, max } => write!(
                f,
                "an agent name of {len} bytes is too long: the limit is {max}"
            ),
            EncodeError::BadSignal(signal) => write!(
                f,
                "signal {signal} is not a signal number: they are 1 to {}",
                crate::MAX_SIGNAL
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn messages_name_the_value_and_the_limit() {
        let cases = [
            (
                EncodeError::BufferTooSmall { needed: 23, got: 20 },
                "the buffer is too small: the frame is 23 bytes, the buffer 20",
            ),
            (
                EncodeError::DataTooLong {
                    len: 65537,
                    max: 65536,
                },
                "output data of 65537 bytes is too long: a frame carries at most 65536",
            ),
            (
                EncodeError::OffsetOverflow {
                    offset: u64::MAX,
                    len: 1,
                },
                "a 1-byte output at offset 18446744073709551615 ends past the largest offset, 2^64 - 1",
            ),
            (EncodeError::EmptyReason, "a fail reason must not be empty"),
            (
                EncodeError::ReasonTooLong {
                    len: 4097,
                    max: 4096,
                },
                "a fail reason of 4097 bytes is too long: the limit is 4096",
            ),
            (
                EncodeError::AgentNameTooLong { len: 65, max: 64 },
                "an agent name of 65 bytes is too long: the limit is 64",
            ),
            (
                EncodeError::BadSignal(0),
                "signal 0 is not a signal number: they are 1 to 64",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
        assert_eq!(
            crate::ExitStatus::Signal(9).to_string(),
            "killed by signal 9"
        );
        assert_eq!(
            crate::ExitStatus::Code(255).to_string(),
            "exited with code 255"
        );
    }
}
