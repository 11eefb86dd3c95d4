//! A polling virtio-vsock driver (virtio device 19, over `mmio`) for one
//! stream connection at a time from the guest to the host (CID 2).
//!
//! Queues (`vring`): rx (0) keeps `RX_SIZE` 4 KiB buffers posted, reposted as
//! soon as they are read; tx (1) has 256 descriptors, handed out and taken
//! back in ring order (Firecracker uses tx chains in order); event (2) has a
//! few buffers for `TRANSPORT_RESET`. Interrupts are never used: [`poll`]
//! reads the used rings.
//!
//! Sending is zero copy: a packet is a chain of the 44-byte vsock header (in
//! the head descriptor's scratch slot) and the caller's [`Part`]s, small ones
//! copied into their descriptor's slot, big ones read in place. [`send`] only
//! makes a packet available; [`kick`] notifies the device once for a whole
//! batch (one VM exit).
//!
//! Flow control follows virtio-vsock: a data packet never carries more than
//! the peer's credit (`buf_alloc - (sent - fwd_cnt)` from its latest header;
//! Firecracker's is 64 KiB, updated when our view of it drops below 4 KiB).
//! Our headers advertise `STREAM_BUF` and our consumed count; we send
//! `CREDIT_UPDATE` when we have consumed half of it since we last said so, or
//! when asked. `RST` or `SHUTDOWN` from the peer closes the connection (a
//! `SHUTDOWN` is answered with `RST`, so that Firecracker forgets it at once).

use crate::mmio::{self, Desc, DESC_NEXT, DESC_WRITE};
use crate::vring::{Ring, RingPtr};
use crate::{clock, Global};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// The most payload bytes in one packet (Firecracker's limit too).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The most parts one packet carries (its chain is one descriptor longer).
pub const MAX_PARTS: usize = 48;
/// The longest [`Part::Copy`].
pub const COPY_MAX: usize = SLOT;

const HEADER_LEN: usize = 44;
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const EVENT_QUEUE: u32 = 2;
const RX_SIZE: usize = 64;
const TX_SIZE: usize = 256;
const EVENT_SIZE: usize = 4;
/// Bytes of one rx buffer (header and data).
const RX_BUF: usize = 4096;
/// Bytes of a tx descriptor's scratch slot.
const SLOT: usize = 64;
/// Tx descriptors data packets leave free, for control packets.
const CONTROL_RESERVE: u16 = 4;
/// Bytes of the receive stream buffer, advertised as `buf_alloc`.
const STREAM_BUF: usize = 16 * 1024;
/// The first local port; each connection takes the next one.
const FIRST_PORT: u32 = 49152;
/// How long the peer may take to answer a connection request.
const CONNECT_TIMEOUT_NS: u64 = 2_000_000_000;

const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;

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

/// A piece of a data packet's payload.
#[derive(Clone, Copy)]
pub enum Part<'a> {
    /// Bytes copied into the driver's memory: at most [`COPY_MAX`] of them.
    Copy(&'a [u8]),
    /// Bytes the device reads in place, so they must never change.
    Static(&'static [u8]),
}

impl Part<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Part::Copy(b) => b,
            Part::Static(b) => b,
        }
    }
}

struct Rings {
    rx: Ring<RX_SIZE>,
    tx: Ring<TX_SIZE>,
    event: Ring<EVENT_SIZE>,
}

static RINGS: Global<Rings> = Global::new(Rings {
    rx: Ring::EMPTY,
    tx: Ring::EMPTY,
    event: Ring::EMPTY,
});
/// The rx buffers, one per rx descriptor; the event buffers likewise.
static RX_BUFS: Global<[[u8; RX_BUF]; RX_SIZE]> = Global::new([[0; RX_BUF]; RX_SIZE]);
static EVENTS: Global<[[u8; 4]; EVENT_SIZE]> = Global::new([[0; 4]; EVENT_SIZE]);
/// The tx scratch slots, one per tx descriptor.
static SLOTS: Global<[[u8; SLOT]; TX_SIZE]> = Global::new([[0; SLOT]; TX_SIZE]);

/// A queue's driver-side indices (free-running, modulo 2^16).
#[derive(Clone, Copy)]
struct Indices {
    avail: u16,
    used: u16,
}

/// Control packets waiting for a free descriptor.
#[derive(Clone, Copy)]
struct Pending {
    request: bool,
    credit_update: bool,
    credit_request: bool,
    /// Reset this (local, peer) port pair.
    rst: Option<(u32, u32)>,
}

/// The connection.
struct Conn {
    state: State,
    local_port: u32,
    peer_port: u32,
    /// Connections opened so far (each takes the next local port).
    opened: u32,
    deadline: Option<u64>,
    /// Payload bytes sent, and the peer's buffer and consumed count.
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    credit_requested: bool,
    /// Payload bytes consumed by the reader, and as last told to the peer.
    fwd_cnt: u32,
    fwd_cnt_told: u32,
    stream: [u8; STREAM_BUF],
    stream_len: usize,
}

struct Dev {
    base: usize,
    ready: bool,
    cid: u64,
    rx: Indices,
    event: Indices,
    tx: Indices,
    tx_kicked: u16,
    /// Tx descriptors are handed out from `tx_next`; `tx_in_use` are out.
    tx_next: u16,
    tx_in_use: u16,
    /// Descriptor count of each packet, by avail position.
    tx_counts: [u16; TX_SIZE],
    pending: Pending,
    conn: Conn,
}

static DEV: Global<Dev> = Global::new(Dev {
    base: 0,
    ready: false,
    cid: 0,
    rx: Indices { avail: 0, used: 0 },
    event: Indices { avail: 0, used: 0 },
    tx: Indices { avail: 0, used: 0 },
    tx_kicked: 0,
    tx_next: 0,
    tx_in_use: 0,
    tx_counts: [0; TX_SIZE],
    pending: Pending {
        request: false,
        credit_update: false,
        credit_request: false,
        rst: None,
    },
    conn: Conn {
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
    },
});

fn dev() -> &'static mut Dev {
    // SAFETY: only this module's public functions take this reference, once
    // each, and they never call one another.
    unsafe { &mut *DEV.get() }
}

fn rx_ring() -> RingPtr<RX_SIZE> {
    // SAFETY: only the field's address is taken.
    RingPtr(unsafe { core::ptr::addr_of_mut!((*RINGS.get()).rx) })
}

fn tx_ring() -> RingPtr<TX_SIZE> {
    // SAFETY: as in `rx_ring`.
    RingPtr(unsafe { core::ptr::addr_of_mut!((*RINGS.get()).tx) })
}

fn event_ring() -> RingPtr<EVENT_SIZE> {
    // SAFETY: as in `rx_ring`.
    RingPtr(unsafe { core::ptr::addr_of_mut!((*RINGS.get()).event) })
}

/// Copies `bytes` (at most `SLOT`) into tx descriptor `index`'s scratch slot,
/// which the device must not own; returns the slot's address.
fn fill_slot(index: u16, bytes: &[u8]) -> u64 {
    // SAFETY: in bounds (`index` < TX_SIZE); the slot is the driver's, and
    // nothing else references it.
    let slot = unsafe { &mut (*SLOTS.get())[usize::from(index) % TX_SIZE] };
    slot[..bytes.len()].copy_from_slice(bytes);
    slot.as_ptr() as u64
}

/// The vsock packet header's fields, in wire order.
#[derive(Clone, Copy)]
struct Header {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&self.src_cid.to_le_bytes());
        put(&self.dst_cid.to_le_bytes());
        put(&self.src_port.to_le_bytes());
        put(&self.dst_port.to_le_bytes());
        put(&self.len.to_le_bytes());
        put(&self.kind.to_le_bytes());
        put(&self.op.to_le_bytes());
        put(&self.flags.to_le_bytes());
        put(&self.buf_alloc.to_le_bytes());
        put(&self.fwd_cnt.to_le_bytes());
        out
    }

    fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// Remembers the device at `base` (the first one the probe finds).
pub fn found(base: usize) {
    let d = dev();
    if d.base == 0 {
        d.base = base;
    }
}

/// True when there is a vsock device.
pub fn present() -> bool {
    dev().base != 0
}

/// Initialises the device (once): queues, rx and event buffers, the CID.
pub fn init() -> Result<(), &'static str> {
    let d = dev();
    if d.ready {
        return Ok(());
    }
    if d.base == 0 {
        return Err("no vsock device");
    }
    let b = d.base;
    mmio::negotiate(b)?;
    let writable = |addr: u64, len: usize| Desc {
        addr,
        len: len as u32,
        flags: DESC_WRITE,
        next: 0,
    };
    for i in 0..RX_SIZE as u16 {
        rx_ring().set_desc(i, writable(RX_BUFS.get() as u64 + u64::from(i) * RX_BUF as u64, RX_BUF));
        rx_ring().offer(i, i);
    }
    rx_ring().publish(RX_SIZE as u16);
    for i in 0..EVENT_SIZE as u16 {
        event_ring().set_desc(i, writable(EVENTS.get() as u64 + u64::from(i) * 4, 4));
        event_ring().offer(i, i);
    }
    event_ring().publish(EVENT_SIZE as u16);
    let queues = [
        (RX_QUEUE, RX_SIZE, rx_ring().addresses()),
        (TX_QUEUE, TX_SIZE, tx_ring().addresses()),
        (EVENT_QUEUE, EVENT_SIZE, event_ring().addresses()),
    ];
    for (index, size, (desc, avail, used)) in queues {
        mmio::setup_queue(b, index, size as u16, desc, avail, used)?;
    }
    mmio::driver_ok(b);
    let low = u64::from(mmio::read32(b, mmio::CONFIG));
    let high = u64::from(mmio::read32(b, mmio::CONFIG + 4));
    d.cid = high << 32 | low;
    d.rx.avail = RX_SIZE as u16;
    d.event.avail = EVENT_SIZE as u16;
    d.ready = true;
    Ok(())
}

/// The connection's state.
pub fn state() -> State {
    dev().conn.state
}

/// Opens a new connection to the host's `port` (resetting the current one,
/// if any). The answer arrives through [`poll`].
pub fn connect(port: u32) {
    let d = dev();
    if !d.ready {
        return;
    }
    let c = &mut d.conn;
    if c.state != State::Closed {
        d.pending.rst = Some((c.local_port, c.peer_port));
    }
    c.state = State::Connecting;
    c.local_port = FIRST_PORT + c.opened % 16384;
    c.peer_port = port;
    c.opened = c.opened.wrapping_add(1);
    c.deadline = clock::now_ns().map(|t| t.saturating_add(CONNECT_TIMEOUT_NS));
    (c.tx_cnt, c.peer_buf_alloc, c.peer_fwd_cnt) = (0, 0, 0);
    (c.fwd_cnt, c.fwd_cnt_told, c.stream_len) = (0, 0, 0);
    c.credit_requested = false;
    d.pending.request = true;
    flush_control(d);
    kick_tx(d);
}

/// Processes what the device did: used tx chains, received packets, events,
/// the connect timeout; sends pending control packets. True when anything
/// happened.
pub fn poll() -> bool {
    let d = dev();
    if !d.ready {
        return false;
    }
    let mut progress = reclaim_tx(d);
    progress |= receive(d);
    progress |= receive_events(d);
    let c = &mut d.conn;
    let now = clock::now_ns();
    if c.state == State::Connecting && c.deadline.zip(now).is_some_and(|(end, now)| now > end) {
        d.pending.rst = Some((c.local_port, c.peer_port));
        c.state = State::Closed;
        progress = true;
    }
    flush_control(d);
    kick_tx(d);
    progress
}

/// How much one [`send`] may carry now: payload bytes (the peer's credit, at
/// most [`MAX_PAYLOAD`]) and parts. Zero when not connected.
pub fn room() -> (usize, usize) {
    room_of(dev())
}

fn room_of(d: &Dev) -> (usize, usize) {
    let c = &d.conn;
    if c.state != State::Connected {
        return (0, 0);
    }
    let credit = c.peer_buf_alloc.saturating_sub(c.tx_cnt.wrapping_sub(c.peer_fwd_cnt));
    let parts = free(d).saturating_sub(1 + CONTROL_RESERVE);
    (
        (credit as usize).min(MAX_PAYLOAD),
        usize::from(parts).min(MAX_PARTS),
    )
}

/// Asks the peer for a credit update (once, until any packet from it arrives).
pub fn request_credit() {
    let d = dev();
    if d.conn.state == State::Connected && !d.conn.credit_requested {
        d.conn.credit_requested = true;
        d.pending.credit_request = true;
        flush_control(d);
        kick_tx(d);
    }
}

/// True when the peer has consumed every byte sent on this connection (for
/// Firecracker: written all of it to the host's socket).
pub fn all_consumed() -> bool {
    let c = &dev().conn;
    c.state == State::Connected && c.tx_cnt == c.peer_fwd_cnt
}

/// Makes one data packet of `parts` (back to back) available to the device,
/// without notifying it (see [`kick`]). False, and nothing sent, when it does
/// not fit [`room`], is empty or a [`Part::Copy`] is longer than [`COPY_MAX`].
pub fn send(parts: &[Part]) -> bool {
    let d = dev();
    let (bytes, max_parts) = room_of(d);
    let total: usize = parts.iter().map(|p| p.bytes().len()).sum();
    let copies_fit = parts
        .iter()
        .all(|p| !matches!(p, Part::Copy(b) if b.len() > COPY_MAX));
    if total == 0 || total > bytes || parts.len() > max_parts || !copies_fit {
        return false;
    }
    let head = d.tx_next;
    let header = header(d, OP_RW, total as u32).encode();
    let mut index = head;
    // The descriptors from `tx_next` on and their slots are free.
    let mut desc = Desc {
        addr: fill_slot(index, &header),
        len: HEADER_LEN as u32,
        flags: DESC_NEXT,
        next: 0,
    };
    for part in parts {
        let next = (index + 1) % TX_SIZE as u16;
        tx_ring().set_desc(index, Desc { next, ..desc });
        index = next;
        desc.addr = match part {
            Part::Copy(b) => fill_slot(index, b),
            Part::Static(b) => b.as_ptr() as u64,
        };
        desc.len = part.bytes().len() as u32;
    }
    tx_ring().set_desc(index, Desc { flags: 0, ..desc });
    offer(d, head, parts.len() as u16 + 1);
    d.conn.tx_cnt = d.conn.tx_cnt.wrapping_add(total as u32);
    true
}

/// Notifies the device of every packet made available since the last
/// notification (one VM exit), if any.
pub fn kick() {
    kick_tx(dev());
}

/// Moves received stream bytes into `out`; returns how many. Consuming them
/// frees credit for the peer.
pub fn recv(out: &mut [u8]) -> usize {
    let d = dev();
    let c = &mut d.conn;
    let n = out.len().min(c.stream_len);
    out[..n].copy_from_slice(&c.stream[..n]);
    c.stream.copy_within(n..c.stream_len, 0);
    c.stream_len -= n;
    c.fwd_cnt = c.fwd_cnt.wrapping_add(n as u32);
    if c.fwd_cnt.wrapping_sub(c.fwd_cnt_told) as usize >= STREAM_BUF / 2 {
        d.pending.credit_update = true;
        flush_control(d);
    }
    n
}

/// A header from us on the current connection, with our credit.
fn header(d: &mut Dev, op: u16, len: u32) -> Header {
    let c = &mut d.conn;
    c.fwd_cnt_told = c.fwd_cnt;
    Header {
        src_cid: d.cid,
        dst_cid: HOST_CID,
        src_port: c.local_port,
        dst_port: c.peer_port,
        len,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: STREAM_BUF as u32,
        fwd_cnt: c.fwd_cnt,
    }
}

/// Free tx descriptors.
fn free(d: &Dev) -> u16 {
    TX_SIZE as u16 - d.tx_in_use
}

/// Makes the chain of `count` descriptors at `head` available.
fn offer(d: &mut Dev, head: u16, count: u16) {
    tx_ring().offer(d.tx.avail, head);
    d.tx_counts[usize::from(d.tx.avail) % TX_SIZE] = count;
    d.tx_next = (head + count) % TX_SIZE as u16;
    d.tx_in_use += count;
    d.tx.avail = d.tx.avail.wrapping_add(1);
    tx_ring().publish(d.tx.avail);
}

/// Sends a header-only packet, if a descriptor is free.
fn send_control(d: &mut Dev, op: u16, ports: Option<(u32, u32)>) -> bool {
    if free(d) == 0 {
        return false;
    }
    let mut h = header(d, op, 0);
    if let Some((local, peer)) = ports {
        (h.src_port, h.dst_port) = (local, peer);
    }
    let head = d.tx_next;
    let desc = Desc {
        addr: fill_slot(head, &h.encode()),
        len: HEADER_LEN as u32,
        flags: 0,
        next: 0,
    };
    tx_ring().set_desc(head, desc);
    offer(d, head, 1);
    true
}

/// Sends the control packets that are due (while descriptors last).
fn flush_control(d: &mut Dev) {
    if let Some(ports) = d.pending.rst {
        if !send_control(d, OP_RST, Some(ports)) {
            return;
        }
        d.pending.rst = None;
    }
    if d.pending.request {
        if !send_control(d, OP_REQUEST, None) {
            return;
        }
        d.pending.request = false;
    }
    if d.conn.state != State::Connected {
        d.pending.credit_update = false;
        d.pending.credit_request = false;
        return;
    }
    if d.pending.credit_update {
        if !send_control(d, OP_CREDIT_UPDATE, None) {
            return;
        }
        d.pending.credit_update = false;
    }
    if d.pending.credit_request && send_control(d, OP_CREDIT_REQUEST, None) {
        d.pending.credit_request = false;
    }
}

fn kick_tx(d: &mut Dev) {
    if d.tx.avail != d.tx_kicked {
        mmio::notify(d.base, TX_QUEUE);
        d.tx_kicked = d.tx.avail;
    }
}

/// Takes back the descriptors of packets the device has used.
fn reclaim_tx(d: &mut Dev) -> bool {
    let used = tx_ring().used_idx();
    let progress = used != d.tx.used;
    while d.tx.used != used && d.tx.used != d.tx.avail {
        d.tx_in_use -= d.tx_counts[usize::from(d.tx.used) % TX_SIZE];
        d.tx.used = d.tx.used.wrapping_add(1);
    }
    progress
}

/// Handles the packets in used rx buffers and posts the buffers again.
fn receive(d: &mut Dev) -> bool {
    let ring = rx_ring();
    let used = ring.used_idx();
    if used == d.rx.used {
        return false;
    }
    // A device that found no buffer waits for a notification.
    let starved = used == d.rx.avail;
    while d.rx.used != used {
        let (id, len) = ring.used(d.rx.used);
        // SAFETY: the device has used this buffer and does not touch it
        // until it is offered again below; nothing else references it.
        let buf = unsafe { &(*RX_BUFS.get())[usize::from(id)] };
        let len = (len as usize).min(RX_BUF);
        if len >= HEADER_LEN {
            let (h, data) = buf.split_at(HEADER_LEN);
            let h = Header::decode(h.try_into().unwrap_or(&[0; HEADER_LEN]));
            let data_len = (h.len as usize).min(len - HEADER_LEN);
            handle(d, &h, &data[..data_len]);
        }
        ring.offer(d.rx.avail, id);
        d.rx.avail = d.rx.avail.wrapping_add(1);
        d.rx.used = d.rx.used.wrapping_add(1);
    }
    ring.publish(d.rx.avail);
    if starved {
        mmio::notify(d.base, RX_QUEUE);
    }
    true
}

/// Acts on one received packet.
fn handle(d: &mut Dev, h: &Header, data: &[u8]) {
    if h.dst_cid != d.cid || h.src_cid != HOST_CID || h.kind != TYPE_STREAM {
        return;
    }
    let c = &mut d.conn;
    let ours = c.state != State::Closed && h.src_port == c.peer_port && h.dst_port == c.local_port;
    if !ours {
        if h.op != OP_RST {
            d.pending.rst = Some((h.dst_port, h.src_port));
        }
        return;
    }
    c.peer_buf_alloc = h.buf_alloc;
    c.peer_fwd_cnt = h.fwd_cnt;
    c.credit_requested = false;
    match h.op {
        OP_RESPONSE if c.state == State::Connecting => {
            c.state = State::Connected;
            c.deadline = None;
        }
        OP_RST => c.state = State::Closed,
        OP_SHUTDOWN => {
            d.pending.rst = Some((c.local_port, c.peer_port));
            c.state = State::Closed;
        }
        OP_RW if c.state == State::Connected => {
            let Some(room) = c.stream.get_mut(c.stream_len..c.stream_len + data.len()) else {
                // The peer ignored our credit: give up on the connection.
                d.pending.rst = Some((c.local_port, c.peer_port));
                c.state = State::Closed;
                return;
            };
            room.copy_from_slice(data);
            c.stream_len += data.len();
        }
        OP_CREDIT_REQUEST => d.pending.credit_update = true,
        _ => {}
    }
}

/// Handles used event buffers: a transport reset drops the connection.
fn receive_events(d: &mut Dev) -> bool {
    let ring = event_ring();
    let used = ring.used_idx();
    if used == d.event.used {
        return false;
    }
    while d.event.used != used {
        // The only event is VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the device
        // has forgotten every connection.
        let (id, _) = ring.used(d.event.used);
        d.conn.state = State::Closed;
        ring.offer(d.event.avail, id);
        d.event.avail = d.event.avail.wrapping_add(1);
        d.event.used = d.event.used.wrapping_add(1);
    }
    ring.publish(d.event.avail);
    // The device holds rx back until the driver acknowledges the event.
    mmio::notify(d.base, EVENT_QUEUE);
    true
}
