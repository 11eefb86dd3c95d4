//! The vsock connection's state and flow control, apart from the queues:
//! what a received packet does, how much may be sent, which control packets
//! are due.
//!
//! Credit: a data packet never carries more than the peer's credit,
//! `buf_alloc - (sent - fwd_cnt)` from the peer's latest header (Firecracker's
//! `buf_alloc` is 64 KiB, and it sends `CREDIT_UPDATE` when our view of its
//! credit drops below 4 KiB). We advertise `STREAM_BUF` and what the reader
//! has consumed in every header, and send `CREDIT_UPDATE` when the reader has
//! consumed half of it since we last said so, or when asked. `RST` or
//! `SHUTDOWN` from the peer closes the connection; a `SHUTDOWN` is answered
//! with `RST`, so that Firecracker forgets the connection at once.

use super::header::*;
use super::HOST_CID;

/// Bytes of the receive stream buffer, advertised as `buf_alloc`.
const STREAM_BUF: usize = 16 * 1024;
/// The first local port; each connection takes the next one.
const FIRST_PORT: u32 = 49152;
/// How long the peer may take to answer a connection request.
const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;

/// The connection's state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No connection (never opened, refused, reset or shut down by the peer).
    Closed,
    /// Waiting for the peer's answer to our request.
    Connecting,
    /// Data may flow.
    Connected,
}

/// The connection (one at a time).
pub struct Conn {
    pub state: State,
    local_port: u32,
    peer_port: u32,
    /// Connections opened so far.
    opened: u32,
    deadline: Option<u64>,
    /// Payload bytes sent, and the peer's buffer and consumed count.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    credit_requested: bool,
    /// Payload bytes the reader consumed, and as last told to the peer.
    fwd_cnt: u32,
    fwd_cnt_told: u32,
    /// Received payload the reader has not consumed.
    stream: [u8; STREAM_BUF],
    stream_len: usize,
    /// Control packets due.
    request_due: bool,
    credit_update_due: bool,
    credit_request_due: bool,
    /// Reset this (local, peer) port pair.
    rst_due: Option<(u32, u32)>,
}

impl Conn {
    /// No connection yet.
    pub const NEW: Conn = Conn {
        state: State::Closed,
        local_port: 0,
        peer_port: 0,
        opened: 0,
        deadline: None,
        tx_cnt: 0,
        peer_buf_alloc: 0,
        peer_fwd_cnt: 0,
        credit_requested: false,
        fwd_cnt: 0,
        fwd_cnt_told: 0,
        stream: [0; STREAM_BUF],
        stream_len: 0,
        request_due: false,
        credit_update_due: false,
        credit_request_due: false,
        rst_due: None,
    };

    /// Starts a new connection to the host's `port` (resetting the current
    /// one, if any): a request is due.
    pub fn open(&mut self, port: u32, now: Option<u64>) {
        if self.state != State::Closed {
            self.rst_due = Some((self.local_port, self.peer_port));
        }
        self.state = State::Connecting;
        self.local_port = FIRST_PORT + self.opened % 16384;
        self.peer_port = port;
        self.opened = self.opened.wrapping_add(1);
        self.deadline = now.map(|t| t.saturating_add(CONNECT_TIMEOUT_NS));
        (self.tx_cnt, self.peer_buf_alloc, self.peer_fwd_cnt) = (0, 0, 0);
        (self.fwd_cnt, self.fwd_cnt_told, self.stream_len) = (0, 0, 0);
        self.credit_requested = false;
        self.request_due = true;
    }

    /// Gives up on a request the peer has not answered in time; true if so.
    pub fn check_timeout(&mut self, now: Option<u64>) -> bool {
        let late = self.deadline.zip(now).is_some_and(|(end, now)| now > end);
        if self.state == State::Connecting && late {
            self.rst_due = Some((self.local_port, self.peer_port));
            self.state = State::Closed;
            return true;
        }
        false
    }

    /// Payload bytes the peer can take now (0 unless connected).
    pub fn credit(&self) -> usize {
        if self.state != State::Connected {
            return 0;
        }
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight) as usize
    }

    /// Asks the peer for its credit (once, until any packet from it arrives).
    pub fn request_credit(&mut self) {
        if self.state == State::Connected && !self.credit_requested {
            self.credit_requested = true;
            self.credit_request_due = true;
        }
    }

    /// True when the peer has consumed every byte sent on this connection.
    pub fn all_consumed(&self) -> bool {
        self.state == State::Connected && self.tx_cnt == self.peer_fwd_cnt
    }

    /// A header from guest `cid` on this connection, with our credit; the
    /// `len` payload bytes of an `OP_RW` count as sent.
    pub fn header(&mut self, cid: u64, op: u16, len: u32) -> Header {
        self.fwd_cnt_told = self.fwd_cnt;
        if op == OP_RW {
            self.tx_cnt = self.tx_cnt.wrapping_add(len);
        }
        Header {
            src_cid: cid,
            dst_cid: HOST_CID,
            src_port: self.local_port,
            dst_port: self.peer_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: STREAM_BUF as u32,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Acts on a packet received by guest `cid`.
    pub fn receive(&mut self, cid: u64, h: &Header, data: &[u8]) {
        if h.dst_cid != cid || h.src_cid != HOST_CID || h.kind != TYPE_STREAM {
            return;
        }
        let ours = self.state != State::Closed
            && h.src_port == self.peer_port
            && h.dst_port == self.local_port;
        if !ours {
            if h.op != OP_RST {
                self.rst_due = Some((h.dst_port, h.src_port));
            }
            return;
        }
        self.peer_buf_alloc = h.buf_alloc;
        self.peer_fwd_cnt = h.fwd_cnt;
        self.credit_requested = false;
        match h.op {
            OP_RESPONSE if self.state == State::Connecting => {
                self.state = State::Connected;
                self.deadline = None;
            }
            OP_RST => self.state = State::Closed,
            OP_SHUTDOWN => self.reset(),
            OP_RW if self.state == State::Connected => {
                let end = self.stream_len + data.len();
                match self.stream.get_mut(self.stream_len..end) {
                    Some(room) => {
                        room.copy_from_slice(data);
                        self.stream_len = end;
                    }
                    None => self.reset(), // the peer ignored our credit
                }
            }
            OP_CREDIT_REQUEST => self.credit_update_due = true,
            _ => {}
        }
    }

    /// Closes the connection and resets the peer's end.
    fn reset(&mut self) {
        self.rst_due = Some((self.local_port, self.peer_port));
        self.state = State::Closed;
    }

    /// Moves received bytes into `out`; returns how many. Consuming them
    /// frees credit for the peer.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.stream_len);
        out[..n].copy_from_slice(&self.stream[..n]);
        self.stream.copy_within(n..self.stream_len, 0);
        self.stream_len -= n;
        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
        if self.fwd_cnt.wrapping_sub(self.fwd_cnt_told) as usize >= STREAM_BUF / 2 {
            self.credit_update_due = true;
        }
        n
    }

    /// Takes the next control packet due: its operation and, for a reset,
    /// the (local, peer) ports (else this connection's).
    pub fn take_control(&mut self) -> Option<(u16, Option<(u32, u32)>)> {
        if let Some(ports) = self.rst_due.take() {
            return Some((OP_RST, Some(ports)));
        }
        if core::mem::take(&mut self.request_due) {
            return Some((OP_REQUEST, None));
        }
        let connected = self.state == State::Connected;
        if core::mem::take(&mut self.credit_update_due) && connected {
            return Some((OP_CREDIT_UPDATE, None));
        }
        if core::mem::take(&mut self.credit_request_due) && connected {
            return Some((OP_CREDIT_REQUEST, None));
        }
        None
    }
}
