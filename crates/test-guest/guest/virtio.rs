//! A polling virtio block driver over virtio-mmio (`mmio`).
//!
//! Drives are the block devices among the command line's `virtio_mmio.device`
//! entries, numbered in that order from 0 (the probe hands a vsock or network
//! device among them to `vsock` or `net`, without a drive number). A drive is
//! initialised when first used; it gets a 4-entry queue of which each request
//! uses 3 descriptors (header, data, status) — Firecracker expects exactly one
//! data descriptor.
//! Interrupts stay masked; completion is found by polling the used ring.
//! Buffers are plain guest memory: the guest is identity-mapped.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::mmio::{self, Desc, DESC_NEXT, DESC_WRITE, EMPTY_DESC};
use crate::{cmdline, Global};

/// The most drives the guest handles.
pub const MAX_DRIVES: usize = 16;
/// Bytes per sector.
pub const SECTOR: usize = 512;

const CONFIG_CAPACITY: usize = mmio::CONFIG;
const REQ_IN: u32 = 0;
const REQ_OUT: u32 = 1;
const QUEUE_SIZE: u16 = 4;
const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

#[repr(C, align(4))]
struct Avail {
    flags: u16,
    idx: u16,
    ring: [u16; QUEUE_SIZE as usize],
    used_event: u16,
}

#[repr(C, align(4))]
struct Used {
    flags: u16,
    idx: u16,
    ring: [[u32; 2]; QUEUE_SIZE as usize],
    avail_event: u16,
}

/// A request header (`virtio_blk_req` without data and status).
#[repr(C, align(16))]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
}

/// One drive's queue and request header and status, in one page.
#[repr(C, align(4096))]
struct Queue {
    desc: [Desc; QUEUE_SIZE as usize],
    avail: Avail,
    used: Used,
    header: Header,
    status: u8,
}

const EMPTY_QUEUE: Queue = Queue {
    desc: [EMPTY_DESC; QUEUE_SIZE as usize],
    avail: Avail {
        flags: 0,
        idx: 0,
        ring: [0; QUEUE_SIZE as usize],
        used_event: 0,
    },
    used: Used {
        flags: 0,
        idx: 0,
        ring: [[0; 2]; QUEUE_SIZE as usize],
        avail_event: 0,
    },
    header: Header {
        kind: 0,
        reserved: 0,
        sector: 0,
    },
    status: 0,
};

#[derive(Clone, Copy)]
struct Drive {
    base: usize,
    ready: bool,
    sectors: u64,
    next_avail: u16,
}

struct Drives {
    count: usize,
    list: [Drive; MAX_DRIVES],
}

static DRIVES: Global<Drives> = Global::new(Drives {
    count: 0,
    list: [Drive {
        base: 0,
        ready: false,
        sectors: 0,
        next_avail: 0,
    }; MAX_DRIVES],
});
static QUEUES: Global<[Queue; MAX_DRIVES]> = Global::new([EMPTY_QUEUE; MAX_DRIVES]);

fn drives() -> &'static mut Drives {
    // SAFETY: only this module's functions use it, and they never nest.
    unsafe { &mut *DRIVES.get() }
}

/// Finds the block devices on the command line, numbering them in order, and
/// hands the first vsock device to `vsock` and the first network device to
/// `net`.
pub fn probe(cmdline: &[u8]) {
    let d = drives();
    for base in cmdline::virtio_devices(cmdline) {
        let base = base as usize;
        match mmio::device_id(base) {
            Some(mmio::BLOCK_DEVICE) if d.count < MAX_DRIVES => {
                d.list[d.count] = Drive {
                    base,
                    ready: false,
                    sectors: 0,
                    next_avail: 0,
                };
                d.count += 1;
            }
            Some(mmio::VSOCK_DEVICE) => crate::vsock::found(base),
            Some(mmio::NET_DEVICE) => crate::net::found(base),
            _ => {}
        }
    }
}

/// How many drives there are.
pub fn count() -> usize {
    drives().count
}

/// The drive's size in bytes.
pub fn capacity(drive: usize) -> Result<u64, &'static str> {
    Ok(ready(drive)?.sectors * SECTOR as u64)
}

/// The drive, initialised.
fn ready(index: usize) -> Result<&'static mut Drive, &'static str> {
    let d = drives();
    if index >= d.count {
        return Err("no such drive");
    }
    let drive = &mut d.list[index];
    if !drive.ready {
        init(drive, index)?;
    }
    Ok(drive)
}

fn init(drive: &mut Drive, index: usize) -> Result<(), &'static str> {
    let b = drive.base;
    mmio::negotiate(b)?;
    // SAFETY: each drive index owns its queue page; the device is reset, so
    // it does not access the page until the queue is ready again.
    let q = unsafe { &mut (*QUEUES.get())[index] };
    *q = EMPTY_QUEUE;
    mmio::setup_queue(
        b,
        0,
        QUEUE_SIZE,
        addr_of!(q.desc) as u64,
        addr_of!(q.avail) as u64,
        addr_of!(q.used) as u64,
    )?;
    mmio::driver_ok(b);
    let low = u64::from(mmio::read32(b, CONFIG_CAPACITY));
    let high = u64::from(mmio::read32(b, CONFIG_CAPACITY + 4));
    drive.sectors = high << 32 | low;
    drive.next_avail = 0;
    drive.ready = true;
    Ok(())
}

/// Reads whole sectors starting at `sector` into `buf` (a multiple of 512 bytes).
pub fn read(index: usize, sector: u64, buf: &mut [u8]) -> Result<(), &'static str> {
    request(index, REQ_IN, sector, buf.as_mut_ptr() as u64, buf.len())
}

/// Writes `buf` (a multiple of 512 bytes) to whole sectors starting at `sector`.
pub fn write(index: usize, sector: u64, buf: &[u8]) -> Result<(), &'static str> {
    request(index, REQ_OUT, sector, buf.as_ptr() as u64, buf.len())
}

fn request(
    index: usize,
    kind: u32,
    sector: u64,
    data: u64,
    len: usize,
) -> Result<(), &'static str> {
    if len == 0 || len & (SECTOR - 1) != 0 || len > u32::MAX as usize {
        return Err("bad request length");
    }
    let drive = ready(index)?;
    let end = sector.checked_add((len / SECTOR) as u64);
    if !matches!(end, Some(end) if end <= drive.sectors) {
        return Err("request beyond the end of the drive");
    }
    // SAFETY: the drive's queue page, which the device reads only after the
    // notify below and writes only its used ring and the status byte.
    let q = unsafe { &mut (*QUEUES.get())[index] };
    let q: *mut Queue = q;
    // SAFETY: `q` is valid; all shared fields are accessed with volatile
    // operations, ordered against the device by the fences.
    unsafe {
        write_volatile(
            addr_of_mut!((*q).header),
            Header {
                kind,
                reserved: 0,
                sector,
            },
        );
        write_volatile(addr_of_mut!((*q).status), 0xff);
        let data_flags = if kind == REQ_IN {
            DESC_NEXT | DESC_WRITE
        } else {
            DESC_NEXT
        };
        let descs = [
            Desc {
                addr: addr_of!((*q).header) as u64,
                len: 16,
                flags: DESC_NEXT,
                next: 1,
            },
            Desc {
                addr: data,
                len: len as u32,
                flags: data_flags,
                next: 2,
            },
            Desc {
                addr: addr_of!((*q).status) as u64,
                len: 1,
                flags: DESC_WRITE,
                next: 0,
            },
        ];
        for (i, d) in descs.into_iter().enumerate() {
            write_volatile(addr_of_mut!((*q).desc[i]), d);
        }
        let slot = usize::from(drive.next_avail % QUEUE_SIZE);
        write_volatile(addr_of_mut!((*q).avail.ring[slot]), 0);
        drive.next_avail = drive.next_avail.wrapping_add(1);
        fence(Ordering::SeqCst);
        write_volatile(addr_of_mut!((*q).avail.idx), drive.next_avail);
        fence(Ordering::SeqCst);
        mmio::notify(drive.base, 0);
        let deadline = crate::clock::now_ns().map(|t| t + REQUEST_TIMEOUT_NS);
        let mut spins = 0u32;
        while read_volatile(addr_of!((*q).used.idx)) != drive.next_avail {
            core::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins & 0xffff == 0
                && deadline
                    .zip(crate::clock::now_ns())
                    .is_some_and(|(d, now)| now > d)
            {
                drive.ready = false; // re-initialise (reset) the device next time
                return Err("the drive did not answer within 30 s");
            }
        }
        fence(Ordering::SeqCst);
        match read_volatile(addr_of!((*q).status)) {
            0 => Ok(()),
            1 => Err("I/O error"),
            2 => Err("request not supported"),
            _ => Err("bad status from the device"),
        }
    }
}
