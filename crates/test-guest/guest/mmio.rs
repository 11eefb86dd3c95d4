//! The virtio-mmio transport (the "modern" register layout, version 2, which is
//! what Firecracker implements), shared by the block driver (`virtio`), the
//! vsock driver (`vsock`) and the network driver (`net`): register access,
//! device identification, feature negotiation (`VIRTIO_F_VERSION_1` only),
//! queue setup and notification.
//!
//! Registers are accessed from ring 3: `arch` maps the device window
//! user-accessible and uncached, so each access is one VM exit and no system
//! call. Interrupts are never used; drivers poll their used rings.

use core::ptr::{read_volatile, write_volatile};

/// The virtio device id of a network device.
pub const NET_DEVICE: u32 = 1;
/// The virtio device id of a block device.
pub const BLOCK_DEVICE: u32 = 2;
/// The virtio device id of a socket (vsock) device.
pub const VSOCK_DEVICE: u32 = 19;

const MAGIC: usize = 0x000;
const VERSION: usize = 0x004;
const DEVICE_ID: usize = 0x008;
const DEVICE_FEATURES: usize = 0x010;
const DEVICE_FEATURES_SEL: usize = 0x014;
const DRIVER_FEATURES: usize = 0x020;
const DRIVER_FEATURES_SEL: usize = 0x024;
const QUEUE_SEL: usize = 0x030;
const QUEUE_NUM_MAX: usize = 0x034;
const QUEUE_NUM: usize = 0x038;
const QUEUE_READY: usize = 0x044;
const QUEUE_NOTIFY: usize = 0x050;
const STATUS: usize = 0x070;
const QUEUE_DESC: usize = 0x080;
const QUEUE_AVAIL: usize = 0x090;
const QUEUE_USED: usize = 0x0a0;
/// Start of the device-specific configuration space.
pub const CONFIG: usize = 0x100;

const MMIO_MAGIC: u32 = 0x7472_6976;
const STATUS_ACKNOWLEDGE: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
const FEATURES_OK: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
/// VIRTIO_F_VERSION_1, bit 32 of the features: bit 0 of features word 1.
const FEATURE_VERSION_1: u32 = 1;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_WRITE: u16 = 2;

/// A virtqueue descriptor.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Desc {
    /// Guest-physical (here also virtual) address of the buffer.
    pub addr: u64,
    /// Length of the buffer in bytes.
    pub len: u32,
    /// `DESC_NEXT`, `DESC_WRITE`.
    pub flags: u16,
    /// The next descriptor of the chain, with `DESC_NEXT`.
    pub next: u16,
}

/// An unused descriptor.
pub const EMPTY_DESC: Desc = Desc {
    addr: 0,
    len: 0,
    flags: 0,
    next: 0,
};

/// Reads a 32-bit register.
pub fn read32(base: usize, reg: usize) -> u32 {
    // SAFETY: `base` is a virtio-mmio window from the command line, mapped
    // uncached and user-accessible by `arch`; registers are 32-bit aligned.
    unsafe { read_volatile((base + reg) as *const u32) }
}

/// Writes a 32-bit register.
pub fn write32(base: usize, reg: usize, value: u32) {
    // SAFETY: as for `read32`.
    unsafe { write_volatile((base + reg) as *mut u32, value) }
}

/// The device id of the virtio-mmio window at `base`, or `None` when there is
/// no device there.
pub fn device_id(base: usize) -> Option<u32> {
    if !(0xc000_0000..0xfee0_0000).contains(&base) {
        return None; // outside the window `arch` maps
    }
    (read32(base, MAGIC) == MMIO_MAGIC).then(|| read32(base, DEVICE_ID))
}

/// Resets the device and negotiates `VIRTIO_F_VERSION_1` and nothing else.
pub fn negotiate(base: usize) -> Result<(), &'static str> {
    if read32(base, VERSION) != 2 {
        return Err("not a virtio-mmio version 2 device");
    }
    write32(base, STATUS, 0);
    write32(base, STATUS, STATUS_ACKNOWLEDGE);
    write32(base, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write32(base, DEVICE_FEATURES_SEL, 1);
    if read32(base, DEVICE_FEATURES) & FEATURE_VERSION_1 == 0 {
        return Err("device lacks VIRTIO_F_VERSION_1");
    }
    write32(base, DRIVER_FEATURES_SEL, 1);
    write32(base, DRIVER_FEATURES, FEATURE_VERSION_1);
    write32(base, DRIVER_FEATURES_SEL, 0);
    write32(base, DRIVER_FEATURES, 0);
    write32(base, STATUS, FEATURES_OK);
    if read32(base, STATUS) & STATUS_FEATURES_OK == 0 {
        return Err("device refused the features");
    }
    Ok(())
}

/// Sets up queue `index` with `size` entries and its three parts' addresses,
/// and marks it ready.
pub fn setup_queue(
    base: usize,
    index: u32,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
) -> Result<(), &'static str> {
    write32(base, QUEUE_SEL, index);
    if read32(base, QUEUE_NUM_MAX) < u32::from(size) {
        return Err("device queue too small");
    }
    write32(base, QUEUE_NUM, u32::from(size));
    for (reg, addr) in [(QUEUE_DESC, desc), (QUEUE_AVAIL, avail), (QUEUE_USED, used)] {
        write32(base, reg, addr as u32);
        write32(base, reg + 4, (addr >> 32) as u32);
    }
    write32(base, QUEUE_READY, 1);
    Ok(())
}

/// Tells the device that the driver is ready (after its queues are set up).
pub fn driver_ok(base: usize) {
    write32(base, STATUS, FEATURES_OK | STATUS_DRIVER_OK);
}

/// Tells the device that queue `index` has new available buffers.
pub fn notify(base: usize, index: u32) {
    write32(base, QUEUE_NOTIFY, index);
}
