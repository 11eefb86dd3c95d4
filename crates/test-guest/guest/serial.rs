//! Output to the serial console: the 16550 UART at I/O port 0x3F8, whose output
//! Firecracker copies to its stdout.
//!
//! Firecracker's UART accepts a byte at any time, so the line status register
//! is not polled (that would double the number of VM exits, the main cost of
//! output here). It takes one-byte writes only, so `rep outsb` is no use.

use core::arch::asm;

/// The transmit register of COM1.
const COM1: u16 = 0x3f8;

/// Writes bytes to the UART (ring 0 only).
pub fn write(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: reads `bytes.len()` bytes from `bytes` (DF is clear, as the ABI
    // guarantees) and writes them to the UART's data port.
    unsafe {
        asm!(
            "2:",
            "lodsb",
            "out dx, al",
            "loop 2b",
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            in("dx") COM1,
            out("al") _,
            options(nostack, readonly),
        );
    }
}
