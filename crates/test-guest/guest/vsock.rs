//! A polling virtio-vsock driver (virtio device 19, over `mmio`) for one
//! stream connection at a time from the guest to the host (CID 2); the
//! connection's state and flow control are in `conn`, the packet header in
//! `header`.
//!
//! Queues (`vring`): rx (0) has `RX_SIZE` 4 KiB buffers, posted again in
//! batches once read; tx (1) has 256 descriptors, handed out and taken
//! back in ring order (Firecracker uses tx chains in order); event (2) has a
//! few buffers for `TRANSPORT_RESET`. Interrupts are never used: [`poll`]
//! reads the used rings.
//!
//! Sending is zero copy: a packet is a chain of the 44-byte vsock header (in
//! the head descriptor's scratch slot) and the caller's [`Part`]s, small ones
//! copied into their descriptor's slot, big ones read in place. [`send`] only
//! makes a packet available; [`kick`] notifies the device once for a whole
//! batch (one VM exit).

mod conn;
mod header;

use conn::Conn;
pub use conn::State;
use header::{Header, HEADER_LEN, OP_RW};

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

struct Dev {
    base: usize,
    ready: bool,
    cid: u64,
    rx: Indices,
    event: Indices,
    tx: Indices,
    /// Rx buffers before this used position have been offered again.
    rx_recycled: u16,
    tx_kicked: u16,
    /// Tx descriptors are handed out from `tx_next`; `tx_in_use` are out.
    tx_next: u16,
    tx_in_use: u16,
    /// Descriptor count of each packet, by avail position.
    tx_counts: [u16; TX_SIZE],
    conn: Conn,
}

static DEV: Global<Dev> = Global::new(Dev {
    base: 0,
    ready: false,
    cid: 0,
    rx: Indices { avail: 0, used: 0 },
    event: Indices { avail: 0, used: 0 },
    tx: Indices { avail: 0, used: 0 },
    rx_recycled: 0,
    tx_kicked: 0,
    tx_next: 0,
    tx_in_use: 0,
    tx_counts: [0; TX_SIZE],
    conn: Conn::NEW,
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
    // SAFETY: in bounds; the slot is the driver's while its descriptor is
    // free, and nothing else references it.
    let slot = unsafe { &mut (*SLOTS.get())[usize::from(index) % TX_SIZE] };
    slot[..bytes.len()].copy_from_slice(bytes);
    slot.as_ptr() as u64
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
        let buf = RX_BUFS.get() as u64 + u64::from(i) * RX_BUF as u64;
        rx_ring().set_desc(i, writable(buf, RX_BUF));
        rx_ring().offer(i, i);
    }
    rx_ring().publish(RX_SIZE as u16);
    for i in 0..EVENT_SIZE as u16 {
        let buf = EVENTS.get() as u64 + u64::from(i) * 4;
        event_ring().set_desc(i, writable(buf, 4));
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
    if d.ready {
        d.conn.open(port, clock::now_ns());
        flush_control(d);
        kick_tx(d);
    }
}

/// Processes what the device did: used tx chains, received packets, events,
/// the connect timeout; sends due control packets. True when anything
/// happened.
pub fn poll() -> bool {
    let d = dev();
    if !d.ready {
        return false;
    }
    let mut progress = reclaim_tx(d);
    progress |= receive(d);
    progress |= receive_events(d);
    progress |= d.conn.check_timeout(clock::now_ns());
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
    let parts = free(d).saturating_sub(1 + CONTROL_RESERVE);
    (
        d.conn.credit().min(MAX_PAYLOAD),
        usize::from(parts).min(MAX_PARTS),
    )
}

/// Asks the peer for a credit update (once, until any packet from it
/// arrives); its answer updates what [`all_consumed`] knows.
pub fn request_credit() {
    let d = dev();
    d.conn.request_credit();
    flush_control(d);
    kick_tx(d);
}

/// True when the peer has consumed every byte sent on this connection (for
/// Firecracker: written all of it to the host's socket).
pub fn all_consumed() -> bool {
    dev().conn.all_consumed()
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
    let header = d.conn.header(d.cid, OP_RW, total as u32).encode();
    // The descriptors from `tx_next` on and their slots are free.
    let mut index = head;
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
    let n = d.conn.read(out);
    flush_control(d);
    n
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

/// Sends the control packets that are due, while descriptors last (each is
/// a header-only packet).
fn flush_control(d: &mut Dev) {
    while free(d) > 0 {
        let Some((op, ports)) = d.conn.take_control() else {
            return;
        };
        let mut h = d.conn.header(d.cid, op, 0);
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

/// Hands the packets in used rx buffers to the connection, and posts the
/// buffers again once a quarter of the ring is used up: then always with a
/// notification (one VM exit per batch), since the device may have run out
/// and be waiting for one. Until then the device still has buffers, so it
/// cannot be waiting.
fn receive(d: &mut Dev) -> bool {
    let ring = rx_ring();
    let used = ring.used_idx();
    let progress = used != d.rx.used;
    while d.rx.used != used {
        let (id, len) = ring.used(d.rx.used);
        // SAFETY: the device has used this buffer and does not touch it
        // until it is offered again; nothing else references it.
        let buf = unsafe { &(*RX_BUFS.get())[usize::from(id)] };
        let len = (len as usize).min(RX_BUF);
        if let Some((h, data)) = buf[..len].split_first_chunk::<HEADER_LEN>() {
            let h = Header::decode(h);
            let data = &data[..(h.len as usize).min(data.len())];
            d.conn.receive(d.cid, &h, data);
        }
        d.rx.used = d.rx.used.wrapping_add(1);
    }
    if usize::from(d.rx.used.wrapping_sub(d.rx_recycled)) >= RX_SIZE / 4 {
        // The used ring keeps these entries until their buffers come back.
        while d.rx_recycled != d.rx.used {
            let (id, _) = ring.used(d.rx_recycled);
            ring.offer(d.rx.avail, id);
            d.rx.avail = d.rx.avail.wrapping_add(1);
            d.rx_recycled = d.rx_recycled.wrapping_add(1);
        }
        ring.publish(d.rx.avail);
        mmio::notify(d.base, RX_QUEUE);
    }
    progress
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
