//! A guest of a few bytes, assembled here: it writes a line to the serial
//! port 0x3F8, then resets through the i8042 (firecracker exits 0) or halts.
//! Enough to exercise the VMM without the test guest, and to play a guest
//! that has no fcexec agent.

/// What the tiny guest does after printing its line.
#[derive(Clone, Copy)]
pub enum Then {
    /// Reset through the i8042: firecracker exits 0.
    Reset,
    /// Halt forever with interrupts off.
    Halt,
}

/// An x86_64 ELF of a few bytes: writes `message` to the serial port 0x3F8,
/// then resets or halts. Loaded at 1 MiB.
pub fn tiny_guest(message: &str, then: Then) -> Vec<u8> {
    let msg = message.as_bytes();
    let mut code: Vec<u8> = vec![0x66, 0xBA, 0xF8, 0x03]; // mov dx, 0x3f8
    code.extend([0x48, 0x8D, 0x35, 0, 0, 0, 0]); // lea rsi, [rip + disp32]
    let lea_end = code.len();
    code.push(0xB9); // mov ecx, len
    code.extend((msg.len() as u32).to_le_bytes());
    code.extend([0xAC, 0xEE, 0xE2, 0xFC]); // lodsb; out dx, al; loop
    match then {
        Then::Reset => code.extend([0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD]),
        Then::Halt => code.extend([0xFA, 0xF4, 0xEB, 0xFD]),
    }
    let disp = (code.len() - lea_end) as i32;
    code[lea_end - 4..lea_end].copy_from_slice(&disp.to_le_bytes());
    code.extend(msg);
    elf(&code)
}

fn elf(code: &[u8]) -> Vec<u8> {
    const BASE: u64 = 0x10_0000;
    const OFFSET: u64 = 0x1000;
    let mut f = Vec::new();
    f.extend(b"\x7fELF");
    f.extend([2, 1, 1, 0]);
    f.extend([0u8; 8]);
    f.extend(2u16.to_le_bytes()); // ET_EXEC
    f.extend(0x3Eu16.to_le_bytes()); // x86_64
    f.extend(1u32.to_le_bytes());
    f.extend(BASE.to_le_bytes()); // entry
    f.extend(64u64.to_le_bytes()); // phoff
    f.extend(0u64.to_le_bytes()); // shoff
    f.extend(0u32.to_le_bytes()); // flags
    for v in [64u16, 56, 1, 0, 0, 0] {
        f.extend(v.to_le_bytes());
    }
    f.extend(1u32.to_le_bytes()); // PT_LOAD
    f.extend(5u32.to_le_bytes()); // R+X
    for v in [
        OFFSET,
        BASE,
        BASE,
        code.len() as u64,
        code.len() as u64,
        0x1000,
    ] {
        f.extend(v.to_le_bytes());
    }
    f.resize(OFFSET as usize, 0);
    f.extend(code);
    f
}
