//! The fallback report: guest protocol 1 (`docs/guest-protocol.md`, from
//! "Transport" to "Drive order") on the serial console, for a VM without a
//! vsock device.
//!
//! Each frame is one line, `#FCX1 <key> <seq> <kind> <base64 payload> <crc>`.
//! Protocol 1 has no flow control, acks, cancel or heartbeats: frames are
//! written as the output comes (blocking), and the report ends with the
//! `exit` or `fail` frame. Its `exit` carries a code only, so a job killed
//! by signal N is reported as exit code 128 + N, as a shell reports it.

use std::io::Write;

use fcexec_guest_protocol::{ExitStatus, Stream, KEY_LEN};

use crate::session::End;

/// The most payload bytes in one frame (4096 base64 characters).
pub const MAX_PAYLOAD: usize = 3072;

/// A protocol 1 report on a console.
pub struct Serial {
    out: Box<dyn Write>,
    key: String,
    seq: u32,
    ended: bool,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serial")
            .field("seq", &self.seq)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Serial {
    /// Starts the report on `out`: writes the hello frame.
    pub fn new(out: Box<dyn Write>, key: &[u8; KEY_LEN]) -> Serial {
        let mut serial = Serial {
            out,
            key: key.iter().map(|b| format!("{b:02x}")).collect(),
            seq: 0,
            ended: false,
        };
        serial.frame("hello", b"fcexec-guest-protocol/1 agent=fcexec-agent");
        serial
    }

    /// Writes output frames for `data`.
    pub fn push(&mut self, stream: Stream, data: &[u8]) {
        let kind = match stream {
            Stream::Stdout => "out",
            Stream::Stderr => "err",
        };
        for chunk in data.chunks(MAX_PAYLOAD) {
            self.frame(kind, chunk);
        }
    }

    /// Writes the end frame (once).
    pub fn finish(&mut self, end: &End) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        match end {
            End::Exit(ExitStatus::Code(code)) => self.frame("exit", code.to_string().as_bytes()),
            End::Exit(ExitStatus::Signal(signal)) => {
                let code = 128 + u32::from(*signal);
                self.frame("exit", code.min(255).to_string().as_bytes())
            }
            End::Fail(reason) => {
                let mut cut = reason.len().min(MAX_PAYLOAD);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                let reason = if cut == 0 {
                    "unknown failure"
                } else {
                    &reason[..cut]
                };
                self.frame("fail", reason.as_bytes())
            }
        }
    }

    fn frame(&mut self, kind: &str, payload: &[u8]) {
        let line = encode(&self.key, self.seq, kind, payload);
        self.seq = self.seq.wrapping_add(1);
        // A console that fails cannot be reported on anywhere else.
        let _ = self.out.write_all(line.as_bytes());
        let _ = self.out.flush();
    }
}

/// One frame line, newline included.
pub fn encode(key_hex: &str, seq: u32, kind: &str, payload: &[u8]) -> String {
    let payload = if payload.is_empty() {
        "-".to_string()
    } else {
        base64(payload)
    };
    let head = format!("#FCX1 {key_hex} {seq} {kind} {payload} ");
    let crc = crc32(head.as_bytes());
    format!("{head}{crc:08x}\n")
}

/// Standard base64 with padding.
fn base64(data: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |n: u32| char::from(TABLE[(n & 63) as usize]);
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| chunk.get(i).map_or(0, |&b| u32::from(b));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// CRC-32 (IEEE 802.3, as zlib's `crc32`).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    const VECTORS: &str = include_str!("../../../docs/guest-protocol-vectors.txt");

    fn unhex(text: &str) -> Vec<u8> {
        if text == "-" {
            return Vec::new();
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn frames_match_the_shared_vectors() {
        let mut key = String::new();
        let mut checked = 0;
        for line in VECTORS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            if let Some(k) = line.strip_prefix("key ") {
                key = k.to_string();
                continue;
            }
            let mut f = line.splitn(4, ' ');
            let (seq, kind, payload, frame) = (
                f.next().unwrap(),
                f.next().unwrap(),
                f.next().unwrap(),
                f.next().unwrap(),
            );
            let got = encode(&key, seq.parse().unwrap(), kind, &unhex(payload));
            assert_eq!(got, format!("{frame}\n"), "{line}");
            checked += 1;
        }
        assert!(checked >= 8);
    }

    /// A console that the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_report_is_hello_output_and_one_end() {
        let console = Shared::default();
        let mut serial = Serial::new(Box::new(console.clone()), &[0xab; KEY_LEN]);
        serial.push(Stream::Stdout, &vec![b'x'; MAX_PAYLOAD + 1]);
        serial.push(Stream::Stderr, b"oops\n");
        serial.finish(&End::Exit(ExitStatus::Signal(9)));
        serial.finish(&End::Fail("ignored".into()));
        let text = String::from_utf8(console.0.lock().unwrap().clone()).unwrap();
        let kinds: Vec<(&str, &str)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[2], f[3])
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("0", "hello"),
                ("1", "out"),
                ("2", "out"),
                ("3", "err"),
                ("4", "exit")
            ]
        );
        assert!(
            text.lines().last().unwrap().contains(" exit MTM3 "),
            "{text}"
        );
    }
}
