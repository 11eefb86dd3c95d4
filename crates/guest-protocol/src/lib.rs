//! The wire format of fcexec guest protocol version 2: length-prefixed binary
//! frames on one vsock stream between a guest agent and the host executor.
//!
//! Both ends use this crate, so they agree on every byte. It only encodes and
//! decodes frames; the session rules (hello, attach, acks, reconnects) are the
//! callers' business and are described in `docs/guest-protocol.md`. The test
//! vectors in `docs/guest-protocol-v2-vectors.txt` pin the format down.
//!
//! ```
//! use fcexec_guest_protocol::{capability, decode_guest, GuestFrame, Stream, KEY_LEN, VERSION};
//!
//! let hello = GuestFrame::Hello {
//!     version: VERSION,
//!     key: [0x5a; KEY_LEN],
//!     capabilities: capability::RESUME | capability::CANCEL | capability::HEARTBEAT,
//!     agent: "example-agent",
//! };
//! let stdout = GuestFrame::Output { stream: Stream::Stdout, offset: 0, data: b"hello\n" };
//!
//! // Encode both frames, one after the other, into a buffer.
//! let mut buf = [0u8; 128];
//! let mut len = hello.encode(&mut buf)?;
//! len += stdout.encode(&mut buf[len..])?;
//! assert_eq!(len, hello.encoded_len() + stdout.encoded_len());
//!
//! // Decode them back as a reader of the stream would: a frame and the number
//! // of bytes it used, or `None` while the buffer holds only part of a frame.
//! assert_eq!(decode_guest(&buf[..3])?, None);
//! let (first, used) = decode_guest(&buf[..len])?.expect("a whole frame");
//! assert_eq!(first, hello);
//! let (second, used_too) = decode_guest(&buf[used..len])?.expect("a whole frame");
//! assert_eq!(second, stdout);
//! assert_eq!(used + used_too, len);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Decoding never panics and never allocates: every length is checked before
//! it is used. A bad header (a length out of range, an unknown kind, a body
//! size the kind does not allow) is reported as soon as its 5 bytes are there.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod decode;
mod encode;
mod error;
mod types;

pub use decode::{decode_guest, decode_host};
pub use encode::output_header;
pub use error::{DecodeError, EncodeError};
pub use types::{ExitStatus, GuestFrame, HostFrame, Stream};

/// The protocol version this crate implements, sent in every hello.
pub const VERSION: u16 = 2;
/// Length of the execution key in bytes (the config drive writes it as 32 hex digits).
pub const KEY_LEN: usize = 16;
/// The most data bytes one stdout or stderr frame carries.
pub const MAX_DATA: usize = 65536;
/// The most bytes of a fail reason.
pub const MAX_REASON: usize = 4096;
/// The most bytes of the agent name in a hello.
pub const MAX_AGENT_NAME: usize = 64;
/// Length of a frame header: `u32` length and `u8` kind.
pub const HEADER_LEN: usize = 5;
/// Length of an output frame before its data: the header and the `u64` offset.
pub const OUTPUT_HEADER_LEN: usize = 13;
/// The largest body of any frame (an output frame with [`MAX_DATA`] bytes).
pub const MAX_BODY: usize = 8 + MAX_DATA;
/// The largest frame, header included.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_BODY;
/// The host vsock port the agent connects to unless the config drive names another.
pub const DEFAULT_PORT: u32 = 1024;
/// The largest signal number an exit frame may carry (the smallest is 1).
pub const MAX_SIGNAL: u8 = 64;

/// Capability bits an agent announces in its hello.
pub mod capability {
    /// The agent keeps unacked output and resends it after a reconnect.
    pub const RESUME: u32 = 1;
    /// The agent obeys cancel frames.
    pub const CANCEL: u32 = 2;
    /// The agent sends heartbeat frames.
    pub const HEARTBEAT: u32 = 4;
}

/// The frame kind codes (the byte after the length).
pub mod kind {
    /// Guest to host: hello.
    pub const HELLO: u8 = 0x01;
    /// Guest to host: stdout data.
    pub const STDOUT: u8 = 0x02;
    /// Guest to host: stderr data.
    pub const STDERR: u8 = 0x03;
    /// Guest to host: the workload's exit status.
    pub const EXIT: u8 = 0x04;
    /// Guest to host: the agent failed.
    pub const FAIL: u8 = 0x05;
    /// Guest to host: heartbeat.
    pub const HEARTBEAT: u8 = 0x06;
    /// Host to guest: attach, the reply to hello.
    pub const ATTACH: u8 = 0x81;
    /// Host to guest: output stored up to these offsets.
    pub const ACK: u8 = 0x82;
    /// Host to guest: cancel the workload.
    pub const CANCEL: u8 = 0x83;
    /// Host to guest: the host has the whole result.
    pub const DONE: u8 = 0x84;
}
