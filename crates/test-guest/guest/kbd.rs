//! Ctrl+Alt+Del through Firecracker's i8042 controller.
//!
//! Firecracker's `SendCtrlAltDel` action queues the scan-code-set-2 make codes
//! of Ctrl (`14`), Alt (`11`) and Delete (`E0 71`) in its i8042, setting bit 0
//! of the status port 0x64; the bytes are read from port 0x60. The keyboard
//! interrupt is masked, so the guest polls: after every serial write and at
//! every idle tick (see `sys`). By default Ctrl+Alt+Del powers the VM off at
//! once; after the job's `ignore-cad` it is only logged.

use crate::{arch, serial, Global};

const STATUS: u16 = 0x64;
const DATA: u16 = 0x60;
const OUTPUT_FULL: u8 = 1;

/// Keyboard decoder state.
struct State {
    ctrl: bool,
    alt: bool,
    extended: bool,
    release: bool,
}

static STATE: Global<State> = Global::new(State {
    ctrl: false,
    alt: false,
    extended: false,
    release: false,
});

static IGNORE: Global<bool> = Global::new(false);

/// From now on, Ctrl+Alt+Del is logged and otherwise ignored.
pub fn ignore_cad() {
    // SAFETY: a plain flag, read only by `service`, which cannot run meanwhile.
    unsafe { *IGNORE.get() = true }
}

/// Reads every pending scan code and acts on Ctrl+Alt+Del (ring 0 only).
pub fn service() {
    while arch::inb(STATUS) & OUTPUT_FULL != 0 {
        if feed(arch::inb(DATA)) {
            // SAFETY: see `ignore_cad`.
            if unsafe { *IGNORE.get() } {
                serial::write(b"\ntest-guest: Ctrl+Alt+Del ignored\n");
            } else {
                serial::write(b"\ntest-guest: Ctrl+Alt+Del, powering off\n");
                arch::power_off();
            }
        }
    }
}

/// Feeds one scan code to the decoder; true when it completes Ctrl+Alt+Del.
fn feed(code: u8) -> bool {
    // SAFETY: only `service` calls this, never reentrantly.
    let s = unsafe { &mut *STATE.get() };
    match code {
        0xe0 => s.extended = true,
        0xf0 => s.release = true,
        _ => {
            let pressed = !s.release;
            let cad = match (s.extended, code) {
                (_, 0x14) => {
                    s.ctrl = pressed;
                    false
                }
                (_, 0x11) => {
                    s.alt = pressed;
                    false
                }
                (true, 0x71) => pressed && s.ctrl && s.alt,
                _ => false,
            };
            s.extended = false;
            s.release = false;
            return cad;
        }
    }
    false
}
