//! The kernel's GDT with a TSS, whose interrupt stack table gives the timer
//! and the exceptions their own stacks: the code the CPU interrupts uses the
//! red zone below `%rsp` (FACTS.md), which an interrupt frame pushed on the
//! same stack would overwrite.

use core::arch::asm;
use core::cell::UnsafeCell;

/// Code segment selector.
pub const KERNEL_CS: u16 = 0x08;
/// Data segment selector.
pub const KERNEL_DS: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// IST slot (1-based, as in the IDT) of the timer interrupt.
pub const IST_TIMER: u8 = 1;
/// IST slot of all CPU exceptions.
pub const IST_EXCEPTION: u8 = 2;

const IST_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; IST_STACK_SIZE]>);

// SAFETY: the stacks are only ever used by the CPU as interrupt stacks; Rust
// code never forms references to their contents.
unsafe impl Sync for Stack {}

static TIMER_STACK: Stack = Stack(UnsafeCell::new([0; IST_STACK_SIZE]));
static EXCEPTION_STACK: Stack = Stack(UnsafeCell::new([0; IST_STACK_SIZE]));

/// The 64-bit task state segment (Intel SDM vol. 3, 8.7).
#[repr(C, packed(4))]
struct TaskStateSegment {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Tables {
    tss: UnsafeCell<TaskStateSegment>,
    gdt: UnsafeCell<[u64; 5]>,
}

// SAFETY: written once by `init` on the only CPU before interrupts are
// enabled, then only read by the CPU.
unsafe impl Sync for Tables {}

static TABLES: Tables = Tables {
    tss: UnsafeCell::new(TaskStateSegment {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: size_of::<TaskStateSegment>() as u16,
    }),
    gdt: UnsafeCell::new([0; 5]),
};

fn stack_top(s: &Stack) -> u64 {
    s.0.get() as u64 + IST_STACK_SIZE as u64
}

/// Loads the kernel GDT and TSS. Call once, early, with interrupts disabled.
pub fn init() {
    let tss_addr = TABLES.tss.get() as u64;
    let tss_limit = (size_of::<TaskStateSegment>() - 1) as u64;
    // Available 64-bit TSS (type 9), present.
    let tss_low = (tss_limit & 0xffff)
        | ((tss_addr & 0xff_ffff) << 16)
        | (0x89 << 40)
        | (((tss_limit >> 16) & 0xf) << 48)
        | (((tss_addr >> 24) & 0xff) << 56);
    let tss_high = tss_addr >> 32;

    // SAFETY: single CPU, interrupts off, nothing else references TABLES yet.
    unsafe {
        let tss = &mut *TABLES.tss.get();
        tss.ist[usize::from(IST_TIMER - 1)] = stack_top(&TIMER_STACK);
        tss.ist[usize::from(IST_EXCEPTION - 1)] = stack_top(&EXCEPTION_STACK);
        *TABLES.gdt.get() = [
            0,
            0x00AF_9A00_0000_FFFF, // 64-bit code
            0x00CF_9200_0000_FFFF, // data
            tss_low,
            tss_high,
        ];
    }

    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (size_of::<[u64; 5]>() - 1) as u16,
        base: TABLES.gdt.get() as u64,
    };
    // SAFETY: the GDT is static and valid; the selectors match its layout.
    // The far return reloads CS; the data segments and TR follow.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            cs = in(reg) u64::from(KERNEL_CS),
            ds = in(reg) KERNEL_DS,
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}
