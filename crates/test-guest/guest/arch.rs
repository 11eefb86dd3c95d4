//! x86_64 machine setup: the entry point, page tables, GDT and TSS, the IDT
//! and its handlers, the local APIC timer, and the switch to ring 3.
//!
//! Firecracker enters `_start` in 64-bit mode with the first GiB identity-mapped
//! and RSI pointing at the zero page. [`boot`] (ring 0) maps the first GiB and
//! the 3–4 GiB device window (virtio-mmio, local APIC) user-accessible, loads a
//! GDT with user segments and a TSS, loads the IDT, starts the local APIC
//! timer (only ever taken while halted, to wake the idle loop), starts kvmclock
//! and `iretq`s to [`user_entry`] in ring 3. The IDT's contents are written
//! from ring 3, where it costs nothing (see the crate docs).
//!
//! Memory is never zeroed here: Firecracker hands the guest fresh, zero-filled
//! memory, so `.bss` is already zero.

use core::arch::{asm, global_asm};

use crate::Global;

/// Selector of the kernel code segment (the same as Firecracker's boot GDT).
const KERNEL_CS: u64 = 0x08;
/// Selector of the user code segment, with RPL 3.
const USER_CS: u64 = 0x18 | 3;
/// Selector of the user data (stack) segment, with RPL 3.
const USER_DS: u64 = 0x20 | 3;
/// Selector of the task state segment.
const TSS_SEL: u16 = 0x28;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u32 = 0x30;
/// Vector of spurious local APIC interrupts.
const SPURIOUS_VECTOR: u32 = 0xff;
/// Physical (and virtual) address of the local APIC registers.
const LAPIC: usize = 0xfee0_0000;
/// Local APIC timer period in bus cycles (KVM's APIC bus runs at 1 GHz): 1 ms.
/// [`halt_for`] reprograms it for each halt.
const TIMER_PERIOD: u32 = 1_000_000;
/// The longest halt: how late Ctrl+Alt+Del may be noticed while idle.
pub const MAX_HALT_NS: u64 = 10_000_000;

const PTE_PRESENT: u64 = 1;
const PTE_WRITE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_WRITE_THROUGH: u64 = 1 << 3;
const PTE_NO_CACHE: u64 = 1 << 4;
const PTE_HUGE: u64 = 1 << 7;

/// One 4 KiB page-table page.
#[repr(C, align(4096))]
struct Table([u64; 512]);

/// A page directory of 2 MiB pages mapping the GiB at `base` onto itself.
const fn directory(base: u64, flags: u64) -> Table {
    let mut t = [0u64; 512];
    let mut i = 0;
    while i < 512 {
        t[i] = (base + ((i as u64) << 21)) | flags | PTE_PRESENT | PTE_HUGE;
        i += 1;
    }
    Table(t)
}

static PML4: Global<Table> = Global::new(Table([0; 512]));
static PDPT: Global<Table> = Global::new(Table([0; 512]));
static PD_RAM: Global<Table> = Global::new(directory(0, PTE_WRITE | PTE_USER));
static PD_DEVICES: Global<Table> = Global::new(directory(
    0xc000_0000,
    PTE_WRITE | PTE_USER | PTE_WRITE_THROUGH | PTE_NO_CACHE,
));

/// The GDT: null, kernel code, kernel data, user code, user data, TSS (two slots).
static GDT: Global<[u64; 7]> = Global::new([
    0,
    0x00af_9b00_0000_ffff,
    0x00cf_9300_0000_ffff,
    0x00af_fb00_0000_ffff,
    0x00cf_f300_0000_ffff,
    0,
    0,
]);

/// The 64-bit task state segment (only `rsp0` matters: the ring-0 stack).
#[repr(C, packed(4))]
struct Tss {
    _reserved0: u32,
    rsp0: u64,
    _rsp12: [u64; 2],
    _reserved1: u64,
    _ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    iomap_base: u16,
}

static TSS: Global<Tss> = Global::new(Tss {
    _reserved0: 0,
    rsp0: 0,
    _rsp12: [0; 2],
    _reserved1: 0,
    _ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    // Beyond the segment limit: no I/O bitmap, so ring 3 has no port access.
    iomap_base: 104,
});

/// The interrupt descriptor table.
#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);

static IDT: Global<Idt> = Global::new(Idt([[0; 2]; 256]));

extern "C" {
    static fcx_kernel_stack_top: u8;
    static fcx_user_stack_top: u8;
    /// Addresses of the 32 exception stubs, then the timer and spurious stubs.
    static fcx_isr_table: [u64; 34];
}

global_asm!(
    r#"
.section .text.entry,"ax"
.global _start
_start:
    cli
    cld
    lea rsp, [rip + fcx_kernel_stack_top]
    mov rdi, rsi
    call {boot}
    ud2

.section .bss.stacks,"aw",@nobits
.balign 16
    .skip 16384
.global fcx_kernel_stack_top
fcx_kernel_stack_top:
    .skip 65536
.global fcx_user_stack_top
fcx_user_stack_top:

.section .text.isr,"ax"
.irp n, 0,1,2,3,4,5,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
fcx_isr_\n:
    mov edi, \n
    mov rsi, rsp
    jmp fcx_isr_common
.endr

/* #UD doubles as the system call: `ud2` followed by the bytes FC 58. */
fcx_isr_6:
    push rax
    mov rax, [rsp + 8]
    cmp dword ptr [rax], 0x58fc0b0f
    pop rax
    jne 2f
    add qword ptr [rsp], 4
    push rbp
    mov rbp, rsp
    and rsp, -16
    mov rcx, rdx
    mov rdx, rsi
    mov rsi, rdi
    mov rdi, rax
    call {dispatch}
    mov rsp, rbp
    pop rbp
    iretq
2:  mov edi, 6
    mov rsi, rsp
    jmp fcx_isr_common

fcx_isr_common:
    and rsp, -16
    call {exception}
    ud2

fcx_isr_timer:
    push rax
    mov eax, 0xfee000b0
    mov dword ptr [rax], 0
    pop rax
    iretq

fcx_isr_spurious:
    iretq

.section .rodata.isr,"a"
.balign 8
.global fcx_isr_table
fcx_isr_table:
.irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad fcx_isr_\n
.endr
    .quad fcx_isr_timer
    .quad fcx_isr_spurious
"#,
    boot = sym boot,
    dispatch = sym crate::sys::dispatch,
    exception = sym exception,
);

/// Writes a byte to an I/O port (ring 0 only).
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; the ports used are the
    // 16550, the i8042 and the PICs.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

/// Reads a byte from an I/O port (ring 0 only).
pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`.
    unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) }
    value
}

fn lapic_write(reg: usize, value: u32) {
    // SAFETY: the local APIC page is mapped (uncached) by `PD_DEVICES`.
    unsafe { core::ptr::write_volatile((LAPIC + reg) as *mut u32, value) }
}

fn lapic_read(reg: usize) -> u32 {
    // SAFETY: as for `lapic_write`.
    unsafe { core::ptr::read_volatile((LAPIC + reg) as *const u32) }
}

/// True when the local APIC timer runs, so that `hlt` is sure to wake up.
static TIMER_OK: Global<bool> = Global::new(false);

/// True when the timer interrupt can wake a halted CPU.
pub fn timer_ok() -> bool {
    // SAFETY: written once in `boot`, before ring 3 starts.
    unsafe { *TIMER_OK.get() }
}

/// Ring-0 setup, then the switch to ring 3. Runs emulated: keep it short.
extern "C" fn boot(zero_page: u64) -> ! {
    // SAFETY: this runs once, first, in ring 0, with interrupts disabled; the
    // statics it writes are not referenced anywhere else yet.
    unsafe {
        let pml4 = &mut (*PML4.get()).0;
        let pdpt = &mut (*PDPT.get()).0;
        let table = PTE_PRESENT | PTE_WRITE | PTE_USER;
        pml4[0] = PDPT.get() as u64 | table;
        pdpt[0] = PD_RAM.get() as u64 | table;
        pdpt[3] = PD_DEVICES.get() as u64 | table;
        asm!("mov cr3, {}", in(reg) PML4.get() as u64, options(nostack));

        let tss = TSS.get() as u64;
        core::ptr::addr_of_mut!((*TSS.get()).rsp0)
            .write_unaligned(core::ptr::addr_of!(fcx_kernel_stack_top) as u64);
        let gdt = &mut *GDT.get();
        gdt[5] = 103 | ((tss & 0xff_ffff) << 16) | (0x89 << 40) | (((tss >> 24) & 0xff) << 56);
        gdt[6] = tss >> 32;
        let gdtr = descriptor(gdt.as_ptr() as u64, 7 * 8 - 1);
        asm!("lgdt [{}]", in(reg) gdtr.as_ptr(), options(nostack));
        asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack));
        let idtr = descriptor(IDT.get() as u64, 256 * 16 - 1);
        asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(nostack));

        // Mask both PICs so that no device interrupt arrives through them.
        outb(0x21, 0xff);
        outb(0xa1, 0xff);
        lapic_write(0xf0, 0x100 | SPURIOUS_VECTOR);
        lapic_write(0x3e0, 0b1011);
        lapic_write(0x320, TIMER_VECTOR | (1 << 17));
        lapic_write(0x380, TIMER_PERIOD);
        let first = lapic_read(0x390);
        *TIMER_OK.get() = lapic_read(0x390) != first;

        crate::clock::init();

        let stack = core::ptr::addr_of!(fcx_user_stack_top) as u64 - 8;
        asm!(
            "push {ss}",
            "push {rsp}",
            "push 2",
            "push {cs}",
            "push {rip}",
            "iretq",
            ss = in(reg) USER_DS,
            rsp = in(reg) stack,
            cs = in(reg) USER_CS,
            rip = in(reg) user_entry as *const () as u64,
            in("rdi") zero_page,
            options(noreturn),
        )
    }
}

/// The operand of `lgdt` and `lidt`: a 16-bit limit, then the base address.
fn descriptor(base: u64, limit: u16) -> [u16; 5] {
    [
        limit,
        base as u16,
        (base >> 16) as u16,
        (base >> 32) as u16,
        (base >> 48) as u16,
    ]
}

/// The first code in ring 3: fills in the IDT, then runs the agent.
extern "C" fn user_entry(zero_page: u64) -> ! {
    // SAFETY: nothing else references the IDT; the CPU reads it only on an
    // interrupt or exception, and none can happen before this returns (IF is 0).
    let idt = unsafe { &mut (*IDT.get()).0 };
    // SAFETY: `fcx_isr_table` is immutable data defined in the assembly above.
    let stubs = unsafe { &fcx_isr_table };
    for (vector, &stub) in stubs.iter().enumerate().take(32) {
        idt[vector] = gate(stub);
    }
    idt[TIMER_VECTOR as usize] = gate(stubs[32]);
    idt[SPURIOUS_VECTOR as usize] = gate(stubs[33]);
    crate::agent::main(zero_page)
}

/// An interrupt gate (DPL 0, interrupts disabled on entry) to `handler`.
fn gate(handler: u64) -> [u64; 2] {
    let low =
        (handler & 0xffff) | (KERNEL_CS << 16) | (0x8e << 40) | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Handler of every CPU exception except the system-call #UD: reports a
/// `fail` frame and stops.
extern "C" fn exception(vector: u64, frame: *const u64) -> ! {
    let has_error_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    // SAFETY: `frame` points at the interrupt frame the CPU just pushed.
    let (error, rip) = unsafe {
        if has_error_code {
            (*frame, *frame.add(1))
        } else {
            (0, *frame)
        }
    };
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects (the handler runs in ring 0).
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    crate::report::fatal(format_args!(
        "CPU exception {vector} at rip {rip:#x} (error code {error:#x}, cr2 {cr2:#x})"
    ))
}

/// Halts for about `ns` nanoseconds (clamped to 10 µs..10 ms), or until
/// another interrupt (ring 0 only).
pub fn halt_for(ns: u64) {
    lapic_write(0x380, ns.clamp(10_000, MAX_HALT_NS) as u32);
    // SAFETY: interrupts are enabled only for the `hlt` (STI's one-instruction
    // shadow makes the pair atomic); the only unmasked interrupt is the timer,
    // whose handler touches no memory but the APIC's EOI register.
    unsafe { asm!("sti", "hlt", "cli", options(nomem, nostack)) }
}

/// Powers the VM off: the i8042 reset command makes Firecracker exit with
/// status 0 (ring 0 only).
pub fn power_off() -> ! {
    outb(0x64, 0xfe);
    loop {
        // SAFETY: interrupts stay disabled; this just parks the CPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Triple-faults the CPU: with an empty IDT no exception can be delivered, so
/// #UD escalates to #GP, then #DF, then a shutdown (ring 0 only).
pub fn triple_fault() -> ! {
    // SAFETY: deliberately crashes the VM; nothing runs afterwards.
    unsafe {
        let idtr = descriptor(0, 0);
        asm!("lidt [{}]", "ud2", in(reg) idtr.as_ptr(), options(noreturn))
    }
}
