//! A small decoder of guest protocol frames, written for the tests and
//! independent of the guest's encoder (bitwise CRC-32, its own base64).

use std::time::Duration;

use super::Line;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u32,
    pub kind: String,
    pub payload: Vec<u8>,
    pub at: Duration,
}

/// The frames and the console text of one run.
#[derive(Debug, Default)]
pub struct Decoded {
    pub frames: Vec<Frame>,
    pub console: Vec<String>,
}

impl Decoded {
    pub fn stream(&self, kind: &str) -> Vec<u8> {
        self.frames
            .iter()
            .filter(|f| f.kind == kind)
            .flat_map(|f| f.payload.clone())
            .collect()
    }

    pub fn kinds(&self) -> Vec<&str> {
        self.frames.iter().map(|f| f.kind.as_str()).collect()
    }

    pub fn exit_code(&self) -> Option<u8> {
        let f = self.frames.iter().find(|f| f.kind == "exit")?;
        std::str::from_utf8(&f.payload).ok()?.parse().ok()
    }
}

/// Decodes frames with `key`; asserts valid crcs and a gapless sequence.
pub fn decode(lines: &[Line], key: &str) -> Decoded {
    let mut out = Decoded::default();
    for line in lines {
        let text = String::from_utf8_lossy(&line.bytes);
        let text = text.trim_end_matches('\n').trim_end_matches('\r');
        let Some(start) = text.find("#FCX1 ") else {
            out.console.push(text.to_string());
            continue;
        };
        let frame = &text[start..];
        let fields: Vec<&str> = frame.split(' ').collect();
        if fields.len() != 6 || fields[1] != key {
            out.console.push(text.to_string());
            continue;
        }
        let crc_end = frame.len() - fields[5].len();
        assert_eq!(
            format!("{:08x}", crc32(&frame.as_bytes()[..crc_end])),
            fields[5],
            "bad crc in frame {frame}"
        );
        let seq: u32 = fields[2].parse().expect("seq");
        assert_eq!(
            seq as usize,
            out.frames.len(),
            "sequence gap before {frame:.80}"
        );
        let payload = if fields[4] == "-" {
            Vec::new()
        } else {
            base64_decode(fields[4])
        };
        out.frames.push(Frame {
            seq,
            kind: fields[3].to_string(),
            payload,
            at: line.at,
        });
    }
    out
}

/// Bitwise CRC-32 (IEEE), deliberately not the guest's table-driven one.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

pub fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    assert_eq!(text.len() % 4, 0, "base64 length");
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    for chunk in text.as_bytes().chunks(4) {
        let mut n = 0u32;
        let mut pad = 0;
        for &c in chunk {
            n <<= 6;
            if c == b'=' {
                pad += 1;
            } else {
                n |= ALPHABET
                    .iter()
                    .position(|&a| a == c)
                    .expect("base64 alphabet") as u32;
            }
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}
