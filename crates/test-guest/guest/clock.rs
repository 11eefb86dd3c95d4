//! Wall-clock time from kvmclock (KVM's paravirtual clock).
//!
//! Ring 0 registers a `pvclock_vcpu_time_info` record with KVM once; after that
//! any ring reads the time as `system_time + scale(tsc - tsc_timestamp)`, where
//! the record supplies the TSC's scale. No calibration and no VM exit are
//! needed. Without kvmclock (not KVM) there is no clock and timed sleeps fail.

use core::arch::asm;
use core::arch::x86_64::{__cpuid, _rdtsc};
use core::ptr::{addr_of, read_volatile};
use core::sync::atomic::{compiler_fence, Ordering};

use crate::Global;

/// KVM's time record for one vCPU.
#[repr(C, align(64))]
struct PvClock {
    version: u32,
    _pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    _pad1: [u8; 2],
}

static PVCLOCK: Global<PvClock> = Global::new(PvClock {
    version: 0,
    _pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    _pad1: [0; 2],
});

static READY: Global<bool> = Global::new(false);

const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
const KVM_FEATURE_CLOCKSOURCE: u32 = 1 << 0;
const KVM_FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

/// Registers the time record with KVM when kvmclock exists (ring 0 only).
pub fn init() {
    // SAFETY: CPUID is always available in 64-bit mode (older compilers
    // declare `__cpuid` unsafe, newer ones do not).
    #[allow(unused_unsafe)]
    let sig = unsafe { __cpuid(0x4000_0000) };
    if (sig.ebx, sig.ecx, sig.edx) != (0x4b4d_564b, 0x564b_4d56, 0x4d) || sig.eax < 0x4000_0001 {
        return;
    }
    // SAFETY: as above.
    #[allow(unused_unsafe)]
    let features = unsafe { __cpuid(0x4000_0001) }.eax;
    let msr = if features & KVM_FEATURE_CLOCKSOURCE2 != 0 {
        MSR_KVM_SYSTEM_TIME_NEW
    } else if features & KVM_FEATURE_CLOCKSOURCE != 0 {
        MSR_KVM_SYSTEM_TIME
    } else {
        return;
    };
    let addr = PVCLOCK.get() as u64 | 1;
    // SAFETY: ring 0; KVM advertised this MSR, and the record is a static
    // that lives forever and does not cross a page boundary (64-byte aligned).
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") addr as u32, in("edx") (addr >> 32) as u32,
             options(nostack));
        *READY.get() = true;
    }
}

/// Nanoseconds since the VM started, or `None` without kvmclock.
pub fn now_ns() -> Option<u64> {
    // SAFETY: READY is written once, in ring 0, before ring 3 starts.
    if !unsafe { *READY.get() } {
        return None;
    }
    let p = PVCLOCK.get();
    loop {
        // SAFETY: the record is a live static that KVM updates; every field
        // is read with a volatile load, and a torn read is retried via the
        // version counter (odd while KVM writes it).
        let (version, stamp, system, mul, shift, tsc, again) = unsafe {
            let version = read_volatile(addr_of!((*p).version));
            compiler_fence(Ordering::SeqCst);
            let stamp = read_volatile(addr_of!((*p).tsc_timestamp));
            let system = read_volatile(addr_of!((*p).system_time));
            let mul = read_volatile(addr_of!((*p).tsc_to_system_mul));
            let shift = read_volatile(addr_of!((*p).tsc_shift));
            let tsc = _rdtsc();
            compiler_fence(Ordering::SeqCst);
            (
                version,
                stamp,
                system,
                mul,
                shift,
                tsc,
                read_volatile(addr_of!((*p).version)),
            )
        };
        if version & 1 != 0 || version != again {
            continue;
        }
        let mut delta = tsc.wrapping_sub(stamp);
        if shift < 0 {
            delta >>= -shift;
        } else {
            delta <<= shift;
        }
        return Some(system.wrapping_add(((u128::from(delta) * u128::from(mul)) >> 32) as u64));
    }
}
