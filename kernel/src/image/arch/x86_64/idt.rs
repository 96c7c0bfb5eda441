//! The interrupt descriptor table: CPU exceptions (report and exit) and the
//! one device interrupt, the PIT timer, whose only job is to wake the CPU
//! from `hlt`. Both run on their own IST stacks (see `gdt`).

use super::gdt::{IST_EXCEPTION, IST_TIMER, KERNEL_CS};
use super::pic::{PIC_MASTER_COMMAND, PIC_VECTOR_BASE};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};

/// Timer interrupts taken since boot (the timer stub increments it).
static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);

/// Vector of PIT interrupts (IRQ 0).
pub const TIMER_VECTOR: u8 = PIC_VECTOR_BASE;
/// Vector of the master PIC's spurious interrupt (IRQ 7).
const SPURIOUS_VECTOR: u8 = PIC_VECTOR_BASE + 7;

global_asm!(
    r#"
    .section .text.interrupts, "ax"
    .macro exc_noerr n
    .balign 16
exc_stub_\n:
    pushq $0
    pushq $\n
    jmp exception_common
    .endm
    .macro exc_err n
    .balign 16
exc_stub_\n:
    pushq $\n
    jmp exception_common
    .endm

    exc_noerr 0
    exc_noerr 1
    exc_noerr 2
    exc_noerr 3
    exc_noerr 4
    exc_noerr 5
    exc_noerr 6
    exc_noerr 7
    exc_err 8
    exc_noerr 9
    exc_err 10
    exc_err 11
    exc_err 12
    exc_err 13
    exc_err 14
    exc_noerr 15
    exc_noerr 16
    exc_err 17
    exc_noerr 18
    exc_noerr 19
    exc_noerr 20
    exc_err 21
    exc_noerr 22
    exc_noerr 23
    exc_noerr 24
    exc_noerr 25
    exc_noerr 26
    exc_noerr 27
    exc_noerr 28
    exc_err 29
    exc_err 30
    exc_noerr 31

exception_common:
    /* The frame: vector, error code, then what the CPU pushed. */
    movq %rsp, %rdi
    andq $-16, %rsp
    call {handler}
    ud2

    .global avm_timer_interrupt
avm_timer_interrupt:
    pushq %rax
    lock incq {ticks}(%rip)
    movb $0x20, %al          /* non-specific EOI */
    outb %al, ${pic}
    popq %rax
    iretq

    .global avm_spurious_interrupt
avm_spurious_interrupt:
    /* A spurious IRQ 7 must not be acknowledged. */
    iretq

    .section .rodata.interrupts, "a"
    .balign 8
    .global avm_exception_stubs
avm_exception_stubs:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad exc_stub_\n
    .endr
    "#,
    handler = sym exception_entry,
    ticks = sym TIMER_TICKS,
    pic = const PIC_MASTER_COMMAND,
    options(att_syntax)
);

unsafe extern "C" {
    static avm_exception_stubs: [u64; 32];
    fn avm_timer_interrupt();
    fn avm_spurious_interrupt();
}

/// What the exception stubs leave on the exception stack.
#[repr(C)]
#[derive(Debug)]
pub struct ExceptionFrame {
    /// Exception vector.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Faulting or next instruction.
    pub rip: u64,
    /// Code segment.
    pub cs: u64,
    /// Flags.
    pub rflags: u64,
    /// Stack pointer at the time of the exception.
    pub rsp: u64,
    /// Stack segment.
    pub ss: u64,
}

extern "C" fn exception_entry(frame: *const ExceptionFrame) -> ! {
    // SAFETY: the stub passes a pointer to the frame it built on the
    // exception stack, which stays valid because this function never returns.
    let frame = unsafe { &*frame };
    crate::fatal::exception(frame)
}

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (interrupts stay off in the handler).
    fn interrupt(handler: u64, ist: u8) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt(UnsafeCell<[Gate; 256]>);

// SAFETY: written once by `init` before interrupts are enabled, then only
// read by the CPU.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([Gate::MISSING; 256]));

/// Installs the IDT. Call once after `gdt::init`, with interrupts disabled.
pub fn init() {
    // SAFETY: single CPU, interrupts off: nothing else reads or writes the IDT
    // now; the stub table is immutable data from the assembly above.
    unsafe {
        let idt = &mut *IDT.0.get();
        let stubs = &*core::ptr::addr_of!(avm_exception_stubs);
        for (gate, &stub) in idt.iter_mut().zip(stubs.iter()) {
            *gate = Gate::interrupt(stub, IST_EXCEPTION);
        }
        idt[usize::from(TIMER_VECTOR)] =
            Gate::interrupt(avm_timer_interrupt as *const () as u64, IST_TIMER);
        idt[usize::from(SPURIOUS_VECTOR)] =
            Gate::interrupt(avm_spurious_interrupt as *const () as u64, IST_TIMER);
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (size_of::<[Gate; 256]>() - 1) as u16,
        base: IDT.0.get() as u64,
    };
    // SAFETY: the IDT is static and fully initialised above.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) }
}

/// Timer interrupts taken so far.
pub fn timer_ticks() -> u64 {
    TIMER_TICKS.load(Ordering::Relaxed)
}

/// A short name for an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 error",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD exception",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        _ => "reserved",
    }
}
