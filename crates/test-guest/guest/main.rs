//! The fcexec test guest: a tiny freestanding x86_64 kernel that Firecracker
//! boots directly (an ELF image, entered in 64-bit mode).
//!
//! It reads a job from the kernel command line and the config drive, runs it
//! and reports the results: over the serial console, framed as
//! `docs/guest-protocol.md` describes for version 1 (agent mode) or as raw
//! text (plain mode); or, with `proto=2` on the config drive, as version 2
//! frames over a virtio-vsock connection to the host.
//!
//! Execution model. On this project's hosts the VM runs under nested, partly
//! emulated virtualisation: supervisor-mode guest code is emulated at about a
//! microsecond per instruction, while user-mode code runs at native speed. So
//! the guest sets itself up in ring 0 ([`arch::boot`], a few hundred
//! instructions), then drops to ring 3 and does all its work there
//! ([`agent::main`]). The few things that need ring 0 (writing to the serial
//! port, halting until the next timer tick, powering off, triple-faulting) are
//! system calls ([`sys`]), made with `ud2` because the hypervisor here turns
//! `int n` from user mode into #UD anyway.
//!
//! Module map: `arch` (paging, GDT/TSS, IDT, local APIC timer, the ring switch),
//! `sys` (system calls), `serial` (16550 output), `clock` (kvmclock), `kbd`
//! (i8042, Ctrl+Alt+Del), `cmdline` (zero page and command line), `mmio`
//! (the virtio-mmio transport), `vring` (virtqueues), `virtio` (block
//! driver), `vsock` (vsock driver), `net` (virtio-net driver, smoltcp stack
//! and the network operations), `config` (the config drive), `job` (job
//! parsing), `frame` (version 1 frame encoder), `report` (plain and version 1
//! reporting), `agent` (runs the job, version 1), `agent2`, `session` and
//! `retain` (version 2: the job, the connection, the unacked output).

#![no_std]
#![no_main]

mod agent;
mod agent2;
mod arch;
mod clock;
mod cmdline;
mod config;
mod frame;
mod job;
mod kbd;
mod mmio;
mod net;
mod report;
mod retain;
mod serial;
mod session;
mod sys;
mod virtio;
mod vring;
mod vsock;

use core::cell::UnsafeCell;

/// Global state of the guest's single CPU.
///
/// The guest runs one thread of control on one vCPU; interrupt handlers touch
/// no `Global`, so plain (unsynchronised) access through [`Global::get`] is
/// sound as long as no two references to the same value are alive at once.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: there is exactly one thread of execution (one vCPU, and no interrupt
// handler reads or writes a `Global`), see the type's documentation.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// Wraps an initial value.
    pub const fn new(value: T) -> Self {
        Global(UnsafeCell::new(value))
    }

    /// A raw pointer to the value; dereferencing it must not create a second
    /// live reference to the same value.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    report::fatal(format_args!("{info}"))
}
