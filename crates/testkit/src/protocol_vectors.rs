//! The guest protocol's shared test vectors (`docs/guest-protocol-vectors.txt`),
//! read once for both ends: the host decoder and the guest encoder test
//! against the same list.

/// The vectors file, compiled in.
const VECTORS: &str = include_str!("../../../docs/guest-protocol-vectors.txt");

/// One vector: a frame and what it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vector {
    /// Sequence number.
    pub seq: u32,
    /// Frame kind (`hello`, `out`, ...).
    pub kind: String,
    /// Payload bytes.
    pub payload: Vec<u8>,
    /// The encoded frame, without its newline.
    pub frame: String,
}

/// The key every vector uses (32 hex digits) and the vectors, in file order.
pub fn vectors() -> (String, Vec<Vector>) {
    let mut key = String::new();
    let mut out = Vec::new();
    for line in VECTORS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        if let Some(k) = line.strip_prefix("key ") {
            key = k.to_string();
            continue;
        }
        let mut f = line.splitn(4, ' ');
        let (seq, kind, payload, frame) = (f.next(), f.next(), f.next(), f.next());
        let (Some(seq), Some(kind), Some(payload), Some(frame)) = (seq, kind, payload, frame)
        else {
            panic!("malformed vector line {line:?}");
        };
        out.push(Vector {
            seq: seq.parse().expect("seq is a u32"),
            kind: kind.to_string(),
            payload: unhex(payload),
            frame: frame.to_string(),
        });
    }
    (key, out)
}

/// Hex to bytes; `-` is empty.
fn unhex(s: &str) -> Vec<u8> {
    if s == "-" {
        return Vec::new();
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex payload"))
        .collect()
}
