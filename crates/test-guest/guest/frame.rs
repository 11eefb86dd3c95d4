//! Frame encoder of the fcexec guest protocol, version 1
//! (`docs/guest-protocol.md`): standard base64, CRC-32 (IEEE, as zlib's
//! `crc32`) and the frame line itself.
//!
//! This file has no dependencies, so the host's tests compile it too (as a
//! `#[path]` module) and check it against `docs/guest-protocol-vectors.txt`.

#![allow(dead_code)] // each side uses a different part

/// The marker that starts every frame.
pub const MARKER: &[u8] = b"#FCX1 ";
/// Length of a key: 32 lowercase hex digits.
pub const KEY_LEN: usize = 32;
/// The most payload bytes one frame carries (4096 base64 characters).
pub const MAX_PAYLOAD: usize = 3072;
/// The longest kind name.
const MAX_KIND: usize = 5;
/// The longest encoded frame, newline included.
pub const MAX_FRAME: usize = MARKER.len() + KEY_LEN + 1 + 10 + 1 + MAX_KIND + 1 + 4096 + 1 + 8 + 1;

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const HEX: &[u8; 16] = b"0123456789abcdef";

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

static CRC_TABLE: [u32; 256] = crc_table();

/// Continues a CRC-32 over `data` (start with 0), like zlib's `crc32`.
pub fn crc32(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

/// Length of the standard (padded) base64 encoding of `n` bytes.
pub const fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Encodes `input` as standard base64 into the start of `out`, which must hold
/// [`base64_len`] bytes; returns the length written.
pub fn base64(input: &[u8], out: &mut [u8]) -> usize {
    let mut w = 0;
    let mut chunks = input.chunks_exact(3);
    for c in &mut chunks {
        let n = u32::from(c[0]) << 16 | u32::from(c[1]) << 8 | u32::from(c[2]);
        out[w] = BASE64[(n >> 18) as usize & 63];
        out[w + 1] = BASE64[(n >> 12) as usize & 63];
        out[w + 2] = BASE64[(n >> 6) as usize & 63];
        out[w + 3] = BASE64[n as usize & 63];
        w += 4;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let n = u32::from(rest[0]) << 16 | rest.get(1).map_or(0, |&b| u32::from(b) << 8);
        out[w] = BASE64[(n >> 18) as usize & 63];
        out[w + 1] = BASE64[(n >> 12) as usize & 63];
        out[w + 2] = if rest.len() == 2 {
            BASE64[(n >> 6) as usize & 63]
        } else {
            b'='
        };
        out[w + 3] = b'=';
        w += 4;
    }
    w
}

/// A cursor over an output buffer.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    fn put_decimal(&mut self, mut n: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&digits[i..]);
    }

    fn put_hex32(&mut self, n: u32) {
        let mut digits = [0u8; 8];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = HEX[(n >> (28 - 4 * i)) as usize & 15];
        }
        self.put(&digits);
    }
}

/// Encodes one frame, `\n` included, at the start of `out`; returns its length.
///
/// Returns `None` when the payload is longer than [`MAX_PAYLOAD`], the kind is
/// longer than the protocol's longest, or `out` is shorter than [`MAX_FRAME`].
pub fn encode(
    out: &mut [u8],
    key: &[u8; KEY_LEN],
    seq: u32,
    kind: &str,
    payload: &[u8],
) -> Option<usize> {
    if payload.len() > MAX_PAYLOAD || kind.len() > MAX_KIND || out.len() < MAX_FRAME {
        return None;
    }
    let mut c = Cursor { buf: out, pos: 0 };
    c.put(MARKER);
    c.put(key);
    c.put(b" ");
    c.put_decimal(seq);
    c.put(b" ");
    c.put(kind.as_bytes());
    c.put(b" ");
    if payload.is_empty() {
        c.put(b"-");
    } else {
        c.pos += base64(payload, &mut c.buf[c.pos..]);
    }
    c.put(b" ");
    let crc = crc32(0, &c.buf[..c.pos]);
    c.put_hex32(crc);
    c.put(b"\n");
    Some(c.pos)
}

/// True when `key` is 32 lowercase hex digits.
pub fn valid_key(key: &[u8]) -> bool {
    key.len() == KEY_LEN && key.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}
