//! System calls: how ring-3 code gets the few things only ring 0 can do.
//!
//! A call is `ud2` followed by the marker bytes `FC 58`, with the call number
//! in RAX and arguments in RDI and RSI; the #UD handler (see `arch`) recognises
//! the marker, calls [`dispatch`] in ring 0 and resumes after the marker. The
//! same instruction works from ring 0 (the exception handlers use it). The
//! hypervisor here turns `int n` from user mode into #UD, which is why a plain
//! software interrupt is not used. A call costs about 0.4 ms here, so callers
//! batch their output.

use core::arch::asm;

use crate::{arch, kbd, serial};

const WRITE: u64 = 1;
const IDLE_UNTIL: u64 = 2;
const POWER_OFF: u64 = 3;
const TRIPLE_FAULT: u64 = 4;

/// Makes a system call.
fn call(number: u64, a: u64, b: u64) -> u64 {
    let ret: u64;
    // SAFETY: the #UD handler recognises the marker, runs `dispatch` and
    // returns after the marker; like a C call it may clobber the caller-saved
    // registers, which `clobber_abi` declares.
    unsafe {
        asm!(
            "ud2",
            ".byte 0xfc, 0x58",
            inlateout("rax") number => ret,
            in("rdi") a,
            in("rsi") b,
            clobber_abi("C"),
        );
    }
    ret
}

/// Writes bytes to the serial console, then looks for Ctrl+Alt+Del.
pub fn write(bytes: &[u8]) {
    if !bytes.is_empty() {
        call(WRITE, bytes.as_ptr() as u64, bytes.len() as u64);
    }
}

/// Halts (waking at least every 10 ms to look for Ctrl+Alt+Del) until
/// kvmclock reaches `deadline_ns`; `u64::MAX` never returns.
pub fn idle_until(deadline_ns: u64) {
    call(IDLE_UNTIL, deadline_ns, 0);
}

/// Powers the VM off; Firecracker then exits with status 0.
pub fn power_off() -> ! {
    call(POWER_OFF, 0, 0);
    unreachable_stop()
}

/// Triple-faults the CPU; Firecracker then exits with status 1.
pub fn triple_fault() -> ! {
    call(TRIPLE_FAULT, 0, 0);
    unreachable_stop()
}

fn unreachable_stop() -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Ring-0 side of a system call, called by the #UD handler.
pub extern "C" fn dispatch(number: u64, a: u64, b: u64) -> u64 {
    match number {
        WRITE => {
            // SAFETY: the caller passed a slice of its own memory, all of which
            // is identity-mapped and readable from ring 0.
            let bytes = unsafe { core::slice::from_raw_parts(a as *const u8, b as usize) };
            serial::write(bytes);
            kbd::service();
            0
        }
        IDLE_UNTIL => {
            loop {
                kbd::service();
                let now = crate::clock::now_ns();
                if now.map_or(a != u64::MAX, |now| now >= a) {
                    break;
                }
                if arch::timer_ok() {
                    arch::halt_for(now.map_or(arch::MAX_HALT_NS, |now| a - now));
                } else {
                    core::hint::spin_loop();
                }
            }
            0
        }
        POWER_OFF => arch::power_off(),
        TRIPLE_FAULT => arch::triple_fault(),
        _ => u64::MAX,
    }
}
