//! What the session sends next, and sending it: as much as the peer's
//! credit allows, in as few packets as it takes, with one notification.
//!
//! Before `attach` only the hello goes out. Then, in this order of priority:
//! the rest of an end frame already started, a heartbeat when one is due (not
//! in the middle of raw bytes), raw bytes, retained output in write order
//! (each frame's data read in place, sized to fit the credit), and the end
//! frame once all output is out. Blobs (hello, raw bytes, the end frame) may
//! be split across packets; output frames and heartbeats never are.

use fcexec_guest_protocol::{output_header, GuestFrame, OUTPUT_HEADER_LEN};

use super::{Link, Session, HEARTBEAT_LEN};
use crate::vsock::{self, Part, MAX_PARTS};

/// A piece of a packet: a 13-byte header (output or heartbeat) or bytes in place.
#[derive(Clone, Copy)]
enum Piece {
    Header([u8; OUTPUT_HEADER_LEN]),
    Static(&'static [u8]),
}

impl Piece {
    fn len(&self) -> usize {
        match self {
            Piece::Header(h) => h.len(),
            Piece::Static(b) => b.len(),
        }
    }
}

/// Sends everything that is due and fits the peer's credit, in as few
/// packets and one notification; true when anything was sent.
pub(super) fn pump(s: &mut Session, now: u64) -> bool {
    if !matches!(s.link, Link::Hello | Link::Attached) {
        return false;
    }
    let mut sent_any = false;
    loop {
        let (room, max_parts) = vsock::room();
        let mut pieces = [Piece::Static(&[]); MAX_PARTS];
        let (mut n, mut bytes) = (0, 0);
        while n + 2 <= max_parts && bytes < room {
            let Some((first, second)) = next_piece(s, room - bytes, now) else {
                break;
            };
            for piece in [Some(first), second].into_iter().flatten() {
                pieces[n] = piece;
                bytes += piece.len();
                n += 1;
            }
        }
        if n == 0 {
            break;
        }
        let mut parts = [Part::Static(&[]); MAX_PARTS];
        for (part, piece) in parts.iter_mut().zip(&pieces[..n]) {
            *part = match piece {
                Piece::Header(h) => Part::Copy(h),
                Piece::Static(b) => Part::Static(b),
            };
        }
        if !vsock::send(&parts[..n]) {
            crate::report::fatal(format_args!("vsock: a packet did not fit its room"));
        }
        sent_any = true;
    }
    vsock::kick();
    sent_any
}

/// The next piece(s) to send, at most `room` bytes, advancing the cursors.
fn next_piece(s: &mut Session, room: usize, now: u64) -> Option<(Piece, Option<Piece>)> {
    if s.link == Link::Hello {
        let hello = s.hello?;
        return blob(hello, &mut s.hello_sent, room).map(|p| (p, None));
    }
    if let Some(end) = s.end {
        if s.end_sent > 0 {
            return blob(end, &mut s.end_sent, room).map(|p| (p, None));
        }
    }
    let raw_midway = s
        .raw
        .is_some_and(|r| s.raw_sent > 0 && s.raw_sent < r.len());
    if !s.no_heartbeats
        && s.heartbeat_ns > 0
        && s.end.is_none()
        && !raw_midway
        && now >= s.next_heartbeat
        && room >= HEARTBEAT_LEN
    {
        let mut frame = [0u8; HEARTBEAT_LEN];
        let uptime_ms = now / 1_000_000;
        GuestFrame::Heartbeat { uptime_ms }
            .encode(&mut frame)
            .ok()?;
        s.next_heartbeat = s.next_heartbeat.saturating_add(s.heartbeat_ns);
        if s.next_heartbeat <= now {
            s.next_heartbeat = now.saturating_add(s.heartbeat_ns);
        }
        return Some((Piece::Header(frame), None));
    }
    if let Some(raw) = s.raw {
        if s.raw_sent < raw.len() {
            return blob(raw, &mut s.raw_sent, room).map(|p| (p, None));
        }
    }
    if room > OUTPUT_HEADER_LEN {
        if let Some((stream, offset, data)) = s.out.next(s.sent, room - OUTPUT_HEADER_LEN) {
            let header = output_header(stream, offset, data.len()).ok()?;
            s.sent[stream.index()] += data.len() as u64;
            return Some((Piece::Header(header), Some(Piece::Static(data))));
        }
    }
    match s.end {
        Some(end) if s.all_sent() && s.end_sent == 0 => {
            blob(end, &mut s.end_sent, room).map(|p| (p, None))
        }
        _ => None,
    }
}

/// The next at most `room` bytes of `bytes` from `*sent` on, if any.
fn blob(bytes: &'static [u8], sent: &mut usize, room: usize) -> Option<Piece> {
    let rest = bytes.get(*sent..).filter(|r| !r.is_empty())?;
    let n = rest.len().min(room);
    *sent += n;
    Some(Piece::Static(&rest[..n]))
}
