//! A fuzz-style property test, in tree and deterministic.
//!
//! A seeded PRNG makes `FCEXEC_FUZZ_INPUTS` inputs (default 1,000,000): random
//! byte strings, valid frame sequences and mutated ones (bit flips, byte
//! edits, truncations, length-field edits, splices, insertions, deletions).
//! Each input is fed, in random chunks, through the decode loop a host (or
//! agent) runs: append to a buffer, decode, consume, stop at the first error;
//! and, all at once, through the same loop. The properties:
//!
//! - nothing panics;
//! - a frame uses at least a header and at most the bytes there are, and it
//!   re-encodes to exactly those bytes;
//! - `Ok(None)` only while the header, or the body it announces, is
//!   incomplete; so never once the buffer holds `MAX_FRAME` bytes (guest) or
//!   `HostFrame::MAX_LEN` bytes (host);
//! - chunking changes nothing: the frames and the final error are the same;
//! - a valid sequence decodes to its frames, to the last byte.
//!
//! Every input has its own PRNG state, derived from the seed and its index, so
//! a failure names the input and `FCEXEC_FUZZ_SEED` replays the run. The work
//! is split over the available cores.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use fcexec_guest_protocol::{
    decode_guest, decode_host, DecodeError, ExitStatus, GuestFrame, HostFrame, Stream, HEADER_LEN,
    KEY_LEN, MAX_AGENT_NAME, MAX_DATA, MAX_FRAME, MAX_REASON, VERSION,
};

const DEFAULT_INPUTS: u64 = 1_000_000;
const DEFAULT_SEED: u64 = 0x6663_6578_6563_7632; // "fcexecv2"

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// 0 to n - 1 (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// true one time in `n`.
    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        let end = out.len() + len;
        while out.len() + 8 <= end {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        while out.len() < end {
            out.push(self.byte());
        }
    }

    /// A number that is often at an edge.
    fn u64_edgy(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX - self.below(3) as u64,
            2 => self.below(1000) as u64,
            _ => self.next(),
        }
    }

    /// A valid UTF-8 text of at most `max` bytes, often short.
    fn text(&mut self, min: usize, max: usize) -> String {
        let target = if self.one_in(20) {
            max
        } else {
            min + self.below((max - min).min(40) + 1)
        };
        let mut s = String::new();
        while s.len() < target {
            let c = match self.below(10) {
                0 => 'é',
                1 => '€',
                2 => '🦀',
                3 => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('?'),
                _ => (b' ' + self.below(95) as u8) as char,
            };
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        if s.len() < min {
            s.push('x');
        }
        s
    }
}

/// Appends one random valid guest frame to `out`.
fn guest_frame(rng: &mut Rng, out: &mut Vec<u8>) {
    let text;
    let mut data = Vec::new();
    let frame = match rng.below(8) {
        0 => {
            text = rng.text(0, MAX_AGENT_NAME);
            let mut key = [0; KEY_LEN];
            key.iter_mut().for_each(|b| *b = rng.byte());
            GuestFrame::Hello {
                version: if rng.one_in(4) {
                    rng.next() as u16
                } else {
                    VERSION
                },
                key,
                capabilities: rng.next() as u32,
                agent: &text,
            }
        }
        1..=3 => {
            let len = if rng.one_in(500) {
                if rng.one_in(2) {
                    MAX_DATA
                } else {
                    rng.below(MAX_DATA + 1)
                }
            } else {
                rng.below(200)
            };
            rng.fill(&mut data, len);
            let offset = match rng.below(4) {
                0 => u64::MAX - len as u64,
                _ => rng.u64_edgy().min(u64::MAX - len as u64),
            };
            GuestFrame::Output {
                stream: if rng.one_in(2) {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                offset,
                data: &data,
            }
        }
        4 => GuestFrame::Exit {
            status: if rng.one_in(2) {
                ExitStatus::Code(rng.byte())
            } else {
                ExitStatus::Signal(1 + rng.below(64) as u8)
            },
            stdout_len: rng.u64_edgy(),
            stderr_len: rng.u64_edgy(),
        },
        5 => {
            text = if rng.one_in(200) {
                rng.text(MAX_REASON - 8, MAX_REASON)
            } else {
                rng.text(1, 100)
            };
            GuestFrame::Fail { reason: &text }
        }
        _ => GuestFrame::Heartbeat {
            uptime_ms: rng.u64_edgy(),
        },
    };
    let start = out.len();
    out.resize(start + frame.encoded_len(), 0);
    let n = frame
        .encode(&mut out[start..])
        .expect("a valid frame encodes");
    assert_eq!(start + n, out.len());
}

/// Appends one random host frame to `out`.
fn host_frame(rng: &mut Rng, out: &mut Vec<u8>) {
    let frame = match rng.below(4) {
        0 => HostFrame::Attach {
            stdout_offset: rng.u64_edgy(),
            stderr_offset: rng.u64_edgy(),
        },
        1 => HostFrame::Ack {
            stdout_offset: rng.u64_edgy(),
            stderr_offset: rng.u64_edgy(),
        },
        2 => HostFrame::Cancel {
            grace_ms: rng.u64_edgy() as u32,
        },
        _ => HostFrame::Done,
    };
    let mut buf = [0; HostFrame::MAX_LEN];
    let n = frame.encode(&mut buf).expect("a host frame encodes");
    out.extend_from_slice(&buf[..n]);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dir {
    Guest,
    Host,
}

/// A valid sequence of 1 to 6 frames of one direction, and where each starts.
fn sequence(rng: &mut Rng, dir: Dir) -> (Vec<u8>, Vec<usize>) {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    for _ in 0..1 + rng.below(6) {
        starts.push(out.len());
        match dir {
            Dir::Guest => guest_frame(rng, &mut out),
            Dir::Host => host_frame(rng, &mut out),
        }
    }
    (out, starts)
}

/// Lengths that sit on the decoders' edges.
fn edgy_len(rng: &mut Rng, old: u32) -> u32 {
    let limits = [0, 1, 2, 5, 9, 17, 18, 19, 23, 87, 4097, 65545, 65546];
    match rng.below(6) {
        0 => limits[rng.below(limits.len())],
        1 => old.wrapping_add(1),
        2 => old.wrapping_sub(1),
        3 => u32::MAX - rng.below(2) as u32,
        4 => old ^ (1 << rng.below(32)),
        _ => rng.next() as u32,
    }
}

/// Applies 1 to 4 random mutations to a valid sequence.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, starts: &[usize], dir: Dir) {
    for _ in 0..1 + rng.below(4) {
        let len = input.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                let values = [0, 0xff, 0x80, 0x7f, 0x01, 0x81, 0x84, 0xc0, 0xed];
                input[i] = values[rng.below(values.len())];
            }
            2 => input.truncate(rng.below(len + 1)),
            3 => {
                let start = starts[rng.below(starts.len())];
                if start + 4 <= input.len() {
                    let old = u32::from_le_bytes(input[start..start + 4].try_into().unwrap());
                    let new = edgy_len(rng, old);
                    input[start..start + 4].copy_from_slice(&new.to_le_bytes());
                }
            }
            4 => {
                let other_dir = if rng.one_in(4) { Dir::Host } else { dir };
                let (other, _) = sequence(rng, other_dir);
                input.truncate(rng.below(len + 1));
                input.extend_from_slice(&other[rng.below(other.len() + 1)..]);
            }
            5 => {
                let at = rng.below(len + 1);
                let mut extra = Vec::new();
                let n = 1 + rng.below(16);
                rng.fill(&mut extra, n);
                input.splice(at..at, extra);
            }
            6 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                input.drain(at..end);
            }
            _ if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(64)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(input.len() + 1);
                input.splice(to..to, copy);
            }
            _ => {}
        }
    }
}

/// How an input was made.
#[derive(Clone, Copy)]
enum Origin {
    Random,
    Valid(Dir),
    Mutated,
}

fn generate(rng: &mut Rng) -> (Vec<u8>, Origin) {
    match rng.below(10) {
        0..=2 => {
            let len = if rng.one_in(1000) {
                rng.below(70 * 1024 + 1)
            } else {
                rng.below(300)
            };
            let mut input = Vec::with_capacity(len);
            rng.fill(&mut input, len);
            (input, Origin::Random)
        }
        3..=5 => {
            let dir = if rng.one_in(3) { Dir::Host } else { Dir::Guest };
            (sequence(rng, dir).0, Origin::Valid(dir))
        }
        _ => {
            let dir = if rng.one_in(3) { Dir::Host } else { Dir::Guest };
            let (mut input, starts) = sequence(rng, dir);
            mutate(rng, &mut input, &starts, dir);
            (input, Origin::Mutated)
        }
    }
}

/// The result of decoding a whole input: the lengths of the frames, in
/// order, and the error, or how many bytes were left over.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<usize>,
    end: Result<usize, DecodeError>,
}

/// One decode call on `buf`, with the per-call properties checked. Returns
/// the length of the frame at the front, as `decode_*` does.
fn step(dir: Dir, buf: &[u8], scratch: &mut [u8]) -> Result<Option<usize>, DecodeError> {
    let (result, max) = match dir {
        Dir::Guest => (
            decode_guest(buf).map(|r| {
                r.map(|(frame, n)| {
                    assert_eq!(frame.encoded_len(), n, "{frame:?}");
                    assert_eq!(frame.encode(scratch), Ok(n), "{frame:?}");
                    n
                })
            }),
            MAX_FRAME,
        ),
        Dir::Host => (
            decode_host(buf).map(|r| {
                r.map(|(frame, n)| {
                    assert_eq!(frame.encoded_len(), n, "{frame:?}");
                    assert_eq!(frame.encode(scratch), Ok(n), "{frame:?}");
                    n
                })
            }),
            HostFrame::MAX_LEN,
        ),
    };
    match result {
        Ok(Some(n)) => {
            assert!((HEADER_LEN..=buf.len()).contains(&n), "frame of {n} bytes");
            assert_eq!(scratch[..n], buf[..n], "a frame re-encodes to its bytes");
        }
        Ok(None) => {
            assert!(buf.len() < max, "Ok(None) with {} bytes", buf.len());
            if buf.len() >= HEADER_LEN {
                let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
                assert!(buf.len() < 4 + len, "Ok(None) with the whole frame there");
            }
        }
        Err(_) => {}
    }
    result
}

/// Decodes the whole input at once, frame after frame.
fn all_at_once(dir: Dir, input: &[u8], scratch: &mut [u8]) -> Outcome {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        match step(dir, &input[at..], scratch) {
            Ok(Some(n)) => {
                frames.push(n);
                at += n;
            }
            Ok(None) => {
                return Outcome {
                    frames,
                    end: Ok(input.len() - at),
                }
            }
            Err(e) => {
                return Outcome {
                    frames,
                    end: Err(e),
                }
            }
        }
    }
}

/// Decodes the input as it arrives in random chunks, as a reader of the
/// stream does: append, decode until more is needed, consume.
fn in_chunks(dir: Dir, input: &[u8], rng: &mut Rng, scratch: &mut [u8]) -> Outcome {
    let max_chunk = if input.len() > 1024 { 8192 } else { 64 };
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    loop {
        let chunk = (1 + rng.below(max_chunk)).min(input.len() - fed);
        buf.extend_from_slice(&input[fed..fed + chunk]);
        fed += chunk;
        let mut used = 0;
        loop {
            match step(dir, &buf[used..], scratch) {
                Ok(Some(n)) => {
                    frames.push(n);
                    used += n;
                }
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        end: Err(e),
                    }
                }
            }
        }
        buf.drain(..used);
        if fed == input.len() {
            return Outcome {
                frames,
                end: Ok(buf.len()),
            };
        }
    }
}

#[derive(Default)]
struct Stats {
    random: AtomicU64,
    valid: AtomicU64,
    mutated: AtomicU64,
    frames: AtomicU64,
    errors: [AtomicU64; 3],
    incomplete: AtomicU64,
}

fn check(input: &[u8], origin: Origin, rng: &mut Rng, scratch: &mut [u8], stats: &Stats) {
    for dir in [Dir::Guest, Dir::Host] {
        let whole = all_at_once(dir, input, scratch);
        let chunked = in_chunks(dir, input, rng, scratch);
        assert_eq!(whole, chunked, "{dir:?}: chunking changed the outcome");
        if let Origin::Valid(valid) = origin {
            if valid == dir {
                assert_eq!(whole.end, Ok(0), "{dir:?}: a valid sequence");
                assert_eq!(whole.frames.iter().sum::<usize>(), input.len());
            } else {
                assert!(whole.frames.is_empty() && whole.end.is_err(), "{dir:?}");
            }
        }
        stats
            .frames
            .fetch_add(whole.frames.len() as u64, Ordering::Relaxed);
        let counter = match whole.end {
            Ok(0) => None,
            Ok(_) => Some(&stats.incomplete),
            Err(DecodeError::BadLength { .. }) => Some(&stats.errors[0]),
            Err(DecodeError::UnknownKind(_)) => Some(&stats.errors[1]),
            Err(DecodeError::BadBody { .. }) => Some(&stats.errors[2]),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
    let counter = match origin {
        Origin::Random => &stats.random,
        Origin::Valid(_) => &stats.valid,
        Origin::Mutated => &stats.mutated,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => {
            let v = v.trim().replace('_', "");
            let parsed = match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => v.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        }
        Err(_) => default,
    }
}

fn hex_head(input: &[u8]) -> String {
    let head: String = input.iter().take(256).map(|b| format!("{b:02x}")).collect();
    if input.len() > 256 {
        format!("{head}... ({} bytes)", input.len())
    } else {
        head
    }
}

#[test]
fn fuzz() {
    let inputs = env_u64("FCEXEC_FUZZ_INPUTS", DEFAULT_INPUTS);
    let seed = env_u64("FCEXEC_FUZZ_SEED", DEFAULT_SEED);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as u64;
    let stats = Stats::default();
    std::thread::scope(|s| {
        for t in 0..threads {
            let stats = &stats;
            s.spawn(move || {
                let mut scratch = vec![0; MAX_FRAME];
                let mut i = t;
                while i < inputs {
                    let mut rng = Rng(seed ^ i.wrapping_mul(0xd1b5_4a32_d192_ed03));
                    rng.next();
                    let (input, origin) = generate(&mut rng);
                    let run = catch_unwind(AssertUnwindSafe(|| {
                        check(&input, origin, &mut rng, &mut scratch, stats)
                    }));
                    if let Err(panic) = run {
                        eprintln!("fuzz input #{i} failed (seed {seed}): {}", hex_head(&input));
                        resume_unwind(panic);
                    }
                    i += threads;
                }
            });
        }
    });
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "inputs: {} random, {} valid, {} mutated; decoded {} frames; ends (guest and host \
         decoders): {} BadLength, {} UnknownKind, {} BadBody, {} incomplete",
        n(&stats.random),
        n(&stats.valid),
        n(&stats.mutated),
        n(&stats.frames),
        n(&stats.errors[0]),
        n(&stats.errors[1]),
        n(&stats.errors[2]),
        n(&stats.incomplete),
    );
    let done = n(&stats.random) + n(&stats.valid) + n(&stats.mutated);
    assert_eq!(done, inputs);
    eprintln!("fuzzed {done} inputs, seed {seed}");
}
