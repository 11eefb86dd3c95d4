//! Output the workload wrote that the host has not acknowledged yet (protocol
//! 2), kept so that it can be sent again after a reconnect.
//!
//! Nothing is copied: the test guest's output is either text of the job
//! (decoded once into memory that never changes) or the bulk pattern, which
//! any stretch of can be read from [`PATTERN`]. So the retained output is a
//! ring of segments, in the order they were written (stdout and stderr
//! interleaved), each saying which stream offsets it covers and where its
//! bytes are. A pattern write that continues the previous segment extends it.
//! Segments are dropped once the host has acknowledged all of their bytes.

use fcexec_guest_protocol::{Stream, MAX_DATA};

use crate::Global;

/// Unacknowledged bytes (both streams together) at which writers must wait.
pub const WINDOW: u64 = 1 << 20;
/// The bulk pattern's period: byte `i` of a pattern write is `i % 251`.
pub const MODULUS: u64 = 251;
/// The most segments retained at once.
const MAX_SEGMENTS: usize = 1024;

/// `MAX_DATA` bytes of the pattern from every phase: byte `i` is `i % 251`.
static PATTERN: Global<[u8; MAX_DATA + MODULUS as usize]> =
    Global::new([0; MAX_DATA + MODULUS as usize]);

/// Fills in [`PATTERN`]; call once, before anything is retained.
pub fn init() {
    // SAFETY: called once at start, before any slice of the pattern exists.
    let p = unsafe { &mut *PATTERN.get() };
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u64 % MODULUS) as u8;
    }
}

/// `len` (at most `MAX_DATA`) bytes of the pattern starting at phase `phase`.
fn pattern(phase: u64, len: usize) -> &'static [u8] {
    let start = (phase % MODULUS) as usize;
    // SAFETY: the pattern is written once by `init` and never again.
    let p: &'static [u8; MAX_DATA + MODULUS as usize] = unsafe { &*PATTERN.get() };
    &p[start..start + len.min(MAX_DATA)]
}

/// Where a segment's bytes are.
#[derive(Clone, Copy)]
pub enum Source {
    /// The bulk pattern, from this phase on (byte `k` is `(phase + k) % 251`).
    Pattern(u64),
    /// These bytes, which never change.
    Text(&'static [u8]),
}

#[derive(Clone, Copy)]
struct Segment {
    stream: Stream,
    start: u64,
    len: u64,
    source: Source,
}

/// The retained output and the two streams' counters.
pub struct Retained {
    segments: [Segment; MAX_SEGMENTS],
    head: usize,
    count: usize,
    written: [u64; 2],
    acked: [u64; 2],
}

impl Retained {
    /// Nothing written yet.
    pub const fn new() -> Self {
        Retained {
            segments: [Segment {
                stream: Stream::Stdout,
                start: 0,
                len: 0,
                source: Source::Pattern(0),
            }; MAX_SEGMENTS],
            head: 0,
            count: 0,
            written: [0; 2],
            acked: [0; 2],
        }
    }

    /// Total bytes ever written to `stream`.
    pub fn written(&self, stream: Stream) -> u64 {
        self.written[stream.index()]
    }

    /// True when a writer may write now: less than [`WINDOW`] unacknowledged
    /// and a free segment.
    pub fn has_room(&self) -> bool {
        let unacked: u64 = (0..2).map(|i| self.written[i] - self.acked[i]).sum();
        unacked < WINDOW && self.count < MAX_SEGMENTS
    }

    /// Retains `len` bytes written to `stream` from `source` (the caller
    /// checked [`has_room`](Self::has_room)). False when there is no segment free.
    pub fn push(&mut self, stream: Stream, source: Source, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let start = self.written[stream.index()];
        if self.count > 0 {
            let last = &mut self.segments[(self.head + self.count - 1) % MAX_SEGMENTS];
            if let (Source::Pattern(old), Source::Pattern(new)) = (last.source, source) {
                if last.stream == stream && (old + last.len) % MODULUS == new % MODULUS {
                    last.len += len;
                    self.written[stream.index()] += len;
                    return true;
                }
            }
        }
        if self.count == MAX_SEGMENTS {
            return false;
        }
        self.segments[(self.head + self.count) % MAX_SEGMENTS] = Segment {
            stream,
            start,
            len,
            source,
        };
        self.count += 1;
        self.written[stream.index()] += len;
        true
    }

    /// Checks that the host's offsets lie within what is retained (from the
    /// acknowledged offset to the written end of each stream).
    pub fn check(&self, offsets: [u64; 2]) -> Result<(), (Stream, u64, u64, u64)> {
        for stream in Stream::ALL {
            let (i, offset) = (stream.index(), offsets[stream.index()]);
            if offset < self.acked[i] || offset > self.written[i] {
                return Err((stream, offset, self.acked[i], self.written[i]));
            }
        }
        Ok(())
    }

    /// Forgets output up to `offsets` (offsets at or below what was already
    /// acknowledged change nothing); the caller checked that they are not
    /// beyond the written ends.
    pub fn ack(&mut self, offsets: [u64; 2]) {
        for i in 0..2 {
            self.acked[i] = self.acked[i].max(offsets[i].min(self.written[i]));
        }
        while self.count > 0 {
            let s = &self.segments[self.head];
            if s.start + s.len > self.acked[s.stream.index()] {
                break;
            }
            self.head = (self.head + 1) % MAX_SEGMENTS;
            self.count -= 1;
        }
    }

    /// The next output to send, in write order, given the offsets up to which
    /// each stream has been sent: its stream and offset and up to `max` (at
    /// most [`MAX_DATA`]) contiguous bytes of it.
    pub fn next(&self, sent: [u64; 2], max: usize) -> Option<(Stream, u64, &'static [u8])> {
        (0..self.count)
            .map(|k| &self.segments[(self.head + k) % MAX_SEGMENTS])
            .find(|s| s.start + s.len > sent[s.stream.index()])
            .map(|s| {
                let offset = sent[s.stream.index()].max(s.start);
                let skip = offset - s.start;
                let len = (s.len - skip).min(max.min(MAX_DATA) as u64) as usize;
                let bytes = match s.source {
                    Source::Text(text) => &text[skip as usize..skip as usize + len],
                    Source::Pattern(phase) => pattern(phase + skip, len),
                };
                (s.stream, offset, bytes)
            })
    }
}
