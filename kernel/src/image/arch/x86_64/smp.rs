//! A helper CPU for work that splits in two: [`join`] runs one closure on
//! the bootstrap CPU and the other on the second CPU, if the machine has
//! one (QEMU `-smp 2`; under TCG each vCPU is a host thread of its own).
//!
//! The helper is woken for each job with INIT and START-UP IPIs: a
//! trampoline copied below 1 MiB ([`init`] picks the page) takes it from
//! real mode to long mode on the kernel's page tables and its own stack;
//! it runs the job with interrupts off and no IDT or TSS of its own (a CPU
//! exception there is a triple fault: QEMU stops, nothing is hidden), then
//! halts with interrupts off until the next INIT. A halted vCPU costs the
//! host nothing, so the helper adds no load between jobs.
//!
//! Without a second CPU (QEMU's fw_cfg says how many there are), or if it
//! does not arrive within [`ARRIVAL_TIMEOUT_US`] (it is then not used
//! again), both closures run on the bootstrap CPU, one after the other:
//! the result is the same, only slower.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};

use super::cpu;
use super::entry::{enable_long_mode, load_data_segments};
use crate::time;

/// Size of the helper's stack (`.bss`, not image size).
const HELPER_STACK_SIZE: usize = 128 * 1024;
/// The helper's local APIC ID (QEMU numbers CPUs from 0).
const HELPER_APIC_ID: u32 = 1;
/// How long the bootstrap CPU waits for the helper to start a job: long,
/// because the helper is known to exist ([`init`]) and a host under load
/// may not run its vCPU thread for a while; only a broken helper costs it.
const ARRIVAL_TIMEOUT_US: u64 = 2_000_000;
/// Before the second START-UP IPI (the first can land while the helper
/// is still handling INIT).
const SECOND_SIPI_AFTER_US: u64 = 5_000;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_ICR_LOW: u64 = 0x300;
const APIC_ICR_HIGH: u64 = 0x310;
/// ICR: level assert, delivery mode INIT.
const ICR_INIT: u32 = 0x4500;
/// ICR: level assert, delivery mode START-UP (low byte: the page number).
const ICR_STARTUP: u32 = 0x4600;
const ICR_PENDING: u32 = 1 << 12;

/// Job states: the bootstrap CPU sets `STARTING`; the helper moves it to
/// `RUNNING` on arrival and to `DONE` after the job, unless the bootstrap
/// CPU gave up on it first (`CANCELLED`): exactly one of them runs it.
const IDLE: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const DONE: u8 = 3;
const CANCELLED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(IDLE);
/// The job: a `fn(*mut ())` and its argument.
static JOB_FN: AtomicUsize = AtomicUsize::new(0);
static JOB_ARG: AtomicUsize = AtomicUsize::new(0);
/// The trampoline's page (physical, below 1 MiB); 0 until [`init`].
static TRAMPOLINE_PAGE: AtomicU64 = AtomicU64::new(0);
/// CR3 for the helper (the kernel's page tables), read by the trampoline.
#[unsafe(no_mangle)]
static AVM_HELPER_CR3: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    // The trampoline's bytes in the image (the assembly below).
    static avm_helper_trampoline_start: u8;
    static avm_helper_trampoline_end: u8;
}

global_asm!(
    r#"
    .section .text.avm_helper, "ax"
    .code16
    .global avm_helper_trampoline_start
avm_helper_trampoline_start:
    /* Real mode at PAGE:0, CS = PAGE >> 4. The GDT pointer and the far
       pointer into 32-bit code hold linear addresses: filled in here. */
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    movzwl %ax, %ebx
    shll $4, %ebx
    leal .Lht_gdt - avm_helper_trampoline_start(%ebx), %eax
    movl %eax, .Lht_gdt_ptr - avm_helper_trampoline_start + 2
    leal .Lht_code32 - avm_helper_trampoline_start(%ebx), %eax
    movl %eax, .Lht_far32 - avm_helper_trampoline_start
    lgdtl .Lht_gdt_ptr - avm_helper_trampoline_start
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *.Lht_far32 - avm_helper_trampoline_start

    .code32
.Lht_code32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl AVM_HELPER_CR3, %eax
    movl %eax, %cr3
"#,
    enable_long_mode!(),
    r#"
    ljmp $0x08, $avm_helper_long_mode

    .balign 8
.Lht_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF    /* 0x10: data */
    .quad 0x00CF9A000000FFFF    /* 0x18: 32-bit code */
.Lht_gdt_ptr:
    .word 31
    .long 0
.Lht_far32:
    .long 0
    .word 0x18
    .global avm_helper_trampoline_end
avm_helper_trampoline_end:

    .code64
avm_helper_long_mode:
"#,
    load_data_segments!(),
    r#"
    movq $avm_helper_stack_top, %rsp
    xorl %ebp, %ebp
    call {helper_main}
.Lht_halt:
    cli
    hlt
    jmp .Lht_halt

    .section .bss.avm_helper, "aw", @nobits
    .balign 16
    .skip {stack_size}
avm_helper_stack_top:
    "#,
    helper_main = sym helper_main,
    stack_size = const HELPER_STACK_SIZE,
    options(att_syntax)
);

/// Sets up the helper if the machine has a second CPU (`cpus`, as QEMU
/// says; the helper is CPU 1): gives the trampoline its page, 4 KiB of
/// free RAM below 640 KiB, identity-mapped, that nothing else uses from
/// now on. Without a second CPU or the page (or if the trampoline does not
/// fit) there is no helper, and [`join`] sends no IPIs. Returns whether
/// there is a helper.
pub fn init(cpus: u16, page: u64) -> bool {
    let len = trampoline_len();
    let usable = cpus >= 2 && len <= 4096 && page.is_multiple_of(4096) && page < 0xa_0000;
    if usable {
        TRAMPOLINE_PAGE.store(page, Ordering::Relaxed);
    }
    usable
}

/// The trampoline's length in bytes (only the symbols' addresses are
/// taken).
fn trampoline_len() -> usize {
    (&raw const avm_helper_trampoline_end as usize)
        - (&raw const avm_helper_trampoline_start as usize)
}

/// Runs `a` here and `b` on the helper CPU at the same time, and returns
/// both results once both are done, and whether the helper ran `b`.
/// Without a helper, `b` runs here after `a`.
pub fn join<A, B, RA, RB>(a: A, b: B) -> (RA, RB, bool)
where
    A: FnOnce() -> RA,
    B: FnOnce() -> RB + Send,
    RB: Send,
{
    let mut job = Job::<B, RB> {
        work: Some(b),
        result: None,
    };
    let started = start(run::<B, RB>, (&raw mut job).cast());
    let ra = a();
    if started {
        wait_done();
    }
    // Here when the helper did not take the job, or after it has (its
    // writes are visible: `DONE` was stored with release ordering).
    if let Some(b) = job.work.take() {
        job.result = Some(b());
    }
    match job.result {
        Some(rb) => (ra, rb, started),
        // Unreachable: the job either ran on the helper or just above.
        None => crate::fatal::fail(
            crate::fatal::ErrorKind::Panic,
            format_args!("smp: a job left no result"),
        ),
    }
}

/// Waits for the helper to finish the job it took, halted between timer
/// ticks rather than spinning: a spinning vCPU would take host time from
/// the helper's (both on one host CPU with `avm-qemu up --cpus split`)
/// and from the Mon-VM. Costs up to one tick at the end.
#[inline(never)]
fn wait_done() {
    while STATE.load(Ordering::Acquire) != DONE {
        cpu::idle_until_interrupt();
    }
    STATE.store(IDLE, Ordering::Relaxed);
}

struct Job<B, RB> {
    work: Option<B>,
    result: Option<RB>,
}

/// Runs the job at `arg` (a `Job<B, RB>`) on the helper.
///
/// # Safety
/// `arg` points to a live `Job<B, RB>` that nothing else touches until
/// the helper stores `DONE`.
unsafe fn run<B: FnOnce() -> RB, RB>(arg: *mut ()) {
    // SAFETY: per the contract above; `join` waits for `DONE` before it
    // reads the job or lets it go out of scope.
    let job = unsafe { &mut *arg.cast::<Job<B, RB>>() };
    if let Some(work) = job.work.take() {
        job.result = Some(work());
    }
}

/// Hands the job to the helper and wakes it; true once it has taken it,
/// false if it is not there (the job is then the caller's).
#[inline(never)]
fn start(f: unsafe fn(*mut ()), arg: *mut ()) -> bool {
    let page = TRAMPOLINE_PAGE.load(Ordering::Relaxed);
    if page == 0 || STATE.load(Ordering::Acquire) != IDLE {
        return false;
    }
    // SAFETY: `init` checked that the trampoline fits in the page, which
    // is free RAM below 1 MiB, identity-mapped, that nothing else uses;
    // the helper only runs it after the IPIs below.
    unsafe {
        core::ptr::copy_nonoverlapping(
            &raw const avm_helper_trampoline_start,
            page as *mut u8,
            trampoline_len(),
        );
    }
    AVM_HELPER_CR3.store(cpu::read_cr3(), Ordering::Relaxed);
    JOB_FN.store(f as usize, Ordering::Relaxed);
    JOB_ARG.store(arg as usize, Ordering::Relaxed);
    STATE.store(STARTING, Ordering::Release);
    let vector = (page >> 12) as u32;
    send_ipi(ICR_INIT);
    send_ipi(ICR_STARTUP | vector);
    let sent = time::now_us();
    let mut second_sent = false;
    loop {
        if STATE.load(Ordering::Acquire) != STARTING {
            return true;
        }
        let waited = time::now_us().saturating_sub(sent);
        if !second_sent && waited >= SECOND_SIPI_AFTER_US {
            send_ipi(ICR_STARTUP | vector);
            second_sent = true;
        }
        if waited >= ARRIVAL_TIMEOUT_US {
            // Taken back unless the helper took it in the meantime.
            return STATE
                .compare_exchange(STARTING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
                .is_err();
        }
        core::hint::spin_loop();
    }
}

/// Sends an IPI to the helper through the local APIC's ICR.
fn send_ipi(low: u32) {
    let base = read_msr(IA32_APIC_BASE) & 0x000f_ffff_ffff_f000;
    let high = (base + APIC_ICR_HIGH) as *mut u32;
    let low_reg = (base + APIC_ICR_LOW) as *mut u32;
    // SAFETY: the local APIC's registers, identity-mapped uncached by
    // `paging::init` (no RAM there); volatile 32-bit accesses as the APIC
    // requires. Only this CPU's own APIC is touched.
    unsafe {
        while core::ptr::read_volatile(low_reg) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
        core::ptr::write_volatile(high, HELPER_APIC_ID << 24);
        core::ptr::write_volatile(low_reg, low);
        while core::ptr::read_volatile(low_reg) & ICR_PENDING != 0 {
            core::hint::spin_loop();
        }
    }
}

fn read_msr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; reading it has
    // no side effects.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The helper's Rust entry (from the trampoline, on its own stack,
/// interrupts off): takes the job unless the bootstrap CPU took it back,
/// runs it, and halts.
extern "C" fn helper_main() -> ! {
    if STATE
        .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let f = JOB_FN.load(Ordering::Relaxed);
        let arg = JOB_ARG.load(Ordering::Relaxed) as *mut ();
        // SAFETY: `start` stored a `fn(*mut ())` (`run::<B, RB>`) and its
        // job before `STARTING` (release; acquired above); `join` keeps
        // the job alive until `DONE`.
        unsafe {
            let f: unsafe fn(*mut ()) = core::mem::transmute::<usize, unsafe fn(*mut ())>(f);
            f(arg);
        }
        STATE.store(DONE, Ordering::Release);
    }
    cpu::halt_forever()
}
