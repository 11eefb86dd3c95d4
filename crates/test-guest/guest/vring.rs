//! A split virtqueue in guest memory (descriptor table, available ring, used
//! ring, in one page-aligned static), and volatile access to it.
//!
//! The driver writes descriptors and the available ring; the device writes
//! the used ring. All access goes through a [`RingPtr`] with volatile reads
//! and writes and no Rust references, so the device's concurrent writes never
//! alias a reference. Notification suppression and interrupts are not used.

use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::mmio::{Desc, EMPTY_DESC};

#[repr(C, align(4))]
struct Avail<const N: usize> {
    flags: u16,
    idx: u16,
    ring: [u16; N],
    used_event: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct UsedElem {
    id: u32,
    len: u32,
}

#[repr(C, align(4))]
struct Used<const N: usize> {
    flags: u16,
    idx: u16,
    ring: [UsedElem; N],
    avail_event: u16,
}

/// One virtqueue of `N` entries.
#[repr(C, align(4096))]
pub struct Ring<const N: usize> {
    desc: [Desc; N],
    avail: Avail<N>,
    used: Used<N>,
}

impl<const N: usize> Ring<N> {
    /// A ring with nothing in it.
    pub const EMPTY: Self = Ring {
        desc: [EMPTY_DESC; N],
        avail: Avail {
            flags: 0,
            idx: 0,
            ring: [0; N],
            used_event: 0,
        },
        used: Used {
            flags: 0,
            idx: 0,
            ring: [UsedElem { id: 0, len: 0 }; N],
            avail_event: 0,
        },
    };
}

/// A pointer to a ring that lives forever (in a static), for volatile access.
#[derive(Clone, Copy)]
pub struct RingPtr<const N: usize>(pub *mut Ring<N>);

impl<const N: usize> RingPtr<N> {
    /// Guest-physical addresses of the descriptor table, available ring and
    /// used ring (the guest is identity-mapped).
    pub fn addresses(self) -> (u64, u64, u64) {
        let r = self.0;
        // SAFETY: `r` points at a live ring; only addresses are taken.
        unsafe {
            (
                addr_of!((*r).desc) as u64,
                addr_of!((*r).avail) as u64,
                addr_of!((*r).used) as u64,
            )
        }
    }

    /// Writes descriptor `index` (modulo `N`); the device must not own it.
    pub fn set_desc(self, index: u16, desc: Desc) {
        // SAFETY: in bounds; a volatile write to a live ring, no reference.
        unsafe { write_volatile(addr_of_mut!((*self.0).desc[usize::from(index) % N]), desc) }
    }

    /// Puts chain `head` in the available ring at position `avail` (modulo
    /// `N`); it becomes visible with [`publish`](Self::publish).
    pub fn offer(self, avail: u16, head: u16) {
        // SAFETY: as in `set_desc`.
        unsafe {
            write_volatile(
                addr_of_mut!((*self.0).avail.ring[usize::from(avail) % N]),
                head,
            )
        }
    }

    /// Makes the available ring's entries up to (not including) `avail`
    /// visible to the device, after every earlier write.
    pub fn publish(self, avail: u16) {
        fence(Ordering::SeqCst);
        // SAFETY: as in `set_desc`.
        unsafe { write_volatile(addr_of_mut!((*self.0).avail.idx), avail) }
        fence(Ordering::SeqCst);
    }

    /// The device's used index; entries before it may then be read.
    pub fn used_idx(self) -> u16 {
        // SAFETY: as in `set_desc` (a volatile read).
        let idx = unsafe { read_volatile(addr_of!((*self.0).used.idx)) };
        fence(Ordering::SeqCst);
        idx
    }

    /// The used entry at position `used` (modulo `N`): the chain's head and
    /// the bytes the device wrote.
    pub fn used(self, used: u16) -> (u16, u32) {
        // SAFETY: as in `used_idx`.
        let e = unsafe { read_volatile(addr_of!((*self.0).used.ring[usize::from(used) % N])) };
        ((e.id as usize % N) as u16, e.len)
    }
}
