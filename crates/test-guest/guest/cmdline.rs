//! The kernel command line, found through the Linux zero page (`boot_params`)
//! whose address Firecracker passes in RSI.
//!
//! Parameters are space-separated `name=value` words. The guest reads
//! `fcx.job=` and `fcx.key=`, and the `virtio_mmio.device=4K@0xADDR:IRQ` words
//! that Firecracker appends, one per device in attachment order.

/// Offset in the zero page of the command line's physical address (`u32`).
const CMD_LINE_PTR: u64 = 0x228;
/// Offset in the zero page of the command line's maximum size (`u32`).
const CMDLINE_SIZE: u64 = 0x238;
/// Never read more than this, whatever the zero page says.
const MAX_LEN: usize = 4096;

/// The command line (without its NUL terminator).
pub fn read(zero_page: u64) -> &'static [u8] {
    if zero_page == 0 {
        return &[];
    }
    // SAFETY: Firecracker's zero page and command line lie in low memory,
    // identity-mapped and readable from ring 3; the command line is NUL
    // terminated within its maximum size, and nothing writes to either.
    unsafe {
        let ptr = core::ptr::read_unaligned((zero_page + CMD_LINE_PTR) as *const u32) as usize;
        let size = core::ptr::read_unaligned((zero_page + CMDLINE_SIZE) as *const u32) as usize;
        if ptr == 0 {
            return &[];
        }
        let max = if size == 0 {
            MAX_LEN
        } else {
            size.min(MAX_LEN)
        };
        let bytes = core::slice::from_raw_parts(ptr as *const u8, max);
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(max);
        &bytes[..len]
    }
}

/// The words of the command line.
fn words(cmdline: &[u8]) -> impl Iterator<Item = &[u8]> {
    cmdline
        .split(|&b| b == b' ' || b == b'\t' || b == b'\n')
        .filter(|w| !w.is_empty())
}

/// The value of the last `name` word (`name` includes the `=`).
pub fn param<'a>(cmdline: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    words(cmdline).filter_map(|w| w.strip_prefix(name)).last()
}

/// The MMIO base addresses of the virtio devices, in command-line order.
pub fn virtio_devices(cmdline: &[u8]) -> impl Iterator<Item = u64> + '_ {
    words(cmdline)
        .filter_map(|w| w.strip_prefix(b"virtio_mmio.device="))
        .filter_map(|v| {
            let at = v.iter().position(|&b| b == b'@')?;
            let rest = &v[at + 1..];
            let end = rest.iter().position(|&b| b == b':').unwrap_or(rest.len());
            parse_hex(&rest[..end])
        })
}

fn parse_hex(text: &[u8]) -> Option<u64> {
    let digits = text
        .strip_prefix(b"0x")
        .or_else(|| text.strip_prefix(b"0X"))?;
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n << 4 | u64::from(d))
    })
}
