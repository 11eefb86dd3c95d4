//! Output to the serial console: the 16550 UART at I/O port 0x3F8, whose output
//! Firecracker copies to its stdout.
//!
//! Firecracker's UART accepts a byte at any time, so the line status register
//! is not polled (that would double the number of VM exits, the main cost of
//! output here). It takes one-byte writes only, so `rep outsb` is no use; an
//! unrolled run of single `outsb`s is the fewest instructions per byte (ring 0
//! is emulated here, about 1 µs per instruction, next to 15 µs per VM exit).

use core::arch::asm;

/// The transmit register of COM1.
const COM1: u16 = 0x3f8;

/// Writes bytes to the UART (ring 0 only).
pub fn write(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let (head, tail) = bytes.split_at(bytes.len() & !15);
    // SAFETY: `outsb` reads the byte at RSI (DF is clear, as the ABI
    // guarantees), writes it to the port in DX and advances RSI; the loops
    // read exactly `bytes.len()` bytes from `bytes`.
    unsafe {
        if !head.is_empty() {
            asm!(
                "2:",
                "outsb", "outsb", "outsb", "outsb", "outsb", "outsb", "outsb", "outsb",
                "outsb", "outsb", "outsb", "outsb", "outsb", "outsb", "outsb", "outsb",
                "loop 2b",
                inout("rsi") head.as_ptr() => _,
                inout("rcx") head.len() / 16 => _,
                in("dx") COM1,
                options(nostack, readonly),
            );
        }
        if !tail.is_empty() {
            asm!(
                "2:",
                "outsb",
                "loop 2b",
                inout("rsi") tail.as_ptr() => _,
                inout("rcx") tail.len() => _,
                in("dx") COM1,
                options(nostack, readonly),
            );
        }
    }
}
