//! A polling virtio-net driver (virtio device 1, over `mmio`) for
//! Firecracker's network device, and smoltcp's `Device` on top of it.
//!
//! Only `VIRTIO_F_VERSION_1` is negotiated: no offloads, no merged rx
//! buffers. Every frame, in either direction, is one descriptor holding the
//! 12-byte `virtio_net_hdr_v1` (all zero when sending) followed by the
//! Ethernet frame. Queues (`vring`): rx (0) has `RX_SIZE` 2 KiB buffers,
//! offered again one by one as smoltcp consumes them (Firecracker reads from
//! the TAP only while the rx buffers offered add up to 64 KiB or more, so
//! they must come back quickly); tx (1) has `TX_SIZE` buffers, used in ring
//! order. Interrupts are never used: the used rings are polled, and the
//! device is notified once per batch ([`Net::kick`]).

use core::marker::PhantomData;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::mmio::{self, Desc, DESC_WRITE};
use crate::vring::{Ring, RingPtr};
use crate::Global;

const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const RX_SIZE: usize = 64;
const TX_SIZE: usize = 32;
/// Bytes of one buffer: the header and a whole Ethernet frame (1514 bytes).
const BUF: usize = 2048;
/// `virtio_net_hdr_v1` with `VIRTIO_F_VERSION_1`.
const HEADER: usize = 12;
/// The largest Ethernet frame (without FCS) for an MTU of 1500.
const MAX_FRAME: usize = 1514;

struct Rings {
    rx: Ring<RX_SIZE>,
    tx: Ring<TX_SIZE>,
}

static RINGS: Global<Rings> = Global::new(Rings {
    rx: Ring::EMPTY,
    tx: Ring::EMPTY,
});
static RX_BUFS: Global<[[u8; BUF]; RX_SIZE]> = Global::new([[0; BUF]; RX_SIZE]);
static TX_BUFS: Global<[[u8; BUF]; TX_SIZE]> = Global::new([[0; BUF]; TX_SIZE]);

fn rx_ring() -> RingPtr<RX_SIZE> {
    // SAFETY: only the field's address is taken.
    RingPtr(unsafe { core::ptr::addr_of_mut!((*RINGS.get()).rx) })
}

fn tx_ring() -> RingPtr<TX_SIZE> {
    // SAFETY: as in `rx_ring`.
    RingPtr(unsafe { core::ptr::addr_of_mut!((*RINGS.get()).tx) })
}

/// The network device, once set up by [`Net::init`].
pub struct Net {
    base: usize,
    mac: [u8; 6],
    /// Rx: the next used entry to read, and the next avail position.
    rx_used: u16,
    rx_avail: u16,
    /// Tx: the next avail position (and buffer), and how many are taken back.
    tx_avail: u16,
    tx_used: u16,
    /// Avail positions published but not yet notified.
    rx_kick: bool,
    tx_kick: bool,
}

impl Net {
    /// Resets and sets up the device at `base`, offering every rx buffer.
    pub fn init(base: usize) -> Result<Net, &'static str> {
        mmio::negotiate(base)?;
        for i in 0..RX_SIZE as u16 {
            rx_ring().set_desc(
                i,
                Desc {
                    addr: rx_buf(i) as u64,
                    len: BUF as u32,
                    flags: DESC_WRITE,
                    next: 0,
                },
            );
            rx_ring().offer(i, i);
        }
        rx_ring().publish(RX_SIZE as u16);
        let queues = [
            (RX_QUEUE, RX_SIZE, rx_ring().addresses()),
            (TX_QUEUE, TX_SIZE, tx_ring().addresses()),
        ];
        for (index, size, (desc, avail, used)) in queues {
            mmio::setup_queue(base, index, size as u16, desc, avail, used)?;
        }
        mmio::driver_ok(base);
        let mut mac = [0u8; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            let word = mmio::read32(base, mmio::CONFIG + (i & !3));
            *byte = (word >> (8 * (i & 3))) as u8;
        }
        if mac == [0; 6] {
            mac = [0x02, 0xfc, 0x00, 0x00, 0x00, 0x01]; // no guest_mac: a local one
        }
        mmio::notify(base, RX_QUEUE);
        Ok(Net {
            base,
            mac,
            rx_used: 0,
            rx_avail: RX_SIZE as u16,
            tx_avail: 0,
            tx_used: 0,
            rx_kick: false,
            tx_kick: false,
        })
    }

    /// The device's MAC address (Firecracker's `guest_mac`).
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Notifies the device of buffers made available since the last kick
    /// (at most one VM exit per queue).
    pub fn kick(&mut self) {
        if self.tx_kick {
            mmio::notify(self.base, TX_QUEUE);
            self.tx_kick = false;
        }
        if self.rx_kick {
            mmio::notify(self.base, RX_QUEUE);
            self.rx_kick = false;
        }
    }

    /// True when a received frame is waiting.
    pub fn rx_ready(&self) -> bool {
        rx_ring().used_idx() != self.rx_used
    }

    /// Takes back the tx buffers the device has sent; true when any.
    fn reclaim_tx(&mut self) -> bool {
        let used = tx_ring().used_idx();
        let any = used != self.tx_used;
        self.tx_used = used;
        any
    }

    fn tx_free(&mut self) -> bool {
        self.reclaim_tx();
        usize::from(self.tx_avail.wrapping_sub(self.tx_used)) < TX_SIZE
    }
}

fn rx_buf(index: u16) -> *mut u8 {
    // SAFETY: only the address is computed, in bounds of the static.
    unsafe { (*RX_BUFS.get())[usize::from(index) % RX_SIZE].as_mut_ptr() }
}

fn tx_buf(index: u16) -> *mut u8 {
    // SAFETY: as in `rx_buf`.
    unsafe { (*TX_BUFS.get())[usize::from(index) % TX_SIZE].as_mut_ptr() }
}

/// A received frame, handed back to the device when consumed.
///
/// smoltcp gets an rx and a tx token together and consumes them one after
/// the other, never at once, so both hold a pointer to the device and make a
/// reference from it only while being consumed.
pub struct RxToken<'a> {
    net: *mut Net,
    _borrow: PhantomData<&'a mut Net>,
}

/// Room for one frame to send (see [`RxToken`]).
pub struct TxToken<'a> {
    net: *mut Net,
    _borrow: PhantomData<&'a mut Net>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // SAFETY: the device outlives the token, and no other reference to
        // it is in use meanwhile (see the type's documentation).
        let n = unsafe { &mut *self.net };
        let (head, len) = rx_ring().used(n.rx_used);
        n.rx_used = n.rx_used.wrapping_add(1);
        let len = (len as usize).clamp(HEADER, BUF);
        // SAFETY: the device wrote `len` bytes into buffer `head` and gave it
        // back; it is the driver's until offered again below.
        let frame = unsafe { core::slice::from_raw_parts(rx_buf(head).add(HEADER), len - HEADER) };
        let result = f(frame);
        rx_ring().offer(n.rx_avail, head);
        n.rx_avail = n.rx_avail.wrapping_add(1);
        rx_ring().publish(n.rx_avail);
        n.rx_kick = true;
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        // SAFETY: as in `RxToken::consume`.
        let n = unsafe { &mut *self.net };
        let len = len.min(BUF - HEADER);
        let slot = n.tx_avail;
        // SAFETY: `tx_free` said the buffer is not the device's; nothing else
        // references it.
        let buf = unsafe { core::slice::from_raw_parts_mut(tx_buf(slot), HEADER + len) };
        buf[..HEADER].fill(0);
        let result = f(&mut buf[HEADER..]);
        let index = slot % TX_SIZE as u16;
        tx_ring().set_desc(
            index,
            Desc {
                addr: buf.as_ptr() as u64,
                len: (HEADER + len) as u32,
                flags: 0,
                next: 0,
            },
        );
        tx_ring().offer(slot, index);
        n.tx_avail = n.tx_avail.wrapping_add(1);
        tx_ring().publish(n.tx_avail);
        n.tx_kick = true;
        result
    }
}

impl phy::Device for Net {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.rx_ready() || !self.tx_free() {
            return None;
        }
        let net: *mut Net = self;
        let rx = RxToken {
            net,
            _borrow: PhantomData,
        };
        let tx = TxToken {
            net,
            _borrow: PhantomData,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.tx_free().then_some(TxToken {
            net: self,
            _borrow: PhantomData,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = MAX_FRAME;
        caps.max_burst_size = Some(TX_SIZE / 2);
        caps
    }
}
