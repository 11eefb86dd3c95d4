//! Host side of the fcexec guest protocol, version 1 (`docs/guest-protocol.md`).
//!
//! In agent mode the guest agent reports the workload's stdout, stderr and exit
//! code as frames on the serial console, mixed with console text (kernel
//! messages). [`FrameDecoder`] turns the raw console byte stream into
//! [`Event`]s:
//!
//! 1. Bytes are gathered into lines. Input may be split at any byte; a line is
//!    handled when its `\n` arrives, or at [`FrameDecoder::finish`].
//! 2. A frame is the tail of a line from the *last* `#FCX1 ` marker to the end
//!    of the line (a valid frame holds no `#` after its first byte, so only
//!    the last marker can start one). Text before it is console text.
//! 3. A tail whose key is not this execution's key is console text: the
//!    workload cannot forge frames. A tail with the right key that is
//!    malformed, fails its CRC, or breaks the sequence is a
//!    [`Event::ProtocolError`]; the decoder then goes on (it resynchronises on
//!    the frame's sequence number) so that later output is still captured.
//! 4. After an `exit` or `fail` frame nothing more is decoded: every later
//!    byte is console text.
//!
//! Memory is bounded: a line without a newline that grows past twice the
//! longest frame is flushed as console text, keeping only a tail that may
//! still become a frame.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use crate::config_drive::Key;

/// The marker that starts a frame.
pub const MARKER: &[u8] = b"#FCX1 ";
/// Longest encoded payload, in characters.
pub const MAX_PAYLOAD_CHARS: usize = 4096;
/// Largest payload one frame carries, in bytes (4096 base64 characters).
pub const MAX_PAYLOAD_BYTES: usize = 3072;
/// Longest frame, in bytes, without its line end: marker, key, the longest
/// seq (10 digits) and kind (5 letters), the longest payload, the crc, and
/// the separating spaces.
pub const MAX_FRAME_LEN: usize = MARKER.len() + 32 + 1 + 10 + 1 + 5 + 1 + MAX_PAYLOAD_CHARS + 1 + 8;
/// How many bytes of an unfinished line the decoder keeps at most.
pub const MAX_BUFFERED: usize = 2 * (MAX_FRAME_LEN + 1);
/// The payload of the `hello` frame starts with this text, then the agent name.
pub const HELLO_PREFIX: &str = "fcexec-guest-protocol/1 agent=";

/// The kind of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// The agent is up; always frame 0.
    Hello,
    /// Bytes the workload wrote to stdout.
    Out,
    /// Bytes the workload wrote to stderr.
    Err,
    /// The workload's exit code, ASCII decimal 0..=255.
    Exit,
    /// The agent itself failed; UTF-8 reason.
    Fail,
}

impl FrameKind {
    /// The kind as written in a frame.
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Out => "out",
            FrameKind::Err => "err",
            FrameKind::Exit => "exit",
            FrameKind::Fail => "fail",
        }
    }

    /// The kind written as `text`, if it is one.
    pub fn parse(text: &[u8]) -> Option<FrameKind> {
        Some(match text {
            b"hello" => FrameKind::Hello,
            b"out" => FrameKind::Out,
            b"err" => FrameKind::Err,
            b"exit" => FrameKind::Exit,
            b"fail" => FrameKind::Fail,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Sequence number.
    pub seq: u32,
    /// Kind.
    pub kind: FrameKind,
    /// Decoded payload bytes.
    pub payload: Vec<u8>,
}

/// Why a line that carries this execution's key is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Wrong number of fields, a bad number, kind or crc form.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The crc does not match the frame's bytes.
    #[error("frame crc mismatch: the frame says {found:08x}, its bytes give {computed:08x}")]
    BadCrc {
        /// The crc written in the frame.
        found: u32,
        /// The crc of the frame's bytes.
        computed: u32,
    },
    /// The payload is not standard padded base64.
    #[error("frame {seq} payload is not valid base64: {reason}")]
    BadBase64 {
        /// The frame's sequence number.
        seq: u32,
        /// The decoder's complaint.
        reason: String,
    },
}

/// What the console stream said, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Console text that is not a frame (kernel messages, foreign frames).
    Console(Vec<u8>),
    /// Workload stdout bytes.
    Stdout(Vec<u8>),
    /// Workload stderr bytes.
    Stderr(Vec<u8>),
    /// The agent's hello text (`fcexec-guest-protocol/1 agent=<name>`).
    Hello(String),
    /// The workload exited with this code; the decoder is finished.
    Exit(u8),
    /// The agent failed with this reason; the decoder is finished.
    Fail(String),
    /// A frame with the right key was broken, or the sequence had a gap.
    ProtocolError(String),
}

/// Encodes one frame line, `\n` included. A payload longer than
/// [`MAX_PAYLOAD_BYTES`] gives a line that decoders treat as console text.
pub fn encode_frame(key: &Key, seq: u32, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let body = if payload.is_empty() {
        "-".to_string()
    } else {
        STANDARD.encode(payload)
    };
    let mut line = format!("#FCX1 {key} {seq} {} {body} ", kind.as_str()).into_bytes();
    let crc = crc32fast::hash(&line);
    line.extend_from_slice(format!("{crc:08x}\n").as_bytes());
    line
}

/// Parses `text`, which starts at a marker and has no line end.
///
/// `Ok(None)`: not a frame for this key (console text); `Err`: it carries the
/// key but is broken.
pub fn parse_frame(key: &Key, text: &[u8]) -> Result<Option<Frame>, FrameError> {
    let key_hex = key.to_string();
    let Some(rest) = text.strip_prefix(MARKER) else {
        return Ok(None);
    };
    match rest.get(..33) {
        Some(k) if &k[..32] == key_hex.as_bytes() && k[32] == b' ' => {}
        _ => return Ok(None),
    }
    let malformed = |what: &str| FrameError::Malformed(what.to_string());
    let crc_at = text.iter().rposition(|&b| b == b' ').unwrap_or(0);
    if crc_at <= MARKER.len() + 32 {
        return Err(malformed("no fields after the key"));
    }
    let crc_text = &text[crc_at + 1..];
    if crc_text.len() != 8
        || !crc_text
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(malformed("the crc is not 8 lowercase hex digits"));
    }
    let found = u32::from_str_radix(&String::from_utf8_lossy(crc_text), 16)
        .map_err(|_| malformed("bad crc"))?;
    let computed = crc32fast::hash(&text[..=crc_at]);
    if found != computed {
        return Err(FrameError::BadCrc { found, computed });
    }
    let fields: Vec<&[u8]> = rest[33..crc_at - MARKER.len()]
        .split(|&b| b == b' ')
        .collect();
    let [seq, kind, payload] = fields[..] else {
        return Err(malformed("want seq, kind and payload between key and crc"));
    };
    let seq = parse_decimal(seq).ok_or_else(|| malformed("the seq is not a decimal u32"))?;
    let kind = FrameKind::parse(kind).ok_or_else(|| malformed("unknown kind"))?;
    if payload.len() > MAX_PAYLOAD_CHARS {
        return Err(malformed("the payload is longer than 4096 characters"));
    }
    let payload = match payload {
        b"-" => Vec::new(),
        b"" => return Err(malformed("an empty payload must be written '-'")),
        encoded => STANDARD
            .decode(encoded)
            .map_err(|e| FrameError::BadBase64 {
                seq,
                reason: e.to_string(),
            })?,
    };
    Ok(Some(Frame { seq, kind, payload }))
}

fn parse_decimal(text: &[u8]) -> Option<u32> {
    if text.is_empty() || text.len() > 10 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Incremental decoder of one execution's console stream.
#[derive(Debug)]
pub struct FrameDecoder {
    /// The execution's key; frames with another key are console text.
    key: Key,
    /// The unfinished current line.
    line: Vec<u8>,
    /// The sequence number the next frame must have; `None` once `u32::MAX`
    /// was used (any further frame is a gap).
    next_seq: Option<u32>,
    /// Set after `exit` or `fail`: nothing more is decoded.
    done: bool,
}

impl FrameDecoder {
    /// A decoder that accepts frames carrying `key`.
    pub fn new(key: Key) -> FrameDecoder {
        FrameDecoder {
            key,
            line: Vec::new(),
            next_seq: Some(0),
            done: false,
        }
    }

    /// True once an `exit` or `fail` frame was decoded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// How many bytes of an unfinished line are held (at most [`MAX_BUFFERED`]).
    pub fn buffered(&self) -> usize {
        self.line.len()
    }

    /// Feeds the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut events = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.done {
                let held = std::mem::take(&mut self.line);
                push_console(&mut events, &held);
                push_console(&mut events, rest);
                break;
            }
            match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.line.extend_from_slice(&rest[..=end]);
                    let line = std::mem::take(&mut self.line);
                    self.handle_line(&line, &mut events);
                    rest = &rest[end + 1..];
                }
                None => {
                    self.line.extend_from_slice(rest);
                    if self.line.len() > MAX_BUFFERED {
                        self.spill(&mut events);
                    }
                    break;
                }
            }
        }
        events
    }

    /// Ends the stream: a last line without a newline is handled like a full
    /// line (a valid frame there still counts, its crc vouches for it).
    pub fn finish(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        if self.done {
            push_console(&mut events, &line);
        } else if !line.is_empty() {
            self.handle_line(&line, &mut events);
        }
        events
    }

    /// Flushes as console text the part of an over-long unfinished line that
    /// can no longer be part of a frame.
    fn spill(&mut self, events: &mut Vec<Event>) {
        let len = self.line.len();
        let keep_from = match rfind_marker(&self.line) {
            Some(m) if len - m <= MAX_FRAME_LEN + 1 => m,
            _ => len - partial_marker_len(&self.line),
        };
        let spilled: Vec<u8> = self.line.drain(..keep_from).collect();
        push_console(events, &spilled);
    }

    /// Handles one line (with its `\n`, unless it is the stream's last).
    fn handle_line(&mut self, line: &[u8], events: &mut Vec<Event>) {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        let Some(m) = rfind_marker(content).filter(|m| content.len() - m <= MAX_FRAME_LEN) else {
            push_console(events, line);
            return;
        };
        match parse_frame(&self.key, &content[m..]) {
            Ok(None) => push_console(events, line),
            Ok(Some(frame)) => {
                push_console(events, &line[..m]);
                self.handle_frame(frame, events);
            }
            Err(e) => {
                // The broken frame carries the key: keep it out of the console log.
                push_console(events, &line[..m]);
                events.push(Event::ProtocolError(e.to_string()));
            }
        }
    }

    fn handle_frame(&mut self, frame: Frame, events: &mut Vec<Event>) {
        let Frame { seq, kind, payload } = frame;
        if self.next_seq != Some(seq) {
            let expected = self
                .next_seq
                .map_or_else(|| "none (u32::MAX was used)".to_string(), |n| n.to_string());
            events.push(Event::ProtocolError(format!(
                "sequence gap: expected frame {expected}, got frame {seq}"
            )));
        }
        self.next_seq = seq.checked_add(1);
        if (seq == 0) != (kind == FrameKind::Hello) {
            events.push(Event::ProtocolError(format!(
                "frame {seq} is {}: hello must be frame 0 and only frame 0",
                kind.as_str()
            )));
            if kind == FrameKind::Hello {
                return;
            }
        }
        match kind {
            FrameKind::Hello => {
                events.push(Event::Hello(String::from_utf8_lossy(&payload).into_owned()))
            }
            FrameKind::Out => events.push(Event::Stdout(payload)),
            FrameKind::Err => events.push(Event::Stderr(payload)),
            FrameKind::Exit => match parse_exit_code(&payload) {
                Some(code) => {
                    self.done = true;
                    events.push(Event::Exit(code));
                }
                None => events.push(Event::ProtocolError(format!(
                    "frame {seq}: exit code {:?} is not a decimal number from 0 to 255",
                    String::from_utf8_lossy(&payload)
                ))),
            },
            FrameKind::Fail => {
                self.done = true;
                events.push(Event::Fail(String::from_utf8_lossy(&payload).into_owned()));
            }
        }
    }
}

fn parse_exit_code(payload: &[u8]) -> Option<u8> {
    if payload.is_empty() || payload.len() > 3 || !payload.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(payload).ok()?.parse().ok()
}

/// Appends console bytes, merging with a console event just before.
fn push_console(events: &mut Vec<Event>, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Some(Event::Console(last)) = events.last_mut() {
        last.extend_from_slice(bytes);
    } else {
        events.push(Event::Console(bytes.to_vec()));
    }
}

/// Position of the last marker in `text`.
fn rfind_marker(text: &[u8]) -> Option<usize> {
    text.windows(MARKER.len()).rposition(|w| w == MARKER)
}

/// Length of the longest proper prefix of the marker that `text` ends with.
fn partial_marker_len(text: &[u8]) -> usize {
    (1..MARKER.len())
        .rev()
        .find(|&k| text.ends_with(&MARKER[..k]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
